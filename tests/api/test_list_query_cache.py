"""A worker keeps the parsed query of a server list: the same query string asked again by
another caller, at another microversion or as the other list gives that caller's answer,
never the first caller's."""

from __future__ import annotations

from tests.api import entities as E
from tests.api.conftest import ADMIN, MEMBER, OTHER


def _ids(r) -> set[str]:
    assert r.status == 200, r.body
    return {s["id"] for s in r.json()["servers"]}


def test_the_same_query_string_answers_each_caller_for_its_own_project(api):
    first = _ids(api.get("/v2.1/servers?limit=50", token=MEMBER))
    second = _ids(api.get("/v2.1/servers?limit=50", token=OTHER))
    again = _ids(api.get("/v2.1/servers?limit=50", token=MEMBER))
    assert first and second and not first & second
    assert again == first
    assert E.server(100, project_id=E.OTHER_PROJECT)["uuid"] in second


def test_a_member_after_an_admin_is_refused_all_tenants(api):
    admin = _ids(api.get("/v2.1/servers/detail?all_tenants=1", token=ADMIN))
    assert E.server(100, project_id=E.OTHER_PROJECT)["uuid"] in admin
    assert api.get("/v2.1/servers/detail?all_tenants=1", token=MEMBER).status == 403


def test_brief_and_detail_lists_of_one_query_string_stay_apart(api):
    brief = api.get("/v2.1/servers?limit=3", token=MEMBER).json()["servers"]
    detail = api.get("/v2.1/servers/detail?limit=3", token=MEMBER).json()["servers"]
    assert set(brief[0]) == {"id", "name", "links"}
    assert "status" in detail[0]
    assert [s["id"] for s in brief] == [s["id"] for s in detail]


def test_the_next_link_of_a_kept_query_names_the_page_it_follows(api):
    pages = [api.get("/v2.1/servers?limit=2", token=MEMBER).json() for _ in range(2)]
    assert pages[0] == pages[1]
    [link] = pages[1]["servers_links"]
    assert link["rel"] == "next" and "limit=2" in link["href"]
    assert f"marker={pages[1]['servers'][-1]['id']}" in link["href"]


def test_a_microversion_change_is_another_query(api):
    old = api.get("/v2.1/servers/detail?limit=1", token=MEMBER).json()["servers"][0]
    new = api.get("/v2.1/servers/detail?limit=1", token=MEMBER,
                  version="2.26").json()["servers"][0]
    assert "tags" not in old and "tags" in new


def test_the_next_link_of_a_kept_query_follows_each_requests_host_and_url(api):
    # The same list, asked again through another host name, through a proxy and with
    # the project in the URL: each next link says how that request reached the API.
    path = "/servers?limit=2"
    plain = api.get("/v2.1" + path, token=MEMBER).json()
    proxied = api.get("/v2.1" + path, token=MEMBER,
                      headers={"X-Forwarded-Proto": "https",
                               "X-Forwarded-Host": "api.example.com"}).json()
    with_project = api.get(f"/v2.1/{E.PROJECT}" + path, token=MEMBER).json()
    again = api.get("/v2.1" + path, token=MEMBER).json()
    marker = plain["servers"][-1]["id"]
    hrefs = [page["servers_links"][0]["href"] for page in (plain, proxied, with_project)]
    assert hrefs[0].startswith("http://127.0.0.1:") and "/v2.1/servers?" in hrefs[0]
    assert hrefs[1].startswith("https://api.example.com/v2.1/servers?")
    assert f"/v2.1/{E.PROJECT}/servers?" in hrefs[2]
    assert all(f"marker={marker}" in href for href in hrefs)
    assert again == plain
