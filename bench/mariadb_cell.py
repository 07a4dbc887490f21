"""A Nova cell on MariaDB published through the binlog (``appliance cell --source
mysql://...``): first snapshot of a large cell and time to live, change-to-visible lag
at fixed rates of Nova-shaped writes, and the publisher's CPU per change. Printed, not
asserted.

    APPLIANCE_NOVA_VENV=/work/nova-env-try .venv/bin/python -m bench.mariadb_cell \\
        --servers 100000 --rates 200,1000 --duration 20

The parts are real: a private MariaDB (``tests/realnova/mariadb.py``: row binlog with
GTIDs, datadir in /dev/shm), Nova's databases made by nova-manage, seed servers written
by Nova's objects, the publisher as a process with the replica-grants-only user, and
ingest as a process writing the replica the API reads. The large cell is made from the
seed servers by INSERT ... SELECT (instances, instance_extra, instance_info_caches,
instance_system_metadata: what the builder reads), before the publisher starts (its
first attach takes a snapshot).

Lag: a writer commits ``UPDATE instances SET display_name = <marker>, updated_at = ...``
(the statement ``instance.save()`` runs for a rename) at a fixed rate on marker servers
(one marker in flight per server); a poller reads the markers' rows from the replica
file (the committed bytes the API serves) and notes when each first shows. Both times
on one clock in one process; the resolution is one poll. CPU per change: user + system
time of the publisher, its binlog tailer and its control server over the run, divided
by the changes journaled meanwhile.

Not part of ``python -m bench`` (it needs MariaDB and Nova's side environment).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.lag import LagSamples  # noqa: E402

REPLICA_USER, REPLICA_PASSWORD = "replica", "replica-secret"
SEED_SERVERS = 10
COPIED_CHILDREN = (("instance_extra", "instance_uuid"), ("instance_info_caches", "instance_uuid"),
                   ("instance_system_metadata", "instance_uuid"))
POLL_INTERVAL_S = 0.001
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


def _start_profiles(directory: str | None, pid: int, rate: float,
                    duration: float) -> list[subprocess.Popen]:
    """py-spy (``pip install py-spy``) on the publisher and its children for one rate."""
    if not directory:
        return []
    os.makedirs(directory, exist_ok=True)
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    spies = []
    for target in [pid] + _children(pid):
        spies.append(subprocess.Popen(
            [spy, "record", "-p", str(target), "-f", "raw", "-r", "200", "-d",
             str(int(duration)), "-o", os.path.join(directory, f"rate-{int(rate)}.{target}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return spies


def _stop_profiles(spies: list[subprocess.Popen]) -> None:
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mariadb_cell")
    parser.add_argument("--servers", type=int, default=100_000)
    parser.add_argument("--rates", default="200,1000", help="changes/s, comma separated")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per rate")
    parser.add_argument("--markers", type=int, default=2000, help="marker servers")
    parser.add_argument("--profile", metavar="DIR",
                        help="record the publisher's processes with py-spy during each rate "
                             "(collapsed stacks in DIR/rate-<N>.<pid>.txt)")
    args = parser.parse_args(argv)

    from replica.ingest_control import IngestClient
    from tests.realnova.mariadb import running_mariadb
    from tests.realnova.novadb import NovaDeployment

    workdir = tempfile.mkdtemp(prefix="bench-mariadb-cell-")
    procs: list[subprocess.Popen] = []
    closers: list = []
    result: dict = {"servers": args.servers}
    os.makedirs(os.path.join(workdir, "db"))
    with running_mariadb(os.path.join(workdir, "db")) as mariadb:
        try:
            began = time.monotonic()
            nova = NovaDeployment.on_mariadb(mariadb, workdir).create()
            writer = nova.writer().__enter__()
            closers.append(lambda: writer.__exit__(None, None, None))
            writer.create_flavor(name="m1.small", vcpus=1, memory_mb=2048, root_gb=20,
                                 flavorid="2")
            writer.create_compute(host="compute-1", az="zone-1")
            # a live nova-compute reports every 10 s: without it, the host's 100,000
            # servers all change host_status after 60 s (and are all republished)
            writer.start_heartbeats(["compute-1"])
            writer.build_servers(count=SEED_SERVERS, name_prefix="seed", user_id="u1",
                                 project_id="proj-bench", flavor="2", metadata={"k": "v"})
            log(f"Nova on MariaDB with {SEED_SERVERS} servers in "
                f"{time.monotonic() - began:.1f} s")
            grown = grow_cell(mariadb, args.servers)
            count = mariadb.scalar("SELECT count(*) FROM nova_cell1.instances")
            result["servers"] = count
            log(f"cell grown to {count:,} servers by INSERT ... SELECT in {grown:.1f} s")
            mariadb.create_replica_user(REPLICA_USER, REPLICA_PASSWORD,
                                        ["nova_cell1", "nova_api"])
            base = f"mysql://{REPLICA_USER}@{mariadb.host}:{mariadb.port}"
            env = {**os.environ, "PYTHONPATH": ROOT, "APPLIANCE_MYSQL_PASSWORD": REPLICA_PASSWORD}
            feed, ctl = f"ipc://{workdir}/cell1.feed", f"ipc://{workdir}/cell1.ctl"
            started = time.monotonic()
            publisher = subprocess.Popen(
                [sys.executable, "-m", "appliance", "cell", "--source", f"{base}/nova_cell1",
                 "--api-source", f"{base}/nova_api", "--name", "cell1", "--feed", feed,
                 "--control", ctl, "--state-dir", f"{workdir}/state"],
                cwd=ROOT, env=env, stdout=open(f"{workdir}/publisher.log", "wb"),
                stderr=subprocess.STDOUT)
            procs.append(publisher)
            replica = f"{workdir}/replica.db"
            ingest_ctl = f"ipc://{workdir}/ingest.ctl"
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "replica.ingest", "--replica", replica, "--control",
                 ingest_ctl, "--cell", f"cell1={feed},{ctl}"], cwd=ROOT, env=env,
                stdout=open(f"{workdir}/ingest.log", "wb"), stderr=subprocess.STDOUT))
            client = IngestClient(ingest_ctl, timeout=5.0)
            while True:
                try:
                    cell = client.status()["cells"][0]
                    if cell["state"] == "live" and cell.get("servers", 0) >= count:
                        break
                except Exception:
                    pass
                if time.monotonic() - started > 1800:
                    raise RuntimeError("the cell did not go live in 30 minutes")
                if publisher.poll() is not None:
                    raise RuntimeError(f"publisher exited {publisher.returncode}")
                time.sleep(0.2)
            live = time.monotonic() - started
            result["first_snapshot_to_live_s"] = round(live, 1)
            log(f"first snapshot: {count:,} servers live in the replica {live:.1f} s after "
                "the publisher started")

            markers = [u for (u,) in mariadb.execute(
                "SELECT uuid FROM nova_cell1.instances ORDER BY uuid LIMIT %s",
                (args.markers,))]
            journal_path = f"{workdir}/state/cell1.journal"
            for rate in (float(r) for r in args.rates.split(",")):
                cpu0, head0 = _cpu_seconds(publisher.pid), _journal_head(journal_path)
                spies = _start_profiles(args.profile, publisher.pid, rate, args.duration)
                samples = measure_lag(mariadb, replica, markers, rate, args.duration)
                _stop_profiles(spies)
                cpu1 = _cpu_seconds(publisher.pid)
                split = {role: cpu1[role] - cpu0[role] for role in cpu1}
                cpu = sum(split.values())
                changes = _journal_head(journal_path) - head0
                summary = samples.summary()
                summary.update(rate=rate, achieved_rate=round(samples.sent / args.duration, 1),
                               journaled=changes,
                               publisher_cpu_ms_per_change=round(cpu * 1000 / max(1, changes), 3),
                               publisher_cpu_s=round(cpu, 2),
                               cpu_ms_per_change={role: round(v * 1000 / max(1, changes), 3)
                                                  for role, v in split.items()})
                result[f"lag_at_{int(rate)}"] = summary
                log(f"{int(rate)} changes/s (achieved {summary['achieved_rate']}): change to "
                    f"visible p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, "
                    f"max {summary['max_ms']:.1f} ms, lost {samples.lost}; publisher CPU "
                    f"{summary['publisher_cpu_ms_per_change']} ms per change "
                    f"({summary['cpu_ms_per_change']}; {changes} changes journaled)")
        finally:
            for close in closers:
                close()
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
