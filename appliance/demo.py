"""``appliance demo``: the whole system on one machine, until Ctrl-C.

A data directory (temporary unless ``--data-dir``; layout in docs/demo.md) gets a flavor
source and ``--cells`` simulated cells, each initialised and populated. Their publishers
and simulators run as supervised children beside the appliance's own (workers, ingest,
admin), all on ipc:// sockets in the data directory. Once the admin listener reports
ready, the URLs and example commands are printed. Ctrl-C (or SIGTERM) stops everything;
the temporary directory is removed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
import urllib.request

from appliance import logs
from appliance.children import TaskChild
from appliance.settings import Settings, SettingsError, load

PROJECTS_PER_CELL = 5           # the first simulated project is "demo"
FLAVOR_SOURCE = "flavors"
READY_TIMEOUT = 120.0           # seconds before the demo says why it is not ready yet
READY_POLL = 0.5
TOKEN = "admin:demo"            # noauth: user admin (an admin) in project demo


def layout(data_dir: str, cells: int, sockets: str | None = None) -> dict:
    """Where everything lives (documented in docs/demo.md); ``sockets``: the socket
    directory, when not ``data_dir/sockets`` (see ``socket_dir``)."""
    names = [f"cell{n}" for n in range(1, cells + 1)] + [FLAVOR_SOURCE]
    sockets = sockets or os.path.join(data_dir, "sockets")
    return {
        "cells_dir": os.path.join(data_dir, "cells"),
        "sockets": sockets,
        "logs": os.path.join(data_dir, "logs"),
        "keys": os.path.join(data_dir, "keys"),
        "feeds": {name: {"db": os.path.join(data_dir, "cells", f"{name}.db"),
                         "feed": f"ipc://{sockets}/{name}.feed",
                         "control": f"ipc://{sockets}/{name}.ctl",
                         "key_file": os.path.join(data_dir, "keys", f"{name}.key")}
                  for name in names},
    }


def socket_dir(data_dir: str, cells: int) -> str | None:
    """None when the feeds' sockets fit in ``data_dir/sockets``; else a new short
    directory under /tmp (a Unix socket's path is at most 107 bytes, and a data
    directory deep in a long TMPDIR would pass it)."""
    from appliance.settings import ipc_path_problem
    where = layout(data_dir, cells)
    if not any(ipc_path_problem(feed[end]) for feed in where["feeds"].values()
               for end in ("feed", "control")):
        return None
    return tempfile.mkdtemp(prefix="appliance-demo-", dir="/tmp")


# Children bodies: module-level functions, called after the fork with a stop event.

def run_publisher(stop: threading.Event, db: str, name: str, feed: str, control: str,
                  key_file: str | None = None) -> None:
    from replica.cell.publisher import PublisherConfig, run_publisher as publish
    publish(PublisherConfig(db=db, name=name, feed_url=feed, control_url=control,
                            key_file=key_file), stop=stop)


def run_simulator(stop: threading.Event, db: str, rate: float, servers: int,
                  projects: int) -> None:
    from replica.cell.simulator import SimulatorConfig, run_simulator as simulate
    simulate(SimulatorConfig(db=db, rate=rate, servers=servers, projects=projects), stop=stop)
    stop.wait()  # a finished simulation is not a crash: wait to be stopped


def _in_child(step, *args) -> None:
    """Run one setup step in a forked child, so no database handle of it stays in the
    supervisor (which forks everything else)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            step(*args)
            code = 0
        except BaseException as exc:
            sys.stderr.write(f"appliance demo: {step.__name__} failed: {exc!r}\n")
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"demo setup step {step.__name__}{args[:2]} failed")


def _init_cell(db: str, name: str, servers: int, seed: int) -> None:
    from replica.cell.outbox import init_cell_db
    from replica.cell.simulator import populate
    init_cell_db(db, name)
    if servers:
        populate(db, servers, PROJECTS_PER_CELL, seed=seed)


def _init_flavors(db: str) -> None:
    from replica.cell.outbox import init_cell_db
    from replica.cell.simulator import seed_flavors
    init_cell_db(db, FLAVOR_SOURCE, flavors=True)
    seed_flavors(db)


def prepare(data_dir: str, cells: int, servers: int, say, sockets: str | None = None) -> dict:
    where = layout(data_dir, cells, sockets)
    for path in (where["cells_dir"], where["sockets"], where["logs"]):
        os.makedirs(path, exist_ok=True)
    os.makedirs(where["keys"], mode=0o700, exist_ok=True)
    feeds = where["feeds"]
    from replica.key_file import write_new_key_file
    for feed in feeds.values():      # each feed sealed with a key of its own, as in production
        if not os.path.exists(feed["key_file"]):
            write_new_key_file(feed["key_file"])
    if not os.path.exists(feeds[FLAVOR_SOURCE]["db"]):
        _in_child(_init_flavors, feeds[FLAVOR_SOURCE]["db"])
    per_cell = [servers // cells + (1 if i < servers % cells else 0) for i in range(cells)]
    for index in range(cells):
        name = f"cell{index + 1}"
        if os.path.exists(feeds[name]["db"]):
            continue  # a kept --data-dir: reuse what is there
        say(f"  creating {name} with {per_cell[index]} servers")
        _in_child(_init_cell, feeds[name]["db"], name, per_cell[index], index + 1)
    where["per_cell"] = per_cell
    return where


def tasks_for(where: dict, cells: int, rate: float) -> tuple[TaskChild, ...]:
    tasks = []
    for name, feed in where["feeds"].items():
        tasks.append(TaskChild("publisher", f"publisher {name}", run_publisher,
                               args=(feed["db"], name, feed["feed"], feed["control"],
                                     feed["key_file"])))
    for index in range(cells):
        name = f"cell{index + 1}"
        if rate > 0:
            tasks.append(TaskChild("simulator", f"simulator {name}", run_simulator,
                                   args=(where["feeds"][name]["db"], rate,
                                         max(where["per_cell"][index], 10),
                                         PROJECTS_PER_CELL)))
    return tuple(tasks)


def tool(name: str) -> str | None:
    """How to type ``name`` here: the bare name if it is on PATH, else its path beside
    this interpreter (``.venv/bin/openstack`` after ``make demo``), else None."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    found = shutil.which(name)
    if found and (not os.path.exists(beside) or os.path.samefile(found, beside)):
        return name
    if os.access(beside, os.X_OK):
        relative = os.path.relpath(beside)
        return shlex.quote(beside if relative.startswith("..") else relative)
    return name if found else None


def command_prefix() -> str:
    if getattr(sys, "frozen", False):
        return shlex.quote(sys.executable)
    return tool("appliance") or f"{shlex.quote(sys.executable)} -m appliance"


def banner(settings: Settings, data_dir: str, kept: bool) -> str:
    api = f"http://{settings.listen_host}:{settings.listen_port}"
    admin = settings.admin_url
    app = command_prefix()
    openstack = ("openstack" if getattr(sys, "frozen", False)
                 else tool("openstack") or "openstack")
    flag = "" if settings.admin_port == 8775 else f" --admin-url {admin}"
    lines = [
        "",
        "The appliance is ready.",
        "",
        f"  Compute API   {api}/v2.1",
        f"  Status page   {admin}/",
        f"  Admin         {admin}/status   {admin}/metrics   {admin}/readyz",
        f"  Data          {data_dir}" + ("" if kept else "   (removed at exit)"),
        f"  Logs          {os.path.join(data_dir, 'logs', 'appliance.log')}",
        "",
        "Try:",
        f"  curl -s -H 'X-Auth-Token: {TOKEN}' {api}/v2.1/servers",
        f"  curl -s -H 'X-Auth-Token: {TOKEN}' '{api}/v2.1/servers/detail?limit=2&all_tenants=1'",
        f"  curl -s -H 'X-Auth-Token: {TOKEN}' {api}/v2.1/flavors",
        f"  curl -s -H 'X-Auth-Token: {TOKEN}' {api}/v2.1/os-quota-sets/demo/detail",
        f"  {openstack} --os-auth-type none --os-endpoint {api}/v2.1 "
        f"--os-identity-api-version 3 server list",
        f"  {openstack} --os-auth-type none --os-endpoint {api}/v2.1 "
        f"--os-identity-api-version 3 server event list \"$({openstack} --os-auth-type none "
        f"--os-endpoint {api}/v2.1 --os-identity-api-version 3 server list -f value -c ID "
        f"--limit 1)\"",
        f"  {openstack} --os-auth-type none --os-endpoint {api}/v2.1 "
        f"--os-identity-api-version 3 keypair list",
        f"  {openstack} --os-auth-type none --os-endpoint {api}/v2.1 "
        f"--os-identity-api-version 3 compute service list",
        f"  {openstack} --os-auth-type none --os-endpoint {api}/v2.1 "
        f"--os-identity-api-version 3 availability zone list --compute",
        f"  {openstack} --os-auth-type none --os-endpoint {api}/v2.1 "
        f"--os-identity-api-version 3 server group list",
        f"  {openstack} --os-auth-type none --os-endpoint {api}/v2.1 "
        f"--os-identity-api-version 3 aggregate list",
        f"  {openstack} --os-auth-type none --os-endpoint {api}/v2.1 "
        f"--os-identity-api-version 3 limits show --absolute",
        f"  {openstack} --os-auth-type none --os-endpoint {api}/v2.1 "
        f"--os-identity-api-version 3 hypervisor list",
        f"  {app} status{flag}",
        f"  {app} resync --cell cell1{flag}",
        f"  {app} verify{flag}",
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


class ReadyWatch:
    """Called from the supervisor's loop: prints the banner once the admin listener says
    ready (or, after READY_TIMEOUT, why not yet)."""

    def __init__(self, settings: Settings, text: str, say):
        self.url = settings.admin_url + "/readyz"
        self.text = text
        self.say = say
        self.started = time.monotonic()
        self.next_check = 0.0
        self.done = False
        self.warned = False

    def __call__(self, supervisor) -> None:
        now = time.monotonic()
        if self.done or now < self.next_check:
            return
        self.next_check = now + READY_POLL
        try:
            with urllib.request.urlopen(self.url, timeout=0.5) as response:
                ready = response.status == 200
        except (OSError, ValueError):
            ready = False
        if ready:
            self.done = True
            self.say(self.text)
        elif not self.warned and now - self.started > READY_TIMEOUT:
            self.warned = True
            self.say(f"still not ready after {READY_TIMEOUT:.0f}s; see {self.url} and the log")


def run(args) -> int:
    from appliance.supervisor import StartError, Supervisor, reserve

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    kept = bool(args.data_dir)
    data_dir = os.path.abspath(args.data_dir) if kept else tempfile.mkdtemp(
        prefix="appliance-demo-")
    code = 1
    sockets = None
    try:
        sockets = socket_dir(data_dir, args.cells)
        where = layout(data_dir, args.cells, sockets)
        cells = [{"name": name, "feed": feed["feed"], "control": feed["control"],
                  "kind": "flavors" if name == FLAVOR_SOURCE else "servers",
                  "key_file": feed["key_file"]}
                 for name, feed in where["feeds"].items()]
        overrides = {"data_dir": data_dir, "listen_port": args.port,
                     "admin_port": args.admin_port, "cells": cells,
                     "workers": args.workers, "listen_host": "127.0.0.1",
                     "admin_host": "127.0.0.1"}
        if "APPLIANCE_ACCESS_LOG" not in os.environ:
            overrides["access_log"] = "info"   # the demo's log shows each request
        settings = load(None, overrides=overrides)
        for host, port, what in ((settings.listen_host, settings.listen_port, "listen"),
                                 (settings.admin_host, settings.admin_port, "admin")):
            reserve(host, port, what).sock.close()  # a busy port fails before any setup
        say(f"appliance demo: {args.cells} cells, {args.servers} servers, "
            f"{args.rate:g} changes/s per cell, data in {data_dir}")
        where = prepare(data_dir, args.cells, args.servers, say, sockets)
        log_path = os.path.join(where["logs"], "appliance.log")
        saved_stderr = _log_to(log_path)
        logs.configure(settings.log_level, settings.log_format)
        try:
            supervisor = Supervisor(settings, tasks=tasks_for(where, args.cells, args.rate),
                                    on_tick=ReadyWatch(settings, banner(settings, data_dir,
                                                                        kept), say))
            code = supervisor.run()
        except StartError as exc:
            os.write(saved_stderr, f"appliance demo: error: {exc}\n".encode())
            return 1
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
        say("appliance demo: stopped" + ("" if code == 0 else f" (exit code {code}; see "
                                                              f"{log_path})"))
        if code != 0 and not kept:
            _show_tail(log_path)
    except SettingsError as exc:
        print(f"appliance demo: error: {exc}", file=sys.stderr)
        code = 2
    except StartError as exc:
        print(f"appliance demo: error: {exc}", file=sys.stderr)
        code = 1
    except RuntimeError as exc:
        print(f"appliance demo: error: {exc}", file=sys.stderr)
        code = 1
    finally:
        if not kept:
            shutil.rmtree(data_dir, ignore_errors=True)
        if sockets is not None:
            shutil.rmtree(sockets, ignore_errors=True)
    return code


def _log_to(path: str) -> int:
    """Send this process's (and its children's) stderr to ``path``; return the old fd."""
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    return saved


def _show_tail(path: str, lines: int = 15) -> None:
    try:
        with open(path, errors="replace") as f:
            tail = f.read().splitlines()[-lines:]
    except OSError:
        return
    sys.stderr.write("\n".join(tail) + "\n")
