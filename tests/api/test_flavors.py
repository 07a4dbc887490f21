"""Flavors over real HTTP: access, filters, sorting, pagination, microversions."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.api.conftest import ADMIN, OTHER


def fids(r) -> list[str]:
    return [f["id"] for f in r.json()["flavors"]]


def test_member_sees_public_enabled_and_own_private(api):
    r = api.get("/v2.1/flavors")
    assert r.status == 200 and r.statements == 1
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
    assert detail.statements == 1
    assert detail.json()["flavors"][1]["extra_specs"] == {"hw:cpu_policy": "shared"}


def test_private_flavor_access_on_show(api):
    assert api.get("/v2.1/flavors/5").status == 200
    assert api.get("/v2.1/flavors/6").status == 404
    assert api.get("/v2.1/flavors/6", token=ADMIN).status == 200
    assert api.get("/v2.1/flavors/4").status == 200      # disabled flavors still show
