"""auth = "keystone" against a real Keystone: the openstack CLI through the edge region's
catalog, expired and revoked tokens, Keystone cut off, tenancy as with noauth."""

from __future__ import annotations

import json
import subprocess
import time

from tests.appliance.conftest import get, wait_for
from tests.conftest import PYTHON, ROOT, free_port
from tests.edge.conftest import openstack, serve
from tests.realnova.keystone import PASSWORD


def test_openstack_cli_through_the_catalog(edge, edge_appliance):
    listed = openstack(edge, "alpha-member", "alpha", "server", "list", "-f", "json")
    assert listed.returncode == 0, listed.stderr
    names = sorted(s["Name"] for s in json.loads(listed.stdout))
    assert names == sorted(f"alpha-{n}" for n in range(4))
    server_id = edge.server_ids("alpha")[0]
    shown = openstack(edge, "alpha-reader", "alpha", "server", "show", server_id, "-f", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == server_id
    flavors = openstack(edge, "alpha-member", "alpha", "flavor", "list", "-f", "json")
    assert flavors.returncode == 0, flavors.stderr
    # Public flavors and the private one alpha has access to, as Nova lists them.
    assert {f["Name"] for f in json.loads(flavors.stdout)} == {"m1.tiny", "m1.small",
                                                              "alpha-only"}
    # beta's member does not see alpha's server.
    hidden = openstack(edge, "beta-member", "beta", "server", "show", server_id)
    assert hidden.returncode != 0 and "No Server found" in hidden.stderr


def servers(port: int, token: str | None, path: str = "/v2.1/servers"):
    return get(port, path, headers={"X-Auth-Token": token} if token else {})


def metric(running, outcome: str) -> float:
    _, body, _ = get(running.admin_port, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("appliance_keystone_validations_total{") \
                and f'outcome="{outcome}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def assert_keystone_401(edge, status, body, headers):
    """What keystonemiddleware answers a request without a valid token."""
    assert status == 401
    assert headers["WWW-Authenticate"] == f'Keystone uri="{edge.keystone.url}"'
    assert json.loads(body) == {"error": {
        "code": 401, "title": "Unauthorized",
        "message": "The request you have made requires authentication."}}


def test_no_token_and_a_bad_token_get_keystones_401(edge, edge_appliance):
    assert_keystone_401(edge, *servers(edge.port, None))
    assert_keystone_401(edge, *servers(edge.port, "gAAAAAB-not-a-token"))
    assert servers(edge.port, None, "/")[0] == 200      # discovery needs no token


def test_revoked_token_gets_401(edge, edge_appliance):
    keystone = edge.keystone
    unused = keystone.token("alpha-member", PASSWORD, "alpha")
    keystone.revoke(unused)
    assert_keystone_401(edge, *servers(edge.port, unused))
    used = keystone.token("alpha-member", PASSWORD, "alpha")
    assert servers(edge.port, used)[0] == 200
    keystone.revoke(used)
    # Served from the cache for keystone_cache_seconds (1 s here), then checked again.
    wait_for(lambda: servers(edge.port, used)[0] == 401, timeout=10,
             what="the revoked token to be refused")


def test_tenancy_is_the_same_as_noauth(edge, edge_appliance, tmp_path):
    """Each Keystone user sees exactly what the noauth identity of the same user and
    project sees, on every read route."""
    noauth_port = free_port()
    noauth = serve(tmp_path, "noauth", noauth_port, edge.replica, workers=1)
    try:
        alpha, beta = edge.project("alpha"), edge.project("beta")
        beta_server = edge.server_ids("beta")[0]
        alpha_server = edge.server_ids("alpha")[0]
        paths = ["/v2.1/servers", "/v2.1/servers/detail", f"/v2.1/{alpha}/servers",
                 "/v2.1/servers?all_tenants=1", "/v2.1/servers/detail?all_tenants=1",
                 f"/v2.1/servers/{alpha_server}", f"/v2.1/servers/{beta_server}",
                 f"/v2.1/servers/{alpha_server}/ips", "/v2.1/flavors",
                 "/v2.1/flavors/detail?is_public=None", "/v2.1/flavors/5"]
        cases = [("alpha-reader", "alpha", f"alpha-reader:{alpha}"),
                 ("alpha-member", "alpha", f"alpha-member:{alpha}"),
                 ("alpha-admin", "alpha", f"admin:{alpha}"),
                 ("beta-member", "beta", f"beta-member:{beta}")]
        for user, project, noauth_token in cases:
            token = edge.keystone.token(user, PASSWORD, project)
            for path in paths:
                k_status, k_body, _ = servers(edge.port, token, path)
                n_status, n_body, _ = servers(noauth_port, noauth_token, path)
                k_body = k_body.replace(f":{edge.port}/".encode(), b":PORT/")
                n_body = n_body.replace(f":{noauth_port}/".encode(), b":PORT/")
                assert (k_status, json.loads(k_body)) == (n_status, json.loads(n_body)), \
                    (user, path)
        # The admin of alpha sees beta's server and every project; a member does not.
        admin = edge.keystone.token("alpha-admin", PASSWORD, "alpha")
        assert servers(edge.port, admin, f"/v2.1/servers/{beta_server}")[0] == 200
        member = edge.keystone.token("alpha-member", PASSWORD, "alpha")
        assert servers(edge.port, member, f"/v2.1/servers/{beta_server}")[0] == 404
        assert servers(edge.port, member, "/v2.1/servers?all_tenants=1")[0] == 403
    finally:
        noauth.stop()


def test_a_token_without_a_project_cannot_read_servers(edge, edge_appliance):
    unscoped = edge.keystone.token("alpha-member", PASSWORD)
    status, body, _ = servers(edge.port, unscoped)
    assert status == 403
    assert "os_compute_api:servers:index" in json.loads(body)["forbidden"]["message"]
    assert servers(edge.port, unscoped, "/v2.1/flavors")[0] == 200


def test_expired_token_and_keystone_cut_off(edge, edge_appliance):
    """Tokens that live 20 s. Keystone stopped: a token validated before keeps working on
    every worker until it expires (counted); a token never seen gets 401. Once expired,
    the token gets 401, with Keystone back too."""
    keystone = edge.keystone
    keystone.restart(expiration=20)
    try:
        seen = keystone.token("alpha-member", PASSWORD, "alpha")
        expires = time.monotonic() + 20
        unseen = keystone.token("alpha-reader", PASSWORD, "alpha")
        assert servers(edge.port, seen)[0] == 200
        before = metric(edge_appliance, "cached_while_unreachable")
        keystone.stop()
        # Past keystone_cache_seconds (1 s) each worker asks Keystone again, cannot reach
        # it and serves the validation it has. Fresh connections reach both workers.
        statuses = []
        ends = min(time.monotonic() + 2.5, expires - 1)
        assert ends - time.monotonic() > 1.2, "too slow to test the cut-off"
        while time.monotonic() < ends:
            statuses.append(servers(edge.port, seen)[0])
        assert set(statuses) == {200}, (statuses, edge_appliance.log()[-3000:])
        wait_for(lambda: metric(edge_appliance, "cached_while_unreachable") > before,
                 timeout=5, what="the metric of validations served while Keystone is down")
        assert_keystone_401(edge, *servers(edge.port, unseen))
        wait_for(lambda: servers(edge.port, seen)[0] == 401, timeout=25,
                 what="the cached token to expire")
        assert metric(edge_appliance, "refused_while_unreachable") >= 1
    finally:
        keystone.restart(expiration=3600)
    assert_keystone_401(edge, *servers(edge.port, seen))


def test_serve_check_gets_the_service_token(edge, edge_appliance, tmp_path):
    # --check also wants a server cell and the flavor source (they need not answer).
    cells = "".join(f'[[cell]]\nname = "{name}"\nkind = "{kind}"\n'
                    f'feed = "tcp://127.0.0.1:{free_port()}"\n'
                    f'control = "tcp://127.0.0.1:{free_port()}"\n'
                    for name, kind in (("cell1", "servers"), ("flavors", "flavors")))
    config = tmp_path / "checked.toml"
    config.write_text(edge_appliance.config.read_text() + cells)
    check = subprocess.run([PYTHON, "-m", "appliance", "serve", "--config",
                            str(config), "--check"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert f"ok: keystone {edge.keystone.url} accepts appliance" in check.stdout
    assert "appliance-secret" not in check.stdout
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(config.read_text().replace(
        'keystone_password = "appliance-secret"', 'keystone_password = "not-it"'))
    check = subprocess.run([PYTHON, "-m", "appliance", "serve", "--config", str(wrong),
                            "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert "warning: keystone: service token: Keystone answered 401" in check.stdout
