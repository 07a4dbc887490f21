"""A server's life after its build: stop and start, resize, metadata, tags, network
info refreshes, faults, soft delete, delete and restore."""

from __future__ import annotations

import uuid as uuidlib

from nova import objects
from nova.compute import instance_actions
from nova.compute import power_state
from nova.compute import task_states
from nova.compute import vm_states
from oslo_utils import timeutils

from base import WRITER_HOST, port_of


class LifecycleOps:
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
                     locked=None, locked_reason=None):
        """Any state at once (a server caught mid-task, paused, locked (with the reason
        the lock action keeps in system metadata)...)."""
        _cctxt, instance = self.instance(uuid)
        if locked_reason is not None:
            instance.system_metadata["locked_reason"] = locked_reason
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

    def op_set_trusted_certs(self, uuid, ids):
        """The trusted image certificate ids a create (2.63) or rebuild keeps in
        instance_extra; ``None`` clears them."""
        _cctxt, instance = self.instance(uuid, ["trusted_certs"])
        instance.trusted_certs = None if ids is None else objects.TrustedCerts(ids=list(ids))
        instance.save()

    def op_set_network_info(self, uuid, networks, index=0):
        """The info cache refreshed from Neutron (e.g. a floating IP associated)."""
        _cctxt, instance = self.instance(uuid)
        nw_info = self.network_info(list(networks), index)
        instance.info_cache.network_info = nw_info
        instance.info_cache.save()
        return {"ports": [port_of(vif, uuid, instance.project_id, None) for vif in nw_info]}

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
