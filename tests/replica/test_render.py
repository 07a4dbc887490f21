"""replica.render: Nova's status mapping and view rules, the row layout against the
schema, and the stored fragments against the request-time rendering for every view."""

from __future__ import annotations

import datetime
import hashlib
import json

import pytest

from replica import feed, render
from replica.store.connection import open_writer
from tests.api import entities as E

MAX_MINOR = 104          # Nova 34's maximum microversion, the appliance's


@pytest.mark.parametrize("vm_state,task_state,status", [
    ("active", None, "ACTIVE"), ("active", "rebooting", "REBOOT"),
    ("active", "reboot_started_hard", "HARD_REBOOT"), ("active", "resize_prep", "RESIZE"),
    ("active", "updating_password", "PASSWORD"), ("active", "migrating", "MIGRATING"),
    ("active", "image_snapshot", "ACTIVE"), ("building", "spawning", "BUILD"),
    ("stopped", None, "SHUTOFF"), ("stopped", "rebuilding", "REBUILD"),
    ("resized", None, "VERIFY_RESIZE"), ("resized", "resize_reverting", "REVERT_RESIZE"),
    ("paused", None, "PAUSED"), ("suspended", None, "SUSPENDED"), ("rescued", None, "RESCUE"),
    ("error", None, "ERROR"), ("error", "rebuild_spawning", "REBUILD"),
    ("deleted", None, "DELETED"), ("soft-delete", None, "SOFT_DELETED"),
    ("shelved", None, "SHELVED"), ("shelved_offloaded", None, "SHELVED_OFFLOADED"),
    ("nonsense", None, "UNKNOWN"), (None, None, "UNKNOWN"),
])
def test_status_from_state(vm_state, task_state, status):
    assert render.status_from_state(vm_state, task_state) == status


def test_deleted_entity_is_deleted_whatever_its_state():
    assert render.server_status(E.server(1, deleted=True)) == "DELETED"


def test_states_for_statuses():
    assert render.states_for_statuses(["ACTIVE"]) == (["active"], ["default"])
    vm, task = render.states_for_statuses(["reboot"])
    assert vm == ["active"] and task == ["reboot_pending", "reboot_started", "rebooting"]
    assert render.states_for_statuses(["nope"]) == ([], [])


def test_host_id_and_times():
    expected = hashlib.sha224(("proj" + "host1").encode()).hexdigest()
    assert render.host_id("proj", "host1") == expected
    assert render.host_id("proj", None) == ""
    assert render.isotime("2026-11-01T04:01:32.123456") == "2026-11-01T04:01:32Z"
    assert render.plain_time(None) is None


@pytest.mark.parametrize("stored,shown", [
    ("2026-11-01T04:01:32.123456", "2026-11-01T04:01:32.123456"),
    ("2026-11-01T04:01:32.000001", "2026-11-01T04:01:32.000001"),
    # oslo.serialization writes a datetime with '%Y-%m-%dT%H:%M:%S.%f': zero microseconds
    # (every stamp of a MariaDB cell) are printed, not dropped.
    ("2026-11-01T04:01:32.000000", "2026-11-01T04:01:32.000000"),
    ("2026-11-01 04:01:32.000000", "2026-11-01T04:01:32.000000"),
    ("2026-11-01T04:01:32", "2026-11-01T04:01:32.000000"),
    ("2026-11-01T04:01:32.5", "2026-11-01T04:01:32.500000"),
])
def test_usage_times_as_nova_serializes_them(stored, shown):
    assert render.plain_time(stored) == shown
    doc = render.render_server_document(E.server(1, launched_at=stored, terminated_at=stored),
                                        render.ServerView(104, False, True))
    assert doc["OS-SRV-USG:launched_at"] == shown
    assert doc["OS-SRV-USG:terminated_at"] == shown
    # created / updated / fault created are utils.isotime: seconds and 'Z', either way.
    doc = render.render_server_document(
        E.server(1, created_at=stored, updated_at=stored, vm_state="error",
                 fault={"code": 404, "message": "m", "details": None, "created": stored}),
        render.ServerView(104, False, True))
    assert doc["created"] == doc["updated"] == doc["fault"]["created"] == "2026-11-01T04:01:32Z"


def test_usage_times_match_oslo_serialization():
    """The serializer Nova's API answers with (oslo.serialization's jsonutils, pinned in
    requirements-dev.txt) agrees on both cases."""
    from oslo_serialization import jsonutils
    for micro in (0, 7, 123456):
        stamp = datetime.datetime(2026, 11, 1, 4, 1, 32, micro)
        expected = json.loads(jsonutils.dumps({"t": stamp}))["t"]
        assert render.plain_time(stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")) == expected


def _table_columns(tmp_path, table: str) -> tuple[str, ...]:
    conn = open_writer(str(tmp_path / "schema.db"))
    try:
        return tuple(r[1] for r in conn.execute(f"PRAGMA table_info({table})"))
    finally:
        conn.close()


def test_columns_match_the_schema(tmp_path):
    assert render.SERVER_COLUMNS == _table_columns(tmp_path, "servers")
    assert render.FLAVOR_COLUMNS == _table_columns(tmp_path, "flavors")


def test_rows_have_the_columns_and_hashes():
    entity = E.server(3)
    row = dict(zip(render.SERVER_COLUMNS, render.server_row("cell1", 42, entity)))
    assert len(row) == len(render.SERVER_COLUMNS)
    assert row["uuid"] == entity["uuid"] and row["cell"] == "cell1" and row["seq"] == 42
    assert row["entity_hash"] == feed.entity_hash(entity)
    assert row["bucket"] == feed.bucket_of(entity["uuid"])
    assert row["status"] == "ACTIVE" and row["flavor_id"] == "1"
    assert row["ips"] == "192.168.1.30"
    assert json.loads(row["tags"]) == []
    assert json.loads(row["brief"] + "}") == {"id": entity["uuid"], "name": "server-3"}
    assert row["flavor_ref"] == "1" and row["image_ref_id"] == E.IMAGE
    flavor = E.flavor("7")
    frow = dict(zip(render.FLAVOR_COLUMNS, render.flavor_row("flavors", 3, flavor)))
    assert frow["flavorid"] == "7" and frow["entity_hash"] == feed.entity_hash(flavor)


ENTITIES = [
    E.server(0),
    E.server(1, vm_state="error", fault={"code": 500, "message": "m", "details": "tb",
                                         "created": E.stamp(2)}),
    E.server(2, vm_state="error", fault={"code": 404, "message": "m", "details": "d",
                                         "created": E.stamp(2)}),
    E.server(3, vm_state="building", host=None, security_groups=[], image_ref=""),
    E.server(4, deleted=True, vm_state="deleted", locked_by="admin", tags=["a", "b"],
             network_info=E.network_info("10.1.1.1", floating="8.8.8.8", ip6="fd00::1"),
             trusted_image_certificates=["cert-1"], server_groups=["g1"],
             display_name='quote " and \\ and ünïcode',
             host_status=""),        # as the publisher builds it: a deleted server has none
]


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("entity", ENTITIES + [E.server(9, tags=["\x00\x00", "x"],
                                                        metadata={7: 2 ** 70, 8: "int key"})],
                         ids=lambda e: e["display_name"][:8])
def test_row_text_is_the_json_modules_encoding_of_the_pieces(entity):
    """Byte for byte: every stored text is what the json module writes for the pieces."""
    e = entity
    row = dict(zip(render.SERVER_COLUMNS, render.server_row("c", 5, e)))
    image = render.SERVER_FRAGMENTS["d_image_v298"](e)["image"]
    stored = []
    for i, column in enumerate(render.STORED_FRAGMENTS):
        members = _json(render.SERVER_FRAGMENTS[column](e))[1:-1]
        stored.append("{" + members if i == 0 else ("," + members if members else ""))
    assert [row[c] for c in render.STORED_FRAGMENTS] == stored
    assert row["brief"] == _json({"id": e["uuid"], "name": e["display_name"]})[:-1]
    assert row["image_props"] == _json(image.get("properties", {}) if image else {})
    assert row["image_ref_id"] == (_json(image["id"])[1:-1] if image else None)
    assert row["flavor_ref"] == _json(str(e["flavor"]["flavorid"]))[1:-1]
    assert row["tags"] == _json(list(e["tags"]))
    assert row["ips"] == " ".join(render.all_ips(e))
    assert row["status"] == render.server_status(e)


SELF = 'http://h:1/base/v2.1/p"q'      # a prefix that needs escaping inside JSON
BOOKMARK = 'http://h:1/base/p"q'


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    from replica.store.reader import Reader
    from replica.store.connection import open_reader
    path = str(tmp_path_factory.mktemp("render") / "replica.db")
    E.fill_replica(path, [("c", e) for e in ENTITIES], [E.flavor("1"), FLAVOR_2],
                   {"c": 1})
    r = Reader(open_reader(path))
    yield r
    r.conn.close()


def _prefixes():
    from replica.store.reader import Prefixes
    return Prefixes(json.dumps(SELF)[1:-1], json.dumps(BOOKMARK)[1:-1])


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e["display_name"][:8])
def test_stored_rendering_equals_request_time_rendering_for_every_view(reader, entity):
    from replica.store.reader import ServerQuery
    for minor in range(1, MAX_MINOR + 1):
        for admin in (False, True):
            for show in (False, True):
                view = render.ServerView(minor, admin, show)
                expected = render.render_server_document(entity, view, SELF, BOOKMARK)
                if show:
                    body = reader.show_server(entity["uuid"], view, _prefixes(), None).body
                    got = json.loads(body) if body else None
                    if entity["deleted"]:
                        assert got is None      # a deleted server is not shown
                        continue
                else:
                    query = ServerQuery(project_id=None, deleted=None,
                                        exact={"uuid": (entity["uuid"],)})
                    result = reader.list_servers(query, view, _prefixes())
                    got = json.loads(result.body + b"}")["servers"][0]
                assert got == expected, view
    brief = reader.list_servers(ServerQuery(project_id=None, deleted=None,
                                            exact={"uuid": (entity["uuid"],)}),
                                None, _prefixes())
    assert json.loads(brief.body + b"}")["servers"] == [
        render.render_server_brief(entity, SELF, BOOKMARK)]


def test_view_rules():
    def doc(entity, minor=1, admin=False, show=True):
        return render.render_server_document(entity, render.ServerView(minor, admin, show))
    error500, error404, building, deleted = ENTITIES[1], ENTITIES[2], ENTITIES[3], ENTITIES[4]
    assert "details" not in doc(error500)["fault"]
    assert doc(error500, admin=True)["fault"]["details"] == "tb"
    assert doc(error404)["fault"]["details"] == "d"
    assert "fault" not in doc(ENTITIES[0])
    assert doc(building)["addresses"] == {} and "security_groups" not in doc(building)
    assert doc(building)["image"] == ""
    assert doc(deleted)["status"] == "DELETED" and "progress" not in doc(deleted)
    assert doc(deleted, 9)["locked"] is True
    assert [a["OS-EXT-IPS:type"] for a in doc(deleted)["addresses"]["private"]] == [
        "fixed", "fixed", "floating"]
    assert "server_groups" not in doc(deleted, 71, show=False)
    assert doc(deleted, 71)["server_groups"] == ["g1"]
    assert "host_status" not in doc(deleted, 16) and "host_status" in doc(deleted, 16, True)
    assert "OS-EXT-SRV-ATTR:hostname" in doc(deleted, 90)
    assert "OS-EXT-SRV-ATTR:user_data" in doc(deleted, 3, True)
    assert "OS-EXT-SRV-ATTR:user_data" not in doc(deleted, 2, True)


def test_link_prefixes_are_substituted():
    entity = E.server(0)
    d = render.render_server_document(entity, render.ServerView(1), "https://a/v2.1/p",
                                      "https://a/p")
    assert d["links"][0]["href"] == f"https://a/v2.1/p/servers/{entity['uuid']}"
    assert d["image"]["links"][0]["href"] == f"https://a/p/images/{E.IMAGE}"
    assert d["flavor"]["links"][0]["href"] == "https://a/p/flavors/1"


FLAVOR_2 = E.flavor("2", swap=512, description="d", rxtx_factor=0.0)


@pytest.mark.parametrize("flavor", [E.flavor("1"), FLAVOR_2], ids=["1", "2"])
def test_flavor_stored_rendering_for_every_view(reader, flavor):
    from replica.store.reader import FlavorQuery
    for minor in range(1, MAX_MINOR + 1):
        for detail in (False, True):
            view = render.FlavorView(minor, detail)
            expected = render.render_flavor_document(flavor, view, SELF, BOOKMARK)
            if detail:
                body = reader.show_flavor(flavor["flavorid"], view, _prefixes(), None).body
                assert json.loads(body) == expected
            listed = reader.list_flavors(FlavorQuery(admin=True, is_public=None), view,
                                         _prefixes())
            docs = {d["id"]: d for d in json.loads(listed.body + b"}")["flavors"]}
            assert docs[flavor["flavorid"]] == expected
    d = render.render_flavor_document(flavor, render.FlavorView(1, True))
    assert d["swap"] == (flavor["swap"] or "")
    assert render.render_flavor_document(flavor, render.FlavorView(75, True))["swap"] == (
        flavor["swap"])


def test_flavor_view_from_2_102():
    """2.102 drops OS-FLV-DISABLED:disabled and rxtx_factor from the flavor view and keeps
    every other member in its place."""
    flavor = E.flavor("9", 'n"a,"vcpus":1', disabled=True, rxtx_factor=2.5,
                      description="d")
    before = render.render_flavor_document(flavor, render.FlavorView(101, True))
    after = render.render_flavor_document(flavor, render.FlavorView(102, True))
    assert before["OS-FLV-DISABLED:disabled"] is True and before["rxtx_factor"] == 2.5
    assert list(after) == [k for k in before
                           if k not in ("OS-FLV-DISABLED:disabled", "rxtx_factor")]
    assert all(after[k] == before[k] for k in after)
    assert render.render_flavor_document(flavor, render.FlavorView(104, False)) == (
        render.render_flavor_document(flavor, render.FlavorView(101, False)))


def test_a_server_never_updated_shows_the_request_time_as_updated(tmp_path):
    """Nova prints the request's time as "updated" when updated_at is unset (a server
    buried in cell0 by one insert): the stored document holds null, the read statement
    its own time; the request-time rendering does the same. A metadata key "updated"
    is left alone."""
    import datetime
    from replica.store.connection import open_reader
    from replica.store.reader import Reader, ServerQuery
    never = E.server(5, updated_at=None, metadata={"updated": "no"})
    path = str(tmp_path / "replica.db")
    E.fill_replica(path, [("c", never), ("c", E.server(6))], [E.flavor("1")], {"c": 1})

    def near_now(stamp: str) -> bool:
        moment = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
        return abs((datetime.datetime.utcnow() - moment).total_seconds()) < 10

    reader = Reader(open_reader(path))
    try:
        view = render.ServerView(100, True, True)
        shown = json.loads(reader.show_server(never["uuid"], view, _prefixes(), None).body)
        listed = json.loads(reader.list_servers(
            ServerQuery(project_id=None, deleted=None), render.ServerView(100, True, False),
            _prefixes()).body + b"}")["servers"]
    finally:
        reader.conn.close()
    assert near_now(shown["updated"]) and shown["metadata"] == {"updated": "no"}
    by_id = {s["id"]: s for s in listed}
    assert near_now(by_id[never["uuid"]]["updated"])
    assert by_id[E.server(6)["uuid"]]["updated"] == E.server(6)["updated_at"][:19] + "Z"
    assert near_now(render.render_server_document(never, view)["updated"])
