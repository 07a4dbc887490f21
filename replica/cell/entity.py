"""Builds feed entities from the normalized tables: the joins happen here, once
per change, not once per read.

The SQL is portable (SQLite and MariaDB/MySQL): plain SELECTs with ``?`` parameters,
no JSON functions (Nova's serialized objects are parsed here, in Python), reserved
words (``key``, ``binary``) only as qualified column names, which both dialects
accept unquoted. The database is reached only through a ``rows(sql, params) ->
list[tuple]`` adapter (``Rows``): a backend's reader provides one (the MySQL one
translates ``?`` to ``%s``); an object with a DB-API style ``execute`` (an apsw
connection) is adapted as it is.

``build_servers`` runs a fixed number of statements per page of uuids (one per
table, keys in one ``IN (?, ...)`` list padded to a few fixed lengths so that the
statements repeat), never one per uuid. A snapshot page (``page_entities``) reads its
instance rows and keys in one statement and each child table by the key range the
page covers (an index range scan rather than a seek per key). Per row, the work stays
small: a flavor text is resolved once per process (a cell has a few), Nova's JSON
documents are parsed by orjson (exactly as the json module parses them, see
``_fast_loads``), and the cyclic garbage collector waits while a page is built.

Child tables a database lacks (Nova keeps server groups and request specs in its API
database; its cell database's ``instance_group_member`` has no ``instance_uuid``) are
left out: the reader says which ``CHILD_TABLES`` it has (``children_available``) and
their fields stay empty. Which child rows count
follows Nova's ORM relationships (``nova/db/main/models.py``):

- ``instance_extra``, ``instance_info_caches``, ``instance_system_metadata``: every
  row (Nova soft-deletes them with the instance and still loads them for a deleted
  instance; system metadata keys are hard-deleted when removed);
- ``instance_metadata``, ``block_device_mapping``: rows with ``deleted = 0``;
- ``instance_faults``: the latest row with ``deleted = 0`` (Nova reads faults with
  ``read_deleted='no'``);
- security groups, tags and the compute service (host_status): only while the
  instance is not deleted (Nova's relationship joins on ``Instance.deleted == 0``).

A hidden instance (``instances.hidden``, not deleted: the copy a cross-cell resize keeps
in the other cell, which nova-api leaves out of every list and never shows, its instance
mapping naming the cell of the visible copy) has no entity: the publisher sends a
tombstone, which removes the row only when this cell owns it.

host_status follows Nova's ``get_instance_host_status``: no host or no
``nova-compute`` service row -> ``""``; ``forced_down`` -> ``DOWN``; ``disabled`` ->
``MAINTENANCE``; otherwise ``UP``, or with ``Reach.service_down_time`` set, Nova's
time-based liveness (``servicegroup_api.service_is_up`` of the DB driver: the last
heartbeat, ``last_seen_up`` else ``created_at``, within ``service_down_time`` of now,
else ``UNKNOWN``). Time passing touches no row: the publisher re-checks the hosts on
an interval and enqueues the servers of a host whose status changed
(``sqlite_source``). When a host has several service rows (a deleted one and a
re-registered one), the live one wins.

A server's availability zone follows Nova's ``get_instance_availability_zone``: with a
host, the zone of the host's first aggregate with ``availability_zone`` metadata in the
API database, else the default zone (``Reach.default_zone``); without a host, the
instance's own ``availability_zone``. (Read only where the API database is reached; an
aggregate change touches no cell row: ``rechecks.ZoneWatch`` finds the servers of the
hosts whose zone changed.)

Nova's API database (server groups, request specs) is reached through a second
``rows`` function (``Reach.api``), by the servers' uuids: no SQL spans the two
databases, so the same code reads SQLite files and MariaDB schemas. Without it, the
parts are read from the cell database when it has those tables (this project's own
cell schema does).
"""

from __future__ import annotations

import datetime
import functools
import gc
import json
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import orjson

from replica import feed

PAGE = 500                      # uuids per round of queries
PAGE_RANGE = 1000               # instances per round of a snapshot page (key range)
INSTANCE_NAME_TEMPLATE = "instance-%08x"
DEFAULT_AVAILABILITY_ZONE = "nova"      # Nova's default_availability_zone

_INSTANCE_COLUMNS = (
    "id", "uuid", "project_id", "user_id", "display_name", "display_description", "hostname",
    "created_at", "updated_at", "launched_at", "terminated_at", "deleted_at", "deleted",
    "vm_state", "task_state", "power_state", "progress", "host", "node", "availability_zone",
    "launch_index", "reservation_id", "kernel_id", "ramdisk_id", "root_device_name",
    "user_data", "key_name", "config_drive", "access_ip_v4", "access_ip_v6",
    "auto_disk_config", "locked", "locked_by", "image_ref", "memory_mb", "vcpus", "root_gb",
    "ephemeral_gb",
)


class Rows(Protocol):
    """How entity building reaches a database: one statement with ``?`` parameters,
    all its rows as tuples."""

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]: ...


RowsFn = Callable[[str, tuple], list]


def rows_of(db) -> RowsFn:
    """The ``rows`` function of ``db``: its own (a ``Rows`` adapter), one made from a
    DB-API style ``execute`` (an apsw connection), or ``db`` itself when it is such a
    function."""
    if callable(db) and hasattr(db, "many"):
        return db                # a Rows adapter that also runs statements together
    rows = getattr(db, "rows", None)
    if rows is not None:
        return rows
    execute = getattr(db, "execute", None)
    if execute is None:
        return db
    return lambda sql, params=(): execute(sql, params).fetchall()


# An ``IN`` list is padded (with its last key again) to the next of these lengths,
# so a handful of statement texts serve every batch size (prepared once, cached).
_IN_LENGTHS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _padded(keys: list) -> tuple:
    """``keys`` padded to the next ``_IN_LENGTHS`` length (at most its last one)."""
    for length in _IN_LENGTHS:
        if len(keys) <= length:
            return tuple(keys) + (keys[-1],) * (length - len(keys))
    raise ValueError(f"{len(keys)} keys in one IN list (at most {_IN_LENGTHS[-1]})")


@functools.lru_cache(maxsize=None)
def _marks(count: int) -> str:
    return "(" + ", ".join("?" * count) + ")"


@functools.lru_cache(maxsize=1024)
def _in_sql(template: str, count: int) -> str:
    """``template`` with its ``{keys}`` made an ``IN`` list of ``count`` parameters."""
    return template.replace("{keys}", _marks(count))


def _has_float(value) -> bool:
    if type(value) is float:
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def _nova_fields(text, names: tuple[str, ...]) -> tuple:
    """The fields ``names`` of ``nova_object.data`` of a serialized Nova object (JSON
    text), None where absent. Parsed by orjson; again by the json module when a field
    holds a float (a float, or an integer beyond 64 bits that orjson made one), so
    that the values are always json.loads's."""
    if text is None:
        return (None,) * len(names)
    try:
        doc = orjson.loads(text)
    except (ValueError, TypeError):
        doc = _loads(text)
    values = _fields_of(doc, names)
    if any(_has_float(v) for v in values):
        values = _fields_of(_loads(text), names)
    return values


def _fields_of(doc, names: tuple[str, ...]) -> tuple:
    data = doc.get("nova_object.data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        return (None,) * len(names)
    return tuple(data.get(name) for name in names)


_CERT_FIELDS = ("ids",)
_SPEC_FIELDS = ("scheduler_hints", "availability_zone")


# ASCII digits only (the cheaper match): a stored text with other digits takes the
# general path below, which makes the same text of it.
_ISO_PLAIN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", re.ASCII)


def iso(value) -> str | None:
    """Nova's stored datetime (``'2026-12-01 07:30:43.123456'``, or an ISO form with
    ``T`` / ``Z``) as the feed's ``'2026-12-01T07:30:43.123456'``."""
    if type(value) is str and _ISO_PLAIN.fullmatch(value):    # the form Nova stores
        return value.replace(" ", "T", 1)
    if value is None or value == "":
        return None
    text = str(value).strip().replace(" ", "T", 1)
    for suffix in ("Z", "+00:00"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    if "." in text:
        head, frac = text.split(".", 1)
        return f"{head}.{(frac + '000000')[:6]}"
    return f"{text}.000000"


def _loads(text, default=None):
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


# orjson parses what the json module parses, to the same values, except integers
# beyond 64 bits (orjson makes them floats); a text with a run of 19 digits or more
# goes to the json module. What orjson refuses (NaN, lone surrogates, deep nesting)
# goes there too, so the result is always json.loads's.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


def _fast_loads(text, default=None):
    """``_loads`` for large documents (network info caches), by orjson when exact."""
    if type(text) is str and text:
        try:
            if _LONG_NUMBER not in text.encode().translate(_DIGITS_TO_ZERO):
                return orjson.loads(text)
        except (UnicodeEncodeError, orjson.JSONDecodeError):
            pass
    return _loads(text, default)


def _int(value, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


_FLAVOR_CACHE: dict[str, dict] = {}     # "cur" data JSON text -> built flavor
_FLAVOR_CACHE_MAX = 4096
_SIZING = ("memory_mb", "vcpus", "root_gb", "ephemeral_gb")


def flavor_of(flavor_text: str | None, instance: dict) -> dict:
    """The server's flavor from the "cur" Flavor in ``instance_extra.flavor`` (the JSON
    text of ``{"cur": ..., "old": ..., "new": ...}``); falls back to the instance's own
    sizing columns when the extra row has none (a row mid-build). A cell has a handful
    of distinct flavor texts, so the result is cached by text (each entity gets its
    own copy)."""
    return _flavor(flavor_text, instance["memory_mb"], instance["vcpus"], instance["root_gb"],
                   instance["ephemeral_gb"])


def _cur_flavor_data(flavor_text) -> dict:
    doc = _fast_loads(flavor_text) if type(flavor_text) is str else None
    cur = doc.get("cur") if isinstance(doc, dict) else None
    data = cur.get("nova_object.data") if isinstance(cur, dict) else None
    return data if isinstance(data, dict) else {}


def _flavor(flavor_text, memory_mb, vcpus, root_gb, ephemeral_gb) -> dict:
    cached = _FLAVOR_CACHE.get(flavor_text) if type(flavor_text) is str else None
    if cached is not None:
        return {**cached, "extra_specs": dict(cached["extra_specs"])}
    data = _cur_flavor_data(flavor_text)
    specs = data.get("extra_specs")
    flavor = {
        "flavorid": str(data.get("flavorid") or ""),
        "name": str(data.get("name") or ""),
        "memory_mb": _int(data.get("memory_mb", memory_mb)),
        "vcpus": _int(data.get("vcpus", vcpus)),
        "root_gb": _int(data.get("root_gb", root_gb)),
        "ephemeral_gb": _int(data.get("ephemeral_gb", ephemeral_gb)),
        "swap": _int(data.get("swap")),
        "extra_specs": {str(k): str(v) for k, v in specs.items()} if isinstance(specs, dict) else {},
    }
    if type(flavor_text) is str and all(name in data for name in _SIZING):
        # nothing came from the row: the text alone made this flavor
        if len(_FLAVOR_CACHE) >= _FLAVOR_CACHE_MAX:
            _FLAVOR_CACHE.clear()
        _FLAVOR_CACHE[flavor_text] = {**flavor, "extra_specs": dict(flavor["extra_specs"])}
    return flavor


def trusted_certs_of(certs_text: str | None) -> list | None:
    """The certificate ids of ``instance_extra.trusted_certs`` (a TrustedCerts object)."""
    (ids,) = _nova_fields(certs_text, _CERT_FIELDS)
    return [str(i) for i in ids] if isinstance(ids, list) else None


def host_status(instance: dict, service: tuple | None) -> str:
    """Nova's host_status rule from the services row (see the module docstring)."""
    return _host_status(instance["host"], instance["deleted"], service)


def _host_status(host, deleted, service: tuple | None) -> str:
    if not host or deleted or service is None:
        return ""
    if service[1]:          # forced_down
        return "DOWN"
    if service[0]:          # disabled
        return "MAINTENANCE"
    if len(service) > 2 and not service[2]:      # no heartbeat within service_down_time
        return "UNKNOWN"
    return "UP"


def _utcnow() -> float:
    return time.time()


def _epoch_seconds(value) -> float | None:
    """Unix seconds of a stored naive-UTC datetime (text or datetime), None if unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        text = iso(value)
        try:
            moment = datetime.datetime.fromisoformat(text)
        except (TypeError, ValueError):
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def service_is_up(last_seen_up, created_at, now: float, down_time: float) -> bool:
    """Nova's DB servicegroup rule: up when the last heartbeat (``last_seen_up``, else
    ``created_at``) is within ``down_time`` seconds of ``now`` (either side)."""
    beat = _epoch_seconds(last_seen_up)
    if beat is None:
        beat = _epoch_seconds(created_at)
    if beat is None:
        return False
    return abs(now - beat) <= down_time


def _hints_of(text: str | None) -> dict:
    if not text or text == "{}":
        return {}
    hints = _loads(text, {})
    return hints if isinstance(hints, dict) else {}


def _spec_of(text) -> tuple[dict, str | None]:
    """(scheduler hints, pinned availability zone) of ``request_specs.spec`` (a
    RequestSpec object); hints stored as a JSON text of their own are decoded too.
    ``_nova_fields`` written out: this runs for every server built."""
    if text is None:
        return {}, None
    try:
        doc = orjson.loads(text)
    except (ValueError, TypeError):
        doc = _loads(text)
    data = doc.get("nova_object.data") if type(doc) is dict else None
    if type(data) is not dict:
        return {}, None
    hints, az = data.get("scheduler_hints"), data.get("availability_zone")
    if hints and _has_float(hints):     # exactly as the json module reads them
        hints, az = _nova_fields(text, _SPEC_FIELDS)
    if type(hints) is str:
        hints = _hints_of(hints)
    elif type(hints) is not dict:
        hints = {}
    return hints, (az if type(az) is str else None)


def _pages(keys: list[str], size: int = PAGE) -> Iterator[list[str]]:
    for start in range(0, len(keys), size):
        yield keys[start:start + size]


_INT_COLUMNS = frozenset({"id", "power_state", "progress", "launch_index", "deleted",
                          "memory_mb", "vcpus", "root_gb", "ephemeral_gb"})
_BOOL_COLUMNS = frozenset({"locked", "auto_disk_config"})     # made bool when built
_STR_AT = tuple(i for i, c in enumerate(_INSTANCE_COLUMNS)
                if c not in _INT_COLUMNS and c not in _BOOL_COLUMNS)
_INT_AT = tuple(i for i, c in enumerate(_INSTANCE_COLUMNS) if c in _INT_COLUMNS)
_STR_OK = (str, type(None))
_INT_OK = (int, type(None))
_CLEAN_TYPES: set[tuple] = set()     # column type signatures seen to need no coercion


def _str_or_none(value):
    return value if value is None or type(value) is str else str(value)


def _to_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _clean(row: tuple) -> tuple:
    """Entities must validate whatever a column holds (SQLite is dynamically typed):
    coerce an odd value instead of publishing an entity the appliance would refuse."""
    types = tuple(map(type, row))
    if types in _CLEAN_TYPES:
        return row
    if (all(types[i] in _STR_OK for i in _STR_AT)
            and all(types[i] in _INT_OK for i in _INT_AT)):
        if len(_CLEAN_TYPES) < 4096:
            _CLEAN_TYPES.add(types)
        return row
    values = list(row)
    for i in _STR_AT:
        if type(values[i]) not in _STR_OK:
            values[i] = str(values[i])
    for i in _INT_AT:
        if type(values[i]) not in _INT_OK:
            values[i] = _to_int(values[i])
    return tuple(values)


# Child rows are selected either for a list of keys (``IN``: a batch, a replay, a
# fetch) or, for a snapshot page, for the key range (after, last] that the page's
# instances cover exactly: an index range scan instead of one seek per key. A child
# row in the range without an instance row is read and ignored. Each child query
# names its key column once, as ``{column}``, replaced by one of these:
_BY_KEYS = "{col} IN {keys}"
_BY_RANGE = "{col} > ? AND {col} <= ?"
_INSTANCE_SQL = f"SELECT {', '.join(_INSTANCE_COLUMNS)} FROM instances "
_CHILD_SQL = {
    # instance_uuid, flavor text, trusted certs; per instance the row that counts
    # comes last: live rows after deleted ones (a NULL deleted after both), then by id
    "extra": "SELECT instance_uuid, flavor, trusted_certs FROM instance_extra "
             "WHERE {instance_uuid} ORDER BY instance_uuid, "
             "CASE WHEN deleted IS NULL THEN 2 WHEN deleted = 0 THEN 1 ELSE 0 END, id",
    # only the keys the entity reads: image_* (a BINARY range) and locked_reason
    "sysmeta": "SELECT sm.instance_uuid, sm.key, sm.value FROM instance_system_metadata sm "
               "WHERE {sm.instance_uuid} AND (sm.key = 'locked_reason' OR "
               "(sm.key >= 'image_' AND sm.key < 'image`')) ORDER BY sm.instance_uuid, sm.id",
    "caches": "SELECT instance_uuid, network_info FROM instance_info_caches "
              "WHERE {instance_uuid} ORDER BY instance_uuid, id",
    "metadata": "SELECT md.instance_uuid, md.key, md.value FROM instance_metadata md "
                "WHERE {md.instance_uuid} AND md.deleted = 0 ORDER BY md.instance_uuid, md.id",
    "tags": "SELECT resource_id, tag FROM tags WHERE {resource_id} ORDER BY resource_id, tag",
    "volumes": "SELECT instance_uuid, volume_id, delete_on_termination "
               "FROM block_device_mapping WHERE {instance_uuid} AND deleted = 0 "
               "AND volume_id IS NOT NULL ORDER BY instance_uuid, id",
    "groups": "SELECT a.instance_uuid, g.name FROM security_group_instance_association a "
              "JOIN security_groups g ON g.id = a.security_group_id "
              "WHERE {a.instance_uuid} AND a.deleted = 0 AND g.deleted = 0 "
              "ORDER BY a.instance_uuid, a.id",
    "faults": "SELECT instance_uuid, code, message, details, created_at FROM instance_faults "
              "WHERE id IN (SELECT max(id) FROM instance_faults "
              "WHERE {instance_uuid} AND deleted = 0 GROUP BY instance_uuid)",
    "server_groups": "SELECT m.instance_uuid, g.uuid FROM instance_group_member m "
                     "JOIN instance_groups g ON g.id = m.group_id WHERE {m.instance_uuid} "
                     "ORDER BY m.instance_uuid, m.id",
    "specs": "SELECT instance_uuid, spec FROM request_specs WHERE {instance_uuid}",
    # hidden instances (the source copy of a cross-cell resize): no entity. The unary
    # "+" keeps SQLite's planner off Nova's (deleted, created_at) index: by the key range
    # it read every live instance for each page of a snapshot (a snapshot's time grew
    # with the square of the cell's size: 58 us of CPU a server at 10,000, 204 us at
    # 250,000); by the key index it reads the page's own rows.
    "hidden": "SELECT hi.uuid FROM instances hi WHERE {hi.uuid} AND +hi.hidden = 1 "
              "AND +hi.deleted = 0",
}
_COLUMNS_NAMED = ("instance_uuid", "resource_id", "a.instance_uuid", "m.instance_uuid",
                  "sm.instance_uuid", "md.instance_uuid", "hi.uuid")
_SERVICES_SQL = ("SELECT sv.host, sv.disabled, sv.forced_down FROM services sv "
                 "WHERE sv.binary = 'nova-compute' AND sv.host IN {keys} "
                 "ORDER BY sv.deleted = 0, sv.id")
_SERVICES_LIVENESS_SQL = ("SELECT sv.host, sv.disabled, sv.forced_down, sv.last_seen_up, "
                          "sv.created_at FROM services sv "
                          "WHERE sv.binary = 'nova-compute' AND sv.host IN {keys} "
                          "ORDER BY sv.deleted = 0, sv.id")
# The same, for the hosts of the instances whose uuids are ``{keys}`` (no host list
# read first: sent with the instances' query, see ``_read_page``; MariaDB/MySQL only).
# The hosts are a derived table (materialized: the instances are read by uuid first);
# an ``IN (subquery)`` may be run from the services side instead, scanning a host's
# instances for one of the keys.
_SERVICES_OF_SQL = ("SELECT sv.host, sv.disabled, sv.forced_down FROM services sv "
                    "JOIN (SELECT DISTINCT i.host FROM instances i WHERE i.uuid IN {keys} "
                    "AND i.host <> '') h ON h.host = sv.host "
                    "WHERE sv.binary = 'nova-compute' ORDER BY sv.deleted = 0, sv.id")
_SERVICES_LIVENESS_OF_SQL = ("SELECT sv.host, sv.disabled, sv.forced_down, sv.last_seen_up, "
                             "sv.created_at FROM services sv "
                             "JOIN (SELECT DISTINCT i.host FROM instances i "
                             "WHERE i.uuid IN {keys} AND i.host <> '') h ON h.host = sv.host "
                             "WHERE sv.binary = 'nova-compute' ORDER BY sv.deleted = 0, sv.id")

# What each part of a server entity needs from the database: (table, column) pairs.
# A database without one of them (Nova's cell database has no request_specs, and its
# instance_group_member has instance_id) leaves that part out: its fields stay empty.
CHILD_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "extra": (("instance_extra", "instance_uuid"),),
    "sysmeta": (("instance_system_metadata", "instance_uuid"),),
    "caches": (("instance_info_caches", "instance_uuid"),),
    "metadata": (("instance_metadata", "instance_uuid"),),
    "tags": (("tags", "resource_id"),),
    "volumes": (("block_device_mapping", "instance_uuid"),),
    "groups": (("security_group_instance_association", "instance_uuid"),
               ("security_groups", "name")),
    "faults": (("instance_faults", "instance_uuid"),),
    "server_groups": (("instance_group_member", "instance_uuid"), ("instance_groups", "uuid")),
    "specs": (("request_specs", "instance_uuid"),),
    "services": (("services", "host"),),
    "liveness": (("services", "last_seen_up"), ("services", "created_at")),
    "hidden": (("instances", "hidden"),),
    # the hosts' zones (API database: aggregates with availability_zone metadata)
    "zones": (("aggregate_hosts", "host"), ("aggregate_metadata", "key")),
}
# Parts that come from Nova's API database when the reader has one (``Reach.api``).
API_CHILDREN = frozenset({"server_groups", "specs"})
# The services columns of Nova's liveness rule (``Reach.service_down_time``).
LIVENESS_COLUMNS = (("services", "last_seen_up"), ("services", "created_at"))
ALL_CHILDREN = frozenset(CHILD_TABLES)


class Reach(frozenset):
    """What a server entity may read: the ``CHILD_TABLES`` parts the cell database has
    (the set itself), and beyond it:

    - ``api``: the ``rows`` function of Nova's API database (server groups and request
      specs are read there, by the servers' uuids, never joined across databases);
    - ``service_down_time``: seconds; above 0, Nova's liveness rule applies to
      host_status (a compute service whose last heartbeat, ``last_seen_up`` else
      ``created_at``, is older than that is ``UNKNOWN``), judged at ``clock()``;
    - ``security_groups``: ``f(live server uuids) -> {uuid: [names]}`` (Neutron's
      answer, see ``neutron.py``); a uuid it leaves out keeps the cell's own;
    - ``build_requests``: the database is Nova's API database, whose servers are its
      build requests (``build_requests.py``), not instances;
    - ``quota_defaults``: ``(resource, limit)`` pairs, the ``[quota]`` defaults of the
      operator's nova.conf (``nova_conf.py``) under the ``default`` quota class; None:
      Nova's option defaults;
    - ``default_zone``: Nova's ``default_availability_zone``, the zone of a host in no
      zoned aggregate (with ``api`` holding the aggregates).
    """

    api = None
    api_children: frozenset = frozenset()
    service_down_time: float = 0.0
    security_groups = None
    clock = None
    build_requests: bool = False
    quota_defaults: tuple | None = None
    default_zone: str = DEFAULT_AVAILABILITY_ZONE

    def __new__(cls, children=ALL_CHILDREN, **extra):
        made = super().__new__(cls, children)
        for name, value in extra.items():
            if not hasattr(cls, name):
                raise TypeError(f"Reach has no {name!r}")
            setattr(made, name, value)
        return made

    def __reduce__(self):       # copies keep the extras
        return (_reach, (frozenset(self), dict(self.__dict__)))


def _reach(children, extra):
    return Reach(children, **extra)


def children_available(has_column: Callable[[str, str], bool]) -> frozenset[str]:
    """The parts of ``CHILD_TABLES`` whose tables and columns the database has."""
    return frozenset(name for name, needs in CHILD_TABLES.items()
                     if all(has_column(table, column) for table, column in needs))


@functools.lru_cache(maxsize=None)
def _child_sql(name: str, by_keys: bool, count: int) -> str:
    """The child query ``name`` by an ``IN`` list of ``count`` keys, or by key range."""
    sql = _CHILD_SQL[name]
    where = _BY_KEYS if by_keys else _BY_RANGE
    for column in _COLUMNS_NAMED:
        sql = sql.replace("{%s}" % column, where.replace("{col}", column))
    return _in_sql(sql, count) if by_keys else sql


@functools.lru_cache(maxsize=None)
def _child_template(name: str) -> str:
    """The child query ``name`` with its key column ``IN {keys}`` (for ``_rows_in``)."""
    sql = _CHILD_SQL[name]
    for column in _COLUMNS_NAMED:
        sql = sql.replace("{%s}" % column, _BY_KEYS.replace("{col}", column))
    return sql


# A host's zone: its first aggregate (by id) with availability_zone metadata
# (nova.availability_zones.get_host_availability_zone). API database.
_HOST_ZONES_OF = ("SELECT ah.host, am.value FROM aggregate_hosts ah "
                  "JOIN aggregate_metadata am ON am.aggregate_id = ah.aggregate_id "
                  "WHERE am.key = 'availability_zone'{hosts} ORDER BY ah.aggregate_id, ah.id")
_HOST_ZONES_SQL = _HOST_ZONES_OF.format(hosts=" AND ah.host IN {keys}")
_ALL_HOST_ZONES_SQL = _HOST_ZONES_OF.format(hosts="")


def host_zones(api: RowsFn, hosts: list | None = None) -> dict[str, str]:
    """``{host: zone}`` of the hosts in a zoned aggregate (of ``hosts``, or all), from
    Nova's API database; a host in none is left out (the default zone)."""
    found = (_rows_in(api, _HOST_ZONES_SQL, hosts) if hosts is not None
             else api(_ALL_HOST_ZONES_SQL, ()))
    zones: dict[str, str] = {}
    for host, zone in found:
        zones.setdefault(host, zone)
    return zones


def _zones_reached(children) -> bool:
    return (getattr(children, "api", None) is not None
            and "zones" in getattr(children, "api_children", ()))


def _rows_in(rows: RowsFn, template: str, keys: list) -> list:
    """``template`` run with its ``{keys}`` list bound to ``keys`` (padded; a long
    list in several statements, whose rows come one statement after another)."""
    longest = _IN_LENGTHS[-1]
    out: list = []
    for start in range(0, len(keys), longest):
        args = _padded(keys[start:start + longest])
        out += rows(_in_sql(template, len(args)), args)
    return out


def _build_rows(rows: RowsFn, inst_rows: list[tuple], by_keys: bool, args: tuple,
                children: frozenset[str], prefetched: dict[str, list] | None = None,
                ) -> dict[str, dict]:
    """Entities of instance ``inst_rows`` (``_INSTANCE_COLUMNS`` tuples, cleaned); the
    child queries select their rows with ``args``: padded keys (``by_keys``) or a key
    range. Entities hold no reference cycles, so the cyclic collector (which would run
    many times over the containers a page creates) waits until the page is built."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _build_entities(rows, inst_rows, by_keys, args, children, prefetched)
    finally:
        if collecting:
            gc.enable()


# The child queries of a page, in the order they are sent together (``_prefetch``).
_CELL_CHILDREN = ("extra", "sysmeta", "caches", "metadata", "tags", "volumes", "groups",
                  "faults", "server_groups", "specs", "hidden")


def _in_statements(template: str, keys: list) -> list[tuple[str, tuple]]:
    """The statements ``_rows_in`` runs for ``keys``, as (sql, padded keys)."""
    longest = _IN_LENGTHS[-1]
    out = []
    for start in range(0, len(keys), longest):
        padded = _padded(keys[start:start + longest])
        out.append((_in_sql(template, len(padded)), padded))
    return out


def _prefetch(rows: RowsFn, api, children: frozenset[str], by_keys: bool, args: tuple,
              uuids: list, hosts: list, liveness: bool) -> dict[str, list]:
    """A page's child rows read in one round trip per database, where the database's
    ``rows`` can run several statements together (``many``: MariaDB/MySQL): the same
    statements and rows as one by one (``child`` below), fewer waits on the network.
    Empty when it cannot (SQLite, in process, gains nothing)."""
    out: dict[str, list] = {}
    many = getattr(rows, "many", None)
    if many is not None:
        names = [name for name in _CELL_CHILDREN if name in children
                 and not (api is not None and name in API_CHILDREN)]
        statements = [(_child_sql(name, by_keys, len(args)), args) for name in names]
        if hosts and "services" in children:
            names.append("services")
            services = _in_statements(_SERVICES_LIVENESS_SQL if liveness else _SERVICES_SQL,
                                      hosts)
            statements += services
        if statements:
            results = many(statements)
            for name, result in zip(names, results):
                out[name] = result
            if "services" in out:       # one name for all the chunks of its IN lists
                out["services"] = [row for result in results[len(names) - 1:]
                                   for row in result]
    api_many = getattr(api, "many", None)
    if api_many is not None and uuids:
        statements, owners = [], []
        for name in sorted(API_CHILDREN):
            if name in children.api_children:
                chunks = _in_statements(_child_template(name), uuids)
                statements += chunks
                owners += [name] * len(chunks)
        if statements:
            for name in owners:
                out.setdefault(name, [])
            for name, result in zip(owners, api_many(statements)):
                out[name] += result
    return out


def _build_entities(rows: RowsFn, inst_rows: list[tuple], by_keys: bool, args: tuple,
                    children: frozenset[str], prefetched: dict[str, list] | None = None,
                    ) -> dict[str, dict]:
    api = getattr(children, "api", None)
    uuids = [row[1] for row in inst_rows]
    hosts = sorted({row[17] for row in inst_rows if row[17]})
    down_time = getattr(children, "service_down_time", 0.0)
    liveness = down_time > 0 and "liveness" in children
    if prefetched is None:
        prefetched = _prefetch(rows, api, children, by_keys, args, uuids, hosts, liveness)

    def child(name: str) -> list:
        if name in prefetched:
            return prefetched[name]
        if api is not None and name in API_CHILDREN:
            if name not in children.api_children or not uuids:
                return []
            return _rows_in(api, _child_template(name), uuids)
        if name not in children:
            return []
        if name == "services":
            return _rows_in(rows, _SERVICES_LIVENESS_SQL if liveness else _SERVICES_SQL, hosts)
        return rows(_child_sql(name, by_keys, len(args)), args)

    extra = {uuid: (flavor, certs)          # the last row of an instance wins
             for uuid, flavor, certs in child("extra")}
    images: dict[str, dict] = {}
    locked_reasons: dict[str, object] = {}
    props, props_of = None, None
    for uuid, key, value in child("sysmeta"):
        if key == "locked_reason":
            locked_reasons[uuid] = value
        else:
            if uuid != props_of:            # rows come grouped by instance
                props = images[uuid] = {}
                props_of = uuid
            props[key[6:]] = value
    caches: dict[str, str] = {}
    for uuid, info in child("caches"):
        caches[uuid] = info
    metadata: dict[str, dict] = {}
    for uuid, key, value in child("metadata"):
        metadata.setdefault(uuid, {})[str(key)] = value if type(value) is str else str(value)
    tags: dict[str, list] = {}
    for uuid, tag in child("tags"):
        tags.setdefault(uuid, []).append(tag)
    volumes: dict[str, list] = {}
    for uuid, volume_id, dot in child("volumes"):
        volumes.setdefault(uuid, []).append({"id": volume_id, "delete_on_termination": bool(dot)})
    groups: dict[str, list] = {}
    for uuid, name in child("groups"):
        groups.setdefault(uuid, []).append(name)
    faults: dict[str, dict] = {}
    for uuid, code, message, details, created in child("faults"):
        faults[uuid] = {"code": code, "message": message, "details": details,
                        "created": iso(created)}
    services: dict[str, tuple] = {}
    if hosts and "services" in children:
        if liveness:
            now = (children.clock or _utcnow)()
            for host, disabled, forced_down, seen, created in child("services"):
                services[host] = (bool(disabled), bool(forced_down),
                                  service_is_up(seen, created, now, down_time))
        else:
            for host, disabled, forced_down in child("services"):
                services[host] = (bool(disabled), bool(forced_down))   # live row last, wins
    neutron = getattr(children, "security_groups", None)
    if neutron is not None:
        live = [row[1] for row in inst_rows if not row[12]]
        groups.update(neutron(live) if live else {})
    server_groups: dict[str, list] = {}
    for uuid, group in child("server_groups"):
        server_groups.setdefault(uuid, []).append(group)
    specs: dict[str, object] = {}
    for uuid, spec in child("specs"):
        specs[uuid] = spec
    hidden = {uuid for (uuid,) in child("hidden")}
    zoned = _zones_reached(children)
    zones = host_zones(api, hosts) if zoned and hosts else {}
    default_zone = getattr(children, "default_zone", DEFAULT_AVAILABILITY_ZONE)

    # The lists and dicts collected above are never empty, so ``get(uuid) or []``
    # builds an empty default only when the instance has no rows.
    out: dict[str, dict] = {}
    no_extra = (None, None)
    for (iid, uuid, project_id, user_id, display_name, display_description, hostname,
         created_at, updated_at, launched_at, terminated_at, deleted_at, deleted,
         vm_state, task_state, power_state, progress, host, node, availability_zone,
         launch_index, reservation_id, kernel_id, ramdisk_id, root_device_name,
         user_data, key_name, config_drive, access_ip_v4, access_ip_v6,
         auto_disk_config, locked, locked_by, image_ref, memory_mb, vcpus, root_gb,
         ephemeral_gb) in inst_rows:
        if uuid in hidden:
            continue
        live = not deleted
        flavor_text, certs = extra.get(uuid, no_extra)
        hints, pinned_az = _spec_of(specs.get(uuid))
        network = _fast_loads(caches.get(uuid))
        out[uuid] = {
            "uuid": uuid,
            "project_id": project_id or "",
            "user_id": user_id or "",
            "display_name": display_name,
            "display_description": display_description,
            "hostname": hostname,
            "created_at": iso(created_at) or "",
            "updated_at": iso(updated_at),
            "launched_at": iso(launched_at),
            "terminated_at": iso(terminated_at),
            "deleted_at": iso(deleted_at),
            "deleted": not live,
            "vm_state": vm_state,
            "task_state": task_state,
            "power_state": power_state,
            "progress": progress,
            "host": host,
            "node": node,
            "availability_zone": (zones.get(host, default_zone) if zoned and host
                                  else availability_zone),
            "launch_index": launch_index,
            "reservation_id": reservation_id,
            "kernel_id": kernel_id,
            "ramdisk_id": ramdisk_id,
            "root_device_name": root_device_name,
            "user_data": user_data,
            "key_name": key_name,
            "config_drive": config_drive,
            "access_ip_v4": access_ip_v4,
            "access_ip_v6": access_ip_v6,
            "auto_disk_config": None if auto_disk_config is None else bool(auto_disk_config),
            "locked": bool(locked),
            "locked_by": locked_by,
            "locked_reason": _str_or_none(locked_reasons.get(uuid)),
            "instance_name": INSTANCE_NAME_TEMPLATE % iid,
            "image_ref": image_ref,
            "image_properties": images.get(uuid) or {},
            "flavor": _flavor(flavor_text, memory_mb, vcpus, root_gb, ephemeral_gb),
            "metadata": metadata.get(uuid) or {},
            "tags": (tags.get(uuid) or []) if live else [],
            "network_info": network if isinstance(network, list) else [],
            "security_groups": (groups.get(uuid) or []) if live else [],
            "volumes": volumes.get(uuid) or [],
            "fault": faults.get(uuid),
            "host_status": _host_status(host, deleted, services.get(host)),
            "trusted_image_certificates": trusted_certs_of(certs),
            "server_groups": server_groups.get(uuid) or [],
            "pinned_availability_zone": pinned_az,
            "scheduler_hints": hints,
        }
    return out


def _read_page(rows, keys: list[str], children: frozenset[str],
               ) -> tuple[list[tuple], dict[str, list]]:
    """The instance rows of ``keys`` and every child query of them in one round trip
    per database, both databases at once where the rows adapters can (``many`` and
    ``many_together``: MariaDB/MySQL): the child queries select by the keys asked
    for (a key without an instance row has no entity; its child rows, if any, are
    read and ignored) and the compute services by the instances' hosts in a
    subquery. The rows are those of reading the instances first and then their
    children (``_prefetch``), with one wait on the network instead of two or three."""
    api = getattr(children, "api", None)
    padded = _padded(keys)
    count = len(padded)
    liveness = getattr(children, "service_down_time", 0.0) > 0 and "liveness" in children
    names = [name for name in _CELL_CHILDREN if name in children
             and not (api is not None and name in API_CHILDREN)]
    if "services" in children:
        names.append("services")
    statements = [(_in_sql(f"{_INSTANCE_SQL}WHERE uuid IN {{keys}}", count), padded)]
    for name in names:
        sql = (_child_sql(name, True, count) if name != "services" else
               _in_sql(_SERVICES_LIVENESS_OF_SQL if liveness else _SERVICES_OF_SQL, count))
        statements.append((sql, padded))
    api_names = [name for name in sorted(API_CHILDREN)
                 if api is not None and name in children.api_children]
    api_statements = [(_child_sql(name, True, count), padded) for name in api_names]
    together = getattr(rows, "many_together", None)
    api_many = getattr(api, "many", None)
    if api_statements and together is not None and hasattr(api, "many_together"):
        results, api_results = together(statements, api, api_statements)
    else:
        results = rows.many(statements)
        api_results = []
        if api_statements:
            if api_many is None:       # an API adapter without ``many``: one by one
                api_results = [api(sql, params) for sql, params in api_statements]
            else:
                api_results = api_many(api_statements)
    prefetched = dict(zip(names, results[1:]))
    prefetched.update(zip(api_names, api_results))
    return [_clean(row) for row in results[0]], prefetched


def _build_page(rows: RowsFn, keys: list[str], children: frozenset[str]) -> dict[str, dict | None]:
    out: dict[str, dict | None] = {key: None for key in keys}
    if getattr(rows, "many", None) is not None:
        found, prefetched = _read_page(rows, keys, children)
        if found:
            out.update(_build_rows(rows, found, True, _padded([row[1] for row in found]),
                                   children, prefetched))
        return out
    found = [_clean(row) for row in _rows_in(rows, f"{_INSTANCE_SQL}WHERE uuid IN {{keys}}",
                                                keys)]
    if found:
        out.update(_build_rows(rows, found, True, _padded([row[1] for row in found]),
                               children))
    return out


def build_servers(db, uuids: Iterable[str],
                  children: frozenset[str] = ALL_CHILDREN) -> dict[str, dict | None]:
    """Server entities for ``uuids``; None for a uuid whose instance row is gone
    (hard-deleted or archived: the publisher sends a tombstone). A soft-deleted
    instance is an entity with ``deleted: True``. ``db``: see ``rows_of``. Call inside
    one read view for a consistent result."""
    rows = rows_of(db)
    keys = list(dict.fromkeys(uuids))
    out: dict[str, dict | None] = {}
    for page in _pages(keys):
        out.update(_build_page(rows, page, children))
    return out


def _server_range(rows: RowsFn, after: str, limit: int,
                  children: frozenset[str]) -> list[tuple[str, dict]]:
    """(uuid, entity) of the first ``limit`` instances with uuid > ``after``, in order:
    the instance rows and their keys in one statement, children by key range."""
    out: list[tuple[str, dict]] = []
    while len(out) < limit:
        want = min(PAGE_RANGE, limit - len(out))
        found = [_clean(row) for row in rows(
            f"{_INSTANCE_SQL}WHERE uuid > ? ORDER BY uuid LIMIT ?", (after, want))]
        if not found:
            break
        last = found[-1][1]
        built = _build_rows(rows, found, False, (after, last), children)
        out.extend((row[1], built.get(row[1])) for row in found)    # None: hidden
        after = last
        if len(found) < want:
            break
    return out


_FLAVORS_SQL = ("SELECT id, flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, "
                "rxtx_factor, vcpu_weight, disabled, is_public, description, created_at "
                "FROM flavors WHERE flavorid IN {keys}")
_FLAVOR_SPECS_SQL = ("SELECT fs.flavor_id, fs.key, fs.value FROM flavor_extra_specs fs "
                     "WHERE fs.flavor_id IN {keys} ORDER BY fs.id")
_FLAVOR_PROJECTS_SQL = ("SELECT flavor_id, project_id FROM flavor_projects "
                        "WHERE flavor_id IN {keys} ORDER BY project_id")


def build_flavors(db, flavorids: Iterable[str]) -> dict[str, dict | None]:
    """Flavor entities for ``flavorids``; None for a flavor that is gone."""
    rows = rows_of(db)
    keys = list(dict.fromkeys(flavorids))
    out: dict[str, dict | None] = {}
    for page in _pages(keys):
        out.update({key: None for key in page})
        found = _rows_in(rows, _FLAVORS_SQL, page)
        if not found:
            continue
        ids = [r[0] for r in found]
        specs: dict[int, dict] = {}
        for fid, key, value in _rows_in(rows, _FLAVOR_SPECS_SQL, ids):
            specs.setdefault(fid, {})[key] = value
        projects: dict[int, list] = {}
        for fid, project in _rows_in(rows, _FLAVOR_PROJECTS_SQL, ids):
            projects.setdefault(fid, []).append(project)
        for (fid, flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx,
             vcpu_weight, disabled, is_public, description, created_at) in found:
            out[flavorid] = {
                "flavorid": flavorid,
                "name": name,
                "memory_mb": _int(memory_mb),
                "vcpus": _int(vcpus),
                "root_gb": _int(root_gb),
                "ephemeral_gb": _int(ephemeral_gb),
                "swap": _int(swap),
                "rxtx_factor": float(rxtx) if rxtx is not None else 1.0,
                "vcpu_weight": vcpu_weight,
                "disabled": bool(disabled),
                "is_public": bool(is_public) if is_public is not None else True,
                "description": description,
                "extra_specs": specs.get(fid, {}),
                "projects": projects.get(fid, []),
                "created_at": iso(created_at) or "",
            }
    return out


# ---------------------------------------------------------------------------
# Instance actions (cell tables instance_actions, instance_actions_events)
# ---------------------------------------------------------------------------

_ACTIONS_SQL = ("SELECT id, instance_uuid, action, request_id, user_id, project_id, "
                "start_time, finish_time, message, created_at, updated_at, deleted "
                "FROM instance_actions WHERE id IN {keys}")
# Nova lists an action's events newest first (created_at, id descending); soft-deleted
# ones are not shown.
_ACTION_EVENTS_SQL = ("SELECT action_id, event, start_time, finish_time, result, traceback, "
                      "host, details FROM instance_actions_events WHERE action_id IN {keys} "
                      "AND deleted = 0 ORDER BY created_at DESC, id DESC")
_ACTION_PROJECTS_SQL = "SELECT uuid, project_id FROM instances WHERE uuid IN {keys}"
_ACTION_KEYS_SQL = ("SELECT instance_uuid, id FROM instance_actions WHERE instance_uuid > ? "
                    "OR (instance_uuid = ? AND id > ?) ORDER BY instance_uuid, id LIMIT ?")


def _action_id(key: str) -> tuple[str, int] | None:
    """(instance uuid, action id) of an instance action key, None if it is not one."""
    uuid, _, number = key.rpartition("/")
    return (uuid, int(number)) if uuid and number.isdigit() else None


def build_instance_actions(db, keys: Iterable[str],
                           children: frozenset[str] = ALL_CHILDREN) -> dict[str, dict | None]:
    """Instance action entities for ``keys`` (``feed.instance_action_key``), each with
    its events; None for an action that is gone."""
    rows = rows_of(db)
    keys = list(dict.fromkeys(keys))
    out: dict[str, dict | None] = {key: None for key in keys}
    wanted = {parsed: key for key in keys if (parsed := _action_id(key)) is not None}
    ids = sorted({action_id for _uuid, action_id in wanted})
    for page in _pages(ids):
        found = [r for r in _rows_in(rows, _ACTIONS_SQL, page) if (r[1], r[0]) in wanted]
        if not found:
            continue
        events: dict[int, list] = {}
        for (action_id, event, start, finish, result, traceback, host,
             details) in _rows_in(rows, _ACTION_EVENTS_SQL, [r[0] for r in found]):
            events.setdefault(action_id, []).append({
                "event": event, "start_time": iso(start), "finish_time": iso(finish),
                "result": result, "traceback": traceback, "host": host, "details": details})
        projects = dict(_rows_in(rows, _ACTION_PROJECTS_SQL,
                                 sorted({r[1] for r in found})))
        for (action_id, uuid, action, request_id, user_id, project_id, start, finish,
             message, created_at, updated_at, deleted) in found:
            key = wanted[(uuid, action_id)]
            out[key] = {
                "action_key": key, "id": _int(action_id), "instance_uuid": uuid,
                "instance_project_id": projects.get(uuid), "action": action,
                "request_id": request_id, "user_id": user_id, "project_id": project_id,
                "start_time": iso(start), "finish_time": iso(finish), "message": message,
                "created_at": iso(created_at), "updated_at": iso(updated_at),
                "deleted": bool(deleted), "events": events.get(action_id, []),
            }
    return out


def _action_keys(rows: RowsFn, after: str, limit: int) -> list[str]:
    """Up to ``limit`` instance action keys after ``after``, in key order (the key
    sorts as (instance uuid, id): its id is zero-padded)."""
    uuid, action_id = _action_id(after) or (after, -1)
    return [feed.instance_action_key(u, _int(i)) for u, i in
            rows(_ACTION_KEYS_SQL, (uuid, uuid, action_id, limit))]


def _action_range(rows: RowsFn, after: str, limit: int,
                  children: frozenset[str]) -> list[tuple[str, dict]]:
    keys = _action_keys(rows, after, limit)
    built = build_instance_actions(rows, keys, children)
    return [(key, built[key]) for key in keys if built[key] is not None]


# ---------------------------------------------------------------------------
# Key pairs (Nova's API database table key_pairs)
# ---------------------------------------------------------------------------

_KEYPAIRS_SQL = ("SELECT id, user_id, name, fingerprint, public_key, type, created_at, "
                 "updated_at FROM key_pairs WHERE user_id IN {keys}")
_KEYPAIR_KEYS_SQL = ("SELECT user_id, name FROM key_pairs WHERE user_id > ? OR "
                     "(user_id = ? AND name > ?) ORDER BY user_id, name LIMIT ?")


def build_keypairs(db, keys: Iterable[str],
                   children: frozenset[str] = ALL_CHILDREN) -> dict[str, dict | None]:
    """Key pair entities for ``keys`` (``feed.keypair_key``); None for one that is gone."""
    rows = rows_of(db)
    keys = list(dict.fromkeys(keys))
    out: dict[str, dict | None] = {key: None for key in keys}
    users = sorted({key.partition("/")[0] for key in keys})
    for page in _pages(users):
        for (kid, user_id, name, fingerprint, public_key, key_type, created_at,
             updated_at) in _rows_in(rows, _KEYPAIRS_SQL, page):
            key = feed.keypair_key(user_id, name)
            if key in out:
                out[key] = {
                    "keypair_key": key, "id": _int(kid), "user_id": user_id, "name": name,
                    "fingerprint": fingerprint, "public_key": public_key,
                    "type": key_type or "ssh", "created_at": iso(created_at),
                    "updated_at": iso(updated_at),
                }
    return out


def _keypair_keys(rows: RowsFn, after: str, limit: int) -> list[str]:
    """Up to ``limit`` key pair keys after ``after``, in (user, name) order."""
    user_id, _, name = after.partition("/")
    return [feed.keypair_key(u, n) for u, n in
            rows(_KEYPAIR_KEYS_SQL, (user_id, user_id, name, limit))]
# Quota limits (API database quotas, quota_classes, instance_groups)
# ---------------------------------------------------------------------------

_QUOTA_ROWS_SQL = ("SELECT project_id, resource, hard_limit FROM quotas "
                   "WHERE project_id IN {keys} ORDER BY id")
_QUOTA_GROUPS_SQL = ("SELECT project_id, count(*) FROM instance_groups "
                     "WHERE project_id IN {keys} GROUP BY project_id")
_QUOTA_DEFAULT_SQL = ("SELECT resource, hard_limit FROM quota_classes "
                      "WHERE class_name = 'default' ORDER BY id")
# The projects with a quota or a server group, after a project id, in order.
_QUOTA_PROJECTS_SQL = ("SELECT project_id FROM quotas WHERE project_id > ? UNION "
                       "SELECT project_id FROM instance_groups WHERE project_id > ? "
                       "ORDER BY 1 LIMIT ?")
_QUOTA_COUNT_SQL = ("SELECT 1 + count(*) FROM (SELECT project_id FROM quotas "
                    "WHERE project_id IS NOT NULL UNION SELECT project_id "
                    "FROM instance_groups WHERE project_id IS NOT NULL) AS projects")
_PROJECT_PREFIX = feed.quota_key("")


def quota_defaults_of(children) -> dict[str, int] | None:
    """The configured quota defaults a reader's ``Reach`` carries (None: Nova's)."""
    pairs = getattr(children, "quota_defaults", None)
    return None if pairs is None else dict(pairs)


def build_quotas(db, keys: Iterable[str],
                 defaults: dict[str, int] | None = None) -> dict[str, dict | None]:
    """Quota limit set entities for ``keys``: a project's (its ``quotas`` rows, its
    server group count; None when it has neither) or the defaults' (the quota class
    ``default`` over ``defaults``, Nova's option defaults unless given)."""
    rows = rows_of(db)
    wanted = list(dict.fromkeys(keys))
    out: dict[str, dict | None] = {key: None for key in wanted}
    if feed.QUOTA_DEFAULT_KEY in out:
        limits = dict(feed.QUOTA_NOVA_DEFAULTS if defaults is None else defaults)
        for resource, hard_limit in rows(_QUOTA_DEFAULT_SQL, ()):
            if resource in limits and hard_limit is not None:
                limits[resource] = _int(hard_limit)
        out[feed.QUOTA_DEFAULT_KEY] = {"quota_key": feed.QUOTA_DEFAULT_KEY,
                                       "project_id": None, "limits": limits,
                                       "server_groups_used": 0}
    projects = [key[len(_PROJECT_PREFIX):] for key in wanted
                if key.startswith(_PROJECT_PREFIX)]
    for page in _pages(projects):
        limits_of: dict[str, dict] = {}
        for project_id, resource, hard_limit in _rows_in(rows, _QUOTA_ROWS_SQL, page):
            limits = limits_of.setdefault(str(project_id),
                                          dict.fromkeys(feed.QUOTA_RESOURCES))
            if resource in limits:
                limits[resource] = None if hard_limit is None else _int(hard_limit)
        groups = {str(p): _int(n) for p, n in _rows_in(rows, _QUOTA_GROUPS_SQL, page)}
        for project_id in page:
            if project_id not in limits_of and not groups.get(project_id):
                continue
            key = feed.quota_key(project_id)
            out[key] = {"quota_key": key, "project_id": project_id,
                        "limits": limits_of.get(project_id,
                                                dict.fromkeys(feed.QUOTA_RESOURCES)),
                        "server_groups_used": groups.get(project_id, 0)}
    return out


def _quota_keys(rows: RowsFn, after: str, limit: int) -> list[str]:
    """Up to ``limit`` quota keys after ``after``, in key order: the defaults'
    ('class/...' sorts before 'project/...'), then the projects'."""
    out = []
    if after < feed.QUOTA_DEFAULT_KEY and limit > 0:
        out.append(feed.QUOTA_DEFAULT_KEY)
    start = after[len(_PROJECT_PREFIX):] if after.startswith(_PROJECT_PREFIX) else ""
    if len(out) < limit:
        out += [feed.quota_key(str(p)) for (p,) in
                rows(_QUOTA_PROJECTS_SQL, (start, start, limit - len(out)))]
    return out


# ---------------------------------------------------------------------------
# Hypervisors (a cell's compute_nodes, with the nova-compute service of their host)
# ---------------------------------------------------------------------------

_HYPERVISOR_RESOURCES = ("vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used",
                         "local_gb_used", "free_ram_mb", "free_disk_gb", "current_workload",
                         "running_vms", "disk_available_least")
_COMPUTE_NODES_SQL = (
    "SELECT cn.uuid, cn.id, cn.host, cn.hypervisor_hostname, cn.hypervisor_type, "
    "cn.hypervisor_version, cn.host_ip, "
    + ", ".join(f"cn.{name}" for name in _HYPERVISOR_RESOURCES)
    + ", cn.cpu_info, cn.stats FROM compute_nodes cn WHERE cn.deleted = 0 "
    "AND cn.uuid IN {keys}")
_NODE_SERVICES_SQL = ("SELECT sv.host, sv.id, sv.uuid, sv.disabled, sv.disabled_reason, "
                      "sv.forced_down, sv.last_seen_up, sv.created_at FROM services sv "
                      "WHERE sv.binary = 'nova-compute' AND sv.deleted = 0 "
                      "AND sv.host IN {keys} ORDER BY sv.id")
_COMPUTE_NODE_KEYS_SQL = ("SELECT uuid FROM compute_nodes WHERE uuid > ? AND deleted = 0 "
                          "AND uuid IS NOT NULL ORDER BY uuid LIMIT ?")
_COMPUTE_NODE_COUNT_SQL = ("SELECT count(*) FROM compute_nodes WHERE deleted = 0 "
                           "AND uuid IS NOT NULL")


def _uptime_of(stats_text) -> str | None:
    stats = _loads(stats_text, {})
    value = stats.get("uptime") if isinstance(stats, dict) else None
    return None if value is None else str(value)


def build_hypervisors(db, keys: Iterable[str],
                      children: frozenset[str] = ALL_CHILDREN) -> dict[str, dict | None]:
    """Hypervisor entities for compute node uuids ``keys`` (None: gone or deleted). The
    service is the host's live nova-compute one (Nova's ``service_get_by_compute_host``);
    its state follows Nova's servicegroup rule: down when forced down, or with
    ``children.service_down_time`` above 0 when its last report is older than that."""
    rows = rows_of(db)
    keys = list(dict.fromkeys(keys))
    out: dict[str, dict | None] = {key: None for key in keys}
    down_time = getattr(children, "service_down_time", 0.0)
    clock = getattr(children, "clock", None) or _utcnow
    for page in _pages(keys):
        nodes = _rows_in(rows, _COMPUTE_NODES_SQL, page)
        hosts = sorted({str(node[2]) for node in nodes if node[2]})
        services: dict[str, tuple] = {}
        for service in (_rows_in(rows, _NODE_SERVICES_SQL, hosts) if hosts else ()):
            services.setdefault(service[0], service)
        now = clock()
        for node in nodes:
            uuid, node_id, host, hostname, hv_type, hv_version, host_ip = node[:7]
            resources = node[7:7 + len(_HYPERVISOR_RESOURCES)]
            cpu_info, stats = node[7 + len(_HYPERVISOR_RESOURCES):]
            if uuid not in out:
                continue
            service = services.get(host)
            entity = {
                "uuid": uuid, "id": _int(node_id), "host": host,
                "hypervisor_hostname": hostname, "hypervisor_type": hv_type,
                "hypervisor_version": _to_int(hv_version),
                "host_ip": None if host_ip is None else str(host_ip),
                **{name: _to_int(value) for name, value in zip(_HYPERVISOR_RESOURCES, resources)},
                "cpu_info": cpu_info, "uptime": _uptime_of(stats),
                "service_id": None, "service_uuid": None, "service_disabled": False,
                "service_disabled_reason": None, "state": "down",
            }
            if service is not None:
                _host, sid, suuid, disabled, reason, forced_down, seen, created = service
                up = not forced_down and (down_time <= 0 or service_is_up(
                    seen, created, now, down_time))
                entity.update(service_id=_int(sid), service_uuid=suuid,
                              service_disabled=bool(disabled),
                              service_disabled_reason=reason, state="up" if up else "down")
            out[uuid] = entity
    return out


def _hypervisor_keys(rows: RowsFn, after: str, limit: int) -> list[str]:
    """Up to ``limit`` live compute node uuids after ``after``, in order."""
    return [str(key) for (key,) in rows(_COMPUTE_NODE_KEYS_SQL, (after, limit))]


# ---------------------------------------------------------------------------
# Services (a cell database's services rows, GET /os-services)
# ---------------------------------------------------------------------------

_SERVICES_BY_UUID_SQL = ('SELECT uuid, id, host, "binary", topic, disabled, disabled_reason, '
                         "forced_down, last_seen_up, created_at, updated_at FROM services "
                         "WHERE deleted = 0 AND uuid IN {keys}")
_SERVICE_KEYS_SQL = ("SELECT uuid FROM services WHERE deleted = 0 AND uuid > ? "
                     "ORDER BY uuid LIMIT ?")
_SERVICE_COUNT_SQL = "SELECT count(*) FROM services WHERE deleted = 0 AND uuid IS NOT NULL"


def build_services(db, keys: Iterable[str],
                   children: frozenset[str] = ALL_CHILDREN) -> dict[str, dict | None]:
    """Service entities for ``keys`` (uuids); None for one that is gone (deleted). The
    reach's ``service_down_time`` (0: no liveness rule) travels with each one."""
    rows = rows_of(db)
    keys = list(dict.fromkeys(keys))
    out: dict[str, dict | None] = {key: None for key in keys}
    down_after = int(getattr(children, "service_down_time", 0.0) or 0)
    for page in _pages(keys):
        for (uuid, sid, host, binary, topic, disabled, reason, forced_down, seen, created,
             updated) in _rows_in(rows, _SERVICES_BY_UUID_SQL, page):
            if uuid in out:
                out[uuid] = {
                    "uuid": uuid, "id": _int(sid), "host": host, "binary": binary,
                    "topic": topic, "disabled": bool(disabled), "disabled_reason": reason,
                    "forced_down": bool(forced_down), "heartbeat": iso(seen or created),
                    "down_after": down_after, "updated_at": iso(updated),
                }
    return out


def _service_keys(rows: RowsFn, after: str, limit: int) -> list[str]:
    return [str(key) for (key,) in rows(_SERVICE_KEYS_SQL, (after, limit))]


# ---------------------------------------------------------------------------
# Host aggregates (Nova's API database aggregates, aggregate_hosts, aggregate_metadata)
# ---------------------------------------------------------------------------

_AGGREGATES_SQL = ("SELECT id, uuid, name, created_at, updated_at FROM aggregates "
                   "WHERE id IN {keys}")
_AGGREGATE_HOSTS_SQL = ("SELECT aggregate_id, host FROM aggregate_hosts "
                        "WHERE aggregate_id IN {keys} ORDER BY id")
_AGGREGATE_METADATA_SQL = ("SELECT aggregate_id, \"key\", value FROM aggregate_metadata "
                           "WHERE aggregate_id IN {keys} ORDER BY id")
_AGGREGATE_IDS_SQL = "SELECT id FROM aggregates"


def build_aggregates(db, keys: Iterable[str],
                     children: frozenset[str] = ALL_CHILDREN) -> dict[str, dict | None]:
    """Host aggregate entities for ``keys`` (their ids as text); None for one that is
    gone. Hosts and metadata in row order, as Nova loads them."""
    rows = rows_of(db)
    keys = list(dict.fromkeys(keys))
    out: dict[str, dict | None] = {key: None for key in keys}
    ids = sorted({int(key) for key in keys if key.isdigit()})
    for page in _pages(ids):
        found: dict[int, dict] = {}
        for aid, uuid, name, created_at, updated_at in _rows_in(rows, _AGGREGATES_SQL, page):
            key = str(int(aid))
            if key in out:
                found[int(aid)] = out[key] = {
                    "aggregate_key": key, "id": int(aid), "uuid": uuid, "name": name,
                    "hosts": [], "metadata": {}, "created_at": iso(created_at),
                    "updated_at": iso(updated_at)}
        if found:
            present = sorted(found)
            for aid, host in _rows_in(rows, _AGGREGATE_HOSTS_SQL, present):
                found[int(aid)]["hosts"].append(host)
            for aid, key, value in _rows_in(rows, _AGGREGATE_METADATA_SQL, present):
                found[int(aid)]["metadata"][key] = value
    return out


def _aggregate_keys(rows: RowsFn, after: str, limit: int) -> list[str]:
    """Aggregate keys (ids as text) in text order: few rows, sorted here."""
    keys = sorted(str(int(aid)) for (aid,) in rows(_AGGREGATE_IDS_SQL, ()))
    return [key for key in keys if key > after][:limit]


# ---------------------------------------------------------------------------
# Server groups (Nova's API database instance_groups, instance_group_policy,
# instance_group_member)
# ---------------------------------------------------------------------------

_SERVER_GROUPS_SQL = ("SELECT id, uuid, name, project_id, user_id FROM instance_groups "
                      "WHERE uuid IN {keys}")
_SERVER_GROUP_POLICIES_SQL = ("SELECT group_id, policy, rules FROM instance_group_policy "
                              "WHERE group_id IN {keys} ORDER BY id")
_SERVER_GROUP_MEMBERS_SQL = ("SELECT group_id, instance_uuid FROM instance_group_member "
                             "WHERE group_id IN {keys} ORDER BY id")


def _group_rules(text) -> dict:
    """A group's rules as Nova's InstanceGroup.rules gives them: only
    max_server_per_host, as an integer."""
    parsed = _loads(text, {}) if text else {}
    if not isinstance(parsed, dict) or "max_server_per_host" not in parsed:
        return {}
    try:
        return {"max_server_per_host": int(str(parsed["max_server_per_host"]))}
    except ValueError:
        return {}


def build_server_groups(db, keys: Iterable[str],
                        children: frozenset[str] = ALL_CHILDREN) -> dict[str, dict | None]:
    """Server group entities for ``keys`` (group uuids): the first policy row's policy and
    rules (Nova's InstanceGroup), every member row's instance uuid; None for one gone."""
    rows = rows_of(db)
    keys = list(dict.fromkeys(keys))
    out: dict[str, dict | None] = {key: None for key in keys}
    for page in _pages(keys):
        found = {int(gid): (str(uuid), name, project_id, user_id) for gid, uuid, name,
                 project_id, user_id in _rows_in(rows, _SERVER_GROUPS_SQL, page)}
        ids = sorted(found)
        policies: dict[int, tuple] = {}
        for gid, policy, rules in _rows_in(rows, _SERVER_GROUP_POLICIES_SQL, ids):
            policies.setdefault(int(gid), (policy, rules))
        members: dict[int, list[str]] = {}
        for gid, instance_uuid in _rows_in(rows, _SERVER_GROUP_MEMBERS_SQL, ids):
            if instance_uuid is not None:
                members.setdefault(int(gid), []).append(str(instance_uuid))
        for gid, (uuid, name, project_id, user_id) in found.items():
            if uuid in out:
                policy, rules = policies.get(gid, (None, None))
                out[uuid] = {"group_key": uuid, "id": gid, "name": _str_or_none(name),
                             "project_id": _str_or_none(project_id),
                             "user_id": _str_or_none(user_id),
                             "policy": _str_or_none(policy),
                             "rules": _group_rules(rules),
                             "members": members.get(gid, [])}
    return out


# ---------------------------------------------------------------------------
# By kind, and page-wise iteration for snapshots and digests
# ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SourceKind:
    """How the cell side finds and builds the entities of one kind: the table whose
    rows are its keys (a database that has it publishes the kind), the key column,
    and the builder ``(db, keys, children) -> {key: entity or None}``.
    ``build_range``, where a kind has one: ``(rows, after, limit, children) -> [(key,
    entity)]``, a snapshot page built from a key range of the table in one pass
    (servers), instead of listing the keys and building them."""

    name: str
    table: str
    key_column: str
    build: Callable[..., dict]
    build_range: Callable[..., list] | None = None
    # ``(rows, after, limit) -> [key]`` where the key is not a column of the table
    keys_after: Callable[..., list] | None = None
    # other tables the database must have to publish the kind (Nova's cell database has
    # a legacy key_pairs table: key pairs are the API database's, beside its flavors)
    requires: tuple[str, ...] = ()

    def keys(self, rows: RowsFn, after: str, limit: int) -> list[str]:
        if self.keys_after is not None:
            return self.keys_after(rows, after, limit)
        return [key for (key,) in rows(self.key_sql, (after, limit))]

    @property
    def key_sql(self) -> str:
        return (f"SELECT {self.key_column} FROM {self.table} WHERE {self.key_column} > ? "
                f"ORDER BY {self.key_column} LIMIT ?")

    # the statement counting its entities, where that is not the table's rows
    count_query: str | None = None
    # a database that also holds this table does not publish the kind
    unless_table: str | None = None

    @property
    def count_sql(self) -> str:
        return self.count_query or f"SELECT count(*) FROM {self.table}"


SOURCE_KINDS: dict[str, SourceKind] = {kind.name: kind for kind in (
    SourceKind(feed.KIND_FLAVOR, "flavors", "flavorid",
               lambda db, keys, children: build_flavors(db, keys)),
    SourceKind(feed.KIND_INSTANCE_ACTION, "instance_actions", "id",
               build_instance_actions, build_range=_action_range, keys_after=_action_keys),
    SourceKind(feed.KIND_KEYPAIR, "key_pairs", "user_id", build_keypairs,
               keys_after=_keypair_keys, requires=("flavors",)),
    SourceKind(feed.KIND_SERVER, "instances", "uuid", build_servers,
               build_range=_server_range),
    SourceKind(feed.KIND_QUOTA, "quotas", "project_id",
               lambda db, keys, children: build_quotas(db, keys, quota_defaults_of(children)),
               keys_after=_quota_keys,
               count_query=_QUOTA_COUNT_SQL,
               # Nova's cell databases keep the quota tables of old, unused
               unless_table="instances"),
    SourceKind(feed.KIND_HYPERVISOR, "compute_nodes", "uuid", build_hypervisors,
               keys_after=_hypervisor_keys, count_query=_COMPUTE_NODE_COUNT_SQL),
    SourceKind(feed.KIND_SERVICE, "services", "uuid", build_services,
               keys_after=_service_keys, count_query=_SERVICE_COUNT_SQL),
    # Nova's API database (beside its flavors)
    SourceKind(feed.KIND_AGGREGATE, "aggregates", "id", build_aggregates,
               keys_after=_aggregate_keys, requires=("flavors",)),
    # the API database's (this project's cell schema holds server groups too, for the
    # servers' entities: those are not published)
    SourceKind(feed.KIND_SERVER_GROUP, "instance_groups", "uuid", build_server_groups,
               requires=("flavors", "instance_group_policy", "instance_group_member")),
)}
# The table a kind's entities are keyed by: a database holding it publishes the kind.
KIND_TABLES = {name: kind.table for name, kind in SOURCE_KINDS.items()}


def kinds_in(tables: Iterable[str]) -> list[str]:
    """The kinds a database with ``tables`` publishes, in snapshot order (sorted): Nova's
    API database publishes its build requests as servers (``build_requests.py``)."""
    have = set(tables)
    kinds = {name for name, kind in SOURCE_KINDS.items()
             if kind.table in have and have.issuperset(kind.requires)
             and kind.unless_table not in have}
    if has_build_requests(have):
        kinds.add(feed.KIND_SERVER)
    return sorted(kinds)


def has_build_requests(tables: Iterable[str]) -> bool:
    """Whether a database with ``tables`` is Nova's API database (build requests and
    instance mappings, no instances)."""
    have = set(tables)
    return {"build_requests", "instance_mappings"} <= have and "instances" not in have


def _of_build_requests(kind: str, children) -> bool:
    return kind == feed.KIND_SERVER and getattr(children, "build_requests", False)


def build(db, kind: str, keys: Iterable[str],
          children: frozenset[str] = ALL_CHILDREN) -> dict[str, dict | None]:
    if _of_build_requests(kind, children):
        from replica.cell import build_requests
        return build_requests.build(rows_of(db), keys)
    declared = SOURCE_KINDS.get(kind)
    if declared is None:
        raise ValueError(f"unknown kind {kind!r}")
    return declared.build(db, keys, children)


def _keys_after(rows, kind: str, children, after: str, limit: int) -> list[str]:
    """A kind's keys after ``after``, at most ``limit``, in key order."""
    if _of_build_requests(kind, children):
        from replica.cell import build_requests
        return [key for (key,) in rows(build_requests.KEYS_SQL, (after, limit))]
    return SOURCE_KINDS[kind].keys(rows, after, limit)


def count_entities(db, kinds: list[str], children: frozenset[str] = ALL_CHILDREN) -> int:
    rows = rows_of(db)
    total = 0
    for kind in kinds:
        if _of_build_requests(kind, children):
            from replica.cell import build_requests
            total += rows(build_requests.COUNT_SQL, ())[0][0]
        else:
            total += rows(SOURCE_KINDS[kind].count_sql, ())[0][0]
    return total


def page_keys(db, kinds: list[str], after: tuple[str, str] | None,
              limit: int, children: frozenset[str] = ALL_CHILDREN) -> list[tuple[str, str]]:
    """Up to ``limit`` (kind, key) pairs after the cursor, in (kind, key) order."""
    rows = rows_of(db)
    out: list[tuple[str, str]] = []
    for kind in kinds:
        if after is not None and kind < after[0]:
            continue
        start = after[1] if after is not None and kind == after[0] else ""
        for key in _keys_after(rows, kind, children, start, limit - len(out)):
            out.append((kind, key))
        if len(out) >= limit:
            break
    return out


def page_entities(db, kinds: list[str], after: tuple[str, str] | None, limit: int,
                  children: frozenset[str] = ALL_CHILDREN,
                  ) -> tuple[list[tuple[str, str, dict]], tuple[str, str] | None]:
    """Up to ``limit`` (kind, key, entity) after the cursor, in (kind, key) order,
    and the cursor for the next page (None when this was the last page)."""
    rows = rows_of(db)
    items: list[tuple[str, str, dict]] = []
    seen, last = 0, None
    for kind in kinds:
        if after is not None and kind < after[0]:
            continue
        start = after[1] if after is not None and kind == after[0] else ""
        declared = SOURCE_KINDS[kind]
        if declared.build_range is not None and not _of_build_requests(kind, children):
            built = declared.build_range(rows, start, limit - seen, children)
            items.extend((kind, key, ent) for key, ent in built if ent is not None)
            keys = [key for key, _ent in built]
        else:
            keys = _keys_after(rows, kind, children, start, limit - seen)
            if keys:
                entities = build(db, kind, keys, children)
                items.extend((kind, key, entities[key]) for key in keys
                             if entities[key] is not None)
        if keys:
            seen += len(keys)
            last = (kind, keys[-1])
        if seen >= limit:
            break
    return items, (last if seen >= limit else None)


def iter_entities(db, kinds: list[str], page: int = PAGE,
                  children: frozenset[str] = ALL_CHILDREN) -> Iterator[tuple[str, str, dict]]:
    """Every entity, page by page, in (kind, key) order. Run inside one read view
    for a consistent result."""
    after = None
    while True:
        items, after = page_entities(db, kinds, after, page, children)
        yield from items
        if after is None:
            return

