"""Key pairs travel with the flavor source (Nova's API database): seeded, published,
ingested as rendered rows, verified, and a change or a delete of one reaches the
replica."""

from __future__ import annotations

from replica import feed
from replica.cell import connection as cell_connection
from replica.cell.simulator import DEMO_KEYPAIRS, seed_flavors
from tests.conftest import wait_for
from tests.replica.conftest import built_entities, read_rows, replica_holds_source



def _built(db: str) -> dict[str, dict]:
    return built_entities(db, feed.KIND_KEYPAIR)


def _converged(replica: str, source) -> bool:
    return replica_holds_source(replica, source, feed.KIND_KEYPAIR)


def test_keypairs_are_replicated_with_the_flavor_source(make_cell, make_ingest,
                                                        replica_path):
    source = make_cell("flavors", flavors=True)
    seed_flavors(source.db)
    assert len(_built(source.db)) == len(DEMO_KEYPAIRS)
    source.start()
    ing = make_ingest([source.feed()])
    ing.start()
    status = ing.wait_caught_up([source])
    wait_for(lambda: _converged(replica_path, source), 10, what="the key pairs replicated")
    assert status["flavors"]["keypairs"] == len(DEMO_KEYPAIRS)
    conn = cell_connection.open_cell(source.db)
    with conn:
        conn.execute("INSERT INTO key_pairs (created_at, name, user_id, fingerprint, "
                     "public_key, type) VALUES ('2026-11-05 00:00:00', 'new', 'u1', 'f', "
                     "'ssh-rsa AAAA', 'ssh')")
        conn.execute("DELETE FROM key_pairs WHERE user_id = 'admin' AND name = 'ops-key'")
    ing.wait_caught_up([source])
    wait_for(lambda: _converged(replica_path, source), 10, what="the changes replicated")
    keys = {k for (k,) in read_rows(replica_path, "SELECT keypair_key FROM keypairs")}
    assert "u1/new" in keys and "admin/ops-key" not in keys
    conn.close()
    job = ing.client.wait_job(ing.client.verify("flavors"), timeout=60)
    assert job["state"] == "done" and job["result"]["cells"]["flavors"]["differing"] == []
