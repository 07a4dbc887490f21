"""Wakes the publisher soon after a commit to the cell database, without a busy loop.

A commit in WAL mode is a ``write()`` to the ``-wal`` file, which inotify reports
on the database's directory (watched through ctypes: the standard library has no
binding). The commit becomes visible to readers only when the writer then updates
the shared-memory index, which inotify cannot see, so a wake that finds nothing
new is retried a few times within milliseconds (``settle``). Where inotify is not
available the watcher degrades to a short poll.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import time

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")   # wd, mask, cookie, len; then len bytes of name

FALLBACK_POLL = 0.05             # seconds between checks without inotify
SETTLE_DELAYS = (0.0005, 0.002, 0.005, 0.02)   # re-checks after a wake that found nothing


class CommitWatcher:
    """``wait(timeout)`` returns True when the database may have changed."""

    def __init__(self, db_path: str):
        path = os.path.abspath(db_path)
        self.directory = os.path.dirname(path)
        base = os.path.basename(path)
        self.names = {base, f"{base}-wal", f"{base}-journal"}
        self.fd: int | None = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                return
            mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
            if libc.inotify_add_watch(fd, self.directory.encode(), mask) < 0:
                os.close(fd)
                return
            self.fd = fd
        except (OSError, AttributeError):
            self.fd = None

    @property
    def native(self) -> bool:
        return self.fd is not None

    def wait(self, timeout: float) -> bool:
        timeout = max(0.0, timeout)
        if self.fd is None:
            time.sleep(min(timeout, FALLBACK_POLL))
            return True
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
        except InterruptedError:
            return True
        return bool(ready) and self._drain()

    def _drain(self) -> bool:
        relevant = False
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return relevant
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                return True
            if not data:
                return relevant
            offset = 0
            while offset + _EVENT.size <= len(data):
                _wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size: offset + _EVENT.size + length]
                offset += _EVENT.size + length
                if name.rstrip(b"\0").decode(errors="replace") in self.names:
                    relevant = True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
