"""Flavors over real HTTP: access, filters, sorting, pagination, microversions."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.api.conftest import ADMIN, OTHER


def fids(r) -> list[str]:
    return [f["id"] for f in r.json()["flavors"]]


def test_member_sees_public_enabled_and_own_private(api):
    r = api.get("/v2.1/flavors")
    assert r.status == 200 and r.statements <= 1
    assert fids(r) == ["1", "2", "3", "5"]
    assert sorted(r.json()["flavors"][0]) == ["id", "links", "name"]
    assert fids(api.get("/v2.1/flavors", token=OTHER)) == ["1", "2", "3", "6"]


@pytest.mark.parametrize("query,expected", [
    ("", ["1", "2", "3", "4", "5"]),
    ("is_public=true", ["1", "2", "3", "4", "5"]),
    ("is_public=None", ["1", "2", "3", "4", "5", "6"]),
    ("is_public=none", ["1", "2", "3", "4", "5", "6"]),
    ("is_public=false", ["5", "6"]),
    ("minRam=4096", ["3", "4"]),
    ("minDisk=20&minRam=2048", ["2", "3", "4"]),
    ("sort_key=name&sort_dir=desc", ["5", "1", "2", "3", "4"]),
    ("sort_key=memory_mb&sort_dir=desc&is_public=None", ["4", "3", "2", "6", "5", "1"]),
])
def test_admin_filters_and_sorting(api, query, expected):
    r = api.get(f"/v2.1/flavors?{query}", token=ADMIN)
    assert r.status == 200, r.body
    assert fids(r) == expected


def test_bad_is_public(api):
    r = api.get("/v2.1/flavors?is_public=maybe", token=ADMIN)
    assert r.status == 400
    assert r.json() == {"badRequest": {"code": 400,
                                       "message": "Invalid is_public filter [maybe]"}}
    # members' is_public is ignored, as in Nova
    assert api.get("/v2.1/flavors?is_public=maybe").status == 200


def test_pagination(api):
    r = api.get("/v2.1/flavors?limit=2")
    assert fids(r) == ["1", "2"]
    link = r.json()["flavors_links"][0]
    assert link["rel"] == "next"
    url = urlsplit(link["href"])
    assert url.path == "/v2.1/flavors"
    assert parse_qs(url.query) == {"limit": ["2"], "marker": ["2"]}
    r = api.get(f"{url.path}?{url.query}")
    assert fids(r) == ["3", "5"]
    r = api.get("/v2.1/flavors/detail?limit=2&marker=5")
    assert fids(r) == [] and "flavors_links" not in r.json()


def test_detail_and_show_by_microversion(api):
    old = api.get("/v2.1/flavors/2").json()["flavor"]
    assert old["swap"] == 512 and "description" not in old and "extra_specs" not in old
    assert old["OS-FLV-DISABLED:disabled"] is False
    assert old["os-flavor-access:is_public"] is True
    assert old["rxtx_factor"] == 1.0
    assert old["links"][0]["href"].endswith("/v2.1/flavors/2")
    tiny = api.get("/v2.1/flavors/1").json()["flavor"]
    assert tiny["swap"] == ""                       # Nova's "" for no swap before 2.75
    assert api.get("/v2.1/flavors/1", version="2.75").json()["flavor"]["swap"] == 0
    v255 = api.get("/v2.1/flavors/2", version="2.55").json()["flavor"]
    assert v255["description"] == "small one" and "extra_specs" not in v255
    v261 = api.get("/v2.1/flavors/2", version="2.61").json()["flavor"]
    assert v261["extra_specs"] == {"hw:cpu_policy": "shared"}
    listed = api.get("/v2.1/flavors", version="2.55").json()["flavors"][0]
    assert sorted(listed) == ["description", "id", "links", "name"]
    detail = api.get("/v2.1/flavors/detail", version="2.61")
    assert detail.statements <= 1
    assert detail.json()["flavors"][1]["extra_specs"] == {"hw:cpu_policy": "shared"}


def test_private_flavor_access_on_show(api):
    assert api.get("/v2.1/flavors/5").status == 200
    assert api.get("/v2.1/flavors/6").status == 404
    assert api.get("/v2.1/flavors/6", token=ADMIN).status == 200
    assert api.get("/v2.1/flavors/4").status == 200      # disabled flavors still show


def test_flavor_view_from_2_102(api):
    """2.102 removes OS-FLV-DISABLED:disabled and rxtx_factor from every flavor body."""
    dropped = {"OS-FLV-DISABLED:disabled", "rxtx_factor"}
    for version in ("2.102", "2.103", "2.104"):
        shown = api.get("/v2.1/flavors/2", version=version)
        assert shown.status == 200 and shown.statements == 1
        flavor = shown.json()["flavor"]
        before = api.get("/v2.1/flavors/2", version="2.101").json()["flavor"]
        assert dropped <= set(before) and not dropped & set(flavor)
        assert flavor == {k: v for k, v in before.items() if k not in dropped}
        detail = api.get("/v2.1/flavors/detail", token=ADMIN, version=version)
        assert detail.statements <= 1
        for f in detail.json()["flavors"]:
            assert not dropped & set(f)
            assert f["swap"] in (0, 512) and "extra_specs" in f and "description" in f
        listed = api.get("/v2.1/flavors", version=version).json()["flavors"][0]
        assert sorted(listed) == ["description", "id", "links", "name"]


@pytest.mark.parametrize("query,token,expected", [
    # Nova's flavor name filter is a regex searched anywhere in the name (REGEXP).
    ("name=m1", None, ["1", "2", "3"]),                  # m1.large is disabled: admins only
    ("name=m1", ADMIN, ["1", "2", "3", "4"]),
    ("name=tiny", None, ["1"]),
    ("name=%5Em1%5C.(tiny%7Csmall)%24", None, ["1", "2"]),    # ^m1\.(tiny|small)$
    ("name=e%24", None, ["5"]),                                # e$: "private"
    ("name=TINY", None, []),
    ("name=", None, ["1", "2", "3", "5"]),
    ("name=secret", None, []),                                 # another project's
    ("name=secret&is_public=None", ADMIN, ["6"]),
    ("name=m1&minRam=2048&sort_key=name&sort_dir=desc", None, ["2", "3"]),
])
def test_name_filter_from_2_102(api, query, token, expected):
    kw = {"token": token} if token else {}
    for path in ("/v2.1/flavors", "/v2.1/flavors/detail"):
        r = api.get(f"{path}?{query}", version="2.102", **kw)
        assert r.status == 200 and r.statements <= 1, r.body
        assert fids(r) == expected


def test_name_filter_pages_with_its_filter(api):
    r = api.get("/v2.1/flavors?name=m1&limit=2", version="2.104")
    assert fids(r) == ["1", "2"]
    url = urlsplit(r.json()["flavors_links"][0]["href"])
    assert parse_qs(url.query) == {"limit": ["2"], "marker": ["2"], "name": ["m1"]}
    assert fids(api.get(f"{url.path}?{url.query}", version="2.104")) == ["3"]


def test_name_filter_before_2_102(api):
    # Up to 2.74 Nova drops the unknown parameter; 2.75-2.101 refuse it (test_strict_query).
    assert fids(api.get("/v2.1/flavors?name=tiny", version="2.74")) == ["1", "2", "3", "5"]


def test_name_filter_that_is_not_a_regex_matches_nothing(api):
    # Nova's schema does not check the pattern and hands it to the database (a 500 there);
    # the replica answers an empty list.
    r = api.get("/v2.1/flavors?name=%5B", version="2.102")
    assert r.status == 200 and fids(r) == []
