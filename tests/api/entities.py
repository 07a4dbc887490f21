"""Factories of valid feed entities (every field of SERVER_FIELDS / FLAVOR_FIELDS), and a
function that fills a replica file with their rendered rows by plain INSERTs."""

from __future__ import annotations

import datetime
import uuid as uuidlib

from replica import feed, render
from replica.store import usage
from replica.store.connection import open_writer

PROJECT = "6f70656e737461636b20342065766572"
OTHER_PROJECT = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"
IMAGE = "70a599e0-31e7-49b7-b260-868f441e862b"


def stamp(day: int = 1, second: int = 0, micro: int = 123456) -> str:
    return f"2026-11-{day:02d}T04:01:{second:02d}.{micro:06d}"


def flavor_of_server(flavorid: str = "1", name: str = "m1.tiny", **over) -> dict:
    f = {"flavorid": flavorid, "name": name, "memory_mb": 512, "vcpus": 1, "root_gb": 1,
         "ephemeral_gb": 0, "swap": 0, "extra_specs": {}}
    f.update(over)
    return f


def network_info(ip: str = "192.168.1.30", mac: str = "00:0c:29:0d:11:74",
                 label: str = "private", floating: str | None = None,
                 ip6: str | None = None) -> list:
    ips = [{"address": ip, "type": "fixed", "version": 4,
            "floating_ips": ([{"address": floating, "type": "floating", "version": 4}]
                             if floating else [])}]
    subnets = [{"cidr": "192.168.1.0/24", "version": 4, "ips": ips}]
    if ip6:
        subnets.append({"cidr": "fd00::/64", "version": 6, "ips": [
            {"address": ip6, "type": "fixed", "version": 6, "floating_ips": []}]})
    return [{"id": str(uuidlib.uuid4()), "address": mac,
             "network": {"label": label, "subnets": subnets}}]


def server(n: int = 0, **over) -> dict:
    """A valid active server entity; ``n`` varies the uuid, name and times."""
    uid = over.pop("uuid", None) or str(uuidlib.UUID(int=0x0e44cc9c_e052_415d_afbf_469b0d000000
                                                     + n))
    e = {
        "uuid": uid,
        "project_id": PROJECT,
        "user_id": "fake",
        "display_name": f"server-{n}",
        "display_description": f"description {n}",
        "hostname": f"server-{n}",
        "created_at": stamp(1, n % 60, n),
        "updated_at": stamp(2, n % 60, n),
        "launched_at": stamp(1, n % 60, 880302),
        "terminated_at": None,
        "deleted_at": None,
        "deleted": False,
        "vm_state": "active",
        "task_state": None,
        "power_state": 1,
        "progress": 0,
        "host": "compute-1",
        "node": "fake-mini",
        "availability_zone": "us-west",
        "launch_index": 0,
        "reservation_id": f"r-{n:08d}",
        "kernel_id": "",
        "ramdisk_id": "",
        "root_device_name": "/dev/sda",
        "user_data": None,
        "key_name": None,
        "config_drive": "",
        "access_ip_v4": "1.2.3.4",
        "access_ip_v6": "80fe::",
        "auto_disk_config": True,
        "locked": False,
        "locked_by": None,
        "locked_reason": None,
        "instance_name": f"instance-{n + 1:08x}",
        "image_ref": IMAGE,
        "image_properties": {"architecture": "x86_64", "auto_disk_config": "True"},
        "flavor": flavor_of_server(),
        "metadata": {"My Server Name": "Apache1"},
        "tags": [],
        "network_info": network_info(),
        "security_groups": ["default"],
        "volumes": [{"id": "volume_id1", "delete_on_termination": False},
                    {"id": "volume_id2", "delete_on_termination": False}],
        "fault": None,
        "host_status": "UP",
        "trusted_image_certificates": None,
        "server_groups": [],
        "pinned_availability_zone": "us-west",
        "scheduler_hints": {"same_host": ["48e6a9f6-30af-47e0-bc04-acaed113bb4e"]},
    }
    e.update(over)
    feed.validate_entity(feed.KIND_SERVER, e["uuid"], e)
    return e


def flavor(flavorid: str = "1", name: str = "m1.tiny", **over) -> dict:
    f = {"flavorid": flavorid, "name": name, "memory_mb": 512, "vcpus": 1, "root_gb": 1,
         "ephemeral_gb": 0, "swap": 0, "rxtx_factor": 1.0, "vcpu_weight": None,
         "disabled": False, "is_public": True, "description": None,
         "extra_specs": {"hw:cpu_policy": "shared"}, "projects": [],
         "created_at": "2026-11-01T00:00:00.000000"}
    f.update(over)
    feed.validate_entity(feed.KIND_FLAVOR, f["flavorid"], f)
    return f


def fill_replica(path: str, servers: list[tuple[str, dict]], flavors: list[dict],
                 positions: dict[str, int] | None = None) -> None:
    """Write rendered rows straight into a replica file (``servers``: (cell, entity))."""
    conn = open_writer(path)
    s_cols = ", ".join(render.SERVER_COLUMNS)
    f_cols = ", ".join(render.FLAVOR_COLUMNS)
    with conn:
        for seq, (cell, entity) in enumerate(servers, start=1):
            conn.execute(f"INSERT OR REPLACE INTO servers ({s_cols}) VALUES "
                         f"({', '.join('?' * len(render.SERVER_COLUMNS))})",
                         render.server_row(cell, seq, entity))
        for seq, entity in enumerate(flavors, start=1):
            conn.execute(f"INSERT OR REPLACE INTO flavors ({f_cols}) VALUES "
                         f"({', '.join('?' * len(render.FLAVOR_COLUMNS))})",
                         render.flavor_row("flavors", seq, entity))
        for cell, seq in (positions or {}).items():
            conn.execute("INSERT OR REPLACE INTO positions (cell, epoch, seq, applied_at) "
                         "VALUES (?, 'e', ?, 0)", (cell, seq))
        usage.recount(conn)     # rows written past the writer: their projects' usage
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def action_event(name: str = "compute__do_build_and_run_instance", n: int = 0,
                 **over) -> dict:
    ev = {"event": name, "start_time": stamp(3, n, 1000 + n),
          "finish_time": stamp(3, n + 1, 2000 + n), "result": "Success",
          "traceback": None, "host": "compute-1", "details": None}
    ev.update(over)
    return ev


def instance_action(server_entity: dict, action_id: int, action: str = "create",
                    events: list | None = None, **over) -> dict:
    """A valid instance action of ``server_entity`` (its cell-local ``action_id``)."""
    a = {"action_key": feed.instance_action_key(server_entity["uuid"], action_id),
         "id": action_id, "instance_uuid": server_entity["uuid"],
         "instance_project_id": server_entity["project_id"], "action": action,
         "request_id": f"req-{uuidlib.UUID(int=action_id)}",
         "user_id": server_entity["user_id"], "project_id": server_entity["project_id"],
         "start_time": stamp(3, action_id % 60, 0), "finish_time": None, "message": None,
         "created_at": stamp(3, action_id % 60, 0), "updated_at": stamp(4, action_id % 60, 0),
         "deleted": False,
         "events": [action_event(n=action_id % 50)] if events is None else events}
    a.update(over)
    feed.validate_entity(feed.KIND_INSTANCE_ACTION, a["action_key"], a)
    return a


def fill_instance_actions(path: str, actions: list[tuple[str, dict]]) -> None:
    """Rendered instance action rows straight into a replica file ((cell, entity))."""
    conn = open_writer(path)
    cols = render.INSTANCE_ACTION_COLUMNS
    with conn:
        for seq, (cell, entity) in enumerate(actions, start=1):
            conn.execute(f"INSERT OR REPLACE INTO instance_actions ({', '.join(cols)}) "
                         f"VALUES ({', '.join('?' * len(cols))})",
                         render.instance_action_row(cell, seq, entity))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def keypair(user_id: str, name: str, kid: int, **over) -> dict:
    """A valid key pair entity of ``user_id``."""
    k = {"keypair_key": feed.keypair_key(user_id, name), "id": kid, "user_id": user_id,
         "name": name, "fingerprint": f"{kid:02x}:aa:bb", "public_key": f"ssh-rsa AAAA{kid} x",
         "type": "ssh", "created_at": stamp(5, kid % 60), "updated_at": None}
    k.update(over)
    feed.validate_entity(feed.KIND_KEYPAIR, k["keypair_key"], k)
    return k


def fill_keypairs(path: str, keypairs: list[dict], source: str = "flavors") -> None:
    """Rendered key pair rows straight into a replica file."""
    conn = open_writer(path)
    cols = render.KEYPAIR_COLUMNS
    with conn:
        for seq, entity in enumerate(keypairs, start=1):
            conn.execute(f"INSERT OR REPLACE INTO keypairs ({', '.join(cols)}) "
                         f"VALUES ({', '.join('?' * len(cols))})",
                         render.keypair_row(source, seq, entity))
def quota(project_id: str | None = None, server_groups_used: int = 0, **limits) -> dict:
    """A quota limit set: a project's (only ``limits`` set) or, ``project_id`` None,
    the defaults (Nova's defaults under ``limits``)."""
    base = (dict(render.QUOTA_NOVA_DEFAULTS) if project_id is None
            else dict.fromkeys(feed.QUOTA_RESOURCES))
    base.update(limits)
    return {"quota_key": feed.QUOTA_DEFAULT_KEY if project_id is None
            else feed.quota_key(project_id),
            "project_id": project_id, "limits": base,
            "server_groups_used": server_groups_used}


def fill_quotas(path: str, quotas: list[dict]) -> None:
    """Rendered quota rows straight into a replica file."""
    conn = open_writer(path)
    cols = render.QUOTA_COLUMNS
    with conn:
        for seq, entity in enumerate(quotas, start=1):
            feed.validate_entity(feed.KIND_QUOTA, entity["quota_key"], entity)
            conn.execute(f"INSERT OR REPLACE INTO quotas ({', '.join(cols)}) "
                         f"VALUES ({', '.join('?' * len(cols))})",
                         render.quota_row("flavors", seq, entity))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def hypervisor(n: int, host: str | None = None, **over) -> dict:
    """A valid hypervisor entity: compute node ``n`` (its id) on ``host``, with a live,
    enabled nova-compute service."""
    host = host or f"compute-{n}"
    h = {"uuid": str(uuidlib.UUID(int=0x5a1d0000_0000_4000_8000_000000000000 + n)), "id": n,
         "host": host, "hypervisor_hostname": f"{host}.example.org",
         "hypervisor_type": "QEMU", "hypervisor_version": 8002000, "host_ip": f"192.0.2.{n}",
         "vcpus": 64, "memory_mb": 262144, "local_gb": 1800, "vcpus_used": 2 * n,
         "memory_mb_used": 512 + 1024 * n, "local_gb_used": n, "free_ram_mb": 261632,
         "free_disk_gb": 1800 - n, "current_workload": 0, "running_vms": n,
         "disk_available_least": 1750,
         "cpu_info": '{"arch": "x86_64", "model": "Cascadelake-Server", "vendor": "Intel"}',
         "uptime": None, "service_id": 100 + n,
         "service_uuid": str(uuidlib.UUID(int=0x5e470000_0000_4000_8000_000000000000 + n)),
         "service_disabled": False, "service_disabled_reason": None, "state": "up"}
    h.update(over)
    feed.validate_entity(feed.KIND_HYPERVISOR, h["uuid"], h)
    return h


def fill_hypervisors(path: str, hypervisors: list[tuple[str, dict]]) -> None:
    """Rendered hypervisor rows straight into a replica file ((cell, entity))."""
    conn = open_writer(path)
    cols = render.HYPERVISOR_COLUMNS
    with conn:
        for seq, (cell, entity) in enumerate(hypervisors, start=1):
            conn.execute(f"INSERT OR REPLACE INTO hypervisors ({', '.join(cols)}) "
                         f"VALUES ({', '.join('?' * len(cols))})",
                         render.hypervisor_row(cell, seq, entity))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def service(sid: int, host: str, binary: str = "nova-compute", **over) -> dict:
    """A valid service entity (a compute service unless ``binary`` says otherwise),
    reporting now unless ``heartbeat`` says otherwise."""
    now = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f")
    s = {"uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{host}/{binary}")), "id": sid,
         "host": host, "binary": binary,
         "topic": "compute" if binary == "nova-compute" else binary.removeprefix("nova-"),
         "disabled": False, "disabled_reason": None, "forced_down": False,
         "heartbeat": now, "down_after": 3600, "updated_at": now}
    s.update(over)
    feed.validate_entity(feed.KIND_SERVICE, s["uuid"], s)
    return s


def fill_kind(path: str, kind: str, owner: str, entities: list[dict]) -> None:
    """Rendered rows of one kind (``replica.kinds``) straight into a replica file."""
    from replica.kinds import kind_named
    declared = kind_named(kind)
    cols = getattr(render, declared.render_columns)
    row = getattr(render, declared.render_row)
    quoted = ", ".join(f'"{c}"' for c in cols)
    conn = open_writer(path)
    with conn:
        for seq, entity in enumerate(entities, start=1):
            # an upsert, as the writer's (a table's triggers see an update)
            conn.execute(f"INSERT INTO {declared.table} ({quoted}) "
                         f"VALUES ({', '.join('?' * len(cols))}) "
                         f"ON CONFLICT ({declared.key_column}) DO UPDATE SET "
                         + ", ".join(f'"{c}" = excluded."{c}"' for c in cols),
                         row(owner, seq, entity))
    conn.close()


def aggregate(aid: int, name: str, hosts: list[str], metadata: dict | None = None,
              **over) -> dict:
    """A valid host aggregate entity."""
    a = {"aggregate_key": str(aid), "id": aid,
         "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"aggregate/{name}")), "name": name,
         "hosts": list(hosts), "metadata": dict(metadata or {}), "created_at": stamp(2, aid),
         "updated_at": None}
    a.update(over)
    feed.validate_entity(feed.KIND_AGGREGATE, a["aggregate_key"], a)
    return a


def zoned_aggregate(aid: int, zone: str | None, hosts: list[str], **over) -> dict:
    """A valid host aggregate entity named ``agg<aid>``, an availability zone when
    ``zone`` is given (its ``availability_zone`` metadata)."""
    return aggregate(aid, f"agg{aid}", hosts, {"availability_zone": zone} if zone else {},
                     **over)


def fill_zones(path: str, services: list[tuple[str, dict]], aggregates: list[dict]) -> None:
    """Rendered service ((cell, entity)) and aggregate rows straight into a replica file:
    the rows the availability zones are read from."""
    by_cell: dict[str, list[dict]] = {}
    for cell, entity in services:
        by_cell.setdefault(cell, []).append(entity)
    for cell, entities in by_cell.items():
        fill_kind(path, "service", cell, entities)
    if aggregates:
        fill_kind(path, "aggregate", "flavors", aggregates)


def server_group(n: int, project_id: str = PROJECT, user_id: str = "fake",
                 policy: str | None = "anti-affinity", members: list[str] | None = None,
                 **over) -> dict:
    """A valid server group entity (Nova's id ``n``)."""
    g = {"group_key": str(uuidlib.UUID(int=0x96 << 64 | n)), "id": n, "name": f"group-{n}",
         "project_id": project_id, "user_id": user_id, "policy": policy, "rules": {},
         "members": members or []}
    g.update(over)
    feed.validate_entity(feed.KIND_SERVER_GROUP, g["group_key"], g)
    return g


def fill_server_groups(path: str, groups: list[dict]) -> None:
    """Rendered server group rows straight into a replica file."""
    conn = open_writer(path)
    cols = render.SERVER_GROUP_COLUMNS
    with conn:
        for seq, entity in enumerate(groups, start=1):
            conn.execute(f"INSERT OR REPLACE INTO server_groups ({', '.join(cols)}) "
                         f"VALUES ({', '.join('?' * len(cols))})",
                         render.server_group_row("flavors", seq, entity))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
