"""Per-cell replication state: the states, every allowed edge, one transition function.

Dependency-free on purpose: status, metrics and the state machine in ingest all
name states from here, and an impossible transition is a bug that raises.
"""

from __future__ import annotations

import enum


class CellState(str, enum.Enum):
    CONNECTING = "connecting"    # no hello answered yet since start
    CATCHING_UP = "catching_up"  # replaying from position + 1 until the cell's head
    LIVE = "live"                # applying the feed as it arrives
    RESYNCING = "resyncing"      # loading a snapshot at seq S; live events > S buffered
    STALE = "stale"              # nothing heard for stale_after seconds; still serving


S = CellState

# state -> {next state: why this edge exists}
TRANSITIONS: dict[CellState, dict[CellState, str]] = {
    S.CONNECTING: {
        S.CATCHING_UP: "hello answered, same epoch: replay from the position",
        S.RESYNCING: "hello answered with another epoch, or no usable position",
        S.STALE: "the cell did not answer for stale_after seconds",
    },
    S.CATCHING_UP: {
        S.LIVE: "replay reached the head",
        S.RESYNCING: "epoch changed, or the position is older than the retention",
        S.STALE: "the cell went silent",
    },
    S.LIVE: {
        S.CATCHING_UP: "a gap: seq > position + 1, or a heartbeat head ahead of us",
        S.RESYNCING: "epoch changed, or a resync was requested",
        S.STALE: "the cell went silent",
    },
    S.RESYNCING: {
        S.CATCHING_UP: "snapshot swapped in: apply the buffered events, replay the rest",
        S.CONNECTING: "the snapshot failed; the old rows stay: ask the cell again",
    },
    S.STALE: {
        S.CATCHING_UP: "the cell is heard again",
        S.RESYNCING: "the cell is back with another epoch, or a resync was requested",
        S.CONNECTING: "the cell came back but its control socket must be asked again",
    },
}


class TransitionError(RuntimeError):
    """An edge that is not in TRANSITIONS: a bug in the caller."""


def transition(current: CellState, new: CellState) -> CellState:
    """Return ``new`` if ``current -> new`` is an allowed edge, else raise TransitionError."""
    if new not in TRANSITIONS[current]:
        raise TransitionError(f"cell state {current.value} -> {new.value} is not allowed")
    return new


def can_transition(current: CellState, new: CellState) -> bool:
    return new in TRANSITIONS[current]
