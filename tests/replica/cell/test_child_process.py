"""A forked child of the cell side is started once its parent's garbage is finalized."""

from __future__ import annotations

import gc
import multiprocessing

import nanomsg

from replica.cell.child_process import start_forked


def _collect_and_exit() -> None:
    gc.collect()


def _drop_a_socket_in_a_cycle() -> None:
    holder = {"socket": nanomsg.Socket(nanomsg.PUB)}
    holder["self"] = holder                 # freed only by the collector


def test_a_child_does_not_close_its_parents_dropped_sockets():
    was = gc.isenabled()
    gc.disable()           # the cycle stays until a collection: the same every run
    try:
        _drop_a_socket_in_a_cycle()
        proc = multiprocessing.get_context("fork").Process(target=_collect_and_exit,
                                                           daemon=True)
        start_forked(proc)
    finally:
        if was:
            gc.enable()
    proc.join(20)
    alive = proc.is_alive()
    if alive:
        proc.kill()
        proc.join(5)
    assert not alive and proc.exitcode == 0
