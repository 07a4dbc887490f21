"""A Nova cell on MariaDB published through the binlog (``appliance cell --source
mysql://...``): first snapshot of a large cell and time to live, a resync of it with API
reads running, change-to-visible lag at fixed rates of Nova-shaped writes, and the
publisher's CPU per change. Printed, not asserted; ``python -m bench --only mariadb``
runs it with the profile's sizes and puts its figures against the budgets.

    APPLIANCE_NOVA_VENV=/work/nova-env-try .venv/bin/python -m bench.mariadb_cell \\
        --servers 100000 --rates 200,1000 --duration 20 [--baseline TREE] [--profile DIR]

The parts are real: a private MariaDB (``tests/realnova/mariadb.py``: row binlog with
GTIDs, datadir in /dev/shm), Nova's databases made by nova-manage, seed servers written
by Nova's objects, the publisher as a process with the replica-grants-only user, and
the appliance (``appliance serve``: ingest and one API worker) writing the replica the
API reads. The large cell is made from the seed servers by INSERT ... SELECT (instances,
instance_extra, instance_info_caches, instance_system_metadata: what the builder reads),
before the publisher starts (its first attach takes a snapshot).

``--baseline TREE``: another source tree (``git archive REV | tar -x -C TREE``) whose
publisher is measured first, on the same cell in the same run, then this tree's: before
and after on the same machine load. The appliance side is this tree's in both.

The writer alone: before any publisher runs, the writer commits at each rate with
nothing waiting for its markers, so that a lag run's achieved rate can be told from the
generator's own limit.

``--builds``: before the publishers, the publisher's batch build alone (a read view and
``control.built_events``, batches of 1 and 100 servers) timed in a process per tree, one
batch of each tree in turn: the comparison least moved by the machine's load.

Snapshot and resync: API reads (``GET /servers/detail?limit=100``, as the noauth admin)
run meanwhile; before a cell has ever been live the appliance answers 503 "loading" by
design (counted apart), any other error counts as a failed read.

Lag: a writer commits ``UPDATE instances SET display_name = <marker>, updated_at = ...``
(the statement ``instance.save()`` runs for a rename) at a fixed rate on marker servers
(one marker in flight per server); a poller reads the markers' rows from the replica
file (the committed bytes the API serves) and notes when each first shows. Both times
on one clock in one process; the resolution is one poll. CPU per change: user + system
time of the publisher, its binlog tailer and its control server over the run, divided
by the changes journaled meanwhile. First snapshot and resync: the CPU seconds each part
spent meanwhile (the publisher's processes, the appliance's ingest and the rest of the
appliance, MariaDB).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.lag import LagSamples  # noqa: E402
from bench.ports import free_port  # noqa: E402

REPLICA_USER, REPLICA_PASSWORD = "replica", "replica-secret"
SEED_SERVERS = 10
COPIED_CHILDREN = (("instance_extra", "instance_uuid"), ("instance_info_caches", "instance_uuid"),
                   ("instance_system_metadata", "instance_uuid"))
POLL_INTERVAL_S = 0.001
READ_INTERVAL_S = 0.05            # API reads during a snapshot: about 20 a second
# The budgets of issue 9 / DESIGN.md for a Nova cell on MariaDB.
P50_BUDGET_MS = 10.0              # change to visible, p50 (at 200 and 1,000 changes/s)
P99_BUDGET_MS = 100.0
FIRST_SNAPSHOT_BUDGET_S = 30.0    # first snapshot of a 100,000-server cell
MARKER_TIMEOUT_S = 15.0


def log(text: str) -> None:
    print(text, flush=True)


def _columns(mariadb, table: str) -> list[str]:
    return [name for (name,) in mariadb.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "'nova_cell1' AND table_name = %s AND column_name <> 'id' ORDER BY ordinal_position",
        (table,))]


def grow_cell(mariadb, servers: int) -> float:
    """Copy the seed servers until the cell has ``servers``; returns the seconds taken."""
    began = time.monotonic()
    copies = max(0, (servers - SEED_SERVERS) // SEED_SERVERS)
    mariadb.create_database("bench_seed")
    mariadb.execute("CREATE TABLE IF NOT EXISTS bench_seed.numbers (n INT PRIMARY KEY)")
    mariadb.execute("INSERT INTO bench_seed.numbers (n) SELECT seq FROM bench_seed.seq_1_to_%s"
                    % int(copies))      # MariaDB's sequence engine
    new_uuid = "CONCAT(LEFT({col}, 24), LPAD(HEX(n.n), 12, '0'))"
    for table, key in (("instances", "uuid"),) + COPIED_CHILDREN:
        cols = _columns(mariadb, table)
        select = ", ".join(new_uuid.format(col=f"t.`{c}`") if c == key else f"t.`{c}`"
                           for c in cols)
        names = ", ".join(f"`{c}`" for c in cols)
        mariadb.execute(f"INSERT INTO nova_cell1.`{table}` ({names}) SELECT {select} "
                        f"FROM nova_cell1.`{table}` t JOIN bench_seed.numbers n "
                        f"WHERE t.`{key}` IN (SELECT uuid FROM nova_cell1.instances "
                        f"WHERE display_name LIKE 'seed-%')")
    mariadb.drop_database("bench_seed")
    return time.monotonic() - began


def _cpu_seconds(pid: int) -> dict[str, float]:
    """User + system seconds of the publisher, its binlog tailer and its control server."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    out = {"publisher": 0.0, "tailer": 0.0, "control": 0.0}
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        role = ("publisher" if p == pid else
                "tailer" if cmdline.startswith(b"appliance cell: binlog tailer") else "control")
        out[role] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _process_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _all_cpu_seconds(publisher: int | None, appliance: int, database: int) -> dict[str, float]:
    """User + system seconds so far of each part a snapshot runs in: the publisher's
    processes (``_cpu_seconds``), the appliance's ingest and the rest of the appliance
    (supervisor, API worker, admin: the reads meanwhile and the status polls), and
    MariaDB."""
    out = dict(_cpu_seconds(publisher)) if publisher else {}
    out["ingest"] = out["appliance_other"] = 0.0
    for pid in [appliance] + _children(appliance):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read()
        except OSError:
            continue
        role = "ingest" if title.startswith(b"appliance: ingest") else "appliance_other"
        out[role] += _process_cpu_seconds(pid)
    out["mariadb"] = _process_cpu_seconds(database)
    return out


def _cpu_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    spent = {role: round(after[role] - before.get(role, 0.0), 2) for role in after}
    spent["total"] = round(sum(spent.values()), 2)
    return spent


def _start_profiles(directory: str | None, pid: int, rate: float | str,
                    duration: float | None, appliance: int | None = None,
                    ) -> list[subprocess.Popen]:
    """py-spy (``pip install py-spy``) on the publisher, its children and the
    appliance's processes (ingest, workers) for one rate."""
    if not directory:
        return []
    os.makedirs(directory, exist_ok=True)
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    spies = []
    others = _children(appliance) if appliance else []
    for target in [pid] + _children(pid) + others:
        name = f"rate-{int(rate)}" if isinstance(rate, (int, float)) else rate
        spies.append(subprocess.Popen(
            [spy, "record", "-p", str(target), "-f", "raw", "-r", "200",
             *(["-d", str(int(duration))] if duration else []),
             "-o", os.path.join(directory, f"{name}.{target}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return spies


def _stop_profiles(spies: list[subprocess.Popen], now: bool = False) -> None:
    for spy in spies:
        if now:
            spy.send_signal(signal.SIGINT)      # py-spy writes what it has and ends
    for spy in spies:
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.terminate()
            spy.wait(10)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _journal_head(path: str) -> int:
    import apsw
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("SELECT head FROM journal_meta").fetchone()[0]
    finally:
        conn.close()


def measure_lag(mariadb, replica: str, markers: list[str], rate: float,
                duration: float) -> LagSamples:
    import pymysql
    from replica.store.connection import open_reader

    samples = LagSamples()
    pending: dict[str, tuple[str, float]] = {}
    lock = threading.Lock()
    writer_done = threading.Event()
    errors: list[BaseException] = []

    def poll():
        conn = open_reader(replica)
        try:
            while True:
                with lock:
                    waiting = list(pending)
                if not waiting:
                    if writer_done.is_set():
                        return
                    time.sleep(POLL_INTERVAL_S)
                    continue
                marks = ", ".join("?" * len(waiting))
                rows = conn.execute(f"SELECT uuid, display_name FROM servers WHERE uuid IN "
                                    f"({marks})", tuple(waiting)).fetchall()
                seen = time.monotonic()
                samples.polls += 1
                with lock:
                    for uuid, name in rows:
                        entry = pending.get(uuid)
                        if entry and name == entry[0]:
                            samples.lags_ms.append((seen - entry[1]) * 1000)
                            del pending[uuid]
                    for uuid, (_m, at) in list(pending.items()):
                        if seen - at > MARKER_TIMEOUT_S:
                            samples.lost += 1
                            del pending[uuid]
                time.sleep(POLL_INTERVAL_S)
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    def write():
        conn = pymysql.connect(unix_socket=mariadb.socket, user="root", database="nova_cell1",
                               autocommit=True)
        rng = random.Random(7)
        try:
            interval, n = 1.0 / rate, 0
            next_at = time.monotonic()
            end = next_at + duration
            with conn.cursor() as cursor:
                while time.monotonic() < end:
                    with lock:
                        free = [u for u in rng.sample(markers, 8) if u not in pending]
                    if free:
                        n += 1
                        marker = f"lagmark-{n}"
                        began = time.monotonic()
                        cursor.execute("UPDATE instances SET display_name = %s, "
                                       "updated_at = UTC_TIMESTAMP() WHERE uuid = %s",
                                       (marker, free[0]))
                        committed = time.monotonic()
                        samples.commit_ms.append((committed - began) * 1000)
                        with lock:
                            pending[free[0]] = (marker, committed)
                        samples.sent += 1
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()
            writer_done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        threads = [threading.Thread(target=poll, daemon=True),
                   threading.Thread(target=write, daemon=True)]
        for t in threads:
            t.start()
        threads[1].join(duration + 30)
        threads[0].join(MARKER_TIMEOUT_S + 30)
    finally:
        sys.setswitchinterval(old)
    if errors:
        raise errors[0]
    return samples


def measure_writer(mariadb, markers: list[str], rate: float, duration: float) -> dict:
    """The writer of changes alone (nothing waits for its markers): the rate it reaches
    and its commit time, so that a lag run's achieved rate is not the generator's limit."""
    import pymysql

    conn = pymysql.connect(unix_socket=mariadb.socket, user="root", database="nova_cell1",
                           autocommit=True)
    commits: list[float] = []
    try:
        interval = 1.0 / rate
        began = next_at = time.monotonic()
        end = began + duration
        with conn.cursor() as cursor:
            number = 0
            while time.monotonic() < end:
                number += 1
                at = time.monotonic()
                cursor.execute("UPDATE instances SET display_name = %s, "
                               "updated_at = UTC_TIMESTAMP() WHERE uuid = %s",
                               (f"writer-{number}", markers[number % len(markers)]))
                commits.append((time.monotonic() - at) * 1000)
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
        seconds = time.monotonic() - began
    finally:
        conn.close()
    commits.sort()
    return {"rate": rate, "achieved_rate": round(len(commits) / seconds, 1),
            "commit_p50_ms": round(commits[len(commits) // 2], 3) if commits else None}


class ApiReads:
    """API reads in a thread (a list of servers, as the noauth admin, one after another)
    while a snapshot runs. Before a cell has ever been live the appliance answers 503
    "loading" by design (no data is not an empty list): counted apart; any other answer
    but 200 (or no answer) is a failed read."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.done = threading.Event()
        self.reads = self.failed = self.loading = 0
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        from bench import client

        url = f"{self.base_url}/v2.1/servers/detail?all_tenants=1&limit=100"
        while not self.done.is_set():
            try:
                status, _headers, body = client.request(
                    url, headers={"X-Auth-Token": "admin:demo"}, timeout=10)
            except OSError as exc:
                status, body = f"{type(exc).__name__}: {exc}", b""
            self.reads += 1
            if status == 503 and b"loading" in body.lower():
                self.loading += 1
            elif status != 200:
                self.failed += 1
                if len(self.failures) < 10:
                    self.failures.append(str(status))
            time.sleep(READ_INTERVAL_S)

    def stop(self) -> dict:
        self.done.set()
        self.thread.join(30)
        return {"reads": self.reads, "failed": self.failed, "loading": self.loading,
                "failures": self.failures}


def _wait(what: str, check, timeout: float, procs: list[subprocess.Popen]):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
            if found:
                return found
        except Exception:
            pass
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: {proc.args[:4]} exited {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    procs.clear()


def run_code(label: str, tree: str, mariadb, workdir: str, count: int, markers: list[str],
             rates: list[float], duration: float, profile_dir: str | None, log) -> dict:
    """One publisher (the code of ``tree``) and one appliance from an empty replica:
    the first snapshot to live with API reads meanwhile, then the lag at each rate."""
    from bench import client

    base = f"mysql://{REPLICA_USER}@{mariadb.host}:{mariadb.port}"
    here = os.path.join(workdir, label)
    os.makedirs(here)
    env = {**os.environ, "PYTHONPATH": tree, "APPLIANCE_MYSQL_PASSWORD": REPLICA_PASSWORD}
    feed, ctl = f"ipc://{here}/cell1.feed", f"ipc://{here}/cell1.ctl"
    port, admin_port = free_port(), free_port()
    data_dir = os.path.join(here, "data")
    with open(os.path.join(here, "appliance.toml"), "w") as f:
        f.write(f'listen_host = "127.0.0.1"\nlisten_port = {port}\nadmin_host = "127.0.0.1"\n'
                f'admin_port = {admin_port}\nworkers = 1\ndata_dir = "{data_dir}"\n'
                f'log_level = "warning"\n\n[[cell]]\nname = "cell1"\nfeed = "{feed}"\n'
                f'control = "{ctl}"\n')
    procs: list[subprocess.Popen] = []
    out: dict = {"tree": tree}
    try:
        procs.append(subprocess.Popen(   # the appliance side is this tree's in both runs
            [sys.executable, "-m", "appliance", "serve", "--config",
             os.path.join(here, "appliance.toml")], cwd=ROOT,
            env={k: v for k, v in env.items() if not k.startswith("APPLIANCE_")}
            | {"PYTHONPATH": ROOT}, stdout=open(f"{here}/appliance.log", "wb"),
            stderr=subprocess.STDOUT))
        api = f"http://127.0.0.1:{port}"
        admin = f"http://127.0.0.1:{admin_port}"
        _wait("the appliance answers", lambda: client.request(f"{api}/v2.1/", timeout=2)[0]
              == 200, 60, procs)
        reads = ApiReads(api)
        reads.start()
        cpu_before = _all_cpu_seconds(None, procs[0].pid, mariadb.process.pid)
        started = time.monotonic()
        publisher = subprocess.Popen(
            [sys.executable, "-m", "appliance", "cell", "--source", f"{base}/nova_cell1",
             "--api-source", f"{base}/nova_api", "--name", "cell1", "--feed", feed,
             "--control", ctl, "--state-dir", f"{here}/state"],
            cwd=tree, env=env, stdout=open(f"{here}/publisher.log", "wb"),
            stderr=subprocess.STDOUT)
        procs.append(publisher)
        if profile_dir:                 # once its tailer and control server are forked
            _wait("the publisher's children", lambda: len(_children(publisher.pid)) >= 2, 60,
                  procs)
        spies = _start_profiles(profile_dir and os.path.join(profile_dir, label),
                                publisher.pid, "snapshot", None, procs[0].pid)

        def live():
            cells = client.get_json(f"{admin}/status", timeout=5).get("cells", [])
            return any(c.get("state") == "live" and c.get("servers", 0) >= count
                       for c in cells)
        try:
            _wait("the cell live in the replica", live, 1800, procs)
        finally:
            read_result = reads.stop()
            _stop_profiles(spies, now=True)
        out["first_snapshot_to_live_s"] = round(time.monotonic() - started, 1)
        out["reads_during_snapshot"] = read_result
        cpu_live = _all_cpu_seconds(publisher.pid, procs[0].pid, mariadb.process.pid)
        out["first_snapshot_cpu_s"] = _cpu_between(cpu_before, cpu_live)
        log(f"  [{label}] first snapshot: {count:,} servers live in the replica "
            f"{out['first_snapshot_to_live_s']:.1f} s after the publisher started; "
            f"API reads meanwhile {read_result['reads']} ({read_result['loading']} 'loading'), "
            f"failed {read_result['failed']}; CPU s {out['first_snapshot_cpu_s']}")

        reads = ApiReads(api)          # a resync of the same cell: the old rows served
        reads.start()
        started = time.monotonic()
        job = client.post_json(f"{admin}/resync?cell=cell1")["job"]

        def finished():
            current = client.get_json(f"{admin}/jobs/{job['id']}", timeout=10)["job"]
            return current if current.get("state") != "running" else None
        try:
            final = _wait("the resync job", finished, 1800, procs)
        finally:
            read_result = reads.stop()
        out["resync_s"] = round(time.monotonic() - started, 1)
        out["resync_cpu_s"] = _cpu_between(
            cpu_live, _all_cpu_seconds(publisher.pid, procs[0].pid, mariadb.process.pid))
        out["resync_state"] = final.get("state")
        out["reads_during_resync"] = read_result
        log(f"  [{label}] resync: {final.get('state')} in {out['resync_s']:.1f} s; API reads "
            f"meanwhile {read_result['reads']}, failed {read_result['failed']}; CPU s "
            f"{out['resync_cpu_s']}")

        replica = os.path.join(data_dir, "replica.db")
        journal_path = f"{here}/state/cell1.journal"
        for rate in rates:
            cpu0, head0 = _cpu_seconds(publisher.pid), _journal_head(journal_path)
            spies = _start_profiles(profile_dir and os.path.join(profile_dir, label),
                                    publisher.pid, rate, duration, procs[0].pid)
            samples = measure_lag(mariadb, replica, markers, rate, duration)
            _stop_profiles(spies)
            cpu1 = _cpu_seconds(publisher.pid)
            split = {role: cpu1[role] - cpu0[role] for role in cpu1}
            cpu = sum(split.values())
            changes = _journal_head(journal_path) - head0
            summary = samples.summary()
            summary.update(rate=rate, achieved_rate=round(samples.sent / duration, 1),
                           journaled=changes,
                           publisher_cpu_ms_per_change=round(cpu * 1000 / max(1, changes), 3),
                           publisher_cpu_s=round(cpu, 2),
                           cpu_ms_per_change={role: round(v * 1000 / max(1, changes), 3)
                                              for role, v in split.items()})
            out[f"lag_at_{int(rate)}"] = summary
            log(f"  [{label}] {int(rate)} changes/s (achieved {summary['achieved_rate']}): "
                f"change to visible p50 {summary['p50_ms']:.1f} ms, p99 "
                f"{summary['p99_ms']:.1f} ms, max {summary['max_ms']:.1f} ms, lost "
                f"{samples.lost}; publisher CPU {summary['publisher_cpu_ms_per_change']} ms "
                f"per change ({summary['cpu_ms_per_change']}; {changes} changes journaled)")
    finally:
        _stop(procs)
    return out


# The publisher's batch build alone, in a process of the tree measured (its own code),
# told on stdin how many batches of how many keys to build: one line of JSON per round.
BUILD_TIMER = r"""
import json, random, sys, time
from replica.cell import control, mysql_source
source = mysql_source.make_source(sys.argv[1], sys.argv[2], "cell1", sys.argv[3])
entities = mysql_source.entity_reader(source)
uuids = open(sys.argv[4]).read().split()
rng = random.Random(11)
for line in sys.stdin:
    batches, keys = (int(x) for x in line.split())
    walls = []
    cpu = time.process_time()
    for _ in range(batches):
        rows = [(n, "server", key) for n, key in enumerate(rng.sample(uuids, keys), 1)]
        began = time.perf_counter()
        with entities.read_view():
            events = control.built_events(entities, rows)
            walls.append((time.perf_counter() - began) * 1000)     # to the events built
        assert len(events) == keys and all(e.entity for e in events)
    print(json.dumps({"walls_ms": walls, "cpu_s": time.process_time() - cpu}), flush=True)
"""


def measure_builds(trees: list[tuple[str, str]], mariadb, workdir: str, uuids: list[str],
                   sizes=(1, 100), batches: int = 200, rounds: int = 5, log=log) -> dict:
    """The publisher's batch build (one read view, ``control.built_events``: what it does
    per batch) timed alone for each tree, one batch of each tree in turn on the same
    database (the machine's load drifts, a few milliseconds apart less so): per batch
    size, p50/p99 wall time and CPU time per batch (``batches * rounds`` batches)."""
    base = f"mysql://{REPLICA_USER}@{mariadb.host}:{mariadb.port}"
    keys_file = os.path.join(workdir, "build-keys.txt")
    with open(keys_file, "w") as f:
        f.write("\n".join(uuids))
    timers = {}
    out: dict = {}
    try:
        for label, tree in trees:
            timers[label] = subprocess.Popen(
                [sys.executable, "-c", BUILD_TIMER, f"{base}/nova_cell1", f"{base}/nova_api",
                 os.path.join(workdir, f"build-{label}"), keys_file],
                cwd=tree, env={**os.environ, "PYTHONPATH": tree,
                               "APPLIANCE_MYSQL_PASSWORD": REPLICA_PASSWORD},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for size in sizes:
            walls = {label: [] for label in timers}
            cpu = {label: 0.0 for label in timers}
            for _batch in range(batches * rounds):     # one batch of each tree in turn
                for label, timer in timers.items():
                    timer.stdin.write(f"1 {size}\n")
                    timer.stdin.flush()
                    reply = timer.stdout.readline()
                    if not reply:
                        raise RuntimeError(f"the build timer of {label} exited "
                                           f"({timer.wait(10)})")
                    got = json.loads(reply)
                    walls[label] += got["walls_ms"]
                    cpu[label] += got["cpu_s"]
            for label in timers:
                ordered = sorted(walls[label])
                figures = {"p50_ms": round(ordered[len(ordered) // 2], 3),
                           "p99_ms": round(ordered[int(len(ordered) * 0.99)], 3),
                           "cpu_ms": round(cpu[label] * 1000 / len(ordered), 3)}
                out.setdefault(label, {})[f"batch_of_{size}"] = figures
                log(f"  [{label}] build of a batch of {size} server(s): wall p50 "
                    f"{figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms, CPU "
                    f"{figures['cpu_ms']:.2f} ms ({len(ordered)} batches)")
    finally:
        for timer in timers.values():
            timer.stdin.close()
            try:
                timer.wait(30)
            except subprocess.TimeoutExpired:
                timer.kill()
                timer.wait(10)
    return out


def run(servers: int, rates: list[float], duration: float, markers: int = 2000,
        trees: list[tuple[str, str]] | None = None, profile_dir: str | None = None,
        log=log, builds: bool = False, only_builds: bool = False) -> dict:
    """The whole measurement (see the module docstring); ``trees``: (label, source tree)
    of each publisher code measured in turn on the same cell (default: this tree)."""
    from tests.realnova.mariadb import running_mariadb
    from tests.realnova.novadb import NovaDeployment

    trees = trees or [("this", ROOT)]
    workdir = tempfile.mkdtemp(prefix="bench-mariadb-cell-")
    closers: list = []
    result: dict = {"servers": servers, "rates": rates, "duration_s": duration}
    os.makedirs(os.path.join(workdir, "db"))
    try:
        with running_mariadb(os.path.join(workdir, "db")) as mariadb:
            try:
                began = time.monotonic()
                nova = NovaDeployment.on_mariadb(mariadb, workdir).create()
                writer = nova.writer().__enter__()
                closers.append(lambda: writer.__exit__(None, None, None))
                writer.create_flavor(name="m1.small", vcpus=1, memory_mb=2048, root_gb=20,
                                     flavorid="2")
                writer.create_compute(host="compute-1", az="zone-1")
                # a live nova-compute reports every 10 s: without it, the host's servers
                # all change host_status after 60 s (and are all republished)
                writer.start_heartbeats(["compute-1"])
                writer.build_servers(count=SEED_SERVERS, name_prefix="seed", user_id="u1",
                                     project_id="proj-bench", flavor="2", metadata={"k": "v"})
                log(f"Nova on MariaDB with {SEED_SERVERS} servers in "
                    f"{time.monotonic() - began:.1f} s")
                grown = grow_cell(mariadb, servers)
                count = mariadb.scalar("SELECT count(*) FROM nova_cell1.instances")
                result["servers"] = count
                log(f"cell grown to {count:,} servers by INSERT ... SELECT in {grown:.1f} s")
                mariadb.create_replica_user(REPLICA_USER, REPLICA_PASSWORD,
                                            ["nova_cell1", "nova_api"])
                uuids = [u for (u,) in mariadb.execute(
                    "SELECT uuid FROM nova_cell1.instances ORDER BY uuid LIMIT %s", (markers,))]
                result["writer_alone"] = [measure_writer(mariadb, uuids, rate, min(duration, 5))
                                          for rate in rates]
                for alone in result["writer_alone"]:
                    log(f"writer alone: {int(alone['rate'])} changes/s asked, "
                        f"{alone['achieved_rate']} reached, commit p50 "
                        f"{alone['commit_p50_ms']} ms")
                if builds or only_builds:
                    result["builds"] = measure_builds(trees, mariadb, workdir, uuids, log=log)
                for label, tree in ([] if only_builds else trees):
                    result[label] = run_code(label, tree, mariadb, workdir, count, uuids,
                                             rates, duration, profile_dir, log)
            finally:
                for close in closers:
                    close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mariadb_cell")
    parser.add_argument("--servers", type=int, default=100_000)
    parser.add_argument("--rates", default="200,1000", help="changes/s, comma separated")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per rate")
    parser.add_argument("--markers", type=int, default=2000, help="marker servers")
    parser.add_argument("--baseline", metavar="TREE",
                        help="another source tree (e.g. an older revision, exported with "
                             "git archive): its publisher is measured first on the same cell")
    parser.add_argument("--baseline-last", action="store_true",
                        help="measure the baseline after this tree (the machine's load drifts: "
                             "run both orders)")
    parser.add_argument("--profile", metavar="DIR",
                        help="record the publisher's processes with py-spy during each rate "
                             "(collapsed stacks in DIR/<tree>/rate-<N>.<pid>.txt)")
    parser.add_argument("--builds", action="store_true",
                        help="first time the publisher's batch build alone (batches of 1 and "
                             "100 servers), the trees taken in turn")
    parser.add_argument("--only-builds", action="store_true",
                        help="that, and no publisher runs")
    args = parser.parse_args(argv)
    trees = ([("baseline", os.path.abspath(args.baseline))] if args.baseline else []) + \
        [("this", ROOT)]
    if args.baseline_last:
        trees.reverse()
    result = run(args.servers, [float(r) for r in args.rates.split(",")], args.duration,
                 args.markers, trees, args.profile, builds=args.builds,
                 only_builds=args.only_builds)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
