"""GET /limits: Nova's absolute limits from the replica's quota rows (the project's own,
else the defaults', else Nova's own defaults) and the project's usage kept at ingest,
one statement; the limits each microversion drops (2.36, 2.39, 2.57); tenant_id for
admins only; the 2.75 strict query."""

from __future__ import annotations

import pytest

from replica import render
from tests.api import entities as E
from tests.api.conftest import ADMIN, MEMBER, OTHER, serving

SERVERS = [
    ("cell1", E.server(0)),                                               # 1 vcpu, 512
    ("cell1", E.server(1, flavor=E.flavor_of_server("2", "m1.small", vcpus=2,
                                                    memory_mb=2048))),
    ("cell2", E.server(2, deleted=True, vm_state="deleted", deleted_at=E.stamp(4))),
    ("cell2", E.server(3, vm_state="soft-delete")),                         # not counted
    ("cell2", E.server(4, vm_state="error")),                               # counted
    ("cell1", E.server(100, project_id=E.OTHER_PROJECT, user_id="other")),
]
DEFAULTS = E.quota(None, instances=40, cores=-1)
OWN = E.quota(E.PROJECT, server_groups_used=3, instances=7, ram=4096, metadata_items=9)
USAGE = {"instances": 3, "cores": 4, "ram": 512 + 2048 + 512, "server_groups": 3}
LIMITS = {**DEFAULTS["limits"], **{k: v for k, v in OWN["limits"].items() if v is not None}}


@pytest.fixture(scope="module")
def limits_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("limits") / "replica.db")
    E.fill_replica(path, SERVERS, [], {"cell1": 10, "cell2": 5, "flavors": 1})
    E.fill_quotas(path, [DEFAULTS, OWN])
    with serving(path, env={"NOAUTH_DEFAULT": MEMBER}) as client:
        yield client


@pytest.fixture(scope="module")
def bare_api(tmp_path_factory):
    """A replica without any quota row: Nova's own defaults."""
    path = str(tmp_path_factory.mktemp("bare") / "replica.db")
    E.fill_replica(path, SERVERS[:1], [], {"cell1": 1})
    with serving(path) as client:
        yield client


def _limits(api, query="", token=MEMBER, version="2.1"):
    response = api.get("/v2.1/limits" + query, token=token, version=version)
    if response.status == 200:
        assert response.statements == 1
    return response


@pytest.mark.parametrize("version", ["2.1", "2.35", "2.36", "2.38", "2.39", "2.56", "2.57",
                                     "2.100"])
def test_limits_per_microversion(limits_api, version):
    body = _limits(limits_api, version=version).json()
    minor = int(version.split(".")[1])
    assert body == render.render_limits_document(LIMITS, USAGE, minor)
    absolute = body["limits"]["absolute"]
    assert ("maxTotalFloatingIps" in absolute) == (minor < 36)
    assert ("maxImageMeta" in absolute) == (minor < 39)
    assert ("maxPersonality" in absolute) == (minor < 57)


def test_limits_values(limits_api):
    absolute = _limits(limits_api).json()["limits"]["absolute"]
    assert absolute["maxTotalInstances"] == 7           # the project's own
    assert absolute["maxTotalCores"] == -1              # the default class
    assert absolute["maxTotalRAMSize"] == 4096
    assert absolute["maxServerMeta"] == absolute["maxImageMeta"] == 9
    assert absolute["maxTotalKeypairs"] == 100          # Nova's default
    assert absolute["totalInstancesUsed"] == 3
    assert absolute["totalCoresUsed"] == 4
    assert absolute["totalRAMUsed"] == 3072
    assert absolute["totalServerGroupsUsed"] == 3
    assert absolute["totalFloatingIpsUsed"] == 0


def test_other_project_sees_its_own(limits_api):
    absolute = _limits(limits_api, token=OTHER).json()["limits"]["absolute"]
    assert absolute["maxTotalInstances"] == 40          # no own row: the defaults
    assert absolute["totalInstancesUsed"] == 1
    assert absolute["totalServerGroupsUsed"] == 0


def test_tenant_id_is_for_admins(limits_api):
    refused = _limits(limits_api, f"?tenant_id={E.PROJECT}", token=OTHER)
    assert refused.status == 403
    assert refused.json() == {"forbidden": {
        "code": 403,
        "message": "Policy doesn't allow os_compute_api:limits:other_project to be performed."}}
    admin = _limits(limits_api, f"?tenant_id={E.OTHER_PROJECT}", token=ADMIN)
    assert admin.status == 200
    assert admin.json()["limits"]["absolute"]["totalInstancesUsed"] == 1
    assert _limits(limits_api, token=ADMIN).json()["limits"]["absolute"][
        "totalInstancesUsed"] == 3


def test_strict_query_from_2_75(limits_api):
    assert _limits(limits_api, "?foo=1", version="2.74").status == 200
    refused = _limits(limits_api, "?foo=1", version="2.75")
    assert refused.status == 400
    assert "Additional properties are not allowed" in refused.json()["badRequest"]["message"]


def test_nova_defaults_without_quota_rows(bare_api):
    body = _limits(bare_api, token=MEMBER).json()
    assert body == render.render_limits_document(
        render.QUOTA_NOVA_DEFAULTS, {"instances": 1, "cores": 1, "ram": 512}, 1)


def test_openstack_limits_show_absolute(limits_api):
    """The client: `openstack limits show --absolute` reads this route."""
    import os
    import subprocess

    from tests.conftest import VENV_BIN
    base = [os.path.join(VENV_BIN, "openstack"), "--os-auth-type", "none", "--os-endpoint",
            f"http://127.0.0.1:{limits_api.port}/v2.1", "--os-identity-api-version", "3"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    out = subprocess.run(base + ["limits", "show", "--absolute", "-f", "value"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    shown = dict(line.split() for line in out.stdout.strip().splitlines())
    assert shown["max_total_instances"] == "7"
    assert shown["total_ram_used"] == "3072"
    assert shown["total_server_groups_used"] == "3"


# -- GET /os-quota-sets/{project}[/detail|/defaults] ---------------------------------------

def _quota_set(api, path, token=MEMBER, version="2.1"):
    response = api.get("/v2.1/os-quota-sets/" + path, token=token, version=version)
    if response.status == 200:
        assert response.statements == 1
    return response


@pytest.mark.parametrize("version", ["2.1", "2.35", "2.36", "2.56", "2.57", "2.100"])
def test_quota_set_show_detail_and_defaults(limits_api, version):
    minor = int(version.split(".")[1])
    shown = render.quota_set_resources(minor)
    show = _quota_set(limits_api, E.PROJECT, version=version).json()["quota_set"]
    assert show == {"id": E.PROJECT, **{r: LIMITS[r] for r in shown}}
    detail = _quota_set(limits_api, f"{E.PROJECT}/detail", version=version).json()
    assert detail["quota_set"] == {"id": E.PROJECT, **{
        r: {"in_use": USAGE.get(r, 0), "limit": LIMITS[r], "reserved": 0} for r in shown}}
    defaults = _quota_set(limits_api, f"{E.PROJECT}/defaults", version=version).json()
    assert defaults["quota_set"] == {"id": E.PROJECT,
                                     **{r: DEFAULTS["limits"][r] for r in shown}}
    assert ("floating_ips" in show) == (minor < 36)
    assert ("injected_files" in show) == (minor < 57)


def test_quota_set_tenancy(limits_api):
    for mode in ("", "/detail"):
        refused = _quota_set(limits_api, E.PROJECT + mode, token=OTHER)
        assert refused.status == 403
        rule = "show" if not mode else "detail"
        assert refused.json() == {"forbidden": {"code": 403, "message": (
            f"Policy doesn't allow os_compute_api:os-quota-sets:{rule} to be performed.")}}
        admin = _quota_set(limits_api, E.OTHER_PROJECT + mode, token=ADMIN).json()
        assert admin["quota_set"]["id"] == E.OTHER_PROJECT
    # the defaults are anyone's to read
    assert _quota_set(limits_api, f"{E.PROJECT}/defaults", token=OTHER).status == 200
    other = _quota_set(limits_api, E.OTHER_PROJECT + "/detail", token=OTHER).json()
    assert other["quota_set"]["instances"] == {"in_use": 1, "limit": 40, "reserved": 0}


def test_quota_set_strict_query_from_2_75(limits_api):
    assert _quota_set(limits_api, E.PROJECT + "?foo=1", version="2.74").status == 200
    assert _quota_set(limits_api, E.PROJECT + "?foo=1", version="2.75").status == 400
    # a user's quotas are not replicated: without an upstream, not answered here
    assert _quota_set(limits_api, E.PROJECT + "?user_id=fake").status != 200


@pytest.mark.filterwarnings("ignore:::openstack.*")
def test_sdk_and_novaclient_quota_sets_without_keystone(limits_api):
    """openstacksdk's get_quota_set and novaclient's quotas.get need no identity API (the
    CLI's quota show does: tests/edge/test_quota_clients.py)."""
    import openstack
    from keystoneauth1 import session as ks_session
    from keystoneauth1.noauth import NoAuth
    from novaclient import client as nova_client

    endpoint = f"http://127.0.0.1:{limits_api.port}/v2.1"
    conn = openstack.connection.Connection(auth_type="none",
                                           compute_endpoint_override=endpoint)
    try:
        shown = conn.compute.get_quota_set(E.PROJECT)
        assert shown.instances == 7 and shown.ram == 4096
        assert conn.compute.get_quota_set(E.PROJECT, usage=True).usage["ram"] == 3072
        assert conn.compute.get_quota_set_defaults(E.PROJECT).instances == 40
    finally:
        conn.close()
    nova = nova_client.Client("2.1", session=ks_session.Session(auth=NoAuth()),
                              endpoint_override=endpoint)
    assert nova.quotas.get(E.PROJECT).instances == 7
    assert nova.quotas.get(E.PROJECT, detail=True).cores == {
        "in_use": 4, "limit": -1, "reserved": 0}
    assert nova.quotas.defaults(E.PROJECT).instances == 40
