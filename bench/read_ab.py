"""Before and after, in the same run: the read path of another revision of the appliance
and of this tree side by side on one replica, with the constant-body server (baseline 1)
beside them, request by request, in rounds whose order alternates.

    python -m bench.read_ab --baseline-rev REV [--servers 10000] [--workers 1]
        [--endpoints show,list100,detail100,detail1000] [--connections 1,64]
        [--duration 3] [--rounds 3] [--after-setting NAME=VALUE ...]

``--baseline-rev`` is a git revision of this repository (exported with ``git archive``
into the run's directory; ``--baseline TREE`` takes a directory instead, this tree's own
to compare a setting: ``--after-setting NAME=VALUE``, which only the "after" appliance
gets, as an integer when it reads as one, else as a string). Both
appliances replicate the same cell from the same publisher and are started the same
way (``appliance serve``, the installed entry point) with the revision's sources first
on ``PYTHONPATH``. Each round runs every (request, connections) on the three servers
back to back, in turn forwards and backwards, after the same idle check as the read
matrix (``bench.reads.measure``).

Figures per run: requests/s, p50, p99 and the server processes' CPU per request (CPU
seconds over the run divided by the requests it answered). On a shared, loaded machine
the CPU per request moves far less from run to run than the latencies do: it is the
figure to compare first; the tail follows it on a quiet machine. The summary prints, per
(request, connections), every round's ratio to the constant server of both revisions:
the spread over the rounds is the noise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

from bench import reads
from bench.endpoints import ENDPOINTS
from bench.procs import ROOT, Processes, children_of
from bench.stack import Stack

BEFORE, AFTER, CONSTANT = "before", "after", "constant"


@contextlib.contextmanager
def _python_path(tree: str):
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = tree + (os.pathsep + old if old else "")
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


def export_revision(rev: str, into: str) -> str:
    """This repository's ``rev`` as a directory of sources (``git archive``)."""
    os.makedirs(into)
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def cpu_us_per_request(result) -> float:
    if not result.requests or result.server_cpu_pct is None:
        return float("nan")
    return result.server_cpu_pct / 100 * result.duration_s / result.requests * 1e6


def _same_page(a: bytes, a_port: int, b: bytes, b_port: int) -> bool:
    # Links hold the port each appliance answered on, as ":<port>/": the bare digits
    # may also be part of a server's uuid (seen: port 53291 in ...-3532917cdca8).
    return a.replace(b":%d/" % a_port, b":PORT/") == b.replace(b":%d/" % b_port, b":PORT/")


def after_settings(pairs: list[str]) -> dict:
    """``NAME=VALUE`` items as settings for the config file (integers as integers)."""
    settings = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--after-setting {pair!r}: expected NAME=VALUE")
        settings[name] = int(value) if value.lstrip("-").isdigit() else value
    return settings


def run(args, root: str, log=print) -> dict:
    endpoints = [ENDPOINTS[k] for k in args.endpoints.split(",")]
    connections = [int(c) for c in args.connections.split(",")]
    baseline = args.baseline or export_revision(args.baseline_rev, os.path.join(root, "before"))
    measured: dict[tuple, list] = {}
    with Processes() as procs:
        stack = Stack(root, args.servers, procs, log=log)
        stack.populate()
        stack.start_publisher()
        apps = {}
        for name, tree, settings in ((BEFORE, baseline, None),
                                     (AFTER, ROOT, after_settings(args.after_setting))):
            apps[name] = stack.sibling(name)
            with _python_path(tree):
                apps[name].start_appliance(args.workers, settings)
        ids_file = stack.ids_file()
        show_id = reads._first_line(ids_file)
        live = stack.live_servers()
        before, after = apps[BEFORE], apps[AFTER]
        bodies = {"*": reads.check(before.base_url, ENDPOINTS["show"], show_id).decode()}
        for endpoint in endpoints:
            if not endpoint.path:
                continue
            page = reads.check(before.base_url, endpoint, show_id, live)
            if not _same_page(page, before.port, reads.check(after.base_url, endpoint, show_id,
                                                             live), after.port):
                raise RuntimeError(f"{endpoint.label}: the two revisions answer differently")
            bodies[endpoint.path] = page.decode()
        proc, constant_url = reads._start_baseline(procs, CONSTANT, args.workers, stack.dir,
                                                   bodies=bodies)
        targets = [(BEFORE, before.base_url, before.worker_pids),
                   (AFTER, after.base_url, after.worker_pids),
                   (CONSTANT, constant_url, lambda: children_of(proc.pid))]
        for round_number in range(args.rounds):
            for endpoint in endpoints:
                for conns in connections:
                    order = targets if round_number % 2 == 0 else targets[::-1]
                    for name, url, pids in order:
                        result = reads.measure(url, endpoint, conns, args.duration, ids_file,
                                               pids)
                        measured.setdefault((endpoint.key, conns, name), []).append(result)
                        log(f"  round {round_number} {name:<9} {endpoint.label:<32} c{conns:<3}"
                            f" {result.requests_per_s:>8,.0f} req/s  p50 {result.p50_ms:7.3f}"
                            f"  p99 {result.p99_ms:8.3f} ms"
                            f"  cpu {cpu_us_per_request(result):6.0f} us/req"
                            f"  errors {result.error_count}")
    return measured


def summary(measured: dict, args, log=print) -> None:
    log("\nper round, as a ratio to the constant server (before -> after):")
    for key in args.endpoints.split(","):
        for conns in (int(c) for c in args.connections.split(",")):
            runs = {n: measured[(key, conns, n)] for n in (BEFORE, AFTER, CONSTANT)}

            def ratios(figure, name):
                return " ".join(f"{figure(r) / figure(c):.2f}"
                                for r, c in zip(runs[name], runs[CONSTANT]))

            label = f"{ENDPOINTS[key].label} c{conns}"
            log(f"  {label:<36} req/s  {ratios(lambda r: r.requests_per_s, BEFORE):<16} -> "
                f"{ratios(lambda r: r.requests_per_s, AFTER)}")
            log(f"  {'':<36} p99    {ratios(lambda r: r.p99_ms, BEFORE):<16} -> "
                f"{ratios(lambda r: r.p99_ms, AFTER)}")
            log(f"  {'':<36} cpu/rq {ratios(cpu_us_per_request, BEFORE):<16} -> "
                f"{ratios(cpu_us_per_request, AFTER)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.read_ab",
                                     description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--baseline-rev", help="git revision of the 'before' appliance")
    which.add_argument("--baseline", help="directory with the 'before' appliance's sources")
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--endpoints", default="show,list100,detail100,detail1000")
    parser.add_argument("--connections", default="1,64")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--after-setting", action="append", default=[],
                        metavar="NAME=VALUE",
                        help="a setting of the 'after' appliance only (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="appliance-read-ab-")
    try:
        summary(run(args, root), args)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
