"""The life of a supervised child process, as an enum and its named transitions.

No dependencies: the supervisor, the process table and the admin listener share it.
"""

from __future__ import annotations

import enum


class ProcessState(enum.Enum):
    BOOTING = "booting"      # forked, building itself (app, sockets, connections)
    RUNNING = "running"      # ready (a worker: listening and heartbeating)
    DRAINING = "draining"    # told to stop: finishing in-flight work
    EXITED = "exited"        # reaped


class ProcessEvent(enum.Enum):
    READY = "ready"          # the child reported that it is serving
    STOP = "stop"            # the supervisor sent SIGTERM
    EXIT = "exit"            # waitpid reported the child gone


class InvalidTransition(RuntimeError):
    pass


TRANSITIONS: dict[tuple[ProcessState, ProcessEvent], ProcessState] = {
    (ProcessState.BOOTING, ProcessEvent.READY): ProcessState.RUNNING,
    (ProcessState.BOOTING, ProcessEvent.STOP): ProcessState.DRAINING,
    (ProcessState.BOOTING, ProcessEvent.EXIT): ProcessState.EXITED,
    (ProcessState.RUNNING, ProcessEvent.STOP): ProcessState.DRAINING,
    (ProcessState.RUNNING, ProcessEvent.EXIT): ProcessState.EXITED,
    (ProcessState.DRAINING, ProcessEvent.STOP): ProcessState.DRAINING,
    (ProcessState.DRAINING, ProcessEvent.EXIT): ProcessState.EXITED,
    # A draining worker may still report ready (it booted just before being told to stop).
    (ProcessState.DRAINING, ProcessEvent.READY): ProcessState.DRAINING,
}


def transition(state: ProcessState, event: ProcessEvent) -> ProcessState:
    """The state after ``event``; an edge not listed above raises InvalidTransition."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"{event.value} is not possible in state {state.value}") from None
