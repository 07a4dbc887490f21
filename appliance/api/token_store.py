"""Validated Keystone tokens shared by the workers: a small SQLite file in data_dir.

Each worker keeps its own in-memory cache in front of it; the file makes one Keystone
round trip per token serve every worker (connections are spread over the workers by the
kernel, so a client's next request often lands on another one), and lets a worker that
never saw a token serve it while Keystone is unreachable. Rows are keyed by the token's
SHA-256 (the token itself is never stored) and carry the identity, the token's expiry and
when Keystone last confirmed it (or refused it). Written once per validation, read on an
in-memory miss: each statement is one indexed row. It is a cache: ``synchronous=OFF``, and
an error reading or writing it counts as a miss.
"""

from __future__ import annotations

import os
import time

import apsw

from appliance.api.cache_file import SharedCacheFile
from appliance.api.identity import Identity

PRUNE_EVERY = 512               # writes between removals of expired rows


class TokenStore(SharedCacheFile):
    schema = ("CREATE TABLE IF NOT EXISTS tokens (key BLOB PRIMARY KEY, "
              "valid INTEGER NOT NULL, user_id TEXT, project_id TEXT, "
              "admin INTEGER, reader INTEGER, expires_at REAL NOT NULL, "
              "checked_at REAL NOT NULL) WITHOUT ROWID")

    def __init__(self, path: str, max_rows: int):
        super().__init__(path)
        self.max_rows = max_rows
        self._writes = 0

    def _open(self) -> apsw.Connection:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)     # tokens: owner only
        os.close(fd)
        return super()._open()

    def get(self, key: bytes) -> tuple[Identity | None, float, float] | None:
        """``(identity or None if refused, expires_at, checked_at)`` or None."""
        try:
            row = self._connection().execute(
                "SELECT valid, user_id, project_id, admin, reader, expires_at, checked_at "
                "FROM tokens WHERE key = ?", (key,)).fetchone()
        except apsw.Error:
            self._reset()
            return None
        if row is None:
            return None
        valid, user_id, project_id, admin, reader, expires_at, checked_at = row
        identity = Identity(user_id, project_id, bool(admin), bool(reader)) if valid else None
        return identity, expires_at, checked_at

    def put(self, key: bytes, identity: Identity | None, expires_at: float,
            checked_at: float) -> None:
        try:
            conn = self._connection()
            if identity is None:
                conn.execute("INSERT OR REPLACE INTO tokens VALUES (?, 0, NULL, NULL, NULL, "
                             "NULL, ?, ?)", (key, expires_at, checked_at))
            else:
                conn.execute("INSERT OR REPLACE INTO tokens VALUES (?, 1, ?, ?, ?, ?, ?, ?)",
                             (key, identity.user_id, identity.project_id,
                              int(identity.admin), int(identity.reader), expires_at,
                              checked_at))
            self._writes += 1
            if self._writes % PRUNE_EVERY == 0:
                self._prune(conn)
        except apsw.Error:
            self._reset()

    def _prune(self, conn: apsw.Connection) -> None:
        conn.execute("DELETE FROM tokens WHERE expires_at < ?", (time.time(),))
        conn.execute("DELETE FROM tokens WHERE key IN (SELECT key FROM tokens ORDER BY "
                      "checked_at DESC LIMIT -1 OFFSET ?)", (self.max_rows,))

    def clear(self) -> None:
        try:
            self._connection().execute("DELETE FROM tokens")
        except apsw.Error:
            self._reset()
