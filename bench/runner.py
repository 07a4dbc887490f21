"""One benchmark run: builds a stack per replica size, runs every selected scenario on
the stacks it needs, prints the tables and writes the JSON document."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import traceback

from bench import (edge, ingest_rate, machine, mariadb_cell, novaapi, parts, reads, replication,
                   report, routes)
from bench.procs import Processes
from bench.profiles import Profile, all_workers
from bench.report import Scenario
from bench.stack import Stack, cell_uuids, populate_cell, write_ids

SCENARIOS = ("read", "scaling", "routes", "ingest", "lag", "resync", "footprint", "edge",
             "mariadb", "novaapi")
INGEST_ONLY_SERVERS = 10_000     # a cell for the ingest entities when no stack is built


def _log(text: str) -> None:
    print(text, flush=True)


class Timer:
    def __init__(self, scenario: Scenario):
        self.scenario = scenario

    def __enter__(self):
        self.began = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.scenario.seconds += time.monotonic() - self.began


def _attempt(sc: Scenario, what: str, fn, log) -> bool:
    """Run one step of a scenario; a failure marks the scenario failed and the run goes on."""
    if sc.status != report.STATUS_OK:
        return False
    try:
        with Timer(sc):
            fn()
        return True
    except Exception as exc:  # one scenario's failure must not lose the others' figures
        sc.fail(f"{what}: {type(exc).__name__}: {exc}")
        log(f"  ! {sc.name}: {what} failed: {exc}")
        traceback.print_exc(file=sys.stderr)
        return False


def _wanted_at(size: int, profile: Profile, scenarios: dict[str, Scenario]) -> list[str]:
    wanted = []
    if size == profile.read_servers:
        wanted += [n for n in ("read", "lag", "ingest", "edge") if n in scenarios]
    if size in profile.scaling_sizes and "scaling" in scenarios:
        wanted.append("scaling")
    if (size == profile.read_servers or size in profile.scaling_sizes) and "routes" in scenarios:
        wanted.append("routes")
    if size in profile.resync_sizes and "resync" in scenarios:
        wanted.append("resync")
    if wanted and "footprint" in scenarios:
        wanted.append("footprint")
    return [n for n in wanted if scenarios[n].status == report.STATUS_OK]


def _scatter_cells(root: str, profile: Profile, log) -> tuple[list[str], str]:
    """The same number of servers spread over several cells, for the scatter-gather baseline."""
    directory = os.path.join(root, "scatter")
    os.makedirs(directory, exist_ok=True)
    per_cell = max(1, profile.read_servers // profile.scatter_cells)
    paths, ids = [], []
    log(f"  populating {profile.scatter_cells} cells of {per_cell:,} servers (scatter-gather baseline)")
    for number in range(profile.scatter_cells):
        path = os.path.join(directory, f"cell{number + 1}.db")
        populate_cell(path, per_cell, profile.projects, seed=100 + number, name=f"cell{number + 1}", log=log)
        paths.append(path)
        ids += cell_uuids(path, 5000)
    return paths, write_ids(os.path.join(directory, "ids.txt"), ids)


def _run_stack(size: int, wanted: list[str], scenarios: dict[str, Scenario], profile: Profile,
               root: str, procs: Processes, scaling_points: dict, log, keep: bool,
               feed_key: bool = False, route_points: dict | None = None,
               pair_points: dict | None = None) -> None:
    """``pair_points``: at the largest scaling size, a stack of the smallest size runs
    beside this one and each scaling request and route goes to one then the other, back
    to back (see ``_start_pair``); its runs go into ``pair_points["scaling"|"routes"]``."""
    log(f"\n== replica of {size:,} servers: {', '.join(wanted)}"
        + (" (sealed feed and control)" if feed_key else ""))
    stack = Stack(root, size, procs, projects=profile.projects, log=log, feed_key=feed_key)
    workers = all_workers()
    pair = None
    try:
        started = time.monotonic()
        try:
            stack.populate()
            stack.start_publisher()
            stack.start_appliance(max(profile.read_workers) if "read" in wanted else workers)
        except Exception as exc:
            for name in wanted:
                scenarios[name].fail(f"stack of {size:,} servers did not come up: "
                                     f"{type(exc).__name__}: {exc}")
            log(f"  ! stack of {size:,} servers did not come up: {exc}")
            traceback.print_exc(file=sys.stderr)
            return
        setup_s = time.monotonic() - started
        log(f"  stack up in {setup_s:.1f} s ({stack.timings})")
        for name in wanted:
            scenarios[name].runs.append({"kind": "stack", "servers": size, "setup_s": setup_s,
                                         **stack.timings})
        read_runs: dict = {}
        if "read" in wanted:
            sc = scenarios["read"]

            def read():
                cells, ids = _scatter_cells(root, profile, log)
                read_runs.update(reads.run_matrix(sc, stack, procs, profile, cells, ids, log))
            _attempt(sc, "read matrix", read, log)
        if "scaling" in wanted:
            sc = scenarios["scaling"]
            if pair_points is not None:
                pair = _start_pair(root, "scaling", profile, procs, log, feed_key, workers)
            pair_out = pair_points.setdefault("scaling", {}) if pair is not None else None
            _attempt(sc, f"scaling at {size:,}", lambda: scaling_points.__setitem__(
                size, reads.run_scaling_point(sc, stack, profile, workers, log, read_runs,
                                              pair, pair_out)), log)
            _stop_stack(pair, procs, keep)    # not beside what follows
            pair = None
        if "resync" in wanted:
            sc = scenarios["resync"]
            _attempt(sc, f"resync at {size:,}", lambda: replication.measure_resync(sc, stack, profile, log), log)
        if "footprint" in wanted:
            sc = scenarios["footprint"]
            _attempt(sc, f"footprint at {size:,}", lambda: replication.measure_footprint(sc, stack, log), log)
        if "ingest" in wanted:
            sc = scenarios["ingest"]
            _attempt(sc, "ingest rate", lambda: _ingest(sc, stack.cell_db, root, profile, log), log)
        if "lag" in wanted:
            sc = scenarios["lag"]
            _attempt(sc, "lag", lambda: replication.measure_lag(sc, stack, profile, log), log)
        if "edge" in wanted:
            sc = scenarios["edge"]
            _attempt(sc, "edge endpoint", lambda: edge.run(sc, stack, procs, profile, log), log)
        if "routes" in wanted:     # last: it adds the flavor source to the stack
            sc = scenarios["routes"]

            def beyond_servers():
                nonlocal pair
                measured = {}
                if size == profile.read_servers:
                    measured = routes.run_matrix(sc, stack, procs, profile, log)
                if size in profile.scaling_sizes and route_points is not None:
                    if pair_points is not None:
                        pair = _start_pair(root, "routes", profile, procs, log, feed_key,
                                           workers)
                    route_points[size] = routes.run_scaling_point(
                        sc, stack, profile, log, measured, pair,
                        pair_points.setdefault("routes", {}) if pair is not None else None)
            _attempt(sc, f"routes at {size:,}", beyond_servers, log)
    finally:
        _stop_stack(pair, procs, keep)
        _stop_stack(stack, procs, keep)


def _stop_stack(stack: Stack | None, procs: Processes, keep: bool) -> None:
    """Every process of ``stack`` stopped, its files removed (unless ``keep``)."""
    if stack is None:
        return
    stack.stop_appliance()
    stack.stop_flavor_source()
    if stack.publisher is not None:
        procs.stop(stack.publisher)
    if not keep:   # a 1M-server stack is gigabytes: free it before the next one
        shutil.rmtree(stack.dir, ignore_errors=True)


def _start_pair(root: str, purpose: str, profile: Profile, procs: Processes, log,
                feed_key: bool, workers: int) -> Stack | None:
    """A stack of the smallest scaling size, up beside the largest one, so that the
    largest size is held against reads made seconds apart, not against the run's first
    measurement: the larger stacks take tens of minutes to build, and on a shared machine
    the speed drifts over such spans. None (said in the log) if it did not come up: the
    largest is then held against the first measurement."""
    smallest = min(profile.scaling_sizes)
    pair = Stack(os.path.join(root, f"pair-{purpose}"), smallest, procs,
                 projects=profile.projects, log=log, feed_key=feed_key)
    try:
        pair.populate()
        pair.start_publisher()
        pair.start_appliance(workers)
    except Exception as exc:
        log(f"  ! the {smallest:,}-server stack beside it did not come up: {exc}")
        _stop_stack(pair, procs, keep=False)
        return None
    log(f"  a {smallest:,}-server stack beside it, measured back to back with it")
    return pair


def _ingest(sc: Scenario, cell_db: str, root: str, profile: Profile, log) -> None:
    # First as a publisher of another render version feeds it (entities only: ingest
    # decodes, validates and renders each), then as the publisher does (pre-rendered
    # rows): the same events, one after the other in this run.
    entities = ingest_rate.measure(cell_db, root, profile.ingest_events, profile.ingest_batch,
                                   rendered=False)
    _log_ingest(log, "entities only (another render version)", entities)
    sc.runs.append({"kind": "ingest_entities", **entities})
    result = ingest_rate.measure(cell_db, root, profile.ingest_events, profile.ingest_batch)
    _log_ingest(log, "pre-rendered rows", result)
    sc.runs.append({"kind": "ingest", **result})
    sc.add(report.Figure("ingest server upserts", result["upserts_per_s"], "upserts/s",
                         baseline=entities["upserts_per_s"],
                         baseline_name="entities only (rendered by ingest)",
                         budget=report.Budget(">=", 50_000), details=result))
    sc.add(report.Figure("ingest server upserts per CPU second", result["upserts_per_cpu_s"],
                         "upserts/s", baseline=entities["upserts_per_cpu_s"],
                         baseline_name="entities only (rendered by ingest)", details=result))
    sc.add(report.Figure("feed encode with rows (cell side, for reference)",
                         result["encode_per_s"], "events/s"))
    _ingest_sealed(sc, cell_db, root, profile, log, result)
    if profile.ingest_held:
        _ingest_held(sc, cell_db, root, profile, log, result)


def _ingest_held(sc: Scenario, cell_db: str, root: str, profile: Profile, log,
                 fresh: dict) -> None:
    """The same run (pre-rendered rows) on a replica that already holds
    ``profile.ingest_held`` other servers: the ratio is what the replica's size costs."""
    result = ingest_rate.measure(cell_db, root, profile.ingest_events, profile.ingest_batch,
                                 held=profile.ingest_held)
    _log_ingest(log, f"pre-rendered rows, replica already holding {profile.ingest_held:,} "
                     f"servers (loaded in {result['held_load_s']:.0f} s)", result)
    sc.runs.append({"kind": "ingest_held", **result})
    name = f"ingest server upserts, replica already holding {profile.ingest_held:,} servers"
    sc.add(report.Figure(name, result["upserts_per_s"], "upserts/s",
                         baseline=fresh["upserts_per_s"], baseline_name="on a new replica",
                         details=result))
    sc.add(report.Figure(f"{name}, per CPU second", result["upserts_per_cpu_s"], "upserts/s",
                         baseline=fresh["upserts_per_cpu_s"], baseline_name="on a new replica",
                         details=result))


def _log_ingest(log, label: str, result: dict) -> None:
    log(f"    ingest, {label}: {result['upserts_per_s']:,.0f} upserts/s "
        f"({result['events']:,} events in {result['seconds']:.2f} s, "
        f"{result['upserts_per_cpu_s']:,.0f} per CPU second, {result['group_commits']} group "
        f"commits, messages of {result['message_bytes_mean'] / 1e6:.2f} MB)")
    log("      CPU per upsert: " + ", ".join(
        f"{stage} {us:.1f} us" for stage, us in result["cpu_us_per_upsert"].items()))


def _ingest_sealed(sc: Scenario, cell_db: str, root: str, profile: Profile, log,
                   plain: dict) -> None:
    """The same ingest run with a sealed feed (a key file on both sides): the cost of
    authentication and decryption per event is the difference."""
    from replica.key_file import write_new_key_file
    key_file = os.path.join(root, "ingest-rate.key")
    if not os.path.exists(key_file):
        write_new_key_file(key_file)
    result = ingest_rate.measure(cell_db, root, profile.ingest_events, profile.ingest_batch,
                                 key_file=key_file)
    extra_us = 1e6 / result["upserts_per_s"] - 1e6 / plain["upserts_per_s"]
    result["extra_us_per_event"] = extra_us
    log(f"    ingest, sealed feed: {result['upserts_per_s']:,.0f} upserts/s ({extra_us:+.2f} us "
        f"per event against the plain feed; CPU per event: opening "
        f"{result['cpu_us_per_upsert']['unseal']:.2f} us, sealing on the cell side "
        f"{result['seal_us_per_event']:.2f} us)")
    sc.runs.append({"kind": "ingest_sealed", **result})
    sc.add(report.Figure("ingest server upserts, sealed feed", result["upserts_per_s"],
                         "upserts/s", budget=report.Budget(">=", 50_000), details=result))


def _mariadb(sc: Scenario, profile: Profile, log) -> None:
    result = mariadb_cell.run(profile.mariadb_servers, list(profile.mariadb_rates),
                              profile.mariadb_duration_s, profile.mariadb_markers, log=log)
    sc.runs.append({"kind": "mariadb", **result})
    this = result["this"]
    servers = result["servers"]
    snapshot = this["reads_during_snapshot"]
    sc.add(report.Figure(f"first snapshot of {servers:,} servers to live", this[
        "first_snapshot_to_live_s"], "s", budget=report.Budget("<=", mariadb_cell.FIRST_SNAPSHOT_BUDGET_S)
        if servers >= 100_000 else None, details=snapshot))
    sc.add(report.Figure(f"resync of {servers:,} servers", this["resync_s"], "s",
                         details={"state": this["resync_state"]}))
    sc.add(report.Figure(f"resync of {servers:,} servers: failed reads meanwhile",
                         this["reads_during_resync"]["failed"], "errors",
                         budget=report.Budget("<=", 0),
                         details=this["reads_during_resync"]))
    for rate in profile.mariadb_rates:
        lag = this[f"lag_at_{int(rate)}"]
        alone = next(w for w in result["writer_alone"] if w["rate"] == rate)
        sc.add(report.Figure(f"change to visible p50 at {int(rate)} changes/s", lag["p50_ms"],
                             "ms", budget=report.Budget("<=", mariadb_cell.P50_BUDGET_MS),
                             details={"achieved_rate": lag["achieved_rate"],
                                      "writer_alone_rate": alone["achieved_rate"],
                                      "lost": lag["lost"]}))
        sc.add(report.Figure(f"change to visible p99 at {int(rate)} changes/s", lag["p99_ms"],
                             "ms", budget=report.Budget("<=", mariadb_cell.P99_BUDGET_MS)))
        sc.add(report.Figure(f"publisher CPU per change at {int(rate)} changes/s",
                             lag["publisher_cpu_ms_per_change"], "ms",
                             details=lag["cpu_ms_per_change"]))


def run(profile: Profile, out_path: str, only: tuple[str, ...] | None = None, keep: bool = False,
        log=_log, feed_key: bool = False) -> dict:
    """``feed_key``: the stacks' publisher and appliance share a key file (sealed feed
    and control), so that every scenario measures a sealed deployment."""
    if only is None:   # a profile may leave some out (the quick run: edge) unless named
        selected = [s for s in SCENARIOS if s not in profile.left_out]
    else:
        selected = [s for s in SCENARIOS if s in only]
    scenarios = {name: Scenario(name) for name in selected}
    started_at = time.time()
    began = time.monotonic()
    load_before = os.getloadavg()
    gone = parts.missing()
    for name, sc in scenarios.items():
        reason = parts.unavailable(name, gone)
        if reason:
            sc.skip(reason)
    log(f"bench ({profile.name}): {', '.join(selected)}")
    for name, sc in scenarios.items():
        if sc.status != report.STATUS_OK:
            log(f"  {name}: skipped: {sc.reason}")
    root = tempfile.mkdtemp(prefix="appliance-bench-")
    scaling_points: dict[int, dict] = {}
    route_points: dict[int, dict] = {}
    pair_points: dict[str, dict] = {}    # the smallest size, beside the largest (_start_pair)
    try:
        with Processes() as procs:
            for size in profile.sizes():
                wanted = _wanted_at(size, profile, scenarios)
                if wanted:
                    paired = (len(profile.scaling_sizes) > 1 and size == max(profile.scaling_sizes)
                              and {"scaling", "routes"} & set(wanted))
                    _run_stack(size, wanted, scenarios, profile, root, procs, scaling_points, log, keep,
                               feed_key, route_points, pair_points if paired else None)
            ingest = scenarios.get("ingest")
            if ingest is not None and ingest.status == report.STATUS_OK and not ingest.runs:
                # No stack carried the ingest measurement: a cell of its own.
                def alone():
                    path = os.path.join(root, "ingest-cell.db")
                    populate_cell(path, min(profile.ingest_events, INGEST_ONLY_SERVERS),
                                  profile.projects, seed=7, log=log)
                    _ingest(ingest, path, root, profile, log)
                log("\n== ingest rate")
                _attempt(ingest, "ingest rate", alone, log)
            mariadb = scenarios.get("mariadb")
            if mariadb is not None and mariadb.status == report.STATUS_OK:
                log("\n== a Nova cell on MariaDB, published through the binlog")
                _attempt(mariadb, "mariadb cell",
                         lambda: _mariadb(mariadb, profile, log), log)
            nova = scenarios.get("novaapi")
            if nova is not None and nova.status == report.STATUS_OK:
                log(f"\n== real nova-api against the appliance on the same Nova databases "
                    f"({profile.novaapi_servers:,} servers)")
                _attempt(nova, "real nova-api", lambda: novaapi.run(nova, procs, profile, root,
                                                                     log), log)
    finally:
        if keep:
            log(f"data kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if "scaling" in scenarios:
        reads.scaling_figures(scenarios["scaling"], scaling_points, profile,
                              pair_points.get("scaling"))
    if "routes" in scenarios:
        routes.scaling_figures(scenarios["routes"], route_points, profile,
                               pair_points.get("routes"))
    ordered = [scenarios[n] for n in selected]
    document = {
        "profile": profile.name,
        "feed_key": feed_key,
        "settings": {k: v for k, v in profile.__dict__.items()},
        "started_at": started_at,
        "seconds": round(time.monotonic() - began, 1),
        "machine": {**machine.describe(), "load_avg_at_start": load_before},
        "missing_parts": gone,
        "scenarios": {sc.name: sc.as_dict() for sc in ordered},
        "summary": report.summary(ordered),
    }
    report.write_json(out_path, document)
    log("")
    matrix = report.runs_table(ordered)
    if matrix:
        log(matrix)
        log("")
    log(report.table(ordered))
    log(f"\n{document['summary']['passed']}/{document['summary']['budgets']} budgets passed; "
        f"results in {out_path} ({document['seconds']:.0f} s)")
    return document
