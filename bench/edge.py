"""The edge endpoint's costs, measured in one run on the read stack.

Replicated reads: three appliances replicate the stack's cell side by side, the same in
all but one setting: ``noauth`` over plain HTTP (the baseline), ``auth = "keystone"``
against a real Keystone from the side environment (warm token cache: every request
carries the same admin token, validated once per worker before the timed runs), and
``noauth`` with TLS (a self-signed certificate). Each request goes to the three back to
back, round after round; the best run of each counts.

Pass-through: a request the replica does not answer (``GET /v2.1/os-keypairs``) sent to
an upstream directly and through an appliance whose ``upstream_url`` is that upstream,
back to back, on one kept-alive connection (latency added, not queueing). Upstreams: a
constant WSGI server (the appliance's own overhead, nothing else varies), and a real
nova-api (Nova 34 under gunicorn on a SQLite deployment, from the test harness) when
the profile asks for it.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench import client
from bench.certs import self_signed
from bench.endpoints import API, ENDPOINTS, SHOW_PREFIX, Endpoint
from bench.keystone_server import SERVICE_PASSWORD, SERVICE_USER, Keystone, make_keystone
from bench.procs import Processes, children_of, wait_until
from bench.profiles import all_workers
from bench.reads import measure
from bench.report import Budget, Figure, Scenario
from bench.ports import free_port
from bench.stack import Stack
from bench.wrk import WrkResult

KEYSTONE_VS_NOAUTH = Budget(">=", 0.9, "ratio")
PASSTHROUGH_ADDED_P50 = Budget("<=", 1.0)          # ms added at p50
NOAUTH_ADMIN = {"X-Auth-Token": "admin:demo"}      # the noauth admin, as the read scenario
WARM_UP_S = 1.0               # a run per target before the timed ones, not counted
PASSTHROUGH = Endpoint("passthrough", f"GET {API}/os-keypairs (passed through)",
                       f"{API}/os-keypairs")
UPSTREAM_USER = {"X-Auth-Token": "u1:p1"}          # nova-api's token stand-in: user u1, project p1
KEYPAIRS_BODY = json.dumps({"keypairs": [{"keypair": {
    "name": "edge-key", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + "x" * 43,
    "fingerprint": "aa:" * 15 + "aa", "type": "ssh"}}]})
UPSTREAM_START_S = 30.0
MIN_PAIRS = 20              # pass-through samples, however slow the upstream


@dataclass
class Target:
    name: str
    stack: Stack | None      # None: not an appliance (an upstream called directly)
    url: str
    headers: dict
    pids: object             # () -> list[int]


def _appliance(stack: Stack, name: str, settings: dict, headers: dict, log) -> Target:
    sibling = stack.sibling(f"edge-{name}")
    started = time.monotonic()
    sibling.start_appliance(all_workers(), settings)
    log(f"    {name}: {sibling.base_url} live in {time.monotonic() - started:.1f} s")
    return Target(name, sibling, sibling.base_url, headers, sibling.worker_pids)


def _check(target: Target, endpoint: Endpoint, show_id: str, live: int | None) -> None:
    """One request, checked: 200, and a full page for a list."""
    path = endpoint.path or f"{SHOW_PREFIX}{show_id}"
    status, _headers, body = client.request(target.url + path, headers=target.headers,
                                            timeout=60)
    if status != 200:
        raise RuntimeError(f"{target.name}: GET {target.url}{path}: HTTP {status}: "
                           f"{body[:300]!r}")
    if endpoint.expect_servers is not None:
        got = len(json.loads(body).get("servers", []))
        if got < min(endpoint.expect_servers, live or endpoint.expect_servers):
            raise RuntimeError(f"{target.name}: GET {target.url}{path}: {got} servers")


def _run(sc: Scenario, target: Target, endpoint: Endpoint, connections: int,
         duration_s: float, ids_file: str, servers: int, log) -> WrkResult:
    result = measure(target.url, endpoint, connections, duration_s, ids_file, target.pids,
                     target.headers)
    if result.error_count:
        raise RuntimeError(f"{target.name}: {endpoint.label}: wrk errors {result.errors}")
    sc.runs.append({"kind": "wrk", "server": target.name, "endpoint": endpoint.key,
                    "label": endpoint.label, "workers": all_workers(), "servers": servers,
                    **result.as_dict()})
    log(f"    {target.name:<22} {endpoint.label:<42} c{connections:<2} "
        f"{result.requests_per_s:>9,.0f} req/s  p50 {result.p50_ms:6.3f} ms  "
        f"p99 {result.p99_ms:6.3f} ms  wrk cpu {result.wrk_cpu_pct:.0f}%  "
        f"server cpu {result.server_cpu_pct or 0:.0f}%")
    return result


def _rounds(sc: Scenario, targets: list[Target], endpoints: list[Endpoint], connections: int,
            profile, ids_file: str, servers: int, better, log) -> dict:
    """Every (endpoint, target) run ``profile.edge_rounds`` times, the targets of one
    endpoint back to back, each round starting one target further on (none always runs
    first, after the previous endpoint's heaviest load); returns the best run of each by
    ``better(a, b)``."""
    best: dict = {}
    for number in range(profile.edge_rounds):
        log(f"  round {number + 1}/{profile.edge_rounds}")
        turn = number % len(targets)
        for endpoint in endpoints:
            for target in targets[turn:] + targets[:turn]:
                result = _run(sc, target, endpoint, connections, profile.edge_duration_s,
                              ids_file, servers, log)
                key = (endpoint.key, target.name)
                if key not in best or better(result, best[key]):
                    best[key] = result
    return best


def _warm(targets: list[Target], endpoints: list[Endpoint], connections: int,
          ids_file: str) -> None:
    """A short run per target and request: every worker has validated the token (the
    Keystone cache is warm), made its TLS contexts, opened its upstream connections."""
    for target in targets:
        for endpoint in endpoints:
            measure(target.url, endpoint, connections, WARM_UP_S, ids_file, None,
                    target.headers)


# -- replicated reads --------------------------------------------------------------------

def _keystone(root: str, log) -> tuple[Keystone, float]:
    started = time.monotonic()
    keystone = make_keystone(os.path.join(root, "keystone"))
    try:
        keystone.add_service_user()
    except BaseException:
        keystone.stop()
        raise
    took = time.monotonic() - started
    log(f"  Keystone (side environment) on {keystone.url}, set up in {took:.1f} s")
    return keystone, took


def measure_reads(sc: Scenario, stack: Stack, profile, keystone: Keystone, log) -> None:
    cert, key = pathlib.Path(stack.dir, "edge-cert.pem"), pathlib.Path(stack.dir, "edge-key.pem")
    self_signed(cert, key)
    keystone_settings = {"auth": "keystone", "keystone_url": keystone.url,
                         "keystone_user": SERVICE_USER, "keystone_password": SERVICE_PASSWORD,
                         "keystone_project": "service"}
    token = {"X-Auth-Token": keystone.admin_token()}
    endpoints = [ENDPOINTS[k] for k in profile.edge_endpoints]
    ids_file = stack.ids_file()
    with open(ids_file) as f:
        show_id = f.readline().strip()
    targets: list[Target] = []
    try:
        log(f"  replicated reads: noauth, keystone and TLS appliances, {all_workers()} "
            f"workers each, on the {stack.servers:,}-server cell")
        targets.append(_appliance(stack, "noauth", {}, NOAUTH_ADMIN, log))
        targets.append(_appliance(stack, "keystone", keystone_settings, token, log))
        targets.append(_appliance(stack, "noauth+tls", {"tls_cert_file": str(cert),
                                                        "tls_key_file": str(key)},
                                  NOAUTH_ADMIN, log))
        live = stack.live_servers()
        for target in targets:
            for endpoint in endpoints:
                _check(target, endpoint, show_id, live)
        _warm(targets, endpoints, profile.edge_connections, ids_file)
        best = _rounds(sc, targets, endpoints, profile.edge_connections, profile, ids_file,
                       stack.servers, lambda a, b: a.requests_per_s > b.requests_per_s, log)
    finally:
        for target in targets:
            target.stack.stop_appliance()
    conns = profile.edge_connections
    for endpoint in endpoints:
        base = best[(endpoint.key, "noauth")]
        for variant in ("keystone", "noauth+tls"):
            mine = best[(endpoint.key, variant)]
            name = f"{endpoint.label} c{conns} {variant}"
            details = {"p50_ms": mine.p50_ms, "p99_ms": mine.p99_ms,
                       "noauth_p50_ms": base.p50_ms, "noauth_p99_ms": base.p99_ms,
                       "rounds": profile.edge_rounds, "duration_s": profile.edge_duration_s}
            sc.add(Figure(f"{name} vs noauth", mine.requests_per_s, "req/s",
                          base.requests_per_s, "noauth",
                          KEYSTONE_VS_NOAUTH if variant == "keystone" else None, details))
            sc.add(Figure(f"{name} p50", mine.p50_ms, "ms", base.p50_ms, "noauth"))
            sc.add(Figure(f"{name} p99", mine.p99_ms, "ms", base.p99_ms, "noauth"))


# -- pass-through ------------------------------------------------------------------------

def _constant_upstream(procs: Processes, workdir: str):
    bodies = os.path.join(workdir, "upstream-bodies.json")
    with open(bodies, "w") as f:
        json.dump({"*": KEYPAIRS_BODY}, f)
    port = free_port()
    proc = procs.start_python("upstream-constant", "bench.constant_server",
                              ["--port", str(port), "--workers", "1", "--bodies", bodies],
                              log_path=os.path.join(workdir, "upstream-constant.log"))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: client.request(url + PASSTHROUGH.path, timeout=5)[0] == 200,
               UPSTREAM_START_S, "the constant upstream", proc=proc)
    return proc, url


class _NovaApiUpstream:
    """nova-api from the test harness (tests/realnova): a Nova 34 deployment on SQLite
    made by nova-manage, a key pair of user u1, nova-api under gunicorn (one worker,
    four threads) with a Neutron stand-in."""

    def __init__(self, workdir: str):
        from tests.realnova.nova_api import NeutronStub, NovaAPI
        from tests.realnova.novadb import NovaDeployment

        os.makedirs(workdir, exist_ok=True)
        self.neutron = NeutronStub().start()
        self.api = None
        try:
            deployment = NovaDeployment.on_sqlite(workdir).create()
            with deployment.writer() as nova:
                nova.create_keypair(user_id="u1", name="edge-key")
            self.api = NovaAPI(deployment, self.neutron).start()
        except BaseException:
            self.stop()
            raise
        self.url = self.api.url
        self.pid = self.api.process.pid

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
            self.api = None
        self.neutron.stop()


def measure_passthrough(sc: Scenario, stack: Stack, procs: Processes, profile, root: str,
                        log) -> None:
    upstreams: list[tuple[str, str, object]] = []     # (kind, url, pids)
    cleanup = []
    targets: list[Target] = []
    try:
        proc, url = _constant_upstream(procs, stack.dir)
        cleanup.append(lambda: procs.stop(proc))
        upstreams.append(("constant upstream", url, lambda: [proc.pid, *children_of(proc.pid)]))
        if profile.edge_nova_api:
            started = time.monotonic()
            try:
                nova = _NovaApiUpstream(os.path.join(root, "nova-upstream"))
            except Exception as exc:   # the constant upstream's figures still stand
                sc.runs.append({"kind": "note", "nova_api": f"did not start: {exc!r}"[:2000]})
                log(f"  ! real nova-api did not start ({type(exc).__name__}: {exc}); "
                    f"pass-through measured against the constant upstream only")
            else:
                cleanup.append(nova.stop)
                log(f"  nova-api (Nova 34, SQLite deployment) on {nova.url}, up in "
                    f"{time.monotonic() - started:.1f} s")
                upstreams.append(("nova-api", nova.url,
                                  lambda: [nova.pid, *children_of(nova.pid)]))
        pairs = []
        for kind, url, pids in upstreams:
            direct = Target(f"{kind} directly", None, url, UPSTREAM_USER, pids)
            through = _appliance(stack, f"through {kind}".replace(" ", "-"),
                                 {"upstream_url": url}, UPSTREAM_USER, log)
            through.name = f"{kind} via appliance"
            targets.append(through)
            for target in (direct, through):
                _check(target, PASSTHROUGH, "", None)
            pairs.append((kind, direct, through))
        seconds = profile.edge_duration_s * profile.edge_rounds
        log(f"  pass-through: {PASSTHROUGH.path} directly and through the appliance, one "
            f"kept-alive connection each, request by request in turn, {seconds:g} s per "
            f"upstream; upstreams: {', '.join(k for k, _u, _p in upstreams)}")
        sampled = {}
        for kind, direct, through in pairs:
            interleaved(direct, through, WARM_UP_S)
            sampled[kind] = interleaved(direct, through, seconds)
            sc.runs.append({"kind": "interleaved", "upstream": kind, **sampled[kind]})
            got = sampled[kind]
            log(f"    {kind:<18} {got['pairs']:>6,} pairs  p50 direct {got['direct_p50_ms']:.3f} ms"
                f"  through {got['through_p50_ms']:.3f} ms  p99 direct "
                f"{got['direct_p99_ms']:.3f} ms  through {got['through_p99_ms']:.3f} ms")
    finally:
        for target in targets:
            target.stack.stop_appliance()
        for stop in reversed(cleanup):
            stop()
    for kind, got in sampled.items():
        name = f"pass-through {PASSTHROUGH.path} c1, {kind}"
        details = {"upstream": kind, **got}
        sc.add(Figure(f"{name}: p50 through the appliance", got["through_p50_ms"], "ms",
                      got["direct_p50_ms"], "direct"))
        sc.add(Figure(f"{name}: p50 added", got["through_p50_ms"] - got["direct_p50_ms"], "ms",
                      budget=PASSTHROUGH_ADDED_P50, details=details))
        sc.add(Figure(f"{name}: p99 through the appliance", got["through_p99_ms"], "ms",
                      got["direct_p99_ms"], "direct"))
        sc.add(Figure(f"{name}: p99 added", got["through_p99_ms"] - got["direct_p99_ms"], "ms",
                      details=details))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class _KeptAlive:
    """One kept-alive connection to a target, reopened if the server closed it."""

    def __init__(self, target: Target):
        self.target = target
        parts = urlsplit(target.url)
        self.host, self.port = parts.hostname, parts.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def get_ms(self, path: str) -> float:
        for attempt in (0, 1):
            started = time.perf_counter()
            try:
                self.conn.request("GET", path, headers=self.target.headers)
                response = self.conn.getresponse()
                response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()     # the server ended an idle connection: once more
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt:
                    raise
                continue
            took = (time.perf_counter() - started) * 1000
            if response.status != 200:
                raise RuntimeError(f"{self.target.name}: GET {path}: HTTP {response.status}")
            return took
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def interleaved(direct: Target, through: Target, seconds: float,
                path: str = PASSTHROUGH.path) -> dict:
    """The same request to ``direct`` and ``through`` in turn (which goes first
    alternates), each on its own kept-alive connection, for ``seconds``: both see the
    same moments of a shared machine's load. Latency percentiles of each, and the median
    of the per-pair differences."""
    clients = (_KeptAlive(direct), _KeptAlive(through))
    times: tuple[list, list] = ([], [])
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline or len(times[0]) < MIN_PAIRS:
            order = (0, 1) if len(times[0]) % 2 == 0 else (1, 0)
            for side in order:
                times[side].append(clients[side].get_ms(path))
    finally:
        for client_ in clients:
            client_.close()
    differences = [t - d for d, t in zip(*times)]
    return {"pairs": len(times[0]), "seconds": seconds,
            "direct_p50_ms": _percentile(times[0], 0.5),
            "direct_p99_ms": _percentile(times[0], 0.99),
            "through_p50_ms": _percentile(times[1], 0.5),
            "through_p99_ms": _percentile(times[1], 0.99),
            "median_pair_difference_ms": _percentile(differences, 0.5)}


def run(sc: Scenario, stack: Stack, procs: Processes, profile, log=print) -> None:
    """Both parts on ``stack`` (its cell and publisher; the appliances are its siblings)."""
    root = os.path.dirname(stack.dir)
    log(f"  edge endpoint, {stack.servers:,} servers")
    keystone, setup_s = _keystone(root, log)
    sc.runs.append({"kind": "keystone", "url": keystone.url, "setup_s": round(setup_s, 1)})
    try:
        measure_reads(sc, stack, profile, keystone, log)
    finally:
        keystone.stop()
    measure_passthrough(sc, stack, procs, profile, root, log)
