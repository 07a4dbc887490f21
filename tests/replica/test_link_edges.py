"""The link's event table (replica.states.EDGES) as ingest follows it: every edge is
reachable and leads where the table says, a pair not in the table is refused loudly,
errors are classed by what the driver does, and the documentation shows the table."""

from __future__ import annotations

import collections
import logging
import os
import re
import time

import pytest

from replica import feed, link_errors, resync, states
from replica import ingest as ingest_module
from replica.ingest import CellFeed, Ingest, IngestConfig
from replica.ingest_control import ControlTimeout
from replica.position import Position
from replica.states import EDGES, Action, CellState, LinkEvent, TransitionError

from tests.conftest import ROOT
from tests.replica.conftest import StandInRender

S, E = CellState, LinkEvent

# what an event brings along when the table's action needs it
EVENT_DATA = {E.EPOCH_CLAIMED: ("OTHER", b"payload"), E.EPOCH_REFUTED: ("E", [])}


@pytest.fixture
def ingest(replica_path):
    config = IngestConfig(replica_path, [CellFeed("c1", "ipc:///nonexistent/f",
                                                  "ipc:///nonexistent/c")],
                          "ipc:///nonexistent/i")
    ing = Ingest(config, renderer=StandInRender(replica_path))
    ing.links["c1"].position = Position("c1", "E", 0)
    yield ing
    ing.conn.close()


def _paths_from_connecting() -> dict[CellState, list[LinkEvent]]:
    """The shortest list of events that takes a new link to each state."""
    paths = {S.CONNECTING: []}
    queue = collections.deque([S.CONNECTING])
    while queue:
        state = queue.popleft()
        for (at, event), edge in EDGES.items():
            if at is state and edge.next not in paths:
                paths[edge.next] = paths[state] + [event]
                queue.append(edge.next)
    return paths


def _apply(ing, link, event):
    return ing.apply(link, event, f"test {event.value}", EVENT_DATA.get(event))


def test_every_state_is_reachable_and_every_event_and_action_is_used():
    assert set(_paths_from_connecting()) == set(CellState)
    assert {event for _, event in EDGES} == set(LinkEvent)
    assert {edge.action for edge in EDGES.values()} == set(Action)
    assert all(edge.why for edge in EDGES.values())


def test_every_action_has_a_handler(ingest):
    assert set(ingest._actions) == set(Action)
    assert all(handler is not None for action, handler in ingest._actions.items()
               if action is not Action.NONE)


@pytest.mark.parametrize("state,event", list(EDGES), ids=lambda v: v.value)
def test_every_edge_is_reachable_and_leads_where_the_table_says(ingest, state, event):
    link = ingest.links["c1"]
    for step in _paths_from_connecting()[state]:
        _apply(ingest, link, step)
    assert link.state is state
    before = link.edge_counts[(state, event)]
    assert _apply(ingest, link, event) is EDGES[(state, event)].next
    assert link.state is EDGES[(state, event)].next
    assert link.edge_counts[(state, event)] == before + 1
    assert link.last_event == event.value and link.last_edge_at is not None


ILLEGAL = [(state, event) for state in CellState for event in LinkEvent
           if (state, event) not in EDGES]


def test_some_pairs_are_illegal():
    assert (S.CONNECTING, E.REPLAY_DONE) in ILLEGAL      # never live without catching up
    assert (S.RESYNCING, E.HEARTBEAT_SILENT) in ILLEGAL
    assert (S.LIVE, E.SNAPSHOT_DONE) in ILLEGAL


@pytest.mark.parametrize("state,event", ILLEGAL, ids=lambda v: v.value)
def test_an_illegal_pair_is_refused_loudly_and_changes_nothing(ingest, state, event, caplog):
    link = ingest.links["c1"]
    for step in _paths_from_connecting()[state]:
        _apply(ingest, link, step)
    counts = dict(link.edge_counts)
    caplog.set_level(logging.ERROR, logger="replica.ingest")
    with pytest.raises(TransitionError, match=f"{event.value} is not possible in cell state "
                                              f"{state.value}"):
        _apply(ingest, link, event)
    assert link.state is state and dict(link.edge_counts) == counts
    assert any("BUG" in r.getMessage() and event.value in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR)


@pytest.mark.parametrize("state", list(CellState), ids=lambda v: v.value)
def test_posted_events_have_an_edge_in_every_state(state):
    # The driver applies them later, in whatever state the link is then.
    for event in states.POSTED_EVENTS:
        assert (state, event) in EDGES


def test_only_posted_events_may_be_posted_and_they_wait_once(ingest):
    link = ingest.links["c1"]
    with pytest.raises(TransitionError):
        link.post(E.SNAPSHOT_DONE)
    link.post(E.GAP_SEEN, "one")
    link.post(E.GAP_SEEN, "two")
    link.post(E.STORE_FAILED, "commit")
    assert [event for event, _, _ in link.inbox] == [E.GAP_SEEN, E.STORE_FAILED]
    for i in range(ingest_module.EPOCH_CLAIMS_MAX + 5):
        link.claim_epoch("OTHER", b"x" * 5000)
    assert len(link.epoch_claims) == ingest_module.EPOCH_CLAIMS_MAX
    assert all(len(payload) == 4096 for _, payload in link.epoch_claims)


def test_the_driver_applies_the_inbox_in_order(ingest, monkeypatch):
    link = ingest.links["c1"]
    for step in _paths_from_connecting()[S.LIVE]:
        _apply(ingest, link, step)
    link.post(E.GAP_SEEN, "batch from 5 after 3")
    link.claim_epoch("OTHER", b"p")
    monkeypatch.setattr(ingest, "_catch_up_page", lambda link: None)   # no cell here
    link.claims_judged_at = time.monotonic()      # a hello just now: the next one waits
    ingest._step(link)
    assert link.state is S.CATCHING_UP and link.gaps == 1 and not link.inbox
    assert link.held_claims == [("OTHER", b"p")]        # held for the cell's hello


def test_claims_the_hello_refutes_are_dead_lettered(ingest, monkeypatch):
    link = ingest.links["c1"]
    for step in _paths_from_connecting()[S.LIVE]:
        _apply(ingest, link, step)
    link.claim_epoch("OTHER", b"p")
    monkeypatch.setattr(ingest, "request", lambda link, op, **kw: {"epoch": "E"})
    ingest._step(link)
    ingest.commit()
    assert link.state is S.LIVE and not link.epoch_claims
    assert [d["reason"] for d in ingest.writer.dead_letters()] == ["foreign_epoch"]
    assert link.edge_counts[(S.LIVE, E.EPOCH_REFUTED)] == 1


def test_claims_the_hello_confirms_start_a_resync(ingest, monkeypatch):
    link = ingest.links["c1"]
    for step in _paths_from_connecting()[S.LIVE]:
        _apply(ingest, link, step)
    link.claim_epoch("OTHER", b"p")
    monkeypatch.setattr(ingest, "request", lambda link, op, **kw: {"epoch": "OTHER"})
    monkeypatch.setattr(ingest, "_resync", lambda link: None)
    ingest._step(link)
    assert link.state is S.RESYNCING and link.resync_reason == "new epoch"
    assert link.new_epoch_flag
    assert not link.epoch_claims and ingest.writer.dead_letters() == []


def _snapshot_at(epoch: str, seq: int):
    """A stand-in for resync.resync_cell: the swap moves the link to (epoch, seq)."""
    def snapshot(ing, link, progress=None):
        link.buffer, link.buffered_events = [], 0
        link.position = Position(link.name, epoch, seq)
        return link.position
    return snapshot


def test_claims_of_the_epoch_a_resync_moved_to_are_not_dead_lettered(ingest, monkeypatch):
    """The race: the cell's hello confirms a new epoch while more feed messages of that
    epoch arrive; they wait through the snapshot, which moves the link to that very
    epoch. Judged afterwards against the hello they are no strays (the snapshot and the
    replay cover them); a message of a third epoch held alongside still is one."""
    link = ingest.links["c1"]
    for step in _paths_from_connecting()[S.LIVE]:
        _apply(ingest, link, step)
    link.claim_epoch("NEW", b"heartbeat that started it")
    hellos = []

    def hello(link_, op, **kw):
        assert op == "hello"
        hellos.append(op)
        if len(hellos) == 1:        # the feed goes on while the cell answers
            link_.claim_epoch("NEW", b"batch during the hello")
            link_.claim_epoch("ROGUE", b"a stray")
        return {"epoch": "NEW"}

    monkeypatch.setattr(ingest, "request", hello)
    monkeypatch.setattr(resync, "resync_cell", _snapshot_at("NEW", 7))
    monkeypatch.setattr(ingest, "_catch_up_page", lambda link: None)   # no cell here
    ingest._step(link)              # the hello confirms; the snapshot is swapped in
    assert link.state is S.CATCHING_UP and link.position == Position("c1", "NEW", 7)
    assert len(link.inbox) == 2 and link.edge_counts[(S.LIVE, E.EPOCH_CHANGED)] == 1
    link.claims_judged_at = 0.0     # the next hello is due
    ingest._step(link)
    ingest.commit()
    letters = ingest.writer.dead_letters()
    assert [d["reason"] for d in letters] == ["foreign_epoch"]
    assert "'ROGUE'" in letters[0]["message"] and link.dead_letters == 1
    assert not link.epoch_claims and link.state is S.CATCHING_UP and len(hellos) == 2


def test_claims_held_when_a_replay_finds_the_new_epoch_are_not_dead_lettered(ingest,
                                                                              monkeypatch):
    """The same race by the other door: claims wait (a hello for claims was asked just
    before) while the replay finds the position's epoch gone; the resync that follows
    moves the link to the claimed epoch, and no hello is needed for them at all."""
    link = ingest.links["c1"]
    for step in _paths_from_connecting()[S.CATCHING_UP]:
        _apply(ingest, link, step)
    link.claim_epoch("NEW", b"heartbeat")
    link.claims_judged_at = time.monotonic()      # a hello just now: the next one waits

    asked = []

    def cell(link_, op, **kw):
        asked.append(op)
        if op == "replay":
            raise feed.ControlError("replay", "epoch", "the cell is at another epoch")
        return {"epoch": "NEW"}

    monkeypatch.setattr(ingest, "request", cell)
    monkeypatch.setattr(resync, "resync_cell", _snapshot_at("NEW", 3))
    with pytest.raises(link_errors.Resync):
        ingest._step(link)
    assert link.held_claims == [("NEW", b"heartbeat")]
    _apply(ingest, link, E.POSITION_UNUSABLE)     # what the driver's loop does with it
    ingest._step(link)                            # the snapshot swapped in
    assert link.state is S.CATCHING_UP and link.position.epoch == "NEW"
    link.claims_judged_at = 0.0
    monkeypatch.setattr(ingest, "_catch_up_page", lambda link: None)
    ingest._step(link)
    ingest.commit()
    assert ingest.writer.dead_letters() == [] and link.dead_letters == 0
    assert not link.epoch_claims and asked == ["replay"]


def test_claims_held_while_connecting_to_a_cell_at_a_new_epoch_are_not_dead_lettered(
        ingest, monkeypatch):
    """Ingest starts again after the cell moved to a new epoch: its messages are held
    while connecting, the hello sends the link to a snapshot of that epoch."""
    link = ingest.links["c1"]
    assert link.state is S.CONNECTING and link.position.epoch == "E"
    link.claim_epoch("NEW", b"heartbeat")
    asked = []

    def cell(link_, op, **kw):
        asked.append(op)
        return {"epoch": "NEW", "head": 4, "oldest": 1, "cell": "c1",
                "versions": [feed.FEED_VERSION]}

    monkeypatch.setattr(ingest, "request", cell)
    monkeypatch.setattr(resync, "resync_cell", _snapshot_at("NEW", 4))
    with pytest.raises(link_errors.Resync, match="epoch"):
        ingest._step(link)
    assert link.held_claims == [("NEW", b"heartbeat")]
    _apply(ingest, link, E.POSITION_UNUSABLE)     # what the driver's loop does with it
    ingest._step(link)
    assert link.state is S.CATCHING_UP and link.position.epoch == "NEW"
    monkeypatch.setattr(ingest, "_catch_up_page", lambda link: None)
    ingest._step(link)
    ingest.commit()
    assert ingest.writer.dead_letters() == [] and not link.epoch_claims
    assert asked == ["hello"]


@pytest.mark.parametrize("exc,cls", [
    (ControlTimeout("no reply"), link_errors.Retry),
    (feed.ControlError("snapshot_begin", "epoch", "reopening"), link_errors.Retry),
    (feed.FeedError("malformed", "x"), link_errors.Retry),
    (ingest_module.CellFault("replay refused"), link_errors.Retry),
    (link_errors.Resync("replay from 5: retention"), link_errors.Resync),
    (link_errors.GiveUp("hello: feed versions"), link_errors.GiveUp),
])
def test_errors_are_classed_by_what_the_driver_does(exc, cls):
    classed = link_errors.classify(exc)
    assert isinstance(classed, cls) and classed.reason == str(exc)
    assert isinstance(classed, link_errors.LinkError)


def test_an_error_no_class_covers_is_a_bug():
    assert link_errors.classify(KeyError("a bug")) is None


def test_a_replay_that_needs_a_resync_moves_the_link_with_its_reason(ingest, monkeypatch):
    link = ingest.links["c1"]
    for step in _paths_from_connecting()[S.CATCHING_UP]:
        _apply(ingest, link, step)

    def refused(link, op, **kw):
        raise feed.ControlError("replay", "retention", "gone")

    monkeypatch.setattr(ingest, "request", refused)
    with pytest.raises(link_errors.Resync, match="replay from 1: retention"):
        ingest._step(link)


def test_a_cell_that_does_not_match_is_given_up_with_the_reason_shown(ingest, monkeypatch,
                                                                     caplog):
    monkeypatch.setattr(ingest_module, "GIVE_UP_RETRY", 0.05)
    monkeypatch.setattr(ingest, "request", lambda link, op, **kw: {
        "versions": [feed.FEED_VERSION], "cell": "c2", "epoch": "E", "head": 0, "oldest": 1})
    link = ingest.links["c1"]
    caplog.set_level(logging.WARNING, logger="replica.ingest")
    for _ in range(2):
        with pytest.raises(link_errors.GiveUp) as raised:
            ingest._step(link)
        assert ingest._step_failed(link, raised.value, 0.1) == 0
    assert link.state is S.CONNECTING
    assert link.error == "gave up: hello: control socket answers for cell 'c2'"
    assert link.edge_counts[(S.CONNECTING, E.LINK_REFUSED)] == 2
    said = [r for r in caplog.records if "gave up" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR     # once, loudly
    status = ingest.status()["cells"][0]
    assert status["state"] == "connecting" and status["error"].startswith("gave up")


def test_status_shows_the_last_event_only_when_asked(ingest):
    link = ingest.links["c1"]
    _apply(ingest, link, E.HELLO_OK)
    plain = ingest.status()["cells"][0]
    assert "last_event" not in plain
    cell = ingest.status({"edges": True})["cells"][0]
    assert set(cell) == set(plain) | {"last_event", "last_edge_at", "edges"}
    assert cell["last_event"] == "hello_ok" and cell["edges"] == {"connecting/hello_ok": 1}


def test_the_architecture_doc_shows_the_table_as_declared():
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
        text = f.read()
    found = re.search(r"<!-- link-edges:begin -->\n(.*?)<!-- link-edges:end -->", text, re.S)
    assert found, "docs/architecture.md lacks the link-edges markers"
    assert found.group(1) == states.edges_markdown(), \
        "docs/architecture.md's table is out of date: python -m replica.states"


def test_a_given_up_link_waits_for_its_retry_or_a_resync_request(ingest, monkeypatch):
    from replica.ingest import CellRequest
    from replica.ingest_control import Job

    monkeypatch.setattr(ingest_module, "GIVE_UP_RETRY", 0.5)
    link = ingest.links["c1"]
    link.requests.append(CellRequest("verify", Job("verify", ["c1"])))
    began = time.monotonic()
    ingest._step_failed(link, link_errors.GiveUp("hello: feed versions"), 0.1)
    assert time.monotonic() - began >= 0.45      # a verify does not make it ask again now
    link.requests.append(CellRequest("resync", Job("resync", ["c1"])))
    began = time.monotonic()
    ingest._step_failed(link, link_errors.GiveUp("hello: feed versions"), 0.1)
    assert time.monotonic() - began < 0.4        # an operator's resync does


def test_a_replay_error_is_a_gap_and_a_retry(ingest):
    link = ingest.links["c1"]
    for step in _paths_from_connecting()[S.LIVE]:
        _apply(ingest, link, step)
    assert ingest._step_failed(link, link_errors.Replay("replay from 4 began at 9"), 0.4) == 0.4
    assert link.state is S.CATCHING_UP and link.gaps == 1
    assert ingest._step_failed(link, link_errors.Replay("replay from 4 began at 9"), 0.8) == 0.8
    assert link.state is S.CATCHING_UP and link.gaps == 1       # the replay covers it
    assert link.error == "replay from 4 began at 9"


def test_an_illegal_pair_from_an_error_does_not_end_the_driver(ingest, caplog, monkeypatch):
    monkeypatch.setattr(ingest_module, "GIVE_UP_RETRY", 0.05)
    link = ingest.links["c1"]
    for step in _paths_from_connecting()[S.LIVE]:
        _apply(ingest, link, step)
    caplog.set_level(logging.ERROR, logger="replica.ingest")
    # GiveUp comes from hello only; in another state its edge is missing: said, not raised
    assert ingest._step_failed(link, link_errors.GiveUp("x"), 0.1) == 0
    assert link.state is S.LIVE
    assert any("BUG" in r.getMessage() for r in caplog.records)


def test_live_batches_are_kept_only_while_a_snapshot_is_taken(ingest):
    from tests.replica.conftest import make_server
    link = ingest.links["c1"]
    server = make_server()
    batch = feed.encode_batch("c1", "E", [feed.Event(1, feed.KIND_SERVER, feed.OP_UPSERT,
                                                     server["uuid"], server)])
    for step in _paths_from_connecting()[S.RESYNCING]:
        _apply(ingest, link, step)
    ingest.on_message(link, batch)              # a resync held back: nothing kept
    assert not link.buffering and link.buffer is None
    link.buffer, link.buffered_events = [], 0   # what resync_cell does when it begins
    ingest.on_message(link, batch)
    assert link.buffering and link.buffered_events == 1
    _apply(ingest, link, E.SNAPSHOT_DONE)       # applies them, buffering ends
    assert link.buffer is None and link.position.seq == 1
