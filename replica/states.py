"""Per-cell replication state: the states, the events that move a link, and every edge
in one table.

Dependency-free on purpose: status, metrics and the state machine in ingest all
name states from here. ``EDGES`` maps ``(state, event)`` to the next state, the
action ingest runs once the link is there, and why the edge exists; ingest's
``Ingest.apply`` is the one function that follows it. A pair that is not in the
table is a bug: ``edge`` raises.

``TRANSITIONS`` (state -> {other state: why}) is derived from ``EDGES``: it is what
the status page and the tests that place a link in a state go by.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class CellState(str, enum.Enum):
    CONNECTING = "connecting"    # no hello answered yet since start
    CATCHING_UP = "catching_up"  # replaying from position + 1 until the cell's head
    LIVE = "live"                # applying the feed as it arrives
    RESYNCING = "resyncing"      # loading a snapshot at seq S; live events > S buffered
    STALE = "stale"              # nothing heard for stale_after seconds; still serving


class LinkEvent(str, enum.Enum):
    # posted by the feed's SUB greenlet and by the committer
    GAP_SEEN = "gap_seen"                    # seq > position + 1, or a heartbeat's head
                                             # ahead of (or behind) the position
    STORE_FAILED = "store_failed"            # a commit failed: the position was rewound
    EPOCH_CLAIMED = "epoch_claimed"          # a feed message of another epoch
    # seen by the driver itself
    HEARTBEAT_SILENT = "heartbeat_silent"    # nothing heard for stale_after seconds
    HEARD_AGAIN = "heard_again"              # a silent cell is heard, the position known
    HEARD_AGAIN_UNPLACED = "heard_again_unplaced"  # ... and no position yet
    RESYNC_REQUESTED = "resync_requested"    # an operator's resync job
    EPOCH_CHANGED = "epoch_changed"          # the cell's hello says the epoch changed
    EPOCH_REFUTED = "epoch_refuted"          # the cell's hello says the claims were strays
    # outcomes of the driver's work in a state
    HELLO_OK = "hello_ok"                    # same epoch, position within the retention
    POSITION_UNUSABLE = "position_unusable"  # only a snapshot helps: first attach, another
                                             # epoch, beyond the retention, ahead of the head
    LINK_REFUSED = "link_refused"            # the cell's feed versions or name do not match
    REPLAY_DONE = "replay_done"              # the replay reached the cell's head
    SNAPSHOT_DONE = "snapshot_done"          # the snapshot is swapped in
    SNAPSHOT_FAILED = "snapshot_failed"      # the snapshot failed; the old rows stay
    VERIFY_DONE = "verify_done"              # a verify finished, the position at the head
    HEAD_AHEAD = "head_ahead"                # a verify finished behind the cell's head


class Action(str, enum.Enum):
    """What ingest does once a link has followed an edge (see ``Ingest.apply``)."""
    NONE = "-"
    COUNT_GAP = "count_gap"                      # gaps += 1
    HOLD_EPOCH_CLAIM = "hold_epoch_claim"        # keep it for the cell's hello to judge
    DEAD_LETTER_CLAIMS = "dead_letter_claims"    # as ``foreign_epoch``
    FAIL_VERIFIES = "fail_verifies"              # verify jobs of a stale cell fail
    APPLY_BUFFERED = "apply_buffered"            # live events kept during the snapshot


class Edge(NamedTuple):
    next: CellState
    action: Action
    why: str


S, E, A = CellState, LinkEvent, Action

_WAIT_FOR_HELLO = "hello decides where to start"
_REPLAY_COVERS = "already catching up: the replay covers it"
_SNAPSHOT_COVERS = "the snapshot, and the replay after it, cover it"
_CATCH_UP_LATER = "catching up follows when the cell is heard again"

# Every edge of the link, in one place. Events posted from outside the driver (the
# first three) are consumed later, maybe in another state: each state says what it
# does with them.
EDGES: dict[tuple[CellState, LinkEvent], Edge] = {
    # -- connecting -----------------------------------------------------------------
    (S.CONNECTING, E.HELLO_OK): Edge(
        S.CATCHING_UP, A.NONE, "hello answered, same epoch: replay from the position"),
    (S.CONNECTING, E.POSITION_UNUSABLE): Edge(
        S.RESYNCING, A.NONE, "hello answered with another epoch, or no usable position"),
    (S.CONNECTING, E.LINK_REFUSED): Edge(
        S.CONNECTING, A.NONE, "the cell speaks another feed version or is another cell: "
                              "asked again only now and then"),
    (S.CONNECTING, E.HEARTBEAT_SILENT): Edge(
        S.STALE, A.FAIL_VERIFIES, "the cell did not answer for stale_after seconds"),
    (S.CONNECTING, E.RESYNC_REQUESTED): Edge(S.RESYNCING, A.NONE, "a resync was requested"),
    (S.CONNECTING, E.GAP_SEEN): Edge(S.CONNECTING, A.NONE, _WAIT_FOR_HELLO),
    (S.CONNECTING, E.STORE_FAILED): Edge(S.CONNECTING, A.NONE, _WAIT_FOR_HELLO),
    (S.CONNECTING, E.EPOCH_CLAIMED): Edge(
        S.CONNECTING, A.HOLD_EPOCH_CLAIM, "judged by a hello once the link is placed"),
    # -- catching up ----------------------------------------------------------------
    (S.CATCHING_UP, E.REPLAY_DONE): Edge(
        S.LIVE, A.NONE, "replay reached the head (committed; the cell counts as live "
                        "from the first time)"),
    (S.CATCHING_UP, E.POSITION_UNUSABLE): Edge(
        S.RESYNCING, A.NONE, "the position is older than the retention, of another epoch, "
                             "or ahead of the cell's head"),
    (S.CATCHING_UP, E.EPOCH_CHANGED): Edge(
        S.RESYNCING, A.NONE, "the cell's hello confirms another epoch"),
    (S.CATCHING_UP, E.EPOCH_REFUTED): Edge(
        S.CATCHING_UP, A.DEAD_LETTER_CLAIMS, "the cell's hello says the claims were strays"),
    (S.CATCHING_UP, E.HEARTBEAT_SILENT): Edge(
        S.STALE, A.FAIL_VERIFIES, "the cell went silent"),
    (S.CATCHING_UP, E.RESYNC_REQUESTED): Edge(S.RESYNCING, A.NONE, "a resync was requested"),
    (S.CATCHING_UP, E.GAP_SEEN): Edge(S.CATCHING_UP, A.NONE, _REPLAY_COVERS),
    (S.CATCHING_UP, E.STORE_FAILED): Edge(S.CATCHING_UP, A.NONE, _REPLAY_COVERS),
    (S.CATCHING_UP, E.EPOCH_CLAIMED): Edge(
        S.CATCHING_UP, A.HOLD_EPOCH_CLAIM, "kept for the cell's hello to judge"),
    # -- live -----------------------------------------------------------------------
    (S.LIVE, E.GAP_SEEN): Edge(
        S.CATCHING_UP, A.COUNT_GAP, "a gap: seq > position + 1, or a heartbeat head ahead "
                                    "of us (or behind: a cell restored from an older copy)"),
    (S.LIVE, E.STORE_FAILED): Edge(
        S.CATCHING_UP, A.NONE, "a commit failed: the position went back to the committed "
                               "one, the replay brings the rest again"),
    (S.LIVE, E.HEAD_AHEAD): Edge(
        S.CATCHING_UP, A.NONE, "a verify ended behind the cell's head"),
    (S.LIVE, E.VERIFY_DONE): Edge(S.LIVE, A.NONE, "a verify ended at the head"),
    (S.LIVE, E.POSITION_UNUSABLE): Edge(
        S.RESYNCING, A.NONE, "a verify found the cell at another epoch"),
    (S.LIVE, E.EPOCH_CHANGED): Edge(
        S.RESYNCING, A.NONE, "the cell's hello confirms another epoch"),
    (S.LIVE, E.EPOCH_REFUTED): Edge(
        S.LIVE, A.DEAD_LETTER_CLAIMS, "the cell's hello says the claims were strays"),
    (S.LIVE, E.RESYNC_REQUESTED): Edge(S.RESYNCING, A.NONE, "a resync was requested"),
    (S.LIVE, E.HEARTBEAT_SILENT): Edge(S.STALE, A.FAIL_VERIFIES, "the cell went silent"),
    (S.LIVE, E.EPOCH_CLAIMED): Edge(
        S.LIVE, A.HOLD_EPOCH_CLAIM, "kept for the cell's hello to judge"),
    # -- resyncing ------------------------------------------------------------------
    (S.RESYNCING, E.SNAPSHOT_DONE): Edge(
        S.CATCHING_UP, A.APPLY_BUFFERED,
        "snapshot swapped in: apply the buffered events, replay the rest"),
    (S.RESYNCING, E.SNAPSHOT_FAILED): Edge(
        S.CONNECTING, A.NONE, "the snapshot failed (its resync jobs fail); the old rows "
                              "stay: ask the cell again"),
    (S.RESYNCING, E.GAP_SEEN): Edge(S.RESYNCING, A.NONE, _SNAPSHOT_COVERS),
    (S.RESYNCING, E.STORE_FAILED): Edge(S.RESYNCING, A.NONE, _SNAPSHOT_COVERS),
    (S.RESYNCING, E.EPOCH_CLAIMED): Edge(
        S.RESYNCING, A.HOLD_EPOCH_CLAIM, "judged by a hello once the snapshot is in"),
    # -- stale ----------------------------------------------------------------------
    (S.STALE, E.HEARD_AGAIN): Edge(S.CATCHING_UP, A.NONE, "the cell is heard again"),
    (S.STALE, E.HEARD_AGAIN_UNPLACED): Edge(
        S.CONNECTING, A.NONE, "the cell is heard again, and no position yet: ask its hello"),
    (S.STALE, E.EPOCH_CHANGED): Edge(
        S.RESYNCING, A.NONE, "the cell is back with another epoch"),
    (S.STALE, E.EPOCH_REFUTED): Edge(
        S.STALE, A.DEAD_LETTER_CLAIMS, "the cell's hello says the claims were strays"),
    (S.STALE, E.RESYNC_REQUESTED): Edge(S.RESYNCING, A.NONE, "a resync was requested"),
    (S.STALE, E.GAP_SEEN): Edge(S.STALE, A.NONE, _CATCH_UP_LATER),
    (S.STALE, E.STORE_FAILED): Edge(S.STALE, A.NONE, _CATCH_UP_LATER),
    (S.STALE, E.EPOCH_CLAIMED): Edge(
        S.STALE, A.HOLD_EPOCH_CLAIM, "kept for the cell's hello to judge"),
}

# Events that may wait in a link's inbox: posted by the SUB greenlet or the committer,
# consumed by the driver in whatever state it is then (every state has an edge for them).
POSTED_EVENTS = (E.GAP_SEEN, E.STORE_FAILED, E.EPOCH_CLAIMED)


class TransitionError(RuntimeError):
    """A (state, event) pair or an edge that is not in the table: a bug in the caller."""


def edge(current: CellState, event: LinkEvent) -> Edge:
    """The edge ``event`` follows from ``current``; a pair not in EDGES raises."""
    try:
        return EDGES[(current, event)]
    except KeyError:
        raise TransitionError(f"event {event.value} is not possible in cell state "
                              f"{current.value}") from None


def _derived_transitions() -> dict[CellState, dict[CellState, str]]:
    table: dict[CellState, dict[CellState, str]] = {state: {} for state in CellState}
    for (state, _event), (new, _action, why) in EDGES.items():
        if new is not state:
            edges = table[state]
            edges[new] = f"{edges[new]}; {why}" if new in edges else why
    return table


# state -> {next state: why this edge exists}, from EDGES
TRANSITIONS: dict[CellState, dict[CellState, str]] = _derived_transitions()


def transition(current: CellState, new: CellState) -> CellState:
    """Return ``new`` if some event takes ``current`` to ``new``, else raise
    TransitionError."""
    if new not in TRANSITIONS[current]:
        raise TransitionError(f"cell state {current.value} -> {new.value} is not allowed")
    return new


def can_transition(current: CellState, new: CellState) -> bool:
    return new in TRANSITIONS[current]


def edges_markdown() -> str:
    """EDGES as a Markdown table (docs/architecture.md holds it; a test compares)."""
    lines = ["| state | event | next state | action | why |",
             "|---|---|---|---|---|"]
    for (state, event), (new, action, why) in EDGES.items():
        lines.append(f"| `{state.value}` | `{event.value}` | `{new.value}` | "
                     f"{'-' if action is A.NONE else f'`{action.value}`'} | {why} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":   # python -m replica.states: the table for docs/architecture.md
    print(edges_markdown(), end="")
