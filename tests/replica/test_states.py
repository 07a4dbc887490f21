"""The per-cell state machine's table and transition function."""

import pytest

from replica.states import TRANSITIONS, CellState, TransitionError, can_transition, transition


def test_every_state_has_edges_and_no_self_loops():
    assert set(TRANSITIONS) == set(CellState)
    for state, edges in TRANSITIONS.items():
        assert edges, state
        assert state not in edges
        assert all(why for why in edges.values())


def test_allowed_edges_return_the_new_state():
    assert transition(CellState.CONNECTING, CellState.CATCHING_UP) is CellState.CATCHING_UP
    assert transition(CellState.LIVE, CellState.CATCHING_UP) is CellState.CATCHING_UP
    assert transition(CellState.RESYNCING, CellState.CATCHING_UP) is CellState.CATCHING_UP
    assert transition(CellState.STALE, CellState.CATCHING_UP) is CellState.CATCHING_UP


@pytest.mark.parametrize("current,new", [
    (CellState.CONNECTING, CellState.LIVE),     # never live without catching up
    (CellState.RESYNCING, CellState.LIVE),      # buffered events first
    (CellState.LIVE, CellState.CONNECTING),
    (CellState.LIVE, CellState.LIVE),
])
def test_impossible_edges_raise(current, new):
    assert not can_transition(current, new)
    with pytest.raises(TransitionError, match=f"{current.value} -> {new.value}"):
        transition(current, new)


def test_values_are_the_status_strings():
    assert [s.value for s in CellState] == ["connecting", "catching_up", "live", "resyncing",
                                            "stale"]
