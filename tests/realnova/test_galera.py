"""``appliance cell --source mysql://...`` on a MariaDB Galera cluster of two nodes, as
docs/cell-source-mariadb.md tells an operator to set it up: Nova made by nova-manage and
written by Nova's objects through one node, the publishers attached to the OTHER node
(whose binlog holds those writes through ``log_slave_updates``). Then a cluster's
everyday faults: the publisher's node restarted (it rejoins by incremental state transfer
while Nova goes on writing through the other), the publishers moved to the other node (a
new epoch: a resync), and the first node shut down.

The tests of this module run in order on one deployment (each leaves it converged)."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.realnova.galera import galera_fixture, galera_stack
from tests.realnova.test_mariadb_publisher import Publisher

cluster = galera_fixture(2)


@pytest.fixture(scope="module")
def stack(cluster):
    """Nova writing through the second node; the cell and flavor publishers reading the
    first node's binlog; ingest on both feeds."""
    publishing, writing = cluster
    with galera_stack(writing, publishing, "galera-publisher") as stack:
        yield stack


def test_writes_made_through_another_node_reach_the_replica(stack, cluster):
    publishing, writing = cluster
    assert publishing.cluster_size() == 2
    assert stack.nova.cell_url.find(f":{writing.port}/") > 0      # Nova writes on node 2
    stack.converged()
    w = stack.writer
    uuid = w.build_server(user_id="u1", project_id="proj-a", flavor="2", name="after")["uuid"]
    w.stop(uuid=uuid)
    w.set_metadata(uuid=uuid, metadata={"b": "2"})
    gone = sorted(set(stack.in_nova()) - {uuid})[0]     # another server than the new one
    w.delete(uuid=gone)
    stack.converged()
    assert stack.in_replica()[uuid][1] == "stopped"
    assert stack.in_replica()[gone][2] == 1
    # node 1 binlogged node 2's transactions with the cluster's GTIDs
    assert publishing.gtid_binlog_pos() == writing.gtid_binlog_pos()


def test_the_publishers_node_restarted_while_nova_writes_through_the_other(stack, cluster):
    publishing, _writing = cluster
    epoch = stack.cell.state().epoch
    publishing.stop()
    uuid = sorted(stack.in_nova())[1]
    stack.writer.update(uuid=uuid, name="while-node-1-was-down")
    publishing.start()          # rejoins: the missed write sets by incremental transfer
    stack.converged()
    assert stack.in_replica()[uuid][0] == "while-node-1-was-down"
    assert stack.cell.state().epoch == epoch          # same history: no resync


def _move(stack, node) -> None:
    """Stop both publishers and start them again against ``node``, keeping their state."""
    for name in ("cell", "flavors"):
        old = getattr(stack, name)
        old.stop()
        moved = Publisher(stack.workdir, node, old.name,
                          "nova_cell1" if name == "cell" else "nova_api",
                          "nova_api" if name == "cell" else None, flavors=name == "flavors")
        moved.start()
        setattr(stack, name, moved)
    stack.mariadb = node


def test_the_publishers_moved_to_the_other_node(stack, cluster):
    """Another node's binlog is another history (its own files and offsets), so the
    journal starts a new epoch there and every replica resyncs: correct, and documented
    as the cost of moving."""
    _publishing, writing = cluster
    epochs = {p.name: p.state().epoch for p in (stack.cell, stack.flavors)}
    _move(stack, writing)
    for publisher in (stack.cell, stack.flavors):
        wait_for(lambda: publisher.state().epoch != epochs[publisher.name], 60,
                 what=f"a new epoch of {publisher.name} on node 2")
        wait_for(lambda: stack.ingest.cell(publisher.name)["epoch"] ==
                 publisher.state().epoch, 60, what=f"ingest resynced {publisher.name}")
    uuid = sorted(stack.in_nova())[2]
    stack.writer.update(uuid=uuid, name="after-the-move")
    stack.converged()
    assert stack.in_replica()[uuid][0] == "after-the-move"


def test_the_first_node_shut_down(stack, cluster):
    """Node 1 leaves the cluster (a clean shutdown: in a cluster of two, a node killed
    outright would take the other's quorum with it); the publishers on node 2 go on."""
    publishing_before, writing = cluster
    epoch = stack.cell.state().epoch
    publishing_before.stop()
    wait_for(lambda: writing.cluster_size() == 1, 60, what="node 1 gone from the cluster")
    uuid = sorted(stack.in_nova())[3]
    stack.writer.update(uuid=uuid, name="after-node-1-was-lost")
    new = stack.writer.build_server(user_id="u1", project_id="proj-a", flavor="2",
                                    name="on-a-one-node-cluster")["uuid"]
    stack.converged()
    assert stack.in_replica()[uuid][0] == "after-node-1-was-lost"
    assert new in stack.in_replica()
    assert stack.cell.state().epoch == epoch
