"""Writes a Nova deployment's databases the way Nova's services write them, with Nova's own
objects (``nova.objects``), under contexts targeted at the cells (``nova.context.target_cell``).

Runs with the side environment's python (Nova lives only there)::

    .nova-venv/bin/python writer.py --config-file nova.conf

Protocol: one JSON object per line on stdin, ``{"op": NAME, ...arguments}``; one JSON line
per command on stdout, ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": TEXT,
"traceback": TEXT}``. Nova's own output goes to stderr. ``tests/realnova/novadb.py`` drives it.

The sequences follow nova/compute/api.py (the API's writes), nova/conductor/manager.py
(schedule_and_build_instances, _bury_in_cell0) and nova/compute/manager.py (build, stop,
start, resize, delete) closely enough that each table is written by the same object calls,
in the same transactions, as in a running cloud. Nothing here talks to RabbitMQ, Glance,
Neutron or Placement: what those would answer is given in the command.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import sys
import time
import traceback
import uuid as uuidlib

# The protocol owns the real stdout; anything else printed goes to stderr.
PROTOCOL_OUT = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr

from nova import config as nova_config  # noqa: E402
from nova import context as nova_context  # noqa: E402
from nova import objects  # noqa: E402

objects.register_all()

from nova import crypto  # noqa: E402
from nova import utils  # noqa: E402
from nova.compute import flavors as compute_flavors  # noqa: E402
from nova.db.main import api as main_db_api  # noqa: E402
from nova.compute import instance_actions  # noqa: E402
from nova.compute import power_state  # noqa: E402
from nova.compute import task_states  # noqa: E402
from nova.compute import vm_states  # noqa: E402
from nova.network import model as network_model  # noqa: E402
from oslo_utils import timeutils  # noqa: E402

DEFAULT_IMAGE = {
    "id": "155d900f-4e14-4e4c-a73d-069cbf4541e6",
    "name": "cirros-0.6.2-x86_64-disk",
    "min_disk": 0, "min_ram": 0,
    "disk_format": "qcow2", "container_format": "bare",
    "properties": {"hw_machine_type": "q35", "os_distro": "cirros"},
}
WRITER_HOST = "writer"     # the "host" the API and conductor writes are recorded from


class Deployment:
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

    # -- flavors, keypairs, groups, hosts -------------------------------------------------

    def op_create_flavor(self, name, vcpus=1, memory_mb=512, root_gb=1, ephemeral_gb=0,
                         swap=0, rxtx_factor=1.0, is_public=True, flavorid=None,
                         description=None, extra_specs=None, projects=()):
        """What POST /flavors, POST /flavors/{id}/os-extra_specs and addTenantAccess do."""
        flavor = compute_flavors.create(name, memory_mb, vcpus, root_gb,
                                        ephemeral_gb=ephemeral_gb, flavorid=flavorid,
                                        swap=swap, rxtx_factor=rxtx_factor,
                                        is_public=is_public, description=description)
        if extra_specs:
            flavor.extra_specs = dict(extra_specs)
            flavor.save()
        for project in projects:
            flavor.add_access(project)
        self.flavors.pop(flavor.flavorid, None)
        return {"id": flavor.id, "flavorid": flavor.flavorid}

    def op_set_flavor_extra_specs(self, flavorid, extra_specs):
        flavor = objects.Flavor.get_by_flavor_id(self.admin, flavorid)
        flavor.extra_specs = dict(flavor.extra_specs, **extra_specs)
        flavor.save()
        self.flavors.pop(flavorid, None)

    def op_delete_flavor_extra_spec(self, flavorid, key):
        flavor = objects.Flavor.get_by_flavor_id(self.admin, flavorid)
        del flavor.extra_specs[key]
        flavor.save()
        self.flavors.pop(flavorid, None)

    def op_add_flavor_access(self, flavorid, project_id):
        objects.Flavor.get_by_flavor_id(self.admin, flavorid).add_access(project_id)

    def op_delete_flavor(self, flavorid):
        objects.Flavor.get_by_flavor_id(self.admin, flavorid).destroy()
        self.flavors.pop(flavorid, None)

    def op_create_keypair(self, user_id, name, key_type="ssh", public_key=None):
        """What POST /os-keypairs with a public key writes (API database)."""
        keypair = objects.KeyPair(self.admin, user_id=user_id, name=name, type=key_type,
                                  public_key=public_key or self.public_key,
                                  fingerprint=(crypto.generate_fingerprint(public_key)
                                               if public_key else self.fingerprint))
        keypair.create()
        return {"id": keypair.id, "fingerprint": keypair.fingerprint}

    def op_create_server_group(self, user_id, project_id, name, policy="anti-affinity",
                               rules=None):
        """What POST /os-server-groups writes (API database)."""
        group = objects.InstanceGroup(self.user_context(user_id, project_id),
                                      user_id=user_id, project_id=project_id, name=name,
                                      policy=policy, rules=rules or {})
        group.create()
        return {"uuid": group.uuid, "id": group.id}

    def op_create_compute(self, host, node=None, cell=None, az=None, vcpus=16,
                          memory_mb=65536, local_gb=1000, hypervisor_type="QEMU",
                          hypervisor_version=8002000, host_ip="192.0.2.10", version=None):
        """A nova-compute service starting on ``host``: its services and compute_nodes rows
        in the cell, the host mapping discover_hosts makes, and, with ``az``, the host in an
        aggregate whose availability_zone metadata names the zone (API database)."""
        cell_mapping = self.cell(cell)
        with nova_context.target_cell(self.admin, cell_mapping) as cctxt:
            service = objects.Service(cctxt, host=host, binary="nova-compute",
                                      topic="compute", report_count=0, disabled=False)
            if version is not None:
                service.version = version
            service.create()
            compute = objects.ComputeNode(
                cctxt, host=host, hypervisor_hostname=node or host, service_id=service.id,
                uuid=str(uuidlib.uuid4()), vcpus=vcpus, memory_mb=memory_mb,
                local_gb=local_gb, vcpus_used=0, memory_mb_used=512, local_gb_used=0,
                hypervisor_type=hypervisor_type, hypervisor_version=hypervisor_version,
                cpu_info="{}", free_ram_mb=memory_mb - 512, free_disk_gb=local_gb,
                current_workload=0, running_vms=0, disk_available_least=local_gb,
                host_ip=host_ip, supported_hv_specs=[], pci_device_pools=None,
                cpu_allocation_ratio=4.0, ram_allocation_ratio=1.0,
                disk_allocation_ratio=1.0, mapped=0)
            compute.create()
        objects.HostMapping(self.admin, host=host, cell_mapping=cell_mapping).create()
        compute.mapped = 1
        with nova_context.target_cell(self.admin, cell_mapping) as cctxt:
            compute._context = cctxt
            compute.save()
        if az:
            self._add_host_to_zone(host, az)
        return {"service_id": service.id, "compute_node_id": compute.id,
                "cell": cell_mapping.name}

    def _add_host_to_zone(self, host, az):
        aggregates = [a for a in objects.AggregateList.get_all(self.admin)
                      if a.metadata.get("availability_zone") == az]
        if aggregates:
            aggregate = aggregates[0]
        else:
            aggregate = objects.Aggregate(self.admin, name=f"az-{az}",
                                          metadata={"availability_zone": az})
            aggregate.create()
        aggregate.add_host(host)

    def _service(self, host, binary, cell):
        cctxt = nova_context.RequestContext.from_dict(self.admin.to_dict())
        nova_context.set_target_cell(cctxt, self.cell(cell))
        return objects.Service.get_by_args(cctxt, host, binary)

    def op_service_heartbeat(self, host, binary="nova-compute", cell=None):
        """One state report of the service group's DB driver (report_count += 1)."""
        service = self._service(host, binary, cell)
        service.report_count += 1
        service.save()
        return {"last_seen_up": _iso(service.last_seen_up)}

    def op_service_down(self, host, binary="nova-compute", seconds_ago=3600, cell=None):
        """The service stopped reporting ``seconds_ago`` seconds ago."""
        service = self._service(host, binary, cell)
        past = timeutils.utcnow() - datetime.timedelta(seconds=seconds_ago)
        service.last_seen_up = past
        service.updated_at = past
        service.save()

    def op_service_force_down(self, host, forced_down=True, binary="nova-compute",
                              cell=None):
        """PUT /os-services/{id} {"forced_down": ...}."""
        service = self._service(host, binary, cell)
        service.forced_down = forced_down
        service.save()

    def op_service_disable(self, host, disabled=True, reason=None, binary="nova-compute",
                           cell=None):
        service = self._service(host, binary, cell)
        service.disabled = disabled
        service.disabled_reason = reason if disabled else None
        service.save()

    # -- servers ---------------------------------------------------------------------------

    def network_info(self, networks, index):
        """A ``NetworkInfo`` as Nova's neutron module builds it from the ports. Each network
        is ``{"label", "fixed": [addresses], "floating": [addresses], "mac", "port_id",
        "network_id", "cidr_v4", "cidr_v6"}``; ``"auto"`` makes one private network with a
        v4 and a v6 address numbered by ``index``."""
        vifs = []
        for net in networks:
            self.port_seq += 1
            if net == "auto":
                net = {"label": "private",
                       "fixed": [_auto_v4(index), _auto_v6(index)], "floating": []}
            port_id = net.get("port_id") or str(uuidlib.uuid4())
            network_id = net.get("network_id") or _stable_uuid("network", net["label"])
            subnets = []
            by_version = {}
            for address in net.get("fixed", []):
                by_version.setdefault(ipaddress.ip_address(address).version, []).append(address)
            floating = list(net.get("floating", []))
            for version, addresses in sorted(by_version.items()):
                cidr = net.get(f"cidr_v{version}") or str(ipaddress.ip_network(
                    f"{addresses[0]}/{16 if version == 4 else 64}", strict=False))
                gateway = str(next(ipaddress.ip_network(cidr).hosts()))
                subnet = network_model.Subnet(
                    cidr=cidr, gateway=network_model.IP(address=gateway, type="gateway"),
                    ips=[], routes=[], dns=[])
                for address in addresses:
                    fixed = network_model.FixedIP(address=address)
                    if version == 4:
                        for floating_address in floating:
                            fixed.add_floating_ip(network_model.IP(
                                address=floating_address, type="floating"))
                        floating = []
                    subnet.add_ip(fixed)
                subnets.append(subnet)
            network = network_model.Network(id=network_id, bridge="br-int",
                                            label=net["label"], subnets=subnets,
                                            injected=False, tenant_id=None, mtu=1442,
                                            physical_network=None, tunneled=True)
            vifs.append(network_model.VIF(
                id=port_id, address=net.get("mac") or _auto_mac(self.port_seq),
                network=network, type="ovs", details={"port_filter": True,
                                                      "connectivity": "l2"},
                devname=("tap" + port_id)[:network_model.NIC_NAME_LEN],
                ovs_interfaceid=port_id, vnic_type="normal", active=True,
                preserve_on_delete=False, profile={}, delegate_create=True))
        return network_model.NetworkInfo(vifs)

    def op_build_server(self, user_id, project_id, flavor, name=None, image=None,
                        key_name=None, metadata=None, tags=(), security_groups=("default",),
                        server_group=None, az=None, host=None, cell=None,
                        networks=("auto",), volumes=(), description=None, hostname=None,
                        config_drive="", user_data=None, access_ip_v4=None,
                        access_ip_v6=None, stage="active", locked=False,
                        scheduler_hints=None, index=0, count_in_batch=1):
        """A server create: the API's RequestSpec, BuildRequest and InstanceMapping (one API
        database transaction), then by ``stage``:

        - ``"requested"``: nothing more (the server is still a build request);
        - ``"cell0"``: the scheduler found no host: the instance is buried in cell0 in ERROR
          with a fault, mapped to cell0, the build request deleted;
        - ``"scheduled"``: the conductor's writes (instance in the cell, action, BDMs,
          tags, mapping to the cell, build request deleted), then the compute's claim
          (host, node) and a BUILDING/SPAWNING instance with its network info cache;
        - ``"active"`` (default): the compute finishes the spawn: ACTIVE, RUNNING,
          launched_at.

        Returns the server's uuid and its ports (for a Neutron stub)."""
        ctxt = self.user_context(user_id, project_id)
        flavor_obj = self.flavor(flavor)
        image = dict(image or DEFAULT_IMAGE)
        boot_meta = objects.ImageMeta.from_dict(image)
        instance_uuid = str(uuidlib.uuid4())

        keypair = None
        key_data = None
        if key_name:
            keypair = objects.KeyPair.get_by_name(ctxt, user_id, key_name)
            key_data = keypair.public_key
        group = None
        if server_group:
            group = objects.InstanceGroup.get_by_uuid(ctxt, server_group)
        sg_names = list(security_groups)
        sg_list = objects.SecurityGroupList(objects=[
            objects.SecurityGroup(name=n) for n in sg_names])
        filter_properties = {"scheduler_hints": dict(scheduler_hints or {})}
        if group:
            filter_properties["scheduler_hints"]["group"] = group.uuid

        request_spec = objects.RequestSpec.from_components(
            ctxt, instance_uuid, boot_meta, flavor_obj, None, None,
            filter_properties, group, az, security_groups=sg_list,
            port_resource_requests=None,
            request_level_params=objects.RequestLevelParams())
        request_spec.is_bfv = False
        request_spec.num_instances = count_in_batch

        instance = objects.Instance(context=ctxt)
        instance.uuid = instance_uuid
        instance.update({
            "reservation_id": utils.generate_uid("r"), "image_ref": image["id"],
            "kernel_id": "", "ramdisk_id": "", "power_state": power_state.NOSTATE,
            "vm_state": vm_states.BUILDING, "config_drive": config_drive,
            "user_id": user_id, "project_id": project_id,
            "instance_type_id": flavor_obj.id, "memory_mb": flavor_obj.memory_mb,
            "vcpus": flavor_obj.vcpus, "root_gb": flavor_obj.root_gb,
            "ephemeral_gb": flavor_obj.ephemeral_gb, "display_name": name,
            "display_description": description, "hostname": hostname,
            "user_data": user_data, "key_name": key_name, "key_data": key_data,
            "locked": locked, "metadata": dict(metadata or {}),
            "access_ip_v4": access_ip_v4, "access_ip_v6": access_ip_v6,
            "availability_zone": az, "root_device_name": None, "progress": 0,
            "pci_requests": None, "numa_topology": None, "system_metadata": {},
            "os_type": None, "architecture": None, "vm_mode": None,
            "auto_disk_config": False})
        instance.keypairs = objects.KeyPairList(objects=[keypair] if keypair else [])
        instance.trusted_certs = None
        instance.launch_index = index
        instance.task_state = task_states.SCHEDULING
        instance.info_cache = objects.InstanceInfoCache(
            instance_uuid=instance_uuid, network_info=network_model.NetworkInfo())
        instance.flavor = flavor_obj
        instance.old_flavor = None
        instance.new_flavor = None
        instance.ephemeral_key_uuid = None
        system_meta = utils.get_system_metadata_from_image(image, flavor_obj)
        system_meta.setdefault("image_base_image_ref", instance.image_ref)
        system_meta["owner_user_name"] = ctxt.user_name
        system_meta["owner_project_name"] = ctxt.project_name
        instance.system_metadata = system_meta
        instance.security_groups = objects.SecurityGroupList()
        if not instance.display_name:
            instance.display_name = f"Server {instance_uuid}"
        if not instance.hostname:
            instance.hostname = (utils.sanitize_hostname(instance.display_name)
                                 or f"Server-{instance_uuid}")
        instance.shutdown_terminate = False

        bdms = objects.BlockDeviceMappingList(objects=[objects.BlockDeviceMapping(
            ctxt, source_type="image", destination_type="local", boot_index=0,
            image_id=image["id"], delete_on_termination=True, device_type="disk",
            disk_bus=None, guest_format=None, volume_size=None, device_name=None,
            volume_type=None, no_device=None, tag=None, volume_id=None,
            snapshot_id=None, instance_uuid=instance_uuid)])
        for n, volume in enumerate(volumes):
            bdms.objects.append(objects.BlockDeviceMapping(
                ctxt, source_type="volume", destination_type="volume", boot_index=None,
                volume_id=volume["id"], delete_on_termination=volume.get(
                    "delete_on_termination", False), device_type="disk", disk_bus="virtio",
                device_name=volume.get("device", f"/dev/vd{chr(ord('b') + n)}"),
                guest_format=None, volume_size=volume.get("size", 1), tag=volume.get("tag"),
                volume_type=None, no_device=None, image_id=None, snapshot_id=None,
                instance_uuid=instance_uuid, attachment_id=str(uuidlib.uuid4())))
        tag_list = objects.TagList(objects=[
            objects.Tag(ctxt, resource_id=instance_uuid, tag=t) for t in tags])

        build_request = objects.BuildRequest(
            ctxt, instance=instance, instance_uuid=instance_uuid, project_id=project_id,
            block_device_mappings=bdms, tags=tag_list)
        inst_mapping = objects.InstanceMapping(context=ctxt)
        inst_mapping.instance_uuid = instance_uuid
        inst_mapping.project_id = project_id
        inst_mapping.user_id = user_id
        inst_mapping.cell_mapping = None
        _create_reqspec_buildreq_instmapping(ctxt, request_spec, build_request, inst_mapping)
        if group:
            objects.InstanceGroup.add_members(ctxt, group.uuid, [instance_uuid])
        result = {"uuid": instance_uuid, "ports": [], "security_groups": sg_names,
                  "project_id": project_id}
        if stage == "requested":
            return result

        if stage == "cell0":
            self._bury_in_cell0(ctxt, build_request, inst_mapping, tag_list)
            return result

        # The conductor: the instance in the chosen host's cell.
        compute_host = host or self._any_host(cell)
        host_mapping = objects.HostMapping.get_by_host(ctxt, compute_host)
        cell_mapping = host_mapping.cell_mapping
        instance = build_request.get_new_instance(ctxt)
        instance.availability_zone = self._host_az(ctxt, compute_host)
        with nova_context.target_cell(ctxt, cell_mapping) as cctxt:
            instance._context = cctxt
            instance.create()
            objects.InstanceAction.action_start(cctxt, instance_uuid,
                                                instance_actions.CREATE, want_result=False)
            for bdm in bdms:
                bdm._context = cctxt
                bdm.instance_uuid = instance_uuid
                bdm.update_or_create()
            if tags:
                objects.TagList.create(cctxt, instance_uuid, list(tags))
        inst_mapping.cell_mapping = cell_mapping
        inst_mapping.save()
        build_request.destroy()

        # The compute: claim, network, spawn.
        with nova_context.target_cell(ctxt, cell_mapping) as cctxt:
            instance = objects.Instance.get_by_uuid(
                cctxt, instance_uuid, expected_attrs=["info_cache", "flavor",
                                                      "system_metadata", "metadata"])
            objects.InstanceActionEvent.event_start(
                cctxt, instance_uuid, "compute__do_build_and_run_instance",
                want_result=False, host=compute_host)
            instance.vm_state = vm_states.BUILDING
            instance.task_state = None
            instance.save(expected_task_state=(task_states.SCHEDULING, None))
            node = objects.ComputeNodeList.get_all_by_host(cctxt, compute_host)[0]
            instance.host = compute_host
            instance.launched_on = compute_host
            instance.node = node.hypervisor_hostname
            instance.compute_id = node.id
            instance.save()
            instance.task_state = task_states.NETWORKING
            instance.save(expected_task_state=None)
            nw_info = self.network_info(list(networks), index)
            instance.info_cache.network_info = nw_info
            instance.info_cache.save()
            instance.task_state = task_states.BLOCK_DEVICE_MAPPING
            instance.save()
            instance.vm_state = vm_states.BUILDING
            instance.task_state = task_states.SPAWNING
            instance.save(expected_task_state=task_states.BLOCK_DEVICE_MAPPING)
            if stage == "active":
                instance.power_state = power_state.RUNNING
                instance.vm_state = vm_states.ACTIVE
                instance.task_state = None
                instance.launched_at = timeutils.utcnow()
                instance.save(expected_task_state=task_states.SPAWNING)
                objects.InstanceActionEvent.event_finish(
                    cctxt, instance_uuid, "compute__do_build_and_run_instance",
                    want_result=False)
        result["ports"] = [_port_of(vif, instance_uuid, project_id, sg_names)
                           for vif in nw_info]
        result["host"] = compute_host
        result["cell"] = cell_mapping.name
        return result

    def _bury_in_cell0(self, ctxt, build_request, inst_mapping, tag_list):
        instance = build_request.get_new_instance(ctxt)
        instance.vm_state = vm_states.ERROR
        instance.task_state = None
        with nova_context.target_cell(ctxt, self.cell0) as cctxt:
            instance._context = cctxt
            instance.create()
            objects.InstanceAction.action_start(cctxt, instance.uuid,
                                                instance_actions.CREATE, want_result=False)
            objects.InstanceActionEvent.event_start(
                cctxt, instance.uuid, "conductor_schedule_and_build_instances",
                want_result=False, host=WRITER_HOST)
            objects.InstanceFault(
                cctxt, instance_uuid=instance.uuid, code=500,
                message="No valid host was found. ",
                details="", host=WRITER_HOST).create()
            if len(tag_list):
                objects.TagList.create(cctxt, instance.uuid, [t.tag for t in tag_list])
        inst_mapping.cell_mapping = self.cell0
        inst_mapping.save()
        build_request.destroy()

    def _any_host(self, cell):
        cell_mapping = self.cell(cell)
        mappings = objects.HostMappingList.get_by_cell_id(self.admin, cell_mapping.id)
        if not mappings:
            raise LookupError(f"no compute host in {cell_mapping.name}: create_compute first")
        return sorted(m.host for m in mappings)[0]

    def _host_az(self, ctxt, host):
        from nova import availability_zones
        return availability_zones.get_host_availability_zone(ctxt, host)

    def op_build_servers(self, count, name_prefix="server", stepwise=False, **template):
        """``count`` ACTIVE servers named ``name_prefix-N``. With ``stepwise`` each one goes
        through every step of :meth:`op_build_server`; by default each is written in its
        final state at once (the same rows: request spec, instance mapping, instance with
        its info cache, system metadata and extra, create action, BDMs, tags), which is
        several times faster for bulk data."""
        started = time.monotonic()
        servers = []
        build = self.op_build_server if stepwise else self._build_server_final
        for n in range(count):
            template_n = dict(template)
            template_n.setdefault("index", n)
            servers.append(build(name=f"{name_prefix}-{n}", **template_n))
        return {"servers": servers, "seconds": round(time.monotonic() - started, 3)}

    def _build_server_final(self, user_id, project_id, flavor, name, image=None,
                            key_name=None, metadata=None, tags=(),
                            security_groups=("default",), server_group=None, host=None,
                            cell=None, networks=("auto",), description=None, index=0):
        ctxt = self.user_context(user_id, project_id)
        flavor_obj = self.flavor(flavor)
        image = dict(image or DEFAULT_IMAGE)
        instance_uuid = str(uuidlib.uuid4())
        compute_host = host or self._any_host(cell)
        placement = self._placement(ctxt, compute_host)
        keypair = (objects.KeyPair.get_by_name(ctxt, user_id, key_name) if key_name
                   else None)
        group = objects.InstanceGroup.get_by_uuid(ctxt, server_group) if server_group else None
        sg_names = list(security_groups)
        request_spec = objects.RequestSpec.from_components(
            ctxt, instance_uuid, objects.ImageMeta.from_dict(image), flavor_obj, None, None,
            {"scheduler_hints": {"group": group.uuid} if group else {}}, group, None,
            security_groups=objects.SecurityGroupList(objects=[
                objects.SecurityGroup(name=n) for n in sg_names]),
            port_resource_requests=None,
            request_level_params=objects.RequestLevelParams())
        request_spec.is_bfv = False
        request_spec.num_instances = 1
        inst_mapping = objects.InstanceMapping(
            ctxt, instance_uuid=instance_uuid, project_id=project_id, user_id=user_id,
            cell_mapping=placement["cell"], queued_for_delete=False)
        _create_reqspec_instmapping(ctxt, request_spec, inst_mapping)
        if group:
            objects.InstanceGroup.add_members(ctxt, group.uuid, [instance_uuid])

        nw_info = self.network_info(list(networks), index)
        system_meta = utils.get_system_metadata_from_image(image, flavor_obj)
        system_meta.setdefault("image_base_image_ref", image["id"])
        system_meta["owner_user_name"] = ctxt.user_name
        system_meta["owner_project_name"] = ctxt.project_name
        with nova_context.target_cell(ctxt, placement["cell"]) as cctxt, \
                main_db_api.context_manager.writer.using(cctxt):
            instance = objects.Instance(
                cctxt, uuid=instance_uuid, reservation_id=utils.generate_uid("r"),
                image_ref=image["id"], kernel_id="", ramdisk_id="",
                power_state=power_state.RUNNING, vm_state=vm_states.ACTIVE, task_state=None,
                config_drive="", user_id=user_id, project_id=project_id,
                instance_type_id=flavor_obj.id, memory_mb=flavor_obj.memory_mb,
                vcpus=flavor_obj.vcpus, root_gb=flavor_obj.root_gb,
                ephemeral_gb=flavor_obj.ephemeral_gb, display_name=name,
                display_description=description, hostname=utils.sanitize_hostname(name),
                user_data=None, key_name=key_name,
                key_data=keypair.public_key if keypair else None, locked=False,
                metadata=dict(metadata or {}), access_ip_v4=None, access_ip_v6=None,
                availability_zone=placement["az"], root_device_name="/dev/vda",
                progress=0, pci_requests=None, numa_topology=None,
                system_metadata=system_meta, os_type=None, architecture=None,
                vm_mode=None, auto_disk_config=False, launch_index=0,
                keypairs=objects.KeyPairList(objects=[keypair] if keypair else []),
                trusted_certs=None, flavor=flavor_obj, old_flavor=None, new_flavor=None,
                ephemeral_key_uuid=None, security_groups=objects.SecurityGroupList(),
                shutdown_terminate=False, host=compute_host, launched_on=compute_host,
                node=placement["node"].hypervisor_hostname,
                compute_id=placement["node"].id, launched_at=timeutils.utcnow(),
                info_cache=objects.InstanceInfoCache(instance_uuid=instance_uuid,
                                                     network_info=nw_info))
            instance.create()
            objects.InstanceAction.action_start(cctxt, instance_uuid,
                                                instance_actions.CREATE, want_result=False)
            objects.BlockDeviceMapping(
                cctxt, source_type="image", destination_type="local", boot_index=0,
                image_id=image["id"], delete_on_termination=True, device_type="disk",
                device_name="/dev/vda", instance_uuid=instance_uuid,
                volume_id=None, snapshot_id=None, disk_bus=None, guest_format=None,
                volume_size=None, volume_type=None, no_device=None, tag=None,
            ).update_or_create()
            if tags:
                objects.TagList.create(cctxt, instance_uuid, list(tags))
        return {"uuid": instance_uuid, "security_groups": sg_names, "project_id": project_id,
                "host": compute_host, "cell": placement["cell"].name,
                "ports": [_port_of(vif, instance_uuid, project_id, sg_names)
                          for vif in nw_info]}

    def _placement(self, ctxt, host):
        """Where a host is (its cell, compute node, zone), cached for bulk builds."""
        cached = self.host_cache.get(host)
        if cached is None:
            cell = objects.HostMapping.get_by_host(ctxt, host).cell_mapping
            with nova_context.target_cell(ctxt, cell) as cctxt:
                node = objects.ComputeNodeList.get_all_by_host(cctxt, host)[0]
            cached = {"cell": cell, "node": node, "az": self._host_az(ctxt, host)}
            self.host_cache[host] = cached
        return cached

    def op_stop(self, uuid):
        """POST /servers/{id}/action os-stop, then the compute's stop_instance."""
        cctxt, instance = self.instance(uuid)
        instance.task_state = task_states.POWERING_OFF
        instance.save(expected_task_state=[None])
        self.record_action(cctxt, uuid, instance_actions.STOP, "compute_stop_instance",
                           host=instance.host)
        instance.power_state = power_state.SHUTDOWN
        instance.vm_state = vm_states.STOPPED
        instance.task_state = None
        instance.save(expected_task_state=task_states.POWERING_OFF)

    def op_start(self, uuid):
        """os-start, then the compute's start_instance."""
        cctxt, instance = self.instance(uuid)
        instance.task_state = task_states.POWERING_ON
        instance.save(expected_task_state=[None])
        self.record_action(cctxt, uuid, instance_actions.START, "compute_start_instance",
                           host=instance.host)
        instance.power_state = power_state.RUNNING
        instance.vm_state = vm_states.ACTIVE
        instance.task_state = None
        instance.save(expected_task_state=task_states.POWERING_ON)

    def op_set_state(self, uuid, vm_state=None, power_state=None, task_state="unchanged",
                     locked=None):
        """Any state at once (a server caught mid-task, paused, locked...)."""
        _cctxt, instance = self.instance(uuid)
        if vm_state is not None:
            instance.vm_state = vm_state
        if power_state is not None:
            instance.power_state = power_state
        if task_state != "unchanged":
            instance.task_state = task_state
        if locked is not None:
            instance.locked = locked
            instance.locked_by = "owner" if locked else None
        instance.save()

    def op_resize(self, uuid, flavor, confirm=True):
        """A resize to ``flavor``: the API's RESIZE_PREP, a migration record, the compute's
        finish_resize (old_flavor/new_flavor kept, flavor switched, RESIZED); with
        ``confirm`` the confirmation (old and new flavor dropped, ACTIVE)."""
        cctxt, instance = self.instance(uuid, ["old_flavor", "new_flavor"])
        new_flavor = self.flavor(flavor)
        old_flavor = instance.flavor
        instance.task_state = task_states.RESIZE_PREP
        instance.save(expected_task_state=[None])
        self.record_action(cctxt, uuid, instance_actions.RESIZE, "compute_prep_resize",
                           host=instance.host)
        migration = objects.Migration(
            cctxt, instance_uuid=uuid, source_compute=instance.host,
            dest_compute=instance.host, source_node=instance.node, dest_node=instance.node,
            dest_compute_id=instance.compute_id,
            dest_host="192.0.2.10", old_instance_type_id=old_flavor.id,
            new_instance_type_id=new_flavor.id, status="pre-migrating",
            migration_type="resize", uuid=str(uuidlib.uuid4()),
            user_id=instance.user_id, project_id=instance.project_id)
        migration.create()
        instance.new_flavor = new_flavor
        instance.task_state = task_states.RESIZE_MIGRATING
        instance.save(expected_task_state=task_states.RESIZE_PREP)
        migration.status = "finished"
        migration.save()
        instance.old_flavor = old_flavor
        instance.new_flavor = new_flavor
        instance.flavor = new_flavor
        instance.instance_type_id = new_flavor.id
        instance.memory_mb = new_flavor.memory_mb
        instance.vcpus = new_flavor.vcpus
        instance.root_gb = new_flavor.root_gb
        instance.ephemeral_gb = new_flavor.ephemeral_gb
        instance.vm_state = vm_states.RESIZED
        instance.task_state = None
        instance.save(expected_task_state=task_states.RESIZE_MIGRATING)
        if confirm:
            self.op_confirm_resize(uuid)
        return {"migration_uuid": migration.uuid}

    def op_confirm_resize(self, uuid):
        cctxt, instance = self.instance(uuid, ["old_flavor", "new_flavor"])
        self.record_action(cctxt, uuid, instance_actions.CONFIRM_RESIZE,
                           "compute_confirm_resize", host=instance.host)
        migration = objects.Migration.get_by_instance_and_status(cctxt, uuid, "finished")
        migration.status = "confirmed"
        migration.save()
        instance.old_flavor = None
        instance.new_flavor = None
        instance.vm_state = vm_states.ACTIVE
        instance.task_state = None
        instance.save(expected_task_state=[None])

    def op_set_metadata(self, uuid, metadata, replace=False):
        """POST (update) or PUT (``replace``) /servers/{id}/metadata: only the
        instance_metadata rows change."""
        _cctxt, instance = self.instance(uuid)
        new = dict(metadata) if replace else dict(instance.metadata, **metadata)
        instance.metadata = new
        instance.save()

    def op_delete_metadata(self, uuid, key):
        """DELETE /servers/{id}/metadata/{key}."""
        _cctxt, instance = self.instance(uuid)
        instance.delete_metadata_key(key)

    def op_add_tag(self, uuid, tag):
        cctxt, _instance = self.instance(uuid)
        objects.Tag(cctxt, resource_id=uuid, tag=tag).create()

    def op_delete_tag(self, uuid, tag):
        cctxt, _instance = self.instance(uuid)
        objects.Tag.destroy(cctxt, uuid, tag)

    def op_set_tags(self, uuid, tags):
        cctxt, _instance = self.instance(uuid)
        objects.TagList.create(cctxt, uuid, list(tags))

    def op_update(self, uuid, **fields):
        """PUT /servers/{id}: name, description, hostname, access IPs."""
        _cctxt, instance = self.instance(uuid)
        names = {"name": "display_name", "description": "display_description"}
        for key, value in fields.items():
            setattr(instance, names.get(key, key), value)
        instance.save()

    def op_set_network_info(self, uuid, networks, index=0):
        """The info cache refreshed from Neutron (e.g. a floating IP associated)."""
        _cctxt, instance = self.instance(uuid)
        nw_info = self.network_info(list(networks), index)
        instance.info_cache.network_info = nw_info
        instance.info_cache.save()
        return {"ports": [_port_of(vif, uuid, instance.project_id, None) for vif in nw_info]}

    def op_fault(self, uuid, code=500, message="Build of instance aborted",
                 details="Traceback (most recent call last):\n  ...", task_state=None):
        """A failure on the compute: an instance fault, ERROR."""
        cctxt, instance = self.instance(uuid)
        objects.InstanceFault(cctxt, instance_uuid=uuid, code=code, message=message,
                              details=details, host=instance.host or WRITER_HOST).create()
        instance.vm_state = vm_states.ERROR
        instance.task_state = task_state
        instance.save()

    def op_delete(self, uuid):
        """DELETE /servers/{id} through the compute's terminate_instance: DELETING, then
        DELETED with terminated_at, the BDMs destroyed and ``instance.destroy()`` (Nova's
        soft delete of the instance and its rows); the API marks the mapping
        queued_for_delete. ``archive_deleted_rows`` moves the rows to the shadow tables."""
        mapping = objects.InstanceMapping.get_by_instance_uuid(self.admin, uuid)
        mapping.queued_for_delete = True
        if mapping.cell_mapping is None:
            # Still a build request: the API deletes it and the server is gone.
            objects.BuildRequest.get_by_instance_uuid(self.admin, uuid).destroy()
            mapping.save()
            return
        cctxt, instance = self.instance(uuid)
        mapping.save()
        instance.task_state = task_states.DELETING
        instance.save()
        self.record_action(cctxt, uuid, instance_actions.DELETE, "compute_terminate_instance",
                           host=instance.host)
        bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(cctxt, uuid)
        instance.vm_state = vm_states.DELETED
        instance.task_state = None
        instance.power_state = power_state.NOSTATE
        instance.terminated_at = timeutils.utcnow()
        instance.save()
        for bdm in bdms:
            bdm.destroy()
        instance.destroy()

    def op_soft_delete(self, uuid):
        """DELETE /servers/{id} with reclaim_instance_interval set: SOFT_DELETED (the row
        stays, restorable)."""
        cctxt, instance = self.instance(uuid)
        instance.task_state = task_states.SOFT_DELETING
        instance.save(expected_task_state=[None])
        self.record_action(cctxt, uuid, instance_actions.DELETE, "compute_soft_delete_instance",
                           host=instance.host)
        instance.power_state = power_state.SHUTDOWN
        instance.vm_state = vm_states.SOFT_DELETED
        instance.task_state = None
        instance.save(expected_task_state=[task_states.SOFT_DELETING])

    def op_restore(self, uuid):
        cctxt, instance = self.instance(uuid)
        instance.task_state = task_states.RESTORING
        instance.save(expected_task_state=[None])
        self.record_action(cctxt, uuid, instance_actions.RESTORE, "compute_restore_instance",
                           host=instance.host)
        instance.power_state = power_state.RUNNING
        instance.vm_state = vm_states.ACTIVE
        instance.task_state = None
        instance.save(expected_task_state=task_states.RESTORING)

    def op_ping(self):
        return {"cells": sorted(self.cells)}


def _create_reqspec_buildreq_instmapping(context, request_spec, build_request, inst_mapping):
    """One API database transaction, as nova/compute/api.py writes the three rows."""
    from nova.db.api import api as api_db_api

    @api_db_api.context_manager.writer
    def create_all(context):
        request_spec.create()
        build_request.create()
        inst_mapping.create()

    create_all(context)


def _create_reqspec_instmapping(context, request_spec, inst_mapping):
    from nova.db.api import api as api_db_api

    @api_db_api.context_manager.writer
    def create_both(context):
        request_spec.create()
        inst_mapping.create()

    create_both(context)


def _port_of(vif, device_id, project_id, security_groups):
    """What a Neutron stub needs to answer for the port behind a VIF."""
    return {"id": vif["id"], "device_id": device_id, "network_id": vif["network"]["id"],
            "mac_address": vif["address"], "tenant_id": project_id,
            "security_group_names": security_groups,
            "fixed_ips": [ip["address"] for ip in vif.fixed_ips()],
            "floating_ips": [ip["address"] for ip in vif.floating_ips()]}


def _auto_v4(index):
    return str(ipaddress.ip_address("10.0.0.0") + 2 + index)


def _auto_v6(index):
    return str(ipaddress.ip_address("fd00::") + 2 + index)


def _auto_mac(seq):
    return "fa:16:3e:%02x:%02x:%02x" % ((seq >> 16) & 0xff, (seq >> 8) & 0xff, seq & 0xff)


def _stable_uuid(kind, name):
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"realnova:{kind}:{name}"))


def _iso(value):
    return value.isoformat() if value else None


def main(argv):
    nova_config.parse_args([argv[0]] + argv[1:])
    deployment = Deployment()
    PROTOCOL_OUT.write(json.dumps({"ok": True, "result": "ready"}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            op = command.pop("op")
            handler = getattr(deployment, f"op_{op}", None)
            if handler is None:
                raise ValueError(f"unknown op {op!r}")
            reply = {"ok": True, "result": handler(**command)}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()}
        PROTOCOL_OUT.write(json.dumps(reply, default=str) + "\n")
    # Every write is committed; skip the interpreter's slow joins of Nova's thread pools.
    PROTOCOL_OUT.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
