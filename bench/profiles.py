"""How big and how long: the full run, the quick run, and what a unit test shrinks them to."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace


def all_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class Profile:
    name: str
    # Read path: the matrix, measured on a replica of read_servers servers.
    read_servers: int
    read_endpoints: tuple[str, ...]          # keys of bench.endpoints.ENDPOINTS
    read_workers: tuple[int, ...]
    read_connections: tuple[int, ...]
    read_duration_s: float
    scatter_cells: int = 4
    # Scaling: each read figure at each replica size (all workers, one connection count).
    scaling_sizes: tuple[int, ...] = ()
    scaling_endpoints: tuple[str, ...] = ()
    scaling_connections: int = 8
    scaling_duration_s: float = 3.0
    # The largest size goes to a stack of the smallest beside it this many times, each
    # request to one then the other in interleaved rounds; the median round counts
    # (bench/pairs.py).
    pair_rounds: int = 1
    # Routes beyond servers (bench/routes.py): keys of its ROUTES (None: every one), each
    # against its baselines at these connection counts (read stack, the read matrix's
    # largest worker count), and at every scaling size.
    route_keys: tuple[str, ...] | None = None
    route_connections: tuple[int, ...] = (8,)
    # At the connection counts its budget holds at, a route goes to the appliance and to
    # the constant body in turn this many times (runs of route_round_duration_s), and
    # the round with the median ratio counts: one run each swings by a fifth from minute
    # to minute on a shared machine, the median of interleaved rounds much less.
    route_rounds: int = 1
    route_round_duration_s: float = 3.0
    # Replication.
    ingest_events: int = 20_000
    ingest_batch: int = 500
    # The ingest rate again on a replica already holding this many other servers (0: not
    # measured): an update's cost grows with the replica (bench/README.md, ingest).
    ingest_held: int = 0
    lag_rates: tuple[int, ...] = (2000,)
    lag_duration_s: float = 5.0
    lag_markers_per_s: float = 50.0
    resync_sizes: tuple[int, ...] = ()
    # Background read load while lag and resync are measured (paced, not saturating).
    background_connections: int = 4
    background_delay_ms: int = 2
    projects: int = 20
    # Edge endpoint: replicated reads with auth = keystone and with TLS against noauth over
    # plain HTTP, and pass-through against calling the upstream directly, on the read stack.
    edge_endpoints: tuple[str, ...] = ("show", "detail100")
    edge_connections: int = 8
    edge_duration_s: float = 5.0
    edge_rounds: int = 3                     # reads: interleaved, the best run of each counts;
                                             # pass-through: sampled edge_rounds x duration
    edge_nova_api: bool = True               # also a real nova-api upstream (side environment)
    # A Nova cell on MariaDB published through the binlog (bench/mariadb_cell.py).
    mariadb_servers: int = 100_000
    mariadb_rates: tuple[int, ...] = (200, 1000)
    mariadb_duration_s: float = 20.0
    mariadb_markers: int = 2000
    # Real nova-api against the appliance on the same Nova databases (side environment):
    # servers written by Nova's objects (about 15-50 a second), wrk at one connection count.
    novaapi_servers: int = 2_000
    novaapi_endpoints: tuple[str, ...] = ("show", "detail100", "detail1000")
    novaapi_connections: int = 8
    # Scenarios a run leaves out unless asked for by name (--only).
    left_out: tuple[str, ...] = ()

    def sizes(self) -> list[int]:
        """Every replica size an environment is built for, smallest first."""
        return sorted({self.read_servers, *self.scaling_sizes, *self.resync_sizes})

    def shrunk(self, **changes) -> "Profile":
        return replace(self, **changes)


FULL = Profile(
    name="full",
    read_servers=10_000,
    read_endpoints=("show", "list100", "detail100", "detail1000", "filtered"),
    read_workers=tuple(sorted({1, all_workers()})),
    read_connections=(1, 8, 64),
    read_duration_s=5.0,
    scaling_sizes=(1_000, 10_000, 100_000, 1_000_000),
    scaling_endpoints=("show", "list100", "detail100", "detail1000", "filtered"),
    scaling_duration_s=5.0,
    pair_rounds=5,
    route_connections=(1, 8, 64),
    route_rounds=3,
    ingest_events=200_000,
    ingest_held=200_000,
    lag_rates=(500, 2000, 10_000),
    lag_duration_s=20.0,
    resync_sizes=(10_000, 100_000),
)

QUICK = Profile(
    name="quick",
    read_servers=10_000,
    read_endpoints=("show", "detail100"),
    read_workers=(min(2, all_workers()),),
    read_connections=(8,),
    read_duration_s=3.0,
    scaling_sizes=(1_000, 10_000),
    scaling_endpoints=("show", "detail100"),
    scaling_duration_s=2.0,
    ingest_events=20_000,
    lag_rates=(2000,),
    lag_duration_s=4.0,
    resync_sizes=(10_000,),
    edge_duration_s=3.0,
    mariadb_servers=10_000,
    mariadb_duration_s=5.0,
    novaapi_servers=1_000,
    novaapi_endpoints=("show", "detail1000"),
    # Keystone's set-up alone (db_sync, fernet keys, bootstrap) takes about half a minute;
    # Nova's databases on MariaDB about as long; writing servers with Nova's objects, a
    # minute or more.
    left_out=("edge", "mariadb", "novaapi"),
)

PROFILES = {"full": FULL, "quick": QUICK}
