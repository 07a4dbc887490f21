"""A small SQLite file the workers share as a cache (validated tokens, recent writes).

Each worker opens it lazily, once, after the fork. It is a cache: ``synchronous=OFF``, a
short busy timeout, and a caller that meets an error drops the connection (``_reset``)
and counts the call as a miss; the next call opens the file again.
"""

from __future__ import annotations

import apsw

BUSY_TIMEOUT_MS = 50            # a writer holding the file longer: skip the cache


class SharedCacheFile:
    schema = ""                 # CREATE TABLE IF NOT EXISTS ..., run on every open

    def __init__(self, path: str):
        self.path = path
        self._conn: apsw.Connection | None = None

    def _open(self) -> apsw.Connection:
        conn = apsw.Connection(self.path)
        conn.setbusytimeout(BUSY_TIMEOUT_MS)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(self.schema)
        return conn

    def _connection(self) -> apsw.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _reset(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except apsw.Error:
                pass
        self._conn = None
