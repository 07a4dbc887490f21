"""`dist/appliance demo` end to end, run once for the module: simulated cells feeding the
appliance, the API answering with servers, `status` showing the cells live, a crashed
worker replaced, SIGHUP through the launcher replacing the workers, and SIGTERM
stopping every process and removing the unpacked directory.

Where mount namespaces are available, the demo runs with the system's libnanomsg made
unloadable, and the processes' memory maps show the bundled copy in use."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import urllib.request
from dataclasses import dataclass, field

import pytest

from tests.binary.conftest import (UNPACKED_PREFIX, WORKER_TITLE, binary_env, descendants,
                                   is_alive, kill_tree, mapped_files, process_title,
                                   run_binary, unpacked_dirs)
from tests.conftest import ROOT, free_port, wait_for

DEMO_SOURCE = os.path.join(ROOT, "appliance", "demo.py")
DEMO_SERVERS = 40
DEMO_WORKERS = 2
START_TIMEOUT = 90              # exec to every cell live, on a busy 2-core machine
STOP_TIMEOUT = 60
ADMIN_TOKEN = "admin:admin"     # noauth: user "admin" is an admin


@dataclass
class Demo:
    binary: str
    proc: subprocess.Popen
    port: int
    admin_port: int
    tmpdir: str
    log_path: str
    hidden: tuple               # system libnanomsg files hidden from it, or ()
    seen: set = field(default_factory=set)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-6000:]

    def processes(self) -> list[int]:
        pids = descendants(self.proc.pid)
        self.seen.update(pids)
        return pids

    def titles(self) -> list[str]:
        return [process_title(p) for p in self.processes()]

    def workers(self) -> list[int]:
        return sorted(p for p in self.processes()
                      if process_title(p).startswith(WORKER_TITLE))


def _demo_missing() -> str | None:
    if not os.path.exists(DEMO_SOURCE):
        return "appliance demo is not implemented yet (appliance/demo.py does not exist)"
    return None


def _get(url: str, timeout: float = 5.0):
    request = urllib.request.Request(url, headers={"X-Auth-Token": ADMIN_TOKEN})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, dict(response.headers), response.read()


def _servers(demo: Demo) -> list:
    status, _, body = _get(f"{demo.api}/v2.1/servers/detail?all_tenants=1")
    return json.loads(body)["servers"] if status == 200 else []


def _no_core_dumps():
    # The crash test kills a worker with SIGSEGV: no core file in the checked TMPDIR.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.fixture(scope="module")
def demo(binary, tmp_path_factory, request):
    missing = _demo_missing()
    if missing:
        pytest.skip(missing)
    try:
        prefix, hidden = request.getfixturevalue("hide_system_libnanomsg")
    except pytest.skip.Exception:
        prefix, hidden = (), ()
    base = tmp_path_factory.mktemp("demo")
    tmpdir = str(base / "tmp")
    os.mkdir(tmpdir)
    log_path = str(base / "demo.log")
    port, admin_port = free_port(), free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*prefix, binary, "demo", "--port", str(port), "--admin-port", str(admin_port),
             "--servers", str(DEMO_SERVERS), "--workers", str(DEMO_WORKERS), "--rate", "5"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmpdir,
            env=binary_env(tmpdir), start_new_session=True, preexec_fn=_no_core_dumps)
    running = Demo(binary, proc, port, admin_port, tmpdir, log_path, tuple(hidden))
    try:
        wait_for(lambda: proc.poll() is not None or len(_servers(running)) > 0,
                 timeout=START_TIMEOUT, what="the demo to answer with servers")
        assert proc.poll() is None, f"demo exited with {proc.returncode}:\n{running.log()}"
        running.processes()
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        kill_tree(proc)


def test_demo_answers_servers_detail(demo):
    status, headers, body = _get(f"{demo.api}/v2.1/servers/detail?all_tenants=1")
    assert status == 200
    servers = json.loads(body)["servers"]
    assert servers
    assert all(s["id"] and s["status"] and "flavor" in s for s in servers)
    assert "Server-Timing" in headers


def test_status_page_files_are_in_the_binary(demo):
    status, headers, body = _get(f"{demo.admin_url}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script src="static/status.js"' in body
    for name in ("status.js", "status.css"):
        status, _, body = _get(f"{demo.admin_url}/static/{name}")
        assert status == 200 and body


def test_status_shows_every_cell_live(demo, private_tmp):
    def cells_live():
        done = run_binary(demo.binary, "status", "--json", "--admin-url", demo.admin_url,
                          tmpdir=private_tmp)
        if done.returncode != 0:
            return None
        cells = json.loads(done.stdout)["cells"]
        return cells if cells and all(c["state"] == "live" for c in cells) else None

    cells = wait_for(cells_live, timeout=START_TIMEOUT, what="every cell live")
    assert len(cells) >= 2
    assert all(c["seq"] >= 1 for c in cells)
    assert unpacked_dirs(private_tmp) == []


def test_libnanomsg_is_the_bundled_copy(demo):
    loaded = {}
    for pid in [demo.proc.pid, *demo.processes()]:
        paths = mapped_files(pid, "libnanomsg")
        if paths:
            loaded[pid] = paths
    assert loaded, "no process of the demo has libnanomsg mapped"
    unpacked = os.path.join(demo.tmpdir, UNPACKED_PREFIX)
    for pid, paths in loaded.items():
        for path in paths:
            assert path.startswith(unpacked), (pid, process_title(pid), path)
            assert path not in demo.hidden


def test_a_crashed_worker_is_replaced(demo):
    workers = wait_for(lambda: len(demo.workers()) == DEMO_WORKERS and demo.workers(),
                       timeout=30, what=f"the demo's workers among {demo.titles()}")
    victim = workers[0]
    os.kill(victim, signal.SIGSEGV)
    wait_for(lambda: not is_alive(victim) and len(demo.workers()) == DEMO_WORKERS,
             timeout=30, what="a replacement worker")
    assert victim not in demo.workers()
    # The crash removed nothing the others need.
    assert unpacked_dirs(demo.tmpdir)
    assert wait_for(lambda: _servers(demo), timeout=30, what="answers after the crash")


def test_sighup_to_the_launcher_replaces_the_workers(demo):
    # The one-file launcher is the process a service manager signals: it must forward
    # SIGHUP to the supervisor, which replaces its workers one by one.
    before = set(wait_for(lambda: len(demo.workers()) == DEMO_WORKERS and demo.workers(),
                          timeout=30, what="the demo's workers"))
    demo.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(demo.workers()) == DEMO_WORKERS and not before & set(demo.workers()),
             timeout=60, what=f"new workers after SIGHUP among {demo.titles()}")
    assert demo.proc.poll() is None
    assert wait_for(lambda: _servers(demo), timeout=30, what="answers after the reload")


def test_sigterm_stops_everything_and_removes_the_unpacked_dir(demo):
    children = demo.processes()
    assert children
    demo.proc.send_signal(signal.SIGTERM)
    code = demo.proc.wait(timeout=STOP_TIMEOUT)
    assert code == 0, demo.log()
    wait_for(lambda: not any(is_alive(p) for p in demo.seen), timeout=10,
             what="every process of the demo to exit")
    assert unpacked_dirs(demo.tmpdir) == []
    # The demo's own temporary data directory goes too.
    assert os.listdir(demo.tmpdir) == []
