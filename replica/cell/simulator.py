"""Drives realistic Nova lifecycle churn into a cell database, written the way
Nova writes its cell DB: one operation is one transaction, rows and values as
Nova's DB API leaves them (see ``schema.py``).

- ``populate`` bulk-fills ACTIVE servers (executemany in a few big transactions,
  the outbox triggers suspended and each server enqueued once: see
  ``outbox.triggers_suspended``).
- ``run_simulator`` churns: builds (scheduling -> spawning -> active, or a build
  error with a fault), stop / start, resize / confirm, rename, metadata, tags,
  floating IP and port changes in the info cache, lock / unlock (with
  ``locked_reason`` in system metadata), errors with a fault, soft delete (Nova's
  ``instance_destroy``: ``deleted = id`` on the instance and its child rows, tags
  removed) and archive (rows removed, like ``nova-manage db archive_deleted_rows``),
  and services disabled / forced down / restored now and then; the population
  is kept near ``servers``. ``rate`` <= 0 runs as fast as the database allows.
- ``seed_flavors`` fills a flavor source with Nova-like default flavors (and quotas).

Other writers on the same cell are tolerated: an instance removed under the
simulator is forgotten (``gone``), lock timeouts and conflicts are counted
(``busy``, ``conflict``), an operation with nothing to act on counts as ``skipped``.
Random draws are salted with the cell's instance count, so a second run with the
same seed draws new uuids.

Project ids: the first project is ``"demo"``, the others 32-hex ids derived from the
seed (``rows.project_ids``; ``seed=None`` derives them from 0, so ids are stable).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import random
import struct
import sys
import threading
import time
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass

import apsw

from replica.cell import connection, outbox, rows, schema

log = logging.getLogger("replica.cell.simulator")

POPULATE_CHUNK = 10_000          # servers per populate transaction
SERVERS_PER_HOST = 40
MAX_HOSTS = 1000
DELETED_KEPT = 0.02              # archive soft-deleted rows beyond this share of the target

OPERATIONS = (
    "build", "spawn", "activate", "build_error", "stop", "start", "resize", "confirm_resize",
    "rename", "metadata_set", "metadata_delete", "tag_add", "tag_delete", "ip_change",
    "lock", "unlock", "error", "soft_delete", "archive",
    "service_disable", "service_force_down", "service_restore",
)
BASE_WEIGHTS = {
    "build": 3.0, "spawn": 8.0, "activate": 8.0, "build_error": 0.3, "stop": 2.0, "start": 2.0,
    "resize": 1.0, "confirm_resize": 4.0, "rename": 2.0, "metadata_set": 4.0,
    "metadata_delete": 2.0, "tag_add": 3.0, "tag_delete": 2.0, "ip_change": 4.0, "lock": 1.0,
    "unlock": 1.0, "error": 0.4, "soft_delete": 3.0, "archive": 2.0, "service_disable": 0.2,
    "service_force_down": 0.1, "service_restore": 0.5,
}
NAMES = ("web", "db", "api", "cache", "worker", "batch", "build", "proxy", "queue", "ml")
METADATA_KEYS = ("role", "owner", "env", "tier", "backup", "cost-center")
TAGS = ("prod", "staging", "dev", "blue", "green", "pci", "gdpr", "critical", "canary")
FAULTS = (
    (500, "No valid host was found. There are not enough hosts available.",
     'File "nova/conductor/manager.py", line 1654, in schedule_and_build_instances\n'),
    (500, "Build of instance aborted: Volume did not finish being created",
     'File "nova/compute/manager.py", line 2749, in _build_and_run_instance\n'),
    (500, "Unexpected error while running command.",
     'File "nova/virt/libvirt/driver.py", line 4122, in _hard_reboot\n'),
)
# Tables soft-deleted with the instance by Nova's instance_destroy.
SOFT_DELETED_WITH_INSTANCE = (
    "security_group_instance_association", "instance_info_caches", "instance_metadata",
    "instance_faults", "instance_extra", "instance_system_metadata", "block_device_mapping",
)
# Tables holding an instance's rows, for archiving (column naming the instance).
INSTANCE_TABLES = (
    ("instance_extra", "instance_uuid"), ("instance_info_caches", "instance_uuid"),
    ("instance_metadata", "instance_uuid"), ("instance_system_metadata", "instance_uuid"),
    ("block_device_mapping", "instance_uuid"),
    ("security_group_instance_association", "instance_uuid"),
    ("instance_faults", "instance_uuid"), ("tags", "resource_id"),
    ("instance_group_member", "instance_uuid"), ("request_specs", "instance_uuid"),
    ("instance_actions", "instance_uuid"),
    ("instances", "uuid"),
)
LIVE_STATES = ("scheduling", "spawning", "active", "stopped", "resized", "error")


@dataclass
class SimulatorConfig:
    db: str
    rate: float
    servers: int
    projects: int
    duration: float | None = None
    ops: int | None = None
    seed: int | None = None


class Gone(LookupError):
    """An instance this simulator knew of was changed or removed by another writer."""


class _Pool:
    """A set with O(1) random choice and removal."""

    def __init__(self):
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def __len__(self):
        return len(self.items)

    def __contains__(self, item):
        return item in self.index

    def add(self, item: str) -> None:
        if item not in self.index:
            self.index[item] = len(self.items)
            self.items.append(item)

    def discard(self, item: str) -> None:
        i = self.index.pop(item, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.index[last] = i

    def choice(self, rng: random.Random) -> str:
        return self.items[rng.randrange(len(self.items))]


def host_names(servers: int) -> list[str]:
    count = max(2, min(MAX_HOSTS, servers // SERVERS_PER_HOST + 1))
    return [f"compute-{i:04d}" for i in range(count)]


def host_zone(host: str) -> str:
    return "az-west" if int(host.rsplit("-", 1)[1]) % 3 == 2 else "nova"


def _flavors_for(project: str) -> list[rows.FlavorSpec]:
    return [f for f in rows.FLAVORS if f.is_public or project in f.projects]


def _ensure_cell(conn: apsw.Connection) -> None:
    if not schema.is_cell(conn):
        schema.create_cell_tables(conn)


def _instances_ever(conn: apsw.Connection) -> int:
    """How many instance ids were ever allocated (AUTOINCREMENT: never reused)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'instances'").fetchone()
    return int(row[0]) if row else 0


def _cell_name(conn: apsw.Connection) -> str:
    """The name the cell's outbox was installed with ("" without one)."""
    if not schema.has_table(conn, outbox.META):
        return ""
    row = conn.execute(f"SELECT value FROM {outbox.META} WHERE name = 'cell'").fetchone()
    return str(row[0]) if row else ""


def _ensure_services(conn: apsw.Connection, hosts: list[str]) -> list[str]:
    """Compute services for ``hosts`` unless the cell has some already; returns
    the hosts of the cell's live nova-compute services."""
    existing = [h for (h,) in conn.execute(
        "SELECT host FROM services WHERE \"binary\" = 'nova-compute' AND deleted = 0 "
        "ORDER BY host")]
    if existing:
        return existing
    stamp = rows.now()
    with conn:
        conn.executemany(
            "INSERT INTO services (created_at, updated_at, deleted, uuid, host, \"binary\", "
            "topic, report_count, disabled, forced_down, version, last_seen_up) "
            "VALUES (?, ?, 0, ?, ?, 'nova-compute', 'compute', 0, 0, 0, 66, ?)",
            # a service's uuid is unique in the whole cloud: drawn per database and host
            [(stamp, stamp, rows.new_uuid(random.Random(f"{conn.filename}/{h}")), h, stamp)
             for h in hosts])
    return list(hosts)


def _ensure_compute_nodes(conn: apsw.Connection, hosts: list[str]) -> None:
    """A libvirt compute node for each of ``hosts`` that has none (the demo's
    hypervisors), sized as a small two-socket server."""
    if not schema.has_table(conn, "compute_nodes"):
        return
    have = {h for (h,) in conn.execute("SELECT host FROM compute_nodes WHERE deleted = 0")}
    missing = [h for h in hosts if h not in have]
    if not missing:
        return
    stamp = rows.now()
    cpu_info = json.dumps({"arch": "x86_64", "model": "Cascadelake-Server", "vendor": "Intel",
                           "topology": {"cells": 2, "sockets": 1, "cores": 16, "threads": 2},
                           "features": ["avx512f", "vmx"]})
    with conn:
        conn.executemany(
            "INSERT INTO compute_nodes (created_at, updated_at, deleted, host, uuid, vcpus, "
            "memory_mb, local_gb, vcpus_used, memory_mb_used, local_gb_used, hypervisor_type, "
            "hypervisor_version, hypervisor_hostname, free_ram_mb, free_disk_gb, "
            "current_workload, running_vms, cpu_info, disk_available_least, host_ip, stats, "
            "mapped) VALUES (?, ?, 0, ?, ?, 64, 262144, 1800, 0, 512, 0, 'QEMU', 8002000, ?, "
            "261632, 1800, 0, 0, ?, 1750, ?, '{}', 1)",
            # a compute node's uuid is unique in the whole deployment (the cells'
            # simulated hosts have the same names)
            [(stamp, stamp, h, str(uuidlib.uuid4()), f"{h}.demo.local",
              cpu_info, f"192.0.2.{10 + i % 240}") for i, h in enumerate(missing)])


def _security_groups(conn: apsw.Connection, projects: list[str]) -> dict[str, list[int]]:
    """Each project's "default" group (and a "web" group), created when missing."""
    groups: dict[str, list[int]] = {}
    for gid, project in conn.execute("SELECT id, project_id FROM security_groups "
                                     "WHERE deleted = 0 ORDER BY id"):
        groups.setdefault(project, []).append(gid)
    missing = [p for p in projects if p not in groups]
    if missing:
        stamp = rows.now()
        with conn:
            for project in missing:
                for name, description in (("default", "Default security group"),
                                          ("web", "HTTP and HTTPS in")):
                    conn.execute("INSERT INTO security_groups (created_at, updated_at, deleted, "
                                 "name, description, user_id, project_id) "
                                 "VALUES (?, ?, 0, ?, ?, ?, ?)",
                                 (stamp, stamp, name, description, rows.user_ids(project)[0],
                                  project))
                    groups.setdefault(project, []).append(conn.last_insert_rowid())
    return groups


class _Writer:
    """Row writers shared by populate and the churn: the rows one server has."""

    def __init__(self, rng: random.Random, projects: list[str], hosts: list[str],
                 groups: dict[str, list[int]]):
        self.rng = rng
        self.projects = projects
        self.hosts = hosts
        self.groups = groups
        self.counter = 0
        self.extra_flavors = {f.flavorid: rows.extra_flavor(f) for f in rows.FLAVORS}

    def server(self, state: str) -> dict:
        """A new server's rows, as plain tuples per table. ``state``: 'scheduling'
        (just accepted by the API) or 'active' (populate)."""
        rng = self.rng
        self.counter += 1
        project = rng.choice(self.projects)
        user = rng.choice(rows.user_ids(project))
        flavor = rng.choice(_flavors_for(project))
        image = rng.choice(rows.IMAGES)
        bfv = rng.random() < 0.15
        uuid = rows.new_uuid(rng)
        name = f"{rng.choice(NAMES)}-{self.counter:05d}"
        stamp = rows.now()
        active = state == "active"
        host = rng.choice(self.hosts) if active else None
        requested_az = rng.choice((None, None, None, "nova", "az-west"))
        out = {"uuid": uuid, "project": project}
        key_name = "mykey" if rng.random() < 0.7 else None
        user_data = ("I2Nsb3VkLWNvbmZpZwpwYWNrYWdlczogW25naW54XQo=" if rng.random() < 0.3
                     else None)
        out["instances"] = (
            stamp, stamp if active else None, 0, user, project, "" if bfv else image[0],
            "", "", name, 0, key_name, rows.KEY_DATA if key_name else None,
            rows.RUNNING if active else rows.NOSTATE,
            "active" if active else "building", None if active else "scheduling",
            flavor.memory_mb, flavor.vcpus, flavor.root_gb, flavor.ephemeral_gb, host, host,
            flavor.id, user_data, f"r-{rng.getrandbits(32):08x}", stamp if active else None,
            host_zone(host) if active else requested_az, name,
            rng.choice((None, "", "managed by the platform team")),
            host, 0, "/dev/vda" if active else None, rng.choice(("", "", "True")),
            None, None, 0, 0, uuid,
        )
        out["extra"] = (stamp, stamp, 0, uuid, self.extra_flavors[flavor.flavorid],
                        rows.trusted_certs([rows.new_uuid(rng)]) if rng.random() < 0.05
                        else None, "[]")
        ports = [rows.vif_json(rng, project, 0,
                               rows.floating_ip(rng) if rng.random() < 0.4 else None)]
        if rng.random() < 0.2:
            ports.append(rows.vif_json(rng, project, 1))
        network = f"[{', '.join(ports)}]" if active else "[]"   # == json.dumps of the VIFs
        out["cache"] = (stamp, stamp, 0, network, uuid)
        sysmeta = rows.image_system_metadata(image, flavor)
        sysmeta["owner_project_name"] = project[:8]
        out["sysmeta"] = [(stamp, 0, key, value, uuid) for key, value in sysmeta.items()]
        bdms = []
        if bfv:
            bdms.append((stamp, 0, "/dev/vda", 1, None, rows.new_uuid(rng), flavor.root_gb or 10,
                         uuid, "image", "volume", "disk", "virtio", 0, image[0],
                         rows.new_uuid(rng)))
        else:
            bdms.append((stamp, 0, "/dev/vda", 1, None, None, None, uuid, "image", "local",
                         "disk", "virtio", 0, image[0], rows.new_uuid(rng)))
        if rng.random() < 0.1:
            bdms.append((stamp, 0, "/dev/vdb", 0, None, rows.new_uuid(rng), 100, uuid, "volume",
                         "volume", "disk", "virtio", None, None, rows.new_uuid(rng)))
        out["bdms"] = bdms
        sgs = self.groups.get(project, [])
        chosen = sgs[:1] + ([sgs[1]] if len(sgs) > 1 and rng.random() < 0.3 else [])
        out["sgs"] = [(stamp, 0, gid, uuid) for gid in chosen]
        out["metadata"] = [(stamp, 0, key, rng.choice(("alpha", "beta", "42", "team-a")), uuid)
                           for key in rng.sample(METADATA_KEYS, rng.choice((0, 0, 1, 2, 3)))]
        out["tags"] = [(uuid, tag) for tag in rng.sample(TAGS, rng.choice((0, 0, 0, 1, 2)))]
        hints = {"different_host": [rows.new_uuid(rng)]} if rng.random() < 0.05 else {}
        out["spec"] = (stamp, uuid, rows.request_spec(uuid, project, flavor,
                                                     "" if bfv else image[0], requested_az,
                                                     hints))
        out["flavor"] = flavor
        return out


_INSERT_INSTANCE = (
    "INSERT INTO instances (created_at, updated_at, deleted, user_id, project_id, image_ref, "
    "kernel_id, ramdisk_id, hostname, launch_index, key_name, key_data, power_state, vm_state, "
    "task_state, memory_mb, vcpus, root_gb, ephemeral_gb, host, node, instance_type_id, "
    "user_data, reservation_id, launched_at, availability_zone, display_name, "
    "display_description, launched_on, locked, root_device_name, config_drive, access_ip_v4, "
    "access_ip_v6, auto_disk_config, progress, uuid) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_EXTRA = ("INSERT INTO instance_extra (created_at, updated_at, deleted, instance_uuid, "
                 "flavor, trusted_certs, pci_requests) VALUES (?, ?, ?, ?, ?, ?, ?)")
_INSERT_CACHE = ("INSERT INTO instance_info_caches (created_at, updated_at, deleted, "
                 "network_info, instance_uuid) VALUES (?, ?, ?, ?, ?)")
_INSERT_SYSMETA = ("INSERT INTO instance_system_metadata (created_at, deleted, key, value, "
                   "instance_uuid) VALUES (?, ?, ?, ?, ?)")
_INSERT_BDM = ("INSERT INTO block_device_mapping (created_at, deleted, device_name, "
               "delete_on_termination, snapshot_id, volume_id, volume_size, instance_uuid, "
               "source_type, destination_type, device_type, disk_bus, boot_index, image_id, "
               "uuid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_SG = ("INSERT INTO security_group_instance_association (created_at, deleted, "
              "security_group_id, instance_uuid) VALUES (?, ?, ?, ?)")
_INSERT_METADATA = ("INSERT INTO instance_metadata (created_at, deleted, key, value, "
                    "instance_uuid) VALUES (?, ?, ?, ?, ?)")
_INSERT_TAG = "INSERT OR IGNORE INTO tags (resource_id, tag) VALUES (?, ?)"
_INSERT_SPEC = ("INSERT INTO request_specs (created_at, instance_uuid, spec) VALUES (?, ?, ?)")


def _insert_servers(conn: apsw.Connection, servers: list[dict]) -> None:
    conn.executemany(_INSERT_INSTANCE, [s["instances"] for s in servers])
    conn.executemany(_INSERT_EXTRA, [s["extra"] for s in servers])
    conn.executemany(_INSERT_CACHE, [s["cache"] for s in servers])
    conn.executemany(_INSERT_SYSMETA, [r for s in servers for r in s["sysmeta"]])
    conn.executemany(_INSERT_BDM, [r for s in servers for r in s["bdms"]])
    conn.executemany(_INSERT_SG, [r for s in servers for r in s["sgs"]])
    conn.executemany(_INSERT_METADATA, [r for s in servers for r in s["metadata"]])
    conn.executemany(_INSERT_TAG, [r for s in servers for r in s["tags"]])
    conn.executemany(_INSERT_SPEC, [s["spec"] for s in servers])


def populate(db: str, servers: int, projects: int, seed: int = 0, progress=None) -> None:
    """Bulk-fill ``db`` with ``servers`` ACTIVE servers across ``projects`` projects.
    ``progress(done, total)`` is called after each transaction."""
    conn = connection.open_cell(db, create=True)
    try:
        _ensure_cell(conn)
        existing = conn.execute("SELECT count(*) FROM instances").fetchone()[0]
        # salted: the churn with the same seed, or a second fill, draws other uuids
        rng = random.Random(f"populate-{seed}-{_instances_ever(conn)}")
        project_list = rows.project_ids(projects, seed)
        hosts = _ensure_services(conn, host_names(servers))
        _ensure_compute_nodes(conn, hosts)
        writer = _Writer(rng, project_list, hosts, _security_groups(conn, project_list))
        writer.counter = existing
        has_outbox = schema.has_table(conn, outbox.OUTBOX)
        done = 0
        while done < servers:
            batch = [writer.server("active") for _ in range(min(POPULATE_CHUNK, servers - done))]
            with conn:
                if has_outbox:
                    with outbox.triggers_suspended(conn):
                        _insert_servers(conn, batch)
                        outbox.enqueue(conn, "server", [s["uuid"] for s in batch])
                else:
                    _insert_servers(conn, batch)
            done += len(batch)
            if progress is not None:
                progress(done, servers)
    finally:
        conn.close()


# The quota limits a flavor source is seeded with (Nova's API database ``quotas``):
# room for the demo project's simulated servers.
DEMO_QUOTAS = (("demo", "instances", 100), ("demo", "cores", 400), ("demo", "ram", 819200))


def seed_flavors(db: str) -> None:
    """Fill a flavor source with Nova-like default flavors and the demo project's quota
    limits (idempotent)."""
    conn = connection.open_cell(db, create=True)
    try:
        if not schema.is_flavor_source(conn):
            schema.create_flavor_tables(conn)
        with conn:
            for f in rows.FLAVORS:
                if conn.execute("SELECT 1 FROM flavors WHERE flavorid = ?",
                                (f.flavorid,)).fetchone():
                    continue
                conn.execute(
                    "INSERT INTO flavors (created_at, id, name, memory_mb, vcpus, root_gb, "
                    "ephemeral_gb, flavorid, swap, rxtx_factor, vcpu_weight, disabled, "
                    "is_public, description) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1.0, NULL, 0, ?, ?)",
                    (rows.FLAVOR_CREATED, f.id, f.name, f.memory_mb, f.vcpus, f.root_gb,
                     f.ephemeral_gb, f.flavorid, f.swap, int(f.is_public), f.description))
                conn.executemany("INSERT INTO flavor_extra_specs (created_at, key, value, "
                                 "flavor_id) VALUES (?, ?, ?, ?)",
                                 [(rows.FLAVOR_CREATED, k, v, f.id)
                                  for k, v in f.extra_specs.items()])
                conn.executemany("INSERT INTO flavor_projects (created_at, flavor_id, "
                                 "project_id) VALUES (?, ?, ?)",
                                 [(rows.FLAVOR_CREATED, f.id, p) for p in f.projects])
            if schema.has_table(conn, "key_pairs"):
                conn.executemany(
                    "INSERT OR IGNORE INTO key_pairs (created_at, name, user_id, fingerprint, "
                    "public_key, type) VALUES (?, ?, ?, ?, ?, ?)",
                    [(rows.FLAVOR_CREATED, name, user, *_public_key(user, name), "ssh")
                     for user, name in DEMO_KEYPAIRS])
            if schema.has_table(conn, "aggregates"):
                _seed_aggregates(conn)
            if schema.has_table(conn, "instance_group_policy"):
                _seed_server_groups(conn)
            if schema.has_table(conn, "quotas"):
                conn.executemany("INSERT OR IGNORE INTO quotas (created_at, project_id, "
                                 "resource, hard_limit) VALUES (?, ?, ?, ?)",
                                 [(rows.FLAVOR_CREATED, project, resource, limit)
                                  for project, resource, limit in DEMO_QUOTAS])
    finally:
        conn.close()


# Aggregates the flavor source gets (Nova's API database holds them): the hosts of
# ``host_zone``'s "az-west" in a zone of that name; the others are in no aggregate with
# a zone (so in Nova's default zone, "nova"); and one aggregate that is not a zone
# (metadata of its own).
DEMO_AGGREGATES = (("west-racks", {"availability_zone": "az-west"},
                    lambda host: host_zone(host) == "az-west"),
                   ("gpu-hosts", {"gpu": "true"}, lambda host: host.endswith("7")))


def _seed_aggregates(conn: apsw.Connection) -> None:
    hosts = [f"compute-{i:04d}" for i in range(MAX_HOSTS)]
    for name, metadata, member in DEMO_AGGREGATES:
        if conn.execute("SELECT 1 FROM aggregates WHERE name = ?", (name,)).fetchone():
            continue
        conn.execute("INSERT INTO aggregates (created_at, uuid, name) VALUES (?, ?, ?)",
                     (rows.FLAVOR_CREATED, str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, name)), name))
        (aggregate_id,) = conn.execute("SELECT id FROM aggregates WHERE name = ?",
                                       (name,)).fetchone()
        conn.executemany("INSERT INTO aggregate_hosts (created_at, host, aggregate_id) "
                         "VALUES (?, ?, ?)", [(rows.FLAVOR_CREATED, host, aggregate_id)
                                              for host in hosts if member(host)])
        conn.executemany("INSERT INTO aggregate_metadata (created_at, \"key\", value, "
                         "aggregate_id) VALUES (?, ?, ?, ?)",
                         [(rows.FLAVOR_CREATED, k, v, aggregate_id) for k, v in metadata.items()])


# Server groups the flavor source gets (Nova's API database holds them): the demo
# project's, without members (its servers are the cells').
DEMO_SERVER_GROUPS = (("web-spread", "anti-affinity", None),
                      ("db-pack", "soft-affinity", None),
                      ("batch", "anti-affinity", '{"max_server_per_host": 3}'))


def _seed_server_groups(conn: apsw.Connection) -> None:
    user = rows.user_ids("demo")[0]
    for name, policy, rules in DEMO_SERVER_GROUPS:
        uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"server-group-{name}"))
        if conn.execute("SELECT 1 FROM instance_groups WHERE uuid = ?", (uuid,)).fetchone():
            continue
        conn.execute("INSERT INTO instance_groups (created_at, user_id, project_id, uuid, "
                     "name) VALUES (?, ?, 'demo', ?, ?)",
                     (rows.FLAVOR_CREATED, user, uuid, name))
        conn.execute("INSERT INTO instance_group_policy (created_at, policy, group_id, rules) "
                     "SELECT ?, ?, id, ? FROM instance_groups WHERE uuid = ?",
                     (rows.FLAVOR_CREATED, policy, rules, uuid))


# Key pairs the flavor source gets (Nova's API database holds them): the demo's admin
# user's, and one of the first user of the "demo" project.
DEMO_KEYPAIRS = (("admin", "ops-key"), ("admin", "deploy-key"),
                 (rows.user_ids("demo")[0], "laptop"))


def _public_key(user: str, name: str) -> tuple[str, str]:
    """(fingerprint, public key) of a made-up ed25519 key, as Nova stores them (the MD5
    fingerprint of the key's blob, colon-separated)."""
    seed = hashlib.sha256(f"{user}/{name}".encode()).digest()
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + seed
    fingerprint = ":".join(f"{b:02x}" for b in hashlib.md5(blob).digest())
    return fingerprint, f"ssh-ed25519 {base64.b64encode(blob).decode()} {name}@demo"


class Churn:
    """The simulator's view of one cell and its lifecycle operations. Each
    operation is one transaction and returns False when it found nothing to do."""

    def __init__(self, conn: apsw.Connection, rng: random.Random, servers: int, projects: int,
                 seed: int | None):
        self.conn = conn
        self.rng = rng
        self.target = servers
        _ensure_cell(conn)
        self.projects = rows.project_ids(projects, seed)
        self.hosts = _ensure_services(conn, host_names(servers))
        _ensure_compute_nodes(conn, self.hosts)
        self.writer = _Writer(rng, self.projects, self.hosts,
                              _security_groups(conn, self.projects))
        self.writer.counter = conn.execute("SELECT count(*) FROM instances").fetchone()[0]
        self.pools = {state: _Pool() for state in LIVE_STATES + ("deleted", "locked")}
        self.down_hosts = _Pool()
        self._load()
        self.operations = {name: getattr(self, name) for name in OPERATIONS}
        self.tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        # a cell made before instance actions were replicated has no tables for them
        self.actions = "instance_actions" in self.tables

    def _action(self, uuid: str, action: str, event: str | None = None,
                host: str | None = None, result: str = "Success") -> None:
        """Record an instance action (and its first event) as Nova's API and compute
        services do: InstanceAction.action_start, then the event's start and finish."""
        if not self.actions:
            return
        stamp = rows.now()
        found = self.conn.execute(
            "SELECT project_id, user_id FROM instances WHERE uuid = ?", (uuid,)).fetchone()
        if found is None:
            raise Gone(uuid)       # another writer archived it meanwhile
        project, user = found
        request_id = f"req-{uuidlib.UUID(int=self.rng.getrandbits(128), version=4)}"
        self.conn.execute(
            "INSERT INTO instance_actions (created_at, updated_at, deleted, action, "
            "instance_uuid, request_id, user_id, project_id, start_time) "
            "VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?)",
            (stamp, stamp if event else None, action, uuid, request_id, user, project, stamp))
        if event:
            self._event(self.conn.last_insert_rowid(), event, host, result)

    def _event(self, action_id: int, event: str, host: str | None, result: str) -> None:
        stamp = rows.now()
        failed = result != "Success"
        self.conn.execute(
            "INSERT INTO instance_actions_events (created_at, deleted, event, action_id, "
            "start_time, finish_time, result, traceback, host, details) "
            "VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?)",
            (stamp, event, action_id, stamp, stamp, result,
             "Traceback (most recent call last):\n  ..." if failed else None, host,
             "the build failed" if failed else None))
        self.conn.execute("UPDATE instance_actions SET updated_at = ?, message = ? "
                          "WHERE id = ?", (stamp, "Error" if failed else None, action_id))

    def _create_event(self, uuid: str, event: str, host: str | None, result: str) -> None:
        """An event of the server's create action (the build's later steps)."""
        if not self.actions:
            return
        found = self.conn.execute("SELECT id FROM instance_actions WHERE instance_uuid = ? "
                                  "AND action = 'create' ORDER BY id DESC LIMIT 1",
                                  (uuid,)).fetchone()
        if found is not None:
            self._event(found[0], event, host, result)

    def _load(self) -> None:
        for uuid, vm_state, task_state, deleted, locked in self.conn.execute(
                "SELECT uuid, vm_state, task_state, deleted, locked FROM instances"):
            if deleted:
                self.pools["deleted"].add(uuid)
                continue
            if vm_state == "building":
                state = "spawning" if task_state == "spawning" else "scheduling"
            elif vm_state in LIVE_STATES:
                state = vm_state
            else:
                state = "active"
            self.pools[state].add(uuid)
            if locked:
                self.pools["locked"].add(uuid)
        for (host,) in self.conn.execute(
                "SELECT host FROM services WHERE \"binary\" = 'nova-compute' AND deleted = 0 "
                "AND (disabled OR forced_down)"):
            self.down_hosts.add(host)

    # -- choosing ------------------------------------------------------------

    def live(self) -> int:
        return sum(len(self.pools[s]) for s in LIVE_STATES)

    def weights(self) -> dict[str, float]:
        w = dict(BASE_WEIGHTS)
        live, target = self.live(), max(1, self.target)
        if live < target:
            w["build"] *= 1 + 20 * (target - live) / target
            w["soft_delete"] /= 1 + 20 * (target - live) / target
        elif live > target:
            w["soft_delete"] *= 1 + 20 * (live - target) / target
            w["build"] /= 1 + 20 * (live - target) / target
        if len(self.pools["deleted"]) < DELETED_KEPT * target:
            w["archive"] *= 0.1
        need = {
            "spawn": ("scheduling",), "build_error": ("scheduling",), "activate": ("spawning",),
            "stop": ("active",), "start": ("stopped",), "resize": ("active",),
            "confirm_resize": ("resized",), "error": ("active",), "ip_change": ("active",),
            "rename": ("active", "stopped"), "lock": ("active", "stopped"),
            "metadata_set": ("active", "stopped"), "metadata_delete": ("active", "stopped"),
            "tag_add": ("active", "stopped"), "tag_delete": ("active", "stopped"),
            "soft_delete": ("active", "stopped", "error", "resized"), "archive": ("deleted",),
            "unlock": ("locked",),
        }
        for name, states in need.items():
            if not any(self.pools[s] for s in states):
                w[name] = 0.0
        if not self.down_hosts:
            w["service_restore"] = 0.0
        return w

    def choose(self) -> str:
        w = self.weights()
        names = list(w)
        return self.rng.choices(names, weights=[w[n] for n in names])[0]

    def _pick(self, *states: str) -> tuple[str, str]:
        sizes = [len(self.pools[s]) for s in states]
        state = self.rng.choices(states, weights=sizes)[0]
        return state, self.pools[state].choice(self.rng)

    def _move(self, uuid: str, old: str, new: str) -> None:
        self.pools[old].discard(uuid)
        self.pools[new].add(uuid)

    def _column(self, uuid: str, column: str):
        row = self.conn.execute(f"SELECT {column} FROM instances WHERE uuid = ? AND deleted = 0",
                                (uuid,)).fetchone()
        if row is None:
            raise Gone(uuid)
        return row[0]

    def forget(self, uuid: str) -> None:
        for pool in self.pools.values():
            pool.discard(uuid)

    def _update(self, uuid: str, **columns) -> None:
        columns["updated_at"] = rows.now()
        sets = ", ".join(f"{name} = ?" for name in columns)
        self.conn.execute(f"UPDATE instances SET {sets} WHERE uuid = ?",
                          (*columns.values(), uuid))

    def _fault(self, uuid: str, host: str | None, fault: tuple) -> None:
        code, message, details = fault
        self.conn.execute("INSERT INTO instance_faults (created_at, deleted, instance_uuid, code, "
                          "message, details, host) VALUES (?, 0, ?, ?, ?, ?, ?)",
                          (rows.now(), uuid, code, message, f"Traceback:\n  {details}", host))

    # -- lifecycle -----------------------------------------------------------

    def build(self) -> bool:
        server = self.writer.server("scheduling")
        with self.conn:
            _insert_servers(self.conn, [server])
            self._action(server["uuid"], "create", "conductor_schedule_and_build_instances")
        self.pools["scheduling"].add(server["uuid"])
        return True

    def spawn(self) -> bool:
        uuid = self.pools["scheduling"].choice(self.rng)
        host = self.rng.choice(self.hosts)
        project = self._column(uuid, "project_id")
        network = [rows.vif(self.rng, project, 0,
                            rows.floating_ip(self.rng) if self.rng.random() < 0.4 else None)]
        with self.conn:
            self._update(uuid, host=host, node=host, launched_on=host, task_state="spawning",
                         availability_zone=host_zone(host))
            self.conn.execute("UPDATE instance_info_caches SET network_info = ?, updated_at = ? "
                              "WHERE instance_uuid = ?", (json.dumps(network), rows.now(), uuid))
        self._move(uuid, "scheduling", "spawning")
        return True

    def activate(self) -> bool:
        uuid = self.pools["spawning"].choice(self.rng)
        with self.conn:
            self._update(uuid, vm_state="active", task_state=None, power_state=rows.RUNNING,
                         launched_at=rows.now(), root_device_name="/dev/vda")
            self._create_event(uuid, "compute__do_build_and_run_instance",
                               self._column(uuid, "host"), "Success")
        self._move(uuid, "spawning", "active")
        return True

    def build_error(self) -> bool:
        uuid = self.pools["scheduling"].choice(self.rng)
        with self.conn:
            self._update(uuid, vm_state="error", task_state=None)
            self._fault(uuid, None, FAULTS[0])
            self._create_event(uuid, "conductor_schedule_and_build_instances", None, "Error")
        self._move(uuid, "scheduling", "error")
        return True

    def stop(self) -> bool:
        uuid = self.pools["active"].choice(self.rng)
        with self.conn:
            self._update(uuid, vm_state="stopped", task_state=None, power_state=rows.SHUTDOWN)
            self._action(uuid, "stop", "compute_stop_instance", self._column(uuid, "host"))
        self._move(uuid, "active", "stopped")
        return True

    def start(self) -> bool:
        uuid = self.pools["stopped"].choice(self.rng)
        with self.conn:
            self._update(uuid, vm_state="active", task_state=None, power_state=rows.RUNNING)
            self._action(uuid, "start", "compute_start_instance", self._column(uuid, "host"))
        self._move(uuid, "stopped", "active")
        return True

    def _flavor_of(self, uuid: str) -> rows.FlavorSpec:
        type_id = self._column(uuid, "instance_type_id")
        return next((f for f in rows.FLAVORS if f.id == type_id), rows.FLAVORS[0])

    def resize(self) -> bool:
        uuid = self.pools["active"].choice(self.rng)
        old = self._flavor_of(uuid)
        project = self._column(uuid, "project_id")
        new = self.rng.choice([f for f in _flavors_for(project) if f.id != old.id])
        host = self.rng.choice(self.hosts)
        with self.conn:
            self._update(uuid, vm_state="resized", task_state=None, host=host, node=host,
                         availability_zone=host_zone(host), instance_type_id=new.id,
                         memory_mb=new.memory_mb, vcpus=new.vcpus, root_gb=new.root_gb,
                         ephemeral_gb=new.ephemeral_gb)
            self.conn.execute("UPDATE instance_extra SET flavor = ?, updated_at = ? "
                              "WHERE instance_uuid = ? AND deleted = 0",
                              (rows.extra_flavor(new, old, new), rows.now(), uuid))
            self._action(uuid, "resize", "compute_finish_resize", host)
        self._move(uuid, "active", "resized")
        return True

    def confirm_resize(self) -> bool:
        uuid = self.pools["resized"].choice(self.rng)
        flavor = self._flavor_of(uuid)
        with self.conn:
            self._update(uuid, vm_state="active", task_state=None)
            self.conn.execute("UPDATE instance_extra SET flavor = ?, updated_at = ? "
                              "WHERE instance_uuid = ? AND deleted = 0",
                              (rows.extra_flavor(flavor), rows.now(), uuid))
            self._action(uuid, "confirmResize", "compute_confirm_resize",
                         self._column(uuid, "host"))
        self._move(uuid, "resized", "active")
        return True

    def rename(self) -> bool:
        _state, uuid = self._pick("active", "stopped")
        with self.conn:
            self._update(uuid, display_name=f"{self.rng.choice(NAMES)}-renamed-"
                                            f"{self.rng.randrange(10000):04d}")
        return True

    def metadata_set(self) -> bool:
        _state, uuid = self._pick("active", "stopped")
        key = self.rng.choice(METADATA_KEYS)
        value = self.rng.choice(("alpha", "beta", "gamma", "7", "team-b"))
        stamp = rows.now()
        with self.conn:
            changed = self.conn.execute(
                "UPDATE instance_metadata SET value = ?, updated_at = ? "
                "WHERE instance_uuid = ? AND key = ? AND deleted = 0 RETURNING id",
                (value, stamp, uuid, key)).fetchall()
            if not changed:
                self.conn.execute(_INSERT_METADATA, (stamp, 0, key, value, uuid))
        return True

    def _random_row(self, table: str, where: str) -> tuple | None:
        """A random row of a table (by rowid), joined to live instances."""
        (top,) = self.conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()
        if not top:
            return None
        start = self.rng.randrange(top + 1)
        for bound in (f"t.rowid >= {start} ORDER BY t.rowid",
                      f"t.rowid < {start} ORDER BY t.rowid DESC"):
            row = self.conn.execute(f"SELECT t.rowid, t.* FROM {table} t {where} AND {bound} "
                                    "LIMIT 1").fetchone()
            if row is not None:
                return row
        return None

    def metadata_delete(self) -> bool:
        row = self._random_row("instance_metadata",
                               "JOIN instances i ON i.uuid = t.instance_uuid AND i.deleted = 0 "
                               "WHERE t.deleted = 0")
        if row is None:
            return False
        stamp = rows.now()
        with self.conn:
            # Nova soft-deletes removed metadata: deleted = id
            self.conn.execute("UPDATE instance_metadata SET deleted = id, deleted_at = ?, "
                              "updated_at = ? WHERE id = ?", (stamp, stamp, row[0]))
        return True

    def tag_add(self) -> bool:
        _state, uuid = self._pick("active", "stopped")
        with self.conn:
            self.conn.execute(_INSERT_TAG, (uuid, self.rng.choice(TAGS)))
        return True

    def tag_delete(self) -> bool:
        row = self._random_row("tags", "JOIN instances i ON i.uuid = t.resource_id "
                                       "AND i.deleted = 0 WHERE 1")
        if row is None:
            return False
        with self.conn:
            self.conn.execute("DELETE FROM tags WHERE resource_id = ? AND tag = ?",
                              (row[1], row[2]))
        return True

    def ip_change(self) -> bool:
        uuid = self.pools["active"].choice(self.rng)
        found = self.conn.execute("SELECT network_info, i.project_id FROM instance_info_caches c "
                                  "JOIN instances i ON i.uuid = c.instance_uuid "
                                  "WHERE c.instance_uuid = ?", (uuid,)).fetchone()
        if found is None:
            return False
        network, project = json.loads(found[0] or "[]"), found[1]
        choice = self.rng.random()
        if network and choice < 0.6:
            ip = network[0]["network"]["subnets"][0]["ips"][0]
            ip["floating_ips"] = ([] if ip["floating_ips"] else
                                  [{"address": rows.floating_ip(self.rng), "type": "floating",
                                    "version": 4, "meta": {}}])
        elif len(network) > 1:
            network.pop()                        # port detached
        else:
            network.append(rows.vif(self.rng, project, 1))   # port attached
        with self.conn:
            self.conn.execute("UPDATE instance_info_caches SET network_info = ?, updated_at = ? "
                              "WHERE instance_uuid = ?", (json.dumps(network), rows.now(), uuid))
        return True

    def lock(self) -> bool:
        _state, uuid = self._pick("active", "stopped")
        if uuid in self.pools["locked"]:
            return False
        with self.conn:
            self._update(uuid, locked=1, locked_by=self.rng.choice(("admin", "owner")))
            if self.rng.random() < 0.6:
                self.conn.execute(_INSERT_SYSMETA, (rows.now(), 0, "locked_reason",
                                                    "maintenance window", uuid))
        self.pools["locked"].add(uuid)
        return True

    def unlock(self) -> bool:
        uuid = self.pools["locked"].choice(self.rng)
        with self.conn:
            self._update(uuid, locked=0, locked_by=None)
            # Nova hard-deletes removed system metadata keys
            self.conn.execute("DELETE FROM instance_system_metadata WHERE instance_uuid = ? "
                              "AND key = 'locked_reason'", (uuid,))
        self.pools["locked"].discard(uuid)
        return True

    def error(self) -> bool:
        uuid = self.pools["active"].choice(self.rng)
        host = self._column(uuid, "host")
        with self.conn:
            self._update(uuid, vm_state="error", task_state=None)
            self._fault(uuid, host, FAULTS[self.rng.randrange(1, len(FAULTS))])
        self._move(uuid, "active", "error")
        return True

    def soft_delete(self) -> bool:
        state, uuid = self._pick("active", "stopped", "error", "resized")
        stamp = rows.now()
        with self.conn:
            self.conn.execute("UPDATE instances SET deleted = id, deleted_at = ?, updated_at = ?, "
                              "terminated_at = ?, vm_state = 'deleted', task_state = NULL, "
                              "power_state = 0 WHERE uuid = ?", (stamp, stamp, stamp, uuid))
            for table in SOFT_DELETED_WITH_INSTANCE:
                self.conn.execute(f"UPDATE {table} SET deleted = id, deleted_at = ? "
                                  "WHERE instance_uuid = ? AND deleted = 0", (stamp, uuid))
            self.conn.execute("DELETE FROM tags WHERE resource_id = ?", (uuid,))
            self._action(uuid, "delete")
        self.pools[state].discard(uuid)
        self.pools["locked"].discard(uuid)
        self.pools["deleted"].add(uuid)
        return True

    def archive(self) -> bool:
        uuid = self.pools["deleted"].choice(self.rng)
        with self.conn:
            if self.actions:       # an action's events go before it (archived together)
                self.conn.execute("DELETE FROM instance_actions_events WHERE action_id IN "
                                  "(SELECT id FROM instance_actions WHERE instance_uuid = ?)",
                                  (uuid,))
            for table, column in INSTANCE_TABLES:
                if table in self.tables:
                    self.conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (uuid,))
        self.pools["deleted"].discard(uuid)
        return True

    def _service(self, host: str, **columns) -> None:
        columns["updated_at"] = rows.now()
        sets = ", ".join(f"{name} = ?" for name in columns)
        with self.conn:
            self.conn.execute(f"UPDATE services SET {sets} WHERE host = ? "
                              "AND \"binary\" = 'nova-compute' AND deleted = 0",
                              (*columns.values(), host))

    def service_disable(self) -> bool:
        host = self.rng.choice(self.hosts)
        self._service(host, disabled=1, disabled_reason="maintenance")
        self.down_hosts.add(host)
        return True

    def service_force_down(self) -> bool:
        host = self.rng.choice(self.hosts)
        self._service(host, forced_down=1)
        self.down_hosts.add(host)
        return True

    def service_restore(self) -> bool:
        host = self.down_hosts.choice(self.rng)
        self._service(host, disabled=0, forced_down=0, disabled_reason=None)
        self.down_hosts.discard(host)
        return True


def run_simulator(config: SimulatorConfig, stop: threading.Event | None = None) -> dict:
    """Churn ``config.db`` at ``config.rate`` operations per second until ``stop``,
    ``duration`` seconds or ``ops`` operations; return the count per operation."""
    stop = stop or threading.Event()
    conn = connection.open_cell(config.db, create=True)
    counts: Counter = Counter()
    try:
        _ensure_cell(conn)
        # salted with the cell's history: a second run with the same seed draws new uuids
        rng = random.Random(None if config.seed is None
                            else f"churn-{config.seed}-{_instances_ever(conn)}")
        churn = Churn(conn, rng, config.servers, config.projects, config.seed)
        interval = 1.0 / config.rate if config.rate and config.rate > 0 else 0.0
        started = time.monotonic()
        due = started
        done = 0
        while not stop.is_set():
            if config.ops is not None and done >= config.ops:
                break
            now = time.monotonic()
            if config.duration is not None and now - started >= config.duration:
                break
            if interval:
                if due > now and stop.wait(due - now):
                    break
                due = max(due + interval, time.monotonic() - 1.0)   # no bursts after a stall
            name = churn.choose()
            try:
                if churn.operations[name]():
                    counts[name] += 1
                else:
                    counts["skipped"] += 1
            except apsw.BusyError:
                counts["busy"] += 1             # another writer held the cell too long
            except Gone as exc:                  # another writer removed it: forget it
                churn.forget(exc.args[0])
                counts["gone"] += 1
            except apsw.ConstraintError as exc:  # a row changed under us by another writer
                log.warning("%s: %s", name, exc)
                counts["conflict"] += 1
            done += 1
    finally:
        conn.close()
    return dict(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replica.cell.simulator",
                                     description="Populate and churn a simulated cell.")
    parser.add_argument("--db", required=True)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--ops", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--populate", type=int, default=0, help="bulk-fill N servers first")
    args = parser.parse_args(argv)
    if args.populate:
        populate(args.db, args.populate, args.projects, seed=args.seed or 0)
    counts = run_simulator(SimulatorConfig(args.db, args.rate, args.servers, args.projects,
                                           args.duration, args.ops, args.seed))
    print(json.dumps(counts, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
