"""The one-file binary's launcher (PyInstaller's bootloader) and the supervisor it
starts, with the real `dist/appliance demo`: the supervisor is the launcher's child;
if the launcher is SIGKILLed, the supervisor notices (PR_SET_PDEATHSIG), logs
`launcher_gone`, stops every process gracefully and removes the unpacked `_MEI`
directory the launcher can no longer remove. And Ctrl-C at a terminal (SIGINT to the
whole process group, so the supervisor gets it both from the terminal and forwarded by
the launcher) is one stop request: a clean exit 0, no forced stop, nothing left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field

import pytest

from tests.binary.conftest import (binary_env, descendants, is_alive, process_title,
                                   unpacked_dirs)
from tests.conftest import ROOT, free_port, wait_for

DEMO_SOURCE = os.path.join(ROOT, "appliance", "demo.py")
SERVERS = 40
WORKERS = 2
READY_TIMEOUT = 60              # exec to ready; a few seconds on an idle machine
STOP_TIMEOUT = 20              # a healthy stop takes about a second
READY_LINE = "Ctrl-C stops everything."     # the last line of the demo's ready banner


@dataclass
class Demo:
    proc: subprocess.Popen      # the launcher
    tmpdir: str                 # its TMPDIR: where it unpacks itself
    data_dir: str
    stdout_path: str
    seen: set = field(default_factory=set)

    @property
    def log_path(self) -> str:
        return os.path.join(self.data_dir, "logs", "appliance.log")

    def _read(self, path: str) -> str:
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log(self) -> str:
        return self._read(self.log_path)

    def output(self) -> str:
        return self._read(self.stdout_path)

    def explain(self) -> str:
        left = {p: process_title(p) for p in sorted(self.seen | {self.proc.pid})
                if is_alive(p)}
        return (f"--- still running: {left}\n--- output\n{self.output()[-3000:]}\n"
                f"--- {self.log_path}\n{self.log()[-5000:]}")

    def table(self) -> dict:
        with open(os.path.join(self.data_dir, "processes.json")) as f:
            return json.load(f)

    def processes(self, root: int | None = None) -> list[int]:
        pids = descendants(self.proc.pid if root is None else root)
        self.seen.update(pids)
        return pids

    def cleanup(self) -> None:
        """SIGKILL whatever is left: the process group (every process of the demo is
        in it: it was started in a session of its own and nothing changes group), and
        any process seen that is still an appliance process, wherever it went."""
        self.processes()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        for pid in self.seen:
            if is_alive(pid) and "appliance" in process_title(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _start(binary: str, tmp_path) -> Demo:
    tmpdir = str(tmp_path)
    data_dir = str(tmp_path / "data")
    stdout_path = str(tmp_path / "demo.out")
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen(
            [binary, "demo", "--data-dir", data_dir, "--port", str(free_port()),
             "--admin-port", str(free_port()), "--servers", str(SERVERS),
             "--workers", str(WORKERS)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmpdir,
            env=binary_env(tmpdir), start_new_session=True)
    return Demo(proc, tmpdir, data_dir, stdout_path)


def _wait_ready(demo: Demo) -> int:
    """Wait for the ready banner; return the supervisor's pid (from processes.json)."""
    try:
        wait_for(lambda: demo.proc.poll() is not None or READY_LINE in demo.output(),
                 timeout=READY_TIMEOUT, interval=0.1, what="the demo's ready banner")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{demo.explain()}") from None
    assert demo.proc.poll() is None, \
        f"the demo exited with {demo.proc.returncode}:\n{demo.explain()}"
    assert unpacked_dirs(demo.tmpdir), "the launcher did not unpack itself in TMPDIR"
    table = demo.table()
    supervisor = table["supervisor"]["pid"]
    assert _ppid(supervisor) == demo.proc.pid, \
        f"the supervisor (pid {supervisor}) is not a child of the launcher " \
        f"(pid {demo.proc.pid}): {process_title(supervisor)!r}"
    children = demo.processes(supervisor)
    listed = {p["pid"] for p in table["processes"]}
    assert len([p for p in table["processes"] if p["role"] == "worker"]) == WORKERS, table
    assert listed <= set(children), (listed, children)
    demo.seen.add(supervisor)
    return supervisor


@pytest.fixture
def demo(binary, tmp_path):
    if not os.path.exists(DEMO_SOURCE):
        pytest.skip("appliance demo is not implemented (appliance/demo.py does not exist)")
    running = _start(binary, tmp_path)
    try:
        yield running
    finally:
        running.cleanup()


def test_sigkill_of_the_launcher_stops_everything_and_removes_the_unpacked_dir(demo):
    supervisor = _wait_ready(demo)
    everything = set(demo.seen)
    assert len(everything) > 1 + WORKERS, everything

    os.kill(demo.proc.pid, signal.SIGKILL)
    assert demo.proc.wait(timeout=10) == -signal.SIGKILL

    try:
        wait_for(lambda: not any(is_alive(p) for p in everything), timeout=STOP_TIMEOUT,
                 interval=0.1, what="the supervisor and all its children to exit")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{demo.explain()}") from None
    log = demo.log()
    assert "launcher_gone" in log, demo.explain()
    assert re.search(r"event=supervisor_stopped .*code=0", log), demo.explain()
    assert "stop_forced" not in log and "event=killing" not in log, demo.explain()
    assert unpacked_dirs(demo.tmpdir) == [], demo.explain()


def test_sigint_to_the_process_group_is_a_clean_stop(demo):
    _wait_ready(demo)
    everything = set(demo.seen)

    os.killpg(demo.proc.pid, signal.SIGINT)
    try:
        code = demo.proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"no exit {STOP_TIMEOUT}s after SIGINT\n{demo.explain()}") \
            from None
    assert code == 0, demo.explain()
    try:
        wait_for(lambda: not any(is_alive(p) for p in everything), timeout=10,
                 interval=0.1, what="every process of the demo to exit")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{demo.explain()}") from None
    log = demo.log()
    assert "stop_forced" not in log and "event=killing" not in log, demo.explain()
    assert "launcher_gone" not in log, demo.explain()
    assert re.search(r"event=supervisor_stopped .*code=0", log), demo.explain()
    assert unpacked_dirs(demo.tmpdir) == [], demo.explain()
