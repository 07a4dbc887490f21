"""GET /os-keypairs and /os-keypairs/{name}: a user's key pairs from the replica, one
statement each: per user (an admin may name another with user_id from 2.10), by name,
2.2 type, 2.35 paging, Nova's 403 and 404."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from replica import render
from tests.api import entities as E
from tests.api.conftest import ADMIN, MEMBER, OTHER, serving

# MEMBER is user "fake", OTHER user "other", ADMIN user "admin"
MINE = [E.keypair("fake", name, n, type="x509" if name == "b-cert" else "ssh")
        for n, name in enumerate(["a-key", "b-cert", "c key", "d.key"], start=1)]
THEIRS = [E.keypair("other", "a-key", 10)]


@pytest.fixture(scope="module")
def keypairs_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("keypairs") / "replica.db")
    E.fill_replica(path, [], [E.flavor()], {"cell1": 1, "flavors": 5})
    E.fill_keypairs(path, MINE + THEIRS)
    with serving(path, env={"NOAUTH_DEFAULT": MEMBER}) as client:
        yield client


def _get(api, path, token=MEMBER, version="2.1"):
    response = api.get(path, token=token, version=version)
    if response.status in (200, 404) or "marker" in path:
        assert response.statements == 1, path
    return response


def _names(body):
    return [k["keypair"]["name"] for k in body["keypairs"]]


def test_list_is_the_callers_own_by_name(keypairs_api):
    body = _get(keypairs_api, "/v2.1/os-keypairs").json()
    assert _names(body) == ["a-key", "b-cert", "c key", "d.key"]
    assert body["keypairs"][0] == {"keypair": {"name": "a-key",
                                               "public_key": MINE[0]["public_key"],
                                               "fingerprint": MINE[0]["fingerprint"]}}
    typed = _get(keypairs_api, "/v2.1/os-keypairs", version="2.2").json()
    assert [k["keypair"]["type"] for k in typed["keypairs"]] == ["ssh", "x509", "ssh", "ssh"]
    other = _get(keypairs_api, "/v2.1/os-keypairs", OTHER).json()
    assert _names(other) == ["a-key"]


def test_paging_from_2_35(keypairs_api):
    first = _get(keypairs_api, "/v2.1/os-keypairs?limit=2", version="2.35").json()
    assert _names(first) == ["a-key", "b-cert"]
    (link,) = first["keypairs_links"]
    assert parse_qs(urlsplit(link["href"]).query) == {"limit": ["2"], "marker": ["b-cert"]}
    rest = _get(keypairs_api, "/v2.1/os-keypairs?limit=2&marker=b-cert", version="2.35").json()
    assert _names(rest) == ["c key", "d.key"]
    assert "keypairs_links" not in _get(keypairs_api, "/v2.1/os-keypairs?marker=c%20key",
                                        version="2.35").json()
    bad = _get(keypairs_api, "/v2.1/os-keypairs?marker=nope", version="2.35")
    assert bad.status == 400
    assert bad.json()["badRequest"]["message"] == "Marker nope could not be found."
    # before 2.35 paging is not there (and ignored)
    assert len(_names(_get(keypairs_api, "/v2.1/os-keypairs?limit=1").json())) == 4
    assert _get(keypairs_api, "/v2.1/os-keypairs?bogus=1", version="2.75").status == 400


def test_show(keypairs_api):
    got = _get(keypairs_api, "/v2.1/os-keypairs/b-cert", version="2.2").json()["keypair"]
    assert list(got) == ["name", "public_key", "fingerprint", "user_id", "created_at",
                         "deleted", "deleted_at", "id", "updated_at", "type"]
    assert got == render.render_keypair_document(MINE[1], 2, True)
    assert got["deleted"] is False and got["id"] == 2 and got["type"] == "x509"
    plain = _get(keypairs_api, "/v2.1/os-keypairs/c%20key").json()["keypair"]
    assert "type" not in plain and plain["name"] == "c key"
    missing = _get(keypairs_api, "/v2.1/os-keypairs/nope")
    assert missing.status == 404
    assert missing.json()["itemNotFound"]["message"] == "Keypair nope not found for user fake"


def test_tenancy_per_user(keypairs_api):
    # another user's key pair of the same name is not the caller's
    assert _get(keypairs_api, "/v2.1/os-keypairs/b-cert", OTHER).status == 404
    # only an admin may name another user (2.10+); below 2.10 user_id is ignored
    refused = _get(keypairs_api, "/v2.1/os-keypairs?user_id=other", version="2.10")
    assert refused.status == 403
    assert refused.json()["forbidden"]["message"] == (
        "Policy doesn't allow os_compute_api:os-keypairs:index to be performed.")
    assert _get(keypairs_api, "/v2.1/os-keypairs/a-key?user_id=other",
                version="2.10").status == 403
    assert _names(_get(keypairs_api, "/v2.1/os-keypairs?user_id=other").json()) == [
        "a-key", "b-cert", "c key", "d.key"]
    admin = _get(keypairs_api, "/v2.1/os-keypairs?user_id=other", ADMIN, "2.10").json()
    assert _names(admin) == ["a-key"]
    shown = _get(keypairs_api, "/v2.1/os-keypairs/a-key?user_id=fake", ADMIN, "2.10").json()
    assert shown["keypair"]["user_id"] == "fake"
    assert _names(_get(keypairs_api, "/v2.1/os-keypairs", ADMIN).json()) == []


def test_openstack_keypair_list(keypairs_api):
    import os
    import subprocess

    from tests.conftest import VENV_BIN
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    out = subprocess.run(
        [os.path.join(VENV_BIN, "openstack"), "--os-auth-type", "none", "--os-endpoint",
         f"http://127.0.0.1:{keypairs_api.port}/v2.1", "--os-identity-api-version", "3",
         "keypair", "list", "-f", "value", "-c", "Name"],
        capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == ["a-key", "b-cert", "c key", "d.key"]
