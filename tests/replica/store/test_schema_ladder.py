"""The replica schema ladder: each step once, in order; step 2 sends every cell to resync;
step 4 fills the 2.102 flavor view of the rows already there."""

from __future__ import annotations

import apsw
import pytest

from replica import render
from replica.store import schema
from tests.api import entities as E


def _at_step(path: str, step: int) -> apsw.Connection:
    conn = apsw.Connection(path)
    for number, ddl in enumerate(schema.STEPS[:step], start=1):
        with conn:
            conn.execute(ddl)
            conn.execute(f"PRAGMA user_version = {number}")
    return conn


def test_a_new_database_gets_every_step(tmp_path):
    conn = apsw.Connection(str(tmp_path / "r.db"))
    assert schema.migrate(conn) == len(schema.STEPS) == schema.user_version(conn)
    assert schema.migrate(conn) == len(schema.STEPS)        # a second run changes nothing


def test_step_2_marks_every_position_as_of_another_epoch(tmp_path):
    conn = _at_step(str(tmp_path / "r.db"), 1)
    conn.execute("INSERT INTO positions (cell, epoch, seq, applied_at) VALUES "
                 "('c1', 'e1', 42, 0), ('c2', 'e2', 7, 0)")
    schema.migrate(conn)
    rows = conn.execute("SELECT cell, epoch, seq FROM positions ORDER BY cell").fetchall()
    # The ingest's hello then sees an epoch change and resyncs the cell (its rows hold
    # hashes of the old function), as it does for a rebuilt cell database.
    assert rows == [("c1", "rehash-e1", 42), ("c2", "rehash-e2", 7)]


def test_a_database_newer_than_the_build_is_refused(tmp_path):
    conn = apsw.Connection(str(tmp_path / "r.db"))
    conn.execute(f"PRAGMA user_version = {len(schema.STEPS) + 1}")
    with pytest.raises(RuntimeError, match="newer than this build"):
        schema.migrate(conn)


@pytest.mark.parametrize("flavor", [
    E.flavor("1"),
    E.flavor("x,\"vcpus\":", 'a,"rxtx_factor":"b,"links":', disabled=True, rxtx_factor=0.0,
             swap=512, description="d", extra_specs={"k": ',"vcpus":'}),
    E.flavor("ünï", "ünïcode \\ \"q\"", rxtx_factor=1e-7, is_public=False, projects=["p"]),
], ids=["plain", "member-like-names", "unicode"])
def test_step_4_fills_the_2_102_flavor_view_of_existing_rows(tmp_path, flavor):
    conn = _at_step(str(tmp_path / "r.db"), 3)
    row = render.flavor_row("flavors", 1, flavor)
    before_step_4 = render.FLAVOR_COLUMNS[:-1]
    assert render.FLAVOR_COLUMNS[-1] == "f_detail_v2102"
    conn.execute(f"INSERT INTO flavors ({', '.join(before_step_4)}) VALUES "
                 f"({', '.join('?' * len(before_step_4))})", row[:-1])
    schema.migrate(conn)
    (filled,), = conn.execute("SELECT f_detail_v2102 FROM flavors").fetchall()
    assert filled == row[-1]        # what the render writes for new rows, byte for byte


def test_step_18_keeps_the_fixed_addresses_of_existing_rows(tmp_path):
    """The ip / ip6 filters match fixed addresses only (render version 3): step 18 takes
    the floating ones out of the rows written before, as the render now writes them."""
    conn = _at_step(str(tmp_path / "r.db"), 17)
    servers = [
        E.server(1, network_info=E.network_info("10.1.1.1", floating="8.8.8.8",
                                                ip6="fd00::1")),
        E.server(2, vm_state="building", task_state="spawning",
                 network_info=E.network_info("10.1.1.2", floating="8.8.8.9")),
        E.server(3, network_info=E.network_info("10.1.1.3", ip6="fd00::3")),
        E.server(4, network_info=[]),
    ]
    at = render.SERVER_COLUMNS.index("ips")
    marks = ", ".join("?" * len(render.SERVER_COLUMNS))
    wanted = {}
    for server in servers:
        row = list(render.server_row("c1", 1, server))
        wanted[server["uuid"]] = row[at]
        floating = [ip["address"] for vif in server["network_info"]
                    for subnet in vif["network"]["subnets"] for fixed in subnet["ips"]
                    for ip in fixed["floating_ips"]]
        row[at] = " ".join([*row[at].split(), *floating])     # as render version 2 wrote
        conn.execute(f"INSERT INTO servers ({', '.join(render.SERVER_COLUMNS)}) "
                     f"VALUES ({marks})", row)
    assert wanted[servers[0]["uuid"]] == "10.1.1.1 fd00::1"
    schema.migrate(conn)
    assert dict(conn.execute("SELECT uuid, ips FROM servers").fetchall()) == wanted
