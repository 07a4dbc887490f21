"""How fast the binlog tailer journals: a burst of 10,000 single-row transactions,
read once as a backlog (the tailer started after the burst) and once live (a
separate client process writing while the tailer follows). Printed, not asserted
beyond completeness (run with ``-s`` to see the figures)."""

from __future__ import annotations

import os
import subprocess
import threading
import time

from replica.cell import binlog

from tests.realnova.mariadb import mariadb_fixture
from tests.replica.cell.binlog_helpers import (CELL_DB, Writer, create_nova_tables,
                                               journal_rows, source_for, wait_head)

mariadb = mariadb_fixture(scope="module")

BURST = 10_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class TailerThread:
    def __init__(self, source):
        self.stop = threading.Event()
        self.tailer = binlog.Tailer(source, self.stop)
        self.thread = threading.Thread(target=self.tailer.run, name="binlog-tailer")

    def start(self) -> None:
        self.thread.start()
        while self.thread.ident is None:
            time.sleep(0.001)
        self.clock = time.pthread_getcpuclockid(self.thread.ident)

    def cpu(self) -> float:
        return time.clock_gettime(self.clock)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def report(what: str, changes: int, seconds: float, tailer_cpu: float, server_cpu: float):
    print(f"\n{what}: {changes} changes in {seconds:.2f} s = {changes / seconds:,.0f} changes/s; "
          f"tailer CPU {tailer_cpu / changes * 1e6:.0f} us/change "
          f"({tailer_cpu:.2f} s); mariadbd CPU {server_cpu / changes * 1e6:.0f} us/change")


def test_throughput_of_a_burst_of_single_row_transactions(mariadb, tmp_path):
    create_nova_tables(mariadb)
    source = source_for(mariadb, str(tmp_path / "cell1.journal"))
    change_log = binlog.open_change_log(source)
    writer = Writer(mariadb, CELL_DB)
    server_pid = mariadb.process.pid
    try:
        # Backlog: the burst is in the binlog before the tailer starts.
        for number in range(BURST):
            writer.run("INSERT INTO instances (uuid, host) VALUES (%s, 'bench')",
                       (f"backlog-{number:05d}",))
        tailer = TailerThread(source)
        server_before = process_cpu(server_pid)
        started = time.perf_counter()
        tailer.start()
        try:
            wait_head(change_log, BURST, timeout=300)
            seconds = time.perf_counter() - started
            report("backlog", BURST, seconds, tailer.cpu(), process_cpu(server_pid) - server_before)

            # Live: another process writes the burst while the tailer follows.
            script = tmp_path / "burst.sql"
            script.write_text("".join(
                f"INSERT INTO instances (uuid, host) VALUES ('live-{number:05d}', 'bench');\n"
                for number in range(BURST)))
            cpu_before, server_before = tailer.cpu(), process_cpu(server_pid)
            started = time.perf_counter()
            with open(script) as sql:
                subprocess.run(["mariadb", "--no-defaults", f"--socket={mariadb.socket}",
                                "-uroot", CELL_DB], stdin=sql, check=True)
            written = time.perf_counter() - started
            wait_head(change_log, 2 * BURST, timeout=300)
            seconds = time.perf_counter() - started
            report("live", BURST, seconds, tailer.cpu() - cpu_before,
                   process_cpu(server_pid) - server_before)
            print(f"live: the client wrote for {written:.2f} s; journaled "
                  f"{seconds - written:.3f} s after its last commit")
        finally:
            tailer.close()
        rows = journal_rows(change_log)
        assert [seq for seq, *_ in rows] == list(range(1, 2 * BURST + 1))
        assert len({gtid for *_rest, gtid in rows}) == 2 * BURST
    finally:
        writer.close()
        change_log.close()
