"""Replication figures on a running stack: resync with reads running, end-to-end lag
under churn with reads running, and the footprint (replica size, worker memory)."""

from __future__ import annotations

import contextlib
import json
import time

from bench import client, lag
from bench.endpoints import ENDPOINTS, SHOW_PREFIX
from bench.procs import wait_until
from bench.report import Budget, Figure, Scenario
from bench.stack import CELL, Stack, appliance_argv, cell_uuids
from bench.wrk import BackgroundWrk

RESYNC_100K_BUDGET_S = Budget("<=", 10.0)
RESYNC_ERRORS_BUDGET = Budget("<=", 0)
LAG_P50_BUDGET_MS = Budget("<=", 5.0)
LAG_P99_BUDGET_MS = Budget("<=", 50.0)
LAG_BUDGET_RATE = 2000              # the budget is stated at this rate
RSS_BUDGET_MIB = Budget("<=", 60)
RESYNC_TIMEOUT_S = 600.0
MARKER_SERVERS = 64
LAG_WARMUP_S = 1.0
CALIBRATION_OPS = 300
CALIBRATION_RATE = 1000
CATCH_UP_TIMEOUT_S = 600.0


def _background_reads(stack: Stack, profile, duration_s: float) -> list[BackgroundWrk]:
    """A paced show load over random ids and a paced detail?limit=100 load."""
    show = BackgroundWrk(stack.base_url, duration_s, ids_prefix=SHOW_PREFIX,
                         ids_file=stack.ids_file(), connections=profile.background_connections,
                         delay_ms=profile.background_delay_ms)
    detail = BackgroundWrk(stack.base_url, duration_s, path=ENDPOINTS["detail100"].path,
                           connections=max(1, profile.background_connections // 2),
                           delay_ms=profile.background_delay_ms * 5)
    return [show, detail]


def _stop_and_collect(loads: list[BackgroundWrk]) -> list:
    for load in loads:
        load.interrupt()
    return [load.collect(30) for load in loads]


def _read_summary(results) -> dict:
    status = sum(r.errors.get("status", 0) for r in results)
    total = sum(r.error_count for r in results)
    return {"requests": sum(r.requests for r in results),
            "errors": total, "status_errors": status, "socket_errors": total - status,
            "error_detail": [r.errors for r in results],
            "requests_per_s": sum(r.requests_per_s for r in results),
            "p99_ms": max(r.p99_ms for r in results)}


# ---------------------------------------------------------------------------
# Resync
# ---------------------------------------------------------------------------

def measure_resync(sc: Scenario, stack: Stack, profile, log=print) -> None:
    if stack.appliance is None:
        stack.start_appliance(max(profile.read_workers))
    before = stack.cell_status() or {}
    loads = _background_reads(stack, profile, RESYNC_TIMEOUT_S)
    with contextlib.ExitStack() as running:
        for load in loads:
            running.enter_context(load)
        time.sleep(0.5)   # the reads are running before the resync starts
        started = time.monotonic()
        job = client.post_json(f"{stack.admin_url}/resync?cell={CELL}")["job"]
        job_id = job["id"]

        def finished():
            current = client.get_json(f"{stack.admin_url}/jobs/{job_id}", timeout=10)["job"]
            return current if current.get("state") != "running" else None

        final = wait_until(finished, RESYNC_TIMEOUT_S, f"resync job {job_id}", interval=0.02,
                           proc=stack.appliance)
        elapsed = time.monotonic() - started
        time.sleep(0.5)   # and still running after it
        results = _stop_and_collect(loads)
    if final.get("state") != "done":
        raise RuntimeError(f"resync job ended {final.get('state')}: {final.get('error')}")
    after = stack.wait_live()
    reads = _read_summary(results)
    size = stack.servers
    log(f"    resync of {size:,} servers: {elapsed:.2f} s, reads meanwhile {reads['requests']:,} "
        f"with {reads['errors']} errors")
    sc.runs.append({"kind": "resync", "servers": size, "seconds": elapsed, "job": final,
                    "reads": reads, "before": before, "after": after,
                    "wrk": [r.as_dict() for r in results]})
    sc.add(Figure(f"resync {size:,} servers", elapsed, "s",
                  budget=RESYNC_100K_BUDGET_S if size >= 100_000 else None,
                  details={"servers_per_s": size / elapsed if elapsed else None,
                           "job_seconds": _job_seconds(final)}))
    sc.add(Figure(f"resync {size:,} servers: failed reads meanwhile", reads["errors"], "errors",
                  budget=RESYNC_ERRORS_BUDGET,
                  details={"reads": reads["requests"], "reads_per_s": reads["requests_per_s"]}))


def _job_seconds(job: dict) -> float | None:
    try:
        return float(job["finished_at"]) - float(job["started_at"])
    except (KeyError, TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------
# Lag
# ---------------------------------------------------------------------------

def _outbox_head(cell_db: str) -> int:
    from replica.cell.connection import open_cell_reader
    from replica.cell.outbox import outbox_head

    conn = open_cell_reader(cell_db)
    try:
        return outbox_head(conn)
    finally:
        conn.close()


def _simulate(stack: Stack, name: str, rate: float, *, duration: float | None = None,
              ops: int | None = None, seed: int = 1):
    args = [*appliance_argv(), "cell", "simulate", "--db", stack.cell_db, "--rate", f"{rate:g}",
            "--servers", str(stack.servers), "--projects", str(stack.projects), "--seed", str(seed)]
    args += ["--duration", f"{duration:g}"] if duration is not None else ["--ops", str(ops)]
    return stack.procs.start(name, args, log_path=f"{stack.dir}/{name}.log")


def events_per_operation(stack: Stack) -> float:
    """The simulator's rate is in operations (one transaction each); an operation writes
    one or more feed events (a build touches many rows of one server, a host going down
    every server on it). Measured on this cell, so a target event rate can be asked for."""
    before = _outbox_head(stack.cell_db)
    proc = _simulate(stack, "simulator-calibration", CALIBRATION_RATE, ops=CALIBRATION_OPS, seed=99)
    try:
        proc.wait(timeout=60)
    finally:
        stack.procs.stop(proc)
    return max(1.0, (_outbox_head(stack.cell_db) - before) / CALIBRATION_OPS)


def _wait_caught_up(stack: Stack) -> float:
    """Until the replica has applied everything the cell committed (after churn stops), so
    the next rate starts without a backlog. Returns how long it took."""
    began = time.monotonic()
    head = _outbox_head(stack.cell_db)
    wait_until(lambda: (stack.cell_status() or {}).get("seq", -1) >= head, CATCH_UP_TIMEOUT_S,
               f"the replica to apply the cell's events up to {head}", interval=0.1,
               proc=stack.appliance)
    return time.monotonic() - began


def measure_lag(sc: Scenario, stack: Stack, profile, log=print) -> None:
    if stack.appliance is None:
        stack.start_appliance(max(profile.read_workers))
    per_op = events_per_operation(stack)
    _wait_caught_up(stack)
    log(f"    simulator: {per_op:.2f} events per operation on this cell")
    for rate in profile.lag_rates:
        markers = cell_uuids(stack.cell_db, MARKER_SERVERS)
        duration = profile.lag_duration_s
        simulator = _simulate(stack, f"simulator-{rate}", rate / per_op,
                              duration=duration + LAG_WARMUP_S + 5, seed=rate)
        loads = _background_reads(stack, profile, duration + 30)
        try:
            with contextlib.ExitStack() as running:
                time.sleep(LAG_WARMUP_S)   # churn reaches its pace first
                for load in loads:
                    running.enter_context(load)
                head_before = _outbox_head(stack.cell_db)
                began = time.monotonic()
                samples = lag.measure(stack.cell_db, stack.replica_db, markers, duration,
                                      profile.lag_markers_per_s)
                spent = time.monotonic() - began
                head_after = _outbox_head(stack.cell_db)
                results = _stop_and_collect(loads)
        finally:
            stack.procs.stop(simulator)
        api_ok = _api_shows_marker(stack, markers)
        catch_up_s = _wait_caught_up(stack)
        summary = samples.summary()
        reads = _read_summary(results)
        achieved = (head_after - head_before) / spent if spent else None
        log(f"    lag at {rate:,} events/s (achieved {achieved or 0:,.0f}): p50 "
            f"{summary['p50_ms'] or 0:.2f} ms, p99 {summary['p99_ms'] or 0:.2f} ms over "
            f"{summary['samples']} samples ({summary['lost']} lost), reads "
            f"{reads['requests_per_s']:,.0f}/s, {reads['socket_errors']} failed "
            f"({reads['status_errors']} answers >= 400: servers the churn deleted)")
        sc.runs.append({"kind": "lag", "rate": rate, "events_per_operation": per_op,
                        "achieved_events_per_s": achieved, "samples": summary, "reads": reads,
                        "api_shows_last_marker": api_ok, "catch_up_after_s": catch_up_s,
                        "lags_ms": [round(x, 3) for x in samples.lags_ms]})
        details = {**summary, "achieved_events_per_s": achieved, "reads_per_s": reads["requests_per_s"],
                   "read_socket_errors": reads["socket_errors"],
                   "read_status_errors": reads["status_errors"], "api_shows_last_marker": api_ok}
        at_budget = rate == LAG_BUDGET_RATE
        sc.add(Figure(f"lag p50 at {rate:,} events/s", summary["p50_ms"], "ms",
                      budget=LAG_P50_BUDGET_MS if at_budget else None, details=details))
        sc.add(Figure(f"lag p99 at {rate:,} events/s", summary["p99_ms"], "ms",
                      budget=LAG_P99_BUDGET_MS if at_budget else None))
        sc.add(Figure(f"lag: events/s achieved (asked {rate:,})", achieved, "events/s"))
        sc.add(Figure(f"lag: markers lost at {rate:,} events/s", summary["lost"], "markers",
                      details={"sent": summary["sent"]}))


def _api_shows_marker(stack: Stack, markers: list[str]) -> bool | None:
    """The last marker written to a server is what the API returns for it."""
    from replica.cell.connection import open_cell_reader

    conn = open_cell_reader(stack.cell_db)
    try:
        row = conn.execute("SELECT uuid, display_name FROM instances WHERE display_name LIKE ? "
                           "AND uuid IN (SELECT value FROM json_each(?)) ORDER BY updated_at DESC "
                           "LIMIT 1", (lag.MARKER_PREFIX + "%", json.dumps(markers))).fetchone()
    finally:
        conn.close()
    if row is None:
        return None

    def shows():
        document = client.get_json(f"{stack.base_url}{SHOW_PREFIX}{row[0]}", timeout=5)
        return document["server"]["name"] == row[1]

    try:
        return bool(wait_until(shows, 10, "the API to show the last marker"))
    except TimeoutError:
        return False


# ---------------------------------------------------------------------------
# Footprint
# ---------------------------------------------------------------------------

def _logical_bytes(path: str) -> tuple[int, int]:
    """Bytes the replica's pages hold (WAL included, free pages excluded) and its rows."""
    from replica.store.connection import open_reader

    conn = open_reader(path)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchall()[0][0]
        pages = conn.execute("PRAGMA page_count").fetchall()[0][0]
        free = conn.execute("PRAGMA freelist_count").fetchall()[0][0]
        rows = conn.execute("SELECT count(*) FROM servers").fetchall()[0][0]
    finally:
        conn.close()
    return (pages - free) * page_size, rows


def _memory(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                    out[name] = int(line.split()[1])
    except OSError:
        pass
    return out


def measure_footprint(sc: Scenario, stack: Stack, log=print) -> None:
    logical, rows = _logical_bytes(stack.replica_db)
    on_disk = stack.replica_bytes()
    size = stack.servers
    sc.add(Figure(f"replica on disk per server @ {size:,}", on_disk / rows if rows else None, "bytes",
                  details={"rows": rows, "file_bytes_with_wal": on_disk}))
    sc.add(Figure(f"replica pages in use per server @ {size:,}", logical / rows if rows else None,
                  "bytes", details={"rows": rows, "logical_bytes": logical}))
    pids = stack.worker_pids()
    memory = {pid: _memory(pid) for pid in pids}
    rss = [m.get("VmRSS") for m in memory.values() if m.get("VmRSS")]
    anon = [m.get("RssAnon") for m in memory.values() if m.get("RssAnon")]
    if rss:
        sc.add(Figure(f"worker RSS @ {size:,} servers (max)", max(rss) / 1024, "MiB",
                      budget=RSS_BUDGET_MIB if size >= 100_000 else None,
                      details={"workers": len(rss),
                               "per_worker_kib": {str(p): m for p, m in memory.items()}}))
    if anon:
        # Replica pages a worker maps would count in its RSS (RssFile) though they are the
        # shared page cache; RssAnon is the worker's own memory.
        sc.add(Figure(f"worker anonymous RSS @ {size:,} servers (max)", max(anon) / 1024, "MiB"))
    if rss:
        log(f"    footprint @ {size:,}: {logical / max(rows, 1):,.0f} bytes/server, worker RSS "
            + ", ".join(f"{r / 1024:.1f} MiB" for r in rss))
    else:
        log(f"    footprint @ {size:,}: no worker pids found")
