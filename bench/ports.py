"""Free loopback ports for the servers the benchmarks and the test suite start.

Alone, a port is whatever the kernel hands out for a bind to port 0: free now, and
bound by the server a moment later. When the test suite is spread over several
processes (pytest-xdist, which names each in ``PYTEST_XDIST_WORKER``: gw0, gw1, ...),
two of them could be handed the same port in that moment; each then takes its ports
from a range of its own, below the kernel's ephemeral range (32768 and up on Linux), so
that neither the other worker nor an outgoing connection can be given the same one.
"""

from __future__ import annotations

import os
import random
import socket

WORKER_PORTS_FROM = 10_000     # worker n takes its ports from FROM + n * SPAN on
WORKER_PORTS_SPAN = 5_000
WORKER_PORTS_MAX_WORKERS = 4   # 10,000-29,999: below the ephemeral range
_handed: set[int] = set()      # ports this process gave out (not given twice)


def _bound(port: int) -> int | None:
    """The loopback port a bind to ``port`` got (0: the kernel's pick), released at once;
    None if something holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return None
        return s.getsockname()[1]


def free_port() -> int:
    """A TCP port on loopback that nothing is bound to right now."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    number = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None
    if number is None or number >= WORKER_PORTS_MAX_WORKERS:
        port = _bound(0)
        if port is None:
            raise OSError("no free loopback port")
        return port
    first = WORKER_PORTS_FROM + number * WORKER_PORTS_SPAN
    candidates = [p for p in range(first, first + WORKER_PORTS_SPAN) if p not in _handed]
    random.shuffle(candidates)
    for port in candidates:
        if _bound(port) is not None:
            _handed.add(port)
            return port
    raise OSError(f"no free loopback port in {first}-{first + WORKER_PORTS_SPAN - 1}")
