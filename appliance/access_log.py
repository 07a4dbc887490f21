"""One line per API request: method, path, status, bytes, duration, SQL statements,
request id and project.

Off by default (setting ``access_log``). When off, the worker's handler holds None and
the request path pays one attribute test; when on, the line is built after the response
was sent, from what the response already carries (``Server-Timing`` has the statement
count, ``x-openstack-request-id`` the request id) and the caller's identity (the token
caches of the auth make that a dictionary lookup for noauth, one SHA-256 for tokens).

Formats (``access_log_format``): ``log`` is an appliance log line (``event=access``,
key=value or JSON as ``log_format`` says); ``combined`` is the NCSA combined format web
servers write, followed by the appliance's own fields.

Lines are kept and written together (one ``write`` for up to WRITE_BYTES, at the latest
about a second later, from the worker's heartbeat): a line may appear up to a second
after its response.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from appliance import logs

WRITE_BYTES = 3584      # lines are written together up to this size (under PIPE_BUF: a
                        # write to a pipe this small is never interleaved with another's)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _header(headers, name: bytes) -> str | None:
    for key, value in headers or ():
        if key.lower() == name:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def _statements(timing: str | None) -> int:
    # Server-Timing: db;desc="1 stmt";dur=0.123
    if timing and 'desc="' in timing:
        try:
            return int(timing.split('desc="', 1)[1].split(" ", 1)[0])
        except ValueError:
            pass
    return 0


class AccessLog:
    """Called by the worker's handler with (handler, seconds) after each response."""

    def __init__(self, level: str, fmt: str, identify=None):
        self.level = level
        self.format = fmt
        self.identify = identify           # environ -> Identity (raises when refused)
        self.pending: list[str] = []
        self.pending_bytes = 0
        self._second = -1
        self._second_text = ""

    @classmethod
    def from_settings(cls, settings, app) -> "AccessLog | None":
        """None when access lines would not be written (off, or below log_level)."""
        level = settings.access_log
        if level == "off" or logs.LEVELS[level] < logs.LEVELS[settings.log_level]:
            return None
        auth = getattr(app, "auth", None)
        return cls(level, settings.access_log_format,
                   auth.identify if auth is not None else None)

    def project(self, environ) -> str:
        if self.identify is None:
            return "-"
        try:
            return self.identify(environ).project_id
        except Exception:  # a refused token: the request was answered 401
            return "-"

    def fields(self, handler, seconds: float) -> dict:
        environ = handler.environ or {}
        headers = getattr(handler, "response_headers", None)
        path = environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
        code = handler.code
        return {"method": environ.get("REQUEST_METHOD", "-"), "path": path,
                "status": abs(code) if code else 500,
                "bytes": handler.response_length or 0,
                "duration_ms": round(seconds * 1000.0, 3),
                "statements": _statements(_header(headers, b"server-timing")),
                "request_id": _header(headers, b"x-openstack-request-id") or "-",
                "project": self.project(environ),
                "client": environ.get("REMOTE_ADDR", "-")}

    def __call__(self, handler, seconds: float) -> None:
        try:
            fields = self.fields(handler, seconds)
            line = (self.combined_line(handler, fields) if self.format == "combined"
                    else self.log_line(fields))
        except Exception as exc:  # an access line must never break the worker
            logs.error("access_log_failed", error=repr(exc))
            return
        self.pending.append(line)
        self.pending_bytes += len(line)
        if self.pending_bytes >= WRITE_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the lines kept so far in one ``write`` (the worker calls it about once a
        second and when it stops)."""
        if not self.pending:
            return
        data = "".join(self.pending).encode("utf-8", "replace")
        self.pending, self.pending_bytes = [], 0
        try:
            os.write(sys.stderr.fileno(), data)
        except (OSError, ValueError):
            pass  # stderr closed: logging must never take a process down

    def _stamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int(now % 1 * 1000):03d}Z"

    def log_line(self, fields: dict) -> str:
        """The line ``logs.emit(level, "access", **fields)`` writes, built for speed."""
        record = {"ts": self._stamp(time.time()), "level": self.level,
                  "role": logs.role(), "pid": os.getpid(), "event": "access", **fields}
        if logs.log_format() == "json":
            return json.dumps(record) + "\n"
        return " ".join(f"{k}={_kv(v)}" for k, v in record.items()) + "\n"

    def combined_line(self, handler, fields: dict) -> str:
        environ = handler.environ or {}
        now = time.gmtime()
        stamp = (f"{now.tm_mday:02d}/{_MONTHS[now.tm_mon - 1]}/{now.tm_year}:"
                 f"{now.tm_hour:02d}:{now.tm_min:02d}:{now.tm_sec:02d} +0000")
        protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        return (f'{fields["client"]} - {fields["project"]} [{stamp}] '
                f'"{fields["method"]} {_quoted(fields["path"])} {protocol}" '
                f'{fields["status"]} {fields["bytes"]} '
                f'"{_quoted(environ.get("HTTP_REFERER", "-"))}" '
                f'"{_quoted(environ.get("HTTP_USER_AGENT", "-"))}" '
                f'{fields["duration_ms"]}ms stmts={fields["statements"]} '
                f'req={fields["request_id"]}\n')


_NEEDS_QUOTES = re.compile(r'[ ="\n]')


def _kv(value) -> str:
    text = str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return json.dumps(text)
    return text


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
