"""``appliance cell --source mysql://...`` on a MariaDB Galera cluster of three nodes (the
size Galera recommends: one node lost leaves a quorum): Nova made by nova-manage and
written by Nova's objects through node 1, the publishers reading node 3's binlog. Node 2
is shut down and started again while Nova goes on writing through node 1 (it rejoins by
incremental state transfer, donated by a node that stayed): the replica converges with
Nova, the drift check finds nothing differing, the publisher keeps its epoch (no resync),
no write is lost and no source transaction is journaled twice.

One cluster and one deployment for the module."""

from __future__ import annotations

import threading

import apsw
import pytest

from tests.conftest import wait_for
from tests.realnova.galera import galera_fixture, galera_stack

NODES = 3
WRITES_PER_PHASE = 4        # Nova's writes seen in each phase of the node's restart

cluster = galera_fixture(NODES)


@pytest.fixture(scope="module")
def stack(cluster):
    writing, _restarted, publishing = cluster
    with galera_stack(writing, publishing, "galera3-publisher") as stack:
        yield stack


class NovaWrites:
    """Nova's writes in a thread, one after another until stopped: every fourth builds
    a server, the others rename one. ``names`` holds each server's last name written."""

    def __init__(self, writer, uuids: list[str]):
        self.writer = writer
        self.uuids = list(uuids)
        self.names: dict[str, str] = {}
        self.done = 0
        self.built = 0
        self.errors: list[BaseException] = []
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self.run, name="nova-writes", daemon=True)

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                name = f"write-{self.done}"
                if self.done % 4 == 0:
                    uuid = self.writer.build_server(user_id="u1", project_id="proj-a",
                                                    flavor="2", name=name)["uuid"]
                    self.uuids.append(uuid)
                    self.built += 1
                else:
                    uuid = self.uuids[self.done % len(self.uuids)]
                    self.writer.update(uuid=uuid, name=name)
                self.names[uuid] = name
                self.done += 1
        except BaseException as exc:     # said by the test, after it stops the thread
            self.errors.append(exc)

    def wait_for_more(self, count: int, what: str) -> None:
        target = self.done + count
        wait_for(lambda: self.done >= target or self.errors, 120, interval=0.1,
                 what=f"{count} of Nova's writes {what}")
        assert not self.errors, self.errors

    def __enter__(self) -> "NovaWrites":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.halt.set()
        self.thread.join(120)
        assert not self.thread.is_alive(), "Nova's writes did not stop"


def transactions_journaled_twice(journal_path: str) -> list[tuple]:
    """Source transactions (GTIDs) the journal holds more than once: a key recorded twice
    under one GTID, or one GTID's rows not in one run of seqs."""
    conn = apsw.Connection(journal_path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(
            "SELECT gtid, count(*), count(DISTINCT kind || '/' || key), min(seq), max(seq) "
            "FROM journal WHERE gtid IS NOT NULL GROUP BY gtid "
            "HAVING count(*) != count(DISTINCT kind || '/' || key) "
            "OR max(seq) - min(seq) + 1 != count(*)").fetchall()
    finally:
        conn.close()


def test_a_node_restarted_while_nova_writes_through_another(stack, cluster):
    writing, restarted, publishing = cluster
    assert [node.cluster_size() for node in cluster] == [NODES] * NODES
    assert stack.nova.cell_url.find(f":{writing.port}/") > 0     # Nova writes on node 1
    stack.converged()
    epoch = stack.cell.state().epoch
    servers_before = len(stack.in_nova())

    with NovaWrites(stack.writer, sorted(stack.in_nova())[:5]) as writes:
        writes.wait_for_more(WRITES_PER_PHASE, "before node 2 stops")
        restarted.stop()
        wait_for(lambda: publishing.cluster_size() == NODES - 1, 60, interval=0.2,
                 what="node 2 gone from the cluster")
        writes.wait_for_more(WRITES_PER_PHASE, "while node 2 is down")
        restarted.start()       # rejoins (incremental state transfer) while Nova writes
        wait_for(lambda: publishing.cluster_size() == NODES, 60, interval=0.2,
                 what="node 2 back in the cluster")
        writes.wait_for_more(WRITES_PER_PHASE, "after node 2 rejoined")
    assert not writes.errors, writes.errors
    assert writes.done >= 3 * WRITES_PER_PHASE

    stack.converged()                   # journal at node 3's GTID position, verify: 0
    # nothing lost: every server Nova wrote, with the last name it was given
    in_replica, in_nova = stack.in_replica(), stack.in_nova()
    assert len(in_nova) == servers_before + writes.built
    assert set(in_replica) == set(in_nova)
    assert {uuid: in_replica[uuid][0] for uuid in writes.names} == writes.names
    # nothing doubled: each of the cluster's transactions journaled once
    assert transactions_journaled_twice(stack.cell.journal_path) == []
    # the same history on every node, and the publisher kept its epoch (no resync)
    wait_for(lambda: len({node.gtid_binlog_pos() for node in cluster}) == 1, 60,
             what="the same GTID position on the three nodes")
    assert stack.cell.state().epoch == epoch
    assert stack.ingest.cell("cell1")["resyncs"] == 1        # the first attach only
