"""The read-your-writes position header: its format and when a position counts as
reached (pure functions of appliance/api/positions.py)."""

from __future__ import annotations

import pytest

from appliance.api.positions import format_position, parse_position, reached


def test_format_and_parse_round_trip():
    heads = {"cell2": ("e2", 7), "cell1": ("4f2a", 1234), "flavors": ("f", 0)}
    text = format_position(heads)
    assert text == "cell1@4f2a:1234,cell2@e2:7,flavors@f:0"
    assert parse_position(text) == heads


@pytest.mark.parametrize("text", ["", "cell1", "cell1@e", "cell1@e:x", "@e:1", "c@:1",
                                  "c@e:1;d@e:2", ",".join(f"c{n}@e:1" for n in range(65)),
                                  "c@e:1" + "9" * 20])
def test_malformed_positions_are_refused(text):
    assert parse_position(text) is None


@pytest.mark.parametrize("applied, expected", [
    ({"cell1": ("e", 10), "cell2": ("f", 5)}, (True, False)),
    ({"cell1": ("e", 11), "cell2": ("f", 9)}, (True, False)),
    ({"cell1": ("e", 9), "cell2": ("f", 5)}, (False, True)),     # behind: worth waiting
    ({"cell2": ("f", 5)}, (False, True)),                        # not replicated yet
    ({"cell1": ("other", 99), "cell2": ("f", 5)}, (False, False)),  # another epoch
])
def test_reached(applied, expected):
    assert reached({"cell1": ("e", 10), "cell2": ("f", 5)}, applied) == expected
