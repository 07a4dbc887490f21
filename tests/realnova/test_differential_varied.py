"""The differential test on servers whose fields vary the way real data does: one module
fixture builds, with Nova's own objects, servers with unicode and long names, odd metadata
keys, empty and null descriptions, every config drive and lock form, trusted certificates,
several networks (IPv6 only, floating addresses, none at all), faults of both kinds, task
and power states, cell0 and deleted servers, resized servers and a deleted flavor, boot from volume with attached volumes, a null availability zone, image
properties; then every server route is compared with real nova-api at many microversions,
as member and as admin, on MariaDB and SQLite (``compare`` of test_differential: JSON
bodies equal after normalising only the links' host part).
"""

from __future__ import annotations

import urllib.parse

import pytest

from tests.conftest import wait_for
from tests.realnova.mariadb import mariadb_fixture
from tests.realnova.nova_api import neutron_stub_fixture
from tests.realnova.stack import BACKENDS, nova_stacks_fixture
from tests.realnova.test_differential import (ROLES, _equal_eventually, appliance_fixture,
                                              compare, servers_never_updated, stack_fixture)

MICROVERSIONS = ("2.1", "2.3", "2.16", "2.26", "2.47", "2.63", "2.69", "2.73", "2.79",
                 "2.90", "2.96", "2.98", "2.100", "2.104")
# Every microversion: the server lists (each server's whole view) and flavors/detail.
# The routes that change little with the microversion (a server's own routes, the
# other lists, flavors, key pairs): at these.
SUBRESOURCE_MICROVERSIONS = ("2.1", "2.104")
# A server shown by itself (its view as in the lists, host_status as Nova asks it
# per server, and build requests): at these too.
SHOW_MICROVERSIONS = SUBRESOURCE_MICROVERSIONS + ("2.3", "2.16", "2.47", "2.73", "2.79",
                                                  "2.98")
ROLE_NAMES = ("member", "admin")

neutron = neutron_stub_fixture(scope="module")
mariadb = mariadb_fixture(scope="module")

LONG_NAME = ("Ünïcødé-сервер-服务器-" * 12)[:255]
LONG_DESCRIPTION = ("Déscription — 説明 — " * 20)[:255]
ODD_METADATA = {"a.b.c": "dots", "path/like": "slash", "with space": "sp ace",
                "ключ": "значение", "empty": "", "long": "v" * 255, "€uro": "3-byte"}
# (no 4-byte characters: Nova's MySQL tables are utf8mb3 and refuse them)
IMAGE_WITH_PROPERTIES = {
    "id": "b1a2c3d4-0000-4000-8000-00000000abcd", "name": "ubuntu-24.04",
    "min_disk": 10, "min_ram": 512, "disk_format": "raw", "container_format": "bare",
    "properties": {"hw_disk_bus": "scsi", "os_distro": "ubuntu", "hw_rng_model": "virtio",
                   "hw_cpu_cores": 2, "img_hide_hypervisor_id": True,
                   "os_admin_user": "администратор"}}
VOLUMES = [{"id": "0c1d2e3f-0000-4000-8000-0000000000a1", "delete_on_termination": True},
           {"id": "0c1d2e3f-0000-4000-8000-0000000000a2", "tag": "data"}]


def populate(stack):
    w, neutron = stack.writer, stack.neutron
    w.create_flavor(name="small", vcpus=1, memory_mb=1024, root_gb=10, flavorid="10")
    w.create_flavor(name="big swap ephemeral", vcpus=8, memory_mb=16384, root_gb=80,
                    ephemeral_gb=20, swap=2048, rxtx_factor=2.5, flavorid="11",
                    description="Größer — 大きい",
                    extra_specs={"hw:cpu_policy": "dedicated", "hw:mem_page_size": "large",
                                 "quota:disk_read_bytes_sec": "10240000",
                                 "aggregate_instance_extra_specs:ssd": "true"})
    w.create_flavor(name="doomed", vcpus=2, memory_mb=2048, root_gb=20, flavorid="doomed",
                    extra_specs={"hw:numa_nodes": "1"})
    w.create_flavor(name="private ünicode", vcpus=1, memory_mb=512, root_gb=1,
                    flavorid="12", is_public=False, projects=["project-a", "project-x"],
                    extra_specs={"trait:CUSTOM_Ü": "required"})
    w.create_flavor(name="zero", vcpus=1, memory_mb=64, root_gb=0, flavorid="0")
    w.create_compute(host="compute-1", az="zone-1")
    w.create_compute(host="compute-2")                 # Nova's default zone
    w.create_compute(host="compute-down")
    w.create_keypair(user_id="user-a", name="key-a")
    w.create_keypair(user_id="user-a", name="x509 key", key_type="x509")
    group = w.create_server_group(user_id="user-a", project_id="project-a", name="grp")

    def build(name, **fields):
        fields.setdefault("host", "compute-1")
        return w.build_server(user_id="user-a", project_id="project-a",
                              flavor=fields.pop("flavor", "10"), name=name, **fields)

    made = {}
    made["unicode"] = build(LONG_NAME, description=LONG_DESCRIPTION, metadata=ODD_METADATA,
                            tags=["été", "with space", "x" * 60], key_name="key-a",
                            hostname="unicode-host")
    made["empty-description"] = build("empty-desc", description="", config_drive="True",
                                      metadata={"k": "v"})
    made["locked-plain"] = build("locked-plain", host="compute-2")
    w.set_state(uuid=made["locked-plain"]["uuid"], locked=True)
    made["locked-reason"] = build("locked-reason")
    w.set_state(uuid=made["locked-reason"]["uuid"], locked=True,
                locked_reason="Wartungsfenster — メンテ")
    made["trusted"] = build("trusted", image=IMAGE_WITH_PROPERTIES)
    w.set_trusted_certs(uuid=made["trusted"]["uuid"], ids=["cert-1", "cert-ü"])
    made["networks"] = build("networks", networks=[
        {"label": "private", "fixed": ["10.1.0.5", "fd01::5"],
         "floating": ["172.24.4.77", "172.24.4.78"]},
        {"label": "v6-only", "fixed": ["2001:db8:1::10", "2001:db8:1::11"]},
        {"label": "public net", "fixed": ["203.0.113.9"]},
        {"label": "private", "fixed": ["10.1.0.6"]},
        {"label": "réseau", "fixed": ["198.51.100.77"]}])
    made["no-network"] = build("no-network", networks=[])
    made["quoted"] = build('quote" back\\slash\ttab </script>', description="line\nbreak",
                           metadata={'q"k': 'v\\"'}, tags=["a", "semi;colon"])
    made["fault-500"] = build("fault-500")
    w.fault(uuid=made["fault-500"]["uuid"], code=500, message="Kaputt: ünexpected",
            details="Traceback (most recent call last):\n  File \"x\"\nÜ")
    made["fault-400"] = build("fault-400", host="compute-2")
    w.fault(uuid=made["fault-400"]["uuid"], code=400, message="Bad request: ü",
            details="client error details", task_state="spawning")
    for name, state in (("rebooting", dict(task_state="rebooting")),
                        ("hard-reboot", dict(task_state="reboot_started_hard")),
                        ("snapshot", dict(task_state="image_uploading")),
                        ("rebuilding", dict(task_state="rebuild_spawning")),
                        ("crashed", dict(power_state=6)),
                        ("paused", dict(vm_state="paused", power_state=3)),
                        ("password", dict(task_state="updating_password")),
                        ("shelved", dict(vm_state="shelved", power_state=4)),
                        ("stopped-starting", dict(vm_state="stopped", power_state=4,
                                                  task_state="powering-on")),
                        ("resize-prep", dict(task_state="resize_prep")),
                        ("deleting", dict(task_state="deleting")),
                        ("error-deleting", dict(vm_state="error", task_state="deleting")),
                        ("rescued-unrescuing", dict(vm_state="rescued",
                                                    task_state="unrescuing")),
                        ("building-networking", dict(vm_state="building",
                                                     task_state="networking"))):
        made[name] = build(f"state-{name}")
        w.set_state(uuid=made[name]["uuid"], **state)
    made["cell0"] = w.build_server(user_id="user-a", project_id="project-a", flavor="11",
                                   name="no-valid-host", stage="cell0",
                                   metadata={"m": "1"}, tags=["t"])
    made["requested"] = w.build_server(user_id="user-a", project_id="project-a", flavor="11",
                                       name="Ünïcødé queued", stage="requested",
                                       description="queued ü", metadata=ODD_METADATA,
                                       tags=["q1"], key_name="key-a", az="zone-1",
                                       config_drive="True")
    made["resized"] = build("resized", flavor="10", server_group=group["uuid"])
    w.resize(uuid=made["resized"]["uuid"], flavor="11")
    made["verify-resize"] = build("verify-resize", flavor="11")
    w.resize(uuid=made["verify-resize"]["uuid"], flavor="10", confirm=False)
    made["flavor-deleted"] = build("flavor-deleted", flavor="doomed")
    made["zero-flavor"] = build("zero-flavor", flavor="0")
    made["bfv"] = build("boot-from-volume", volumes=VOLUMES)
    w.update(uuid=made["bfv"]["uuid"], image_ref="")
    made["volumes"] = build("volumes", volumes=VOLUMES[1:], host="compute-2")
    made["null-az"] = build("null-az")
    w.update(uuid=made["null-az"]["uuid"], availability_zone=None)
    made["kernel"] = build("kernel-ramdisk", image=IMAGE_WITH_PROPERTIES)
    w.update(uuid=made["kernel"]["uuid"], kernel_id="k-0001", ramdisk_id="r-0001",
             access_ip_v4="198.51.100.4", access_ip_v6="2001:db8::4",
             user_data="IyEvYmluL2Jhc2gKZWNobyDDvA==")
    made["down-host"] = build("on-a-down-host", host="compute-down")
    made["scheduled"] = build("spawning", stage="scheduled")
    made["deleted"] = build("deleted")
    w.delete(uuid=made["deleted"]["uuid"])
    made["soft-deleted"] = build("soft-deleted")
    w.soft_delete(uuid=made["soft-deleted"]["uuid"])
    w.delete_flavor(flavorid="doomed")
    w.service_down(host="compute-down")
    for name, server in made.items():
        if name != "deleted":
            neutron.add_server(server)
    w.start_heartbeats(["compute-1", "compute-2"])
    return {name: server["uuid"] for name, server in made.items()}


stacks = nova_stacks_fixture(populate=populate, backends=BACKENDS, scope="module")


stack = stack_fixture()
appliance = appliance_fixture("appliance-varied")


@pytest.fixture(scope="module")
def varied(stack, appliance):
    """The servers, once the replica has caught up and the publisher's Neutron check has
    given every server with ports its security groups."""
    wait_for(appliance.caught_up, 60, interval=0.1, what="the replica caught up")
    with_ports = {uuid for name, uuid in stack.data.items()
                  if name not in ("no-network", "cell0", "requested", "deleted")}

    def security_groups_known():
        ours = appliance.get("/v2.1/servers/detail?all_tenants=1", ROLES["admin"][1])[1]
        return all(s.get("security_groups") for s in ours.get("servers", [])
                   if s["id"] in with_ports and s["status"] != "BUILD")

    wait_for(security_groups_known, 60, interval=0.2, what="the servers' security groups")
    return stack.data


def _quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _server_paths(stack, uuid: str, microversion: str) -> list[str]:
    paths = [f"/v2.1/servers/{uuid}"] if microversion in SHOW_MICROVERSIONS else []
    if microversion not in SUBRESOURCE_MICROVERSIONS:
        return paths
    base = f"/v2.1/servers/{uuid}"
    paths += [f"{base}/ips", f"{base}/metadata", f"{base}/os-instance-actions"]
    status, body = stack.api.get(f"{base}/ips", token=ROLES["admin"][0])
    for network in (body.get("addresses", {}) if status == 200 else {}):
        paths.append(f"{base}/ips/{_quoted(network)}")
    paths.append(f"{base}/ips/no-such-network")
    status, body = stack.api.get(f"{base}/metadata", token=ROLES["admin"][0])
    for key in (body.get("metadata", {}) if status == 200 else {}):
        paths.append(f"{base}/metadata/{_quoted(key)}")
    paths.append(f"{base}/metadata/no-such-key")
    if microversion != "2.1":
        paths.append(f"{base}/tags")
        status, body = stack.api.get(f"{base}/tags", token=ROLES["admin"][0],
                                     microversion="2.26")
        for tag in (body.get("tags", []) if status == 200 else []):
            paths.append(f"{base}/tags/{_quoted(tag)}")
        paths.append(f"{base}/tags/no-such-tag")
    return paths


def _list_paths(role: str, microversion: str) -> list[str]:
    every = "?all_tenants=1&" if role == "admin" else "?"
    if microversion not in SUBRESOURCE_MICROVERSIONS:
        return ["/v2.1/servers/detail",
                f"/v2.1/servers/detail{every}changes-since=2000-01-01T00:00:00Z",
                "/v2.1/flavors/detail"]
    paths = ["/v2.1/servers", "/v2.1/servers/detail",
             f"/v2.1/servers/detail{every}deleted=true",
             f"/v2.1/servers/detail{every}changes-since=2000-01-01T00:00:00Z",
             f"/v2.1/servers{every}changes-since=2000-01-01T00:00:00Z",
             "/v2.1/flavors/detail", "/v2.1/flavors/detail?is_public=none",
             "/v2.1/flavors", "/v2.1/flavors/11", "/v2.1/flavors/12", "/v2.1/flavors/0",
             "/v2.1/flavors/doomed", "/v2.1/flavors/11/os-extra_specs",
             "/v2.1/flavors/11/os-extra_specs/hw:cpu_policy",
             "/v2.1/flavors/12/os-extra_specs",
             f"/v2.1/flavors/12/os-extra_specs/{_quoted('trait:CUSTOM_Ü')}",
             "/v2.1/flavors/12/os-flavor-access", "/v2.1/flavors/11/os-flavor-access",
             "/v2.1/os-keypairs", "/v2.1/os-keypairs/key-a",
             f"/v2.1/os-keypairs/{_quoted('x509 key')}"]
    if role == "admin":
        paths += ["/v2.1/servers/detail?all_tenants=1&status=DELETED",
                  "/v2.1/servers/detail?all_tenants=1&status=SOFT_DELETED",
                  "/v2.1/os-keypairs?user_id=user-a"]
    return paths


@pytest.mark.parametrize("microversion", MICROVERSIONS)
@pytest.mark.parametrize("role", ROLE_NAMES)
def test_varied_servers_equal_nova_api(stack, appliance, varied, role, microversion):
    never_updated = servers_never_updated(stack.deployment)
    paths = _list_paths(role, microversion)
    for uuid in varied.values():
        paths += _server_paths(stack, uuid, microversion)
    found = []
    for path in paths:
        found += compare(stack, appliance, path, role, microversion,
                         never_updated=never_updated)
    assert not found, f"{len(found)} differences:\n" + "\n".join(found)


def test_a_host_moved_to_another_zone_moves_its_servers(stack, appliance, varied):
    """A server's zone is its host's zone now (an aggregate of the API database; no cell
    row changes): compute-2 joins a zone, then leaves it. (nova-api answers from a
    per-process cache of the hosts' zones, kept an hour, which an aggregate change made
    through nova-api refreshes in that process only: compared once the zone is back.)"""
    w = stack.writer
    on_compute_2 = f"/v2.1/servers/{varied['locked-plain']}"

    def zone():
        return appliance.get(on_compute_2, ROLES["admin"][1], "2.1")[1]["server"][
            "OS-EXT-AZ:availability_zone"]

    assert zone() == "nova"
    late = w.create_aggregate(name="late-zone", hosts=["compute-2"],
                              metadata={"availability_zone": "zone-late"})
    wait_for(lambda: zone() == "zone-late", 30, interval=0.2, what="compute-2's new zone")
    w.aggregate_remove_host(aggregate_id=late["id"], host="compute-2")
    wait_for(lambda: zone() == "nova", 30, interval=0.2, what="compute-2 back in nova")
    for path in (on_compute_2, "/v2.1/servers/detail?all_tenants=1"):
        _equal_eventually(stack, appliance, path)


def test_hidden_servers_are_left_out_of_lists(stack, appliance, varied):
    """A hidden instance (the copy a cross-cell resize keeps in the other cell) is in
    none of nova-api's lists; the publisher gives it no entity. (nova-api shows one by
    its id through the instance mapping, which names the visible copy's cell; a lone
    hidden copy, as made here, is a state Nova never leaves a server in: not compared.)
    Last in the module: the hidden server stays in the data."""
    w = stack.writer
    hidden = w.build_server(user_id="user-a", project_id="project-a", flavor="10",
                            name="hidden", host="compute-1")
    stack.neutron.add_server(hidden)
    path = f"/v2.1/servers/{hidden['uuid']}"
    wait_for(lambda: appliance.get(path, ROLES["admin"][1])[1]["server"]["security_groups"],
             60, interval=0.2, what="the server and its security groups in the appliance")
    w.update(uuid=hidden["uuid"], hidden=True)
    wait_for(lambda: appliance.get(path, ROLES["admin"][1])[0] == 404, 30, interval=0.2,
             what="the hidden server gone from the appliance")
    found = []
    for role, list_path in (("admin", "/v2.1/servers/detail?all_tenants=1"),
                            ("admin", "/v2.1/servers?all_tenants=1&changes-since="
                                      "2000-01-01T00:00:00Z"),
                            ("member", "/v2.1/servers"), ("member", "/v2.1/servers/detail")):
        found += compare(stack, appliance, list_path, role, "2.104",
                         never_updated=servers_never_updated(stack.deployment))
    assert not found, "\n".join(found)


COLLATED_NAME_READS = ("/v2.1/servers/detail?sort_key=display_name&sort_dir=asc",
                       "/v2.1/servers?all_tenants=1&host=COMPUTE-2",
                       "/v2.1/servers?sort_key=display_name&sort_dir=desc&limit=5",
                       "/v2.1/servers/detail?name=STATE")


@pytest.mark.parametrize("path", COLLATED_NAME_READS)
def test_name_sorts_and_filters_follow_the_databases_collation(stack, appliance, varied,
                                                               path):
    """nova-api sorts and filters by display_name in the database: on MariaDB/MySQL
    under the column's collation (Nova's tables: utf8 general_ci: 'Ü' sorts as 'U',
    case ignored, also by the name filter's REGEXP), on SQLite by code point. The
    appliance follows nova_database_collation (utf8_general_ci here on MariaDB)."""
    role = "admin" if "all_tenants" in path else "member"
    found = compare(stack, appliance, path, role, "2.104",
                    never_updated=servers_never_updated(stack.deployment))
    assert not found, "\n".join(found)
