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
PACED = 2_000                  # transactions written at PACED_RATE for the latency figure
PACED_RATE = 1_000             # transactions per second
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class TailerThread:
    def __init__(self, source):
        self.stop = threading.Event()
        self.journaled_at: dict[int, float] = {}     # seq -> when its commit was made
        self.tailer = binlog.Tailer(source, self.stop, on_commit=self._committed)
        self.thread = threading.Thread(target=self.tailer.run, name="binlog-tailer")

    def start(self) -> None:
        self.thread.start()
        while self.thread.ident is None:
            time.sleep(0.001)
        self.clock = time.pthread_getcpuclockid(self.thread.ident)

    def _committed(self, first: int, last: int) -> None:
        now = time.perf_counter()          # one journal commit may hold several seqs
        for seq in range(first, last + 1):
            self.journaled_at[seq] = now

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

            # Paced: from sending an autocommit INSERT to its key in the journal.
            committed_at = []
            started = time.perf_counter()
            for number in range(PACED):
                due = started + number / PACED_RATE
                while time.perf_counter() < due:
                    time.sleep(max(0.0, due - time.perf_counter()))
                committed_at.append(time.perf_counter())    # the autocommit INSERT sent
                writer.run("INSERT INTO instances (uuid, host) VALUES (%s, 'bench')",
                           (f"paced-{number:05d}",))
            wait_head(change_log, 2 * BURST + PACED, timeout=300)
            latencies = sorted(tailer.journaled_at[2 * BURST + 1 + number] - at
                               for number, at in enumerate(committed_at))
            print(f"paced: {PACED} transactions at {PACED_RATE}/s, statement sent to journaled "
                  f"p50 {latencies[len(latencies) // 2] * 1e3:.2f} ms, "
                  f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms, "
                  f"max {latencies[-1] * 1e3:.2f} ms")
        finally:
            tailer.close()
        rows = journal_rows(change_log)
        assert [seq for seq, *_ in rows] == list(range(1, 2 * BURST + PACED + 1))
        assert len({gtid for *_rest, gtid in rows}) == 2 * BURST + PACED
    finally:
        writer.close()
        change_log.close()
