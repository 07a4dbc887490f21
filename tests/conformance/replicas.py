"""The data of the conformance tests' replicas: hand-made entities covering every shape
of server and flavor, and entities built from a cell database after simulated
lifecycle churn (the publisher's own builder over the simulator's rows)."""

from __future__ import annotations

import os
import uuid as uuidlib
from dataclasses import dataclass

from replica.cell import connection, entity, outbox, simulator
from tests.api import entities as E
from tests.api.conftest import ADMIN, MEMBER

ROLES = {"admin": ADMIN, "member": MEMBER}

CERTS = ["0b5d2c72-12cc-4ba6-a8d7-3ff5cc1d8cb8", "674736e3-f25c-405c-8362-bbf991e0ce0a"]
GROUP = "b9b6ea47-0f4a-4b55-9b2e-2a9ac1e5d0a7"
CHANGES_SINCE = "2026-01-01T00:00:00Z"


def _fault(code: int, message: str, details: str | None) -> dict:
    return {"code": code, "message": message, "details": details, "created": E.stamp(3)}


def conformance_servers() -> list[tuple[str, dict]]:
    """(cell, entity) pairs: every state and shape of server the API renders."""
    deleted = dict(deleted=True, vm_state="deleted", power_state=0, deleted_at=E.stamp(4),
                   terminated_at=E.stamp(4), updated_at=E.stamp(4))
    variants = {
        0: {},  # active, metadata, fixed IP, two volumes
        1: dict(tags=["web", "prod"], key_name="ops-key", display_description=None,
                metadata={"My Server Name": "Apache1", "role": "web", "empty": ""},
                network_info=E.network_info("10.0.0.11", floating="172.24.4.11",
                                            ip6="fd00::11"),
                trusted_image_certificates=CERTS, server_groups=[GROUP]),
        2: dict(vm_state="error", power_state=0,
                fault=_fault(500, "boom", "Traceback (most recent call last): ...")),
        3: dict(vm_state="error", power_state=0, task_state=None,
                fault=_fault(404, "Image not found.", None)),
        4: dict(image_ref="", image_properties={}),  # booted from volume
        5: dict(vm_state="stopped", power_state=4, locked=True, locked_by="owner",
                locked_reason="maintenance"),
        6: dict(locked=True, locked_by="admin", locked_reason=None),
        7: dict(vm_state="building", task_state="spawning", power_state=0, host=None,
                node=None, launched_at=None, availability_zone=None, network_info=[],
                host_status=None, progress=None),
        8: deleted,  # soft-deleted: only with changes-since
        9: dict(vm_state="soft-delete", task_state=None, power_state=4),
        10: dict(vm_state="shelved_offloaded", power_state=4, host=None, node=None,
                 host_status=""),
        11: dict(vm_state="active", task_state="resize_migrating", progress=40,
                 tags=["web"]),
        12: dict(image_ref=None, image_properties={}, network_info=[], security_groups=[],
                 volumes=[], metadata={}, access_ip_v4=None, access_ip_v6=None,
                 auto_disk_config=None, key_name=None, display_description=""),
        13: dict(user_data="IyEvYmluL2Jhc2gKZWNobyAiSGVsbG8gV29ybGQiCg==",
                 config_drive="True", key_name="ops-key", host_status="DOWN",
                 kernel_id="6d5b57f8-9aba-4d3f-9a7b-e1d1a6c3f7c4",
                 ramdisk_id="a1c8b26e-5ccb-4c73-b3b6-d10e55f3ec1a"),
        14: dict(display_name="  spaced name  ", hostname="spaced-name",
                 metadata={"k\u00e9y": "v\u00e2lue", "a": "1", "b": "2"},
                 host_status="UNKNOWN", tags=["t1", "t2", "t3"],
                 flavor=E.flavor_of_server("2", "m1.small", memory_mb=2048, root_gb=20,
                                           swap=512, ephemeral_gb=1,
                                           extra_specs={"hw:cpu_policy": "dedicated",
                                                        "hw:numa_nodes": "1"})),
        15: dict(vm_state="paused", power_state=3, host_status="MAINTENANCE"),
        16: dict(vm_state="rescued", power_state=1, pinned_availability_zone=None,
                 scheduler_hints={}),
        17: dict(network_info=E.network_info("192.168.1.17", floating="172.24.4.17")
                 + E.network_info("10.1.0.17", mac="fa:16:3e:00:00:17", label="public")),
    }
    rows = [("cell1" if n % 2 else "cell2", E.server(n, **over))
            for n, over in variants.items()]
    other = {100: {},
             101: dict(vm_state="error", fault=_fault(500, "No valid host was found.", "")),
             102: deleted}
    rows += [("cell1", E.server(n, project_id=E.OTHER_PROJECT, user_id="other", **over))
             for n, over in other.items()]
    return rows


def conformance_flavors() -> list[dict]:
    return [E.flavor("1", "m1.tiny"),
            E.flavor("2", "m1.small", memory_mb=2048, root_gb=20, swap=512,
                     description="small one"),
            E.flavor("3", "m1.medium", memory_mb=4096, root_gb=40, vcpus=2, rxtx_factor=1.5,
                     vcpu_weight=10, ephemeral_gb=10, extra_specs={}),
            E.flavor("4", "m1.large", memory_mb=8192, root_gb=80, vcpus=4, disabled=True),
            E.flavor("5", "private", is_public=False, projects=[E.PROJECT]),
            E.flavor("6", "secret", is_public=False, projects=[E.OTHER_PROJECT]),
            E.flavor(str(uuidlib.UUID(int=7)), "m1.\u00fcnicode", description="",
                     extra_specs={"hw:mem_page_size": "large", "quota:cpu_shares": "1024"})]


def server_ids(role: str) -> list[str]:
    """The servers a role can show: its project's (admin: every project's), not deleted."""
    return [e["uuid"] for _, e in conformance_servers()
            if not e["deleted"] and (role == "admin" or e["project_id"] == E.PROJECT)]


def flavor_ids(role: str) -> list[str]:
    return [f["flavorid"] for f in conformance_flavors()
            if role == "admin" or f["is_public"] or E.PROJECT in f["projects"]]


# ---------------------------------------------------------------------------
# The same API over entities built the real way: the cell simulator's lifecycle
# churn in a cell database, joined into entities by the publisher's builder.
# ---------------------------------------------------------------------------

SIM_PROJECT = "demo"            # the simulator's first project
SIM_ROLES = {"admin": f"admin:{SIM_PROJECT}", "member": f"fake:{SIM_PROJECT}"}


@dataclass
class Simulated:
    api: object
    servers: list[dict]         # every server entity, soft-deleted ones included
    flavors: list[dict]

    def show_sample(self, role: str) -> list[str]:
        """One visible server of each distinct shape (state, fault, lock, tags, image)."""
        seen, ids = set(), []
        for e in self.servers:
            if e["deleted"] or (role == "member" and e["project_id"] != SIM_PROJECT):
                continue
            shape = (e["vm_state"], e["task_state"], bool(e["fault"]), e["locked"],
                     bool(e["tags"]), bool(e["image_ref"]), e["project_id"] == SIM_PROJECT)
            if shape not in seen:
                seen.add(shape)
                ids.append(e["uuid"])
        return ids


def simulated_entities(workdir: str) -> tuple[list[dict], list[dict]]:
    cell, flavors = os.path.join(workdir, "cell.db"), os.path.join(workdir, "flavors.db")
    outbox.init_cell_db(cell, "sim")
    simulator.populate(cell, 40, 2, seed=11)
    simulator.run_simulator(simulator.SimulatorConfig(db=cell, rate=0, servers=40, projects=2,
                                                      ops=800, seed=12))
    outbox.init_cell_db(flavors, "flavors", flavors=True)
    simulator.seed_flavors(flavors)
    built = []
    for path, kind in ((cell, "server"), (flavors, "flavor")):
        conn = connection.open_cell_reader(path)
        try:
            built.append([e for _, _, e in entity.iter_entities(conn, [kind])])
        finally:
            conn.close()
    return built[0], built[1]
