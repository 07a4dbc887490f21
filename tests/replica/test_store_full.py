"""A replica store that cannot write (a full disk: SQLite's SQLITE_FULL, made here with
max_page_count) is a state of ingest: the status says so and keeps showing what is
committed, a metric says it, the log says it once (and again only now and then), writes
are retried with back-off, and everything held back arrives once space is back."""

from __future__ import annotations

import logging
import time

from appliance.metrics import IngestCollector
from replica import feed, ingest as ingest_module
from replica.ingest import CellFeed, Ingest, IngestConfig
from replica.position import Position
from replica.states import CellState

from tests.conftest import wait_for
from tests.replica.conftest import StandInRender, make_server


def _events(first, n):
    return [feed.Event(first + i, feed.KIND_SERVER, feed.OP_UPSERT, s["uuid"], s)
            for i, s in enumerate(make_server() for _ in range(n))]


def _full(ing):
    pages = ing.conn.execute("PRAGMA page_count").fetchall()[0][0]
    ing.conn.execute(f"PRAGMA max_page_count={pages}")


def _space_back(ing):
    ing.conn.execute("PRAGMA max_page_count=1073741823")


def _metrics(status):
    return {(m.name, tuple(s.labels.values())): s.value
            for m in IngestCollector(status).collect() for s in m.samples}


def test_a_full_store_is_a_state_with_a_metric_and_few_log_lines(replica_path, caplog,
                                                                 monkeypatch):
    monkeypatch.setattr(ingest_module, "STORE_RETRY_MIN", 0.05)
    monkeypatch.setattr(ingest_module, "STORE_RETRY_MAX", 0.2)
    config = IngestConfig(replica_path, [CellFeed("c1", "ipc:///nonexistent/f",
                                                  "ipc:///nonexistent/c")],
                          "ipc:///nonexistent/i")
    ing = Ingest(config, renderer=StandInRender(replica_path))
    try:
        link = ing.links["c1"]
        link.position = Position("c1", "E", 0)
        link.set_state(CellState.CATCHING_UP)
        link.set_state(CellState.LIVE)
        ing.on_message(link, feed.encode_batch("c1", "E", _events(1, 3)))
        ing.commit()
        assert ing.status()["cells"][0]["seq"] == 3
        _full(ing)
        caplog.set_level(logging.INFO, logger="replica.ingest")
        seqs, first = [], 4
        began = time.monotonic()
        while time.monotonic() - began < 1.0:     # a feed that goes on, 200 batches a second
            if ing.accept(link, _events(first, 50)) == "next":
                first += 50
            ing.commit()
            status = ing.status()
            committed = ing.writer.load_positions()["c1"].seq
            seqs.append((status["cells"][0]["seq"], committed))
            if link.position.seq < first - 1:     # rewound: the next batch is a gap
                first = link.position.seq + 1
            time.sleep(0.005)
        shown = [shown for shown, _ in seqs]
        assert shown == sorted(shown), "the status seq never goes back"
        assert all(shown == committed for shown, committed in seqs[-50:]), \
            "while commits fail the status shows what is committed"
        assert status["store_failing_since"] is not None and status["disk_full"] is True
        assert "full" in status["store_error"]
        metrics = _metrics(status)
        assert metrics[("appliance_ingest_disk_full", ())] == 1.0
        assert metrics[("appliance_ingest_store_failing", ())] == 1.0
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert 1 <= len(errors) <= 3, [r.getMessage() for r in errors]
        _space_back(ing)

        def recovered():
            if ing.accept(link, _events(link.position.seq + 1, 5)) == "next":
                ing.commit()
            return ing.status()["store_failing_since"] is None

        # the next try comes after the back-off, which may have reached its maximum
        wait_for(recovered, ingest_module.STORE_RETRY_MAX + 10, what="writes again")
        status = ing.status()
        assert status["disk_full"] is False and status["cells"][0]["seq"] > 3
        assert _metrics(status)[("appliance_ingest_disk_full", ())] == 0.0
        assert any("writes again" in r.getMessage() for r in caplog.records)
    finally:
        ing.conn.close()


def test_a_failing_checkpoint_puts_no_traceback_in_the_log(replica_path, monkeypatch, capfd):
    """The background checkpoint runs in gevent's thread pool, which prints a traceback
    for every exception raised there: on a full disk that was one traceback a second in
    the log (which is on the full disk too)."""
    import apsw
    import gevent

    from replica.store import connection

    def full(conn):
        raise apsw.FullError("database or disk is full")

    monkeypatch.setattr(ingest_module, "CHECKPOINT_INTERVAL", 0.01)
    monkeypatch.setattr(connection, "checkpoint_passive", full)
    config = IngestConfig(replica_path, [CellFeed("c1", "ipc:///nonexistent/f",
                                                  "ipc:///nonexistent/c")],
                          "ipc:///nonexistent/i")
    ing = Ingest(config, renderer=StandInRender(replica_path))
    try:
        checkpointer = gevent.spawn(ing._checkpointer)
        gevent.sleep(0.3)
        assert not checkpointer.dead, checkpointer.exception
        checkpointer.kill()
    finally:
        ing.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "FullError" not in err, err[-2000:]
