"""python -m bench.soak [--minutes N] [--seed S]: a repeatable fault run.

A demo-like deployment (two simulated cells and a flavor source, their publishers, the
appliance with forked workers, ingest and the admin listener; cell2's feed goes through a
relay that can lose messages or inject some) runs with churn (the simulator) and a reader
load (threads over show / list / detail, every failed read noted with its time) while a
seeded schedule of faults is played, one after the other: SIGKILL of a publisher, a
worker, ingest or a simulator; SIGSTOP/SIGCONT of a publisher; a resync under churn; a
lossy relay; a full disk (the appliance's data dir is a small tmpfs, filled up and
emptied again); a burst of malformed and foreign-epoch feed messages. After each fault
the run waits until every cell is live again and caught up with its cell's head as it
was when the fault ended (the recovery time).

Then it checks: failed reads only within a killed worker's in-flight window, every cell
live at the end, ``appliance verify`` clean, and every cell database compared with the
API (every server of the cell served with the same status, name and updated; nothing
extra). It prints a table and writes ``bench/results/soak-latest.json``; the exit code is
1 when a check fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

from bench import client, machine
from bench.procs import Processes, children_of, wait_until
from bench.relay import Relay
from bench.ports import free_port
from bench.stack import appliance_argv, populate_cell

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                           "soak-latest.json")
TOKEN = "admin:demo"
HEADERS = {"X-Auth-Token": TOKEN, "Accept": "application/json"}
FLAVORS = "flavors"
RELAYED = "cell2"                 # the cell whose feed goes through the relay
PROJECTS = 5
WORKERS = 2
READ_TIMEOUT_S = 10.0
WORKER_KILL_WINDOW_S = 1.0        # a failed read is allowed this long after a worker kill
RECOVERY_TIMEOUT_S = 120.0
VERIFY_TIMEOUT_S = 180.0
TMPFS_MIB = 256
FAULT_KINDS = ("kill_publisher", "kill_worker", "kill_ingest", "kill_simulator",
               "stop_publisher", "resync", "lossy_relay", "disk_full", "rogue_burst")


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# The deployment
# ---------------------------------------------------------------------------

class Deployment:
    """Cells, publishers, simulators, the relay and the appliance, all started through
    ``Processes`` (their own process groups, stopped at the end)."""

    def __init__(self, root: str, procs: Processes, servers: int, rate: float, seed: int,
                 tmpfs: bool, log=_say):
        self.root = root
        self.procs = procs
        self.rate = rate
        self.seed = seed
        self.log = log
        self.cells = ["cell1", "cell2"]
        self.per_cell = {name: servers // 2 for name in self.cells}
        self.logs = os.path.join(root, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.data_dir = os.path.join(root, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.mounted = False
        if tmpfs:
            self.mounted = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MIB}m", "tmpfs", self.data_dir],
                capture_output=True).returncode == 0
        self.feeds: dict[str, dict] = {}
        for name in [*self.cells, FLAVORS]:
            self.feeds[name] = {"db": os.path.join(root, f"{name}.db"),
                                "feed": f"tcp://127.0.0.1:{free_port()}",
                                "control": f"tcp://127.0.0.1:{free_port()}"}
        self.relay_url = f"tcp://127.0.0.1:{free_port()}"
        self.relay: Relay | None = None
        self.publishers: dict[str, subprocess.Popen] = {}
        self.simulators: dict[str, subprocess.Popen] = {}
        self.appliance: subprocess.Popen | None = None
        self.port = free_port()
        self.admin_port = free_port()
        self.config_path = os.path.join(root, "appliance.toml")
        self.simulator_runs = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def prepare(self) -> None:
        from appliance.demo import _init_flavors
        for index, name in enumerate(self.cells):
            self.log(f"  populating {name} with {self.per_cell[name]} servers")
            populate_cell(self.feeds[name]["db"], self.per_cell[name], PROJECTS,
                          self.seed + index, name=name, log=self.log)
        _init_flavors(self.feeds[FLAVORS]["db"])

    def start(self) -> None:
        for name in self.feeds:
            self.start_publisher(name)
        self.relay = Relay(self.feeds[RELAYED]["feed"], self.relay_url, seed=self.seed)
        self._write_config()
        self.appliance = self.procs.start(
            "appliance", [*appliance_argv(), "serve", "--config", self.config_path],
            log_path=os.path.join(self.logs, "appliance.log"),
            env={k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")})
        for name in self.cells:
            self.start_simulator(name)

    def _write_config(self) -> None:
        lines = ['listen_host = "127.0.0.1"', f"listen_port = {self.port}",
                 'admin_host = "127.0.0.1"', f"admin_port = {self.admin_port}",
                 f"workers = {WORKERS}", f'data_dir = "{self.data_dir}"',
                 'log_level = "warning"', ""]
        for name, where in self.feeds.items():
            feed_url = self.relay_url if name == RELAYED else where["feed"]
            lines += ["[[cell]]", f'name = "{name}"', f'feed = "{feed_url}"',
                      f'control = "{where["control"]}"',
                      f'kind = "{"flavors" if name == FLAVORS else "servers"}"', ""]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines))

    def start_publisher(self, name: str) -> subprocess.Popen:
        where = self.feeds[name]
        proc = self.procs.start(
            f"publisher {name}", [*appliance_argv(), "cell", "--db", where["db"], "--name", name,
                                  "--feed", where["feed"], "--control", where["control"]],
            log_path=os.path.join(self.logs, f"publisher-{name}.log"))
        self.publishers[name] = proc
        return proc

    def start_simulator(self, name: str) -> subprocess.Popen:
        self.simulator_runs += 1
        proc = self.procs.start(
            f"simulator {name}", [*appliance_argv(), "cell", "simulate", "--db",
                                  self.feeds[name]["db"], "--rate", f"{self.rate:g}",
                                  "--servers", str(max(self.per_cell[name], 10)),
                                  "--projects", str(PROJECTS),
                                  "--seed", str(self.seed * 1000 + self.simulator_runs)],
            log_path=os.path.join(self.logs, f"simulator-{name}.log"))
        self.simulators[name] = proc
        return proc

    def stop_simulators(self) -> None:
        for name in list(self.simulators):
            self.procs.stop(self.simulators.pop(name))

    def close(self, keep: bool = False) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if self.mounted:
            # Processes are stopped by then (Processes.__exit__ runs first).
            if keep:
                try:
                    shutil.copytree(self.data_dir, self.data_dir + "-kept", symlinks=True,
                                    ignore=_sockets, dirs_exist_ok=True)
                except (OSError, shutil.Error) as exc:
                    self.log(f"  could not keep {self.data_dir}: {exc}")
            subprocess.run(["umount", "-l", self.data_dir], capture_output=True)
            self.mounted = False

    # -- state -------------------------------------------------------------------

    def status(self) -> dict:
        return client.get_json(f"{self.admin_url}/status", timeout=5)

    def heads(self) -> dict[str, int]:
        from replica.cell import connection, outbox
        out = {}
        for name, where in self.feeds.items():
            conn = connection.open_cell_reader(where["db"])
            try:
                out[name] = outbox.outbox_head(conn)
            finally:
                conn.close()
        return out

    def caught_up(self, heads: dict[str, int]):
        """Every feed live with at least ``heads`` applied; the status, or None."""
        status = self.status()
        cells = {c["cell"]: c for c in status.get("cells", [])}
        for name, head in heads.items():
            cell = cells.get(name)
            if not cell or cell.get("state") != "live" or (cell.get("seq") or 0) < head:
                return None
        return status

    def wait_caught_up(self, timeout: float = RECOVERY_TIMEOUT_S) -> dict:
        heads = self.heads()
        return wait_until(lambda: self.caught_up(heads), timeout,
                          f"every feed live with {heads}", interval=0.1, proc=self.appliance)

    def role_pids(self, role: str) -> list[int]:
        """Live pids of the appliance's children of one role (the process table, checked
        against the supervisor's children: the table may be stale on a full disk)."""
        try:
            with open(os.path.join(self.data_dir, "processes.json")) as f:
                table = json.load(f).get("processes", [])
        except (OSError, ValueError):
            table = []
        children = set(children_of(self.appliance.pid)) if self.appliance else set()
        return [p["pid"] for p in table if p.get("role") == role and p.get("pid") in children]


def _sockets(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if stat.S_ISSOCK(os.lstat(os.path.join(directory, n)).st_mode)]


# ---------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------

class Readers:
    """Threads reading show / list / detail through keep-alive connections. A read fails
    on a connection error, a timeout, a 5xx or any status but 200 (404 for a show: the
    churn deletes servers)."""

    def __init__(self, port: int, threads: int, seed: int, clock):
        self.port = port
        self.clock = clock
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.total = 0
        self.by_kind: dict[str, int] = {}
        self.failed: list[dict] = []
        self.ids: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(random.Random(seed + n),),
                                         daemon=True) for n in range(threads)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(READ_TIMEOUT_S + 5)

    def _path(self, rng: random.Random) -> tuple[str, str]:
        roll = rng.random()
        if roll < 0.6 and self.ids:
            return "show", f"/v2.1/servers/{rng.choice(self.ids)}"
        if roll < 0.85:
            return "list", "/v2.1/servers?all_tenants=1&limit=100"
        return "detail", "/v2.1/servers/detail?all_tenants=1&limit=50"

    def _run(self, rng: random.Random) -> None:
        conn = None
        while not self.stop.is_set():
            kind, path = self._path(rng)
            started = self.clock()
            error = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                      timeout=READ_TIMEOUT_S)
                conn.request("GET", path, headers=HEADERS)
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    if kind == "list":
                        found = [s["id"] for s in json.loads(body)["servers"]]
                        if found:
                            with self.lock:
                                self.ids = (self.ids + found)[-2000:]
                elif not (kind == "show" and response.status == 404):
                    error = f"HTTP {response.status}: {body[:160]!r}"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                error = repr(exc)[:200]
            if error is not None and conn is not None:
                conn.close()
                conn = None
            ended = self.clock()
            with self.lock:
                self.total += 1
                self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
                if error is not None:
                    self.failed.append({"kind": kind, "path": path, "started": round(started, 3),
                                        "ended": round(ended, 3), "error": error})
            if error is not None:
                time.sleep(0.05)   # a refused connection is not a reason to spin
        if conn is not None:
            conn.close()


# ---------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------

def plan(rng: random.Random, kinds: tuple[str, ...], count: int) -> list[dict]:
    """``count`` faults: every kind once in a shuffled round, then another round..."""
    out: list[dict] = []
    while len(out) < count:
        round_ = list(kinds)
        rng.shuffle(round_)
        for kind in round_:
            fault = {"kind": kind, "gap_s": round(rng.uniform(2.0, 6.0), 1)}
            if kind in ("kill_publisher", "stop_publisher"):
                fault["target"] = rng.choice(["cell1", "cell2", FLAVORS])
            elif kind in ("kill_simulator", "resync"):
                fault["target"] = rng.choice(["cell1", "cell2"])
            elif kind == "kill_worker":
                fault["target"] = "worker"
            elif kind == "kill_ingest":
                fault["target"] = "ingest"
            elif kind in ("lossy_relay", "rogue_burst"):
                fault["target"] = RELAYED
            elif kind == "disk_full":
                fault["target"] = "data dir"
            if kind == "stop_publisher":
                fault["hold_s"] = round(rng.uniform(2.0, 5.0), 1)
            elif kind == "lossy_relay":
                fault["hold_s"] = round(rng.uniform(5.0, 12.0), 1)
                fault["drop"] = round(rng.uniform(0.1, 0.5), 2)
            elif kind == "disk_full":
                fault["hold_s"] = round(rng.uniform(4.0, 10.0), 1)
            elif kind == "rogue_burst":
                fault["messages"] = rng.randint(50, 300)
            out.append(fault)
            if len(out) == count:
                break
    return out


def rogue_messages(rng: random.Random, count: int, epoch: str, seq: int) -> list[bytes]:
    """Malformed bytes, well-formed messages of a foreign epoch, and a heartbeat of the
    right epoch with an absurd head."""
    from replica import feed
    out = []
    for n in range(count):
        pick = n % 5
        if pick == 0:
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))))
        elif pick == 1:
            out.append(b"\x92" + b"\xc1" * rng.randint(1, 50))      # msgpack: never used
        elif pick == 2:
            out.append(feed.encode_heartbeat(RELAYED, f"foreign-{n}", seq, 1, time.time()))
        elif pick == 3:
            out.append(json.dumps({"cell": RELAYED, "epoch": epoch}).encode())
        else:
            out.append(feed.encode_batch(RELAYED, f"foreign-{n}", []))
    out.append(feed.encode_heartbeat(RELAYED, epoch, 2 ** 64 - 1, 1, time.time()))
    return out


def _group_alive(pgid: int) -> bool:
    """A process of group ``pgid`` still runs (zombies, which nothing may reap here, do
    not count)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _count_in(path: str, text: str) -> int:
    try:
        with open(path, errors="replace") as f:
            return f.read().count(text)
    except OSError:
        return 0


def fill_disk(path: str) -> int:
    """Write a file until the file system is full; its size."""
    written = 0
    chunk = b"\0" * (1024 * 1024)
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError:
                break
    # the last bytes too (a chunk may not fit where a page would)
    try:
        with open(path + ".tail", "wb", buffering=0) as f:
            while True:
                written += f.write(b"\0" * 4096)
    except OSError:
        pass
    return written


class FaultRun:
    def __init__(self, dep: Deployment, readers: Readers, clock, log=_say):
        self.dep = dep
        self.readers = readers
        self.clock = clock
        self.log = log
        self.worker_kills: list[float] = []
        self.records: list[dict] = []

    def play(self, fault: dict) -> dict:
        record = {**fault, "at_s": round(self.clock(), 2), "recovery_s": None, "ok": False,
                  "note": ""}
        kind, target = fault["kind"], fault["target"]
        dep = self.dep
        resyncs_before = self._resyncs()
        ended = None       # when the fault's cause ended (a kill: at once)
        try:
            if kind == "kill_publisher":
                proc = dep.publishers[target]
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                # Its control child must die with it (nothing else of the group is
                # touched until then): a survivor would hold the control address.
                try:
                    wait_until(lambda: not _group_alive(proc.pid), 5,
                               f"publisher {target}'s other processes to die with it")
                finally:
                    dep.procs.stop(proc, grace=2)
                log_path = os.path.join(dep.logs, f"publisher-{target}.log")
                busy_before = _count_in(log_path, "Address already in use")
                dep.start_publisher(target)
            elif kind == "stop_publisher":
                proc = dep.publishers[target]
                os.killpg(proc.pid, signal.SIGSTOP)
                time.sleep(fault["hold_s"])
                os.killpg(proc.pid, signal.SIGCONT)
            elif kind == "kill_simulator":
                proc = dep.simulators[target]
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                dep.procs.stop(proc, grace=2)
                dep.start_simulator(target)
            elif kind == "kill_worker":
                pids = dep.role_pids("worker")
                if not pids:
                    raise RuntimeError("no worker found")
                pid = random.Random(len(self.records)).choice(pids)
                self.worker_kills.append(self.clock())
                os.kill(pid, signal.SIGKILL)
                ended = self.clock()
                record["note"] = f"pid {pid}"
                wait_until(lambda: (lambda now: len(now) == WORKERS and pid not in now)(
                    dep.role_pids("worker")), RECOVERY_TIMEOUT_S, "the worker replaced")
            elif kind == "kill_ingest":
                pids = dep.role_pids("ingest")
                if not pids:
                    raise RuntimeError("no ingest found")
                os.kill(pids[0], signal.SIGKILL)
                ended = self.clock()
                record["note"] = f"pid {pids[0]}"
                wait_until(lambda: (lambda now: now and pids[0] not in now)(
                    dep.role_pids("ingest")), RECOVERY_TIMEOUT_S, "ingest replaced")
            elif kind == "resync":
                job = client.post_json(f"{dep.admin_url}/resync?cell={target}", timeout=10)
                job_id = job["job"]["id"] if isinstance(job.get("job"), dict) else job["job"]
                done = wait_until(
                    lambda: (lambda j: j if j.get("state") != "running" else None)(
                        client.get_json(f"{dep.admin_url}/jobs/{job_id}", timeout=5)["job"]),
                    RECOVERY_TIMEOUT_S, f"resync job {job_id}")
                record["note"] = f"job {done['state']}"
                if done["state"] != "done":
                    raise RuntimeError(f"resync job {done['state']}: {done.get('error')}")
            elif kind == "lossy_relay":
                before = dep.relay.dropped
                dep.relay.drop = fault["drop"]
                time.sleep(fault["hold_s"])
                dep.relay.drop = 0.0
                record["note"] = f"{dep.relay.dropped - before} dropped"
            elif kind == "disk_full":
                if not dep.mounted:
                    record["note"] = "skipped: no tmpfs (needs root)"
                    record["ok"] = None
                    return self._done(record)
                filler = os.path.join(dep.data_dir, "filler")
                try:
                    size = fill_disk(filler)
                    filled = self.clock()
                    seen = None
                    try:
                        wait_until(lambda: (dep.status().get("ingest") or {}).get("disk_full"),
                                   fault["hold_s"], "ingest to report the full disk")
                        seen = round(self.clock() - filled, 2)
                    except TimeoutError:
                        pass       # no commit needed new space meanwhile
                    time.sleep(max(0.0, fault["hold_s"] - (self.clock() - filled)))
                finally:
                    for path in (filler, filler + ".tail"):
                        if os.path.exists(path):
                            os.unlink(path)
                record["disk_full_reported_after_s"] = seen
                record["note"] = (f"{size // (1024 * 1024)} MiB filled, disk_full "
                                  + (f"reported after {seen}s" if seen is not None
                                     else "not reported"))
            elif kind == "rogue_burst":
                status = {c["cell"]: c for c in dep.status()["cells"]}
                before = status[RELAYED]
                messages = rogue_messages(random.Random(fault["messages"]), fault["messages"],
                                          before["epoch"], before["seq"])
                for data in messages:
                    dep.relay.inject(data)
                after = wait_until(
                    lambda: (lambda c: c if c["dead_letters"] >= before["dead_letters"]
                             + len(messages) - 1 else None)(
                        {c["cell"]: c for c in dep.status()["cells"]}[RELAYED]),
                    30, f"{len(messages)} dead letters")
                dead = after["dead_letters"] - before["dead_letters"]
                record["note"] = (f"{len(messages)} sent, {dead} dead-lettered, "
                                  f"resyncs {before['resyncs']}->{after['resyncs']}")
                if after["resyncs"] != before["resyncs"]:
                    raise RuntimeError("a rogue burst caused a resync: " + record["note"])
            ended = self.clock() if ended is None else ended
            dep.wait_caught_up()
            record["recovery_s"] = round(self.clock() - ended, 2)
            if kind != "kill_ingest":      # a new ingest counts from 0
                after = self._resyncs()
                record["resyncs"] = {cell: n - resyncs_before.get(cell, 0)
                                     for cell, n in after.items()
                                     if n != resyncs_before.get(cell, 0)}
                if record["resyncs"]:
                    record["note"] += (" " if record["note"] else "") + \
                        f"resyncs {record['resyncs']}"
            if kind == "kill_publisher":
                busy = _count_in(log_path, "Address already in use") - busy_before
                if busy:
                    raise RuntimeError(f"the new publisher logged 'Address already in use' "
                                       f"{busy} times")
            record["ok"] = True
        except Exception as exc:   # a fault that did not recover is a result, not a crash
            record["note"] = (record["note"] + "; " if record["note"] else "") + repr(exc)[:300]
        return self._done(record)

    def _resyncs(self) -> dict[str, int]:
        try:
            return {c["cell"]: c.get("resyncs", 0) for c in self.dep.status()["cells"]}
        except Exception:
            return {}

    def _done(self, record: dict) -> dict:
        self.records.append(record)
        recovery = "-" if record["recovery_s"] is None else f"{record['recovery_s']:.2f}s"
        self.log(f"  {record['at_s']:8.1f}s  {record['kind']:<15} {record['target']:<9} "
                 f"recovered {recovery:<8} {record['note']}")
        return record


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

# vm_state -> API status, and the task_states that override it (Nova's documented
# mapping, for the states the simulator writes; an unmapped pair is reported).
_STATUS = {"active": "ACTIVE", "building": "BUILD", "stopped": "SHUTOFF", "error": "ERROR",
           "resized": "VERIFY_RESIZE", "deleted": "DELETED", "soft-delete": "SOFT_DELETED",
           "paused": "PAUSED", "suspended": "SUSPENDED", "shelved": "SHELVED",
           "shelved_offloaded": "SHELVED_OFFLOADED", "rescued": "RESCUE"}
_TASK_STATUS = {("active", "resize_prep"): "RESIZE", ("active", "resize_migrating"): "RESIZE",
                ("active", "resize_migrated"): "RESIZE", ("active", "resize_finish"): "RESIZE",
                ("active", "rebooting"): "REBOOT", ("active", "rebooting_hard"): "HARD_REBOOT",
                ("active", "migrating"): "MIGRATING", ("stopped", "resize_prep"): "RESIZE",
                ("resized", "resize_reverting"): "REVERT_RESIZE"}


def expected_status(vm_state: str | None, task_state: str | None) -> str:
    found = _TASK_STATUS.get((vm_state, task_state))
    return found or _STATUS.get(vm_state or "", f"UNMAPPED({vm_state},{task_state})")


def cell_servers(db: str) -> dict[str, dict]:
    from replica.cell.connection import open_cell_reader
    conn = open_cell_reader(db)
    try:
        rows = conn.execute("SELECT uuid, display_name, vm_state, task_state, updated_at, "
                            "created_at FROM instances WHERE deleted = 0")
        # A server never updated shows the time of the request as "updated" (as Nova
        # does): None here, any time matches.
        return {uuid: {"name": name, "status": expected_status(vm, task),
                       "updated": updated[:19].replace(" ", "T") + "Z" if updated else None}
                for uuid, name, vm, task, updated, created in rows}
    finally:
        conn.close()


def api_servers(base_url: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    marker = None
    while True:
        url = f"{base_url}/v2.1/servers/detail?all_tenants=1&limit=1000"
        if marker:
            url += f"&marker={marker}"
        page = client.get_json(url, headers=HEADERS, timeout=60)["servers"]
        for s in page:
            out[s["id"]] = {"name": s["name"], "status": s["status"], "updated": s["updated"]}
        if len(page) < 1000:
            return out
        marker = page[-1]["id"]


def _same_server(expected: dict, served: dict) -> bool:
    return all(value is None or served.get(key) == value for key, value in expected.items())


def compare(dep: Deployment) -> dict:
    expected: dict[str, dict] = {}
    for name in dep.cells:
        expected.update(cell_servers(dep.feeds[name]["db"]))
    served = api_servers(dep.base_url)
    missing = sorted(set(expected) - set(served))
    extra = sorted(set(served) - set(expected))
    differing = sorted(k for k in set(expected) & set(served)
                       if not _same_server(expected[k], served[k]))
    return {"cell_servers": len(expected), "api_servers": len(served), "missing": missing[:20],
            "extra": extra[:20], "differing": [{"id": k, "cell": expected[k], "api": served[k]}
                                               for k in differing[:20]],
            "missing_count": len(missing), "extra_count": len(extra),
            "differing_count": len(differing)}


def run_verify(dep: Deployment) -> dict:
    try:
        done = subprocess.run([*appliance_argv(), "verify", "--admin-url", dep.admin_url,
                               "--json"], capture_output=True, text=True,
                              timeout=VERIFY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"exit_code": None, "differing": None,
                "output": f"appliance verify still running after {VERIFY_TIMEOUT_S:.0f}s"}
    try:
        job = json.loads(done.stdout)
    except ValueError:
        return {"exit_code": done.returncode, "differing": None,
                "output": (done.stdout + done.stderr)[-500:]}
    cells = (job.get("result") or {}).get("cells", {})
    differing = sum(len(c.get("differing", [])) for c in cells.values())
    return {"exit_code": done.returncode, "state": job.get("state"), "differing": differing,
            "cells": {n: len(c.get("differing", [])) for n, c in cells.items()}}


def allowed(failure: dict, kills: list[float]) -> bool:
    """In a killed worker's in-flight window: the kill fell while the read was running,
    or the read ended within WORKER_KILL_WINDOW_S after a kill."""
    return any(failure["started"] <= k + WORKER_KILL_WINDOW_S and failure["ended"] >= k
               for k in kills)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

def run(minutes: float, seed: int, out: str, servers: int = 2000, rate: float = 20.0,
        readers: int = 4, kinds: tuple[str, ...] = FAULT_KINDS, tmpfs: bool = True,
        keep: bool = False, log=_say) -> dict:
    rng = random.Random(seed)
    schedule = plan(rng, kinds, 200)
    root = tempfile.mkdtemp(prefix="appliance-soak-")
    started_at = time.time()
    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    log(f"soak: {minutes:g} min, seed {seed}, {servers} servers, {rate:g} changes/s per cell, "
        f"{readers} reader threads, data in {root}")
    log("fault schedule (seeded; played in order until the time is up):")
    for n, fault in enumerate(schedule[:len(kinds) * 2]):
        extra = {k: v for k, v in fault.items() if k not in ("kind", "target")}
        log(f"  {n + 1:3d}. {fault['kind']:<15} {fault['target']:<9} {extra}")
    document: dict = {"kind": "soak", "started_at": started_at, "seed": seed,
                      "minutes": minutes, "servers": servers, "rate": rate,
                      "machine": machine.describe(), "faults": [], "reads": {},
                      "checks": {}, "passed": False}
    dep = None
    try:
        with Processes() as procs:
            dep = Deployment(root, procs, servers, rate, seed, tmpfs, log=log)
            document["tmpfs"] = dep.mounted
            dep.prepare()
            dep.start()
            dep.wait_caught_up(timeout=180)
            wait_until(lambda: client.request(f"{dep.base_url}/v2.1/servers?limit=1",
                                              headers=HEADERS, timeout=5)[0] == 200,
                       60, "the API to answer", proc=dep.appliance)
            log(f"deployment live after {clock():.1f}s; faults start")
            t0 = time.monotonic()
            reading = Readers(dep.port, readers, seed, clock)
            reading.start()
            faults = FaultRun(dep, reading, clock, log=log)
            end = minutes * 60
            try:
                time.sleep(min(3.0, end / 10))
                for fault in schedule:
                    if clock() + fault.get("hold_s", 0) + 5 > end:
                        break
                    faults.play(fault)
                    time.sleep(min(fault["gap_s"], max(0.0, end - clock())))
                    if clock() >= end:
                        break
            finally:
                reading.close()
            log(f"faults done at {clock():.1f}s; final checks")
            dep.stop_simulators()
            checks: dict = {}
            try:
                dep.wait_caught_up()
                checks["all_live"] = {"passed": True}
            except Exception as exc:
                checks["all_live"] = {"passed": False, "error": repr(exc)[:300]}
            try:
                final = dep.status()
            except Exception as exc:
                final = {"cells": [], "error": repr(exc)[:300]}
            checks["all_live"]["cells"] = {c["cell"]: {"state": c["state"], "seq": c["seq"],
                                                       "dead_letters": c["dead_letters"],
                                                       "resyncs": c["resyncs"]}
                                           for c in final.get("cells", [])}
            verify = run_verify(dep)
            verify["passed"] = verify.get("differing") == 0 and verify.get("exit_code") == 0
            checks["verify"] = verify
            try:
                comparison = compare(dep)
                comparison["passed"] = (comparison["missing_count"] == comparison["extra_count"]
                                        == comparison["differing_count"] == 0)
            except Exception as exc:
                comparison = {"passed": False, "error": repr(exc)[:300]}
            checks["cells_vs_api"] = comparison
            outside = [f for f in reading.failed if not allowed(f, faults.worker_kills)]
            document["reads"] = {"total": reading.total, "by_kind": reading.by_kind,
                                 "failed": len(reading.failed),
                                 "failed_outside_windows": len(outside),
                                 "failures": reading.failed[:50],
                                 "worker_kills_at_s": [round(k, 2) for k in faults.worker_kills]}
            checks["reads"] = {"passed": not outside}
            failed_faults = [r for r in faults.records if r["ok"] is False]
            checks["faults_recovered"] = {"passed": not failed_faults and bool(faults.records),
                                          "failed": len(failed_faults)}
            document["faults"] = faults.records
            document["checks"] = checks
            document["duration_s"] = round(clock(), 1)
            document["passed"] = all(c["passed"] for c in checks.values())
            document["relay"] = {"forwarded": dep.relay.forwarded, "dropped": dep.relay.dropped}
    finally:
        if dep is not None:
            dep.close(keep=keep)
        if keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(document, f, indent=2)
    log(table(document))
    log(f"result written to {out}")
    return document


def table(document: dict) -> str:
    lines = ["", "faults", f"  {'at':>8}  {'kind':<15} {'target':<9} {'recovery':>9}  note"]
    for r in document["faults"]:
        recovery = "-" if r["recovery_s"] is None else f"{r['recovery_s']:.2f}s"
        lines.append(f"  {r['at_s']:7.1f}s  {r['kind']:<15} {r['target']:<9} {recovery:>9}  "
                     f"{r['note']}")
    reads = document["reads"]
    lines += ["", "reads", f"  total {reads.get('total', 0):,}  failed {reads.get('failed', 0)}  "
              f"failed outside killed workers' windows {reads.get('failed_outside_windows', 0)}"]
    for f in reads.get("failures", [])[:10]:
        lines.append(f"    {f['ended']:8.2f}s {f['kind']:<6} {f['error']}")
    lines += ["", "checks"]
    for name, check in document["checks"].items():
        detail = {k: v for k, v in check.items() if k not in ("passed",)
                  and not isinstance(v, (list, dict))}
        lines.append(f"  {'PASS' if check['passed'] else 'FAIL'}  {name}  {detail or ''}")
    lines.append(f"\nsoak {'PASSED' if document['passed'] else 'FAILED'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the fault phase")
    parser.add_argument("--seed", type=int, default=None, help="the schedule's seed (random)")
    parser.add_argument("--servers", type=int, default=2000, help="servers over the two cells")
    parser.add_argument("--rate", type=float, default=20.0, help="changes/s per cell")
    parser.add_argument("--readers", type=int, default=4, help="reader threads")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS),
                        help=f"fault kinds to play, of: {', '.join(FAULT_KINDS)}")
    parser.add_argument("--no-tmpfs", action="store_true",
                        help="do not put the data dir on a tmpfs (no disk_full fault)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the JSON result")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = parser.parse_args(argv)
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        parser.error(f"unknown fault kind(s) {unknown}; choose from {', '.join(FAULT_KINDS)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    document = run(args.minutes, seed, args.out, servers=args.servers, rate=args.rate,
                   readers=args.readers, kinds=kinds, tmpfs=not args.no_tmpfs, keep=args.keep)
    return 0 if document["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
