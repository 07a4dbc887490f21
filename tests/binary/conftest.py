"""Fixtures for the one-file binary: built once per session by build/build-binary.sh
(which skips the build when dist/appliance already matches its inputs' hash), and run
with a private TMPDIR so that where it unpacks itself, and whether that is removed
afterwards, can be checked."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

from bench.procs import cmdline as process_title  # noqa: F401 (used by the tests)
from tests.conftest import ROOT

BINARY = os.path.join(ROOT, "dist", "appliance")
BUILD_SCRIPT = os.path.join(ROOT, "build", "build-binary.sh")
BUILD_TIMEOUT = 900             # a cold build takes well under a minute here
RUN_TIMEOUT = 60
UNPACKED_PREFIX = "_MEI"        # PyInstaller's one-file unpack directory
WORKER_TITLE = "appliance: worker "   # process title of an API worker (setproctitle)
SUBCOMMANDS = ("demo", "serve", "cell", "status", "resync", "verify", "version")


@pytest.fixture(scope="session")
def binary() -> str:
    """The path of dist/appliance, built (or found up to date) for this session."""
    try:
        done = subprocess.run(["bash", BUILD_SCRIPT], cwd=ROOT, capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"build/build-binary.sh did not finish in {BUILD_TIMEOUT}s: {exc.stdout}")
    if done.returncode != 0:
        pytest.fail(f"build/build-binary.sh failed (exit {done.returncode}):\n"
                    f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    assert os.access(BINARY, os.X_OK), f"{BINARY} was not produced"
    return BINARY


@pytest.fixture
def private_tmp(tmp_path) -> str:
    """An empty directory to use as the binary's TMPDIR."""
    path = tmp_path / "tmp"
    path.mkdir()
    return str(path)


def binary_env(tmpdir: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["TMPDIR"] = tmpdir
    env.update(extra)
    return env


def run_binary(binary: str, *args: str, tmpdir: str, prefix: tuple = (),
               timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, binary, *args], capture_output=True, text=True,
                          env=binary_env(tmpdir), timeout=timeout, cwd=tmpdir)


def unpacked_dirs(tmpdir: str) -> list[str]:
    return sorted(n for n in os.listdir(tmpdir) if n.startswith(UNPACKED_PREFIX))


def system_libnanomsg_files() -> list[str]:
    """Every real file the system's loader could resolve libnanomsg to."""
    found = set()
    done = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if "libnanomsg.so" in line and "=>" in line:
            found.add(os.path.realpath(line.split("=>", 1)[1].strip()))
    for libdir in ("/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/local/lib", "/lib"):
        if os.path.isdir(libdir):
            for name in os.listdir(libdir):
                if name.startswith("libnanomsg.so"):
                    found.add(os.path.realpath(os.path.join(libdir, name)))
    return sorted(p for p in found if os.path.isfile(p))


def _unshare_prefix() -> list[str] | None:
    if not shutil.which("unshare"):
        return None
    options = (["unshare", "-m"], ["unshare", "-r", "-m"]) if os.geteuid() == 0 \
        else (["unshare", "-r", "-m"],)
    for prefix in options:
        probe = subprocess.run([*prefix, "true"], capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


@pytest.fixture(scope="session")
def hide_system_libnanomsg(tmp_path_factory):
    """A command prefix that runs its command in a private mount namespace in which an
    empty file is bind-mounted over every copy of the system's libnanomsg: there, only
    a bundled copy can load. Skips when mount namespaces are not available."""
    prefix = _unshare_prefix()
    if prefix is None:
        pytest.skip("cannot create a mount namespace here (unshare -m / unshare -r -m "
                    "refused), so the system libnanomsg cannot be hidden")
    libraries = system_libnanomsg_files()
    if not libraries:
        pytest.skip("no system libnanomsg installed: nothing to hide")
    empty = tmp_path_factory.mktemp("hidden") / "empty.so"
    empty.write_bytes(b"")
    mounts = " && ".join(f"mount --bind {empty} {lib}" for lib in libraries)
    # `exec` keeps one process: the pid the caller gets is the binary's own.
    return (*prefix, "sh", "-c", f'{mounts} && exec "$@"', "sh"), libraries


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (via /proc/<pid>/task/*/children)."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            found.extend(kids)
            queue.extend(kids)
    return found




def mapped_files(pid: int, name: str) -> set[str]:
    """Paths of files containing ``name`` mapped into process ``pid``."""
    paths = set()
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6 and name in fields[5]:
                    paths.add(fields[5].strip())
    except OSError:
        pass
    return paths


def is_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_tree(proc: subprocess.Popen) -> None:
    """Last resort at teardown: SIGKILL the process, its live descendants and its
    process group (it was started in a session of its own, so the group is only its)."""
    if proc.poll() is None:
        for pid in descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        proc.kill()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
