"""The replication end to end: publisher processes, ingest as a subprocess, real ipc
sockets, real SQLite files. Each test ends with the replica equal to the cells."""

from __future__ import annotations

import os
import threading

import apsw
import msgpack
import pytest

from replica import feed
from replica.cell import connection as cell_connection
from replica.cell import outbox
from replica.ingest import CellFeed

from tests.conftest import wait_for
from tests.replica.conftest import (assert_converged, assert_positions_consistent,
                                    make_server, read_rows)


def live_cell(make_cell, make_ingest, servers: int, seed: int, cell_options=None,
              **ingest_options):
    """Cell c1 with ``servers`` servers and its publisher, and an ingest caught up with it."""
    c1 = make_cell("c1", **(cell_options or {}))
    c1.populate(servers, seed=seed)
    c1.start()
    ing = make_ingest([c1.feed()], **ingest_options)
    ing.start()
    ing.wait_caught_up([c1])
    return c1, ing


def remove_files(db: str, suffixes: tuple[str, ...]) -> None:
    for suffix in suffixes:
        if os.path.exists(db + suffix):
            os.remove(db + suffix)


def test_two_cells_converge_after_thousands_of_lifecycle_operations(make_cell, make_ingest,
                                                                    replica_path):
    c1, c2 = make_cell("c1"), make_cell("c2")
    c1.populate(300, seed=101)   # seeds make uuids: distinct seeds, distinct servers
    c2.populate(200, seed=202)
    c1.start()
    c2.start()
    ing = make_ingest([c1.feed(), c2.feed()])
    ing.start()
    c1_start = ing.wait_caught_up([c1, c2])["c1"]["seq"]
    churners = [threading.Thread(target=c.churn, args=(2500,),
                                 kwargs={"seed": 303 + n, "rate": 2000})
                for n, c in enumerate((c1, c2))]
    for t in churners:
        t.start()
    # A drift check under churn compares at one consistent point: no false drift.
    wait_for(lambda: ing.cell("c1")["seq"] > c1_start + 500, 60, what="churn under way")
    job = ing.client.wait_job(ing.client.verify(), timeout=60)
    assert job["state"] == "done", job
    assert {name: r["differing"] for name, r in job["result"]["cells"].items()} == \
        {"c1": [], "c2": []}
    for t in churners:
        t.join(120)
    status = ing.wait_caught_up([c1, c2])
    assert assert_converged(replica_path, c1) > 0
    assert assert_converged(replica_path, c2) > 0
    assert_positions_consistent(replica_path)
    assert status["c1"]["dead_letters"] == 0 and status["c2"]["dead_letters"] == 0
    assert status["c1"]["live_once"] and status["c1"]["servers"] == len(c1.entities())
    # The drift check agrees: nothing differs.
    job = ing.client.wait_job(ing.client.verify(), timeout=60)
    assert job["state"] == "done", job
    assert {name: r["differing"] for name, r in job["result"]["cells"].items()} == \
        {"c1": [], "c2": []}


def test_lossy_feed_converges_and_counts_gaps(make_cell, make_ingest, relays, replica_path,
                                              tmp_path):
    c1 = make_cell("c1")
    c1.populate(100, seed=3)
    c1.start()
    relay = relays(c1.feed_url, f"ipc://{tmp_path}/lossy.feed", drop=0.05)
    ing = make_ingest([CellFeed("c1", relay.url, c1.control_url)], **{"replay-limit": 200})
    ing.start()
    ing.wait_caught_up([c1])
    c1.churn(3000, seed=4, rate=1500)
    status = ing.wait_caught_up([c1])
    assert relay.dropped > 0
    assert status["c1"]["gaps"] > 0
    assert status["c1"]["replays"] > 1
    assert_converged(replica_path, c1)


def test_kill_9_in_the_middle_then_restart_converges(make_cell, make_ingest, replica_path):
    c1, ing = live_cell(make_cell, make_ingest, 200, 5, **{"group-commit-ms": 20})
    stop = threading.Event()
    churn = threading.Thread(target=c1.churn, args=(4000,), kwargs={"seed": 6, "rate": 2000,
                                                                    "stop": stop})
    churn.start()
    try:
        start_seq = ing.cell("c1")["seq"]
        wait_for(lambda: ing.cell("c1")["seq"] > start_seq + 500, 30, what="ingest applying")
        ing.proc.kill9()
        positions = assert_positions_consistent(replica_path)
        assert positions["c1"] > start_seq
        ing.start()
    finally:
        churn.join(120)
    ing.wait_caught_up([c1])
    assert_converged(replica_path, c1)
    assert_positions_consistent(replica_path)


def test_replaced_cell_database_is_detected_and_resynced(make_cell, make_ingest, replica_path):
    c1, ing = live_cell(make_cell, make_ingest, 150, 7)
    old_epoch = ing.cell("c1")["epoch"]
    c1.stop()
    remove_files(c1.db, ("", "-wal", "-shm"))
    c1.epoch = outbox.init_cell_db(c1.db, "c1")
    c1.populate(120, seed=8)
    c1.start()
    wait_for(lambda: ing.cell("c1")["epoch"] == c1.epoch, 30, what="new epoch adopted")
    status = ing.wait_caught_up([c1])
    assert status["c1"]["epoch"] != old_epoch
    assert status["c1"]["resyncs"] >= 1
    assert assert_converged(replica_path, c1) == 120
    # A requested resync reports its progress to the job.
    seen = []
    job = ing.client.wait_job(ing.client.resync("c1"), progress=seen.append, timeout=60)
    assert job["state"] == "done" and job["error"] is None, job
    services = c1.services()
    assert services > 0 and job["done"] == job["total"] == (
        120 + c1.compute_nodes() + services)
    assert seen[-1] == job
    assert ing.wait_caught_up([c1])["c1"]["resyncs"] == status["c1"]["resyncs"] + 1
    assert_converged(replica_path, c1)
    with pytest.raises(feed.ControlError) as refused:
        ing.client.resync("nope")
    assert refused.value.error == "unknown_cell"


@pytest.mark.parametrize("record", ["kept", "lost"])
def test_a_publisher_restarted_on_an_older_copy_of_the_cell_is_resynced(
        make_cell, make_ingest, replica_path, record):
    # "kept": the publisher's record of what it published gives the copy a new epoch;
    # "lost" (the record is gone too): the same epoch, and ingest sees the head go back.
    c1, ing = live_cell(make_cell, make_ingest, 100, 21)
    backup = c1.db + ".backup"
    conn = apsw.Connection(c1.db)
    conn.execute(f"VACUUM INTO '{backup}'")         # the same epoch, an older head
    conn.close()
    c1.churn(300, seed=22)
    before = ing.wait_caught_up([c1])["c1"]
    # Back to the copy within a moment, before the appliance could call the cell stale.
    c1.stop()
    remove_files(c1.db, ("-wal", "-shm"))
    os.replace(backup, c1.db)
    if record == "lost":
        os.remove(c1.db + ".published")
    c1.start()
    wait_for(lambda: ing.cell("c1")["resyncs"] > before["resyncs"], 30,
             what="a resync onto the older copy")
    status = ing.wait_caught_up([c1])
    if record == "kept":
        assert status["c1"]["epoch"] != before["epoch"]
    else:
        assert status["c1"]["epoch"] == before["epoch"]
        assert status["c1"]["seq"] < before["seq"]
    assert_converged(replica_path, c1)
    c1.churn(100, seed=23)                 # and what the copy does next is applied
    ing.wait_caught_up([c1])
    assert_converged(replica_path, c1)


def test_offline_longer_than_retention_resyncs_on_return(make_cell, make_ingest, replica_path):
    c1, ing = live_cell(make_cell, make_ingest, 100, 9, {"retention_events": 50})
    ing.stop()
    c1.churn(600, seed=10)
    conn = cell_connection.open_cell(c1.db)
    try:
        while outbox.prune(conn, 50, 3600.0):
            pass
        oldest = outbox.outbox_oldest(conn)
    finally:
        conn.close()
    assert oldest > assert_positions_consistent(replica_path)["c1"] + 1
    ing.start()
    status = ing.wait_caught_up([c1])
    assert status["c1"]["resyncs"] == 1
    assert_converged(replica_path, c1)


def test_malformed_input_is_dead_lettered_and_ingest_goes_on(make_cell, make_ingest, relays,
                                                             replica_path, tmp_path):
    c1 = make_cell("c1")
    c1.populate(50, seed=11)
    c1.start()
    relay = relays(c1.feed_url, f"ipc://{tmp_path}/relay.feed")
    ing = make_ingest([CellFeed("c1", relay.url, c1.control_url)])
    ing.start()
    status = ing.wait_caught_up([c1])
    before = read_rows(replica_path, "SELECT uuid, entity_hash FROM servers ORDER BY uuid")
    epoch, seq = status["c1"]["epoch"], status["c1"]["seq"]
    server = make_server()
    good = feed.encode_events([feed.Event(seq + 1, "server", "u", server["uuid"], server)])
    batch = {"v": feed.FEED_VERSION, "t": "batch", "cell": "c1", "epoch": epoch, "events": good}
    bad_entity = [{**good[0], "e": feed.entity_bytes({**server, "locked": "yes"})}]
    payloads = {
        "garbage": (b"\xc1\xff not msgpack", "malformed"),
        "truncated": (msgpack.packb(batch)[:-9], "malformed"),
        "oversized": (b"\x92" + b"\x00" * (9 * 1024 * 1024), "oversized"),
        "wrong_types": (msgpack.packb({**batch, "events": [{**good[0], "s": "one"}]}),
                        "malformed"),
        "unknown_version": (msgpack.packb({**batch, "v": 1}), "unknown_version"),
        "unknown_cell": (msgpack.packb({**batch, "cell": "elsewhere"}), "unknown_cell"),
        "bad_entity": (msgpack.packb({**batch, "events": bad_entity}), "bad_entity"),
        "entity_not_json": (msgpack.packb({**batch, "events": [{**good[0], "e": b"{\x00"}]}),
                            "bad_entity"),
    }
    # One at a time: PUB drops what a full pipe cannot take, and the oversized one fills it.
    for count, (data, reason) in enumerate(payloads.values(), start=1):
        relay.inject(data)
        got = wait_for(lambda: read_rows(replica_path, "SELECT reason FROM dead_letters "
                                         "ORDER BY id")[count - 1:], 10, what=f"{reason}")
        assert got == [(reason,)]
    assert ing.proc.alive()
    status = ing.wait_caught_up([c1])
    assert status["c1"]["dead_letters"] == len(payloads)
    assert ing.status()["dead_letters"] == len(payloads)
    # Nothing of it reached the replica; the real feed still flows.
    assert read_rows(replica_path, "SELECT uuid, entity_hash FROM servers ORDER BY uuid") == before
    c1.churn(300, seed=12, rate=1000)
    ing.wait_caught_up([c1])
    assert_converged(replica_path, c1)


READER = r"""
import sys, time, apsw
path, cell, stop_path, out_path = sys.argv[1:5]
counts, errors, n = set(), [], 0
conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
conn.set_busy_timeout(5000)
while True:
    try:
        counts.add(conn.execute("SELECT count(*) FROM servers WHERE cell = ?",
                                (cell,)).fetchall()[0][0])
        n += 1
    except Exception as exc:
        errors.append(repr(exc))
    time.sleep(0.003)   # readers share the two cores with ingest
    try:
        open(stop_path).close()
        break
    except FileNotFoundError:
        pass
with open(out_path, "w") as f:
    f.write(repr((sorted(counts), errors, n)))
"""


def test_resync_under_reads_shows_old_or_new_cell_only(make_cell, make_ingest, procs,
                                                       replica_path, tmp_path):
    import ast
    import sys

    from replica.store.connection import open_writer
    c1 = make_cell("c1")
    c1.populate(20_000, seed=13)
    c1.start()
    open_writer(replica_path).close()     # the readers open it before ingest writes
    script = tmp_path / "reader.py"
    script.write_text(READER)
    stop_path = tmp_path / "readers.stop"
    outs = [tmp_path / f"reader{i}.out" for i in range(2)]
    readers = [procs.start([sys.executable, str(script), replica_path, "c1", str(stop_path),
                            str(out)], str(tmp_path / f"reader{i}.log"))
               for i, out in enumerate(outs)]
    ing = make_ingest([c1.feed()])
    ing.start()
    first = ing.wait_caught_up([c1], timeout=120)
    assert first["c1"]["resyncs"] == 1 and first["c1"]["servers"] == 20_000
    # Offline beyond the retention: the restart resyncs a changed cell under the reads.
    ing.stop()
    c1.churn(300, seed=14, servers=21_000)   # a target above the population: mostly builds
    conn = cell_connection.open_cell(c1.db)
    try:
        while outbox.prune(conn, 50, 3600.0):
            pass
    finally:
        conn.close()
    ing.start()
    second = ing.wait_caught_up([c1], timeout=120)
    assert second["c1"]["resyncs"] == 1
    total = assert_converged(replica_path, c1, rows=False)
    assert total > 20_000
    stop_path.write_text("")
    for reader in readers:
        reader.popen.wait(30)
    for out in outs:
        counts, errors, n = ast.literal_eval(out.read_text())
        assert errors == [] and n > 0
        # Every read saw a whole cell: empty, the first load, or the resynced state.
        assert set(counts) <= {0, 20_000, total}, counts


def test_verify_finds_and_repairs_drift(make_cell, make_ingest, replica_path):
    c1, ing = live_cell(make_cell, make_ingest, 80, 15)
    ing.stop()
    # Damage the replica behind ingest's back: a row lost, a row changed, a row extra.
    keys = [k for (k,) in read_rows(replica_path, "SELECT uuid FROM servers ORDER BY uuid")]
    lost, changed = keys[0], keys[1]
    extra = make_server()
    conn = apsw.Connection(replica_path)
    with conn:
        conn.execute("DELETE FROM servers WHERE uuid = ?", (lost,))
        conn.execute("UPDATE servers SET entity_hash = entity_hash + 1, display_name = 'drift' "
                     "WHERE uuid = ?", (changed,))
        row = conn.execute("SELECT * FROM servers WHERE uuid = ?", (keys[2],)).fetchall()[0]
        cols = [r[1] for r in conn.execute("PRAGMA table_info(servers)")]
        fake = list(row)
        fake[cols.index("uuid")] = extra["uuid"]
        fake[cols.index("bucket")] = feed.bucket_of(extra["uuid"])
        conn.execute(f"INSERT INTO servers VALUES ({', '.join('?' * len(cols))})", fake)
    conn.close()
    ing.start()
    ing.wait_caught_up([c1])
    job = ing.client.wait_job(ing.client.verify("c1"), timeout=60)
    assert job["state"] == "done", job
    result = job["result"]["cells"]["c1"]
    assert result["differing"] == sorted([lost, changed, extra["uuid"]])
    assert result["repaired"] == 0 and result["buckets_differing"] >= 2
    job = ing.client.wait_job(ing.client.verify("c1", repair=True), timeout=60)
    assert job["result"]["cells"]["c1"]["repaired"] == 3
    assert_converged(replica_path, c1)
    job = ing.client.wait_job(ing.client.verify(), timeout=60)
    assert job["result"]["cells"]["c1"]["differing"] == []


def test_a_flavor_source_is_replicated_like_a_cell(make_cell, make_ingest, replica_path):
    from replica import render
    from replica.cell import entity
    from replica.cell.simulator import seed_flavors
    source = make_cell("flavors", flavors=True)
    seed_flavors(source.db)
    source.start()
    ing = make_ingest([source.feed()])
    ing.start()
    status = ing.wait_caught_up([source])
    conn = cell_connection.open_cell_reader(source.db)
    try:
        ids = [k for (k,) in conn.execute("SELECT flavorid FROM flavors")]
        built = entity.build_flavors(conn, ids)
    finally:
        conn.close()
    assert status["flavors"]["flavors"] == len(ids) > 0
    columns = render.FLAVOR_COLUMNS
    stored = {row[columns.index("flavorid")]: row for row in read_rows(
        replica_path, f"SELECT {', '.join(columns)} FROM flavors WHERE source = 'flavors'")}
    seq_at = columns.index("seq")
    for flavorid, ent in built.items():
        fresh = list(render.flavor_row("flavors", 0, ent))
        row = list(stored[flavorid])
        fresh[seq_at] = row[seq_at] = None
        assert row == fresh, flavorid
    job = ing.client.wait_job(ing.client.verify("flavors"), timeout=60)
    assert job["state"] == "done" and job["result"]["cells"]["flavors"]["differing"] == []
    job = ing.client.wait_job(ing.client.resync("flavors"), timeout=60)
    # the flavor source also publishes Nova's API database's key pairs, quota limits
    # (the defaults and the seeded project's), aggregates and server groups
    assert job["state"] == "done" and job["done"] == (
        len(ids) + status["flavors"]["keypairs"] + 2 + status["flavors"]["aggregates"]
        + status["flavors"]["server_groups"])


def test_a_silent_cell_goes_stale_and_comes_back(make_cell, make_ingest, replica_path):
    c1, c2 = make_cell("c1"), make_cell("c2")
    c1.populate(40, seed=505)
    c2.populate(40, seed=606)
    c1.start()
    c2.start()
    ing = make_ingest([c1.feed(), c2.feed()], **{"stale-after": 1.0})
    ing.start()
    ing.wait_caught_up([c1, c2])
    c2.stop()
    stale = wait_for(lambda: ing.cell("c2")["state"] == "stale" and ing.cell("c2"), 15,
                     what="c2 stale")
    assert stale["servers"] == 40          # still serving what it had
    # The other cell goes on meanwhile, and a job on the silent one fails, not hangs.
    c1.churn(200, seed=707, rate=1000)
    ing.wait_caught_up([c1])
    job = ing.client.wait_job(ing.client.verify("c2"), timeout=30)
    assert job["state"] == "failed" and "stale" in job["error"]
    c2.churn(100, seed=808)
    c2.start()
    status = ing.wait_caught_up([c1, c2])
    assert status["c2"]["state_since"] > stale["state_since"]
    assert_converged(replica_path, c1)
    assert_converged(replica_path, c2)


def test_resync_of_every_cell_at_once_swaps_each_of_them(make_cell, make_ingest, replica_path):
    cells = [make_cell(name) for name in ("c1", "c2", "c3")]
    for n, cell in enumerate(cells):
        cell.populate(60 + n * 10, seed=20 + n)
        cell.start()
    ing = make_ingest([cell.feed() for cell in cells])
    ing.start()
    before = ing.wait_caught_up(cells)
    job = ing.client.wait_job(ing.client.resync(None), timeout=60)
    assert job["state"] == "done" and job["error"] is None, job
    assert job["done"] == job["total"] == 60 + 70 + 80 + sum(
        cell.compute_nodes() + cell.services() for cell in cells)
    after = ing.wait_caught_up(cells)
    for cell in cells:
        assert after[cell.name]["resyncs"] == before[cell.name]["resyncs"] + 1
        assert_converged(replica_path, cell)


def test_rows_from_before_the_outbox_reach_the_replica(make_cell, make_ingest, replica_path):
    """An outbox installed into a database that already has servers holds no event for
    them: the first attach takes a snapshot, so every server is in the replica."""
    c1 = make_cell("c1")
    c1.populate(80, seed=21)
    conn = cell_connection.open_cell(c1.db)
    with conn:          # as if the outbox had never been there
        for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                       "AND name LIKE 'shadow\\_replica\\_%' ESCAPE '\\'"
                                       ).fetchall():
            conn.execute(f'DROP TRIGGER "{trigger}"')
        conn.execute(f"DROP TABLE {outbox.OUTBOX}")
        conn.execute(f"DROP TABLE {outbox.META}")
        conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", (outbox.OUTBOX,))
    conn.close()
    c1.epoch = outbox.init_cell_db(c1.db, "c1")
    assert c1.head() == 0
    c1.start()
    ing = make_ingest([c1.feed()])
    ing.start()
    status = ing.wait_caught_up([c1])
    assert status["c1"]["resyncs"] >= 1
    assert assert_converged(replica_path, c1) == 80
