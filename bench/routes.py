"""The read routes beyond servers, one by one: each against the constant-body server
(the same body, the same workers) and, where it answers the route, the normalized way
(``bench/normalized_server.py --api-db``), in the same run; and each at every replica
size of the scaling run, against the smallest.

The routes are one table, ``ROUTES``: a route is one line (its path, the kind of entity
that answers it and any other kind its read joins, its budget against the constant body,
whether the normalized way answers it, whether it is admin-only). A route whose kinds
this build does not all have (``replica.kinds.KINDS``) is left out; a kind published by
the feed of Nova's API database (its ``feed_role``) makes the stack start its flavor
source (``Stack.start_flavor_source``: the simulator's flavors, the demo project's quota
limits, the admin's key pairs, aggregates and server groups) and replicate it too. The
cell's simulator population has the services and compute nodes (hypervisors).

Requests are the noauth admin's, at microversion 2.1: the member routes without a
token (the appliance's ``noauth_default_token``, ``admin:demo``), the admin-only routes
(``admin``) with the admin's token ``X-Auth-Token: admin:demo``, sent to every server
the route goes to. Instance actions have no route here: the populated cells have none.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass

from bench import client
from bench.endpoints import API, Endpoint
from bench.pairs import PAIR_WARM_UP_S, ROUND_RATIOS, interleaved, median_round, rate_ratio
from bench.procs import Processes, children_of, wait_until
from bench.profiles import all_workers
from bench.reads import (APPLIANCE, CONSTANT, NORMALIZED, TAIL_CONNECTIONS,
                         TAIL_VS_CONSTANT, Target, _record, _start_baseline, add_scaling_figures,
                         measure)
from bench.report import Budget, Figure, Scenario
from bench.stack import Stack

# The budgets against the constant body, as for the server routes: a route answering one
# document (one row) as GET /servers/{id}, a list as GET /servers?limit=100.
ONE = 0.85
LIST = 0.5
BUDGET_CONNECTIONS = (1, 8)         # as the show's: the budget holds at these
READY_S = 60.0                      # every route answering 200 (a kind's feed live)
# keys of a scaling point's extra results: the constant body's run, the answer's size
AT_CONSTANT = "@constant"
BODY_BYTES = "@body_bytes"
ADMIN_TOKEN = {"X-Auth-Token": "admin:demo"}     # noauth: the user "admin" is an admin
# The simulator's data the routes of one entity read (replica.cell.simulator): the
# private flavor shared with "demo", the first aggregate, the first compute node, and
# the demo project's first server group.
PRIVATE_FLAVOR = "8"
AGGREGATE_ID = 1
HYPERVISOR_ID = 1
SERVER_GROUP = str(uuid.uuid5(uuid.NAMESPACE_DNS, "server-group-web-spread"))


@dataclass(frozen=True)
class Route:
    key: str
    label: str
    path: str
    kind: str                   # the kind whose replica rows answer it (replica.kinds)
    vs_constant: float          # its budget against the constant body (ONE or LIST)
    normalized: bool = False    # the normalized baseline answers it too
    admin: bool = False         # admin-only: asked with the admin's token
    also: tuple[str, ...] = ()  # other kinds its one read joins (availability zones)
    # Its answer holds an item per host of the cloud (services, compute nodes, zones with
    # their hosts), and a larger cell has more hosts (the simulator: one per 40 servers,
    # up to 1,000): the answer at 1,000,000 servers is 38 times the one at 1,000, so at
    # each scaling size it is held to the list budget against the constant body of its
    # own answer at that size, and its rate against the smallest size is shown, unbudgeted.
    per_host: bool = False

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.key, self.label, self.path)

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.kind, *self.also)

    @property
    def headers(self) -> dict | None:
        return ADMIN_TOKEN if self.admin else None


ROUTES = (
    Route("flavors", "GET /flavors", f"{API}/flavors", "flavor", LIST, True),
    Route("flavors_detail", "GET /flavors/detail", f"{API}/flavors/detail", "flavor", LIST,
          True),
    Route("flavor", "GET /flavors/{id}", f"{API}/flavors/2", "flavor", ONE, True),
    Route("extra_specs", "GET /flavors/{id}/os-extra_specs", f"{API}/flavors/2/os-extra_specs",
          "flavor", ONE),
    Route("keypairs", "GET /os-keypairs", f"{API}/os-keypairs", "keypair", LIST),
    Route("limits", "GET /limits", f"{API}/limits", "quota", ONE, True),
    Route("quota_set", "GET /os-quota-sets/{project}", f"{API}/os-quota-sets/demo", "quota",
          ONE, True),
    Route("quota_detail", "GET /os-quota-sets/{project}/detail",
          f"{API}/os-quota-sets/demo/detail", "quota", ONE, True),
    Route("quota_defaults", "GET /os-quota-sets/{project}/defaults",
          f"{API}/os-quota-sets/demo/defaults", "quota", ONE),
    Route("flavor_access", "GET /flavors/{id}/os-flavor-access",
          f"{API}/flavors/{PRIVATE_FLAVOR}/os-flavor-access", "flavor", ONE, True, admin=True),
    Route("zones", "GET /os-availability-zone", f"{API}/os-availability-zone", "service",
          LIST, True, also=("aggregate",)),
    Route("zones_detail", "GET /os-availability-zone/detail",
          f"{API}/os-availability-zone/detail", "service", LIST, True, admin=True,
          also=("aggregate",), per_host=True),
    Route("server_groups", "GET /os-server-groups", f"{API}/os-server-groups", "server_group",
          LIST, True),
    Route("server_group", "GET /os-server-groups/{id}", f"{API}/os-server-groups/{SERVER_GROUP}",
          "server_group", ONE, True),
    Route("services", "GET /os-services", f"{API}/os-services", "service", LIST, True,
          admin=True, per_host=True),
    Route("aggregates", "GET /os-aggregates", f"{API}/os-aggregates", "aggregate", LIST, True,
          admin=True),
    Route("aggregate", "GET /os-aggregates/{id}", f"{API}/os-aggregates/{AGGREGATE_ID}",
          "aggregate", ONE, True, admin=True),
    Route("hypervisors", "GET /os-hypervisors", f"{API}/os-hypervisors", "hypervisor", LIST,
          True, admin=True, per_host=True),
    Route("hypervisors_detail", "GET /os-hypervisors/detail", f"{API}/os-hypervisors/detail",
          "hypervisor", LIST, True, admin=True, per_host=True),
    Route("hypervisor", "GET /os-hypervisors/{id}", f"{API}/os-hypervisors/{HYPERVISOR_ID}",
          "hypervisor", ONE, True, admin=True),
)


def routes_here(keys: tuple[str, ...] | None = None) -> list[Route]:
    """The routes of ``keys`` (every one when None) whose kind this build has."""
    from replica import kinds
    return [r for r in ROUTES if all(k in kinds.KINDS for k in r.kinds)
            and (keys is None or r.key in keys)]


def _needs_flavor_source(routes: list[Route]) -> bool:
    from replica import kinds
    return any(kinds.KINDS[k].feed_role == "flavors" for r in routes for k in r.kinds)


def _answers(base_url: str, route: Route) -> bytes:
    status, _headers, body = client.request(base_url + route.path, headers=route.headers,
                                            timeout=60)
    if status != 200:
        raise RuntimeError(f"GET {base_url}{route.path}: HTTP {status}: {body[:200]!r}")
    return body


def _ready(stack: Stack, routes: list[Route]) -> dict[str, bytes]:
    """Every route answering 200 (the quota reads answer 503 until their feeds were
    live once); returns each route's body."""
    def all_answer():
        for route in routes:
            status, _h, _b = client.request(stack.base_url + route.path,
                                            headers=route.headers, timeout=10)
            if status != 200:
                return None
        return True
    wait_until(all_answer, READY_S, "every route answering 200", interval=0.2,
               proc=stack.appliance)
    return {route.path: _answers(stack.base_url, route) for route in routes}


def prepare(stack: Stack, routes: list[Route], workers: int) -> dict[str, bytes]:
    """The stack serving ``routes`` with ``workers`` workers: its flavor source started
    when a route needs it (the appliance restarted to replicate it). Returns the bodies."""
    if _needs_flavor_source(routes) and stack.flavor_publisher is None:
        stack.start_flavor_source()
        stack.start_appliance(workers)
    elif stack.appliance is None or stack.workers != workers:
        stack.start_appliance(workers)
    return _ready(stack, routes)


def run_matrix(sc: Scenario, stack: Stack, procs: Processes, profile, log=print) -> dict:
    """Each route against the constant body and the normalized way, same run, every
    connection count of ``profile.route_connections``, with the read matrix's largest
    worker count. Returns the appliance's runs by (route key, workers, connections)."""
    routes = routes_here(profile.route_keys)
    workers = max(profile.read_workers)
    log(f"  routes beyond servers, {workers} worker(s), {stack.servers:,} servers: "
        f"{', '.join(r.key for r in routes)}")
    bodies = prepare(stack, routes, workers)
    workdir = os.path.join(stack.dir, "routes")
    os.makedirs(workdir, exist_ok=True)
    ids_file = stack.ids_file()
    targets = [Target(APPLIANCE, stack.base_url, ids_file, stack.worker_pids)]
    with contextlib.ExitStack() as baselines:
        constant_bodies = {"*": "{}", **{path: body.decode() for path, body in bodies.items()}}
        for kind, how in ((CONSTANT, dict(bodies=constant_bodies)),
                          (NORMALIZED, dict(cells=[stack.cell_db], api_db=stack.flavor_db))):
            proc, url = _start_baseline(procs, kind, workers, workdir, **how)
            baselines.callback(procs.stop, proc)
            targets.append(Target(kind, url, ids_file, lambda p=proc: children_of(p.pid)))
        normalized_url = targets[-1].url
        for route in routes:
            if route.normalized:
                _answers(normalized_url, route)
        measured: dict = {t.name: {} for t in targets}
        ratios: dict = {}
        for route in routes:
            for conns in profile.route_connections:
                tries = _rounds(sc, targets, route, conns, profile, workers, stack.servers, log)
                chosen = _median_round(tries)
                for name in measured:
                    result = chosen.get(name) or tries[0].get(name)
                    if result is not None:
                        measured[name][(route.key, conns)] = result
                ratios[(route.key, conns)] = [_ratio(t) for t in tries]
    _figures(sc, measured, routes, profile, workers, bodies, ratios)
    return {(key, workers, conns): result
            for (key, conns), result in measured[APPLIANCE].items()}


def _rounds(sc: Scenario, targets: list[Target], route: Route, conns: int, profile,
            workers: int, size: int, log) -> list[dict]:
    """The rounds of ``route`` at ``conns`` (target name -> run): several interleaved
    where its budget holds (``profile.route_rounds``), else one; the normalized way,
    slow and without a budget, in the first only."""
    rounds, duration_s = ((profile.route_rounds, profile.route_round_duration_s)
                          if conns in BUDGET_CONNECTIONS and profile.route_rounds > 1
                          else (1, profile.read_duration_s))
    return [{target.name: _run_route(sc, target, route, conns, duration_s, workers, size, log)
             for target in targets
             if target.name != NORMALIZED or (route.normalized and n == 0)}
            for n in range(rounds)]


def _ratio(runs: dict) -> float:
    """The appliance's rate over the constant body's in one round."""
    return rate_ratio(runs[APPLIANCE], runs[CONSTANT])


def _median_round(tries: list[dict]) -> dict:
    """The round (target name -> run) whose appliance / constant ratio is the median."""
    return median_round(tries, _ratio)


def _run_route(sc: Scenario, target: Target, route: Route, conns: int, duration_s: float,
               workers: int, size: int, log):
    """One wrk run of ``route`` on ``target`` (with the route's token), recorded."""
    result = measure(target.url, route.endpoint, conns, duration_s, target.ids_file,
                     target.pids, headers=route.headers)
    _record(sc, target.name, route.endpoint, workers, size, result)
    log(f"    {target.name:<10} {route.label:<40} w{workers} c{conns:<3} "
        f"{result.requests_per_s:>9,.0f} req/s  p99 {result.p99_ms:7.2f} ms"
        f"  errors {result.error_count}  wrk cpu {result.wrk_cpu_pct:.0f}%"
        f"  server cpu {result.server_cpu_pct or 0:.0f}%")
    return result


def _figures(sc: Scenario, measured: dict, routes: list[Route], profile, workers: int,
             bodies: dict[str, bytes], ratios: dict) -> None:
    for route in routes:
        for conns in profile.route_connections:
            key = (route.key, conns)
            mine = measured[APPLIANCE][key]
            name = f"{route.label} w{workers} c{conns}"
            details = {"p50_ms": mine.p50_ms, "p99_ms": mine.p99_ms, "p999_ms": mine.p999_ms,
                       "errors": mine.error_count, "body_bytes": len(bodies[route.path]),
                       "round_ratios": [round(r, 3) for r in ratios[key]]}
            budget = (Budget(">=", route.vs_constant, "ratio")
                      if conns in BUDGET_CONNECTIONS else None)
            sc.add(Figure(f"{name} vs constant body", mine.requests_per_s, "req/s",
                          measured[CONSTANT][key].requests_per_s, "constant", budget, details))
            if key in measured[NORMALIZED]:
                sc.add(Figure(f"{name} vs normalized", mine.requests_per_s, "req/s",
                              measured[NORMALIZED][key].requests_per_s, "normalized"))
            sc.add(Figure(f"{name} p99 vs constant body", mine.p99_ms, "ms",
                          measured[CONSTANT][key].p99_ms, "constant",
                          TAIL_VS_CONSTANT if conns == TAIL_CONNECTIONS else None))


def run_scaling_point(sc: Scenario, stack: Stack, profile, log=print,
                      measured: dict | None = None, pair: Stack | None = None,
                      pair_out: dict | None = None) -> dict:
    """Each route on this stack with every worker, at the scaling connection count; a run
    the matrix already made here (``measured``) is not repeated. A route whose answer
    grows with the cloud (``per_host``) goes, right after this stack, to the constant
    body of its answer here (key ``route.key + AT_CONSTANT``; both measured afresh, back
    to back). With ``pair`` (a stack of the smallest size) and ``pair_out``, each route
    whose figure has a budget goes to this stack and to the pair in ``profile.pair_rounds``
    interleaved rounds (``bench.pairs.interleaved``; then every route is measured here,
    so that each pair of runs is back to back): the median round's runs go into ``out``
    and ``pair_out``, the rounds' ratios into ``pair_out[key + ROUND_RATIOS]``."""
    routes = routes_here(profile.route_keys)
    workers = all_workers()
    conns = profile.scaling_connections
    reuse = measured if pair is None else None
    bodies = prepare(stack, routes, workers)
    if pair is not None:
        prepare(pair, routes, workers)
    growing = [route for route in routes if route.per_host]
    constant = url = None
    if growing:
        workdir = os.path.join(stack.dir, "routes-scaling")
        os.makedirs(workdir, exist_ok=True)
        constant, url = _start_baseline(stack.procs, CONSTANT, workers, workdir, bodies={
            "*": "{}", **{r.path: bodies[r.path].decode() for r in growing}})
    out = {}
    try:
        for route in routes:
            def here():
                return _scaling_run(sc, stack.base_url, stack.ids_file(), stack.worker_pids,
                                    route, stack.servers, profile, log)
            if pair is not None and not route.per_host:
                out[route.key], pair_out[route.key], pair_out[route.key + ROUND_RATIOS] = \
                    interleaved(here, lambda: _scaling_run(
                        sc, pair.base_url, pair.ids_file(), pair.worker_pids, route,
                        pair.servers, profile, log, " (beside)"), profile.pair_rounds,
                        lambda: [_scaling_run(sc, warmed.base_url, warmed.ids_file(),
                                              warmed.worker_pids, route, warmed.servers,
                                              profile, log, " (warm-up)",
                                              warm_up_s=PAIR_WARM_UP_S)
                                 for warmed in (stack, pair)])
                continue
            done = None if route.per_host else (reuse or {}).get((route.key, workers, conns))
            out[route.key] = done if done is not None else here()
            if route.per_host:
                out[route.key + AT_CONSTANT] = _scaling_run(
                    sc, url, None, lambda: children_of(constant.pid), route, stack.servers,
                    profile, log, " (constant)", CONSTANT)
                out[route.key + BODY_BYTES] = len(bodies[route.path])
    finally:
        if constant is not None:
            stack.procs.stop(constant)
    return out


def _scaling_run(sc: Scenario, url: str, ids_file: str | None, pids, route: Route, size: int,
                 profile, log, note: str = "", server: str = APPLIANCE,
                 warm_up_s: float | None = None):
    """One scaling run of ``route`` on the server at ``url`` (the processes ``pids``
    lists), recorded as ``server``'s at ``size`` servers; with ``warm_up_s``, a run of
    that length that is only logged."""
    result = measure(url, route.endpoint, profile.scaling_connections,
                     profile.scaling_duration_s if warm_up_s is None else warm_up_s,
                     ids_file, pids, headers=route.headers)
    if warm_up_s is None:
        _record(sc, server, route.endpoint, all_workers(), size, result)
    log(f"    routes {size:>9,} {route.label + note:<40} {result.requests_per_s:>9,.0f} "
        f"req/s  p99 {result.p99_ms:7.2f} ms  errors {result.error_count}")
    return result


def scaling_figures(sc: Scenario, points: dict[int, dict], profile,
                    beside: dict | None = None) -> None:
    """Each route at each replica size, against the smallest size measured (the budget
    at the largest size, against ``beside``: the smallest size's runs made back to back
    with the largest's); a route whose answer grows with the cloud against the constant
    body of its answer at each size instead (the list budget)."""
    routes = routes_here(profile.route_keys)
    add_scaling_figures(sc, points, {r.key: r.label for r in routes},
                        unbudgeted={r.key for r in routes if r.per_host}, beside=beside)
    for route in routes:
        if not route.per_host:
            continue
        for size in sorted(points):
            mine = points[size].get(route.key)
            constant = points[size].get(route.key + AT_CONSTANT)
            if mine is None or constant is None:
                continue
            sc.add(Figure(f"{route.label} @ {size:,} servers vs constant body",
                          mine.requests_per_s, "req/s", constant.requests_per_s, "constant",
                          Budget(">=", route.vs_constant, "ratio"),
                          {"body_bytes": points[size].get(route.key + BODY_BYTES),
                           "p99_ms": mine.p99_ms, "errors": mine.error_count}))
