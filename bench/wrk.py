"""Runs wrk with bench/lua/bench.lua and returns its figures, with wrk's own CPU use.

wrk's CPU time comes from the kernel's rusage of the wrk process (``os.wait4``), so a
table can show that the load generator was not the bottleneck: on a 2-core machine a
generator near 100% of a core is the limit, not the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lua", "bench.lua")
TIMEOUT_S = 30              # wrk's per-request timeout: slow baselines must not count as errors
MARKER = "BENCH_JSON "


@dataclass
class WrkResult:
    url: str
    connections: int
    threads: int
    duration_s: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    bytes_per_request: float
    errors: dict = field(default_factory=dict)
    wrk_cpu_s: float = 0.0
    wrk_cpu_pct: float = 0.0   # of one core, over the run's wall time
    server_cpu_pct: float | None = None   # the server's processes, of one core (set by the caller)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict:
        d = asdict(self)
        d["error_count"] = self.error_count
        return d


def _threads_for(connections: int) -> int:
    return max(1, min(connections, os.cpu_count() or 1, 2))


def run_wrk(base_url: str, path: str | None = None, *, ids_prefix: str | None = None,
            ids_file: str | None = None, connections: int = 8, duration_s: float = 5.0,
            threads: int | None = None, delay_ms: int = 0, headers: dict | None = None,
            on_start=None) -> WrkResult:
    """GET ``path`` (fixed) or ``ids_prefix + <random id from ids_file>`` for ``duration_s``."""
    threads = threads or _threads_for(connections)
    if ids_prefix is not None:
        args = ["ids", ids_prefix, ids_file, str(delay_ms)]
        shown = f"{base_url}{ids_prefix}{{id}}"
    else:
        args = ["fixed", path or "/", str(delay_ms)]
        shown = f"{base_url}{path}"
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
            f"--timeout={TIMEOUT_S}s", "-s", SCRIPT]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv += [base_url, "--", *args]
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if on_start is not None:
            on_start(proc)
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    line = next((l for l in text.splitlines() if l.startswith(MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk {' '.join(argv)} failed ({proc.returncode}): {text[-800:]}")
    raw = json.loads(line[len(MARKER):])
    lat = raw["latency_us"]
    secs = raw["duration_us"] / 1e6
    cpu = usage.ru_utime + usage.ru_stime
    return WrkResult(
        url=shown, connections=connections, threads=threads, duration_s=round(secs, 3),
        requests=raw["requests"], requests_per_s=raw["requests"] / secs if secs else 0.0,
        p50_ms=lat["p50"] / 1000, p90_ms=lat["p90"] / 1000, p99_ms=lat["p99"] / 1000,
        p999_ms=lat["p999"] / 1000, mean_ms=lat["mean"] / 1000, max_ms=lat["max"] / 1000,
        bytes_per_request=raw["bytes"] / raw["requests"] if raw["requests"] else 0.0,
        errors=raw["errors"], wrk_cpu_s=round(cpu, 3), wrk_cpu_pct=round(100 * cpu / wall, 1) if wall else 0.0)


def _exited(pid: int) -> bool:
    """Whether the child has ended, leaving it to be reaped by whoever waits for it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class BackgroundWrk:
    """wrk started now and collected later: a paced read load while something else is
    measured (lag, resync). Use as a context manager: leaving the block kills wrk if it
    still runs. ``collect()`` waits for it to end and returns its figures."""

    def __init__(self, base_url: str, duration_s: float, **kwargs):
        self._args = (base_url,)
        self._kwargs = dict(kwargs, duration_s=duration_s, on_start=self._started)
        self._proc: subprocess.Popen | None = None
        self._result: WrkResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _started(self, proc: subprocess.Popen) -> None:
        self._proc = proc

    def _run(self) -> None:
        try:
            self._result = run_wrk(*self._args, **self._kwargs)
        except BaseException as exc:  # reported by collect()
            self._error = exc

    def __enter__(self) -> "BackgroundWrk":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._thread.join(5)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def interrupt(self, wait_start_s: float = 5.0) -> None:
        """End the run now: wrk stops on SIGINT and still prints its summary."""
        deadline = time.monotonic() + wait_start_s
        while self._proc is None and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        proc = self._proc
        # A SIGINT that lands between fork and exec is lost (the child has not become
        # wrk yet): send it again until wrk has stopped.
        # (Waited for without reaping it: run_wrk reaps it, for its resource usage.)
        while proc is not None and not _exited(proc.pid):
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                return
            until = time.monotonic() + 0.5
            while time.monotonic() < until and not _exited(proc.pid):
                time.sleep(0.01)
            if time.monotonic() > deadline + 10 * wait_start_s:
                return

    def collect(self, timeout: float | None = None) -> WrkResult:
        self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise TimeoutError("background wrk did not finish")
        return self._result
