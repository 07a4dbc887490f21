"""A list page over PIECES_FROM_BYTES leaves as two pieces (the page, then its closing):
the answer is the same document, its Content-Length counts both, and a page asked again
(kept by the reader) is the same bytes."""

from __future__ import annotations

import json

import pytest

from appliance.api import app as app_mod
from tests.api import entities as E
from tests.api.conftest import ADMIN, start_server, stop_server
from tests.conftest import free_port

SERVERS = 80      # a detail page of 80 servers is well over 64 KiB


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("big") / "replica.db")
    E.fill_replica(path, [("cell1", E.server(n)) for n in range(1, SERVERS + 1)], [],
                   {"cell1": SERVERS})
    proc, api = start_server(path, free_port())
    yield api
    stop_server(proc)


def test_a_big_page_is_one_whole_document(big):
    r = big.get("/v2.1/servers/detail?all_tenants=1&limit=1000", token=ADMIN)
    assert r.status == 200
    assert len(r.body) > app_mod.PIECES_FROM_BYTES
    assert int(r.headers["content-length"]) == len(r.body)
    servers = json.loads(r.body)["servers"]
    assert len(servers) == SERVERS and "servers_links" not in json.loads(r.body)


def test_a_full_big_page_ends_with_its_next_link(big):
    r = big.get(f"/v2.1/servers/detail?all_tenants=1&limit={SERVERS - 1}", token=ADMIN)
    assert r.status == 200 and int(r.headers["content-length"]) == len(r.body)
    document = json.loads(r.body)
    assert len(document["servers"]) == SERVERS - 1
    [link] = document["servers_links"]
    assert link["href"].endswith(f"marker={document['servers'][-1]['id']}")
    again = big.get(f"/v2.1/servers/detail?all_tenants=1&limit={SERVERS - 1}", token=ADMIN)
    assert again.body == r.body


def test_head_of_a_big_page_has_no_body(big):
    r = big.request("HEAD", "/v2.1/servers/detail?all_tenants=1", token=ADMIN)
    assert r.status == 200 and r.body == b""
    assert int(r.headers["content-length"]) > app_mod.PIECES_FROM_BYTES
