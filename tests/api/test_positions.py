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


def test_feed_heads_are_asked_with_each_feeds_key(tmp_path):
    """The workers' read-your-writes heads: a sealed cell answers hello to its key; a
    feed whose key does not open is left out (a read then does not wait for it)."""
    import os
    import subprocess
    import sys

    from appliance.api.positions import FeedHeads
    from replica.cell.outbox import init_cell_db
    from replica.key_file import write_new_key_file
    from tests.conftest import ROOT, wait_for

    db, key, wrong = (str(tmp_path / n) for n in ("c1.db", "c1.key", "wrong.key"))
    epoch = init_cell_db(db, "c1")
    write_new_key_file(key)
    write_new_key_file(wrong)
    control = f"ipc://{tmp_path}/c1.ctl"
    with open(tmp_path / "publisher.log", "wb") as log:
        publisher = subprocess.Popen(
            [sys.executable, "-m", "replica.cell.publisher", "--db", db, "--name", "c1",
             "--feed", f"ipc://{tmp_path}/c1.feed", "--control", control, "--key-file", key],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, stdout=log,
            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: os.path.exists(control[len("ipc://"):]), 15, what="control socket")
        heads = FeedHeads((("c1", control, key), ("c1-wrong", control, wrong),
                           ("c1-plain", control)), timeout=2.0)
        found = wait_for(lambda: heads.heads().get("c1"), 15, what="the sealed hello")
        assert found == (epoch, 0)
        assert set(heads.heads()) == {"c1"}
    finally:
        publisher.terminate()
        publisher.wait(15)
