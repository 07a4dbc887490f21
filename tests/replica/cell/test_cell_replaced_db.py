"""A cell database file replaced under a running publisher (a restored backup moved
over it): the publisher notices, lets go of the old file, publishes the new one with
its epoch, and the appliance's ingest converges to it; nobody is restarted."""

from __future__ import annotations

import os
import time

import apsw
import pytest

from replica.cell import connection, outbox, simulator

from tests.conftest import ipc_listening, wait_for
from tests.replica.cell.conftest import Control, epoch_of, head_of
from tests.replica.conftest import PYTHON, assert_converged, assert_positions_consistent


def start_publisher(cell, control_thread: bool):
    """The cell's publisher, like ``Cell.start`` but with the control server in a
    thread when asked."""
    argv = [PYTHON, "-m", "replica.cell.publisher", "--db", cell.db, "--name", cell.name,
            "--feed", cell.feed_url, "--control", cell.control_url, "--heartbeat", "0.2"]
    if control_thread:
        argv.append("--control-thread")
    cell.publisher = cell.procs.start(argv, str(cell.dir / f"{cell.name}.publisher.log"))
    wait_for(lambda: ipc_listening(cell.control_url), 30, what="publisher control socket")
    return cell.publisher


def build_copy(path: str, name: str, servers: int, seed: int, churn_ops: int = 0
               ) -> tuple[str, int]:
    """A complete cell database at ``path`` (closed: no -wal beside it): its epoch and
    how many servers it holds."""
    epoch = outbox.init_cell_db(path, name)
    simulator.populate(path, servers, 3, seed=seed)
    if churn_ops:
        simulator.run_simulator(simulator.SimulatorConfig(path, 0, servers, 3, ops=churn_ops,
                                                          seed=seed + 1))
    conn = connection.open_cell_reader(path)
    try:
        (count,) = conn.execute("SELECT count(*) FROM instances").fetchone()
    finally:
        conn.close()
    assert not os.path.exists(path + "-wal")
    return epoch, count


def hello_epoch(url: str) -> str:
    control = Control(url)
    try:
        return control.call("hello")["epoch"]
    finally:
        control.close()


def integrity(path: str) -> str:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("control_thread", [False, True], ids=["control-process",
                                                               "control-thread"])
def test_replaced_file_is_published_with_its_epoch_without_a_restart(
        make_cell, make_ingest, replica_path, tmp_path, control_thread):
    c1 = make_cell("c1")
    c1.populate(150, seed=7)
    publisher = start_publisher(c1, control_thread)
    ing = make_ingest([c1.feed()])
    ing.start()
    c1.churn(200, seed=11)         # the old file's -wal holds pages of its own
    ing.wait_caught_up([c1])
    old_epoch = ing.cell("c1")["epoch"]
    resyncs = ing.cell("c1")["resyncs"]
    assert os.path.getsize(c1.db + "-wal") > 0

    new_db = str(tmp_path / "restore" / "c1.db")
    os.makedirs(os.path.dirname(new_db))
    new_epoch, servers = build_copy(new_db, "c1", 120, seed=8, churn_ops=50)
    os.replace(new_db, c1.db)      # mv restore/c1.db c1.db, while everything runs

    # Nothing opens the new file before the publisher has taken it over: the old
    # file's -wal is still beside it until then.
    wait_for(lambda: ing.cell("c1")["epoch"] == new_epoch, 30, what="new epoch adopted")
    status = ing.wait_caught_up([c1])["c1"]
    assert publisher.alive()
    assert status["resyncs"] > resyncs and status["epoch"] != old_epoch
    assert assert_converged(replica_path, c1) == servers
    assert hello_epoch(c1.control_url) == new_epoch

    # The new file goes on being published live, with its epoch.
    c1.churn(300, seed=12)
    status = ing.wait_caught_up([c1])["c1"]
    assert status["epoch"] == new_epoch and status["resyncs"] == resyncs + 1
    assert assert_converged(replica_path, c1) > 0
    assert_positions_consistent(replica_path)
    assert integrity(c1.db) == "ok"
    assert publisher.alive()
    log = publisher.output()
    assert "file replaced" in log and "removed" in log, log


def test_an_older_copy_of_the_same_cell_gets_a_new_epoch(make_cell, make_ingest, replica_path,
                                                         tmp_path):
    c1 = make_cell("c1")
    c1.populate(100, seed=21)
    backup = str(tmp_path / "backup.db")
    source = connection.open_cell_reader(c1.db)
    target = apsw.Connection(backup)
    try:
        with target.backup("main", source, "main") as step:
            step.step()
    finally:
        target.close()
        source.close()
    assert not os.path.exists(backup + "-wal")
    publisher = start_publisher(c1, control_thread=False)
    ing = make_ingest([c1.feed()])
    ing.start()
    c1.churn(200, seed=22)          # seqs the backup does not have
    ing.wait_caught_up([c1])
    old_epoch = ing.cell("c1")["epoch"]

    os.replace(backup, c1.db)       # the restore: same epoch, outbox behind the replica

    wait_for(lambda: ing.cell("c1")["epoch"] not in (None, old_epoch), 30,
             what="a new epoch for the rewound outbox")
    ing.wait_caught_up([c1])
    assert assert_converged(replica_path, c1) == 100
    conn = connection.open_cell_reader(c1.db)
    try:
        assert outbox.epoch_of(conn) == ing.cell("c1")["epoch"] == hello_epoch(c1.control_url)
    finally:
        conn.close()
    assert publisher.alive()


def test_an_epoch_changed_in_place_is_adopted(make_cell, make_ingest, replica_path):
    c1 = make_cell("c1")
    c1.populate(60, seed=31)
    publisher = start_publisher(c1, control_thread=False)
    ing = make_ingest([c1.feed()])
    ing.start()
    ing.wait_caught_up([c1])
    conn = connection.open_cell(c1.db)
    try:
        with conn:      # the outbox installed again, in the same file
            conn.execute(f"UPDATE {outbox.META} SET value = 'rebuilt' WHERE name = 'epoch'")
    finally:
        conn.close()
    wait_for(lambda: ing.cell("c1")["epoch"] == "rebuilt", 30, what="the new epoch adopted")
    ing.wait_caught_up([c1])
    assert hello_epoch(c1.control_url) == "rebuilt"
    assert assert_converged(replica_path, c1) == 60
    assert publisher.alive()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_replacement_without_an_outbox_waits_quietly_for_a_usable_file(
        make_cell, make_ingest, replica_path, tmp_path):
    c1 = make_cell("c1")
    c1.populate(50, seed=41)
    publisher = start_publisher(c1, control_thread=False)
    ing = make_ingest([c1.feed()])
    ing.start()
    ing.wait_caught_up([c1])

    bare = str(tmp_path / "bare.db")
    conn = apsw.Connection(bare)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    os.replace(bare, c1.db)
    wait_for(lambda: "cannot open the database" in publisher.output(), 10,
             what="the publisher to refuse the file")
    used = cpu_seconds(publisher.pid)
    time.sleep(2.0)
    assert cpu_seconds(publisher.pid) - used < 0.5      # waits, does not spin
    assert publisher.output().count("cannot open the database") == 1

    good = str(tmp_path / "good.db")
    new_epoch, servers = build_copy(good, "c1", 40, seed=42)
    os.replace(good, c1.db)
    wait_for(lambda: ing.cell("c1")["epoch"] == new_epoch, 30, what="the usable file adopted")
    ing.wait_caught_up([c1])
    assert assert_converged(replica_path, c1) == servers
    assert publisher.alive()


def test_a_publisher_restarted_on_an_older_copy_gives_it_a_new_epoch(make_cell):
    c1 = make_cell("c1")
    c1.populate(60, seed=31)
    backup = c1.db + ".backup"
    conn = apsw.Connection(c1.db)
    conn.execute(f"VACUUM INTO '{backup}'")        # same epoch, the head of now
    conn.close()
    old_epoch = epoch_of(c1.db)
    start_publisher(c1, control_thread=False)
    c1.churn(200, seed=32)
    published = c1.db + ".published"
    wait_for(lambda: os.path.exists(published) and f'"seq": {head_of(c1.db)}' in
             open(published).read(), 10, what="the published position recorded")
    c1.stop()
    for suffix in ("-wal", "-shm"):
        if os.path.exists(c1.db + suffix):
            os.remove(c1.db + suffix)
    os.replace(backup, c1.db)
    start_publisher(c1, control_thread=False)
    epoch = hello_epoch(c1.control_url)
    assert epoch != old_epoch
    assert epoch_of(c1.db) == epoch
    # An unchanged restart keeps its epoch.
    c1.stop()
    start_publisher(c1, control_thread=False)
    assert hello_epoch(c1.control_url) == epoch

