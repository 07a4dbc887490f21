"""bench.read_ab on a tiny replica: two revisions (here this tree twice) and the
constant server answer every request of every round. Speeds are not checked."""

from __future__ import annotations

import argparse
import glob
import math
import os

import pytest

from tests.bench import needs_wrk

from bench import read_ab
from bench.procs import ROOT

pytestmark = needs_wrk


def test_read_ab_measures_both_revisions_and_the_constant_server(tmp_path, capsys):
    args = argparse.Namespace(baseline=ROOT, baseline_rev=None, servers=150, workers=1,
                              endpoints="show,list100", connections="2", duration=1.0,
                              rounds=2, after_setting=["reader_map_bytes=67108864"])
    measured = read_ab.run(args, str(tmp_path))
    for key in ("show", "list100"):
        for name in (read_ab.BEFORE, read_ab.AFTER, read_ab.CONSTANT):
            runs = measured[(key, 2, name)]
            assert len(runs) == 2
            for result in runs:
                assert result.requests > 0 and result.error_count == 0
                assert not math.isnan(read_ab.cpu_us_per_request(result))
    read_ab.summary(measured, args)
    printed = capsys.readouterr().out
    assert "GET /servers?limit=100 c2" in printed and "cpu/rq" in printed
    configs = {os.path.basename(os.path.dirname(path)): open(path).read()
               for path in glob.glob(os.path.join(str(tmp_path), "**", "appliance.toml"),
                                     recursive=True)}
    assert "reader_map_bytes = 67108864" in configs[read_ab.AFTER]
    assert "reader_map_bytes" not in configs[read_ab.BEFORE]


def test_after_settings_are_typed_and_checked():
    assert read_ab.after_settings(["reader_map_bytes=4096", "access_log=off"]) == {
        "reader_map_bytes": 4096, "access_log": "off"}
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        read_ab.after_settings(["reader_map_bytes"])


def test_same_page_replaces_only_the_links_port():
    uuid = b"d76c54be-bbae-43b2-bdc3-3532917cdca8"     # holds "53291"
    page_a = b'{"id":"%s","links":[{"href":"http://127.0.0.1:53291/v2.1/servers/%s"}]}' % (uuid, uuid)
    page_b = b'{"id":"%s","links":[{"href":"http://127.0.0.1:38975/v2.1/servers/%s"}]}' % (uuid, uuid)
    assert read_ab._same_page(page_a, 53291, page_b, 38975)
    other = page_b.replace(uuid, b"d76c54be-bbae-43b2-bdc3-000000000000")
    assert not read_ab._same_page(page_a, 53291, other, 38975)
