"""Processes a benchmark starts: each in its own process group, all stopped on exit.

``Processes`` is a context manager: whatever happens inside the ``with`` block, every
group it started gets SIGTERM, then SIGKILL if it has not gone after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
STOP_GRACE_S = 10.0


class Processes:
    def __init__(self) -> None:
        self._started: list[tuple[str, subprocess.Popen]] = []

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    def start(self, name: str, argv: list[str], log_path: str | None = None,
              env: dict | None = None, cwd: str = ROOT) -> subprocess.Popen:
        """Start ``argv`` as the leader of a new process group (its children join it)."""
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=cwd, env={**os.environ, **(env or {})}, start_new_session=True)
        finally:
            if log_path:
                out.close()
        self._started.append((name, proc))
        return proc

    def start_python(self, name: str, module: str, args: list[str], log_path: str | None = None,
                     env: dict | None = None) -> subprocess.Popen:
        return self.start(name, [PYTHON, "-m", module, *args], log_path=log_path, env=env)

    def stop(self, proc: subprocess.Popen, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the process group, wait, then SIGKILL what is left of it."""
        self._started = [(n, p) for n, p in self._started if p is not proc]
        return stop_group(proc, grace)

    def stop_all(self) -> None:
        # Newest first: a load generator stops before the server it loads.
        while self._started:
            _name, proc = self._started.pop()
            stop_group(proc)


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(proc: subprocess.Popen, grace: float = STOP_GRACE_S) -> int | None:
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        if proc.returncode is not None and not _group_alive(pgid):
            return proc.returncode
        time.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    return proc.returncode


def wait_until(condition, timeout: float, what: str, interval: float = 0.05,
               proc: subprocess.Popen | None = None):
    """Poll ``condition`` until truthy; fail early if ``proc`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the condition may race with start-up
            last_exc = exc
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"waiting for {what}: process {proc.args[0]} exited with {proc.returncode}")
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}"
                       + (f" (last error: {last_exc!r})" if last_exc else ""))


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    found = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            found = [int(p) for p in f.read().split()]
    except OSError:
        pass
    return found


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
