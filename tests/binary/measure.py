"""Measures the one-file binary (not a test: prints numbers, asserts nothing).

    .venv/bin/python -m tests.binary.measure [--runs 3] [--servers 1000]

- size of dist/appliance;
- exec to first answer: from exec of `dist/appliance serve` to the first HTTP 200 on
  `/`; from exec of `dist/appliance demo` (which first creates and populates its cell
  databases) to the first 200 on `/` and to the first `/v2.1/servers/detail` with
  servers in it (cells published, ingested and readable);
- memory of each API worker: RSS, and PSS (shared pages split between the processes
  that share them: the fairer number for forked workers).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from tests.binary.conftest import (BINARY, BUILD_SCRIPT, WORKER_TITLE, binary_env, descendants,
                                   process_title)
from tests.conftest import ROOT, free_port

POLL = 0.005
TIMEOUT = 120.0


def _status(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"X-Auth-Token": "admin:admin"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status, response.read()
    except Exception:
        return 0, b""


def _memory(pid: int) -> dict:
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                found["rss_mb"] = int(line.split()[1]) / 1024
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                found["pss_mb"] = int(line.split()[1]) / 1024
    return found


def measure_serve(workers: int) -> float:
    """Exec of `dist/appliance serve` (an empty replica, one unreachable cell) to the
    first 200 on `/`: the binary's own start, without the demo's cell creation."""
    port, admin_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmpdir:
        config = os.path.join(tmpdir, "appliance.toml")
        with open(config, "w") as f:
            f.write(f'listen_port = {port}\nadmin_port = {admin_port}\nworkers = {workers}\n'
                    f'data_dir = "{tmpdir}/data"\n[[cell]]\nname = "cell1"\n'
                    f'feed = "ipc://{tmpdir}/cell1.feed"\ncontrol = "ipc://{tmpdir}/cell1.ctl"\n')
        started = time.monotonic()
        proc = subprocess.Popen([BINARY, "serve", "--config", config],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, cwd=tmpdir, env=binary_env(tmpdir),
                                start_new_session=True)
        try:
            while _status(f"http://127.0.0.1:{port}/")[0] != 200:
                if proc.poll() is not None or time.monotonic() - started > TIMEOUT:
                    raise RuntimeError(f"serve exited or timed out: {proc.returncode}")
                time.sleep(POLL)
            return time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def measure_once(servers: int, workers: int) -> dict:
    port, admin_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmpdir:
        started = time.monotonic()
        proc = subprocess.Popen(
            [BINARY, "demo", "--port", str(port), "--admin-port", str(admin_port),
             "--servers", str(servers), "--workers", str(workers)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            cwd=tmpdir, env=binary_env(tmpdir), start_new_session=True)
        result = {}
        try:
            api = f"http://127.0.0.1:{port}"
            while "first_200_s" not in result or "first_servers_s" not in result:
                if proc.poll() is not None or time.monotonic() - started > TIMEOUT:
                    raise RuntimeError(f"demo exited or timed out: {proc.returncode}")
                if "first_200_s" not in result and _status(api + "/")[0] == 200:
                    result["first_200_s"] = time.monotonic() - started
                if "first_200_s" in result:
                    status, body = _status(api + "/v2.1/servers/detail?all_tenants=1")
                    if status == 200 and json.loads(body)["servers"]:
                        result["first_servers_s"] = time.monotonic() - started
                time.sleep(POLL)
            # Let the workers settle, then warm them with some reads before measuring.
            for _ in range(200):
                _status(api + "/v2.1/servers/detail?all_tenants=1&limit=100")
            pids = descendants(proc.pid)
            result["workers"] = [dict(pid=p, **_memory(p)) for p in pids
                                 if process_title(p).startswith(WORKER_TITLE)]
            result["processes"] = {process_title(p): _memory(p) for p in pids}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.binary.measure")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    subprocess.run(["bash", BUILD_SCRIPT], cwd=ROOT, check=True)
    size = os.path.getsize(BINARY)
    serve = [measure_serve(args.workers) for _ in range(args.runs)]
    runs = [measure_once(args.servers, args.workers) for _ in range(args.runs)]
    print(json.dumps({"size_bytes": size, "serve_first_200_s": serve, "demo_runs": runs},
                     indent=2))
    print(f"size: {size / 1e6:.1f} MB", file=sys.stderr)
    print("serve: first 200 after " + ", ".join(f"{t:.3f}s" for t in serve), file=sys.stderr)
    for n, run in enumerate(runs, 1):
        workers = ", ".join(f"{w['rss_mb']:.1f} MB RSS / {w['pss_mb']:.1f} MB PSS"
                            for w in run["workers"])
        print(f"run {n}: first 200 after {run['first_200_s']:.3f}s, first servers after "
              f"{run['first_servers_s']:.3f}s; workers: {workers}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
