"""Small helpers for the real servers the realnova harness runs (MariaDB, nova-api, Nova's
services): reading the end of a log, stopping a child process."""

from __future__ import annotations

import os
import subprocess


def log_tail(path: str, size: int) -> str:
    """The last ``size`` bytes of a log file as text; empty if it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def stop_process(process: subprocess.Popen, signum: int, timeout: float) -> None:
    """Send ``signum`` to a running process and wait ``timeout`` seconds, then SIGKILL it."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
