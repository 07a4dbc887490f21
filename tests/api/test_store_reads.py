"""The store's named queries behind the API (replica.store.reader): deadlines, the
replica position, a missing replica, and the public URL for links."""

from __future__ import annotations

import json

import pytest

from replica import render
from replica.store import reader as reader_mod
from replica.store.connection import open_reader
from replica.store.reader import Prefixes, Reader, ReadTimeout, ServerQuery
from tests.api import entities as E
from tests.api.conftest import MEMBER, start_server, stop_server
from tests.conftest import free_port


@pytest.fixture
def reader(replica_file):
    r = Reader(open_reader(replica_file))
    yield r
    r.conn.close()


def test_a_statement_past_its_deadline_is_interrupted(reader, monkeypatch):
    monkeypatch.setattr(reader_mod, "DEADLINE_S", -1.0)
    with pytest.raises(ReadTimeout):
        reader.list_servers(ServerQuery(project_id=None, deleted=None),
                            render.ServerView(100, True, False), Prefixes("s", "b"))
    monkeypatch.setattr(reader_mod, "DEADLINE_S", 0.5)
    result = reader.list_servers(ServerQuery(project_id=None, deleted=None, limit=3),
                                 None, Prefixes("s", "b"))
    assert result.count == 3 and result.statements == 1


def test_results_carry_the_position_and_paging_facts(reader):
    result = reader.list_servers(ServerQuery(project_id=E.PROJECT, limit=2), None,
                                 Prefixes("http://h/v2.1", "http://h"))
    assert result.position == "cell1=1234,cell2=877,flavors=6"
    assert result.count == 2
    servers = json.loads(result.body + b"}")["servers"]
    assert result.last_id == servers[-1]["id"]
    assert result.marker_found
    missing = reader.list_servers(ServerQuery(project_id=E.PROJECT, marker="nope"), None,
                                  Prefixes("s", "b"))
    assert not missing.marker_found
    gone = reader.show_server("11111111-2222-3333-4444-555555555555",
                              render.ServerView(), Prefixes("s", "b"), None)
    assert gone.body is None and gone.position == "cell1=1234,cell2=877,flavors=6"


def test_unknown_filter_columns_are_refused_by_the_store():
    with pytest.raises(ValueError):
        reader_mod.build_server_list(ServerQuery(exact={"d_base; --": ("x",)}), None)


def test_missing_replica_answers_503_and_recovers(tmp_path):
    path = str(tmp_path / "later.db")
    proc, api = start_server(path, free_port())
    try:
        r = api.get("/v2.1/servers", token=MEMBER)
        assert r.status == 503
        assert r.json()["serviceUnavailable"]["code"] == 503
        E.fill_replica(path, [("cell1", E.server(1))], [], {"cell1": 1})
        r = api.get("/v2.1/servers", token=MEMBER)
        assert r.status == 200 and len(r.json()["servers"]) == 1
    finally:
        stop_server(proc)


def test_public_url_shapes_every_link(replica_file):
    proc, api = start_server(replica_file, free_port(),
                             env={"PUBLIC_URL": "https://compute.example.org/edge/"})
    try:
        r = api.get(f"/v2.1/servers/{E.server(0)['uuid']}", token=MEMBER)
        links = r.json()["server"]["links"]
        assert links[0]["href"] == (
            f"https://compute.example.org/edge/v2.1/servers/{E.server(0)['uuid']}")
        assert links[1]["href"] == (
            f"https://compute.example.org/edge/servers/{E.server(0)['uuid']}")
        doc = api.get("/v2.1/", token=None).json()
        assert doc["version"]["links"][0]["href"] == "https://compute.example.org/edge/v2.1/"
        r = api.get("/v2.1/servers?limit=1", token=MEMBER)
        assert r.json()["servers_links"][0]["href"].startswith(
            "https://compute.example.org/edge/v2.1/servers?limit=1&marker=")
    finally:
        stop_server(proc)


def _bump_position(path: str, cell: str, seq: int) -> None:
    from replica.store.connection import open_writer
    conn = open_writer(path)
    with conn:
        conn.execute("UPDATE positions SET seq = ? WHERE cell = ?", (seq, cell))
    conn.close()


def test_a_read_leaves_no_transaction_open(tmp_path):
    path = str(tmp_path / "r.db")
    E.fill_replica(path, [("cell1", E.server(1))], [], {"cell1": 1})
    r = Reader(open_reader(path))
    one = E.server(1)["uuid"]
    assert r.show_server(one, render.ServerView(), Prefixes("s", "b"), None).body
    assert not r.conn.in_transaction        # the WAL's read mark is not kept
    r.conn.close()


def test_held_snapshots_are_shared_briefly_then_let_go(tmp_path):
    path = str(tmp_path / "r.db")
    E.fill_replica(path, [("cell1", E.server(1))], [], {"cell1": 1})
    r = Reader(open_reader(path))
    timers = []
    r.hold_snapshots(60.0, lambda delay, fn: timers.append((delay, fn)))
    view, prefixes, one = render.ServerView(), Prefixes("s", "b"), E.server(1)["uuid"]
    assert r.show_server(one, view, prefixes, None).position == "cell1=1"
    assert r.conn.in_transaction and len(timers) == 1 and timers[0][0] == 60.0
    _bump_position(path, "cell1", 2)
    # Same snapshot: same position, and a statement of another shape agrees.
    assert r.show_server(one, view, prefixes, None).position == "cell1=1"
    listed = r.list_servers(ServerQuery(project_id=None), None, prefixes)
    assert listed.position == "cell1=1" and listed.count == 1
    timers[0][1]()                           # not yet due: kept
    assert r.conn.in_transaction
    r._held_until = 1.0                      # as if the hold had run out
    timers[0][1]()
    assert not r.conn.in_transaction
    assert r.show_server(one, view, prefixes, None).position == "cell1=2"
    r._held_until = 1.0                      # a due snapshot is renewed by the next read
    _bump_position(path, "cell1", 3)
    assert r.show_server(one, view, prefixes, None).position == "cell1=3"
    r.release()
    r.conn.close()


def _rename_without_position(path: str, uuid: str, name: str) -> None:
    """A commit that changes a row and no position (as a drift repair may)."""
    from replica.store.connection import open_writer
    conn = open_writer(path)
    with conn:
        conn.execute("UPDATE servers SET brief = ? WHERE uuid = ?",
                     (json.dumps({"id": uuid, "name": name})[:-1], uuid))
    conn.close()


def test_a_list_page_is_kept_until_anything_is_committed(tmp_path):
    path = str(tmp_path / "r.db")
    servers = [E.server(n) for n in range(1, 4)]
    E.fill_replica(path, [("cell1", s) for s in servers], [], {"cell1": 3})
    r = Reader(open_reader(path))
    query, prefixes = ServerQuery(project_id=None), Prefixes("s", "b")
    first = r.list_servers(query, None, prefixes)
    again = r.list_servers(query, None, prefixes)
    # Nothing committed: the kept page, from one statement that read no item.
    assert again.body is first.body and again.count == 3 and again.statements == 1
    assert again.last_id == first.last_id and again.position == "cell1=3"
    # Another page (other prefixes, another limit) is another statement's page.
    other = r.list_servers(query, None, Prefixes("t", "c"))
    assert other.body is not first.body and b'"href":"t/servers/' in other.body
    _rename_without_position(path, servers[0]["uuid"], "renamed")
    changed = r.list_servers(query, None, prefixes)
    assert changed.body is not first.body
    assert "renamed" in [s["name"] for s in json.loads(changed.body + b"}")["servers"]]
    _bump_position(path, "cell1", 4)
    moved = r.list_servers(query, None, prefixes)
    assert moved.position == "cell1=4" and moved.body == changed.body
    r.conn.close()


def test_in_a_held_snapshot_a_kept_page_is_served_without_a_statement(tmp_path):
    """Once a statement has read in the held snapshot, a page kept from the same data
    (the pager's data version) is served as it is: no statement. A commit is seen by
    the next snapshot's statement, and the page is built again from it."""
    path = str(tmp_path / "r.db")
    servers = [E.server(n) for n in range(1, 4)]
    E.fill_replica(path, [("cell1", s) for s in servers], [], {"cell1": 3})
    r = Reader(open_reader(path))
    timers = []
    r.hold_snapshots(60.0, lambda delay, fn: timers.append((delay, fn)))
    query, prefixes = ServerQuery(project_id=None), Prefixes("s", "b")
    first = r.list_servers(query, None, prefixes)
    assert first.statements == 1 and first.position == "cell1=3"
    again = r.list_servers(query, None, prefixes)
    assert again.statements == 0 and again.body is first.body
    assert (again.count, again.last_id, again.position, again.marker_found) == (
        3, first.last_id, "cell1=3", True)
    marked = r.list_servers(ServerQuery(project_id=None, marker="nope"), None, prefixes)
    marked_again = r.list_servers(ServerQuery(project_id=None, marker="nope"), None,
                                  prefixes)
    assert marked_again.statements == 0 and not marked_again.marker_found
    _rename_without_position(path, servers[0]["uuid"], "renamed")
    # The held snapshot does not see the commit: its page still holds.
    assert r.list_servers(query, None, prefixes).body is first.body
    r._held_until = 1.0                      # as if the hold had run out
    changed = r.list_servers(query, None, prefixes)
    assert changed.statements == 1 and changed.body is not first.body
    assert "renamed" in [s["name"] for s in json.loads(changed.body + b"}")["servers"]]
    assert r.list_servers(query, None, prefixes).statements == 0
    # A page kept in an earlier snapshot is served in a later one only while nothing
    # was committed in between.
    r.release()
    other = r.show_server(servers[1]["uuid"], render.ServerView(), prefixes, None)
    assert other.body and r.list_servers(query, None, prefixes).statements == 0
    r.release()
    _bump_position(path, "cell1", 4)
    r.show_server(servers[1]["uuid"], render.ServerView(), prefixes, None)
    moved = r.list_servers(query, None, prefixes)
    assert moved.statements == 1 and moved.position == "cell1=4"
    r.release()
    r.conn.close()


def test_kept_pages_stay_within_their_budget(tmp_path, monkeypatch):
    path = str(tmp_path / "r.db")
    E.fill_replica(path, [("cell1", E.server(n)) for n in range(1, 6)], [], {"cell1": 5})
    r = Reader(open_reader(path))
    one_page = len(r.list_servers(ServerQuery(project_id=None, limit=5), None,
                                  Prefixes("s", "b")).body)
    monkeypatch.setattr(reader_mod, "PAGE_CACHE_BYTES", 3 * one_page)
    for n in range(6):
        r.list_servers(ServerQuery(project_id=None, limit=5), None, Prefixes(f"s{n}", "b"))
        assert r._pages.bytes <= 3 * one_page + 16
    assert 1 <= len(r._pages) <= 3
    r.conn.close()


def test_servers_created_in_the_same_second_list_by_uuid_ascending(tmp_path):
    """Nova's order across cells is created_at descending, then the uuid ascending (a
    MariaDB cell's stamps have whole seconds, so ties are common); keyset paging over
    the ties loses and repeats nothing."""
    path = str(tmp_path / "ties.db")
    servers = [("cell1" if n % 2 else "cell2",
                E.server(n, created_at=E.stamp(1, n // 4, 0))) for n in range(12)]
    E.fill_replica(path, servers, [], {"cell1": 1, "cell2": 1, "flavors": 1})
    reader = Reader(open_reader(path))
    try:
        by_uuid = sorted((e for _cell, e in servers), key=lambda e: e["uuid"])
        expected = [e["uuid"] for e in sorted(by_uuid, key=lambda e: e["created_at"],
                                              reverse=True)]     # a stable sort
        seen, marker = [], None
        while True:
            result = reader.list_servers(ServerQuery(project_id=E.PROJECT, limit=5,
                                                     marker=marker), None, Prefixes("s", "b"))
            page = [s["id"] for s in json.loads(result.body + b"}")["servers"]]
            seen += page
            if result.count < 5:
                break
            marker = result.last_id
        assert seen == expected
    finally:
        reader.conn.close()


def test_a_detail_page_with_a_server_never_updated_is_not_kept(tmp_path):
    """Such a server's "updated" is the time of the request (as in nova-api): a kept page
    would go on showing the time it was built."""
    path = str(tmp_path / "r.db")
    E.fill_replica(path, [("cell1", E.server(1, updated_at=None)), ("cell1", E.server(2))],
                   [], {"cell1": 2})
    r = Reader(open_reader(path))
    try:
        query, prefixes = ServerQuery(project_id=None), Prefixes("s", "b")
        detail = r.list_servers(query, render.ServerView(), prefixes)
        assert detail.count == 2 and not r._pages
        brief = r.list_servers(query, None, prefixes)
        assert brief.count == 2 and len(r._pages) == 1    # no "updated" in a brief list
        # the newest server alone: updated, so its page is kept
        one = r.list_servers(ServerQuery(project_id=None, limit=1), render.ServerView(),
                             prefixes)
        assert one.count == 1 and len(r._pages) == 2
    finally:
        r.conn.close()


def _build_request(n: int, **over) -> dict:
    """A server that is still a build request (only in Nova's API database): no
    instance name, no host, BUILD."""
    return E.server(n, instance_name="", host=None, node=None, vm_state="building",
                    power_state=0, launched_at=None, **over)


def _pages(reader, query_of, limit: int) -> list[str]:
    """Every server id, following the markers page by page."""
    seen, marker = [], None
    while True:
        result = reader.list_servers(query_of(limit=limit, marker=marker), None,
                                     Prefixes("s", "b"))
        assert result.marker_found
        page = [s["id"] for s in json.loads(result.body + b"}")["servers"]]
        assert len(page) == result.count <= limit
        seen += page
        if result.count < limit:
            return seen
        marker = result.last_id


@pytest.mark.parametrize("sort", [
    (("created_at", "desc"), ("uuid", "asc")),
    (("created_at", "asc"), ("uuid", "asc")),
    (("display_name", "asc"), ("uuid", "asc")),
    (("display_name", "desc"), ("uuid", "asc")),
])
def test_build_requests_are_listed_before_every_cells_servers(tmp_path, sort):
    """Nova (compute.api.API.get_all) lists the build requests first, sorted among
    themselves, then the cells' servers, whatever the sort; a marker that is a build
    request goes on with the build requests after it and then the cells' servers, a
    marker in a cell with the cells' servers after it; limits count both."""
    path = str(tmp_path / "building.db")
    # build requests neither the newest nor the oldest, names among the others'
    cells = [("cell1" if n % 2 else "cell0",
              E.server(n, created_at=E.stamp(1, 10 * n, 0), display_name=f"vm-{n * 2}"))
             for n in range(1, 7)]
    requested = [("flavors", _build_request(n, created_at=E.stamp(1, 10 * (n - 10) + 5, 0),
                                            display_name=f"vm-{(n - 10) * 2 + 1}"))
                 for n in range(11, 14)]
    E.fill_replica(path, cells + requested, [], {"cell0": 1, "cell1": 1, "flavors": 1})

    def ordered(group):
        rows = [e for _cell, e in group]
        for column, direction in reversed(sort):
            rows.sort(key=lambda e: e[column], reverse=direction == "desc")
        return [e["uuid"] for e in rows]

    expected = ordered(requested) + ordered(cells)
    reader = Reader(open_reader(path))
    try:
        def query_of(**paging):
            return ServerQuery(project_id=E.PROJECT, sort=sort, **paging)

        for limit in (1, 2, 3, 4, 1000):
            assert _pages(reader, query_of, limit) == expected, limit
        # the marker the last build request: the cells' servers from the first
        after = reader.list_servers(query_of(limit=2, marker=expected[2]), None,
                                    Prefixes("s", "b"))
        assert [s["id"] for s in json.loads(after.body + b"}")["servers"]] == expected[3:5]
        # the marker a cell's server: no build request follows it
        last = reader.list_servers(query_of(limit=1000, marker=expected[4]), None,
                                   Prefixes("s", "b"))
        assert [s["id"] for s in json.loads(last.body + b"}")["servers"]] == expected[5:]
        missing = reader.list_servers(query_of(limit=5, marker=E.server(99)["uuid"]), None,
                                      Prefixes("s", "b"))
        assert not missing.marker_found and missing.count == 0
    finally:
        reader.conn.close()


def test_changes_since_lists_every_build_request(tmp_path):
    """Nova's build requests ignore changes-since and changes-before (the filter names
    no attribute of theirs): listed whatever the times asked for."""
    path = str(tmp_path / "since.db")
    E.fill_replica(path, [("cell1", E.server(1, updated_at=E.stamp(3))),
                          ("cell1", E.server(2, updated_at=E.stamp(5))),
                          ("flavors", _build_request(3, updated_at=None))],
                   [], {"cell1": 2, "flavors": 1})
    reader = Reader(open_reader(path))
    try:
        def listed(**times) -> list[str]:
            query = ServerQuery(project_id=E.PROJECT, deleted=None, **times)
            result = reader.list_servers(query, None, Prefixes("s", "b"))
            return [s["id"] for s in json.loads(result.body + b"}")["servers"]]

        building, old, new = (E.server(n)["uuid"] for n in (3, 1, 2))
        assert listed(changes_since=E.stamp(4)) == [building, new]
        assert listed(changes_since=E.stamp(9)) == [building]
        assert listed(changes_before=E.stamp(4)) == [building, old]
        assert listed(changes_since=E.stamp(2), limit=2) == [building, new]
        assert listed(changes_since=E.stamp(2), limit=1, marker=building) == [new]
    finally:
        reader.conn.close()


@pytest.mark.parametrize("project", [E.PROJECT, None])
def test_server_lists_walk_their_index(replica_file, project):
    """The default order without a marker (the hot path) is one walk of the list index,
    no sort; with a marker each part is a range of that index from the marker on."""
    from replica.store.reader import build_server_list
    index = "servers_project_created" if project else "servers_created"
    conn = open_reader(replica_file)

    def plan(query) -> list[str]:
        sql, extra = build_server_list(query, render.ServerView())
        params = ["s", "s/", "b", "b/", query.marker, query.limit, None, *extra, None]
        return [row[-1] for row in conn.execute(
            "EXPLAIN QUERY PLAN " + sql, params[:reader_mod._parameter_count(sql)])]

    try:
        steps = plan(ServerQuery(project_id=project))
        walks = [s for s in steps if s.startswith("SEARCH servers USING")
                 or s.startswith("SCAN servers")]
        assert len(walks) == 1 and f"INDEX {index} (" in walks[0], steps
        assert not any("TEMP B-TREE" in s for s in steps), steps
        steps = plan(ServerQuery(project_id=project, marker=E.server(1)["uuid"]))
        ranges = [s for s in steps if f"INDEX {index} (" in s]
        assert len(ranges) == 2, steps
        assert "in_cell=? AND created_at<?" in ranges[0], steps
        assert not any("TEMP B-TREE" in s or s.startswith("SCAN servers") for s in steps), steps
    finally:
        conn.close()


def test_a_host_status_in_a_list_with_deleted_servers_is_the_first_of_its_host(tmp_path):
    """nova-api works a host's status out once per page, from the first server listed on
    that host; a deleted server has no service to ask: when it comes first, its host's
    servers on the page show "", and when a live one comes first, its status shows on
    the deleted ones too (seen on both of Nova's database backends)."""
    path = str(tmp_path / "hosts.db")
    servers = [
        E.server(1, host="h1", host_status="UP"),                        # oldest
        E.server(2, host="h1", host_status="", deleted=True, vm_state="deleted"),
        E.server(3, host="h2", host_status="UP"),
        E.server(4, host="h2", host_status="", deleted=True, vm_state="deleted"),
        E.server(5, host="h2", host_status="UP"),                        # newest
    ]
    E.fill_replica(path, [("cell1", e) for e in servers], [], {"cell1": 1, "flavors": 1})
    reader = Reader(open_reader(path))
    view = render.ServerView(100, True, False)
    try:
        def statuses(**query):
            result = reader.list_servers(ServerQuery(project_id=None, **query), view,
                                         Prefixes("s", "b"))
            return [(s["name"], s["host_status"])
                    for s in json.loads(result.body + b"}")["servers"]]

        # newest first: h2's first is live (server-5), h1's first is deleted (server-2)
        assert statuses(deleted=None) == [
            ("server-5", "UP"), ("server-4", "UP"), ("server-3", "UP"),
            ("server-2", ""), ("server-1", "")]
        assert statuses(deleted=True) == [("server-4", ""), ("server-2", "")]
        # without deleted servers nothing changes: each shows its own
        assert statuses() == [("server-5", "UP"), ("server-3", "UP"), ("server-1", "UP")]
    finally:
        reader.conn.close()
