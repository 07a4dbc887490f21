"""Which binlog rows change which entities (the key mapping of the MariaDB/MySQL
source; ``binlog.py`` reads the stream and journals what this module makes of it).

Direct keys (``KEY_MAP``): ``instances.uuid`` and the instance child tables'
instance uuid columns give ``server`` keys, before and after image both (a row
moved from one key to another changes both); ``flavors.flavorid`` gives
``flavor`` keys. Of these tables' rows only the key column (and, for the commit
wait, the primary key) is read from the binlog (``binlog_rows.py``); the rows of
the fan-out tables are decoded whole. Fan-outs that need a lookup (``Lookups``: plain SELECTs on
connections of their own, made when the transaction is journaled, so the state
then, at least as new as the transaction): a nova-compute ``services`` row whose
host, disabled, forced_down or deleted changed, or whose report came more than
``service_down_time`` after the one before (a service coming up again), changes
every live instance on its host; a security group or a server group (API DB)
changes its members; a flavor extra spec or project row changes its flavor. A
``quotas`` or ``instance_groups`` row changes its project's quota key, a
``quota_classes`` row the defaults' (``quota`` kind, API database). An
``instance_actions`` row gives its ``instance_action`` key (instance uuid and id), an
``instance_actions_events`` row its action's (looked up by ``action_id``); a
``key_pairs`` row (API database) its ``keypair`` key (user id and name). A
``services`` row gives its ``service`` key (its uuid: every report too, os-services
and the zone detail show it); an ``aggregates``, ``aggregate_hosts`` or
``aggregate_metadata`` row (API database) its ``aggregate`` key (the aggregate's id).
An ``instance_groups`` row (API database) gives its
``server_group`` key (its uuid), an ``instance_group_policy`` or
``instance_group_member`` row its group's (looked up by ``group_id``).

A compute service that stops reporting changes its servers' host_status with no
write at all: ``LivenessWatch`` tells the tailer when a last report grows older
than ``service_down_time``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import pymysql
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from replica.cell import mysql
from replica.cell.binlog_rows import column_images
from replica.feed import (KIND_HYPERVISOR, KIND_INSTANCE_ACTION, KIND_KEYPAIR, KIND_QUOTA,
                          KIND_SERVER_GROUP, KIND_SERVICE, QUOTA_DEFAULT_KEY,
                          instance_action_key, keypair_key, quota_key)

SERVICE_DOWN_TIME_S = 60       # Nova's service_down_time default
COMMIT_WAIT_TIMEOUT_S = 10     # a locking read waits this long for a commit (then goes on)
ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)

# (database role, table) -> (kind, key column). Role "cell": the cell database;
# "api": Nova's API database.
KEY_MAP = {
    ("cell", "instances"): ("server", "uuid"),
    ("cell", "instance_extra"): ("server", "instance_uuid"),
    ("cell", "instance_info_caches"): ("server", "instance_uuid"),
    ("cell", "instance_metadata"): ("server", "instance_uuid"),
    ("cell", "instance_system_metadata"): ("server", "instance_uuid"),
    ("cell", "block_device_mapping"): ("server", "instance_uuid"),
    ("cell", "instance_faults"): ("server", "instance_uuid"),
    ("cell", "security_group_instance_association"): ("server", "instance_uuid"),
    ("cell", "tags"): ("server", "resource_id"),
    ("api", "instance_mappings"): ("server", "instance_uuid"),
    ("api", "build_requests"): ("server", "instance_uuid"),
    ("api", "request_specs"): ("server", "instance_uuid"),
    ("api", "instance_group_member"): ("server", "instance_uuid"),
    ("api", "flavors"): ("flavor", "flavorid"),
    ("cell", "compute_nodes"): ("hypervisor", "uuid"),
    ("api", "aggregates"): ("aggregate", "id"),
    ("api", "aggregate_hosts"): ("aggregate", "aggregate_id"),
    ("api", "aggregate_metadata"): ("aggregate", "aggregate_id"),
}
# Tables whose rows change entities through a lookup (see KeyMapper.add).
FANOUT_TABLES = frozenset({
    ("cell", "services"), ("cell", "security_groups"), ("api", "instance_groups"),
    ("api", "instance_group_policy"), ("api", "flavor_extra_specs"), ("api", "flavor_projects"),
    ("cell", "instance_actions"), ("cell", "instance_actions_events"), ("api", "key_pairs"),
    ("api", "quotas"), ("api", "quota_classes"),
    ("api", "aggregates"), ("api", "aggregate_hosts"), ("api", "aggregate_metadata"),
})
# The tables the stream decodes at all (the stream filters by table name).
WATCHED_TABLES = sorted({table for _role, table in KEY_MAP} |
                        {table for _role, table in FANOUT_TABLES})
SERVICE_STATUS_COLUMNS = ("host", "disabled", "forced_down", "deleted")


@dataclass
class ChangedKeys:
    """What one source transaction changed: direct keys and pending fan-outs."""
    keys: list = field(default_factory=list)                 # [(kind, key)], in order
    service_hosts: set = field(default_factory=set)
    node_hosts: set = field(default_factory=set)             # their hypervisors changed
    security_groups: set = field(default_factory=set)
    server_groups: set = field(default_factory=set)
    flavor_ids: set = field(default_factory=set)
    action_ids: set = field(default_factory=set)             # instance actions' ids (events)
    group_ids: set = field(default_factory=set)              # server groups' ids (policy, members)
    service_reports: list = field(default_factory=list)    # [(host, last report or None)]
    api_servers: list = field(default_factory=list)        # server keys from API DB rows
    zones: bool = False         # the hosts' zones may have changed (API aggregates)
    # one row the transaction changed, (schema, table, ((column, value), ...)) of its
    # primary key: read with a lock before journaling (see Lookups.wait_committed)
    probe: tuple | None = None
    rows: int = 0


def _images(event) -> list[tuple[dict | None, dict | None]]:
    if isinstance(event, UpdateRowsEvent):
        return [(row["before_values"], row["after_values"]) for row in event.rows]
    if isinstance(event, WriteRowsEvent):
        return [(None, row["values"]) for row in event.rows]
    return [(row["values"], None) for row in event.rows]


def _report_time(row: dict):
    return row.get("last_seen_up") or row.get("updated_at") or row.get("created_at")


def _service_matters(before: dict | None, after: dict | None, down_time: float) -> bool:
    if not any(image and image.get("binary") == "nova-compute" for image in (before, after)):
        return False
    if before is None or after is None:
        return True
    if any(before.get(c) != after.get(c) for c in SERVICE_STATUS_COLUMNS):
        return True
    old, new = _report_time(before), _report_time(after)
    if old == new or down_time <= 0:        # no liveness rule: a report changes nothing
        return False
    if not isinstance(old, datetime.datetime) or not isinstance(new, datetime.datetime):
        return True
    return (new - old).total_seconds() > down_time


def _note_report(changed: ChangedKeys, before: dict | None, after: dict | None) -> None:
    """A compute service's last report as the row now says (None: no longer a live
    compute service), for the liveness watch."""
    if before is not None and before.get("binary") == "nova-compute" and before.get("host") \
            and (after is None or after.get("host") != before["host"]):
        changed.service_reports.append((before["host"], None))
    if after is not None and after.get("binary") == "nova-compute" and after.get("host"):
        live = not after.get("deleted")
        changed.service_reports.append((after["host"], _report_time(after) if live else None))


class LivenessWatch:
    """Nova counts a compute service as down (host_status ``UNKNOWN``) when its
    last report is older than ``service_down_time``, a change that no row
    records. The watch keeps each live compute service's last report (from the
    services table at start, then from the binlog's rows) and, once one's report
    grows older than ``service_down_time`` by this host's UTC clock (Nova's API
    compares with its own clock), says which hosts just crossed so that their
    servers are journaled again. A report after that brings the service up
    again: its servers are journaled with the report's transaction (and
    ``KeyMapper`` fans out any report that comes more than ``service_down_time``
    after the one before, which covers a service that went down while no tailer
    ran)."""

    def __init__(self, down_time: float, clock=None):
        self.down_time = down_time
        self.clock = clock or (lambda: datetime.datetime.now(datetime.timezone.utc
                                                             ).replace(tzinfo=None))
        self.reports: dict[str, datetime.datetime | None] = {}
        self.down: set[str] = set()
        self.loaded = False

    def load(self, rows) -> None:
        """``(host, last_seen_up, updated_at, created_at)`` of the live compute services."""
        for host, last_seen_up, updated_at, created_at in rows:
            report = last_seen_up or updated_at or created_at
            known = self.reports.get(host)
            if known is None or (report is not None and report > known):
                self.reports[host] = report
        self.loaded = True

    def note(self, host: str, report) -> bool:
        """A compute service's report as a row says it (None: gone). True when the
        service was counted down and is up again (its servers changed)."""
        if report is None:
            self.reports.pop(host, None)
            self.down.discard(host)
            return False
        known = self.reports.get(host)
        if isinstance(known, datetime.datetime) and isinstance(report, datetime.datetime) \
                and report < known:
            return False                         # a backlog older than what was loaded
        self.reports[host] = report
        if host in self.down and isinstance(report, datetime.datetime) and \
                (self.clock() - report).total_seconds() <= self.down_time:
            self.down.discard(host)
            return True
        return False

    def crossed(self) -> list[str]:
        """The hosts whose service went down since the last call."""
        now = self.clock()
        went = [host for host, report in self.reports.items()
                if host not in self.down and isinstance(report, datetime.datetime)
                and (now - report).total_seconds() > self.down_time]
        self.down.update(went)
        return sorted(went)


class KeyMapper:
    """Turns row events into ``ChangedKeys`` and resolves the fan-outs."""

    def __init__(self, cell_db: str, api_db: str | None, kinds=("server", "flavor"),
                 service_down_time: float = SERVICE_DOWN_TIME_S, own_servers_only: bool = False):
        self.own_servers_only = own_servers_only    # API rows: only this cell's servers
        self.roles = {cell_db: "cell"}
        if api_db:
            self.roles[api_db] = "api"
        self.kinds = frozenset(kinds)
        self.service_down_time = service_down_time
        self.zone_watch = None      # rechecks.ZoneWatch over the lookups, at first use

    def add(self, changed: ChangedKeys, event) -> None:
        role = self.roles.get(event.schema)
        if role is None:
            return
        table = event.table
        if "server" in self.kinds and role == "api" and table in _ZONE_TABLES:
            changed.zones = True
        mapped = KEY_MAP.get((role, table))
        if mapped is None and (role, table) not in FANOUT_TABLES:
            return                     # rows of other tables are not even decoded
        images = None
        grouped = (KIND_SERVER_GROUP in self.kinds and role == "api"
                   and table == "instance_group_member")
        if mapped is not None:         # only the key (and the probe's) columns are read
            names = {mapped[1]}
            if grouped:
                names.add("group_id")
            if changed.probe is None:
                names.update(_key_columns(event))
            images = column_images(event, names)
        if images is None:
            images = _images(event)
        changed.rows += len(images)
        if changed.probe is None and images:
            changed.probe = _probe_of(event, images[0])
        if grouped:
            for before, after in images:
                changed.group_ids.update(image["group_id"] for image in (before, after)
                                         if image is not None
                                         and image.get("group_id") is not None)
        if mapped is not None:
            kind, column = mapped
            if kind in self.kinds:
                # API database rows name servers of every cell: resolved against this
                # cell's instances when the transaction is journaled (own_servers_only)
                into = (changed.api_servers if self.own_servers_only and role == "api"
                        and kind == "server" else changed.keys)
                for before, after in images:
                    for image in (before, after):
                        if image is not None and image.get(column) is not None:
                            into.append((kind, str(image[column])))
            # (no return: another kind may key the same table, e.g. service)
        if KIND_SERVICE in self.kinds and role == "cell" and table == "services":
            for before, after in images:
                for image in (before, after):
                    if image is not None and image.get("uuid"):
                        changed.keys.append((KIND_SERVICE, str(image["uuid"])))
        if "server" in self.kinds and role == "cell" and table == "services":
            for before, after in images:
                _note_report(changed, before, after)
                if _service_matters(before, after, self.service_down_time):
                    changed.service_hosts.update(
                        image["host"] for image in (before, after)
                        if image is not None and image.get("host"))
                if KIND_HYPERVISOR in self.kinds and (
                        _service_matters(before, after, self.service_down_time) or (
                            before is not None and after is not None
                            and after.get("binary") == "nova-compute"
                            and before.get("disabled_reason") != after.get("disabled_reason"))):
                    changed.node_hosts.update(
                        image["host"] for image in (before, after)
                        if image is not None and image.get("host"))
        elif "server" in self.kinds and role == "cell" and table == "security_groups":
            for before, after in images:
                if before is None or after is None or any(
                        before.get(c) != after.get(c) for c in ("name", "deleted")):
                    changed.security_groups.add((before or after)["id"])
        elif "server" in self.kinds and role == "api" and table == "instance_groups":
            for before, after in images:
                if before is not None:
                    changed.server_groups.add(before["id"])
        elif "server" in self.kinds and role == "api" and table == "instance_group_policy":
            for before, after in images:
                changed.server_groups.update(image["group_id"] for image in (before, after)
                                             if image is not None)
        elif KIND_INSTANCE_ACTION in self.kinds and role == "cell" \
                and table == "instance_actions":
            for before, after in images:
                for image in (before, after):
                    if image is not None and image.get("instance_uuid") is not None:
                        changed.keys.append((KIND_INSTANCE_ACTION, instance_action_key(
                            str(image["instance_uuid"]), int(image["id"]))))
        elif KIND_INSTANCE_ACTION in self.kinds and role == "cell" \
                and table == "instance_actions_events":
            for before, after in images:
                changed.action_ids.update(image["action_id"] for image in (before, after)
                                          if image is not None
                                          and image.get("action_id") is not None)
        elif KIND_KEYPAIR in self.kinds and role == "api" and table == "key_pairs":
            for before, after in images:
                for image in (before, after):
                    if image is not None and image.get("user_id") is not None:
                        changed.keys.append((KIND_KEYPAIR, keypair_key(
                            str(image["user_id"]), str(image["name"]))))
        elif "flavor" in self.kinds and role == "api" and table in (
                "flavor_extra_specs", "flavor_projects"):
            for before, after in images:
                changed.flavor_ids.update(image["flavor_id"] for image in (before, after)
                                          if image is not None)
        if KIND_SERVER_GROUP in self.kinds and role == "api":
            if table == "instance_groups":
                for before, after in images:
                    changed.keys += [(KIND_SERVER_GROUP, str(image["uuid"]))
                                     for image in (before, after)
                                     if image is not None and image.get("uuid") is not None]
            elif table == "instance_group_policy":
                for before, after in images:
                    changed.group_ids.update(image["group_id"] for image in (before, after)
                                             if image is not None
                                             and image.get("group_id") is not None)
        if KIND_QUOTA in self.kinds and role == "api":
            if table in ("quotas", "instance_groups"):
                for before, after in images:
                    changed.keys += [(KIND_QUOTA, quota_key(str(image["project_id"])))
                                     for image in (before, after) if image is not None
                                     and image.get("project_id") is not None]
            elif table == "quota_classes":
                changed.keys.append((KIND_QUOTA, QUOTA_DEFAULT_KEY))

    def zones_of(self, lookups: "Lookups"):
        """The hosts' zones as last read (``rechecks.ZoneWatch``): read again after each
        transaction that touches the aggregates, so a host's servers are journaled with
        the transaction that moved the host into or out of a zone."""
        if self.zone_watch is None:
            from replica.cell.rechecks import ZoneWatch
            self.zone_watch = ZoneWatch(lambda sql, params=(): lookups.cell(sql, params),
                                        lambda sql, params=(): lookups.api(sql, params))
        return self.zone_watch

    def look_at_zones(self, lookups: "Lookups") -> None:
        """Read the hosts' zones once (what entities built from now on show), so that the
        first aggregate change is compared with them; quiet while there is no API
        database (yet)."""
        self.zone_watch = None      # (a new connection: read through it)
        if "server" not in self.kinds or lookups.api is None:
            return
        try:
            self.zones_of(lookups).changed_servers()
        except (pymysql.err.ProgrammingError, pymysql.err.OperationalError):
            self.zone_watch = None

    def resolve(self, changed: ChangedKeys, lookups: "Lookups") -> list[tuple[str, str]]:
        keys = list(changed.keys)
        if changed.api_servers:
            # A server another cell owns is not this cell's to publish (its tombstone
            # here would be noise); one of this cell's that is gone from its instances
            # was published gone when its row went.
            mine = lookups.cell_instances({key for _kind, key in changed.api_servers})
            keys += [(kind, key) for kind, key in changed.api_servers if key in mine]
        if changed.service_hosts:
            keys += [("server", u) for u in lookups.live_instances_on(changed.service_hosts)]
        if changed.zones:
            keys += [("server", u) for u in self.zones_of(lookups).changed_servers()]
        if changed.node_hosts or (changed.service_hosts and KIND_HYPERVISOR in self.kinds):
            keys += [(KIND_HYPERVISOR, u) for u in lookups.compute_nodes_on(
                changed.node_hosts | changed.service_hosts)]
        if changed.security_groups:
            keys += [("server", u) for u in lookups.security_group_members(changed.security_groups)]
        if changed.server_groups:
            keys += [("server", u) for u in lookups.server_group_members(changed.server_groups)]
        if changed.flavor_ids:
            keys += [("flavor", f) for f in lookups.flavorids(changed.flavor_ids)]
        if changed.action_ids:
            keys += [(KIND_INSTANCE_ACTION, k) for k in lookups.action_keys(changed.action_ids)]
        if changed.group_ids:
            keys += [(KIND_SERVER_GROUP, k) for k in lookups.group_uuids(changed.group_ids)]
        return keys


# API database tables whose rows place hosts into zones.
_ZONE_TABLES = ("aggregate_hosts", "aggregate_metadata", "aggregates")


def _key_columns(event) -> tuple[str, ...]:
    """The event's table's primary key columns (none: an empty tuple)."""
    key = getattr(event, "primary_key", None)
    return (key,) if isinstance(key, str) and key else tuple(key or ())


def _probe_of(event, images: tuple) -> tuple | None:
    """The primary key of a changed row (its after image, else its before image)."""
    columns = _key_columns(event)
    image = images[1] if images[1] is not None else images[0]
    if not columns or image is None or any(column not in image for column in columns):
        return None
    return (event.schema, event.table, tuple((column, image[column]) for column in columns))


def _marks(values) -> str:
    return ", ".join("?" * len(values))


class Lookups:
    """The fan-out SELECTs, on plain connections of their own (autocommit: each
    statement sees the latest committed state)."""

    def __init__(self, cell_url: mysql.MySQLURL, api_url: mysql.MySQLURL | None):
        self.urls = {"cell": cell_url, "api": api_url}
        self.conns: dict = {}
        self.rows: dict = {}

    def _rows(self, role: str):
        """The database's rows adapter, connected at first use (the stream may
        start before Nova's databases exist)."""
        if role not in self.rows:
            if self.urls[role] is None:
                return None
            self.conns[role] = mysql.connect(self.urls[role])
            self.rows[role] = mysql.Rows(self.conns[role])
        return self.rows[role]

    @property
    def cell(self):
        return self._rows("cell")

    def wait_committed(self, probe: tuple) -> None:
        """Wait until the transaction that changed the row ``probe`` names is visible.

        MariaDB sends a transaction to binlog readers once it is in the binlog, which
        is before its InnoDB commit: a snapshot opened right away may not see it yet, and
        an entity built from it would miss the change for good. The transaction keeps
        its row locks until its InnoDB commit, so a locking read of one of its rows
        returns only after that (READ COMMITTED: no gap locks; SELECT is the only grant
        it needs)."""
        if "lock" not in self.conns:
            conn = mysql.connect(self.urls["cell"], select_database=False)
            with conn.cursor() as cursor:
                cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                cursor.execute("SET SESSION innodb_lock_wait_timeout = %s",
                               (COMMIT_WAIT_TIMEOUT_S,))
            self.conns["lock"] = conn
        schema, table, key = probe
        where = " AND ".join(f"`{column}` = %s" for column, _value in key)
        with self.conns["lock"].cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM `{schema}`.`{table}` WHERE {where} "
                           "LOCK IN SHARE MODE", tuple(value for _column, value in key))
            cursor.fetchall()

    @property
    def api(self):
        return self._rows("api")

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()
        self.rows.clear()

    def live_instances_on(self, hosts) -> list[str]:
        hosts = sorted(hosts)
        return [row[0] for row in self.cell(
            f"SELECT uuid FROM instances WHERE host IN ({_marks(hosts)}) AND deleted = 0 "
            "ORDER BY id", hosts)]

    def compute_nodes_on(self, hosts) -> list[str]:
        """The live compute nodes (hypervisor keys) of ``hosts``."""
        hosts = sorted(hosts)
        if not hosts:
            return []
        try:
            return [str(row[0]) for row in self.cell(
                f"SELECT uuid FROM compute_nodes WHERE host IN ({_marks(hosts)}) "
                "AND deleted = 0 AND uuid IS NOT NULL ORDER BY id", hosts)]
        except mysql.pymysql.err.ProgrammingError:      # no compute_nodes table
            return []

    def cell_instances(self, uuids) -> set[str]:
        """Which of ``uuids`` have an instances row in the cell database."""
        uuids = sorted(uuids)
        found: set[str] = set()
        for start in range(0, len(uuids), 500):
            chunk = uuids[start:start + 500]
            found.update(row[0] for row in self.cell(
                f"SELECT uuid FROM instances WHERE uuid IN ({_marks(chunk)})", chunk))
        return found

    def compute_reports(self) -> list[tuple]:
        return self.cell(
            "SELECT host, last_seen_up, updated_at, created_at FROM services "
            "WHERE `binary` = 'nova-compute' AND deleted = 0 AND host IS NOT NULL")

    def security_group_members(self, group_ids) -> list[str]:
        ids = sorted(group_ids)
        return [row[0] for row in self.cell(
            "SELECT instance_uuid FROM security_group_instance_association WHERE "
            f"security_group_id IN ({_marks(ids)}) AND deleted = 0 AND instance_uuid IS NOT NULL "
            "ORDER BY id", ids)]

    def server_group_members(self, group_ids) -> list[str]:
        if self.api is None:
            return []
        ids = sorted(group_ids)
        return [row[0] for row in self.api(
            f"SELECT instance_uuid FROM instance_group_member WHERE group_id IN ({_marks(ids)}) "
            "AND instance_uuid IS NOT NULL ORDER BY id", ids)]

    def action_keys(self, ids) -> list[str]:
        """The instance action keys of the actions ``ids`` (their events changed)."""
        ids = sorted(ids)
        out: list[str] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            out += [instance_action_key(str(uuid), int(action_id)) for action_id, uuid in
                    self.cell(f"SELECT id, instance_uuid FROM instance_actions WHERE id IN "
                              f"({_marks(chunk)}) AND instance_uuid IS NOT NULL ORDER BY id",
                              chunk)]
        return out

    def group_uuids(self, ids) -> list[str]:
        """The uuids of the server groups ``ids`` (their policy or members changed); one
        deleted meanwhile is published gone by its own row."""
        if self.api is None:
            return []
        ids = sorted(ids)
        return [str(row[0]) for row in self.api(
            f"SELECT uuid FROM instance_groups WHERE id IN ({_marks(ids)}) ORDER BY id", ids)]

    def flavorids(self, ids) -> list[str]:
        if self.api is None:
            return []
        ids = sorted(ids)
        return [str(row[0]) for row in self.api(
            f"SELECT flavorid FROM flavors WHERE id IN ({_marks(ids)}) ORDER BY id", ids)]
