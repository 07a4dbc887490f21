"""A publisher killed with SIGKILL and started again at once gets its own control
process on the control address: the old control process dies with its parent, even
when it is busy (here: stopped) at that moment."""

from __future__ import annotations

import os
import signal

from replica.ingest_control import Requester
from tests.appliance.conftest import alive
from tests.conftest import wait_for


def children(pid: int) -> set[int]:
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found |= {int(p) for p in f.read().split()}
    return found


def hello(cell) -> dict:
    """The cell's hello; the deadline is for a loaded machine (a publisher just started
    may still be opening its source), not a measure of anything."""
    requester = Requester(cell.control_url, 30.0)
    try:
        return requester.request("hello")
    finally:
        requester.close()


def test_a_publisher_restarted_after_sigkill_serves_control_from_its_own_process(make_cell):
    cell = make_cell("c1")
    cell.populate(10, seed=3)
    for attempt in range(3):
        publisher = cell.start()
        control_pid = wait_for(lambda: children(publisher.pid), 30,
                               what="the control process")
        (control_pid,) = control_pid
        assert hello(cell)["cell"] == "c1"
        os.kill(control_pid, signal.SIGSTOP)       # busy: it cannot act on a signal now
        publisher.kill9()
        wait_for(lambda: not alive(control_pid), 10, what="the old control process gone")
        publisher = cell.start()
        assert hello(cell)["cell"] == "c1"
        assert "serving control requests from a thread" not in publisher.output()
        assert len(children(publisher.pid)) == 1
        cell.stop()
