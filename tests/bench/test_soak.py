"""The fault run on a tiny deployment for ~25 s with a fixed seed and a few faults (no
full disk: that needs root to mount a tmpfs): the JSON has its shape and every check
passed. The checks themselves are unit-tested below on made-up reads."""

from __future__ import annotations

import json

from bench import soak


def test_a_short_soak_passes_and_writes_its_result(tmp_path, capsys):
    out = tmp_path / "soak.json"
    code = soak.main(["--minutes", "0.4", "--seed", "7", "--servers", "200", "--readers", "2",
                      "--faults", "kill_worker,kill_publisher,rogue_burst",
                      "--no-tmpfs", "--out", str(out)])
    printed = capsys.readouterr().out
    document = json.loads(out.read_text())
    assert code == 0, printed[-3000:]
    assert document["passed"] is True and document["seed"] == 7
    assert set(document["checks"]) == {"all_live", "verify", "cells_vs_api", "reads",
                                       "faults_recovered"}
    assert all(check["passed"] for check in document["checks"].values())
    kinds = {f["kind"] for f in document["faults"]}
    assert len(kinds) >= 2, kinds
    for fault in document["faults"]:
        assert fault["ok"] is True and fault["recovery_s"] >= 0, fault
        assert {"kind", "target", "at_s", "note"} <= set(fault)
    reads = document["reads"]
    assert reads["total"] > 0 and reads["failed_outside_windows"] == 0
    assert document["checks"]["verify"]["differing"] == 0
    assert document["checks"]["cells_vs_api"]["api_servers"] > 0
    assert "soak PASSED" in printed and "recovery" in printed


def test_a_failed_read_counts_only_inside_a_killed_workers_window():
    kills = [10.0]
    assert soak.allowed({"started": 9.9, "ended": 10.05}, kills)    # in flight at the kill
    assert soak.allowed({"started": 10.5, "ended": 10.6}, kills)    # right after it
    assert not soak.allowed({"started": 12.0, "ended": 12.1}, kills)
    assert not soak.allowed({"started": 5.0, "ended": 5.1}, kills)
    assert not soak.allowed({"started": 5.0, "ended": 5.1}, [])


def test_the_schedule_is_seeded_and_plays_every_kind_each_round():
    import random
    first = soak.plan(random.Random(5), soak.FAULT_KINDS, 20)
    assert first == soak.plan(random.Random(5), soak.FAULT_KINDS, 20)
    assert {f["kind"] for f in first[:len(soak.FAULT_KINDS)]} == set(soak.FAULT_KINDS)
