"""The read path: the appliance against its baselines, request by request, with wrk.

For each worker count, the appliance is (re)started with that many workers and the
baseline servers are started with as many: the constant-body server (baseline 1), the
normalized way on the cell database (baseline 2) and the normalized way over several
cells, scatter-gather (baseline 3). Then each wrk run (endpoint x connections) goes to
the appliance and to each baseline in turn.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass

from bench import client
from bench.endpoints import ENDPOINTS, SHOW_PREFIX, Endpoint
from bench.pairs import PAIR_WARM_UP_S, ROUND_RATIOS, interleaved
from bench.procs import Processes, children_of, cpu_seconds, wait_until
from bench.report import Budget, Figure, Scenario
from bench.ports import free_port
from bench.stack import Stack
from bench.wrk import WrkResult, run_wrk

APPLIANCE, CONSTANT, NORMALIZED, SCATTER = "appliance", "constant", "normalized", "scatter"
# The budgets (DESIGN.md, issue 14): against the constant body per request, against the
# normalized way, and the tail at many connections against the constant server's.
VS_CONSTANT = {"show": Budget(">=", 0.85, "ratio"), "list100": Budget(">=", 0.5, "ratio"),
               "detail100": Budget(">=", 0.5, "ratio"), "detail1000": Budget(">=", 0.3, "ratio")}
SHOW_BUDGET_CONNECTIONS = (1, 8)    # the show budget holds at these connection counts
VS_NORMALIZED = {"list100": Budget(">=", 10, "ratio"), "detail1000": Budget(">=", 50, "ratio")}
SHOW_P99_AT_1 = Budget("<=", 0.3)   # ms, GET /servers/{id} at one connection
TAIL_CONNECTIONS = 64
TAIL_VS_CONSTANT = Budget("<=", 2, "ratio")    # p99 at TAIL_CONNECTIONS, every read route
SCALING_VS_SMALLEST = Budget(">=", 0.95, "ratio")  # the largest replica against the smallest
BASELINE_START_S = 30.0
MIN_REQUESTS = 30          # fewer in a run: run again, longer (slow baselines)
MAX_DURATION_S = 30.0
SETTLE_PROBE = "/v2.1/servers?limit=1"
SETTLE_FAST_S = 0.25       # a cheap request this fast, a few times in a row: the server is idle
SETTLE_TIMEOUT_S = 300.0
SETTLE_PROBES = 4          # each on a new connection, so on any worker (SO_REUSEPORT)


def settle(base_url: str) -> float:
    """Wait until the server has worked off what the previous run left queued (wrk stops
    at its deadline; the requests in flight are still served, one after another, and a
    slow baseline can carry seconds of them into the next run). Returns the wait."""
    began = time.monotonic()
    fast = 0
    while fast < SETTLE_PROBES:
        t0 = time.monotonic()
        client.request(base_url + SETTLE_PROBE, timeout=SETTLE_TIMEOUT_S)
        fast = fast + 1 if time.monotonic() - t0 < SETTLE_FAST_S else 0
        if time.monotonic() - began > SETTLE_TIMEOUT_S:
            raise TimeoutError(f"{base_url} still busy after {SETTLE_TIMEOUT_S:.0f}s")
    return time.monotonic() - began


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) or 0.0 for p in pids)


def measure(base_url: str, endpoint: Endpoint, connections: int, duration_s: float,
            ids_file: str, pids=None, headers: dict | None = None) -> WrkResult:
    """One wrk run on an idle server, which is left idle again; again and longer when it
    completed too few requests to say anything (a slow baseline), up to MAX_DURATION_S.
    ``pids()`` names the server's processes, whose CPU use during the run is recorded
    next to wrk's. ``headers`` go with every request (a token)."""
    while True:
        settle(base_url)
        serving = pids() if pids else []
        cpu_before, began = _cpu(serving), time.monotonic()
        if endpoint.is_show:
            result = run_wrk(base_url, ids_prefix=SHOW_PREFIX, ids_file=ids_file,
                             connections=connections, duration_s=duration_s, headers=headers)
        else:
            result = run_wrk(base_url, endpoint.path, connections=connections,
                             duration_s=duration_s, headers=headers)
        if serving:
            spent = time.monotonic() - began
            result.server_cpu_pct = round(100 * (_cpu(serving) - cpu_before) / spent, 1)
        # The requests still in flight when wrk stopped are served after it: wait for
        # them here, or a slow baseline's backlog (seconds of a normalized detail page at
        # 64 connections) takes the cores from the next server's run.
        settle(base_url)
        if result.requests >= MIN_REQUESTS or duration_s >= MAX_DURATION_S:
            return result
        rate = result.requests / result.duration_s if result.requests else 0.0
        wanted = 1.5 * MIN_REQUESTS / rate if rate else duration_s * 4
        duration_s = min(MAX_DURATION_S, max(duration_s * 2, wanted))


def check(base_url: str, endpoint: Endpoint, show_id: str, available: int | None = None) -> bytes:
    """One request, checked: 200 and a full page (of at most ``available`` servers).
    Returns the body."""
    path = endpoint.path or f"{SHOW_PREFIX}{show_id}"
    status, _headers, body = client.request(base_url + path, timeout=120)
    if status != 200:
        raise RuntimeError(f"GET {base_url}{path}: HTTP {status}: {body[:200]!r}")
    document = json.loads(body)
    if endpoint.expect_servers is not None:
        expected = min(endpoint.expect_servers, available or endpoint.expect_servers)
        got = len(document.get("servers", []))
        if got < expected:
            raise RuntimeError(f"GET {base_url}{path}: {got} servers, expected {expected}")
    return body


def _wait_serving(url: str, proc) -> None:
    def answers():
        status, _h, _b = client.request(url, timeout=5)
        return status < 500
    wait_until(answers, BASELINE_START_S, f"a baseline server at {url}", proc=proc)


def _start_baseline(procs: Processes, kind: str, workers: int, workdir: str, *, bodies=None,
                    cells=None, api_db: str | None = None):
    port = free_port()
    if kind == CONSTANT:
        path = os.path.join(workdir, "bodies.json")
        with open(path, "w") as f:
            json.dump(bodies, f)
        proc = procs.start_python(kind, "bench.constant_server",
                                  ["--port", str(port), "--workers", str(workers), "--bodies", path],
                                  log_path=os.path.join(workdir, f"{kind}.log"))
    else:
        args = ["--port", str(port), "--workers", str(workers)]
        for cell in cells:
            args += ["--cell", cell]
        if api_db:
            args += ["--api-db", api_db]
        proc = procs.start_python(kind, "bench.normalized_server", args,
                                  log_path=os.path.join(workdir, f"{kind}.log"))
    base_url = f"http://127.0.0.1:{port}"
    _wait_serving(f"{base_url}/v2.1/servers?limit=1", proc)
    return proc, base_url


def _record(sc: Scenario, server: str, endpoint: Endpoint, workers: int, size: int,
            result: WrkResult) -> None:
    sc.runs.append({"kind": "wrk", "server": server, "endpoint": endpoint.key,
                    "label": endpoint.label, "workers": workers, "servers": size,
                    **result.as_dict()})


@dataclass
class Target:
    """One server the same requests go to: its URL, its ids for shows, its processes."""

    name: str
    url: str
    ids_file: str
    pids: object   # () -> list[int]


def _run_one(sc: Scenario, target: Target, endpoint: Endpoint, conns: int, duration_s: float,
             workers: int, size: int, log) -> WrkResult:
    result = measure(target.url, endpoint, conns, duration_s, target.ids_file, target.pids)
    _record(sc, target.name, endpoint, workers, size, result)
    log(f"    {target.name:<10} {endpoint.label:<40} w{workers} c{conns:<3} "
        f"{result.requests_per_s:>9,.0f} req/s  p99 {result.p99_ms:7.2f} ms"
        f"  errors {result.error_count}  wrk cpu {result.wrk_cpu_pct:.0f}%"
        f"  server cpu {result.server_cpu_pct or 0:.0f}%")
    return result


def run_matrix(sc: Scenario, stack: Stack, procs: Processes, profile, scatter_dbs: list[str],
               scatter_ids: str, log=print) -> dict:
    """Returns the appliance's runs by (endpoint, workers, connections).

    Every server is up at once and each (request, connections) cell of the matrix goes to
    the appliance and then to each baseline, back to back: on a shared machine the load
    from elsewhere drifts over minutes, and a ratio is only as good as the closeness in
    time of its two runs."""
    endpoints = [ENDPOINTS[k] for k in profile.read_endpoints]
    ids_file = stack.ids_file()
    show_id = _first_line(ids_file)
    appliance_runs = {}
    for workers in profile.read_workers:
        log(f"  read matrix, {workers} worker(s), {stack.servers:,} servers")
        stack.start_appliance(workers)
        live = stack.live_servers()
        bodies = {"*": check(stack.base_url, ENDPOINTS["show"], show_id).decode()}
        for endpoint in endpoints:
            if endpoint.path:
                bodies[endpoint.path] = check(stack.base_url, endpoint, show_id, live).decode()
        targets = [Target(APPLIANCE, stack.base_url, ids_file, stack.worker_pids)]
        with contextlib.ExitStack() as baselines:
            for kind, how, ids in ((CONSTANT, dict(bodies=bodies), ids_file),
                                   (NORMALIZED, dict(cells=[stack.cell_db]), ids_file),
                                   (SCATTER, dict(cells=scatter_dbs), scatter_ids)):
                proc, url = _start_baseline(procs, kind, workers, stack.dir, **how)
                baselines.callback(procs.stop, proc)
                if kind != CONSTANT:
                    for endpoint in endpoints:   # the baseline answers the same requests
                        check(url, endpoint, _first_line(ids), live)
                targets.append(Target(kind, url, ids, lambda p=proc: children_of(p.pid)))
            measured: dict = {t.name: {} for t in targets}
            for endpoint in endpoints:
                for conns in profile.read_connections:
                    for target in targets:
                        measured[target.name][(endpoint.key, conns)] = _run_one(
                            sc, target, endpoint, conns, profile.read_duration_s, workers,
                            stack.servers, log)
        _figures(sc, measured, endpoints, profile, workers, len(scatter_dbs))
        for (key, conns), result in measured[APPLIANCE].items():
            appliance_runs[(key, workers, conns)] = result
    return appliance_runs


def _first_line(path: str) -> str:
    with open(path) as f:
        return f.readline().strip()


def _figures(sc: Scenario, measured: dict, endpoints, profile, workers: int, cells: int) -> None:
    for endpoint in endpoints:
        for conns in profile.read_connections:
            key = (endpoint.key, conns)
            mine = measured[APPLIANCE][key]
            name = f"{endpoint.label} w{workers} c{conns}"
            details = {"p50_ms": mine.p50_ms, "p99_ms": mine.p99_ms, "p999_ms": mine.p999_ms,
                       "errors": mine.error_count, "wrk_cpu_pct": mine.wrk_cpu_pct}
            constant = VS_CONSTANT.get(endpoint.key)
            if endpoint.key == "show" and conns not in SHOW_BUDGET_CONNECTIONS:
                constant = None
            sc.add(Figure(f"{name} vs constant body", mine.requests_per_s, "req/s",
                          measured[CONSTANT][key].requests_per_s, "constant", constant,
                          details))
            sc.add(Figure(f"{name} vs normalized", mine.requests_per_s, "req/s",
                          measured[NORMALIZED][key].requests_per_s, "normalized",
                          VS_NORMALIZED.get(endpoint.key)))
            sc.add(Figure(f"{name} vs scatter-gather", mine.requests_per_s, "req/s",
                          measured[SCATTER][key].requests_per_s, f"scatter-{cells}"))
            sc.add(Figure(f"{name} p99", mine.p99_ms, "ms",
                          measured[NORMALIZED][key].p99_ms, "normalized",
                          SHOW_P99_AT_1 if endpoint.key == "show" and conns == 1 else None))
            sc.add(Figure(f"{name} p99 vs constant body", mine.p99_ms, "ms",
                          measured[CONSTANT][key].p99_ms, "constant",
                          TAIL_VS_CONSTANT if conns == TAIL_CONNECTIONS else None))


def run_scaling_point(sc: Scenario, stack: Stack, profile, workers: int, log=print,
                      measured: dict | None = None, pair: Stack | None = None,
                      pair_out: dict | None = None) -> dict:
    """The scaling endpoints on this stack, at one worker count and connection count.
    A run the read matrix already made on this stack (``measured``) is not repeated.
    With ``pair`` (a stack of the smallest size) and ``pair_out``, each endpoint goes to
    this stack and to the pair in ``profile.pair_rounds`` interleaved rounds
    (``bench.pairs.interleaved``; then every endpoint is measured here, so that each pair
    of runs is back to back): the median round's runs go into ``out`` and ``pair_out``,
    the rounds' ratios into ``pair_out[key + ROUND_RATIOS]``."""
    endpoints = [ENDPOINTS[k] for k in profile.scaling_endpoints]
    reuse = measured if pair is None else None
    out = {}
    for endpoint in endpoints:
        if pair is not None:
            out[endpoint.key], pair_out[endpoint.key], pair_out[endpoint.key + ROUND_RATIOS] = \
                interleaved(lambda: _scaling_run(sc, stack, endpoint, profile, workers, log),
                            lambda: _scaling_run(sc, pair, endpoint, profile, workers, log,
                                                 " (beside)"),
                            profile.pair_rounds,
                            lambda: [_scaling_run(sc, warmed, endpoint, profile, workers, log,
                                                  " (warm-up)", PAIR_WARM_UP_S)
                                     for warmed in (stack, pair)])
            continue
        done = (reuse or {}).get((endpoint.key, workers, profile.scaling_connections))
        if done is not None:
            out[endpoint.key] = done
        else:
            out[endpoint.key] = _scaling_run(sc, stack, endpoint, profile, workers, log)
    return out


def _scaling_run(sc: Scenario, stack: Stack, endpoint, profile, workers: int, log,
                 note: str = "", warm_up_s: float | None = None):
    """One timed run of ``endpoint`` on ``stack``, recorded; with ``warm_up_s``, a run
    of that length that is only logged."""
    if stack.workers != workers or stack.appliance is None:
        stack.start_appliance(workers)
    ids_file = stack.ids_file()
    check(stack.base_url, endpoint, _first_line(ids_file), stack.live_servers())
    result = measure(stack.base_url, endpoint, profile.scaling_connections,
                     profile.scaling_duration_s if warm_up_s is None else warm_up_s, ids_file,
                     stack.worker_pids)
    if warm_up_s is None:
        _record(sc, APPLIANCE, endpoint, workers, stack.servers, result)
    log(f"    scaling {stack.servers:>9,} {endpoint.label + note:<40} {result.requests_per_s:>9,.0f} req/s"
        f"  p99 {result.p99_ms:7.2f} ms  errors {result.error_count}")
    return result


def scaling_figures(sc: Scenario, points: dict[int, dict], profile,
                    beside: dict | None = None) -> None:
    """Each read figure at each size, against the smallest size measured (``beside``: the
    smallest size's runs made back to back with the largest's, see
    bench.runner._start_pair)."""
    add_scaling_figures(sc, points, {key: ENDPOINTS[key].label for key in profile.scaling_endpoints},
                        beside=beside)


def add_scaling_figures(sc: Scenario, points: dict[int, dict], labels: dict[str, str],
                        unbudgeted: frozenset[str] | set[str] = frozenset(),
                        beside: dict | None = None) -> None:
    """Requests/s and p99 of each measured key (``labels``: key -> label) at each replica
    size, against the smallest size; the budget applies at the largest size, but for
    the keys in ``unbudgeted``. The largest size is held against ``beside`` (key ->
    the smallest size's run made right after the largest's) where that has the key,
    else against the smallest size's first measurement, made tens of minutes earlier."""
    if not points:
        return
    sizes = sorted(points)
    smallest = sizes[0]
    later = beside or {}
    for key, label in labels.items():
        for size in sizes:
            result = points[size].get(key)
            first = points[smallest].get(key)
            if result is None or first is None:
                continue
            largest = size == sizes[-1] != smallest
            base, base_label = first, f"@{smallest:,}"
            details = {"p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                       "p999_ms": result.p999_ms, "errors": result.error_count}
            if largest and later.get(key) is not None:
                base, base_label = later[key], f"@{smallest:,} beside"
                details["first_at_smallest_req_s"] = first.requests_per_s
                if later.get(key + ROUND_RATIOS) is not None:
                    details["round_ratios"] = later[key + ROUND_RATIOS]
            sc.add(Figure(f"{label} @ {size:,} servers", result.requests_per_s, "req/s",
                          base.requests_per_s, base_label,
                          SCALING_VS_SMALLEST if largest and key not in unbudgeted else None,
                          details=details))
            sc.add(Figure(f"{label} @ {size:,} servers p99", result.p99_ms, "ms",
                          base.p99_ms, base_label))
