"""How the cell side starts its forked children (the publisher's control server, the
binlog tailer)."""

from __future__ import annotations

import gc
import multiprocessing


def start_forked(proc: multiprocessing.Process) -> None:
    """Start ``proc`` (of the "fork" context) once this process's garbage is finalized.
    A child that finds an unreachable nanomsg socket of its parent's closes it in its
    first collection, and nanomsg's close in a forked child aborts the process or waits
    for threads that only the parent has (a forked tailer hung so, started from a
    process that had dropped sockets without closing them)."""
    gc.collect()
    proc.start()
