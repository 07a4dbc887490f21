"""Read-your-writes without a header: the position of each caller's latest write, for
``read_your_writes_window`` seconds, shared by the workers.

``openstack server stop`` and then ``openstack server show`` are two processes, two
tokens and two connections, likely served by two workers; what they share is the caller
(user and project). After a write passed through and accepted, its position (the feeds'
heads) is kept under the caller's identity; a read by the same caller within the window
waits for it as if it had sent ``X-Replica-Min-Position``.

Cost on the read path: one 8-byte read of a shared memory map holding the time of the
last recorded write (any caller). Only within the window after some write does a read
look its caller up (one indexed row of a small SQLite file in data_dir).
"""

from __future__ import annotations

import mmap
import os
import struct
import time

import apsw

from appliance.api.cache_file import SharedCacheFile
from appliance.api.identity import Identity
from appliance.api.positions import format_position, parse_position

PRUNE_EVERY = 256
_STAMP = struct.Struct("d")


def caller_key(identity: Identity) -> str:
    return f"{identity.user_id}\x00{identity.project_id}"


class RecentWrites(SharedCacheFile):
    schema = ("CREATE TABLE IF NOT EXISTS recent_writes (caller TEXT PRIMARY KEY, "
              "position TEXT NOT NULL, until REAL NOT NULL) WITHOUT ROWID")

    def __init__(self, path: str, window: float):
        super().__init__(path)
        self.window = window
        self._stamp: mmap.mmap | None = None
        self._records = 0

    def _map(self) -> mmap.mmap:
        if self._stamp is None:
            fd = os.open(self.path + ".stamp", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < _STAMP.size:
                    os.ftruncate(fd, _STAMP.size)
                self._stamp = mmap.mmap(fd, _STAMP.size)
            finally:
                os.close(fd)
        return self._stamp

    def active(self) -> bool:
        """Some caller wrote within the window (the read path's one check)."""
        return time.time() - _STAMP.unpack_from(self._map())[0] < self.window

    def record(self, identity: Identity, heads: dict[str, tuple[str, int]]) -> None:
        now = time.time()
        try:
            conn = self._connection()
            conn.execute("INSERT OR REPLACE INTO recent_writes VALUES (?, ?, ?)",
                         (caller_key(identity), format_position(heads), now + self.window))
            self._records += 1
            if self._records % PRUNE_EVERY == 0:
                conn.execute("DELETE FROM recent_writes WHERE until < ?", (now,))
        except apsw.Error:
            self._reset()
            return
        _STAMP.pack_into(self._map(), 0, now)

    def pending(self, identity: Identity) -> dict[str, tuple[str, int]] | None:
        """The position this caller's latest write left, while it is in the window."""
        try:
            row = self._connection().execute(
                "SELECT position, until FROM recent_writes WHERE caller = ?",
                (caller_key(identity),)).fetchone()
        except apsw.Error:
            self._reset()
            return None
        if row is None or row[1] < time.time():
            return None
        return parse_position(row[0])

