"""The supervised children other than API workers, and what every child does first.

A child spec is built in the supervisor before the fork and has ``role``, ``name``,
``title`` and ``run()``; ``run`` is called in the child after ``after_fork`` and opens
everything it needs itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable

import setproctitle

from appliance import logs
from appliance.settings import Settings

PR_SET_PDEATHSIG = 1
BOOT_ERROR = 3                  # exit code of a child that could not get ready

_libc = None


def _prctl_pdeathsig(signum: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def after_fork(title: str, role: str, parent: int, close_fds: tuple[int, ...]) -> None:
    """First thing in every child: die with the supervisor, default signal handling,
    none of the supervisor's private descriptors, a process title."""
    _prctl_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)
    for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1,
                   signal.SIGUSR2):
        signal.signal(signum, signal.SIG_DFL)
    # Ctrl-C and a terminal hangup reach the whole process group; the supervisor alone
    # decides what stops or reloads. TTIN/TTOU are the supervisor's too.
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)
    signal.set_wakeup_fd(-1)
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    setproctitle.setproctitle(title)
    logs.set_role(role)


def stop_event_on_sigterm() -> threading.Event:
    """An Event set by SIGTERM or SIGQUIT: the ``stop`` argument of blocking run loops."""
    stop = threading.Event()

    def handle(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGQUIT, handle)
    return stop


@dataclass
class IngestChild:
    """The single writer: subscribes to every cell's feed and applies it."""

    settings: Settings
    role = "ingest"
    name = "ingest"
    title = "appliance: ingest"

    def run(self) -> None:
        from replica.ingest import CellFeed, IngestConfig, run_ingest
        stop = stop_event_on_sigterm()
        cells = [CellFeed(c.name, c.feed, c.control) for c in self.settings.cells]
        config = IngestConfig(replica_path=self.settings.replica, cells=cells,
                              control_url=self.settings.ingest_control_url)
        run_ingest(config, stop=stop)


@dataclass
class AdminChild:
    """The admin listener (status, resync, verify, metrics, health)."""

    settings: Settings
    processes_path: str
    metrics_dir: str
    role = "admin"
    name = "admin"
    title = "appliance: admin"

    def run(self) -> None:
        from appliance import admin
        admin.serve(self.settings, self.processes_path, self.metrics_dir)


@dataclass
class TaskChild:
    """Any other long-running function under supervision (the demo's cell publishers
    and simulators). ``target(stop)`` runs until ``stop`` is set."""

    role: str
    name: str
    target: Callable[[threading.Event], None]
    restart: bool = True
    args: tuple = field(default_factory=tuple)

    @property
    def title(self) -> str:
        return f"appliance: {self.name}"

    def run(self) -> None:
        stop = stop_event_on_sigterm()
        self.target(stop, *self.args)
