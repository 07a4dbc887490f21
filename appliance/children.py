"""The supervised children other than API workers, and what every child does first.

A child spec is built in the supervisor before the fork and has ``role``, ``name``,
``title`` and ``run()``; ``run`` is called in the child after ``after_fork`` and opens
everything it needs itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable

import setproctitle

from appliance import logs, memory
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


# ---------------------------------------------------------------- one-file launcher
# The one-file binary is two processes: PyInstaller's bootloader (the launcher) unpacks
# the bundle into a _MEIxxxxxx directory, starts the program as its child, forwards
# signals to it and removes the directory once it has exited. If the launcher is
# SIGKILLed, nothing of that happens; so the program follows its launcher: the parent's
# death delivers SIGTERM (a graceful stop), and the program, now orphaned, removes the
# directory itself as it exits.

_launcher: int | None = None
_follower: int | None = None    # the process that follows it (not its forked children)
_orphaned = False               # the launcher was dead before it could be followed


class LauncherGone(RuntimeError):
    """The one-file launcher died before the program could follow it."""


def _same_executable(pid: int) -> bool:
    try:
        theirs, ours = os.stat(f"/proc/{pid}/exe"), os.stat("/proc/self/exe")
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def bundle_dir() -> str | None:
    """The unpacked directory of a one-file binary (None from source or one-folder)."""
    if not getattr(sys, "frozen", False):
        return None
    bundle = getattr(sys, "_MEIPASS", None)
    if not bundle or not os.path.basename(os.path.normpath(bundle)).startswith("_MEI"):
        return None
    return bundle


def follow_launcher() -> int | None:
    """In a one-file binary: SIGTERM when the launcher dies. Returns the launcher's pid
    (None when there is no launcher). Raises LauncherGone if it died already."""
    global _launcher, _follower, _orphaned
    if bundle_dir() is None:
        return None
    _prctl_pdeathsig(signal.SIGTERM)
    parent = os.getppid()
    # Checked after prctl: had the launcher died before, this process now belongs to
    # init or a subreaper, which does not run this executable.
    if not _same_executable(parent):
        _orphaned = True
        raise LauncherGone(f"the launcher died before the program started (parent is now "
                           f"pid {parent})")
    _launcher, _follower = parent, os.getpid()
    return parent


def launcher_pid() -> int | None:
    return _launcher


def launcher_gone() -> bool:
    """True once the launcher followed by follow_launcher() has died."""
    return (_launcher is not None and os.getpid() == _follower
            and os.getppid() != _launcher)


def remove_orphaned_bundle() -> bool:
    """Remove the unpacked directory if the launcher that owns it is gone (its job);
    the last thing the program does. True if removed."""
    bundle = bundle_dir()
    if bundle is None or not (_orphaned or launcher_gone()):
        return False
    shutil.rmtree(bundle, ignore_errors=True)
    return not os.path.exists(bundle)


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
        # Ignore further signals first: one arriving inside Event.set() would run a
        # nested handler that waits forever on the lock this one holds.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)
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

    def config(self):
        """The ingest's configuration, from the settings."""
        from replica.ingest import CellFeed, IngestConfig
        cells = [CellFeed(c.name, c.feed, c.control, c.key_file or None)
                 for c in self.settings.cells]
        return IngestConfig(replica_path=self.settings.replica, cells=cells,
                            control_url=self.settings.ingest_control_url,
                            group_commit_ms=self.settings.group_commit_ms)

    def run(self) -> None:
        from replica.ingest import run_ingest
        stop = stop_event_on_sigterm()
        config = self.config()
        # As in an API worker: a batch of 500 server rows is thousands of young
        # containers, each freed by reference counting (the collector's passes over
        # them cost about 8 % of an upsert), and a 3 MB feed message each time a fresh
        # mmap unless big blocks stay on the heap.
        memory.tune_serving_process()
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
