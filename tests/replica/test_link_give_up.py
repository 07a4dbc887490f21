"""The link's events seen from outside, with a real publisher and ingest: a cell that
answers for another name is given up (the reason in status, said once), while a good
cell's status tells the events that brought it live."""

from __future__ import annotations

from replica.ingest import CellFeed

from tests.conftest import wait_for


def test_a_cell_answering_for_another_name_is_given_up_with_the_reason_in_status(
        make_cell, make_ingest):
    c1 = make_cell("c1")
    c1.populate(10, seed=71)
    c1.start()
    ing = make_ingest([CellFeed("c1", c1.feed_url, c1.control_url),
                       CellFeed("c9", c1.feed_url, c1.control_url)])   # a wrong address
    ing.start()
    ing.wait_caught_up([c1])
    wrong = wait_for(lambda: (lambda c: c["error"] and c)(ing.cell("c9")), 20,
                     what="c9 given up")
    assert wrong["state"] == "connecting"
    assert wrong["error"] == "gave up: hello: control socket answers for cell 'c1'"
    cells = {c["cell"]: c for c in ing.client.status(edges=True)["cells"]}
    assert cells["c9"]["edges"] == {"connecting/link_refused": 1}
    assert cells["c9"]["last_event"] == "link_refused"
    assert cells["c1"]["last_event"] == "replay_done"
    assert {"connecting/position_unusable", "resyncing/snapshot_done",
            "catching_up/replay_done"} <= set(cells["c1"]["edges"])
    assert "last_event" not in ing.cell("c1")          # plain status keeps its keys
    said = [line for line in ing.proc.output().splitlines() if "gave up" in line]
    assert len(said) == 1 and "ERROR" in said[0], said
