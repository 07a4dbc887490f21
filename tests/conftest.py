"""Shared test helpers: free ports, waiting for conditions, temporary data dirs."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from bench.ports import free_port  # noqa: F401 (the tests import it from here)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
APPLIANCE = os.path.join(VENV_BIN, "appliance")
PYTHON = sys.executable


def missing_part(message: str):
    """A real part a test needs is not here: under CI (where build/bootstrap.sh installs
    every part) the test fails; elsewhere it is skipped with the reason."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (build/bootstrap.sh installs it)")
    pytest.skip(message)


def ipc_listening(url: str) -> bool:
    """Something accepts connections at the ``ipc://`` address ``url`` now. The socket
    file alone says nothing: a process killed with SIGKILL leaves its file behind."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(url[len("ipc://"):])
        except OSError:
            return False
    return True


def wait_for(condition, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``condition`` until it returns a truthy value; return that value.
    Exceptions raised by the condition count as "not yet"."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the condition may race with start-up
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


@pytest.fixture
def port():
    return free_port()
