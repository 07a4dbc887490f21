"""Server sorts and regex filters under Nova's database collation (the
nova_database_collation setting): by code point (SQLite, the default) or as MariaDB's
utf8_general_ci orders and matches Nova's text columns (case and accents ignored in
order, case ignored by REGEXP). Against real nova-api on MariaDB:
tests/realnova/test_differential_varied.py."""

from __future__ import annotations

import pytest

from tests.api import entities as E
from tests.api.conftest import ADMIN, start_server, stop_server
from tests.conftest import free_port

NAMES = ["beta", "Alpha", "Ünder", "alpha-2", "zeta", "Web-1", "web-2"]


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("collation") / "replica.db")
    servers = [("cell1", E.server(n, display_name=name)) for n, name in enumerate(NAMES)]
    E.fill_replica(path, servers, [E.flavor("1", "f")], {"cell1": len(servers)})
    return path


def names(api, query: str, **kw) -> list[str]:
    r = api.get(f"/v2.1/servers{query}", **kw)
    assert r.status == 200, r.body
    return [s["name"] for s in r.json()["servers"]]


@pytest.mark.parametrize("collation,ascending,web", [
    ("binary", ["Alpha", "Web-1", "alpha-2", "beta", "web-2", "zeta", "Ünder"], ["web-2"]),
    ("utf8_general_ci", ["Alpha", "alpha-2", "beta", "Ünder", "Web-1", "web-2", "zeta"],
     ["Web-1", "web-2"]),
])
def test_sorts_and_filters_follow_the_collation(replica, collation, ascending, web):
    proc, api = start_server(replica, free_port(),
                             env={"NOVA_DATABASE_COLLATION": collation})
    try:
        assert names(api, "?sort_key=display_name&sort_dir=asc") == ascending
        assert names(api, "?sort_key=display_name&sort_dir=desc") == ascending[::-1]
        # a marker inside the order: the rows after it under the same collation
        marker = E.server(NAMES.index("beta"))["uuid"]
        assert names(api, f"?sort_key=display_name&sort_dir=asc&marker={marker}") == \
            ascending[ascending.index("beta") + 1:]
        assert sorted(names(api, "?name=web")) == web
        assert sorted(names(api, "?name=^w.b")) == web
        # an exact filter: under the collation too (E.server's host is "compute-1")
        assert len(names(api, "?all_tenants=1&host=COMPUTE-1", token=ADMIN)) == (
            0 if collation == "binary" else len(NAMES))
    finally:
        stop_server(proc)
