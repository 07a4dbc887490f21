"""Flavors, flavor access, key pairs, server groups and quota limits: the API database's
catalog, as nova-api's handlers write it."""

from __future__ import annotations

from nova import crypto
from nova import exception
from nova import objects
from nova.compute import flavors as compute_flavors


class CatalogOps:
    """Operations on the API database's flavors, key pairs and server groups. A mixin of ``writer.Deployment``."""

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
                               rules=None, members=()):
        """What POST /os-server-groups writes (API database); ``members``: instance uuids
        added as the scheduler adds a server it places in the group."""
        ctxt = self.user_context(user_id, project_id)
        group = objects.InstanceGroup(ctxt, user_id=user_id, project_id=project_id, name=name,
                                      policy=policy, rules=rules or {})
        group.create()
        if members:
            objects.InstanceGroup.add_members(ctxt, group.uuid, list(members))
        return {"uuid": group.uuid, "id": group.id}

    def op_set_quotas(self, project_id, limits):
        """What PUT /os-quota-sets/{project} writes (API database ``quotas``)."""
        for resource, limit in limits.items():
            try:
                objects.Quotas.create_limit(self.admin, project_id, resource, limit)
            except exception.QuotaExists:
                objects.Quotas.update_limit(self.admin, project_id, resource, limit)

    def op_set_quota_class(self, class_name, limits):
        """What PUT /os-quota-class-sets/{class} writes (API database ``quota_classes``)."""
        for resource, limit in limits.items():
            try:
                objects.Quotas.create_class(self.admin, class_name, resource, limit)
            except exception.QuotaClassExists:
                objects.Quotas.update_class(self.admin, class_name, resource, limit)
