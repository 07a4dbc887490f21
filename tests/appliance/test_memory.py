"""A serving worker's memory tuning (appliance.memory), in a process of its own: the
allocator keeps big blocks on the heap, the GC freezes what was built and collects the
young generation less often."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

from tests.conftest import ROOT

PROBE = r"""
import gc, json, time
from appliance import memory
before = {"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}
built = [[n] for n in range(20000)]            # what a worker builds before serving
tuned = memory.tune_serving_process()
after = {"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}
# A list page as a worker makes it (the join, the closed body, the server's copy), made
# and freed again and again: kept on the heap it is the same pages; given back to the
# system every time, it is new pages again (minor faults: ~230,000 here untuned).
import resource
page = [bytes(1600) for _ in range(1000)]
def one():
    joined = b"".join(page)
    body = joined + b"}"
    sent = bytearray(body)
one()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    one()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({"tuned": tuned, "before": before, "after": after, "faults": faults}))
"""


def _probe() -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_gc_freezes_what_was_built_and_collects_less_often():
    got = _probe()
    assert got["before"]["frozen"] == 0
    assert got["after"]["frozen"] >= 20000
    assert got["after"]["threshold"][0] > got["before"]["threshold"][0]


def test_big_blocks_reuse_their_pages_on_glibc():
    got = _probe()
    if platform.libc_ver()[0] != "glibc":
        assert got["tuned"] is False
        return
    assert got["tuned"] is True
    assert got["faults"] < 2000, got
