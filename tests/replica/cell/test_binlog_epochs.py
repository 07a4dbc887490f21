"""The epoch rules of the binlog source against real MariaDB servers: a purged
binlog, another server, a restored database start a new epoch; a restart on
the same history keeps it. And a tailer process killed with SIGKILL mid-stream
loses and doubles nothing."""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import pathlib
import shutil
import signal

import pytest

from replica.cell import binlog, journal

from tests.conftest import wait_for
from tests.realnova.mariadb import MariaDB, running_mariadb, scratch_dir
from tests.replica.cell.binlog_helpers import (CELL_DB, Writer, create_nova_tables, events,
                                               journal_rows, source_for, tailing, wait_head)


@pytest.fixture
def workdir():
    """A private scratch directory (pytest's tmp_path may be removed by another
    pytest session on a shared machine while a server runs from it)."""
    with scratch_dir("binlog") as path:
        yield pathlib.Path(path)


@pytest.fixture
def nova():
    with running_mariadb() as server:
        create_nova_tables(server)
        yield server


def insert(server, *uuids):
    writer = Writer(server, CELL_DB)
    try:
        for uuid in uuids:
            writer.run("INSERT INTO instances (uuid, host) VALUES (%s, 'h')", (uuid,))
    finally:
        writer.close()


def purge_binary_logs(server) -> None:
    """Rotate, then purge every binlog file but the current one. MariaDB keeps a
    file until its binlog checkpoint is written (and while a dump thread reads
    it), so the purge is repeated until it took."""
    server.execute("FLUSH BINARY LOGS")
    current = server.scalar("SHOW MASTER STATUS")

    def purged():
        server.execute(f"PURGE BINARY LOGS TO '{current}'")
        return [row[0] for row in server.execute("SHOW BINARY LOGS")] == [current]

    wait_for(purged, what=f"binlogs before {current} purged")


def attach_and_consume(source, *uuids, server) -> str:
    """A journal that consumed ``uuids`` inserted one per transaction; its epoch."""
    with tailing(source) as (_tailer, change_log):
        insert(server, *uuids)
        wait_head(change_log, len(uuids))
        return change_log.epoch()


def reopened(source) -> journal.JournalState:
    change_log = binlog.open_change_log(source)
    try:
        return change_log.state()
    finally:
        change_log.close()


def epoch_reason(source) -> str:
    conn = journal.connect(source.journal_path)
    try:
        return journal.epoch_reason(conn)
    finally:
        conn.close()


def test_same_history_keeps_the_epoch_even_after_rotation_and_purge_of_consumed_logs(nova, workdir):
    source = source_for(nova, str(workdir / "cell1.journal"))
    epoch = attach_and_consume(source, "keep-1", "keep-2", server=nova)
    purge_binary_logs(nova)                                 # nothing unread is lost
    state = reopened(source)
    assert state.epoch == epoch and state.head == 2
    with tailing(source) as (_tailer, change_log):
        insert(nova, "keep-3")
        wait_head(change_log, 3)
        assert events(change_log)[-1] == ("server", "keep-3")


def test_a_binlog_purged_while_stopped_starts_a_new_epoch(nova, workdir):
    source = source_for(nova, str(workdir / "cell1.journal"))
    epoch = attach_and_consume(source, "purge-1", server=nova)
    insert(nova, "purge-2", "purge-3")                      # never read: purged below
    purge_binary_logs(nova)
    state = reopened(source)
    assert state.epoch != epoch
    assert state.head == 0 and state.position == nova.gtid_binlog_pos()
    assert "purged" in epoch_reason(source)
    with tailing(source) as (_tailer, change_log):
        assert change_log.epoch() == state.epoch
        insert(nova, "purge-4")
        wait_head(change_log, 1)
        assert journal_rows(change_log)[0][:3] == (1, "server", "purge-4")


def test_another_server_behind_the_journal_starts_a_new_epoch(nova, workdir):
    source = source_for(nova, str(workdir / "cell1.journal"))
    epoch = attach_and_consume(source, "other-1", "other-2", server=nova)
    with running_mariadb() as other:                            # a new datadir, same server_id
        create_nova_tables(other)
        moved = source_for(other, source.journal_path)
        state = reopened(moved)
        assert state.epoch != epoch and state.head == 0
        assert state.position == other.gtid_binlog_pos()
        assert "behind" in epoch_reason(moved)


def test_another_server_with_a_longer_history_starts_a_new_epoch(nova, workdir):
    source = source_for(nova, str(workdir / "cell1.journal"))
    epoch = attach_and_consume(source, "longer-1", server=nova)
    consumed = binlog.parse_position(reopened(source).position)
    with running_mariadb() as other:
        create_nova_tables(other)
        # More transactions than the journal consumed: its GTIDs exist there too.
        while binlog.parse_position(other.gtid_binlog_pos())[0][1] <= consumed[0][1] + 2:
            insert(other, f"longer-other-{other.gtid_binlog_pos()}")
        moved = source_for(other, source.journal_path)
        state = reopened(moved)
        assert state.epoch != epoch and state.head == 0
        assert "not the journal's last transaction" in epoch_reason(moved)


def test_a_restored_database_starts_a_new_epoch(workdir):
    (workdir / "mariadb").mkdir()
    server = MariaDB(str(workdir / "mariadb"))
    data, backup = server.storage_dir, str(workdir / "backup")

    def restore():
        server.stop()
        shutil.rmtree(data)
        shutil.copytree(backup, data)
        server.start()

    try:
        server.start()
        create_nova_tables(server)
        source = source_for(server, str(workdir / "cell1.journal"))
        epoch = attach_and_consume(source, "restore-1", server=server)
        server.stop()
        shutil.copytree(data, backup)                          # the backup
        server.start()
        attach_and_consume(source, "restore-2", "restore-3", server=server)
        assert reopened(source).epoch == epoch
        restore()
        state = reopened(source)
        assert state.epoch != epoch and "behind" in epoch_reason(source)
        # Restored again, then written past the journal's position before the
        # publisher comes back: the GTIDs exist but are other transactions.
        epoch = state.epoch
        attach_and_consume(source, "restore-4", server=server)
        restore()
        for number in range(3):
            insert(server, f"restore-again-{number}")
        state = reopened(source)
        assert state.epoch != epoch
        assert "not the journal's last transaction" in epoch_reason(source)
    finally:
        server.remove()


@contextlib.contextmanager
def _tailer_report(workdir: pathlib.Path, process, change_log):
    """While inside: the tailer process's log lines go to a file and its stacks can be
    dumped (SIGUSR1, as the child inherits both from this process). Yields a function
    that says how the tailer is: alive or its exit code, the journal's head, its stacks
    and its log."""
    log_path, stacks_path = workdir / "tailer.log", workdir / "tailer-stacks.txt"
    handler = logging.FileHandler(log_path)
    level = binlog.log.level
    binlog.log.addHandler(handler)
    binlog.log.setLevel(logging.INFO)
    stacks = open(stacks_path, "w")
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)

    def report() -> str:
        if process.alive():
            os.kill(process.proc.pid, signal.SIGUSR1)
            wait_for(lambda: stacks_path.stat().st_size > 0, timeout=5,
                     what="the tailer's stacks")
        handler.flush()
        return (f"tailer alive {process.alive()}, exit code {process.exitcode()}, "
                f"journal head {change_log.head()}; its stacks:\n{stacks_path.read_text()}"
                f"\nits log:\n{log_path.read_text()}")
    try:
        yield report
    finally:
        faulthandler.unregister(signal.SIGUSR1)
        stacks.close()
        binlog.log.removeHandler(handler)
        binlog.log.setLevel(level)
        handler.close()


def test_a_tailer_killed_mid_stream_loses_and_doubles_nothing(nova, workdir):
    source = source_for(nova, str(workdir / "cell1.journal"))
    binlog.open_change_log(source).close()
    writer = Writer(nova, CELL_DB)
    process = binlog.TailerProcess(source)
    try:
        # Single-row transactions, then a large one the tailer is still reading
        # when it is killed, then more single-row ones.
        small = [f"kill-small-{n}" for n in range(300)]
        large = [f"kill-large-{n:05d}" for n in range(10_000)]
        after = [f"kill-after-{n}" for n in range(100)]
        process.start()
        for uuid in small:
            writer.run("INSERT INTO instances (uuid, host) VALUES (%s, 'k')", (uuid,))
        with writer.transaction():
            with writer.conn.cursor() as cursor:
                cursor.executemany("INSERT INTO instances (uuid, host) VALUES (%s, 'k')",
                                   [(u, ) for u in large])
        reader = journal.JournalChangeLog(source.journal_path)
        wait_for(lambda: reader.head() >= len(small), timeout=60, what="the small ones journaled")
        os.kill(process.proc.pid, signal.SIGKILL)            # reading the large one
        process.proc.join(10)
        assert process.exitcode() == -signal.SIGKILL
        killed_at = reader.head()
        for uuid in after:
            writer.run("INSERT INTO instances (uuid, host) VALUES (%s, 'k')", (uuid,))
        expected = small + large + after
        process = binlog.TailerProcess(source)
        with _tailer_report(workdir, process, reader) as report:
            process.start()
            try:
                wait_for(lambda: reader.head() >= len(expected) or not process.alive(),
                         timeout=120, what=f"journal head {len(expected)}")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; {report()}") from None
            assert reader.head() >= len(expected), report()
        proc = process.proc
        process.stop()                                        # SIGTERM: a clean stop
        assert proc.exitcode == 0
        assert killed_at == len(small)        # the large one was not journaled
        rows = journal_rows(reader)
        assert [seq for seq, *_ in rows] == list(range(1, len(expected) + 1))
        assert [key for _seq, _kind, key, _gtid in rows] == expected
        assert reader.state().position == nova.gtid_binlog_pos()
        reader.close()
    finally:
        writer.close()
        process.stop()


def test_an_api_database_the_cells_server_does_not_hold_is_refused(nova, workdir):
    """An ``--api-source`` on another server: the cell's binlog cannot carry its changes,
    so the publisher refuses to start rather than miss them. Named by another host
    string, the same server (which holds the API database) is accepted."""
    import dataclasses
    from replica.cell import mysql
    source = source_for(nova, str(workdir / "cell1.journal"))
    other_host = "localhost" if source.cell_url.host != "localhost" else "127.0.0.1"
    same_server = dataclasses.replace(
        source, api_url=dataclasses.replace(source.api_url, host=other_host))
    conn = mysql.connect(source.cell_url, select_database=False)
    try:
        binlog.check_api_database_reachable(same_server, conn)
        elsewhere = dataclasses.replace(
            source, api_url=dataclasses.replace(source.api_url, host=other_host,
                                                database="nova_api_elsewhere"))
        with pytest.raises(mysql.SourceConfigError, match="has no database 'nova_api_elsewhere'"):
            binlog.check_api_database_reachable(elsewhere, conn)
    finally:
        conn.close()
