"""Prometheus metrics: request latency from the workers, ingest figures for the admin.

Workers record into prometheus_client's multiprocess mode (one mmap file per process in
``<data_dir>/metrics``); the admin listener merges those files and adds, at scrape time,
the ingest's figures (read from its status), the supervised processes (``process_*`` per
process, labelled ``process`` and ``role``, read from /proc for each pid of the process
table, and restarts), readiness and ``appliance_build_info``.

Units are Prometheus' base units: seconds, bytes; counters end in ``_total``
(``promtool check metrics`` is clean, see tests/appliance/test_monitoring.py).
"""

from __future__ import annotations

import bisect
import os

from prometheus_client import (CollectorRegistry, Histogram, ProcessCollector, generate_latest,
                               multiprocess, values)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from replica.kinds import KINDS

# A read is well under a millisecond: the low buckets tell 100 us from 250 us.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025,
                   0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CELL_STATES = ("connecting", "catching_up", "live", "resyncing", "stale")
# Path segments kept as they are in the endpoint label; any other segment (ids,
# project ids, names) becomes "{id}", so the label's cardinality stays bounded.
ENDPOINT_WORDS = frozenset({"v2", "v2.1", "servers", "detail", "flavors", "os-extra_specs",
                            "ips", "metadata", "tags", "limits", "extensions",
                            "os-availability-zone", "os-instance-actions", "flavors",
                            "os-flavor-access", "os-server-groups"})

ENDPOINT_CACHE = 4096           # paths remembered with their endpoint label


def use_directory(path: str) -> None:
    """Switch this process to multiprocess mode writing into ``path``. Call it after the
    fork and before any metric is created (prometheus_client picks the value class
    when a metric is constructed)."""
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    values.ValueClass = values.MultiProcessValue()


def clear_directory(path: str) -> None:
    """At supervisor start: files left by an earlier run would be merged in."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))


def mark_dead(path: str, pid: int) -> None:
    """Drop a dead worker's live gauges (its counters and histograms stay summed in)."""
    for name in os.listdir(path):
        if name.startswith("gauge_live") and name.endswith(f"_{pid}.db"):
            os.unlink(os.path.join(path, name))


def endpoint(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    shaped = [p if p in ENDPOINT_WORDS else "{id}" for p in parts]
    # "/v2.1/{project_id}/servers" and "/v2.1/servers" are the same endpoint.
    if len(shaped) > 2 and shaped[0] in ("v2", "v2.1") and shaped[1] == "{id}" \
            and shaped[2] in ENDPOINT_WORDS:
        del shaped[1]
    return "/" + "/".join(shaped)


class LatencyRecorder:
    """Request latencies, counted in plain lists on the request path and folded into the
    (multiprocess, mmap-backed) histogram by ``flush`` about once a second: an observe
    straight into the histogram costs several microseconds a request, this well under
    one."""

    def __init__(self):
        self.histogram = Histogram(
            "appliance_api_request_seconds", "Compute API request latency (worker side).",
            ("method", "endpoint", "status"), buckets=LATENCY_BUCKETS)
        self.bounds = tuple(LATENCY_BUCKETS) + (float("inf"),)
        self.pending: dict[tuple[str, str, str], list] = {}
        self.endpoints: dict[str, str] = {}    # path -> label
        self.children: dict[str, str] = {}     # parent path -> label of "<parent>/<id>"

    def endpoint_of(self, path: str) -> str:
        # Most paths end in an id ("/v2.1/servers/<uuid>"): their label is the parent's
        # plus "/{id}", remembered per parent, so a new id costs a split and a lookup.
        head, _, last = path.rpartition("/")
        if last and last not in ENDPOINT_WORDS:
            shaped = self.children.get(head)
            if shaped is None:
                parent = self.endpoint_of(head) if head else "/"
                shaped = "/{id}" if parent == "/" else parent + "/{id}"
                if len(self.children) >= ENDPOINT_CACHE:
                    self.children.clear()
                self.children[head] = shaped
            return shaped
        shaped = self.endpoints.get(path)
        if shaped is None:
            if len(self.endpoints) >= ENDPOINT_CACHE:
                self.endpoints.clear()
            shaped = self.endpoints[path] = endpoint(path)
        return shaped

    def observe(self, method: str, path: str, status: str, seconds: float) -> None:
        key = (method, self.endpoint_of(path), status)
        row = self.pending.get(key)
        if row is None:
            row = self.pending[key] = [0] * len(self.bounds) + [0.0]
        row[bisect.bisect_left(self.bounds, seconds)] += 1
        row[-1] += seconds

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for key, row in pending.items():
            child = self.histogram.labels(*key)
            # The histogram keeps one (non-cumulative) count per bucket and a sum;
            # add ours to them (prometheus_client's Histogram layout, pinned version).
            for index, count in enumerate(row[:-1]):
                if count:
                    child._buckets[index].inc(count)
            child._sum.inc(row[-1])


_recorder: LatencyRecorder | None = None


def recorder() -> LatencyRecorder:
    global _recorder
    if _recorder is None:
        _recorder = LatencyRecorder()
    return _recorder


class IngestCollector:
    """Turns one ingest status (``IngestClient.status()``) into metric families."""

    def __init__(self, status: dict | None):
        self.status = status

    def collect(self):
        up = GaugeMetricFamily("appliance_ingest_up", "1 if the ingest process answered.")
        up.add_metric([], 1.0 if self.status else 0.0)
        yield up
        if not self.status:
            return
        applied = CounterMetricFamily("appliance_ingest_events_applied",
                                      "Feed events applied to the replica.")
        applied.add_metric([], self.status.get("events_applied", 0))
        yield applied
        dead = CounterMetricFamily("appliance_ingest_dead_letters",
                                   "Messages refused, whatever their feed.")
        dead.add_metric([], self.status.get("dead_letters", 0))
        yield dead
        for name, doc, value in (
                ("appliance_ingest_store_failing", "1 while commits to the replica store fail.",
                 self.status.get("store_failing_since") is not None),
                ("appliance_ingest_disk_full", "1 while the replica store's disk is full.",
                 bool(self.status.get("disk_full")))):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], 1.0 if value else 0.0)
            yield family
        for name, doc, key in (
                ("appliance_ingest_wal_bytes",
                 "Size of the replica's write-ahead log after the last commit.", "wal_bytes"),
                ("appliance_ingest_wal_backlog_bytes",
                 "Bytes of the write-ahead log not yet copied back into the replica file; "
                 "reads are slower while it is large (after a first load or a big resync).",
                 "wal_backlog_bytes")):
            if key in self.status:
                family = GaugeMetricFamily(name, doc)
                family.add_metric([], self.status[key])
                yield family
        batches = CounterMetricFamily("appliance_ingest_batches_committed",
                                      "Transactions committed by ingest.")
        batches.add_metric([], self.status.get("batches_committed", 0))
        yield batches
        # status key -> (family, factor to the base unit)
        per_cell = {
            "lag_ms": (GaugeMetricFamily(
                "appliance_cell_lag_seconds",
                "How long the replica has been behind the cell's announced head "
                "(0 when caught up).", labels=["cell"]), 0.001),
            "lag_events": (GaugeMetricFamily("appliance_cell_lag_events",
                                             "Head seq minus applied seq.", labels=["cell"]), 1),
            "seq": (GaugeMetricFamily("appliance_cell_seq", "Applied seq.", labels=["cell"]), 1),
            "head": (GaugeMetricFamily("appliance_cell_head_seq", "Head seq last announced.",
                                       labels=["cell"]), 1),
            # the rows of each kind the feed owns (replica.kinds)
            **{kind.count_label: (GaugeMetricFamily(kind.metric_name, kind.count_help,
                                                    labels=["cell"]), 1)
               for kind in KINDS.values()},
            "last_event_at": (GaugeMetricFamily(
                "appliance_cell_last_event_timestamp_seconds",
                "Unix time the newest event of the cell was applied.", labels=["cell"]), 1),
            "state_since": (GaugeMetricFamily(
                "appliance_cell_state_since_timestamp_seconds",
                "Unix time the cell entered its current state.", labels=["cell"]), 1),
            "live_once": (GaugeMetricFamily(
                "appliance_cell_live_once",
                "1 once the cell has been live since ingest started.", labels=["cell"]), 1),
        }
        counters = {
            "gaps": CounterMetricFamily("appliance_cell_gaps", "Gaps detected.",
                                        labels=["cell"]),
            "replays": CounterMetricFamily("appliance_cell_replays", "Replays run.",
                                           labels=["cell"]),
            "resyncs": CounterMetricFamily("appliance_cell_resyncs", "Resyncs run.",
                                           labels=["cell"]),
            "resync_failures": CounterMetricFamily("appliance_cell_resync_failures",
                                                   "Resyncs that failed.", labels=["cell"]),
            "dead_letters": CounterMetricFamily("appliance_cell_dead_letters",
                                                "Messages refused.", labels=["cell"]),
        }
        state = GaugeMetricFamily("appliance_cell_state", "1 for the cell's current state.",
                                  labels=["cell", "state"])
        for cell in self.status.get("cells", ()):
            name = str(cell.get("cell"))
            for key, (family, factor) in per_cell.items():
                value = cell.get(key)
                if isinstance(value, (int, float)):
                    family.add_metric([name], float(value) * factor)
            for key, family in counters.items():
                value = cell.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    family.add_metric([name], value)
            for option in CELL_STATES:
                state.add_metric([name, option], 1.0 if cell.get("state") == option else 0.0)
        yield from (family for family, _ in per_cell.values())
        yield from counters.values()
        yield state


class _ProcessReader(ProcessCollector):
    """prometheus_client's process collector for one pid, outside any registry."""

    def __init__(self, pid: int):
        super().__init__(pid=lambda: pid, registry=None)


class ProcessesCollector:
    """``process_*`` for every process of the appliance (the supervisor and each child of
    its process table), labelled ``process`` (the slot: "worker 1", "ingest", ...) and
    ``role``; and each child's restarts. The appliance is several processes, so one
    unlabelled ``process_*`` set would describe only the one that answers the scrape."""

    def __init__(self, table: dict | None):
        self.table = table or {}

    def _processes(self):
        supervisor = self.table.get("supervisor") or {}
        if supervisor.get("pid"):
            yield "supervisor", "supervisor", supervisor["pid"]
        for process in self.table.get("processes") or ():
            if process.get("pid"):
                yield str(process.get("name")), str(process.get("role")), process["pid"]

    def collect(self):
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, role, pid in self._processes():
            for found in _ProcessReader(pid).collect():
                family = families.get(found.name)
                if family is None:
                    kind = CounterMetricFamily if found.type == "counter" else \
                        GaugeMetricFamily
                    family = families[found.name] = kind(
                        found.name, found.documentation + " Per process of the appliance.",
                        labels=["process", "role"])
                for sample in found.samples:
                    if sample.name.endswith("_created"):
                        continue
                    family.add_metric([name, role], sample.value)
        yield from families.values()
        restarts = CounterMetricFamily("appliance_process_restarts",
                                       "Times the supervisor restarted this child.",
                                       labels=["process", "role"])
        for process in self.table.get("processes") or ():
            restarts.add_metric([str(process.get("name")), str(process.get("role"))],
                                process.get("restarts") or 0)
        yield restarts


_build_labels: dict[str, str] | None = None

BUILD_INFO_KEYS = ("appliance", "python", "sqlite", "apsw", "gevent", "libnanomsg")


def build_labels() -> dict[str, str]:
    global _build_labels
    if _build_labels is None:
        from appliance import about
        found = about.versions()
        _build_labels = {("version" if k == "appliance" else k): str(found.get(k, "unknown"))
                         for k in BUILD_INFO_KEYS}
    return _build_labels


class ApplianceCollector:
    """``appliance_build_info`` and ``appliance_ready``."""

    def __init__(self, ready: bool | None):
        self.ready = ready

    def collect(self):
        labels = build_labels()
        info = GaugeMetricFamily("appliance_build_info",
                                 "Always 1; the labels say which build runs.",
                                 labels=list(labels))
        info.add_metric(list(labels.values()), 1.0)
        yield info
        if self.ready is not None:
            ready = GaugeMetricFamily("appliance_ready",
                                      "1 when /readyz answers 200 (every cell live once "
                                      "and within readyz_max_lag_ms).")
            ready.add_metric([], 1.0 if self.ready else 0.0)
            yield ready


def render(directory: str, ingest_status: dict | None, table: dict | None = None,
           ready: bool | None = None) -> bytes:
    """The Prometheus text exposition: merged worker metrics, ingest figures, the
    processes, readiness and build info."""
    registry = CollectorRegistry()
    if os.path.isdir(directory):
        multiprocess.MultiProcessCollector(registry, path=directory)
    registry.register(IngestCollector(ingest_status))
    registry.register(ProcessesCollector(table))
    registry.register(ApplianceCollector(ready))
    return generate_latest(registry)
