"""Wakes the publisher soon after a commit to the cell database, without a busy loop.

A commit in WAL mode is a ``write()`` to the ``-wal`` file, which inotify reports
on the database's directory (watched through ctypes: the standard library has no
binding). The commit becomes visible to readers only when the writer then updates
the shared-memory index, which inotify cannot see: a write reported now may belong
to a commit that shows a moment later, and no event will say when. So every batch
of write events starts a short series of re-checks (``SETTLE_DELAYS``), each of
them cut short by the next write event, which starts the series again. The series
runs to its end even when a re-check found a commit: the events drained at once
may cover that commit and the first writes of the next one. A cell that is not
written costs nothing: no events, no re-checks. Where inotify is not available the
watcher degrades to a short poll.

The watcher also reports when the database's name was given a new file (a restored
backup moved over it): ``replaced()``. Whether it really is another file is for the
caller to check (``file_identity``), on that hint and on its slow poll.
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
# Seconds from one re-check to the next after write events: the first ones close
# together (the index update normally follows the write within microseconds), the
# last ones for a writer the scheduler set aside between write and index update.
SETTLE_DELAYS = (0.0002, 0.0008, 0.002, 0.005, 0.012, 0.03)


def file_identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file ``path`` names now; None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class CommitWatcher:
    """``wait(timeout)`` returns True when the database may have changed."""

    def __init__(self, db_path: str):
        path = os.path.abspath(db_path)
        self.directory = os.path.dirname(path)
        self.base = os.path.basename(path)
        self.names = {self.base, f"{self.base}-wal", f"{self.base}-journal"}
        self.fd: int | None = None
        self._settle_step: int | None = None     # index into SETTLE_DELAYS while settling
        self._recheck_at = 0.0
        self._replaced = False
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

    @property
    def settling(self) -> bool:
        return self._settle_step is not None

    def replaced(self) -> bool:
        """Whether a file was created or moved in under the database's name since the
        last call (a hint: the caller compares identities)."""
        seen, self._replaced = self._replaced, False
        return seen

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds (less while a re-check is due); True when the
        caller should look: write events came, or a re-check after them is due."""
        timeout = max(0.0, timeout)
        if self.fd is None:
            time.sleep(min(timeout, FALLBACK_POLL))
            return True
        recheck = False
        if self._settle_step is not None:
            until = max(0.0, self._recheck_at - time.monotonic())
            if until <= timeout:
                timeout, recheck = until, True
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
        except InterruptedError:
            return True
        if ready and self._drain():
            self._settle_step = 0
            self._recheck_at = time.monotonic() + SETTLE_DELAYS[0]
            return True
        if recheck and time.monotonic() >= self._recheck_at:
            step = self._settle_step + 1
            if step < len(SETTLE_DELAYS):
                self._settle_step = step
                self._recheck_at = time.monotonic() + SETTLE_DELAYS[step]
            else:
                self._settle_step = None
            return True
        return False

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
                _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size: offset + _EVENT.size + length]
                offset += _EVENT.size + length
                name = name.rstrip(b"\0").decode(errors="replace")
                if name in self.names:
                    relevant = True
                    if name == self.base and mask & (IN_MOVED_TO | IN_CREATE):
                        self._replaced = True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
