"""The one-file binary's launcher, without the binary: a program that says it is frozen
(``sys.frozen``, ``sys._MEIPASS`` = a ``_MEI`` directory) runs under a parent process
of the same executable, as PyInstaller's bootloader runs the program. If the parent is
SIGKILLed, the supervisor stops gracefully and removes the unpacked directory; if it
was dead before the program started, the program does not start. And a stop signal
delivered twice at once (Ctrl-C under the launcher) is one request."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from appliance.supervisor import SECOND_SIGNAL_AFTER

from tests.appliance.conftest import (alive, get, read_table, start_process, wait_for,
                                      worker_pids)
from tests.conftest import ROOT, free_port

FROZEN_MAIN = """
import sys
sys.frozen = True
sys._MEIPASS = {bundle!r}
from appliance.cli import main
sys.exit(main({argv!r}))
"""

LAUNCHER = """
import subprocess, sys
sys.exit(subprocess.call([sys.executable, "-c", {program!r}]))
"""


def _serve_config(tmp_path) -> str:
    config = tmp_path / "appliance.toml"
    config.write_text(f'listen_port = {free_port()}\nadmin_port = {free_port()}\n'
                      f'workers = 2\ndata_dir = "{tmp_path / "data"}"\n'
                      f'graceful_timeout = 10\n')
    return str(config)


def _bundle(tmp_path) -> str:
    bundle = tmp_path / "_MEI0000fake"
    bundle.mkdir()
    (bundle / "libsomething.so").write_bytes(b"\0" * 64)
    return str(bundle)


def test_sigkill_of_the_launcher_stops_the_supervisor_gracefully(tmp_path):
    bundle = _bundle(tmp_path)
    program = FROZEN_MAIN.format(bundle=bundle,
                                 argv=["serve", "--config", _serve_config(tmp_path)])
    running = start_process([sys.executable, "-c", LAUNCHER.format(program=program)], {},
                            tmp_path / "data", new_session=True)
    try:
        wait_for(lambda: len(worker_pids(running.data_dir)) == 2
                 and {p["role"] for p in read_table(running.data_dir)["processes"]
                      if p["state"] == "running"} >= {"ingest", "admin"}, timeout=30,
                 what="appliance running under the launcher")
        children = running.remember_children()
        supervisor = read_table(running.data_dir)["supervisor"]["pid"]
        assert supervisor != running.proc.pid
        with open(f"/proc/{supervisor}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[2]) == running.proc.pid

        running.proc.kill()  # the launcher, as `kill -9 $MAINPID` would
        running.proc.wait()
        wait_for(lambda: not alive(supervisor), timeout=30,
                 what="supervisor stopped after its launcher died")
        wait_for(lambda: not any(alive(pid) for pid in children), timeout=10,
                 what="children gone")
        log = running.log()
        assert "launcher_gone" in log, log
        assert re.search(r"supervisor_stopped.*code=0", log), log
        assert "killing" not in log, log  # drained, not killed
        assert not os.path.exists(bundle), "the orphaned bundle directory was left behind"
    finally:
        running.stop()


def test_a_launcher_dead_before_the_start_means_no_start(tmp_path):
    bundle = _bundle(tmp_path)
    program = FROZEN_MAIN.format(bundle=bundle, argv=["version"])
    # The parent is a shell, not the same executable: as if the launcher had died and
    # the program had been adopted by init or a subreaper.
    done = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "$0"; exit $?', program],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 1, done
    assert "the launcher died before the program started" in done.stderr
    assert done.stdout == ""
    assert not os.path.exists(bundle)


def test_frozen_program_under_its_launcher_runs_and_keeps_the_bundle(tmp_path):
    bundle = _bundle(tmp_path)
    program = FROZEN_MAIN.format(bundle=bundle, argv=["version", "--json"])
    done = subprocess.run([sys.executable, "-c", LAUNCHER.format(program=program)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["appliance"]
    assert os.path.exists(bundle)  # the launcher's to remove


def test_sigint_twice_at_once_is_one_request(trivial):
    """Ctrl-C under the one-file launcher: the terminal's SIGINT and the launcher's copy
    arrive together; the drain goes on and every in-flight request is answered."""
    running = trivial(workers=2)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(get, running.port, "/slow?s=2") for _ in range(4)]
        wait_for(lambda: len([n for n in os.listdir(running.data_dir)
                              if n.startswith("inflight-")]) == 4, what="requests in flight")
        children = running.remember_children()
        running.proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        running.proc.send_signal(signal.SIGINT)
        answers = [f.result(timeout=20) for f in futures]
    assert [status for status, _, _ in answers] == [200] * 4
    assert running.proc.wait(timeout=20) == 0
    wait_for(lambda: not any(alive(pid) for pid in children), what="children gone")
    assert "stop_forced" not in running.log() and "killing" not in running.log()


def test_a_second_sigint_later_cuts_the_drain_short(trivial):
    running = trivial(workers=1)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(get, running.port, "/slow?s=8")
        wait_for(lambda: any(n.startswith("inflight-") for n in os.listdir(running.data_dir)),
                 what="request in flight")
        running.proc.send_signal(signal.SIGINT)
        # "Later" counts from the start of the graceful stop, which a loaded machine
        # may reach well after the signal was sent.
        wait_for(lambda: "supervisor_stopping" in running.log(), 30,
                 what="the graceful stop begun")
        time.sleep(SECOND_SIGNAL_AFTER + 0.5)
        began = time.monotonic()
        running.proc.send_signal(signal.SIGINT)
        assert running.proc.wait(timeout=10) == 0
        assert time.monotonic() - began < 5
        try:
            status = future.result(timeout=10)[0]
        except OSError:
            status = None
    assert status != 200
    assert "stop_forced" in running.log()
