"""Builds feed entities from the normalized tables: the joins happen here, once
per change, not once per read.

``build_servers`` runs a fixed number of statements per page of uuids (one per
table, keys passed as one JSON array), never one per uuid. A snapshot page
(``page_entities``) reads its instance rows and keys in one statement and each
child table by the key range the page covers (an index range scan rather than a
seek per key). Per row, the work stays small: SQLite extracts paths from Nova's
serialized objects, a flavor text is resolved once per process (a cell has a few),
network info caches are parsed by orjson (exactly as the json module parses them,
see ``_fast_loads``), and the cyclic garbage collector waits while a page is built. Which child rows count
follows Nova's ORM relationships (``nova/db/main/models.py``):

- ``instance_extra``, ``instance_info_caches``, ``instance_system_metadata``: every
  row (Nova soft-deletes them with the instance and still loads them for a deleted
  instance; system metadata keys are hard-deleted when removed);
- ``instance_metadata``, ``block_device_mapping``: rows with ``deleted = 0``;
- ``instance_faults``: the latest row with ``deleted = 0`` (Nova reads faults with
  ``read_deleted='no'``);
- security groups, tags and the compute service (host_status): only while the
  instance is not deleted (Nova's relationship joins on ``Instance.deleted == 0``).

host_status follows Nova's ``get_instance_host_status``: no host or no
``nova-compute`` service row -> ``""``; ``forced_down`` -> ``DOWN``; ``disabled`` ->
``MAINTENANCE``; otherwise ``UP``. Not modelled: Nova's time-based liveness
(``servicegroup_api.service_is_up``, last report older than ``service_down_time``
-> ``UNKNOWN``). An entity changes only when a row changes, and liveness changes
with the clock alone, so a live service always reads as ``UP`` here. When a host
has several service rows (a deleted one and a re-registered one), the live one wins.
"""

from __future__ import annotations

import gc
import json
import re
from typing import Iterable, Iterator

import apsw
import orjson

from replica import feed
from replica.cell import schema

PAGE = 500                      # uuids per round of queries
PAGE_RANGE = 1000               # instances per round of a snapshot page (key range)
INSTANCE_NAME_TEMPLATE = "instance-%08x"

_INSTANCE_COLUMNS = (
    "id", "uuid", "project_id", "user_id", "display_name", "display_description", "hostname",
    "created_at", "updated_at", "launched_at", "terminated_at", "deleted_at", "deleted",
    "vm_state", "task_state", "power_state", "progress", "host", "node", "availability_zone",
    "launch_index", "reservation_id", "kernel_id", "ramdisk_id", "root_device_name",
    "user_data", "key_name", "config_drive", "access_ip_v4", "access_ip_v6",
    "auto_disk_config", "locked", "locked_by", "image_ref", "memory_mb", "vcpus", "root_gb",
    "ephemeral_gb",
)
_IN_KEYS = "(SELECT value FROM json_each(?))"
# Paths into Nova's serialized objects, extracted by SQLite (C) rather than parsing
# whole documents in Python: a RequestSpec embeds a full Flavor, and every flavor
# text parses to one of a handful of values.
_FLAVOR_CUR = '$.cur."nova_object.data"'
_CERT_IDS = '$."nova_object.data".ids'
_SPEC_HINTS = '$."nova_object.data".scheduler_hints'
_SPEC_AZ = '$."nova_object.data".availability_zone'


def _json_at(column: str, path: str) -> str:
    """SQL for a JSON path of a column; NULL (not an error) when the text is not JSON."""
    return f"CASE WHEN json_valid({column}) THEN json_extract({column}, '{path}') END"


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


def flavor_of(cur_data: str | None, instance: dict) -> dict:
    """The server's flavor from ``instance_extra.flavor`` "cur" data (JSON text, already
    extracted by SQL); falls back to the instance's own sizing columns when the extra
    row has none (a row mid-build). A cell has a handful of distinct flavor texts, so
    the result is cached by text (each entity gets its own copy)."""
    return _flavor(cur_data, instance["memory_mb"], instance["vcpus"], instance["root_gb"],
                   instance["ephemeral_gb"])


def _flavor(cur_data, memory_mb, vcpus, root_gb, ephemeral_gb) -> dict:
    cached = _FLAVOR_CACHE.get(cur_data) if cur_data else None
    if cached is not None:
        return {**cached, "extra_specs": dict(cached["extra_specs"])}
    data = _loads(cur_data, {})
    if not isinstance(data, dict):
        data = {}
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
    if cur_data and all(name in data for name in _SIZING):     # nothing came from the row
        if len(_FLAVOR_CACHE) >= _FLAVOR_CACHE_MAX:
            _FLAVOR_CACHE.clear()
        _FLAVOR_CACHE[cur_data] = {**flavor, "extra_specs": dict(flavor["extra_specs"])}
    return flavor


# instance_extra.flavor text (the whole {"cur", "old", "new"} document) -> its "cur"
# data as SQLite extracts it. The texts repeat across a cell (one per flavor and
# resize pair), so SQLite parses each distinct text once per process, not per row.
_CUR_DATA: dict[str, object] = {}
_CUR_DATA_MAX = 1024
_CUR_DATA_SQL = (f"SELECT value, {_json_at('value', _FLAVOR_CUR)} FROM json_each(?)")


def _cur_data_of(conn: apsw.Connection, texts) -> None:
    """Fill ``_CUR_DATA`` for the flavor texts not in it yet (one statement)."""
    missing = [t for t in dict.fromkeys(texts) if type(t) is str and t not in _CUR_DATA]
    if not missing:
        return
    if len(_CUR_DATA) + len(missing) > _CUR_DATA_MAX:
        _CUR_DATA.clear()
    for text, cur in conn.execute(_CUR_DATA_SQL, (json.dumps(missing),)):
        _CUR_DATA[text] = cur


def _cur_data(conn: apsw.Connection, text):
    if text is None:
        return None
    if type(text) is str:
        cur = _CUR_DATA.get(text, _CUR_DATA)
        if cur is not _CUR_DATA:
            return cur
    # a value of another type (or evicted meanwhile): ask SQLite as the page query did
    return conn.execute(f"SELECT {_json_at('?1', _FLAVOR_CUR)}", (text,)).fetchone()[0]


def trusted_certs_of(ids_text: str | None) -> list | None:
    ids = _loads(ids_text)
    return [str(i) for i in ids] if isinstance(ids, list) else None


def host_status(instance: dict, service: tuple | None) -> str:
    """Nova's host_status rule from the services row (see the module docstring)."""
    return _host_status(instance["host"], instance["deleted"], service)


def _host_status(host, deleted, service: tuple | None) -> str:
    if not host or deleted or service is None:
        return ""
    disabled, forced_down = service
    if forced_down:
        return "DOWN"
    if disabled:
        return "MAINTENANCE"
    return "UP"


def _hints_of(text: str | None) -> dict:
    if not text or text == "{}":
        return {}
    hints = _loads(text, {})
    return hints if isinstance(hints, dict) else {}


# request_specs: [scheduler_hints, availability_zone] as one JSON array text (one
# parse by SQLite) -> (hints, pinned az). Most texts are one of a few ('[{},null]').
_SPEC_CACHE: dict[str, tuple] = {}
_SPEC_CACHE_MAX = 256


def _spec_of(text) -> tuple[dict, str | None]:
    """What ``_hints_of`` / the az check make of the two single-path extractions."""
    if text is None:
        return {}, None
    cached = _SPEC_CACHE.get(text)
    if cached is not None:
        return {}, cached[1]
    try:
        hints, az = json.loads(text)
    except (TypeError, ValueError):
        return {}, None
    if isinstance(hints, str):          # a single-path extraction returns strings bare
        hints = _hints_of(hints)
    elif not isinstance(hints, dict):
        hints = {}
    az = az if isinstance(az, str) else None
    if not hints and type(text) is str:
        if len(_SPEC_CACHE) >= _SPEC_CACHE_MAX:
            _SPEC_CACHE.clear()
        _SPEC_CACHE[text] = (None, az)
    return hints, az


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
# row in the range without an instance row is read and ignored.
_BY_KEYS = "{col} IN (SELECT value FROM json_each(?1))"
_BY_RANGE = "{col} > ?1 AND {col} <= ?2"
_INSTANCE_SQL = f"SELECT {', '.join(_INSTANCE_COLUMNS)} FROM instances "
_CHILD_SQL = {
    # instance_uuid, flavor text, trusted cert ids; per instance the row that counts
    # comes last: live rows after deleted ones (a NULL deleted after both), then by id
    "extra": "SELECT instance_uuid, flavor, "
             f"{_json_at('trusted_certs', _CERT_IDS)} FROM instance_extra "
             "WHERE {instance_uuid} ORDER BY instance_uuid, "
             "CASE WHEN deleted IS NULL THEN 2 WHEN deleted = 0 THEN 1 ELSE 0 END, id",
    # only the keys the entity reads: image_* (a BINARY range) and locked_reason
    "sysmeta": "SELECT instance_uuid, key, value FROM instance_system_metadata "
               "WHERE {instance_uuid} AND (key = 'locked_reason' OR "
               "(key >= 'image_' AND key < 'image`')) ORDER BY instance_uuid, id",
    "caches": "SELECT instance_uuid, network_info FROM instance_info_caches "
              "WHERE {instance_uuid} ORDER BY instance_uuid, id",
    "metadata": "SELECT instance_uuid, key, value FROM instance_metadata "
                "WHERE {instance_uuid} AND deleted = 0 ORDER BY instance_uuid, id",
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
    "specs": "SELECT instance_uuid, CASE WHEN json_valid(spec) THEN "
             f"json_extract(spec, '{_SPEC_HINTS}', '{_SPEC_AZ}') END FROM request_specs "
             "WHERE {instance_uuid}",
}
_COLUMNS_NAMED = ("instance_uuid", "resource_id", "a.instance_uuid", "m.instance_uuid")


def _child_queries(where: str) -> dict[str, str]:
    out = {}
    for table, sql in _CHILD_SQL.items():
        for name in _COLUMNS_NAMED:
            sql = sql.replace("{%s}" % name, where.format(col=name))
        out[table] = sql
    return out


_CHILD_BY_KEYS = _child_queries(_BY_KEYS)
_CHILD_BY_RANGE = _child_queries(_BY_RANGE)
_SERVICES_SQL = ("SELECT host, disabled, forced_down FROM services "
                 f"WHERE \"binary\" = 'nova-compute' AND host IN {_IN_KEYS} "
                 "ORDER BY deleted = 0, id")


def _build_rows(conn: apsw.Connection, rows: list[tuple], queries: dict[str, str],
                args: tuple) -> dict[str, dict]:
    """Entities of instance ``rows`` (``_INSTANCE_COLUMNS`` tuples, cleaned); the child
    ``queries`` select their rows with ``args`` (keys or a key range). Entities hold
    no reference cycles, so the cyclic collector (which would run many times over
    the containers a page creates) waits until the page is built."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _build_entities(conn, rows, queries, args)
    finally:
        if collecting:
            gc.enable()


def _build_entities(conn: apsw.Connection, rows: list[tuple], queries: dict[str, str],
                    args: tuple) -> dict[str, dict]:
    execute = conn.execute
    extra = {uuid: (flavor, certs)          # the last row of an instance wins
             for uuid, flavor, certs in execute(queries["extra"], args)}
    _cur_data_of(conn, [flavor for flavor, _certs in extra.values()])
    images: dict[str, dict] = {}
    locked_reasons: dict[str, object] = {}
    props, props_of = None, None
    for uuid, key, value in execute(queries["sysmeta"], args):
        if key == "locked_reason":
            locked_reasons[uuid] = value
        else:
            if uuid != props_of:            # rows come grouped by instance
                props = images[uuid] = {}
                props_of = uuid
            props[key[6:]] = value
    caches: dict[str, str] = {}
    for uuid, info in execute(queries["caches"], args):
        caches[uuid] = info
    metadata: dict[str, dict] = {}
    for uuid, key, value in execute(queries["metadata"], args):
        metadata.setdefault(uuid, {})[str(key)] = value if type(value) is str else str(value)
    tags: dict[str, list] = {}
    for uuid, tag in execute(queries["tags"], args):
        tags.setdefault(uuid, []).append(tag)
    volumes: dict[str, list] = {}
    for uuid, volume_id, dot in execute(queries["volumes"], args):
        volumes.setdefault(uuid, []).append({"id": volume_id, "delete_on_termination": bool(dot)})
    groups: dict[str, list] = {}
    for uuid, name in execute(queries["groups"], args):
        groups.setdefault(uuid, []).append(name)
    faults: dict[str, dict] = {}
    for uuid, code, message, details, created in execute(queries["faults"], args):
        faults[uuid] = {"code": code, "message": message, "details": details,
                        "created": iso(created)}
    hosts = sorted({row[17] for row in rows if row[17]})
    services: dict[str, tuple] = {}
    if hosts:
        for host, disabled, forced_down in execute(_SERVICES_SQL, (json.dumps(hosts),)):
            services[host] = (bool(disabled), bool(forced_down))   # live row last, wins
    server_groups: dict[str, list] = {}
    for uuid, group in execute(queries["server_groups"], args):
        server_groups.setdefault(uuid, []).append(group)
    specs: dict[str, object] = {}
    for uuid, spec in execute(queries["specs"], args):
        specs[uuid] = spec

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
         ephemeral_gb) in rows:
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
            "availability_zone": availability_zone,
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
            "flavor": _flavor(_cur_data(conn, flavor_text), memory_mb, vcpus, root_gb,
                              ephemeral_gb),
            "metadata": metadata.get(uuid) or {},
            "tags": (tags.get(uuid) or []) if live else [],
            "network_info": network if isinstance(network, list) else [],
            "security_groups": (groups.get(uuid) or []) if live else [],
            "volumes": volumes.get(uuid) or [],
            "fault": faults.get(uuid),
            "host_status": _host_status(host, deleted, services.get(host)),
            "trusted_image_certificates": None if certs is None else trusted_certs_of(certs),
            "server_groups": server_groups.get(uuid) or [],
            "pinned_availability_zone": pinned_az,
            "scheduler_hints": hints,
        }
    return out


def _build_page(conn: apsw.Connection, keys: list[str]) -> dict[str, dict | None]:
    out: dict[str, dict | None] = {key: None for key in keys}
    rows = [_clean(row) for row in conn.execute(f"{_INSTANCE_SQL}WHERE uuid IN {_IN_KEYS}",
                                                (json.dumps(keys),))]
    if rows:
        out.update(_build_rows(conn, rows, _CHILD_BY_KEYS,
                               (json.dumps([row[1] for row in rows]),)))
    return out


def build_servers(conn: apsw.Connection, uuids: Iterable[str]) -> dict[str, dict | None]:
    """Server entities for ``uuids``; None for a uuid whose instance row is gone
    (hard-deleted or archived: the publisher sends a tombstone). A soft-deleted
    instance is an entity with ``deleted: True``. Call inside one read transaction
    for a consistent result."""
    keys = list(dict.fromkeys(uuids))
    out: dict[str, dict | None] = {}
    for page in _pages(keys):
        out.update(_build_page(conn, page))
    return out


def _server_range(conn: apsw.Connection, after: str, limit: int) -> list[tuple[str, dict]]:
    """(uuid, entity) of the first ``limit`` instances with uuid > ``after``, in order:
    the instance rows and their keys in one statement, children by key range."""
    out: list[tuple[str, dict]] = []
    while len(out) < limit:
        want = min(PAGE_RANGE, limit - len(out))
        rows = [_clean(row) for row in conn.execute(
            f"{_INSTANCE_SQL}WHERE uuid > ? ORDER BY uuid LIMIT ?", (after, want))]
        if not rows:
            break
        last = rows[-1][1]
        built = _build_rows(conn, rows, _CHILD_BY_RANGE, (after, last))
        out.extend((row[1], built[row[1]]) for row in rows)
        after = last
        if len(rows) < want:
            break
    return out


def build_flavors(conn: apsw.Connection, flavorids: Iterable[str]) -> dict[str, dict | None]:
    """Flavor entities for ``flavorids``; None for a flavor that is gone."""
    keys = list(dict.fromkeys(flavorids))
    out: dict[str, dict | None] = {}
    for page in _pages(keys):
        arg = json.dumps(page)
        out.update({key: None for key in page})
        rows = conn.execute(
            "SELECT id, flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, "
            "rxtx_factor, vcpu_weight, disabled, is_public, description, created_at "
            f"FROM flavors WHERE flavorid IN {_IN_KEYS}", (arg,)).fetchall()
        if not rows:
            continue
        ids = json.dumps([r[0] for r in rows])
        specs: dict[int, dict] = {}
        for fid, key, value in conn.execute(
                f"SELECT flavor_id, key, value FROM flavor_extra_specs WHERE flavor_id IN {_IN_KEYS} "
                "ORDER BY id", (ids,)):
            specs.setdefault(fid, {})[key] = value
        projects: dict[int, list] = {}
        for fid, project in conn.execute(
                f"SELECT flavor_id, project_id FROM flavor_projects WHERE flavor_id IN {_IN_KEYS} "
                "ORDER BY project_id", (ids,)):
            projects.setdefault(fid, []).append(project)
        for (fid, flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx,
             vcpu_weight, disabled, is_public, description, created_at) in rows:
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
# By kind, and page-wise iteration for snapshots and digests
# ---------------------------------------------------------------------------

_KEY_QUERIES = {
    feed.KIND_FLAVOR: "SELECT flavorid FROM flavors WHERE flavorid > ? ORDER BY flavorid LIMIT ?",
    feed.KIND_SERVER: "SELECT uuid FROM instances WHERE uuid > ? ORDER BY uuid LIMIT ?",
}
_COUNT_QUERIES = {
    feed.KIND_FLAVOR: "SELECT count(*) FROM flavors",
    feed.KIND_SERVER: "SELECT count(*) FROM instances",
}


def kinds_of(conn: apsw.Connection) -> list[str]:
    """The kinds this database publishes, in snapshot order (sorted)."""
    kinds = []
    if schema.is_flavor_source(conn):
        kinds.append(feed.KIND_FLAVOR)
    if schema.is_cell(conn):
        kinds.append(feed.KIND_SERVER)
    return sorted(kinds)


def build(conn: apsw.Connection, kind: str, keys: Iterable[str]) -> dict[str, dict | None]:
    if kind == feed.KIND_SERVER:
        return build_servers(conn, keys)
    if kind == feed.KIND_FLAVOR:
        return build_flavors(conn, keys)
    raise ValueError(f"unknown kind {kind!r}")


def count_entities(conn: apsw.Connection, kinds: list[str]) -> int:
    return sum(conn.execute(_COUNT_QUERIES[kind]).fetchone()[0] for kind in kinds)


def page_keys(conn: apsw.Connection, kinds: list[str], after: tuple[str, str] | None,
              limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` (kind, key) pairs after the cursor, in (kind, key) order."""
    out: list[tuple[str, str]] = []
    for kind in kinds:
        if after is not None and kind < after[0]:
            continue
        start = after[1] if after is not None and kind == after[0] else ""
        for (key,) in conn.execute(_KEY_QUERIES[kind], (start, limit - len(out))):
            out.append((kind, key))
        if len(out) >= limit:
            break
    return out


def page_entities(conn: apsw.Connection, kinds: list[str], after: tuple[str, str] | None,
                  limit: int) -> tuple[list[tuple[str, str, dict]], tuple[str, str] | None]:
    """Up to ``limit`` (kind, key, entity) after the cursor, in (kind, key) order,
    and the cursor for the next page (None when this was the last page)."""
    items: list[tuple[str, str, dict]] = []
    seen, last = 0, None
    for kind in kinds:
        if after is not None and kind < after[0]:
            continue
        start = after[1] if after is not None and kind == after[0] else ""
        if kind == feed.KIND_SERVER:
            built = _server_range(conn, start, limit - seen)
            items.extend((kind, key, ent) for key, ent in built)
            keys = [key for key, _ent in built]
        else:
            keys = [key for (key,) in conn.execute(_KEY_QUERIES[kind], (start, limit - seen))]
            if keys:
                entities = build(conn, kind, keys)
                items.extend((kind, key, entities[key]) for key in keys
                             if entities[key] is not None)
        if keys:
            seen += len(keys)
            last = (kind, keys[-1])
        if seen >= limit:
            break
    return items, (last if seen >= limit else None)


def iter_entities(conn: apsw.Connection, kinds: list[str],
                  page: int = PAGE) -> Iterator[tuple[str, str, dict]]:
    """Every entity, page by page, in (kind, key) order. Run inside one read
    transaction for a consistent view."""
    after = None
    while True:
        items, after = page_entities(conn, kinds, after, page)
        yield from items
        if after is None:
            return
