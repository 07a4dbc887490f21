"""Builds feed entities from the normalized tables: the joins happen here, once
per change, not once per read.

``build_servers`` runs a fixed number of statements per page of uuids (one per
table, keys passed as one JSON array), never one per uuid. Which child rows count
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

import json
from typing import Iterable, Iterator

import apsw

from replica import feed
from replica.cell import schema

PAGE = 500                      # uuids per round of queries
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


def iso(value) -> str | None:
    """Nova's stored datetime (``'2026-12-01 07:30:43.123456'``, or an ISO form with
    ``T`` / ``Z``) as the feed's ``'2026-12-01T07:30:43.123456'``."""
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
        "memory_mb": _int(data.get("memory_mb", instance["memory_mb"])),
        "vcpus": _int(data.get("vcpus", instance["vcpus"])),
        "root_gb": _int(data.get("root_gb", instance["root_gb"])),
        "ephemeral_gb": _int(data.get("ephemeral_gb", instance["ephemeral_gb"])),
        "swap": _int(data.get("swap")),
        "extra_specs": {str(k): str(v) for k, v in specs.items()} if isinstance(specs, dict) else {},
    }
    if cur_data and all(name in data for name in _SIZING):     # nothing came from the row
        if len(_FLAVOR_CACHE) >= _FLAVOR_CACHE_MAX:
            _FLAVOR_CACHE.clear()
        _FLAVOR_CACHE[cur_data] = {**flavor, "extra_specs": dict(flavor["extra_specs"])}
    return flavor


def trusted_certs_of(ids_text: str | None) -> list | None:
    ids = _loads(ids_text)
    return [str(i) for i in ids] if isinstance(ids, list) else None


def host_status(instance: dict, service: tuple | None) -> str:
    """Nova's host_status rule from the services row (see the module docstring)."""
    if not instance["host"] or instance["deleted"] or service is None:
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
    if (all(type(row[i]) in _STR_OK for i in _STR_AT)
            and all(type(row[i]) in _INT_OK for i in _INT_AT)):
        return row
    values = list(row)
    for i in _STR_AT:
        if type(values[i]) not in _STR_OK:
            values[i] = str(values[i])
    for i in _INT_AT:
        if type(values[i]) not in _INT_OK:
            values[i] = _to_int(values[i])
    return tuple(values)


def _instances(conn: apsw.Connection, arg: str) -> dict[str, dict]:
    cursor = conn.execute(f"SELECT {', '.join(_INSTANCE_COLUMNS)} FROM instances "
                          f"WHERE uuid IN {_IN_KEYS}", (arg,))
    out = {}
    for row in cursor:
        row = _clean(row)
        out[row[1]] = dict(zip(_INSTANCE_COLUMNS, row))
    return out


def _build_page(conn: apsw.Connection, keys: list[str]) -> dict[str, dict | None]:
    arg = json.dumps(keys)
    rows = _instances(conn, arg)
    out: dict[str, dict | None] = {key: None for key in keys}
    if not rows:
        return out
    arg = json.dumps(list(rows))

    extra: dict[str, tuple] = {}
    for uuid, flavor, certs in conn.execute(
            f"SELECT instance_uuid, {_json_at('flavor', _FLAVOR_CUR)}, "
            f"{_json_at('trusted_certs', _CERT_IDS)} FROM instance_extra "
            f"WHERE instance_uuid IN {_IN_KEYS} ORDER BY deleted != 0 DESC, id", (arg,)):
        extra[uuid] = (flavor, certs)      # a live row, ordered last, wins
    sysmeta: dict[str, dict] = {}
    for uuid, key, value in conn.execute(
            "SELECT instance_uuid, key, value FROM instance_system_metadata "
            f"WHERE instance_uuid IN {_IN_KEYS} ORDER BY id", (arg,)):
        sysmeta.setdefault(uuid, {})[key] = value
    caches: dict[str, str] = {}
    for uuid, info in conn.execute(
            "SELECT instance_uuid, network_info FROM instance_info_caches "
            f"WHERE instance_uuid IN {_IN_KEYS} ORDER BY id", (arg,)):
        caches[uuid] = info
    metadata: dict[str, dict] = {}
    for uuid, key, value in conn.execute(
            "SELECT instance_uuid, key, value FROM instance_metadata "
            f"WHERE instance_uuid IN {_IN_KEYS} AND deleted = 0 ORDER BY id", (arg,)):
        metadata.setdefault(uuid, {})[str(key)] = value if type(value) is str else str(value)
    tags: dict[str, list] = {}
    for uuid, tag in conn.execute(
            f"SELECT resource_id, tag FROM tags WHERE resource_id IN {_IN_KEYS} "
            "ORDER BY resource_id, tag", (arg,)):
        tags.setdefault(uuid, []).append(tag)
    volumes: dict[str, list] = {}
    for uuid, volume_id, dot in conn.execute(
            "SELECT instance_uuid, volume_id, delete_on_termination FROM block_device_mapping "
            f"WHERE instance_uuid IN {_IN_KEYS} AND deleted = 0 AND volume_id IS NOT NULL "
            "ORDER BY id", (arg,)):
        volumes.setdefault(uuid, []).append({"id": volume_id, "delete_on_termination": bool(dot)})
    groups: dict[str, list] = {}
    for uuid, name in conn.execute(
            "SELECT a.instance_uuid, g.name FROM security_group_instance_association a "
            "JOIN security_groups g ON g.id = a.security_group_id "
            f"WHERE a.instance_uuid IN {_IN_KEYS} AND a.deleted = 0 AND g.deleted = 0 "
            "ORDER BY a.id", (arg,)):
        groups.setdefault(uuid, []).append(name)
    faults: dict[str, dict] = {}
    for uuid, code, message, details, created in conn.execute(
            "SELECT instance_uuid, code, message, details, created_at FROM instance_faults "
            "WHERE id IN (SELECT max(id) FROM instance_faults "
            f"WHERE instance_uuid IN {_IN_KEYS} AND deleted = 0 GROUP BY instance_uuid)", (arg,)):
        faults[uuid] = {"code": code, "message": message, "details": details,
                        "created": iso(created)}
    hosts = sorted({r["host"] for r in rows.values() if r["host"]})
    services: dict[str, tuple] = {}
    if hosts:
        for host, disabled, forced_down in conn.execute(
                "SELECT host, disabled, forced_down FROM services "
                f"WHERE \"binary\" = 'nova-compute' AND host IN {_IN_KEYS} "
                "ORDER BY deleted = 0, id", (json.dumps(hosts),)):
            services[host] = (bool(disabled), bool(forced_down))   # live row last, wins
    server_groups: dict[str, list] = {}
    for uuid, group in conn.execute(
            "SELECT m.instance_uuid, g.uuid FROM instance_group_member m "
            f"JOIN instance_groups g ON g.id = m.group_id WHERE m.instance_uuid IN {_IN_KEYS} "
            "ORDER BY m.id", (arg,)):
        server_groups.setdefault(uuid, []).append(group)
    specs: dict[str, tuple] = {}
    for uuid, hints, az in conn.execute(
            f"SELECT instance_uuid, {_json_at('spec', _SPEC_HINTS)}, "
            f"{_json_at('spec', _SPEC_AZ)} FROM request_specs WHERE instance_uuid IN {_IN_KEYS}",
            (arg,)):
        specs[uuid] = (_hints_of(hints), az if isinstance(az, str) else None)

    for uuid, row in rows.items():
        live = not row["deleted"]
        flavor_text, certs = extra.get(uuid, (None, None))
        system = sysmeta.get(uuid, {})
        hints, pinned_az = specs.get(uuid, ({}, None))
        network = _loads(caches.get(uuid), [])
        out[uuid] = {
            "uuid": uuid,
            "project_id": row["project_id"] or "",
            "user_id": row["user_id"] or "",
            "display_name": row["display_name"],
            "display_description": row["display_description"],
            "hostname": row["hostname"],
            "created_at": iso(row["created_at"]) or "",
            "updated_at": iso(row["updated_at"]),
            "launched_at": iso(row["launched_at"]),
            "terminated_at": iso(row["terminated_at"]),
            "deleted_at": iso(row["deleted_at"]),
            "deleted": not live,
            "vm_state": row["vm_state"],
            "task_state": row["task_state"],
            "power_state": row["power_state"],
            "progress": row["progress"],
            "host": row["host"],
            "node": row["node"],
            "availability_zone": row["availability_zone"],
            "launch_index": row["launch_index"],
            "reservation_id": row["reservation_id"],
            "kernel_id": row["kernel_id"],
            "ramdisk_id": row["ramdisk_id"],
            "root_device_name": row["root_device_name"],
            "user_data": row["user_data"],
            "key_name": row["key_name"],
            "config_drive": row["config_drive"],
            "access_ip_v4": row["access_ip_v4"],
            "access_ip_v6": row["access_ip_v6"],
            "auto_disk_config": None if row["auto_disk_config"] is None
            else bool(row["auto_disk_config"]),
            "locked": bool(row["locked"]),
            "locked_by": row["locked_by"],
            "locked_reason": _str_or_none(system.get("locked_reason")),
            "instance_name": INSTANCE_NAME_TEMPLATE % row["id"],
            "image_ref": row["image_ref"],
            "image_properties": {k[len("image_"):]: v for k, v in system.items()
                                 if k.startswith("image_")},
            "flavor": flavor_of(flavor_text, row),
            "metadata": metadata.get(uuid, {}),
            "tags": tags.get(uuid, []) if live else [],
            "network_info": network if isinstance(network, list) else [],
            "security_groups": groups.get(uuid, []) if live else [],
            "volumes": volumes.get(uuid, []),
            "fault": faults.get(uuid),
            "host_status": host_status(row, services.get(row["host"])),
            "trusted_image_certificates": trusted_certs_of(certs),
            "server_groups": server_groups.get(uuid, []),
            "pinned_availability_zone": pinned_az,
            "scheduler_hints": hints,
        }
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
    pairs = page_keys(conn, kinds, after, limit)
    items = []
    for kind in kinds:
        keys = [key for k, key in pairs if k == kind]
        if keys:
            built = build(conn, kind, keys)
            items.extend((kind, key, built[key]) for key in keys if built[key] is not None)
    cursor = pairs[-1] if len(pairs) >= limit else None
    return items, cursor


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
