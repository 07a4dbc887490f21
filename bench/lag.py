"""End-to-end lag: from a commit in the cell database to the change being visible in
the replica the API answers from.

How the samples are taken, and why they are accurate:
- a marker thread commits, at a fixed rate, a new display_name ("lagmark-<n>") on one of
  a set of marker servers in the cell database (the cell's own triggers put it in the
  outbox, the publisher builds and publishes the entity, ingest applies it), and notes
  the monotonic time right after the commit returned;
- a poller thread reads the marker servers' rows from the replica with one indexed
  read-only statement every POLL_INTERVAL_S (the same committed bytes the API serves)
  and notes the monotonic time at which each marker first shows;
- a server has at most one marker in flight, so a marker is never overwritten before
  it is seen; several marker servers keep many samples in flight at any rate;
- both times come from the same clock in the same process; the resolution is one poll
  (reported), and the GIL switch interval is shortened so neither thread waits on the
  other for long.
The API itself is checked too: after the run the last marker of one server must be what
GET /servers/{id} returns.
"""

from __future__ import annotations

import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

POLL_INTERVAL_S = 0.0005
MARKER_TIMEOUT_S = 15.0       # a marker not seen by then is counted as lost
MARKER_PREFIX = "lagmark-"


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[rank]


@dataclass
class LagSamples:
    lags_ms: list[float] = field(default_factory=list)
    lost: int = 0
    sent: int = 0
    gone: int = 0          # marker servers the churn archived meanwhile
    commit_ms: list[float] = field(default_factory=list)   # how long each marker commit took
    polls: int = 0
    poll_ms: list[float] = field(default_factory=list)     # duration of a sample of polls

    def summary(self) -> dict:
        return {"samples": len(self.lags_ms), "sent": self.sent, "lost": self.lost,
                "marker_servers_archived": self.gone,
                "p50_ms": percentile(self.lags_ms, 50), "p90_ms": percentile(self.lags_ms, 90),
                "p99_ms": percentile(self.lags_ms, 99), "max_ms": max(self.lags_ms, default=None),
                "mean_ms": statistics.fmean(self.lags_ms) if self.lags_ms else None,
                "commit_p50_ms": percentile(self.commit_ms, 50),
                "poll_p50_ms": percentile(self.poll_ms, 50), "polls": self.polls}


def measure(cell_path: str, replica_path: str, marker_uuids: list[str], duration_s: float,
            markers_per_s: float) -> LagSamples:
    """Commit markers for ``duration_s`` and collect how long each took to show."""
    from replica.cell.connection import open_cell
    from replica.store.connection import open_reader

    marker_uuids = list(marker_uuids)
    samples = LagSamples()
    pending: dict[str, tuple[str, float]] = {}     # uuid -> (marker, committed_at)
    lock = threading.Lock()
    stop = threading.Event()
    writer_done = threading.Event()
    errors: list[BaseException] = []

    def poll() -> None:
        conn = open_reader(replica_path)
        try:
            while True:
                with lock:
                    waiting = dict(pending)
                if not waiting:
                    if writer_done.is_set():
                        return
                    time.sleep(POLL_INTERVAL_S)
                    continue
                started = time.monotonic()
                marks = ", ".join("?" * len(waiting))
                rows = conn.execute(f"SELECT uuid, display_name FROM servers WHERE uuid IN ({marks})",
                                    tuple(waiting)).fetchall()
                seen_at = time.monotonic()
                samples.polls += 1
                if samples.polls % 64 == 0:
                    samples.poll_ms.append((seen_at - started) * 1000)
                with lock:
                    for uuid, name in rows:
                        entry = pending.get(uuid)
                        if entry and name == entry[0]:
                            samples.lags_ms.append((seen_at - entry[1]) * 1000)
                            del pending[uuid]
                    for uuid, (_marker, committed) in list(pending.items()):
                        if seen_at - committed > MARKER_TIMEOUT_S:
                            samples.lost += 1
                            del pending[uuid]
                time.sleep(POLL_INTERVAL_S)
        except BaseException as exc:  # reported by measure()
            errors.append(exc)
        finally:
            conn.close()

    def write() -> None:
        conn = open_cell(cell_path)
        rng = random.Random(7)
        try:
            interval = 1.0 / markers_per_s
            next_at = time.monotonic()
            end = next_at + duration_s
            n = 0
            while time.monotonic() < end and not stop.is_set():
                with lock:
                    free = [u for u in marker_uuids if u not in pending]
                if free:
                    uuid = rng.choice(free)
                    n += 1
                    marker = f"{MARKER_PREFIX}{n}"
                    began = time.monotonic()
                    conn.execute("UPDATE instances SET display_name = ?, "
                                 "updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') "
                                 "WHERE uuid = ?", (marker, uuid))
                    committed = time.monotonic()
                    if conn.changes() == 0:
                        # The churn archived this server: no event, no sample; use the others.
                        marker_uuids.remove(uuid)
                        samples.gone += 1
                    else:
                        samples.commit_ms.append((committed - began) * 1000)
                        with lock:
                            pending[uuid] = (marker, committed)
                        samples.sent += 1
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # reported by measure()
            errors.append(exc)
        finally:
            conn.close()
            writer_done.set()

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        poller = threading.Thread(target=poll, name="lag-poller", daemon=True)
        writer = threading.Thread(target=write, name="lag-writer", daemon=True)
        poller.start()
        writer.start()
        writer.join(duration_s + 30)
        poller.join(MARKER_TIMEOUT_S + 30)
        stop.set()
    finally:
        sys.setswitchinterval(old_interval)
    if errors:
        raise errors[0]
    return samples
