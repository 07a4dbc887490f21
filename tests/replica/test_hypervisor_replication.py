"""Hypervisors travel with a cell's feed: its compute nodes with their host's
nova-compute service, published (outbox triggers on compute_nodes and services),
ingested as rendered rows, verified; a node's change, its service being disabled and
the node's soft delete reach the replica."""

from __future__ import annotations

import json

from replica import feed
from replica.cell import connection as cell_connection
from tests.conftest import wait_for
from tests.replica.conftest import built_entities, read_rows, replica_holds_source



def _built(db: str) -> dict[str, dict]:
    return built_entities(db, feed.KIND_HYPERVISOR)


def _converged(replica: str, source) -> bool:
    return replica_holds_source(replica, source, feed.KIND_HYPERVISOR)


def test_hypervisors_are_replicated_with_the_cell(make_cell, make_ingest, replica_path):
    source = make_cell("cell1")
    source.populate(12)
    nodes = _built(source.db)
    assert nodes and all(n["state"] == "up" and n["service_id"] is not None
                         for n in nodes.values())
    source.start()
    ing = make_ingest([source.feed()])
    ing.start()
    status = ing.wait_caught_up([source])
    wait_for(lambda: _converged(replica_path, source), 10, what="the hypervisors replicated")
    assert status["cell1"]["hypervisors"] == len(nodes)
    first, second, *_ = sorted(nodes.values(), key=lambda n: n["id"])
    conn = cell_connection.open_cell(source.db)
    with conn:
        conn.execute("UPDATE compute_nodes SET vcpus_used = 7, running_vms = 3 WHERE uuid = ?",
                     (first["uuid"],))
        conn.execute("UPDATE services SET disabled = 1, disabled_reason = 'maintenance' "
                     "WHERE host = ? AND \"binary\" = 'nova-compute'", (second["host"],))
    ing.wait_caught_up([source])
    wait_for(lambda: _converged(replica_path, source), 10, what="the changes replicated")
    (doc,) = [json.loads(d) for (d,) in read_rows(
        replica_path, "SELECT h_detail_v253 FROM hypervisors WHERE uuid = ?", (second["uuid"],))]
    assert doc["status"] == "disabled" and doc["service"]["disabled_reason"] == "maintenance"
    with conn:
        conn.execute("UPDATE compute_nodes SET deleted = id WHERE uuid = ?", (first["uuid"],))
    ing.wait_caught_up([source])
    wait_for(lambda: _converged(replica_path, source), 10, what="the delete replicated")
    keys = {k for (k,) in read_rows(replica_path, "SELECT uuid FROM hypervisors")}
    assert first["uuid"] not in keys and second["uuid"] in keys
    conn.close()
    job = ing.client.wait_job(ing.client.verify("cell1"), timeout=60)
    assert job["state"] == "done" and job["result"]["cells"]["cell1"]["differing"] == []
