"""Entity -> replica row: the indexed columns and the pre-rendered response fragments.

A server is rendered ONCE per change, at ingest, into JSON *fragments*: one per piece
of Nova's server view that differs between microversions or audiences (admin / project
member / show only). A read concatenates the fragments its view needs in SQL (plain
column copies); the few pieces that hold links (``LINK_FRAGMENTS``) are not stored but
built by SQL around the request's prefixes from ``LINK_COLUMNS``. No JSON is encoded per
request. ``render_server_document`` / ``render_flavor_document`` build the same
documents as Python dicts at request time: tests and the "normalized" benchmark baseline
use them, and the fragments are built from the same pieces, so the two cannot disagree.

Flavor documents (and the Python rendering) hold link prefixes as tokens
(``SELF_TOKEN``, ``BOOKMARK_TOKEN``, encoded as ``\u0001S`` / ``\u0001B``), substituted
per request. Nova refuses control characters in names; a flavor string that still held
U+0001 followed by S or B would show a link prefix there, nothing worse.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import orjson

from replica import feed

# The version of every row function's output (``*_row``) and column tuple (``*_COLUMNS``).
# A publisher sends it with the rows it rendered (``replica.feed``: ``rv``), and ingest
# stores those rows as they came only if its own render has the same version: change
# it whenever a row function's output or a column tuple changes (tests/replica/
# test_render_version.py pins the rows of sample entities to it and fails until it is).
RENDER_VERSION = "3"

SELF_TOKEN = "\x01S"       # scheme://host/v2.1[/project]  (self links)
BOOKMARK_TOKEN = "\x01B"   # scheme://host[/project]       (bookmark links)
# The tokens as they appear inside encoded JSON text (what SQL replace() looks for).
SELF_TOKEN_JSON = json.dumps(SELF_TOKEN)[1:-1]
BOOKMARK_TOKEN_JSON = json.dumps(BOOKMARK_TOKEN)[1:-1]

# ---------------------------------------------------------------------------
# Nova's vm_state / task_state -> API status (nova.api.openstack.common).
# ---------------------------------------------------------------------------

_DEFAULT = "default"
_REBOOT = {"rebooting": "REBOOT", "reboot_pending": "REBOOT", "reboot_started": "REBOOT"}
_HARD = {"rebooting_hard": "HARD_REBOOT", "reboot_pending_hard": "HARD_REBOOT",
         "reboot_started_hard": "HARD_REBOOT"}
_REBUILD = {"rebuilding": "REBUILD", "rebuild_block_device_mapping": "REBUILD",
            "rebuild_spawning": "REBUILD"}
_RESIZE = {"resize_prep": "RESIZE", "resize_migrating": "RESIZE",
           "resize_migrated": "RESIZE", "resize_finish": "RESIZE"}

STATE_MAP: dict[str, dict[str, str]] = {
    "active": {_DEFAULT: "ACTIVE", **_REBOOT, **_HARD, "updating_password": "PASSWORD",
               **_REBUILD, "migrating": "MIGRATING", **_RESIZE},
    "building": {_DEFAULT: "BUILD"},
    "stopped": {_DEFAULT: "SHUTOFF", **_RESIZE, **_REBUILD},
    "resized": {_DEFAULT: "VERIFY_RESIZE", "resize_reverting": "REVERT_RESIZE"},
    "paused": {_DEFAULT: "PAUSED", "migrating": "MIGRATING"},
    "suspended": {_DEFAULT: "SUSPENDED"},
    "rescued": {_DEFAULT: "RESCUE"},
    "error": {_DEFAULT: "ERROR", **_REBUILD},
    "deleted": {_DEFAULT: "DELETED"},
    "soft-delete": {_DEFAULT: "SOFT_DELETED"},
    "shelved": {_DEFAULT: "SHELVED"},
    "shelved_offloaded": {_DEFAULT: "SHELVED_OFFLOADED"},
}

PROGRESS_STATUSES = ("ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING")
FAULT_STATUSES = ("ERROR", "DELETED")

# system_metadata image_* keys that describe the image, not its properties: Nova's 2.98
# view shows only ImageMetaProps fields.
_NOT_IMAGE_PROPERTIES = frozenset({
    "min_ram", "min_disk", "disk_format", "container_format", "base_image_ref", "size",
    "checksum", "owner", "name", "id", "status", "visibility", "protected",
    "created_at", "updated_at", "virtual_size"})


def status_from_state(vm_state: str | None, task_state: str | None) -> str:
    task_map = STATE_MAP.get(vm_state or "", {_DEFAULT: "UNKNOWN"})
    return task_map.get(task_state or _DEFAULT, task_map[_DEFAULT])


def states_for_statuses(statuses: list[str]) -> tuple[list[str], list[str]]:
    """The (vm_states, task_states) a status filter selects; task_states holds
    ``"default"`` when the vm_state alone decides (Nova then filters vm_state only)."""
    wanted = {s.lower() for s in statuses}
    vm_states, task_states = set(), set()
    for vm_state, task_map in STATE_MAP.items():
        for task_state, status in task_map.items():
            if status.lower() in wanted:
                vm_states.add(vm_state)
                task_states.add(task_state)
    return sorted(vm_states), sorted(task_states)


def server_status(entity: dict) -> str:
    if entity["deleted"]:
        return "DELETED"
    return status_from_state(entity["vm_state"], entity["task_state"])


_HOST_IDS: dict[tuple[str, str], str] = {}     # many servers share a project and host
_HOST_IDS_KEPT = 65536


def host_id(project_id: str, host: str | None) -> str:
    if not host:
        return ""
    key = (project_id, host)
    found = _HOST_IDS.get(key)
    if found is None:
        if len(_HOST_IDS) >= _HOST_IDS_KEPT:
            _HOST_IDS.clear()
        found = _HOST_IDS[key] = hashlib.sha224((project_id + host).encode()).hexdigest()
    return found


def isotime(stamp: str | None) -> str | None:
    """Nova's utils.isotime of a stored naive UTC stamp: seconds precision, 'Z'."""
    if not stamp:
        return None
    return stamp[:19].replace(" ", "T") + "Z"


def plain_time(stamp: str | None) -> str | None:
    """A stored stamp as Nova's JSON serializer writes a naive datetime
    (``OS-SRV-USG:launched_at`` / ``terminated_at``): oslo.serialization's
    ``%Y-%m-%dT%H:%M:%S.%f``, microseconds always, ``.000000`` when they are zero (every
    stamp of a MariaDB/MySQL cell, whose DATETIME columns hold whole seconds)."""
    if not stamp:
        return None
    stamp = stamp.replace(" ", "T")
    if len(stamp) == 19:                      # stored without a fraction
        return stamp + ".000000"
    if len(stamp) < 26 and stamp[19:20] == ".":
        return stamp + "0" * (26 - len(stamp))    # a shorter fraction, padded to µs
    return stamp


def _links(collection: str, ident: str) -> list[dict]:
    return [{"rel": "self", "href": f"{SELF_TOKEN}/{collection}/{ident}"},
            {"rel": "bookmark", "href": f"{BOOKMARK_TOKEN}/{collection}/{ident}"}]


def _networks(entity: dict, hide_building: bool = True) -> tuple[dict, list[str]]:
    """(addresses view, every fixed address) from one walk over network_info. The server
    view hides the addresses while the server is building; the ips view does not. The
    ip / ip6 filters match fixed addresses only: Nova asks Neutron for the ports with
    a fixed address holding the text, and a floating address is no port's."""
    networks: dict[str, tuple[list, list]] = {}
    found: list[str] = []
    shown = not hide_building or entity["vm_state"] != "building"
    for vif in entity["network_info"] or ():
        network = vif.get("network") or {}
        if shown:
            label = network.get("label")
            fixed, floating = networks.setdefault(label, ([], []))
            mac = vif.get("address")
        for subnet in network.get("subnets") or ():
            for ip in subnet.get("ips") or ():
                address = ip.get("address")
                found.append(str(address))
                fips = ip.get("floating_ips") or ()
                if not shown or ip.get("type", "fixed") != "fixed":
                    continue
                fixed.append({"version": ip.get("version"), "addr": address,
                              "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": mac})
                for fip in fips:
                    floating.append({"version": fip.get("version"), "addr": fip.get("address"),
                                     "OS-EXT-IPS:type": "floating",
                                     "OS-EXT-IPS-MAC:mac_addr": mac})
    return {label: fixed + floating for label, (fixed, floating) in networks.items()}, found


def addresses(entity: dict) -> dict:
    """Nova's addresses view from network_info: per network label, every fixed address of
    its VIFs, then their floating addresses. Hidden while the server is building."""
    return _networks(entity)[0]


def all_ips(entity: dict) -> list[str]:
    """Every fixed address (the ip / ip6 filters)."""
    return _networks(entity)[1]


# ---------------------------------------------------------------------------
# The pieces of a server document. Each piece is a dict (key order is the document's);
# which pieces a view shows is decided by ``server_pieces_for``; the pieces are also
# the fragments stored in the row (``SERVER_FRAGMENTS``). ``status`` is the entity's
# ``server_status``; ``view`` its addresses view (``_networks``).
# ---------------------------------------------------------------------------

def _base(e: dict, status: str, view: dict) -> dict:
    access_v4 = e["access_ip_v4"]
    access_v6 = e["access_ip_v6"]
    host = e["host"]
    created = e["created_at"]
    updated = e["updated_at"]
    d = {
        "accessIPv4": access_v4 if access_v4 is not None else "",
        "accessIPv6": access_v6 if access_v6 is not None else "",
        "addresses": view,
        "created": created[:19].replace(" ", "T") + "Z" if created else None,
        "hostId": host_id(e["project_id"], host),
        "id": e["uuid"],
        "metadata": e["metadata"] or {},
        "name": e["display_name"],
        "status": status,
        "tenant_id": e["project_id"] or "",
        "user_id": e["user_id"] or "",
        # Nova shows the request time when updated_at is unset (a server buried in cell0
        # by one insert): stored as null, which the read statement replaces with its own
        # time (replica.store.reader, UPDATED_UNSET), as render_server_document does.
        "updated": updated[:19].replace(" ", "T") + "Z" if updated else None,
        "OS-DCF:diskConfig": "AUTO" if e["auto_disk_config"] else "MANUAL",
    }
    if status in PROGRESS_STATUSES:
        d["progress"] = e["progress"]
    d["OS-EXT-AZ:availability_zone"] = e["availability_zone"] or ""
    d["config_drive"] = e["config_drive"]
    d["key_name"] = e["key_name"]
    d["OS-SRV-USG:launched_at"] = plain_time(e["launched_at"])
    d["OS-SRV-USG:terminated_at"] = plain_time(e["terminated_at"])
    if e["security_groups"]:
        d["security_groups"] = [{"name": n} for n in e["security_groups"]]
    d["OS-EXT-STS:task_state"] = e["task_state"]
    d["OS-EXT-STS:vm_state"] = e["vm_state"]
    d["OS-EXT-STS:power_state"] = e["power_state"]
    return d


def _faults(e: dict, status: str) -> tuple[dict, dict]:
    """(the project member's fault piece, the admin's)."""
    fault = e["fault"]
    if not fault or status not in FAULT_STATUSES:
        return {}, {}
    code = fault.get("code")
    doc = {"code": code, "created": isotime(fault.get("created")),
           "message": fault.get("message")}
    details = fault.get("details")
    if not details:
        return {"fault": doc}, {"fault": doc}
    # Details of a 500 fault may hold a traceback: admins only (Nova's view).
    admin = {"fault": {**doc, "details": details}}
    return ({"fault": doc} if code == 500 else admin), admin


def _flavor_v21(e: dict) -> dict:
    fid = str(e["flavor"]["flavorid"])
    return {"flavor": {"id": fid, "links": [
        {"rel": "bookmark", "href": f"{BOOKMARK_TOKEN}/flavors/{fid}"}]}}


def _flavor_v247(e: dict) -> dict:
    f = e["flavor"]
    return {"flavor": {"vcpus": f["vcpus"], "ram": f["memory_mb"], "disk": f["root_gb"],
                       "ephemeral": f["ephemeral_gb"], "swap": f["swap"],
                       "original_name": f["name"], "extra_specs": f["extra_specs"] or {}}}


def _image_id(e: dict) -> str:
    ref = e["image_ref"]
    if type(ref) is str and "/" not in ref and "?" not in ref:
        return ref                              # a bare image id, as Nova stores it
    return str(ref).split("?")[0].rstrip("/").split("/")[-1]


def _image_v21(e: dict) -> dict:
    if not e["image_ref"]:
        return {"image": ""}
    iid = _image_id(e)
    return {"image": {"id": iid, "links": [
        {"rel": "bookmark", "href": f"{BOOKMARK_TOKEN}/images/{iid}"}]}}


def _image_properties(e: dict) -> dict:
    return {k: v for k, v in (e["image_properties"] or {}).items()
            if v is not None and k not in _NOT_IMAGE_PROPERTIES}


def _image_v298(e: dict) -> dict:
    piece = _image_v21(e)
    if piece["image"] == "":
        return piece
    return {"image": {**piece["image"], "properties": _image_properties(e)}}


def _volumes(e: dict) -> tuple[dict, dict]:
    """(the 2.1 volumes piece, the 2.3 one)."""
    volumes = e["volumes"]
    return ({"os-extended-volumes:volumes_attached": [{"id": v["id"]} for v in volumes]},
            {"os-extended-volumes:volumes_attached": [
                {"id": v["id"], "delete_on_termination": bool(v.get("delete_on_termination"))}
                for v in volumes]})


def _ext_v21(e: dict) -> dict:
    return {"OS-EXT-SRV-ATTR:host": e["host"],
            "OS-EXT-SRV-ATTR:instance_name": e["instance_name"],
            "OS-EXT-SRV-ATTR:hypervisor_hostname": e["node"]}


def _ext_v23(e: dict) -> dict:
    return {**_ext_v21(e),
            "OS-EXT-SRV-ATTR:hostname": e["hostname"],
            "OS-EXT-SRV-ATTR:kernel_id": e["kernel_id"],
            "OS-EXT-SRV-ATTR:launch_index": e["launch_index"],
            "OS-EXT-SRV-ATTR:ramdisk_id": e["ramdisk_id"],
            "OS-EXT-SRV-ATTR:reservation_id": e["reservation_id"],
            "OS-EXT-SRV-ATTR:root_device_name": e["root_device_name"],
            "OS-EXT-SRV-ATTR:user_data": e["user_data"]}


# The one-member pieces: fragment -> (key, entity -> value).
_SINGLE = {
    "d_locked": ("locked", lambda e: bool(e["locked_by"])),
    "d_host_status": ("host_status", lambda e: e["host_status"] or ""),
    "d_description": ("description", lambda e: e["display_description"]),
    "d_tags": ("tags", lambda e: list(e["tags"])),
    "d_trusted_certs": ("trusted_image_certificates",
                        lambda e: e["trusted_image_certificates"] or None),
    "d_server_groups": ("server_groups", lambda e: list(e["server_groups"])),
    "d_locked_reason": ("locked_reason", lambda e: e["locked_reason"]),
    "d_hostname": ("OS-EXT-SRV-ATTR:hostname", lambda e: e["hostname"]),
    "d_pinned_az": ("pinned_availability_zone", lambda e: e["pinned_availability_zone"]),
    "d_scheduler_hints": ("scheduler_hints", lambda e: e["scheduler_hints"] or {}),
}


def _single(column: str):
    key, value = _SINGLE[column]
    return lambda e: {key: value(e)}


# fragment -> builder (entity -> dict). The order is the order a view concatenates them in.
SERVER_FRAGMENTS = {
    "d_base": lambda e: _base(e, server_status(e), addresses(e)),
    "d_links": lambda e: {"links": _links("servers", e["uuid"])},
    "d_fault_user": lambda e: _faults(e, server_status(e))[0],
    "d_fault_admin": lambda e: _faults(e, server_status(e))[1],
    "d_flavor_v21": _flavor_v21,
    "d_flavor_v247": _flavor_v247,
    "d_image_v21": _image_v21,
    "d_image_v298": _image_v298,
    "d_volumes_v21": lambda e: _volumes(e)[0],
    "d_volumes_v23": lambda e: _volumes(e)[1],
    "d_ext_v21": _ext_v21,
    "d_ext_v23": _ext_v23,
    **{column: _single(column) for column in _SINGLE},
}


@dataclass(frozen=True, slots=True)
class ServerView:
    """Which rendering of a server a request gets: microversion (minor of 2.x),
    admin or not, show (GET /servers/{id}) or detail list entry."""

    minor: int = 1
    admin: bool = False
    show: bool = False


def server_pieces_for(view: ServerView) -> tuple[str, ...]:
    """The fragment columns of a view, in order: the one place that encodes which
    microversion shows what (nova/api/openstack/compute/views/servers.py)."""
    v = view.minor
    pieces = ["d_base", "d_links", "d_fault_admin" if view.admin else "d_fault_user",
              "d_flavor_v247" if v >= 47 else "d_flavor_v21",
              "d_image_v298" if v >= 98 else "d_image_v21",
              "d_volumes_v23" if v >= 3 else "d_volumes_v21"]
    if view.admin:
        pieces.append("d_ext_v23" if v >= 3 else "d_ext_v21")
    gated = ((9, "d_locked", None), (16, "d_host_status", True), (19, "d_description", None),
             (26, "d_tags", None), (63, "d_trusted_certs", None),
             (71, "d_server_groups", "show"), (73, "d_locked_reason", None),
             (90, "d_hostname", False), (96, "d_pinned_az", None),
             (100, "d_scheduler_hints", None))
    for since, column, audience in gated:
        if v < since:
            continue
        if audience == "show" and not view.show:
            continue
        if audience is True and not view.admin:
            continue        # host_status: admin-only by Nova's default policy
        if audience is False and view.admin:
            continue        # hostname from 2.90: already in the admin's extended attrs
        pieces.append(column)
    return tuple(pieces)


# Fragments are encoded by orjson (compact, UTF-8: the json module's output with these
# settings, except floats of magnitude below 1e-4, written 1e-7 / 0.00001 instead of
# 1e-07 / 1e-05, and NaN / infinities, written null); the json module encodes what orjson
# refuses.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
_encode = _ENCODER.encode
_dumps = orjson.dumps


def substitute_links(value, self_prefix: str, bookmark_prefix: str):
    """Replace the link tokens in every string of a rendered document."""
    if isinstance(value, str):
        return value.replace(SELF_TOKEN, self_prefix).replace(BOOKMARK_TOKEN, bookmark_prefix)
    if isinstance(value, dict):
        return {k: substitute_links(v, self_prefix, bookmark_prefix) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_links(v, self_prefix, bookmark_prefix) for v in value]
    return value


def render_server_document(entity: dict, view: ServerView, self_prefix: str = SELF_TOKEN,
                           bookmark_prefix: str = BOOKMARK_TOKEN) -> dict:
    """One server as Nova's view builder renders it for ``view`` (a dict, links with
    the given prefixes). Pure: the request-time rendering path."""
    doc: dict = {}
    for column in server_pieces_for(view):
        doc.update(SERVER_FRAGMENTS[column](entity))
    if doc.get("updated", "") is None:
        doc["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return substitute_links(doc, self_prefix, bookmark_prefix)


def render_server_brief(entity: dict, self_prefix: str = SELF_TOKEN,
                        bookmark_prefix: str = BOOKMARK_TOKEN) -> dict:
    doc = {"id": entity["uuid"], "name": entity["display_name"],
           "links": _links("servers", entity["uuid"])}
    return substitute_links(doc, self_prefix, bookmark_prefix)


# ---------------------------------------------------------------------------
# Server rows
# ---------------------------------------------------------------------------

SERVER_INDEXED = (
    "uuid", "cell", "seq", "project_id", "user_id", "deleted", "display_name",
    "display_description", "status", "vm_state", "task_state", "power_state", "host", "node",
    "availability_zone", "image_ref", "flavor_id", "flavor_name", "key_name", "locked",
    "locked_by", "created_at", "updated_at", "launched_at", "terminated_at", "deleted_at",
    "access_ip_v4", "access_ip_v6", "config_drive", "progress", "hostname", "launch_index",
    "reservation_id", "kernel_id", "ramdisk_id", "root_device_name", "auto_disk_config",
    "ips", "tags",
)
# Fragments holding links are not stored: SQL builds them around the request's prefixes
# from these columns (replica.store.reader), so no replace() runs over stored text.
LINK_FRAGMENTS = ("d_links", "d_flavor_v21", "d_image_v21", "d_image_v298")
STORED_FRAGMENTS = tuple(f for f in SERVER_FRAGMENTS if f not in LINK_FRAGMENTS)
LINK_COLUMNS = ("flavor_ref", "image_ref_id", "image_props")
# The ips view (GET /servers/{id}/ips) reads d_base's addresses, except while the server
# is building: then the server view hides them and this column holds them (else NULL).
IPS_COLUMNS = ("addresses_building",)
# 0 for a server that is still a build request (its entity's instance_name is blank, as
# Nova's Instance.name of an instance not yet in a database): no tags resource.
CELL_COLUMNS = ("in_cell",)
SERVER_COLUMNS: tuple[str, ...] = (SERVER_INDEXED + LINK_COLUMNS + ("brief",) + STORED_FRAGMENTS
                                   + ("entity_hash", "bucket") + IPS_COLUMNS + CELL_COLUMNS)

_SPLIT = "\x00\x00"                      # between fragments in one encoder call
_SPLIT_JSON = "," + _encode(_SPLIT) + ","

# server_row builds the stored fragments in this order: the multi-member pieces, then
# the one-member ones (stored as a constant prefix and the encoded value).
_ROW_PIECES = ("d_base", "d_fault_user", "d_fault_admin", "d_flavor_v247", "d_volumes_v21",
               "d_volumes_v23", "d_ext_v21", "d_ext_v23")
_ROW_SINGLES = tuple(_SINGLE)
if STORED_FRAGMENTS != _ROW_PIECES + _ROW_SINGLES:
    raise AssertionError("server_row does not build STORED_FRAGMENTS in order")
_SINGLE_PREFIXES = tuple("," + _encode(_SINGLE[c][0]) + ":" for c in _ROW_SINGLES)
_ROW_TEXTS = 2 + len(_ROW_PIECES) + len(_ROW_SINGLES) + 2   # brief, props, ..., link ids


def _bool_int(value) -> int | None:
    return None if value is None else int(bool(value))


def _text(value) -> str:
    """Compact JSON of ``value``: orjson, or the json module for what orjson refuses
    (integers beyond 64 bits, keys that are not strings, lone surrogates)."""
    try:
        return _dumps(value).decode()
    except TypeError:       # orjson.JSONEncodeError is a TypeError
        return _encode(value)


def _texts(values: list) -> list[str]:
    """The JSON of each of ``values`` (every other item of ``values`` is ``_SPLIT``),
    from one encoder call cut apart."""
    try:
        texts = _dumps(values).decode()[1:-1].split(_SPLIT_JSON)
    except TypeError:
        texts = None
    if texts is None or 2 * len(texts) - 1 != len(values):
        # Refused by orjson, or data that holds the separator itself: one by one.
        texts = [_text(v) for v in values[::2]]
    return texts


def _fragments(dicts: list[dict]) -> list[str]:
    """Each of ``dicts`` as its members without braces ('' for an empty one)."""
    values = []
    for d in dicts:
        values.append(d)
        values.append(_SPLIT)
    return [t[1:-1] for t in _texts(values[:-1])]


def server_row(cell: str, seq: int, entity: dict, entity_hash: int | None = None) -> tuple:
    """The replica row of one server entity, in ``SERVER_COLUMNS`` order. ``entity_hash``:
    the hash of the bytes the entity arrived as, when known (else computed here)."""
    e = entity
    status = server_status(e)
    view, ips = _networks(e)
    flavor = e["flavor"]
    flavor_id = str(flavor["flavorid"])
    image = bool(e["image_ref"])
    fault_user, fault_admin = _faults(e, status)
    volumes_v21, volumes_v23 = _volumes(e)
    ext_v21 = _ext_v21(e)
    s = _SPLIT
    texts = _texts([
        {"id": e["uuid"], "name": e["display_name"]}, s,
        _image_properties(e) if image else {}, s,
        _base(e, status, view), s, fault_user, s, fault_admin, s, _flavor_v247(e), s,
        volumes_v21, s, volumes_v23, s, ext_v21, s, _ext_v23(e), s,
        # the one-member pieces, in _ROW_SINGLES order
        bool(e["locked_by"]), s, e["host_status"] or "", s, e["display_description"], s,
        list(e["tags"]), s, e["trusted_image_certificates"] or None, s,
        list(e["server_groups"]), s, e["locked_reason"], s, e["hostname"], s,
        e["pinned_availability_zone"], s, e["scheduler_hints"] or {}, s,
        # the link columns' ids
        flavor_id, s, _image_id(e) if image else ""])
    n = len(_ROW_PIECES) + 2
    stored = (texts[2][:-1],) + tuple("," + t[1:-1] if t != "{}" else ""
                                      for t in texts[3:n])
    stored += tuple(map(str.__add__, _SINGLE_PREFIXES, texts[n:-2]))
    tags = texts[n + 3]
    indexed = (
        e["uuid"], cell, seq, e["project_id"], e["user_id"], int(bool(e["deleted"])),
        e["display_name"], e["display_description"], status, e["vm_state"],
        e["task_state"], e["power_state"], e["host"], e["node"], e["availability_zone"],
        e["image_ref"], flavor_id, flavor["name"], e["key_name"],
        int(bool(e["locked"])), e["locked_by"], e["created_at"], e["updated_at"],
        e["launched_at"], e["terminated_at"], e["deleted_at"], e["access_ip_v4"],
        e["access_ip_v6"], e["config_drive"], e["progress"], e["hostname"], e["launch_index"],
        e["reservation_id"], e["kernel_id"], e["ramdisk_id"], e["root_device_name"],
        _bool_int(e["auto_disk_config"]), " ".join(ips), tags,
    )
    links = (texts[-2][1:-1], texts[-1][1:-1] if image else None, texts[1])
    if entity_hash is None:
        entity_hash = feed.entity_hash(e)
    building = _text(_networks(e, hide_building=False)[0]) if e["vm_state"] == "building" else None
    return indexed + links + (texts[0][:-1],) + stored + (entity_hash, feed.bucket_of(e["uuid"]),
                                                         building, int(bool(e["instance_name"])))


# ---------------------------------------------------------------------------
# Flavors (nova/api/openstack/compute/views/flavors.py)
# ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FlavorView:
    minor: int = 1
    detail: bool = True


# f_detail_v2102 came with the 2.102 view (schema step 4): it is the last column.
FLAVOR_FRAGMENTS = ("f_brief", "f_detail", "f_swap_v21", "f_swap_v275", "f_description",
                    "f_extra_specs", "f_detail_v2102")
FLAVOR_OPENING_FRAGMENTS = ("f_brief", "f_detail", "f_detail_v2102")
# From 2.102 the flavor view drops OS-FLV-DISABLED:disabled and rxtx_factor.
FLAVOR_V2102_DROPPED = ("OS-FLV-DISABLED:disabled", "rxtx_factor")


def flavor_pieces_for(view: FlavorView) -> tuple[str, ...]:
    """The fragment columns of a flavor view, in order
    (nova/api/openstack/compute/views/flavors.py)."""
    v = view.minor
    if not view.detail:
        return ("f_brief",) + (("f_description",) if v >= 55 else ())
    pieces = ["f_detail_v2102" if v >= 102 else "f_detail",
              "f_swap_v275" if v >= 75 else "f_swap_v21"]
    if v >= 55:
        pieces.append("f_description")
    if v >= 61:
        pieces.append("f_extra_specs")
    return tuple(pieces)


def _flavor_pairs(f: dict) -> dict[str, list[tuple[str, object]]]:
    links = _links("flavors", f["flavorid"])
    detail = [("id", f["flavorid"]), ("name", f["name"]), ("ram", f["memory_mb"]),
              ("disk", f["root_gb"]), ("OS-FLV-EXT-DATA:ephemeral", f["ephemeral_gb"]),
              ("OS-FLV-DISABLED:disabled", bool(f["disabled"])), ("vcpus", f["vcpus"]),
              ("os-flavor-access:is_public", bool(f["is_public"])),
              ("rxtx_factor", f["rxtx_factor"] or ""), ("links", links)]
    return {
        "f_brief": [("id", f["flavorid"]), ("name", f["name"]), ("links", links)],
        "f_detail": detail,
        "f_swap_v21": [("swap", f["swap"] or "")],
        "f_swap_v275": [("swap", f["swap"] or 0)],
        "f_description": [("description", f["description"])],
        "f_extra_specs": [("extra_specs", f["extra_specs"] or {})],
        "f_detail_v2102": [(k, v) for k, v in detail if k not in FLAVOR_V2102_DROPPED],
    }


def render_flavor_document(entity: dict, view: FlavorView, self_prefix: str = SELF_TOKEN,
                           bookmark_prefix: str = BOOKMARK_TOKEN) -> dict:
    pairs = _flavor_pairs(entity)
    doc: dict = {}
    for column in flavor_pieces_for(view):
        doc.update(pairs[column])
    return substitute_links(doc, self_prefix, bookmark_prefix)


FLAVOR_COLUMNS: tuple[str, ...] = (
    "flavorid", "source", "seq", "name", "memory_mb", "vcpus", "root_gb", "ephemeral_gb",
    "swap", "rxtx_factor", "vcpu_weight", "disabled", "is_public", "description", "projects",
    "created_at") + FLAVOR_FRAGMENTS[:-1] + ("entity_hash", "bucket", FLAVOR_FRAGMENTS[-1])


def flavor_row(source: str, seq: int, entity: dict, entity_hash: int | None = None) -> tuple:
    """The replica row of one flavor entity, in ``FLAVOR_COLUMNS`` order (``entity_hash``
    as for ``server_row``)."""
    f = entity
    pairs = _flavor_pairs(f)
    texts = _fragments([dict(pairs[c]) for c in FLAVOR_FRAGMENTS])
    fragments = tuple("{" + t if c in FLAVOR_OPENING_FRAGMENTS else ("," + t if t else "")
                      for c, t in zip(FLAVOR_FRAGMENTS, texts))
    return (f["flavorid"], source, seq, f["name"], f["memory_mb"], f["vcpus"], f["root_gb"],
            f["ephemeral_gb"], f["swap"], float(f["rxtx_factor"]), f["vcpu_weight"],
            int(bool(f["disabled"])), int(bool(f["is_public"])), f["description"],
            _encode(sorted(f["projects"])), f["created_at"]) + fragments[:-1] + (
            feed.entity_hash(f) if entity_hash is None else entity_hash,
            feed.bucket_of(f["flavorid"]), fragments[-1])


# ---------------------------------------------------------------------------
# Instance actions (nova/api/openstack/compute/instance_actions.py)
# ---------------------------------------------------------------------------
# An action's members without braces: ``a_v21`` (2.1: action .. message), ``a_updated``
# (',"updated_at":..' from 2.58); its events as JSON arrays, one per audience and
# microversion range: the project's (2.51+, no traceback), with the hashed host id
# (2.62+), and the admin's (the traceback; host and hostId from 2.62; details from 2.84).

INSTANCE_ACTION_FRAGMENTS = ("a_v21", "a_updated", "ev_user_v251", "ev_user_v262",
                             "ev_admin_v21", "ev_admin_v262", "ev_admin_v284")
INSTANCE_ACTION_COLUMNS: tuple[str, ...] = (
    "action_key", "cell", "seq", "instance_uuid", "action_id", "request_id", "created_at",
    "updated_at", "deleted") + INSTANCE_ACTION_FRAGMENTS + ("entity_hash", "bucket")


@dataclass(frozen=True, slots=True)
class InstanceActionView:
    minor: int = 1
    admin: bool = False


def instance_action_events_column(view: InstanceActionView) -> str | None:
    """The events column a show of ``view`` includes (None: no events)."""
    v = view.minor
    if view.admin:
        return "ev_admin_v284" if v >= 84 else "ev_admin_v262" if v >= 62 else "ev_admin_v21"
    if v < 51:
        return None
    return "ev_user_v262" if v >= 62 else "ev_user_v251"


def _action_pairs(a: dict) -> list[tuple[str, object]]:
    return [("action", a["action"]), ("instance_uuid", a["instance_uuid"]),
            ("request_id", a["request_id"]), ("user_id", a["user_id"]),
            ("project_id", a["project_id"]), ("start_time", plain_time(a["start_time"])),
            ("message", a["message"])]


def _event(e: dict, project_id: str, traceback: bool, host: bool, host_ident: bool,
           details: bool) -> dict:
    out = {"event": e["event"], "start_time": plain_time(e["start_time"]),
           "finish_time": plain_time(e["finish_time"]), "result": e["result"]}
    if traceback:
        out["traceback"] = e["traceback"]
    if host:
        out["host"] = e["host"]
    if host_ident:
        out["hostId"] = host_id(project_id, e["host"])
    if details:
        out["details"] = e["details"]
    return out


def _action_events(a: dict) -> dict[str, list[dict]]:
    project = a["project_id"] or a["instance_project_id"] or ""
    events = a["events"]
    return {
        "ev_user_v251": [_event(e, project, False, False, False, False) for e in events],
        "ev_user_v262": [_event(e, project, False, False, True, False) for e in events],
        "ev_admin_v21": [_event(e, project, True, False, False, False) for e in events],
        "ev_admin_v262": [_event(e, project, True, True, True, False) for e in events],
        "ev_admin_v284": [_event(e, project, True, True, True, True) for e in events],
    }


def render_instance_action_document(entity: dict, view: InstanceActionView,
                                    brief: bool = False) -> dict:
    """One action as Nova shows it: in a list (``brief``) or alone, with its events."""
    doc = dict(_action_pairs(entity))
    if view.minor >= 58:
        doc["updated_at"] = plain_time(entity["updated_at"])
    if not brief:
        column = instance_action_events_column(view)
        if column is not None:
            doc["events"] = _action_events(entity)[column]
    return doc


def instance_action_row(cell: str, seq: int, entity: dict,
                        entity_hash: int | None = None) -> tuple:
    """The replica row of one instance action, in ``INSTANCE_ACTION_COLUMNS`` order."""
    a = entity
    events = _action_events(a)
    members = _encode(dict(_action_pairs(a)))[1:-1]
    updated = "," + _encode({"updated_at": plain_time(a["updated_at"])})[1:-1]
    return (a["action_key"], cell, seq, a["instance_uuid"], a["id"], a["request_id"],
            a["created_at"], a["updated_at"], int(bool(a["deleted"])), members, updated,
            *(_encode(events[c]) for c in INSTANCE_ACTION_FRAGMENTS[2:]),
            feed.entity_hash(a) if entity_hash is None else entity_hash,
            feed.bucket_of(a["action_key"]))


# ---------------------------------------------------------------------------
# Key pairs (nova/api/openstack/compute/views/keypairs.py)
# ---------------------------------------------------------------------------
# Each document whole: the list entry ({"keypair": {...}}) and the show document's
# inner object, without (2.1) and with (2.2) the type.

KEYPAIR_FRAGMENTS = ("k_item_v21", "k_item_v22", "k_show_v21", "k_show_v22")
KEYPAIR_COLUMNS: tuple[str, ...] = (
    "keypair_key", "source", "seq", "user_id", "name") + KEYPAIR_FRAGMENTS + (
    "entity_hash", "bucket")


def render_keypair_document(entity: dict, minor: int, show: bool) -> dict:
    k = entity
    doc = {"name": k["name"], "public_key": k["public_key"], "fingerprint": k["fingerprint"]}
    if show:
        doc.update(user_id=k["user_id"], created_at=plain_time(k["created_at"]),
                   deleted=False, deleted_at=None, id=k["id"],
                   updated_at=plain_time(k["updated_at"]))
    if minor >= 2:
        doc["type"] = k["type"]
    return doc if show else {"keypair": doc}


def keypair_row(source: str, seq: int, entity: dict, entity_hash: int | None = None) -> tuple:
    """The replica row of one key pair, in ``KEYPAIR_COLUMNS`` order."""
    k = entity
    return (k["keypair_key"], source, seq, k["user_id"], k["name"],
            _encode(render_keypair_document(k, 1, False)),
            _encode(render_keypair_document(k, 2, False)),
            _encode(render_keypair_document(k, 1, True)),
            _encode(render_keypair_document(k, 2, True)),
            feed.entity_hash(k) if entity_hash is None else entity_hash,
            feed.bucket_of(k["keypair_key"]))
# Quota limits (nova/quota.py; nova/api/openstack/compute/views/limits.py)
# ---------------------------------------------------------------------------
# A row holds the limits as plain columns (NULL: not set for the project): a read picks
# each limit from the project's row, else the defaults' row, else Nova's own default
# (``QUOTA_NOVA_DEFAULTS``, before any quota feed arrived), and adds the project's usage.

QUOTA_COLUMNS: tuple[str, ...] = (("quota_key", "source", "seq", "project_id")
                                  + feed.QUOTA_RESOURCES
                                  + ("server_groups_used", "entity_hash", "bucket"))
QUOTA_NOVA_DEFAULTS = feed.QUOTA_NOVA_DEFAULTS
# GET /limits: each absolute limit's name and its resource, in Nova's view order, and
# the microversion from which it is no longer shown (None: shown at every one).
LIMIT_NAMES: tuple[tuple[str, str, int | None], ...] = (
    ("maxTotalRAMSize", "ram", None),
    ("maxTotalInstances", "instances", None),
    ("maxTotalCores", "cores", None),
    ("maxTotalKeypairs", "key_pairs", None),
    ("maxTotalFloatingIps", "floating_ips", 36),
    ("maxServerMeta", "metadata_items", None),
    ("maxImageMeta", "metadata_items", 39),
    ("maxPersonality", "injected_files", 57),
    ("maxPersonalitySize", "injected_file_content_bytes", 57),
    ("maxSecurityGroups", "security_groups", 36),
    ("maxSecurityGroupRules", "security_group_rules", 36),
    ("maxServerGroups", "server_groups", None),
    ("maxServerGroupMembers", "server_group_members", None),
)
# ... and each usage's name and what it counts (a usage table column, the quota row's
# server group count, or zero: Nova counts no other), with the same cut-off.
USED_NAMES: tuple[tuple[str, str, int | None], ...] = (
    ("totalRAMUsed", "ram", None),
    ("totalCoresUsed", "cores", None),
    ("totalInstancesUsed", "instances", None),
    ("totalFloatingIpsUsed", "floating_ips", 36),
    ("totalSecurityGroupsUsed", "security_groups", 36),
    ("totalServerGroupsUsed", "server_groups", None),
)


def limits_shown(minor: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (name, resource) of the absolute limits and of the usages GET /limits shows
    at microversion 2.``minor``."""
    def keep(names):
        return [(name, resource) for name, resource, until in names
                if until is None or minor < until]
    return keep(LIMIT_NAMES), keep(USED_NAMES)


def render_limits_document(limits: dict[str, int], usage: dict[str, int],
                           minor: int) -> dict:
    """GET /limits as Nova shows it, from complete limits and usages (tests' model)."""
    names, used = limits_shown(minor)
    absolute = {name: limits[resource] for name, resource in names}
    absolute.update({name: usage.get(resource, 0) for name, resource in used})
    return {"limits": {"rate": [], "absolute": absolute}}


def quota_row(source: str, seq: int, entity: dict, entity_hash: int | None = None) -> tuple:
    """The replica row of one quota limit set, in ``QUOTA_COLUMNS`` order."""
    limits = entity["limits"]
    return ((entity["quota_key"], source, seq, entity["project_id"])
            + tuple(limits[name] for name in feed.QUOTA_RESOURCES)
            + (entity["server_groups_used"],
               feed.entity_hash(entity) if entity_hash is None else entity_hash,
               feed.bucket_of(entity["quota_key"])))


# GET /os-quota-sets/{project}[/detail|/defaults]: the resources shown (Nova's sorted
# resource names), less those 2.36 and 2.57 drop.
QUOTA_SET_DROPPED_V236 = ("fixed_ips", "floating_ips", "security_group_rules",
                          "security_groups")
QUOTA_SET_DROPPED_V257 = QUOTA_SET_DROPPED_V236 + (
    "injected_files", "injected_file_content_bytes", "injected_file_path_bytes")


def quota_set_resources(minor: int) -> list[str]:
    dropped = (QUOTA_SET_DROPPED_V257 if minor >= 57 else
               QUOTA_SET_DROPPED_V236 if minor >= 36 else ())
    return [name for name in sorted(feed.QUOTA_RESOURCES) if name not in dropped]


# ---------------------------------------------------------------------------
# Hypervisors (nova/api/openstack/compute/hypervisors.py _view_hypervisor)
# ---------------------------------------------------------------------------
# Each document whole, in Nova's key order, without "servers" (a read adds them from
# the replica's servers before the closing brace): the basic view with the integer
# id (before 2.53) and with the uuid (2.53), and the detail view of each of its
# ranges: 2.1 (cpu_info as stored text), 2.28 (cpu_info parsed), 2.53 (uuids), 2.88
# (no resource fields and no cpu_info; uptime).

HYPERVISOR_FRAGMENTS = ("h_basic_v21", "h_basic_v253", "h_detail_v21", "h_detail_v228",
                        "h_detail_v253", "h_detail_v288")
HYPERVISOR_COLUMNS: tuple[str, ...] = (
    "uuid", "cell", "seq", "node_id", "host", "hypervisor_hostname", "listed",
    ) + HYPERVISOR_FRAGMENTS + ("entity_hash", "bucket")
HYPERVISOR_RESOURCES = ("vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used",
                        "local_gb_used", "free_ram_mb", "free_disk_gb", "current_workload",
                        "running_vms", "disk_available_least")
# (first minor, detail) of each fragment
_HYPERVISOR_VIEWS = {"h_basic_v21": (1, False), "h_basic_v253": (53, False),
                     "h_detail_v21": (1, True), "h_detail_v228": (28, True),
                     "h_detail_v253": (53, True), "h_detail_v288": (88, True)}


def _cpu_info_object(text: str | None):
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {}


def render_hypervisor_document(entity: dict, minor: int, detail: bool) -> dict:
    """One hypervisor as Nova's view renders it at ``minor`` (no "servers")."""
    h = entity
    uuids = minor >= 53
    doc = {"id": h["uuid"] if uuids else h["id"],
           "hypervisor_hostname": h["hypervisor_hostname"], "state": h["state"],
           "status": "disabled" if h["service_disabled"] else "enabled"}
    if not detail:
        return doc
    doc.update(hypervisor_type=h["hypervisor_type"],
               hypervisor_version=h["hypervisor_version"], host_ip=h["host_ip"])
    doc["service"] = {"id": h["service_uuid"] if uuids else h["service_id"],
                      "host": h["host"], "disabled_reason": h["service_disabled_reason"]}
    if minor < 88:
        for name in HYPERVISOR_RESOURCES:
            doc[name] = h[name]
        # Nova's column is NOT NULL: a node without one shows "" (2.28: {})
        doc["cpu_info"] = (_cpu_info_object(h["cpu_info"]) if minor >= 28
                           else h["cpu_info"] or "")
    else:
        doc["uptime"] = h["uptime"]
    return doc


def hypervisor_row(cell: str, seq: int, entity: dict, entity_hash: int | None = None) -> tuple:
    """The replica row of one hypervisor, in ``HYPERVISOR_COLUMNS`` order (``listed`` 0:
    its host has no live nova-compute service, and Nova's API leaves it out)."""
    h = entity
    return (h["uuid"], cell, seq, h["id"], h["host"], h["hypervisor_hostname"],
            int(h["service_id"] is not None),
            *(_encode(render_hypervisor_document(h, *_HYPERVISOR_VIEWS[c]))
              for c in HYPERVISOR_FRAGMENTS),
            feed.entity_hash(h) if entity_hash is None else entity_hash,
            feed.bucket_of(h["uuid"]))


# ---------------------------------------------------------------------------
# Services (nova/api/openstack/compute/services.py, _get_service_detail)
# ---------------------------------------------------------------------------
# A service's document in Nova's key order: binary, host, id, zone, status, state,
# updated_at, disabled_reason and, from 2.11, forced_down. The id (the row's id, from
# 2.53 its uuid), the zone (the host's aggregates') and the state (the heartbeat's age
# against the replica's clock) are put in when it is read (replica.store.reader). The
# availability zones' detail reads the same row: disabled, topic (compute: zoned by
# its host's aggregates), the liveness columns, and s_updated_at (the updated_at value
# as JSON: Nova's zone detail shows the service's updated_at as os-services does).

SERVICE_UUID_ID_MINOR = 53
SERVICE_FORCED_DOWN_MINOR = 11
SERVICE_FRAGMENTS = ("s_head", "s_id_v21", "s_id_v253", "s_status", "s_updated_at", "s_tail",
                     "s_forced")
SERVICE_COLUMNS: tuple[str, ...] = (
    "uuid", "cell", "seq", "id", "host", "binary", "topic", "disabled", "forced_down",
    "heartbeat", "down_after") + SERVICE_FRAGMENTS + ("entity_hash", "bucket")


def service_row(cell: str, seq: int, entity: dict, entity_hash: int | None = None) -> tuple:
    """The replica row of one service, in ``SERVICE_COLUMNS`` order."""
    s = entity
    return (s["uuid"], cell, seq, s["id"], s["host"], s["binary"], s["topic"],
            int(s["disabled"]), int(s["forced_down"]), s["heartbeat"], s["down_after"],
            '{"binary":' + _encode(s["binary"]) + ',"host":' + _encode(s["host"]),
            ',"id":' + _encode(s["id"]), ',"id":' + _encode(s["uuid"]),
            ',"status":' + ('"disabled"' if s["disabled"] else '"enabled"'),
            _encode(plain_time(s["updated_at"])),
            ',"disabled_reason":' + _encode(s["disabled_reason"]),
            ',"forced_down":' + _encode(s["forced_down"]),
            feed.entity_hash(s) if entity_hash is None else entity_hash,
            feed.bucket_of(s["uuid"]))


# ---------------------------------------------------------------------------
# Host aggregates (nova/api/openstack/compute/aggregates.py, _marshall_aggregate)
# ---------------------------------------------------------------------------
# The whole aggregate object in Nova's key order (the object's fields, then its
# availability_zone), without (2.1) and with (2.41) the uuid.

AGGREGATE_UUID_MINOR = 41
AGGREGATE_COLUMNS: tuple[str, ...] = (
    "aggregate_key", "source", "seq", "id", "uuid", "hosts", "availability_zone",
    "a_doc_v21", "a_doc_v241", "entity_hash", "bucket")


def render_aggregate_document(entity: dict, minor: int) -> dict:
    a = entity
    doc = {"id": a["id"]}
    if minor >= AGGREGATE_UUID_MINOR:
        doc["uuid"] = a["uuid"]
    doc.update(name=a["name"], hosts=list(a["hosts"]), metadata=dict(a["metadata"]),
               created_at=plain_time(a["created_at"]), updated_at=plain_time(a["updated_at"]),
               deleted_at=None, deleted=False,
               availability_zone=a["metadata"].get("availability_zone"))
    return doc


def aggregate_row(source: str, seq: int, entity: dict, entity_hash: int | None = None) -> tuple:
    """The replica row of one host aggregate, in ``AGGREGATE_COLUMNS`` order."""
    a = entity
    return (a["aggregate_key"], source, seq, a["id"], a["uuid"], _encode(list(a["hosts"])),
            a["metadata"].get("availability_zone"),
            _encode(render_aggregate_document(a, 1)),
            _encode(render_aggregate_document(a, AGGREGATE_UUID_MINOR)),
            feed.entity_hash(a) if entity_hash is None else entity_hash,
            feed.bucket_of(a["aggregate_key"]))


# ---------------------------------------------------------------------------
# Server groups (nova/api/openstack/compute/server_groups.py): a group's document in
# pieces around its members, which the read fills in (the members whose server is
# neither deleted nor soft-deleted, as Nova shows them): the head before 2.64 (policies, metadata) and from it
# (policy, rules), and the tail from 2.13 (project and user).
# ---------------------------------------------------------------------------

SERVER_GROUP_COLUMNS: tuple[str, ...] = (
    "group_key", "source", "seq", "id", "project_id", "members", "sg_head_v21", "sg_head_v264",
    "sg_tail_v213", "entity_hash", "bucket")


def server_group_head(entity: dict, minor: int) -> str:
    """The group's document up to its members: '{"id":...,"name":...,...'."""
    g = entity
    doc = {"id": g["group_key"], "name": g["name"]}
    if minor >= 64:
        doc.update(policy=g["policy"], rules=g["rules"])
    else:
        doc.update(policies=[g["policy"]] if g["policy"] else [], metadata={})
    return _encode(doc)[:-1]


def server_group_tail(entity: dict, minor: int) -> str:
    """The group's document after its members: '}' or ',"project_id":..,"user_id":..}'."""
    if minor < 13:
        return "}"
    return "," + _encode({"project_id": entity["project_id"],
                          "user_id": entity["user_id"]})[1:]


def render_server_group(entity: dict, minor: int, members: list[str]) -> dict:
    """A group as Nova shows it with ``members`` (tests' model)."""
    return json.loads(server_group_head(entity, minor) + ',"members":' + _encode(members)
                      + server_group_tail(entity, minor))


def server_group_row(source: str, seq: int, entity: dict,
                     entity_hash: int | None = None) -> tuple:
    """The replica row of one server group, in ``SERVER_GROUP_COLUMNS`` order."""
    g = entity
    return (g["group_key"], source, seq, g["id"], g["project_id"], _encode(g["members"]),
            server_group_head(g, 1), server_group_head(g, 64), server_group_tail(g, 13),
            feed.entity_hash(g) if entity_hash is None else entity_hash,
            feed.bucket_of(g["group_key"]))
