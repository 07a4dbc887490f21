"""Server builds: the API's request spec, build request and instance mapping, the
conductor's scheduling into a cell (or cell0) and the compute's spawn; the bulk path."""

from __future__ import annotations

import ipaddress
import time
import uuid as uuidlib

from nova import availability_zones
from nova import context as nova_context
from nova import objects
from nova import utils
from nova.compute import instance_actions
from nova.compute import power_state
from nova.compute import task_states
from nova.compute import vm_states
from nova.db.main import api as main_db_api
from nova.network import model as network_model
from oslo_utils import timeutils

from base import (DEFAULT_IMAGE, WRITER_HOST, auto_mac, auto_v4, auto_v6,
                  create_reqspec_buildreq_instmapping, create_reqspec_instmapping, port_of,
                  stable_uuid)


class BuildOps:
    """Server builds, step by step or in bulk. A mixin of ``writer.Deployment``."""

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
                       "fixed": [auto_v4(index), auto_v6(index)], "floating": []}
            port_id = net.get("port_id") or str(uuidlib.uuid4())
            network_id = net.get("network_id") or stable_uuid("network", net["label"])
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
                id=port_id, address=net.get("mac") or auto_mac(self.port_seq),
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
        create_reqspec_buildreq_instmapping(ctxt, request_spec, build_request, inst_mapping)
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
            # The virt driver names the devices before the spawn (libvirt: vda, vdb...).
            instance.root_device_name = "/dev/vda"
            instance.save()
            for bdm in objects.BlockDeviceMappingList.get_by_instance_uuid(cctxt,
                                                                           instance_uuid):
                if bdm.boot_index == 0 and not bdm.device_name:
                    bdm.device_name = "/dev/vda"
                    bdm.save()
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
        result["ports"] = [port_of(vif, instance_uuid, project_id, sg_names)
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
                            cell=None, networks=("auto",), description=None, index=0,
                            az=None, scheduler_hints=None):
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
        hints = dict(scheduler_hints or {})
        if group:
            hints["group"] = group.uuid
        request_spec = objects.RequestSpec.from_components(
            ctxt, instance_uuid, objects.ImageMeta.from_dict(image), flavor_obj, None, None,
            {"scheduler_hints": hints}, group, az,
            security_groups=objects.SecurityGroupList(objects=[
                objects.SecurityGroup(name=n) for n in sg_names]),
            port_resource_requests=None,
            request_level_params=objects.RequestLevelParams())
        request_spec.is_bfv = False
        request_spec.num_instances = 1
        inst_mapping = objects.InstanceMapping(
            ctxt, instance_uuid=instance_uuid, project_id=project_id, user_id=user_id,
            cell_mapping=placement["cell"], queued_for_delete=False)
        create_reqspec_instmapping(ctxt, request_spec, inst_mapping)
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
                "ports": [port_of(vif, instance_uuid, project_id, sg_names)
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
