"""The quota clients behind a real Keystone: ``openstack quota show --compute`` (with and
without a project, ``--usage``, ``--default``), openstacksdk's ``get_compute_quotas`` and
novaclient's ``quotas.get`` read the appliance's quota sets. Each resolves the project
through Keystone's identity API first, which is why they need Keystone (with the "none"
plugin of the demo they cannot: see docs/clients.md)."""

from __future__ import annotations

import json

import pytest

from tests.edge.conftest import openstack, openstack_env

# openstacksdk warns about its own deprecations on every call: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:::openstack.*")


def _shown(edge, user: str, *args: str) -> dict:
    """The CLI's rows (resource, limit[, in use, reserved]) by resource name."""
    out = openstack(edge, user, user.split("-")[0], "quota", "show", "--compute", *args,
                    "-f", "json")
    assert out.returncode == 0, out.stderr
    rows = {row["Resource"]: row for row in json.loads(out.stdout)}
    if "In Use" in next(iter(rows.values())):
        return rows
    return {name: row["Limit"] for name, row in rows.items()}


def test_openstack_quota_show_compute(edge, edge_appliance):
    own = _shown(edge, "alpha-member")                   # the token's project
    assert own["instances"] == 6 and own["ram"] == 8192
    assert own["cores"] == 20 and own["key-pairs"] == 100     # Nova's defaults
    named = _shown(edge, "alpha-member", edge.project("alpha"))
    assert named == own
    usage = _shown(edge, "alpha-member", "--usage")
    assert usage["instances"]["Limit"] == 6 and usage["instances"]["In Use"] == 4
    assert usage["ram"]["In Use"] == 4 * 512
    assert usage["server-groups"]["In Use"] == 2
    defaults = _shown(edge, "beta-member", "--default")
    assert defaults["instances"] == 20
    # beta has no own limits: the default class
    assert _shown(edge, "beta-member")["instances"] == 20


def test_openstack_quota_show_another_project_is_for_admins(edge, edge_appliance):
    refused = openstack(edge, "beta-member", "beta", "quota", "show", "--compute",
                        edge.project("alpha"))
    assert refused.returncode != 0
    assert _shown(edge, "alpha-admin", edge.project("beta"))["instances"] == 20


def test_openstacksdk_get_compute_quotas(edge, edge_appliance):
    import openstack as sdk
    env = openstack_env(edge, "alpha-member")
    config = sdk.config.OpenStackConfig(config_files=[env["OS_CLIENT_CONFIG_FILE"]])
    conn = sdk.connection.Connection(config=config.get_one("edge"))
    try:
        quotas = conn.get_compute_quotas(edge.project("alpha"))
        assert quotas["instances"] == 6 and quotas["ram"] == 8192
        assert conn.compute.get_quota_set(edge.project("alpha"), usage=True).usage[
            "instances"] == 4
    finally:
        conn.close()


def test_novaclient_quotas_get(edge, edge_appliance):
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3
    from novaclient import client as nova_client

    from tests.realnova.keystone import EDGE_REGION, PASSWORD
    auth = v3.Password(auth_url=edge.keystone.url + "/v3", username="alpha-member",
                       password=PASSWORD, project_name="alpha", user_domain_name="Default",
                       project_domain_name="Default")
    nova = nova_client.Client("2.1", session=ks_session.Session(auth=auth),
                              region_name=EDGE_REGION)
    quotas = nova.quotas.get(edge.project("alpha"))
    assert quotas.instances == 6 and quotas.ram == 8192
    detail = nova.quotas.get(edge.project("alpha"), detail=True)
    assert detail.instances == {"in_use": 4, "limit": 6, "reserved": 0}
    assert nova.quotas.defaults(edge.project("alpha")).instances == 20
