"""The feed protocol: what a cell publishes and what the appliance accepts.

Pure encode / decode / validate: no I/O, no database. The cell side
(``replica.cell``) and the appliance side (``replica.ingest``) share this module
and nothing else.

Wire format: one msgpack map per nanomsg message.

Feed (PUB/SUB), the first two keys of every message are ``v`` (feed schema
version) and ``t`` (message type)::

    {"v": 2, "t": "batch", "cell": str, "epoch": str, ["rv": str,]
     "events": [{"s": seq, "k": kind, "o": op, "id": key, "e": entity-or-None[, "r": row]},
                ...]}
    {"v": 2, "t": "hb", "cell": str, "epoch": str, "head": int, "oldest": int, "ts": float}

``kind`` is one of ``FEED_KINDS`` (``"server"``: key the instance uuid, ``"flavor"``:
key the flavorid, ...).
``op`` is ``"u"`` (upsert: ``e`` is the whole entity) or ``"d"`` (tombstone: ``e`` is None).
Seqs in a batch are consecutive and increase by exactly 1 per event within an epoch.

Pre-rendered rows (optional, within version 2: a decoder that does not know them passes
them by): a publisher may send with an upsert the replica row its entity renders to
(``r``: the row's values in the render's column order, the row's cell, seq and entity
hash those of the event), and in the batch the version of the render that made the rows
(``rv``: ``replica.render.RENDER_VERSION``). An appliance whose render has that version
stores the row as it came (after checks of its shape, key, cell, seq and hash), without
decoding the entity or rendering it again: a change is rendered once, where it happens,
not once per appliance. An appliance of another render version, and any event without
a row, renders the entity itself. Replay pages carry rows the same way (the reply's
``rv``); snapshot pages and fetches carry entities only.

Entities on the wire: from version 2, an entity is its bytes (``entity_bytes``: compact
JSON) in a msgpack bin, wherever it travels (batches, replay, snapshot pages, fetch).
Its hash is the hash of exactly those bytes, on both sides, so the receiver hashes
without encoding anything, and a resync recognises an entity it holds already without
decoding it. Version 1 (entities as msgpack maps) is refused.

Control (REQ/REP): a request is ``{"v": 2, "op": name, ...args}``, a reply is
``{"ok": True, ...}`` or ``{"ok": False, "error": code, "message": str}``; see
``CONTROL_OPS`` for each operation's arguments and reply.

With a key file on both sides every message above travels sealed (``replica.sealing``:
a frame that starts 0xc1 0x01, and 0xc1 is a byte msgpack never uses); this module sees
only the plain messages.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import operator
import re
import uuid as uuidlib
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson
KIND_SERVER_GROUP = "server_group"

FEED_VERSION = 2                # the version this code sends
FEED_VERSIONS = (2,)            # versions this code can decode
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_SEQ = 2 ** 63 - 1          # SQLite's largest integer: no position can go past it
DIGEST_BUCKETS = 256            # buckets of a drift check: first byte of the key's hash

KIND_SERVER = "server"
KIND_FLAVOR = "flavor"
KIND_INSTANCE_ACTION = "instance_action"
KIND_KEYPAIR = "keypair"
KIND_QUOTA = "quota"
KIND_HYPERVISOR = "hypervisor"
KIND_SERVICE = "service"
KIND_AGGREGATE = "aggregate"
OP_UPSERT = "u"
OP_DELETE = "d"


class FeedError(ValueError):
    """A message that cannot be accepted. ``reason`` is a short stable code for
    counting (``malformed``, ``oversized``, ``unknown_version``, ``bad_entity``, ...);
    the message says what exactly was wrong."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made
# building the events of a batch about 1 us per event of ingest's time. Nothing changes
# an event once it is built.
@dataclass(slots=True)
class Event:
    seq: int
    kind: str
    op: str
    key: str
    entity: dict | bytes | None      # bytes: its entity_bytes, already encoded
    entity_hash: int | None = None   # of the bytes it arrived as; None: not hashed yet
    row: list | tuple | None = None  # the pre-rendered replica row sent with it, if any


@dataclass(frozen=True, slots=True)
class Batch:
    cell: str
    epoch: str
    events: tuple[Event, ...]
    render_version: str | None = None   # of the events' pre-rendered rows (``rv``)

    @property
    def first_seq(self) -> int:
        return self.events[0].seq

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq


@dataclass(frozen=True, slots=True)
class Heartbeat:
    cell: str
    epoch: str
    head: int
    oldest: int
    ts: float


# ---------------------------------------------------------------------------
# Entities. Field -> accepted types. Every field is required (None where allowed).
# Server entities are flat records built by the publisher from Nova's cell tables:
# names follow Nova's columns; datetimes are ISO 8601 strings without a zone
# ("2026-12-01T07:30:43.000000", UTC), as Nova's DB stores them.
# ---------------------------------------------------------------------------

_S = (str,)
_SN = (str, type(None))
_IN = (int, type(None))
_B = (bool,)
_BN = (bool, type(None))

SERVER_FIELDS: dict[str, tuple] = {
    "uuid": _S,
    "project_id": _S,
    "user_id": _S,
    "display_name": _SN,
    "display_description": _SN,
    "hostname": _SN,
    "created_at": _S,
    "updated_at": _SN,
    "launched_at": _SN,
    "terminated_at": _SN,
    "deleted_at": _SN,
    "deleted": _B,              # soft-deleted (Nova: deleted != 0); shown only with changes-since
    "vm_state": _SN,
    "task_state": _SN,
    "power_state": _IN,
    "progress": _IN,
    "host": _SN,
    "node": _SN,
    "availability_zone": _SN,
    "launch_index": _IN,
    "reservation_id": _SN,
    "kernel_id": _SN,
    "ramdisk_id": _SN,
    "root_device_name": _SN,
    "user_data": _SN,
    "key_name": _SN,
    "config_drive": _SN,
    "access_ip_v4": _SN,
    "access_ip_v6": _SN,
    "auto_disk_config": _BN,
    "locked": _B,
    "locked_by": _SN,           # "admin" | "owner" | None
    "locked_reason": _SN,       # instance_system_metadata['locked_reason']
    "instance_name": _S,        # "instance-%08x" % instances.id, as Nova's template
    "image_ref": _SN,           # "" or None when booted from volume
    "image_properties": (dict,),  # system_metadata image_* keys, prefix stripped
    "flavor": (dict,),          # see FLAVOR_OF_SERVER_FIELDS (instance_extra.flavor "cur")
    "metadata": (dict,),        # instance_metadata key -> value
    "tags": (list,),            # tags.tag, sorted
    "network_info": (list,),    # instance_info_caches.network_info, parsed
    "security_groups": (list,),  # security group names, in association order
    "volumes": (list,),         # [{"id": volume_id, "delete_on_termination": bool}] by BDM id
    "fault": (dict, type(None)),  # latest instance_faults row: code, message, details, created
    "host_status": _SN,         # from services: "UP" | "DOWN" | "MAINTENANCE" | "UNKNOWN" | "" | None
    "trusted_image_certificates": (list, type(None)),
    "server_groups": (list,),   # server group uuids
    "pinned_availability_zone": _SN,
    "scheduler_hints": (dict,),
}

FLAVOR_OF_SERVER_FIELDS: dict[str, tuple] = {
    "flavorid": _S,
    "name": _S,
    "memory_mb": (int,),
    "vcpus": (int,),
    "root_gb": (int,),
    "ephemeral_gb": (int,),
    "swap": (int,),
    "extra_specs": (dict,),
}

FLAVOR_FIELDS: dict[str, tuple] = {
    "flavorid": _S,
    "name": _S,
    "memory_mb": (int,),
    "vcpus": (int,),
    "root_gb": (int,),
    "ephemeral_gb": (int,),
    "swap": (int,),
    "rxtx_factor": (float, int),
    "vcpu_weight": _IN,
    "disabled": _B,
    "is_public": _B,
    "description": _SN,
    "extra_specs": (dict,),
    "projects": (list,),        # flavor_projects.project_id, sorted (private flavors)
    "created_at": _S,
}
# An instance action (Nova's cell tables instance_actions and instance_actions_events):
# keyed by ``action_key`` (``instance_action_key``: the instance uuid and the action's
# id in the cell, zero-padded so that keys sort as (instance, id)), with its events
# in Nova's order (newest first).
INSTANCE_ACTION_FIELDS: dict[str, tuple] = {
    "action_key": _S,
    "id": (int,),
    "instance_uuid": _S,
    "instance_project_id": _SN,  # the instance's project (hostId when the action has none)
    "action": _SN,
    "request_id": _SN,
    "user_id": _SN,
    "project_id": _SN,
    "start_time": _SN,
    "finish_time": _SN,
    "message": _SN,
    "created_at": _SN,
    "updated_at": _SN,
    "deleted": _B,
    "events": (list,),          # of INSTANCE_ACTION_EVENT_FIELDS maps, newest first
}

INSTANCE_ACTION_EVENT_FIELDS: dict[str, tuple] = {
    "event": _SN,
    "start_time": _SN,
    "finish_time": _SN,
    "result": _SN,
    "traceback": _SN,
    "host": _SN,
    "details": _SN,
}


def instance_action_key(instance_uuid: str, action_id: int) -> str:
    """The feed key of an instance action."""
    return f"{instance_uuid}/{action_id:020d}"

# A key pair (Nova's API database table key_pairs): keyed by ``keypair_key`` (its user
# and name: a name is unique per user).
KEYPAIR_FIELDS: dict[str, tuple] = {
    "keypair_key": _S,
    "id": (int,),
    "user_id": _S,
    "name": _S,
    "fingerprint": _SN,
    "public_key": _SN,
    "type": _S,                 # "ssh" | "x509"
    "created_at": _SN,
    "updated_at": _SN,
}


def keypair_key(user_id: str, name: str) -> str:
    """The feed key of a key pair (a user id has no '/')."""
    return f"{user_id}/{name}"


# Nova's quota resources (nova.quota.QUOTAS), each a hard limit or None (not set).
QUOTA_RESOURCES = ("instances", "cores", "ram", "metadata_items", "injected_files",
                   "injected_file_content_bytes", "injected_file_path_bytes", "key_pairs",
                   "server_groups", "server_group_members", "fixed_ips", "floating_ips",
                   "security_groups", "security_group_rules")
QUOTA_LIMIT_FIELDS: dict[str, tuple] = {name: _IN for name in QUOTA_RESOURCES}
# Nova 34's [quota] option defaults (a resource without an option: -1, unlimited).
QUOTA_NOVA_DEFAULTS: dict[str, int] = {
    "instances": 10, "cores": 20, "ram": 50 * 1024, "metadata_items": 128,
    "injected_files": 5, "injected_file_content_bytes": 10 * 1024,
    "injected_file_path_bytes": 255, "key_pairs": 100, "server_groups": 10,
    "server_group_members": 10, "fixed_ips": -1, "floating_ips": -1, "security_groups": -1,
    "security_group_rules": -1,
}
# The quota limits of one project (Nova's API database ``quotas``: only the limits set
# for it) or the defaults (``QUOTA_DEFAULT_KEY``: the quota class ``default`` over the
# publisher's configured defaults, every limit set), and the project's server groups
# (``instance_groups``), counted by the publisher.
QUOTA_FIELDS: dict[str, tuple] = {
    "quota_key": _S,
    "project_id": _SN,          # None for the defaults
    "limits": (dict,),          # see QUOTA_LIMIT_FIELDS
    "server_groups_used": (int,),
}
QUOTA_DEFAULT_KEY = "class/default"


def quota_key(project_id: str) -> str:
    """The feed key of a project's quota limits."""
    return f"project/{project_id}"


# A hypervisor (a cell's ``compute_nodes`` row, not deleted) with the cell's live
# ``nova-compute`` service of its host (``service_id`` None: none, and Nova's API skips
# the node), keyed by the compute node's uuid. ``state`` is Nova's servicegroup rule as
# the publisher judged it when it built the entity ("down": forced down, or with a
# liveness rule no report within service_down_time; the publisher builds the entity
# again when that changes). ``uptime``: the ``uptime`` of the node's stats, if any.
HYPERVISOR_FIELDS: dict[str, tuple] = {
    "uuid": _S,
    "id": (int,),
    "host": _SN,
    "hypervisor_hostname": _SN,
    "hypervisor_type": _SN,
    "hypervisor_version": _IN,
    "host_ip": _SN,
    "vcpus": _IN,
    "memory_mb": _IN,
    "local_gb": _IN,
    "vcpus_used": _IN,
    "memory_mb_used": _IN,
    "local_gb_used": _IN,
    "free_ram_mb": _IN,
    "free_disk_gb": _IN,
    "current_workload": _IN,
    "running_vms": _IN,
    "disk_available_least": _IN,
    "cpu_info": _SN,
    "uptime": _SN,
    "service_id": _IN,
    "service_uuid": _SN,
    "service_disabled": (bool,),
    "service_disabled_reason": _SN,
    "state": _S,                # "up" | "down"
}


# A service (a cell database's ``services`` row, not soft-deleted), keyed by its uuid:
# what GET /os-services shows. ``heartbeat`` is Nova's last report (``last_seen_up``,
# else ``created_at``) and ``down_after`` the publisher's ``service_down_time``
# (seconds; 0: no liveness rule, up unless forced down): the replica judges up or down
# against its own clock when it is read, so time passing needs no event.
SERVICE_FIELDS: dict[str, tuple] = {
    "uuid": _S,
    "id": (int,),
    "host": _SN,
    "binary": _SN,
    "topic": _SN,
    "disabled": _B,
    "disabled_reason": _SN,
    "forced_down": _B,
    "heartbeat": _SN,
    "down_after": (int,),
    "updated_at": _SN,
}


# A host aggregate (Nova's API database ``aggregates`` with its ``aggregate_hosts`` and
# ``aggregate_metadata``), keyed by ``aggregate_key`` (its id as text); the hosts in
# row order, the metadata as a map of strings.
AGGREGATE_FIELDS: dict[str, tuple] = {
    "aggregate_key": _S,
    "id": (int,),
    "uuid": _S,
    "name": _SN,
    "hosts": (list,),
    "metadata": (dict,),
    "created_at": _SN,
    "updated_at": _SN,
}


# A server group (Nova's API database ``instance_groups`` with its policy row and member
# rows), keyed by its uuid. Members are every member row's instance uuid, in row order:
# the API shows those whose server is neither deleted nor soft-deleted, judged when read.
SERVER_GROUP_FIELDS: dict[str, tuple] = {
    "group_key": _S,            # instance_groups.uuid
    "id": (int,),
    "name": _SN,
    "project_id": _SN,
    "user_id": _SN,
    "policy": _SN,              # the first instance_group_policy row's (None: none)
    "rules": (dict,),           # its rules, parsed ({} when none)
    "members": (list,),         # instance_group_member.instance_uuid, by row id
}


@dataclass(frozen=True, slots=True)
class FeedKind:
    """What the feed protocol knows of one kind of entity: its name on the wire (an
    event's ``k``), its fields and their types, the field that is its key, and whether
    the key is a uuid. ``nested``: fields holding a map whose own fields are checked
    too (a server's flavor); ``lists``: fields holding a list of maps, each checked
    (an instance action's events). The replica side's declaration of a kind
    (``replica.kinds``) adds its table, render and labels to this one."""

    name: str
    fields: dict[str, tuple]
    key_field: str
    uuid_key: bool = False
    nested: tuple[tuple[str, dict[str, tuple]], ...] = ()
    lists: tuple[tuple[str, dict[str, tuple]], ...] = ()


FEED_KINDS: dict[str, FeedKind] = {kind.name: kind for kind in (
    FeedKind(KIND_SERVER, SERVER_FIELDS, "uuid", uuid_key=True,
             nested=(("flavor", FLAVOR_OF_SERVER_FIELDS),)),
    FeedKind(KIND_FLAVOR, FLAVOR_FIELDS, "flavorid"),
    FeedKind(KIND_INSTANCE_ACTION, INSTANCE_ACTION_FIELDS, "action_key",
             lists=(("events", INSTANCE_ACTION_EVENT_FIELDS),)),
    FeedKind(KIND_KEYPAIR, KEYPAIR_FIELDS, "keypair_key"),
    FeedKind(KIND_QUOTA, QUOTA_FIELDS, "quota_key", nested=(("limits", QUOTA_LIMIT_FIELDS),)),
    FeedKind(KIND_SERVER_GROUP, SERVER_GROUP_FIELDS, "group_key"),
    FeedKind(KIND_HYPERVISOR, HYPERVISOR_FIELDS, "uuid", uuid_key=True),
    FeedKind(KIND_SERVICE, SERVICE_FIELDS, "uuid"),
    FeedKind(KIND_AGGREGATE, AGGREGATE_FIELDS, "aggregate_key"),
)}
KINDS = tuple(FEED_KINDS)
ENTITY_FIELDS = {name: kind.fields for name, kind in FEED_KINDS.items()}


def _check_fields(entity: Any, fields: dict[str, tuple], where: str) -> None:
    if not isinstance(entity, dict):
        raise FeedError("bad_entity", f"{where}: expected a map, got {type(entity).__name__}")
    missing = fields.keys() - entity.keys()
    if missing:
        raise FeedError("bad_entity", f"{where}: missing fields {sorted(missing)}")
    for name, types in fields.items():
        value = entity[name]
        # bool is an int subclass: an int field must not accept True/False.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise FeedError("bad_entity", f"{where}: field {name!r} has type "
                                          f"{type(value).__name__}")


# Whether an entity's fields are acceptable depends only on each value's type, so the
# tuple of the value types (a "signature") of an entity that passed the full check is
# remembered: the next entity with the same signature passes without it. Decoded
# entities of one cloud have few signatures (which nullable fields are None).
_SIGNATURES_KEPT = 4096


class _Signatures:
    """The remembered good signatures of one kind (and of each of its nested maps)."""

    def __init__(self, kind: FeedKind):
        self.key_field = kind.key_field
        self.values = operator.itemgetter(*kind.fields)
        self.good: set = set()
        self.lists = bool(kind.lists)
        self.nested = tuple((name, operator.itemgetter(*fields), set())
                            for name, fields in kind.nested)


_SIGNATURES = {name: _Signatures(kind) for name, kind in FEED_KINDS.items()}


def _signature(getter, entity) -> tuple | None:
    if type(entity) is not dict:
        return None
    try:
        return tuple(map(type, getter(entity)))
    except KeyError:
        return None


def _remember(good: set, signature: tuple | None) -> None:
    if signature is not None:
        if len(good) >= _SIGNATURES_KEPT:
            good.clear()
        good.add(signature)


def validate_entity(kind: str, key: str, entity: Any) -> None:
    """Raise FeedError unless ``entity`` is a well-formed entity of ``kind`` for ``key``."""
    known = _SIGNATURES.get(kind)
    if known is not None:
        signature = _signature(known.values, entity)
        if signature in known.good and entity[known.key_field] == key:
            for name, getter, good in known.nested:
                if _signature(getter, entity[name]) not in good:
                    break
            else:
                if known.lists:
                    _check_lists(FEED_KINDS[kind], entity, f"{kind} {key}")
                return
    _validate_entity(kind, key, entity)


def _check_lists(declared: FeedKind, entity: dict, where: str) -> None:
    for name, fields in declared.lists:
        for i, item in enumerate(entity[name]):
            _check_fields(item, fields, f"{where} {name}[{i}]")


def _validate_entity(kind: str, key: str, entity: Any) -> None:
    declared = FEED_KINDS.get(kind)
    if declared is None:
        raise FeedError("bad_event", f"unknown kind {kind!r}")
    where = f"{kind} {key}"
    _check_fields(entity, declared.fields, where)
    if entity[declared.key_field] != key:
        raise FeedError("bad_entity", f"{where}: {declared.key_field} "
                                      + (f"{entity[declared.key_field]!r} " if declared.uuid_key
                                         else "") + "does not match the key")
    _check_lists(declared, entity, where)
    known = _SIGNATURES[kind]
    for (name, fields), (_name, getter, good) in zip(declared.nested, known.nested):
        _check_fields(entity[name], fields, f"{where} {name}")
        _remember(good, _signature(getter, entity[name]))
    _remember(known.good, _signature(known.values, entity))


_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _key_ok(kind: str, key: Any) -> bool:
    """The common keys, quickly: a canonical uuid (uuid-keyed kinds) or a short string.
    False means "ask ``_check_key``", not "refused"."""
    if type(key) is not str:
        return False
    declared = FEED_KINDS.get(kind)
    if declared is None:
        return False
    if declared.uuid_key:
        return len(key) == 36 and _CANONICAL_UUID.match(key) is not None
    return 0 < len(key) <= 255


def _check_key(kind: str, key: Any) -> None:
    if not isinstance(key, str) or not key or len(key) > 255:
        raise FeedError("bad_event", f"bad {kind} key {key!r}")
    if FEED_KINDS[kind].uuid_key:
        try:
            uuidlib.UUID(key)
        except ValueError:
            raise FeedError("bad_event", f"{kind} key {key!r} is not a uuid") from None


# ---------------------------------------------------------------------------
# Hashes and buckets for drift checks. Both sides compute them from the entity
# with these functions, so the replica and the cell agree by construction.
# ---------------------------------------------------------------------------

def entity_bytes(entity: dict) -> bytes:
    """An entity's wire form: compact JSON, UTF-8, in the entity's own key order (the
    builder's, which is deterministic, and which the render keeps: metadata is shown in
    the order the cell holds it). The same bytes as ``json.dumps(entity,
    separators=(",", ":"), ensure_ascii=False)`` except for floats of magnitude below
    1e-4 (written 1e-7 / 0.00001 where the json module writes 1e-07 / 1e-05) and NaN /
    infinities (null); what orjson refuses (integers beyond 64 bits, keys that are not
    plain strings, lone surrogates, very deep nesting) is encoded by the json module."""
    try:
        return orjson.dumps(entity)
    except TypeError:       # orjson.JSONEncodeError is a TypeError
        return json.dumps(entity, separators=(",", ":"), ensure_ascii=False).encode()


def hash_bytes(data: bytes) -> int:
    """The hash of an entity's bytes (``entity_bytes``): CRC-32. It tells a changed entity from
    an unchanged one between two honest parties (a drift check, not a defence against
    forgery), and it runs for every event on both sides, where a cryptographic hash
    costs four times as much. 32 bits so that a bucket's sum fits a SQLite integer
    for any realistic row count."""
    return zlib.crc32(data)


def entity_hash(entity: dict) -> int:
    """``hash_bytes(entity_bytes(entity))``: the hash of the entity as it travels."""
    return zlib.crc32(entity_bytes(entity))


def wire_entity(entity: dict | bytes) -> bytes:
    """An entity as it travels (its ``entity_bytes``); bytes are taken as already encoded."""
    if type(entity) is bytes:
        return entity
    return entity_bytes(entity)


def _not_bytes(raw: Any, where: str) -> FeedError:
    return FeedError("bad_entity", f"{where}: entity is {type(raw).__name__}, not JSON bytes")


def open_entity(kind: str, key: str, raw: Any, where: str) -> dict:
    """An entity as received (its bytes), decoded and validated: FeedError if it is not
    a well-formed entity of ``kind`` for ``key``. Its hash is ``hash_bytes(raw)``."""
    if type(raw) is not bytes:
        raise _not_bytes(raw, where)
    try:
        entity = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:        # what orjson refuses and entity_bytes may write (lone surrogates)
            entity = json.loads(raw)
        except ValueError:
            raise FeedError("bad_entity", f"{where}: entity bytes are not JSON") from None
    validate_entity(kind, key, entity)
    return entity


def bucket_of(key: str) -> int:
    return hashlib.blake2b(key.encode(), digest_size=1).digest()[0] % DIGEST_BUCKETS


# ---------------------------------------------------------------------------
# Feed messages
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def gc_paused():
    """The cyclic collector off for a block that builds trees of fresh containers
    without cycles: it would only walk them over and over. What is still alive when
    the block ends is walked once."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _pack(obj: dict) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode_event(e: Event) -> dict:
    """One wire event (``e.entity`` may be its bytes already; ``e.row``, if any, goes
    with it as ``r``)."""
    wire = {"s": e.seq, "k": e.kind, "o": e.op, "id": e.key,
            "e": None if e.entity is None else wire_entity(e.entity)}
    if e.row is not None:
        wire["r"] = e.row
    return wire


def encode_events(events: list[Event]) -> list[dict]:
    return [encode_event(e) for e in events]


def encode_batch(cell: str, epoch: str, events: list[Event],
                 render_version: str | None = None) -> bytes:
    """A batch message; ``render_version``: of the rows some ``events`` carry."""
    message = {"v": FEED_VERSION, "t": "batch", "cell": cell, "epoch": epoch}
    if render_version is not None:
        message["rv"] = render_version
    message["events"] = encode_events(events)
    return _pack(message)


def encode_heartbeat(cell: str, epoch: str, head: int, oldest: int, ts: float) -> bytes:
    return _pack({"v": FEED_VERSION, "t": "hb", "cell": cell, "epoch": epoch,
                  "head": head, "oldest": oldest, "ts": ts})


def _unpack(data: bytes, max_bytes: int) -> dict:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FeedError("malformed", f"message is {type(data).__name__}, not bytes")
    if len(data) > max_bytes:
        raise FeedError("oversized", f"message of {len(data)} bytes exceeds {max_bytes}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise FeedError("malformed", f"not a msgpack document ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise FeedError("malformed", f"top level is {type(obj).__name__}, not a map")
    return obj


def _need(obj: dict, name: str, types: tuple, where: str):
    value = obj.get(name)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise FeedError("malformed", f"{where}: field {name!r} missing or of the wrong type")
    return value


def decode_events(raw: Any, where: str = "events", entities: bool = True) -> tuple[Event, ...]:
    """Decode and validate a list of wire events: consecutive seqs, valid keys
    and entities. Raises FeedError on the first problem, so a batch is accepted
    whole or not at all. With ``entities=False`` an upsert's entity stays its bytes
    (hashed, not decoded): the caller opens each with ``open_entity`` when it uses
    it, so that one entity at a time is decoded, used and dropped (a batch decoded
    whole is megabytes of objects that no longer fit the CPU caches: three times the
    cost per entity, measured)."""
    if not isinstance(raw, list) or not raw:
        raise FeedError("malformed", f"{where}: expected a non-empty list")
    events = []
    last = 0
    for i, item in enumerate(raw):
        # The common event (a map with well-typed s/k/o and a plain key) is checked
        # inline; anything else goes through the checks that say what is wrong.
        if type(item) is dict:
            seq = item.get("s")
            kind = item.get("k")
            op = item.get("o")
            key = item.get("id")
            usual = (type(seq) is int and type(kind) is str and type(op) is str
                     and _key_ok(kind, key))
        else:
            usual = False
        if not usual:
            seq, kind, op, key = _event_head(item, i, where)
        entity = item.get("e")
        entity_hash = None
        row = item.get("r")
        if row is not None and (type(row) is not list or op != OP_UPSERT):
            raise FeedError("bad_event", f"{where}[{i}]: row is not a list of an upsert")
        if op == OP_UPSERT:
            if type(entity) is not bytes:
                raise _not_bytes(entity, f"{where}[{i}]")
            entity_hash = hash_bytes(entity)
            if entities:
                entity = open_entity(kind, key, entity, f"{where}[{i}]")
        elif op == OP_DELETE:
            if entity is not None:
                raise FeedError("bad_event", f"{where}[{i}]: tombstone carries an entity")
        else:
            raise FeedError("bad_event", f"{where}[{i}]: unknown op {op!r}")
        if seq > MAX_SEQ:
            raise FeedError("bad_event", f"{where}[{i}]: seq {seq} out of range")
        if seq < 1 or (events and seq != last + 1):
            raise FeedError("bad_event", f"{where}[{i}]: seq {seq} does not follow "
                                         f"{last if events else 0}")
        events.append(Event(seq, kind, op, key, entity, entity_hash, row))
        last = seq
    return tuple(events)


def _event_head(item: Any, i: int, where: str) -> tuple[int, str, str, str]:
    """(seq, kind, op, key) of one wire event, or FeedError saying what is wrong."""
    if not isinstance(item, dict):
        raise FeedError("malformed", f"{where}[{i}]: not a map")
    seq = _need(item, "s", (int,), f"{where}[{i}]")
    kind = _need(item, "k", (str,), f"{where}[{i}]")
    op = _need(item, "o", (str,), f"{where}[{i}]")
    if kind not in KINDS:
        raise FeedError("bad_event", f"{where}[{i}]: unknown kind {kind!r}")
    key = item.get("id")
    _check_key(kind, key)
    return seq, kind, op, key


def decode_message(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES,
                   entities: bool = True) -> Batch | Heartbeat:
    """Decode one feed message, or raise FeedError saying why it is refused
    (``entities``: as for ``decode_events``)."""
    # A decoded message holds no cycles: the cyclic collector, which would otherwise run
    # many times over the containers of a large batch's entities (each run scanning
    # the whole heap once in a while), waits until the batch is built.
    with gc_paused():
        return _decode_message(data, max_bytes, entities)


def _decode_message(data: bytes, max_bytes: int, entities: bool) -> Batch | Heartbeat:
    obj = _unpack(data, max_bytes)
    version = obj.get("v")
    if version not in FEED_VERSIONS or isinstance(version, bool):
        raise FeedError("unknown_version", f"feed schema version {version!r} "
                                           f"(this build accepts {list(FEED_VERSIONS)})")
    kind = obj.get("t")
    cell = _need(obj, "cell", (str,), "message")
    epoch = _need(obj, "epoch", (str,), "message")
    if not cell or not epoch:
        raise FeedError("malformed", "message: empty cell or epoch")
    if kind == "batch":
        render_version = obj.get("rv")
        if render_version is not None and type(render_version) is not str:
            raise FeedError("malformed", "message: field 'rv' is not a string")
        return Batch(cell, epoch, decode_events(obj.get("events"), entities=entities),
                     render_version)
    if kind == "hb":
        head = _need(obj, "head", (int,), "heartbeat")
        oldest = _need(obj, "oldest", (int,), "heartbeat")
        if not (0 <= head <= MAX_SEQ and 0 <= oldest <= MAX_SEQ):
            raise FeedError("bad_event", f"heartbeat: head {head} or oldest {oldest} out of "
                                         f"range")
        ts = _need(obj, "ts", (float, int), "heartbeat")
        return Heartbeat(cell, epoch, head, oldest, float(ts))
    raise FeedError("malformed", f"unknown message type {kind!r}")


# ---------------------------------------------------------------------------
# Control (REQ/REP)
# ---------------------------------------------------------------------------

CONTROL_OPS = {
    # op: (request args, reply fields)
    "hello": ((), ("cell", "epoch", "head", "oldest", "versions", "kinds")),
    # events with seq in [from, from + limit), of the current epoch; error "epoch" if the
    # epoch differs, "retention" if from < oldest (reply carries "oldest"). Events may
    # carry pre-rendered rows, of the render version "rv" (optional, as in a batch).
    "replay": (("epoch", "from", "limit"), ("epoch", "head", "events", "rv")),
    # opens a consistent read at seq S; pages are read from it; it expires when idle.
    "snapshot_begin": ((), ("snapshot", "epoch", "seq", "total")),
    # items: [[kind, key, entity], ...] ordered by (kind, key), after the given cursor.
    "snapshot_page": (("snapshot", "after", "limit"), ("items", "done")),
    "snapshot_end": (("snapshot",), ()),
    # per bucket [count, sum of entity_hash] at seq S, over live (upserted) entities.
    "digest": ((), ("epoch", "seq", "buckets")),
    # {key: [entity_hash, last_changed_seq]} for one bucket, at seq S.
    "bucket": (("bucket",), ("epoch", "seq", "entities")),
    # current entities for keys: {key: entity or None when gone}.
    "fetch": (("kind", "keys"), ("epoch", "seq", "entities")),
}


class ControlError(Exception):
    """An error reply from a cell's control socket."""

    def __init__(self, op: str, error: str, message: str, reply: dict | None = None):
        super().__init__(f"{op}: {error}: {message}")
        self.op = op
        self.error = error
        self.reply = reply or {}


def encode_request(op: str, **args) -> bytes:
    if op not in CONTROL_OPS:
        raise ValueError(f"unknown control op {op!r}")
    return _pack({"v": FEED_VERSION, "op": op, **args})


def decode_request(data: bytes) -> tuple[str, dict]:
    obj = _unpack(data, MAX_MESSAGE_BYTES)
    if obj.get("v") not in FEED_VERSIONS:
        raise FeedError("unknown_version", f"control version {obj.get('v')!r}")
    op = obj.pop("op", None)
    obj.pop("v", None)
    if op not in CONTROL_OPS:
        raise FeedError("malformed", f"unknown control op {op!r}")
    missing = [a for a in CONTROL_OPS[op][0] if a not in obj]
    if missing:
        raise FeedError("malformed", f"{op}: missing arguments {missing}")
    return op, obj


def encode_reply(**fields) -> bytes:
    return _pack({"ok": True, **fields})


def encode_error(error: str, message: str, **fields) -> bytes:
    return _pack({"ok": False, "error": error, "message": message, **fields})


def decode_reply(op: str, data: bytes) -> dict:
    """Decode a control reply; raise ControlError for an error reply."""
    obj = _unpack(data, 64 * MAX_MESSAGE_BYTES)
    if obj.get("ok") is not True:
        raise ControlError(op, str(obj.get("error", "malformed")), str(obj.get("message", "")), obj)
    return obj
