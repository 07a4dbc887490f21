"""The simulator: every lifecycle operation happens, the population stays near its
target, populate fills N servers (one outbox event each), flavors are Nova's."""

from __future__ import annotations

import re
import threading

from replica import feed
from replica.cell import connection, entity, outbox, rows, simulator


def test_churn_exercises_every_operation_kind(cell_db):
    simulator.populate(cell_db, 40, 3, seed=4)
    counts = simulator.run_simulator(simulator.SimulatorConfig(cell_db, 0, 40, 3, ops=3000,
                                                               seed=4))
    assert set(simulator.OPERATIONS) <= set(counts), set(simulator.OPERATIONS) - set(counts)
    assert sum(counts.values()) == 3000
    conn = connection.open_cell_reader(cell_db)
    live = conn.execute("SELECT count(*) FROM instances WHERE deleted = 0").fetchone()[0]
    assert 20 <= live <= 60
    states = {s for (s,) in conn.execute("SELECT DISTINCT vm_state FROM instances")}
    assert {"active", "deleted"} <= states
    # soft-deleted rows look like Nova's: deleted = id, deleted_at set, children too
    bad = conn.execute("SELECT count(*) FROM instances WHERE deleted != 0 AND "
                       "(deleted != id OR deleted_at IS NULL OR vm_state != 'deleted')").fetchone()
    assert bad == (0,)
    orphans = conn.execute("SELECT count(*) FROM instance_extra e JOIN instances i "
                           "ON i.uuid = e.instance_uuid WHERE i.deleted != 0 AND e.deleted = 0")
    assert orphans.fetchone() == (0,)
    projects = {p for (p,) in conn.execute("SELECT DISTINCT project_id FROM instances")}
    assert projects <= set(rows.project_ids(3, 4))
    conn.close()


def test_churn_entities_validate_and_the_same_seed_replays_the_same_churn(tmp_path):
    results = []
    for name in ("a", "b"):
        db = str(tmp_path / f"{name}.db")
        outbox.init_cell_db(db, name)
        counts = simulator.run_simulator(simulator.SimulatorConfig(db, 0, 30, 2, ops=400, seed=8))
        conn = connection.open_cell_reader(db)
        uuids = [u for (u,) in conn.execute("SELECT uuid FROM instances ORDER BY uuid")]
        for key, value in entity.build_servers(conn, uuids).items():
            feed.validate_entity(feed.KIND_SERVER, key, value)
        results.append((counts, uuids))
        conn.close()
    assert results[0] == results[1]


def test_a_stop_event_ends_the_churn(cell_db):
    stop = threading.Event()
    out = {}
    thread = threading.Thread(target=lambda: out.update(simulator.run_simulator(
        simulator.SimulatorConfig(cell_db, 200, 20, 2, seed=1), stop)))
    thread.start()
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def test_populate_fills_n_active_servers_with_one_event_each(cell_db):
    seen = []
    simulator.populate(cell_db, 2500, 5, seed=3, progress=lambda done, total: seen.append(done))
    assert seen == [2500]
    conn = connection.open_cell_reader(cell_db)
    assert conn.execute("SELECT count(*), count(DISTINCT uuid), min(vm_state), max(vm_state), "
                        "min(power_state), count(host), count(launched_at) FROM instances"
                        ).fetchone() == (2500, 2500, "active", "active", 1, 2500, 2500)
    projects = [p for (p,) in conn.execute("SELECT DISTINCT project_id FROM instances")]
    assert "demo" in projects and len(projects) == 5
    assert all(p == "demo" or re.fullmatch("[0-9a-f]{32}", p) for p in projects)
    events = outbox.read_events(conn, 0, 10_000)
    uuids = {u for (u,) in conn.execute("SELECT uuid FROM instances")}
    nodes = {u for (u,) in conn.execute("SELECT uuid FROM compute_nodes")}
    services = {u for (u,) in conn.execute("SELECT uuid FROM services")}
    # one event per server, besides one per compute node and one per service
    assert [s for s, _k, _key in events] == list(range(
        1, 2501 + len(nodes) + len(services)))
    assert {key for _s, kind, key in events if kind == "server"} == uuids
    assert {key for _s, kind, key in events if kind == "hypervisor"} == nodes
    assert {key for _s, kind, key in events if kind == "service"} == services
    # the triggers are back after the bulk load
    conn.close()
    conn = connection.open_cell(cell_db)
    conn.execute("UPDATE instances SET display_name = 'x' WHERE id = 1")
    assert outbox.outbox_head(conn) == 2501 + len(nodes) + len(services)
    variety = conn.execute("SELECT count(DISTINCT instance_type_id), count(DISTINCT image_ref), "
                           "count(DISTINCT host) FROM instances").fetchone()
    assert variety[0] >= 5 and variety[1] >= 5 and variety[2] >= 10
    conn.close()


def test_populate_is_deterministic_for_a_seed(tmp_path):
    found = []
    for name in ("a", "b"):
        db = str(tmp_path / f"{name}.db")
        simulator.populate(db, 50, 3, seed=11)
        conn = connection.open_cell_reader(db)
        found.append(conn.execute("SELECT uuid, project_id, display_name FROM instances "
                                  "ORDER BY id").fetchall())
        conn.close()
    assert found[0] == found[1] and len(found[0]) == 50


def test_project_ids():
    ids = rows.project_ids(4, 7)
    assert ids[0] == "demo" and len(set(ids)) == 4
    assert all(re.fullmatch("[0-9a-f]{32}", p) for p in ids[1:])
    assert rows.project_ids(4, 7) == ids and rows.project_ids(4, 8) != ids


def test_seed_flavors_writes_nova_like_defaults_once(tmp_path):
    db = str(tmp_path / "flavors.db")
    outbox.init_cell_db(db, "flavors", flavors=True)
    simulator.seed_flavors(db)
    simulator.seed_flavors(db)
    conn = connection.open_cell_reader(db)
    assert conn.execute("SELECT flavorid, name FROM flavors WHERE flavorid IN "
                        "('1','2','3','4','5') ORDER BY flavorid").fetchall() == [
        ("1", "m1.tiny"), ("2", "m1.small"), ("3", "m1.medium"), ("4", "m1.large"),
        ("5", "m1.xlarge")]
    assert conn.execute("SELECT count(DISTINCT flavor_id) FROM flavor_extra_specs").fetchone()[0] >= 2
    assert conn.execute("SELECT f.name, p.project_id FROM flavor_projects p JOIN flavors f "
                        "ON f.id = p.flavor_id").fetchall() == [("p1.private", "demo")]
    assert conn.execute("SELECT is_public FROM flavors WHERE name = 'p1.private'").fetchone() == (0,)
    conn.close()


def test_two_simulators_on_one_cell_both_finish(cell_db):
    simulator.populate(cell_db, 30, 2, seed=1)
    results = {}

    def run(seed):
        results[seed] = simulator.run_simulator(
            simulator.SimulatorConfig(cell_db, 0, 30, 2, ops=400, seed=seed))

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [1, 2]
    assert all(sum(counts.values()) == 400 for counts in results.values())
    conn = connection.open_cell_reader(cell_db)
    seqs = [s for s, _k, _key in outbox.read_events(conn, 0, 1_000_000)]
    assert seqs == list(range(1, len(seqs) + 1))
    conn.close()
