"""Instance actions travel like servers: the simulator records them as Nova does, the
outbox triggers publish them (an event changes its action), ingest renders them into
the replica, verify agrees, a resync swaps them in, archiving removes them."""

from __future__ import annotations

from replica import feed, render
from replica.cell import connection as cell_connection
from replica.cell import entity
from tests.conftest import wait_for
from tests.replica.conftest import read_rows

COLUMNS = render.INSTANCE_ACTION_COLUMNS


def _cell_actions(db: str) -> dict[str, dict]:
    conn = cell_connection.open_cell_reader(db)
    try:
        conn.execute("BEGIN")
        out = {key: ent for _kind, key, ent in
               entity.iter_entities(conn, [feed.KIND_INSTANCE_ACTION], page=7)}
        conn.execute("ROLLBACK")
        return out
    finally:
        conn.close()


def _assert_actions_converged(replica: str, cell) -> int:
    built = _cell_actions(cell.db)
    stored = {row[0]: list(row) for row in read_rows(
        replica, f"SELECT {', '.join(COLUMNS)} FROM instance_actions WHERE cell = ?",
        (cell.name,))}
    assert set(stored) == set(built)
    seq_at = COLUMNS.index("seq")
    for key, ent in built.items():
        feed.validate_entity(feed.KIND_INSTANCE_ACTION, key, ent)
        fresh = list(render.instance_action_row(cell.name, 0, ent))
        fresh[seq_at] = stored[key][seq_at] = None
        assert stored[key] == fresh, key
    return len(built)


def _converged_eventually(replica: str, cell) -> int:
    """``_assert_actions_converged`` once ingest has committed what it accepted (its status
    shows the accepted position; the group commit follows within milliseconds)."""
    def converged():
        try:
            return _assert_actions_converged(replica, cell)
        except AssertionError:
            return None
    wait_for(converged, 10, what="the replica's instance actions equal the cell's")
    return _assert_actions_converged(replica, cell)


def test_actions_are_published_ingested_verified_and_resynced(make_cell, make_ingest,
                                                              replica_path):
    cell = make_cell("c1")
    cell.populate(40, seed=7)
    cell.start()
    ing = make_ingest([cell.feed()])
    ing.start()
    ing.wait_caught_up([cell])
    cell.churn(600, seed=8, servers=60)
    status = ing.wait_caught_up([cell])
    count = _converged_eventually(replica_path, cell)
    assert count > 0 and status["c1"]["instance_actions"] == count
    # events came with the builds and state changes, newest first
    with_events = [e for e in _cell_actions(cell.db).values() if e["events"]]
    assert with_events
    job = ing.client.wait_job(ing.client.verify("c1"), timeout=60)
    assert job["state"] == "done" and job["result"]["cells"]["c1"]["differing"] == [], job
    # a resync swaps them in unchanged
    job = ing.client.wait_job(ing.client.resync("c1"), timeout=60)
    assert job["state"] == "done", job
    assert _converged_eventually(replica_path, cell) == count


def test_an_event_republishes_its_action_and_archiving_removes_it(make_cell, make_ingest,
                                                                 replica_path):
    cell = make_cell("c1")
    cell.populate(5, seed=9)
    conn = cell_connection.open_cell(cell.db)
    (uuid,) = conn.execute("SELECT uuid FROM instances ORDER BY id LIMIT 1").fetchone()
    with conn:
        conn.execute("INSERT INTO instance_actions (created_at, deleted, action, instance_uuid, "
                     "request_id, user_id, project_id, start_time) VALUES "
                     "('2026-11-03 04:00:00.000000', 0, 'reboot', ?, 'req-1', 'u', 'p', "
                     "'2026-11-03 04:00:00.000000')", (uuid,))
    action_id = conn.last_insert_rowid()
    key = feed.instance_action_key(uuid, action_id)
    cell.start()
    ing = make_ingest([cell.feed()])
    ing.start()
    ing.wait_caught_up([cell])
    with conn:
        conn.execute("INSERT INTO instance_actions_events (created_at, deleted, event, "
                     "action_id, start_time, result, host) VALUES "
                     "('2026-11-03 04:00:01.000000', 0, 'compute_reboot_instance', ?, "
                     "'2026-11-03 04:00:01.000000', NULL, 'compute-1')", (action_id,))
    ing.wait_caught_up([cell])     # accepted; the group commit follows within milliseconds

    def events_stored():
        (events,) = read_rows(replica_path, "SELECT ev_admin_v21 FROM instance_actions "
                                            "WHERE action_key = ?", (key,))[0]
        return '"compute_reboot_instance"' in events

    wait_for(events_stored, 10, what="the action with its new event in the replica")
    with conn:
        conn.execute("DELETE FROM instance_actions_events WHERE action_id = ?", (action_id,))
        conn.execute("DELETE FROM instance_actions WHERE id = ?", (action_id,))
    ing.wait_caught_up([cell])
    wait_for(lambda: not read_rows(replica_path, "SELECT 1 FROM instance_actions WHERE "
                                                 "action_key = ?", (key,)), 10,
             what="the archived action to leave the replica")
    conn.close()
