"""Servers that are still build requests, as server entities of Nova's API database.

Between ``POST /servers`` and the conductor's write of the instance into a cell, a server
exists only in the API database: a ``build_requests`` row (the serialized Instance, its
tags and block device mappings), an ``instance_mappings`` row without a cell, a request
spec. nova-api lists and shows it (BUILD, no host); so does the appliance: the publisher
of the API database (``appliance cell --flavors``, the flavor source) publishes these
servers as ``server`` entities of its own feed, built here.

Ownership: a replica row belongs to the feed that last upserted it, and a tombstone
removes a row only for the feed that owns it (``replica.store.writer``). When the
conductor writes the instance into its cell, that cell's feed publishes the server and
takes the row over; the build request's removal (or the mapping getting its cell) makes
this feed publish a tombstone, which then removes nothing. A build request whose mapping
already names a cell is not published (the cell owns the server), so a late read of this
feed never takes a server back from its cell for good: the mapping change and the build
request's removal both make the cell's publisher publish the server again (they are API
database rows of one of its servers).

The SQL is portable (SQLite and MariaDB), as in ``entity.py``.
"""

from __future__ import annotations

from typing import Iterable

from replica.cell import entity

# The part of ``entity.CHILD_TABLES`` that marks a database holding build requests.
PART = "build_requests"
NEEDS = (("build_requests", "instance_uuid"), ("build_requests", "instance"),
         ("instance_mappings", "cell_id"))

# Build requests whose instance has no cell yet (no mapping, or one without a cell).
_UNPLACED = ("FROM build_requests br LEFT JOIN instance_mappings im "
             "ON im.instance_uuid = br.instance_uuid WHERE im.cell_id IS NULL")
KEYS_SQL = (f"SELECT br.instance_uuid {_UNPLACED} AND br.instance_uuid > ? "
            "ORDER BY br.instance_uuid LIMIT ?")
COUNT_SQL = f"SELECT count(*) {_UNPLACED}"
_ROWS_SQL = (f"SELECT br.instance_uuid, br.project_id, br.instance, br.tags, "
             f"br.block_device_mappings, br.created_at, br.updated_at {_UNPLACED} "
             "AND br.instance_uuid IN {keys}")
_GROUPS_SQL = ("SELECT m.instance_uuid, g.uuid FROM instance_group_member m "
               "JOIN instance_groups g ON g.id = m.group_id WHERE m.instance_uuid IN {keys} "
               "ORDER BY m.instance_uuid, m.id")
_SPECS_SQL = "SELECT instance_uuid, spec FROM request_specs WHERE instance_uuid IN {keys}"


def _data(value) -> dict:
    """The fields of a serialized Nova object (its ``nova_object.data``), or {}."""
    doc = entity._loads(value) if isinstance(value, str) else value
    data = doc.get("nova_object.data") if isinstance(doc, dict) else None
    return data if isinstance(data, dict) else {}


def _objects(value) -> list[dict]:
    """The members' fields of a serialized Nova object list (TagList, ...)."""
    members = _data(value).get("objects")
    return [_data(m) for m in members] if isinstance(members, list) else []


def _flavor(data: dict) -> dict:
    specs = data.get("extra_specs")
    return {
        "flavorid": str(data.get("flavorid") or ""),
        "name": str(data.get("name") or ""),
        "memory_mb": entity._int(data.get("memory_mb")),
        "vcpus": entity._int(data.get("vcpus")),
        "root_gb": entity._int(data.get("root_gb")),
        "ephemeral_gb": entity._int(data.get("ephemeral_gb")),
        "swap": entity._int(data.get("swap")),
        "extra_specs": ({str(k): str(v) for k, v in specs.items()}
                        if isinstance(specs, dict) else {}),
    }


def _str_dict(value) -> dict:
    return {str(k): v if type(v) is str else str(v)
            for k, v in value.items()} if isinstance(value, dict) else {}


def _entity(uuid: str, project_id, instance_text, tags_text, bdms_text, created_at,
            updated_at, groups: list, spec) -> dict | None:
    inst = _data(instance_text)
    if not inst:
        return None                 # unreadable: Nova itself treats it as not found
    sysmeta = _str_dict(inst.get("system_metadata"))
    certs = _data(inst.get("trusted_certs")).get("ids") if inst.get("trusted_certs") else None
    hints, pinned_az = entity._spec_of(spec)
    auto_disk = inst.get("auto_disk_config")
    return {
        "uuid": uuid,
        "project_id": inst.get("project_id") or project_id or "",
        "user_id": inst.get("user_id") or "",
        "display_name": inst.get("display_name"),
        "display_description": inst.get("display_description"),
        "hostname": inst.get("hostname"),
        "created_at": entity.iso(created_at) or "",
        "updated_at": entity.iso(updated_at),
        "launched_at": None,
        "terminated_at": None,
        "deleted_at": None,
        "deleted": False,
        "vm_state": inst.get("vm_state"),
        "task_state": inst.get("task_state"),
        "power_state": inst.get("power_state"),
        "progress": inst.get("progress"),
        "host": None,
        "node": None,
        "availability_zone": inst.get("availability_zone"),
        "launch_index": inst.get("launch_index"),
        "reservation_id": inst.get("reservation_id"),
        "kernel_id": inst.get("kernel_id"),
        "ramdisk_id": inst.get("ramdisk_id"),
        "root_device_name": inst.get("root_device_name"),
        "user_data": inst.get("user_data"),
        "key_name": inst.get("key_name"),
        "config_drive": inst.get("config_drive"),
        "access_ip_v4": inst.get("access_ip_v4"),
        "access_ip_v6": inst.get("access_ip_v6"),
        "auto_disk_config": None if auto_disk is None else bool(auto_disk),
        "locked": bool(inst.get("locked")),
        "locked_by": inst.get("locked_by"),
        "locked_reason": sysmeta.get("locked_reason"),
        # Nova's Instance.name of an instance not yet in a database (no id): blank.
        "instance_name": "",
        "image_ref": inst.get("image_ref"),
        "image_properties": {k[6:]: v for k, v in sysmeta.items() if k.startswith("image_")},
        "flavor": _flavor(_data(inst.get("flavor"))),
        "metadata": _str_dict(inst.get("metadata")),
        "tags": sorted(str(t.get("tag")) for t in _objects(tags_text) if t.get("tag")),
        "network_info": [],
        "security_groups": [],
        "volumes": [{"id": b["volume_id"], "delete_on_termination":
                     bool(b.get("delete_on_termination"))}
                    for b in _objects(bdms_text) if b.get("volume_id")],
        "fault": None,
        "host_status": "",
        "trusted_image_certificates": list(certs) if isinstance(certs, list) else None,
        "server_groups": groups,
        "pinned_availability_zone": pinned_az,
        "scheduler_hints": hints,
    }


def build(rows: entity.RowsFn, uuids: Iterable[str]) -> dict[str, dict | None]:
    """Entities of the servers ``uuids`` that are unplaced build requests; None for the
    others (the publisher sends a tombstone, which removes only a row of its own)."""
    keys = list(dict.fromkeys(uuids))
    out: dict[str, dict | None] = {key: None for key in keys}
    found = entity._rows_in(rows, _ROWS_SQL, keys) if keys else []
    if not found:
        return out
    uuids = [row[0] for row in found]
    groups: dict[str, list] = {}
    for uuid, group in entity._rows_in(rows, _GROUPS_SQL, uuids):
        groups.setdefault(uuid, []).append(group)
    specs = dict(entity._rows_in(rows, _SPECS_SQL, uuids))
    for uuid, project_id, instance, tags, bdms, created_at, updated_at in found:
        out[uuid] = _entity(uuid, project_id, instance, tags, bdms, created_at, updated_at,
                            groups.get(uuid, []), specs.get(uuid))
    return out
