"""The pre-fork supervisor: reserves the API address, forks and watches every child.

Shape (after gunicorn's arbiter): signal handlers only enqueue the signal and wake the
loop; the loop reaps children, then dispatches each queued signal to ``handle_<name>``,
then kills silent workers, respawns missing children and advances a rolling reload.

Listening. The supervisor binds the API address once, at start, with SO_REUSEPORT and
without listening: a bad or busy address fails before anything is forked, and the port
stays reserved while workers come and go. Each worker opens its own SO_REUSEPORT
listener on that address, so the kernel spreads connections evenly across workers (one
shared accept socket was measured badly uneven here). The admin address is reserved the
same way for the admin listener.

Children: N API workers ("appliance: worker N"), the ingest ("appliance: ingest"), the
admin listener ("appliance: admin") and any extra tasks (the demo's cell publishers and
simulators). Each sets PR_SET_PDEATHSIG, so a SIGKILLed supervisor leaves nothing
behind. Workers touch a heartbeat file; one silent longer than ``worker_timeout`` gets
SIGABRT, then SIGKILL, and is replaced. A child that cannot boot halts the supervisor
instead of being restarted in a loop.

Signals: TERM, INT, QUIT stop gracefully (workers drain up to ``graceful_timeout``);
HUP re-reads the config file and replaces workers one at a time (a new one is ready
before an old one drains, so no request fails); TTIN / TTOU add / remove a worker.
During a graceful stop, a stop signal within ``SECOND_SIGNAL_AFTER`` of the stop's start
is the same request delivered twice and changes nothing: Ctrl-C under the one-file
binary reaches the supervisor from the terminal and again from the launcher, which
forwards it, and timeout(1) signals the process and its group. One later than that is
a second request: the children still draining are killed at once.

Under the one-file binary the supervisor follows its launcher (``children.
follow_launcher``): if the launcher dies, even by SIGKILL, the kernel sends SIGTERM and
the supervisor stops gracefully, as for ``systemctl stop``. The launcher's death during
a drain already under way changes nothing; a stop signal from anyone else later in the
drain is a second request as above.

The process table (``<data_dir>/processes.json``) is rewritten on every change; the
admin listener reads it for ``GET /status``.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import apsw
import setproctitle

from appliance import logs, metrics
from appliance.children import (BOOT_ERROR, AdminChild, IngestChild, TaskChild, after_fork,
                                 launcher_gone, launcher_pid)
from appliance.settings import Settings, SettingsError, load, unknown_environment
from appliance.states import ProcessEvent, ProcessState, transition
from appliance.worker import BootError, Worker, build_api_app
from replica.store.connection import open_writer
from replica.store.schema import ReplicaTooNew

LOOP_TIMEOUT = 0.5              # seconds the loop sleeps when nothing happens
BUSY_LOOP_TIMEOUT = 0.05        # ... while a child boots or a reload is under way
# Settings a reload does not apply (the listeners, the replica and its feeds, and what
# ingest reads when it starts: it is not restarted by a reload); a change is logged.
RESTART_SETTINGS = ("listen_host", "listen_port", "admin_host", "admin_port", "data_dir",
                    "replica_path", "cells", "group_commit_ms")
ABORT_GRACE = 2.0               # seconds between SIGABRT and SIGKILL of a silent worker
KILL_GRACE = 2.0                # seconds after graceful_timeout before SIGKILL on stop
BOOT_GRACE = 1.0                # a non-worker child alive this long counts as booted
MAX_FAST_FAILURES = 5           # consecutive quick deaths of one child before halting
RESTART_BACKOFF_MAX = 5.0
SECOND_SIGNAL_AFTER = 1.0       # a stop signal this long after the first forces the stop

SIGNALS = {signal.SIGTERM: "term", signal.SIGINT: "int", signal.SIGQUIT: "quit",
           signal.SIGHUP: "hup", signal.SIGTTIN: "ttin", signal.SIGTTOU: "ttou"}
LAUNCHER_DIED = -1              # queued instead of the SIGTERM the launcher's death sends
HANDLERS = {**SIGNALS, LAUNCHER_DIED: "launcher_died"}


class StartError(RuntimeError):
    """The supervisor cannot start (address in use, data dir not writable). One line."""


class Halt(Exception):
    def __init__(self, reason: str, code: int = BOOT_ERROR):
        super().__init__(reason)
        self.reason = reason
        self.code = code


class Stop(Exception):
    pass


@dataclass
class Child:
    slot: str
    spec: object
    pid: int
    started: float
    started_mono: float
    heartbeat: str | None = None
    state: ProcessState = ProcessState.BOOTING
    aborted_at: float | None = None

    def advance(self, event: ProcessEvent) -> None:
        self.state = transition(self.state, event)


@dataclass
class Reservation:
    """A bound, non-listening SO_REUSEPORT socket holding an address for the children."""

    host: str
    port: int
    sock: socket.socket = field(repr=False)


def reserve(host: str, port: int, what: str) -> Reservation:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartError(f"{what} address {host}:{port}: cannot resolve ({exc.strerror}); "
                         f"fix the host setting") from None
    family, _, _, _, sockaddr = infos[0]
    # First a plain bind: SO_REUSEPORT alone would let a second appliance (same user)
    # share the port silently with the first.
    probe = socket.socket(family, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        probe.bind(sockaddr)
        if sockaddr[1] == 0:  # port 0: reserve the very port the kernel just chose
            sockaddr = probe.getsockname()
        probe.close()
        sock.bind(sockaddr)
    except OSError as exc:
        probe.close()
        sock.close()
        hint = {errno.EADDRINUSE: "another process listens there; stop it or pick "
                                  "another port",
                errno.EADDRNOTAVAIL: "this machine has no such address",
                errno.EACCES: "ports below 1024 need privileges"}.get(exc.errno, "")
        raise StartError(f"{what} address {host}:{port}: {exc.strerror}"
                         + (f"; {hint}" if hint else "")) from None
    bound_host, bound_port = sock.getsockname()[:2]
    return Reservation(bound_host, bound_port, sock)


def check_nanomsg() -> None:
    """pip can silently build nanomsg-python without its C extension; that build fails
    only at the first bind(). Refuse to start with it."""
    import nanomsg
    if nanomsg.wrapper.__name__ != "_nanomsg_cpy":
        raise StartError("nanomsg-python was built without its C extension "
                         f"({nanomsg.wrapper.__name__}); reinstall it with 'pip install "
                         "--no-cache-dir --no-binary nanomsg nanomsg' after installing "
                         "libnanomsg's headers")


TCP_MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


def enable_request_migration(path: str = TCP_MIGRATE_REQ) -> str:
    """Make the kernel hand the connections queued on a closing SO_REUSEPORT listener to
    another listener of the group, instead of resetting them: without it, a connection
    that reaches a retiring worker's queue between its last accept and its close is
    lost, so a SIGHUP reload is not hitless. The setting belongs to the network
    namespace; it is enabled when this process may write it (root), and the return
    value says how it stands: "on", "enabled", or why it is off."""
    try:
        with open(path) as f:
            if f.read().strip() == "1":
                return "on"
        with open(path, "w") as f:
            f.write("1")
        return "enabled"
    except OSError as exc:
        return f"off ({exc.strerror}): set net.ipv4.tcp_migrate_req=1 for hitless reloads"


class Supervisor:
    """Runs until stopped; ``run()`` returns the process exit code."""

    def __init__(self, settings: Settings, config_path: str | None = None,
                 app_factory: Callable = build_api_app, tasks: tuple[TaskChild, ...] = (),
                 ingest: bool = True, admin: bool = True, prepare_replica: bool = True,
                 on_tick: Callable[["Supervisor"], None] | None = None):
        self.settings = settings
        self.config_path = config_path
        self.app_factory = app_factory
        self.tasks = {t.name: t for t in tasks}
        self.with_ingest = ingest
        self.with_admin = admin
        self.prepare_replica = prepare_replica
        self.on_tick = on_tick
        self.num_workers = settings.workers
        self.data_dir = os.path.abspath(settings.data_dir)
        self.run_dir = os.path.join(self.data_dir, "run")
        self.metrics_dir = os.path.join(self.data_dir, "metrics")
        self.processes_path = os.path.join(self.data_dir, "processes.json")
        self.children: dict[int, Child] = {}
        self.restarts: dict[str, int] = {}
        self.fast_failures: dict[str, int] = {}
        self.restart_at: dict[str, float] = {}
        self.signals: list[int] = []
        self.reload_pending: list[str] = []
        self.reload_current: tuple[str, int] | None = None
        self.serial = 0
        self._table_failures = logs.RepeatedError("process_table_write_failed")
        self.started = time.time()
        self.api: Reservation | None = None
        self.admin_address: Reservation | None = None
        self._wake_r = self._wake_w = -1
        self._last_table = ""
        self._launcher_death_seen = False

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        for path in (self.data_dir, self.run_dir):
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as exc:
                raise StartError(f"data_dir {path}: cannot create it ({exc.strerror}); "
                                 "set data_dir to a writable directory") from None
        if not os.access(self.data_dir, os.W_OK):
            raise StartError(f"data_dir {self.data_dir}: not writable; set data_dir to a "
                             "writable directory")
        if self.with_ingest:
            check_nanomsg()
        self.api = reserve(self.settings.listen_host, self.settings.listen_port, "listen")
        if self.with_admin:
            self.admin_address = reserve(self.settings.admin_host, self.settings.admin_port,
                                         "admin")
        for name in os.listdir(self.run_dir):
            if name.endswith(".hb"):
                os.unlink(os.path.join(self.run_dir, name))
        metrics.clear_directory(self.metrics_dir)
        if self.prepare_replica:
            self._prepare_replica()
        setproctitle.setproctitle("appliance: supervisor")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        for signum in SIGNALS:
            signal.signal(signum, self._enqueue)
        signal.signal(signal.SIGCHLD, self._wake)
        for name in unknown_environment():
            logs.warning("unknown_setting_variable", variable=name,
                         hint="not a setting; see docs/configuration.md")
        logs.info("supervisor_started", listen=f"{self.api.host}:{self.api.port}",
                  admin=(f"{self.admin_address.host}:{self.admin_address.port}"
                         if self.admin_address else None),
                  workers=self.num_workers, data_dir=self.data_dir,
                  request_migration=enable_request_migration())

    def _prepare_replica(self) -> None:
        """Create and migrate the replica before any worker opens it read-only. The
        connection is closed again before the first fork."""
        path = os.path.abspath(self.settings.replica)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            conn = open_writer(path)
            conn.close()
        except (OSError, apsw.Error) as exc:
            raise StartError(f"replica {path}: cannot open it ({exc}); set replica_path "
                             "or data_dir to a writable place") from None
        except ReplicaTooNew as exc:
            # a rollback to an older release: its replica is not this build's to read
            raise StartError(f"replica {path}: {exc} (a newer release wrote it; run that "
                             "release, or set data_dir to a new directory: the cells are "
                             "copied into it again)") from None

    # ---------------------------------------------------------------- signals
    def _enqueue(self, signum, frame) -> None:
        if signum == signal.SIGTERM and not self._launcher_death_seen and launcher_gone():
            # The kernel's PR_SET_PDEATHSIG signal, not a request from anyone.
            self._launcher_death_seen = True
            signum = LAUNCHER_DIED
        if len(self.signals) < 10:
            self.signals.append(signum)
        self._wake(signum, frame)

    def _wake(self, signum, frame) -> None:
        try:
            os.write(self._wake_w, b".")
        except OSError:
            pass

    def _sleep(self, timeout: float) -> None:
        try:
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
            if ready:
                while os.read(self._wake_r, 4096):
                    pass
        except (OSError, InterruptedError):
            pass

    # ---------------------------------------------------------------- main loop
    def run(self) -> int:
        """Start, supervise until a stop signal or a halt, stop everything."""
        self.start()
        code = 0
        try:
            while True:
                busy = self.reload_current or any(
                    c.state is ProcessState.BOOTING for c in self.children.values())
                self._sleep(BUSY_LOOP_TIMEOUT if busy else LOOP_TIMEOUT)
                self.reap()
                while self.signals:
                    signum = self.signals.pop(0)
                    getattr(self, f"handle_{HANDLERS[signum]}")()
                self.check_ready()
                self.murder_silent()
                self.manage()
                self.advance_reload()
                self.write_table()
                if self.on_tick:
                    self._tick()
        except Stop:
            logs.info("supervisor_stopping", graceful_timeout=self.settings.graceful_timeout)
        except Halt as halt:
            logs.error("supervisor_halted", reason=halt.reason)
            code = halt.code
        self.stop_all()
        self.write_table()
        logs.info("supervisor_stopped", code=code)
        return code

    def _tick(self) -> None:
        try:
            self.on_tick(self)
        except Exception as exc:  # an observer must not take the supervisor down
            logs.error("tick_failed", error=repr(exc))

    def handle_term(self) -> None:
        raise Stop()

    handle_int = handle_term
    handle_quit = handle_term

    def handle_launcher_died(self) -> None:
        logs.warning("launcher_gone", launcher_pid=launcher_pid(),
                     hint="the one-file launcher died (SIGKILL?); stopping gracefully, "
                          "the unpacked directory is removed at exit")
        raise Stop()

    def handle_hup(self) -> None:
        """Reload: re-read the config file, then replace workers one at a time."""
        if self.config_path:
            try:
                fresh = load(self.config_path)
            except SettingsError as exc:
                logs.error("reload_refused", reason=str(exc))
                return
            for name in RESTART_SETTINGS:
                if getattr(fresh, name) != getattr(self.settings, name):
                    logs.warning("reload_needs_restart", setting=name)
            self.settings = self.settings.replace(
                **{k: v for k, v in fresh.values.items()
                   if k not in RESTART_SETTINGS and k != "workers"})
        self.reload_pending = [c.slot for c in self._live() if c.slot.startswith("worker ")]
        self.reload_pending = sorted(set(self.reload_pending))
        logs.info("reload_started", workers=len(self.reload_pending))

    def handle_ttin(self) -> None:
        self.num_workers = min(self.num_workers + 1, 256)
        logs.info("workers_changed", workers=self.num_workers)

    def handle_ttou(self) -> None:
        self.num_workers = max(self.num_workers - 1, 1)
        logs.info("workers_changed", workers=self.num_workers)

    # ---------------------------------------------------------------- children
    def _live(self) -> list[Child]:
        return [c for c in self.children.values() if c.state is not ProcessState.EXITED]

    def _wanted_slots(self) -> list[str]:
        slots = [f"worker {n}" for n in range(1, self.num_workers + 1)]
        if self.with_ingest:
            slots.append("ingest")
        if self.with_admin:
            slots.append("admin")
        slots.extend(self.tasks)
        return slots

    def _spec_for(self, slot: str):
        if slot.startswith("worker "):
            self.serial += 1
            number = int(slot.split()[1])
            heartbeat = os.path.join(self.run_dir, f"worker-{number}-{self.serial}.hb")
            with open(heartbeat, "wb"):
                pass
            return Worker(number, self.settings, self.api.host, self.api.port, heartbeat,
                          self.metrics_dir, self.app_factory), heartbeat
        if slot == "ingest":
            return IngestChild(self.settings), None
        if slot == "admin":
            return AdminChild(self.settings, self.processes_path, self.metrics_dir), None
        return self.tasks[slot], None

    def spawn(self, slot: str) -> Child:
        spec, heartbeat = self._spec_for(slot)
        parent = os.getpid()
        private = (self._wake_r, self._wake_w, self.api.sock.fileno()) + (
            (self.admin_address.sock.fileno(),) if self.admin_address else ())
        pid = os.fork()
        if pid == 0:
            self._child_main(spec, parent, private)
        child = Child(slot, spec, pid, time.time(), time.monotonic(), heartbeat)
        self.children[pid] = child
        logs.info("spawned", slot=slot, child_pid=pid)
        return child

    @staticmethod
    def _child_main(spec, parent: int, private: tuple[int, ...]) -> None:
        code = 1
        try:
            after_fork(spec.title, spec.role, parent, private)
            spec.run()
            code = 0
        except BootError as exc:
            logs.error("boot_failed", reason=str(exc))
            code = BOOT_ERROR
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:
            logs.error("child_crashed", error=repr(exc),
                       where=traceback.format_exc(limit=8).strip().splitlines()[-3:])
            code = 1
        finally:
            os._exit(code)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            was = child.state
            child.advance(ProcessEvent.EXIT)
            code = os.waitstatus_to_exitcode(status)
            lived = time.monotonic() - child.started_mono
            if child.heartbeat:
                try:
                    os.unlink(child.heartbeat)
                except OSError:
                    pass
                metrics.mark_dead(self.metrics_dir, pid)
            expected = was is ProcessState.DRAINING
            (logs.info if expected else logs.warning)(
                "child_exited", slot=child.slot, child_pid=pid, code=code,
                lived=round(lived, 3))
            if expected:
                continue
            self.restarts[child.slot] = self.restarts.get(child.slot, 0) + 1
            if self.reload_current and self.reload_current[1] == pid:
                # The replacement could not start (a bad tokens file, say): the old
                # worker still serves its slot; keep the rest as they are.
                logs.error("reload_aborted", slot=child.slot, code=code,
                           reason="the replacement worker did not boot; old workers "
                                  "keep serving")
                self.reload_current, self.reload_pending = None, []
                continue
            if code == BOOT_ERROR and was is ProcessState.BOOTING:
                raise Halt(f"{child.slot} could not boot (exit code {code}); see the "
                           "boot_failed line above")
            if lived < BOOT_GRACE or was is ProcessState.BOOTING:
                failures = self.fast_failures.get(child.slot, 0) + 1
                self.fast_failures[child.slot] = failures
                if failures >= MAX_FAST_FAILURES:
                    raise Halt(f"{child.slot} died {failures} times in a row right after "
                               "start; not restarting it")
                delay = min(0.1 * 2 ** failures, RESTART_BACKOFF_MAX)
                self.restart_at[child.slot] = time.monotonic() + delay
            else:
                self.fast_failures[child.slot] = 0

    def check_ready(self) -> None:
        now = time.monotonic()
        for child in self._live():
            if child.state is not ProcessState.BOOTING:
                continue
            if child.heartbeat:
                try:
                    ready = os.path.getsize(child.heartbeat) > 0
                except OSError:
                    ready = False
            else:
                ready = now - child.started_mono >= BOOT_GRACE
            if ready:
                child.advance(ProcessEvent.READY)
                self.fast_failures[child.slot] = 0

    def murder_silent(self) -> None:
        now = time.time()
        for child in self._live():
            if not child.heartbeat:
                continue
            try:
                last = os.stat(child.heartbeat).st_mtime
            except OSError:
                continue
            if child.aborted_at is not None:
                if time.monotonic() - child.aborted_at > ABORT_GRACE:
                    self._signal(child, signal.SIGKILL)
                continue
            if now - last > self.settings.worker_timeout:
                logs.error("worker_timeout", slot=child.slot, child_pid=child.pid,
                           silent=round(now - last, 1))
                child.aborted_at = time.monotonic()
                self._signal(child, signal.SIGABRT)

    def manage(self) -> None:
        wanted = self._wanted_slots()
        live = self._live()
        covered = {c.slot for c in live if c.state is not ProcessState.DRAINING}
        now = time.monotonic()
        for slot in wanted:
            if slot in covered or self.restart_at.get(slot, 0) > now:
                continue
            if slot in self.tasks and not self.tasks[slot].restart and slot in self.restarts:
                continue
            try:
                self.spawn(slot)
            except OSError as exc:  # fork failed (no memory, process limit): retry soon
                logs.error("spawn_failed", slot=slot, error=str(exc))
                self.restart_at[slot] = now + RESTART_BACKOFF_MAX
        for child in live:
            if child.slot.startswith("worker ") and child.slot not in wanted \
                    and child.state is not ProcessState.DRAINING:
                self.stop_child(child)

    def advance_reload(self) -> None:
        if self.reload_current:
            slot, new_pid = self.reload_current
            new = self.children.get(new_pid)
            if new is None:
                logs.error("reload_aborted", slot=slot, reason="replacement worker died")
                self.reload_current, self.reload_pending = None, []
                return
            if new.state is not ProcessState.RUNNING:
                return
            for old in self._live():
                if old.slot == slot and old.pid != new_pid \
                        and old.state is not ProcessState.DRAINING:
                    self.stop_child(old)
            self.reload_current = None
            if not self.reload_pending:
                logs.info("reload_finished")
        if self.reload_pending and self.reload_current is None:
            slot = self.reload_pending.pop(0)
            if slot in self._wanted_slots():
                self.reload_current = (slot, self.spawn(slot).pid)

    def stop_child(self, child: Child) -> None:
        child.advance(ProcessEvent.STOP)
        self._signal(child, signal.SIGTERM)

    @staticmethod
    def _signal(child: Child, signum: int) -> None:
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        """SIGTERM to every child, wait up to graceful_timeout, then SIGKILL the rest."""
        for child in self._live():
            if child.state is not ProcessState.DRAINING:
                child.advance(ProcessEvent.STOP)
            self._signal(child, signal.SIGTERM)
        began = time.monotonic()
        deadline = began + self.settings.graceful_timeout + KILL_GRACE
        forced = False
        while self.children:
            self._sleep(0.05)
            try:
                self._reap_quietly()
            except Halt:
                pass
            if self.signals and not forced:
                # A second Ctrl-C a moment later: do not wait any longer. The same signal
                # twice at once (the one-file launcher forwarding the Ctrl-C the
                # supervisor got from the terminal too; timeout(1)) is one request, and
                # so is the launcher dying (it asked for nothing).
                requests = [s for s in self.signals if s != LAUNCHER_DIED]
                if requests and time.monotonic() - began > SECOND_SIGNAL_AFTER:
                    logs.warning("stop_forced", signal=signal.Signals(requests[0]).name,
                                 reason="second stop signal during the graceful stop")
                    deadline = 0
                elif LAUNCHER_DIED in self.signals:
                    logs.warning("launcher_gone", launcher_pid=launcher_pid(),
                                 hint="during the graceful stop; it goes on")
                self.signals.clear()
            if time.monotonic() > deadline and not forced:
                for child in self._live():
                    logs.warning("killing", slot=child.slot, child_pid=child.pid)
                    self._signal(child, signal.SIGKILL)
                forced = True

    def _reap_quietly(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child and child.heartbeat:
                try:
                    os.unlink(child.heartbeat)
                except OSError:
                    pass

    # ---------------------------------------------------------------- process table
    def table(self) -> dict:
        return {
            "supervisor": {"pid": os.getpid(), "started": self.started,
                           "listen": f"{self.api.host}:{self.api.port}" if self.api else None,
                           "workers": self.num_workers},
            "processes": [
                {"role": c.spec.role, "name": c.slot, "pid": c.pid, "state": c.state.value,
                 "restarts": self.restarts.get(c.slot, 0), "started": c.started}
                for c in sorted(self._live(), key=lambda c: (c.slot, c.started))],
        }

    def write_table(self) -> None:
        text = json.dumps(self.table(), sort_keys=True)
        if text == self._last_table:
            return
        tmp = self.processes_path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, self.processes_path)
        except OSError as exc:
            # A full disk: the table is for people and the admin listener; supervising
            # goes on, and the next turn of the loop tries again.
            self._table_failures.failed(exc, path=self.processes_path)
            return
        self._table_failures.worked()
        self._last_table = text


def read_table(path: str) -> dict | None:
    """The process table as the supervisor last wrote it (None if there is none)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
