"""What a server entity reads beyond the cell's tables: Nova's liveness rule for host_status,
security group names from Neutron (cached, last known names kept while Neutron is down),
and the publisher's source carrying such changes into the cell's outbox."""

from __future__ import annotations

import datetime
import time

import apsw
import pytest

from replica.cell import entity, outbox, sqlite_source
from replica.cell.neutron import SecurityGroupNames
from replica.cell.simulator import populate
from tests.realnova.nova_api import NeutronStub


def _stamp(seconds_ago: float) -> str:
    moment = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        seconds=seconds_ago)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def test_service_is_up_follows_novas_db_driver():
    now = time.time()
    assert entity.service_is_up(_stamp(10), _stamp(1000), now, 60)
    assert not entity.service_is_up(_stamp(61), _stamp(1), now, 60)
    assert entity.service_is_up(None, _stamp(30), now, 60)        # never reported: created_at
    assert not entity.service_is_up(None, _stamp(90), now, 60)
    assert entity.service_is_up(_stamp(-30), None, now, 60)       # a clock ahead: either side
    assert not entity.service_is_up(None, None, now, 60)


@pytest.fixture
def cell(tmp_path):
    path = str(tmp_path / "cell.db")
    outbox.init_cell_db(path, "cell1")
    populate(path, 12, 2, seed=3)
    return path


def _statuses(path, reach) -> dict[str, str]:
    conn = apsw.Connection(path)
    try:
        uuids = [u for (u,) in conn.execute("SELECT uuid FROM instances")]
        built = entity.build_servers(conn, uuids, reach)
        hosts = dict(conn.execute("SELECT uuid, host FROM instances"))
    finally:
        conn.close()
    return {hosts[u]: e["host_status"] for u, e in built.items()}


def test_host_status_unknown_when_the_service_stopped_reporting(cell):
    conn = apsw.Connection(cell)
    host = conn.execute("SELECT host FROM instances ORDER BY id LIMIT 1").fetchone()[0]
    with conn:
        conn.execute("UPDATE services SET last_seen_up = ?", (_stamp(5),))
        conn.execute("UPDATE services SET last_seen_up = ? WHERE host = ?", (_stamp(120), host))
    conn.close()
    children = frozenset(entity.ALL_CHILDREN)
    assert set(_statuses(cell, children).values()) == {"UP"}          # no rule: as before
    statuses = _statuses(cell, entity.Reach(children, service_down_time=60))
    assert statuses.pop(host) == "UNKNOWN"
    assert set(statuses.values()) == {"UP"}


@pytest.fixture
def neutron():
    stub = NeutronStub().start()
    yield stub
    stub.stop()


def test_security_group_names_from_neutron_and_kept_while_it_is_down(neutron):
    neutron.add_port({"id": "port-1", "device_id": "vm-1", "tenant_id": "p1",
                      "security_group_names": ["default", "web"]})
    neutron.add_port({"id": "port-2", "device_id": "vm-1", "tenant_id": "p1",
                      "security_group_names": ["default"]})
    names = SecurityGroupNames(neutron.url)
    assert names.names(["vm-1", "vm-2"]) == {"vm-1": ["default", "web", "default"],
                                             "vm-2": []}
    neutron.set_port_security_groups("port-2", ["db"])
    assert names.recheck() == ["vm-1"]
    assert names.known["vm-1"] == ["default", "web", "db"]
    neutron.stop()
    assert names.names(["vm-1"]) == {"vm-1": ["default", "web", "db"]}   # last known
    assert names.failures == 1 and names.down
    assert names.names(["vm-1", "vm-3"]) == {"vm-1": ["default", "web", "db"]}
    assert names.failures == 1          # builds do not wait on a Neutron that just failed
    assert names.recheck() == []
    assert names.failures == 2 and names.down


def test_the_publisher_enqueues_the_servers_of_a_host_whose_liveness_changed(cell):
    conn = apsw.Connection(cell)
    with conn:
        conn.execute("UPDATE services SET last_seen_up = ?", (_stamp(5),))
    host = conn.execute("SELECT host FROM instances ORDER BY id LIMIT 1").fetchone()[0]
    on_host = {u for (u,) in conn.execute("SELECT uuid FROM instances WHERE host = ?",
                                          (host,))}
    source = sqlite_source.SqlitePublishingSource(
        cell, "cell1", sqlite_source.ServerOptions(service_down_time=60))
    try:
        head = source.changelog.head()
        source.tick(True)                     # the first look: nothing to compare with
        assert source.changelog.head() == head
        with conn:
            conn.execute("UPDATE services SET last_seen_up = ? WHERE host = ?",
                         (_stamp(120), host))
        head = source.changelog.head()        # the update itself enqueues nothing
        source.carrier.next_liveness = 0.0
        source.tick(True)
        events = source.changelog.events_after(head, 1000)
        assert {key for _seq, kind, key in events if kind == "server"} == on_host
        # and the host's hypervisor, whose state went down
        assert {key for _seq, kind, key in events if kind == "hypervisor"} == {
            u for (u,) in conn.execute("SELECT uuid FROM compute_nodes WHERE host = ?",
                                       (host,))}
        with source.entities.read_view():
            built = source.entities.build("server", sorted(on_host))
        assert {e["host_status"] for e in built.values()} == {"UNKNOWN"}
    finally:
        source.close()
        conn.close()
