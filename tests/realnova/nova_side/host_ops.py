"""Compute hosts and their services: what nova-compute writes when it starts and
reports, and what operators change (forced down, disabled)."""

from __future__ import annotations

import datetime
import uuid as uuidlib

from nova import context as nova_context
from nova import objects
from oslo_utils import timeutils

from base import iso


class HostOps:
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
        return {"last_seen_up": iso(service.last_seen_up)}

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

    def op_create_service(self, host, binary, topic=None, cell=None):
        """A service other than nova-compute starting on ``host`` (nova-conductor,
        nova-scheduler; nova-osapi_compute as the API records itself)."""
        with nova_context.target_cell(self.admin, self.cell(cell)) as cctxt:
            service = objects.Service(cctxt, host=host, binary=binary,
                                      topic=topic or binary.removeprefix("nova-"),
                                      report_count=0, disabled=False)
            service.create()
        return {"service_id": service.id, "uuid": service.uuid}

    def op_create_aggregate(self, name, hosts=(), metadata=None):
        """POST /os-aggregates, then add_host and set_metadata, as the aggregates API
        does them (Nova's API database)."""
        aggregate = objects.Aggregate(self.admin, name=name, metadata=dict(metadata or {}))
        aggregate.create()
        for host in hosts:
            aggregate.add_host(host)
        return {"id": aggregate.id, "uuid": aggregate.uuid}

    def op_aggregate_add_host(self, aggregate_id, host):
        objects.Aggregate.get_by_id(self.admin, aggregate_id).add_host(host)

    def op_aggregate_remove_host(self, aggregate_id, host):
        objects.Aggregate.get_by_id(self.admin, aggregate_id).delete_host(host)

    def op_aggregate_set_metadata(self, aggregate_id, metadata):
        objects.Aggregate.get_by_id(self.admin, aggregate_id).update_metadata(metadata)
