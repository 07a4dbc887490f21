"""What every writer operation shares: the cells, contexts, cached flavors and hosts,
the instance lookup, action records, and the small helpers of the writes.

Imported by ``writer.py`` after it has taken stdout for its protocol."""

from __future__ import annotations

import ipaddress
import uuid as uuidlib

from nova import context as nova_context
from nova import crypto
from nova import objects

DEFAULT_IMAGE = {
    "id": "155d900f-4e14-4e4c-a73d-069cbf4541e6",
    "name": "cirros-0.6.2-x86_64-disk",
    "min_disk": 0, "min_ram": 0,
    "disk_format": "qcow2", "container_format": "bare",
    "properties": {"hw_machine_type": "q35", "os_distro": "cirros"},
}
WRITER_HOST = "writer"     # the "host" the API and conductor writes are recorded from


class WriterBase:
    """The state one writer process keeps: the cells and the objects it needs often."""

    def __init__(self):
        self.admin = nova_context.get_admin_context()
        self.cells = {cell.name: cell for cell in objects.CellMappingList.get_all(self.admin)}
        self.cell0 = objects.CellMapping.get_by_uuid(self.admin,
                                                     objects.CellMapping.CELL0_UUID)
        self.flavors: dict[str, objects.Flavor] = {}
        self.public_key, self.fingerprint = self._public_key()
        self.port_seq = 0
        self.host_cache: dict[str, dict] = {}

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _public_key():
        _private, public, fingerprint = crypto.generate_key_pair()
        return public, fingerprint

    def cell(self, name: str | None):
        if not name:
            name = next(n for n in sorted(self.cells) if n != "cell0")
        return self.cells[name]

    def user_context(self, user_id: str, project_id: str, roles=("member", "reader")):
        """A request context for the user's project as nova-api builds it from the token;
        elevated (is_admin) as the services' contexts are, so the object layer reads across
        projects."""
        return nova_context.RequestContext(
            user_id=user_id, project_id=project_id, user_name=f"name-{user_id}",
            project_name=f"name-{project_id}", roles=list(roles), is_admin=True)

    def flavor(self, flavorid: str):
        flavor = self.flavors.get(flavorid)
        if flavor is None:
            flavor = objects.Flavor.get_by_flavor_id(self.admin, flavorid)
            self.flavors[flavorid] = flavor
        return flavor

    def instance(self, instance_uuid: str, expected_attrs=()):
        """The instance and a context targeted at its cell."""
        mapping = objects.InstanceMapping.get_by_instance_uuid(self.admin, instance_uuid)
        cctxt = nova_context.RequestContext.from_dict(self.admin.to_dict())
        nova_context.set_target_cell(cctxt, mapping.cell_mapping)
        attrs = ["flavor", "info_cache", "metadata", "system_metadata", "tags"]
        attrs += list(expected_attrs)
        return cctxt, objects.Instance.get_by_uuid(cctxt, instance_uuid, expected_attrs=attrs)

    def record_action(self, cctxt, instance_uuid, action, event, host=None, finish=True):
        objects.InstanceAction.action_start(cctxt, instance_uuid, action, want_result=False)
        objects.InstanceActionEvent.event_start(cctxt, instance_uuid, event,
                                                want_result=False, host=host or WRITER_HOST)
        if finish:
            objects.InstanceActionEvent.event_finish(cctxt, instance_uuid, event,
                                                     want_result=False)


def create_reqspec_buildreq_instmapping(context, request_spec, build_request, inst_mapping):
    """One API database transaction, as nova/compute/api.py writes the three rows."""
    from nova.db.api import api as api_db_api

    @api_db_api.context_manager.writer
    def create_all(context):
        request_spec.create()
        build_request.create()
        inst_mapping.create()

    create_all(context)


def create_reqspec_instmapping(context, request_spec, inst_mapping):
    from nova.db.api import api as api_db_api

    @api_db_api.context_manager.writer
    def create_both(context):
        request_spec.create()
        inst_mapping.create()

    create_both(context)


def port_of(vif, device_id, project_id, security_groups):
    """What a Neutron stub needs to answer for the port behind a VIF."""
    return {"id": vif["id"], "device_id": device_id, "network_id": vif["network"]["id"],
            "mac_address": vif["address"], "tenant_id": project_id,
            "security_group_names": security_groups,
            "fixed_ips": [ip["address"] for ip in vif.fixed_ips()],
            "floating_ips": [ip["address"] for ip in vif.floating_ips()]}


def auto_v4(index):
    return str(ipaddress.ip_address("10.0.0.0") + 2 + index)


def auto_v6(index):
    return str(ipaddress.ip_address("fd00::") + 2 + index)


def auto_mac(seq):
    return "fa:16:3e:%02x:%02x:%02x" % ((seq >> 16) & 0xff, (seq >> 8) & 0xff, seq & 0xff)


def stable_uuid(kind, name):
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"realnova:{kind}:{name}"))


def iso(value):
    return value.isoformat() if value else None
