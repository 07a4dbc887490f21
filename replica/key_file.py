"""Feed key files: reading, checking, generating, and following changes.

A key file holds one key a line, the key that seals first::

    # appliance feed keys: <key id> <base64 of 32 random bytes>; the first line seals
    k20261205-3f9a1c 6bq2...=
    k20250601-77d0e2 Qm9v...=

Blank lines and lines starting with ``#`` are ignored. The file must not be readable
or writable by group or others (mode 0600 or 0400). ``appliance keygen`` writes one;
see docs/feed-authentication.md for distributing and rotating keys.

A ``KeyFile`` re-reads its file when it changes (checked at most every
CHECK_INTERVAL seconds): a rotation needs no restart. A file that became unreadable
or wrong keeps the keys it had, with one error line in the log per change.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
import stat
import threading
import time

from replica.sealing import KEY_BYTES, AuthError, Key, Keyring, Sealer

log = logging.getLogger("replica.key_file")

CHECK_INTERVAL = 2.0          # seconds between looks at the file for a change
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEADER = ("# appliance feed keys: <key id> <base64 of 32 random bytes>, one a line.\n"
          "# The first line seals; every line opens. Keep this file mode 0600.\n")


class KeyFileError(ValueError):
    """A key file that cannot be used. One line: what is wrong and how to fix it."""


def parse_keys(text: str, path: str) -> Keyring:
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"key file {path} line {number}"
        if len(fields) != 2 or not KEY_ID.match(fields[0]):
            raise KeyFileError(f"{where}: expected '<key id> <base64 key>' (make one with "
                               f"'appliance keygen {path}')")
        try:
            secret = base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{where}: the key is not base64 (make one with "
                               f"'appliance keygen {path}')") from None
        if len(secret) != KEY_BYTES:
            raise KeyFileError(f"{where}: the key is {len(secret)} bytes, not {KEY_BYTES} "
                               f"(make one with 'appliance keygen {path}')")
        if any(k.key_id == fields[0] for k in keys):
            raise KeyFileError(f"{where}: key id {fields[0]!r} appears twice; give each "
                               "key its own id")
        keys.append(Key(fields[0], secret))
    if not keys:
        raise KeyFileError(f"key file {path} holds no key (make one with "
                           f"'appliance keygen {path}')")
    return Keyring(keys)


def read_key_file(path: str) -> Keyring:
    """The key ring of ``path``, or KeyFileError (one line) saying how to fix it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise KeyFileError(f"key file {path}: cannot read it ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise KeyFileError(f"key file {path}: not a regular file")
        if mode & 0o077:
            raise KeyFileError(f"key file {path}: mode {stat.S_IMODE(mode):04o} lets group "
                               f"or others at it; run 'chmod 600 {path}'")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(1024 * 1024)
    finally:
        os.close(fd)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path}: not a text file of key lines (make one with "
                           f"'appliance keygen {path}')") from None
    return parse_keys(text, path)


def new_key_line() -> str:
    key_id = time.strftime("k%Y%m%d-", time.gmtime()) + secrets.token_hex(3)
    return f"{key_id} {base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}\n"


def write_new_key_file(path: str) -> str:
    """Create ``path`` (mode 0600, refused if it exists) with one new key; its id."""
    line = new_key_line()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(HEADER + line)
    return line.split()[0]


def add_key(path: str) -> str:
    """Add a new key to an existing key file, after its keys (it opens, does not seal
    yet); its id. The file is replaced atomically, mode 0600."""
    read_key_file(path)                      # refuse to extend a bad file
    lines = _lines(path)
    line = new_key_line()
    lines.append(line)
    _replace(path, lines)
    return line.split()[0]


def promote_key(path: str, key_id: str) -> None:
    """Move key ``key_id`` first: it seals from now on."""
    ring = read_key_file(path)
    if key_id not in ring.ids:
        raise KeyFileError(f"key file {path}: no key {key_id!r} (it holds "
                           f"{', '.join(ring.ids)})")
    lines = _lines(path)
    moved = [text for text in lines if text.split()[:1] == [key_id]]
    rest = [text for text in lines if text.split()[:1] != [key_id]]
    at = next((i for i, text in enumerate(rest)
               if text.strip() and not text.lstrip().startswith("#")), len(rest))
    _replace(path, rest[:at] + moved + rest[at:])


def remove_key(path: str, key_id: str) -> None:
    """Drop key ``key_id`` from a key file (the last step of a rotation); KeyFileError
    if it is not there or is the only key."""
    ring = read_key_file(path)
    if key_id not in ring.ids:
        raise KeyFileError(f"key file {path}: no key {key_id!r} (it holds "
                           f"{', '.join(ring.ids)})")
    if len(ring.ids) == 1:
        raise KeyFileError(f"key file {path}: {key_id!r} is its only key; add the next one "
                           f"first ('appliance keygen --add --first {path}')")
    _replace(path, [text for text in _lines(path) if text.split()[:1] != [key_id]])


def _lines(path: str) -> list[str]:
    with open(path) as f:
        lines = f.read().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines


def _replace(path: str, lines: list[str]) -> None:
    """Write ``lines`` to ``path`` atomically, mode 0600."""
    tmp = f"{path}.new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(lines)
    os.replace(tmp, path)


class KeyFile:
    """A key file followed for changes; call it for the current Keyring.

    With ``tolerate_errors`` (ingest: one cell's unusable key file must not stop the
    whole appliance) a file that cannot be used at start is an error of this cell only:
    calling the KeyFile raises AuthError saying what is wrong (its feed messages are
    dead-lettered, its requests fail) until the file is fixed, which is noticed as a
    change is."""

    def __init__(self, path: str, tolerate_errors: bool = False):
        self.path = path
        self.keyring: Keyring | None = None
        self.error: str | None = None
        self._stamp = self._stat()
        try:
            self.keyring = read_key_file(path)
        except KeyFileError as exc:
            if not tolerate_errors:
                raise
            self.error = str(exc)
            log.error("%s; this cell's messages are refused until the file is fixed", exc)
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _stat(self):
        try:
            st = os.stat(self.path)
        except OSError as exc:
            return ("missing", exc.errno)
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)

    def __call__(self) -> Keyring:
        now = time.monotonic()
        if now - self._checked >= CHECK_INTERVAL:
            self._checked = now
            self.refresh()
        if self.keyring is None:
            raise AuthError(self.error)
        return self.keyring

    def refresh(self) -> bool:
        """Re-read the file if it changed; True if the keys changed."""
        with self._lock:
            stamp = self._stat()
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                keyring = read_key_file(self.path)
            except KeyFileError as exc:
                if self.keyring is None:
                    self.error = str(exc)
                    log.error("%s; this cell's messages are still refused", exc)
                else:
                    log.error("%s; keeping the keys read before (%s)", exc,
                              ", ".join(self.keyring.ids))
                return False
            if self.keyring is not None and keyring.keys == self.keyring.keys:
                return False
            log.info("key file %s: keys now %s (sealing with %s)", self.path,
                     ", ".join(keyring.ids), keyring.sealing_id)
            self.keyring, self.error = keyring, None
            return True


def sealer_for(cell: str, key_file: str | None, encrypt: bool = True,
               tolerate_errors: bool = False) -> Sealer | None:
    """The sealer of ``cell`` from its key file; None without one (unauthenticated).
    KeyFileError if the file cannot be used (with ``tolerate_errors``: see KeyFile)."""
    if not key_file:
        return None
    return Sealer(cell, KeyFile(key_file, tolerate_errors), encrypt=encrypt)
