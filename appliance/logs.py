"""Structured log lines on stderr: ``key=value`` or one JSON object a line.

Every process of the appliance logs through this module. A line is written with one
``os.write`` so lines from concurrent processes never interleave, and nothing here holds
a lock that could be inherited across a fork.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

_config = {"level": LEVELS["info"], "format": "kv", "role": "supervisor"}


class _Bridge(logging.Handler):
    """Lines logged through the standard ``logging`` module (the replica side's) come
    out in the same format as ours."""

    def emit(self, record: logging.LogRecord) -> None:
        level = ("error" if record.levelno >= logging.ERROR else
                 "warning" if record.levelno >= logging.WARNING else
                 "info" if record.levelno >= logging.INFO else "debug")
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = str(record.msg)
        fields = {"logger": record.name, "message": message}
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = repr(record.exc_info[1])
        emit(level, "log", **fields)


def configure(level: str = "info", fmt: str = "kv", role: str | None = None) -> None:
    _config["level"] = LEVELS[level]
    _config["format"] = fmt
    if role:
        _config["role"] = role
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Bridge)]
    root.addHandler(_Bridge())
    root.setLevel(LEVELS[level])


def set_role(role: str) -> None:
    """Called in a child right after fork: its lines then say which process wrote them."""
    _config["role"] = role


def role() -> str:
    return _config["role"]


def log_format() -> str:
    return _config["format"]


def _kv_value(value) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n'):
        return json.dumps(text)
    return text


def _format(level: str, event: str, fields: dict) -> str:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    record = {"ts": stamp, "level": level, "role": _config["role"], "pid": os.getpid(),
              "event": event}
    record.update(fields)
    if _config["format"] == "json":
        return json.dumps(record, default=str)
    return " ".join(f"{k}={_kv_value(v)}" for k, v in record.items())


def emit(level: str, event: str, **fields) -> None:
    if LEVELS[level] < _config["level"]:
        return
    line = (_format(level, event, fields) + "\n").encode("utf-8", "replace")
    try:
        os.write(sys.stderr.fileno(), line)
    except (OSError, ValueError):
        pass  # stderr closed: logging must never take a process down


def debug(event: str, **fields) -> None:
    emit("debug", event, **fields)


def info(event: str, **fields) -> None:
    emit("info", event, **fields)


def warning(event: str, **fields) -> None:
    emit("warning", event, **fields)


def error(event: str, **fields) -> None:
    emit("error", event, **fields)


class RepeatedError:
    """An operation that fails the same way at every try (a full disk): the first
    failure is logged, then at most one line every ``every`` seconds saying how many
    failed meanwhile, and one line when it works again."""

    def __init__(self, event: str, every: float = 60.0, clock=time.monotonic):
        self.event = event
        self.every = every
        self.clock = clock
        self.failures = 0
        self._said_at: float | None = None

    def failed(self, exc: BaseException, **fields) -> None:
        self.failures += 1
        now = self.clock()
        if self._said_at is None or now - self._said_at >= self.every:
            self._said_at = now
            error(self.event, error=repr(exc), failures=self.failures, **fields)

    def worked(self) -> None:
        if self.failures:
            info(self.event.replace("_failed", "") + "_works_again", failures=self.failures)
        self.failures = 0
        self._said_at = None
