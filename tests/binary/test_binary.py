"""The one-file binary on its own: versions, --help of every subcommand, running with
the system's libnanomsg made unloadable, and leaving no unpacked directory behind."""

from __future__ import annotations

import json
import os
import platform
import subprocess

import apsw
import pytest

from PyInstaller.archive.readers import CArchiveReader

from tests.binary.conftest import (BUILD_SCRIPT, SUBCOMMANDS, UNPACKED_PREFIX, binary_env,
                                   run_binary, unpacked_dirs)
from tests.conftest import PYTHON, ROOT


def _baked_version() -> str | None:
    done = subprocess.run(["bash", BUILD_SCRIPT, "--version"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    return done.stdout.strip() if done.returncode == 0 else None


def test_version_json_names_the_bundled_components(binary, private_tmp):
    done = run_binary(binary, "version", "--json", tmpdir=private_tmp)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["python"] == platform.python_version()
    assert found["sqlite"] == apsw.sqlite_lib_version()
    assert found["apsw"] == apsw.apsw_version()
    assert found["nanomsg-wrapper"] == "_nanomsg_cpy"
    assert found["libnanomsg"] not in ("", "unknown")
    assert found["libnanomsg-path"].startswith(f"{private_tmp}/{UNPACKED_PREFIX}")
    assert found["built"] != "not built (source tree)"
    # The version of the tree it was built from (the test session built it, or found
    # it up to date, a moment ago).
    baked = _baked_version()
    if baked:
        assert found["appliance"] == baked
    for name in ("gevent", "bottle", "nanomsg-python", "msgpack", "greenlet",
                 "prometheus-client", "setproctitle"):
        assert found[name] not in ("", "unknown"), name
    # A normal exit removes the unpacked directory.
    assert unpacked_dirs(private_tmp) == []


def test_version_prints_a_table_for_people(binary, private_tmp):
    done = run_binary(binary, "version", tmpdir=private_tmp)
    assert done.returncode == 0, done.stderr
    rows = dict(line.split(None, 1) for line in done.stdout.splitlines() if line.strip())
    assert rows["python"].strip() == platform.python_version()
    assert rows["sqlite"].strip() == apsw.sqlite_lib_version()
    assert rows["nanomsg-wrapper"].strip() == "_nanomsg_cpy"


def test_top_level_help_lists_every_subcommand(binary, private_tmp):
    done = run_binary(binary, "--help", tmpdir=private_tmp)
    assert done.returncode == 0, done.stderr
    for name in SUBCOMMANDS:
        assert name in done.stdout


@pytest.mark.parametrize("subcommand", [*SUBCOMMANDS, "cell init", "cell populate",
                                        "cell simulate", "config-doc"])
def test_every_subcommand_has_help(binary, private_tmp, subcommand):
    done = run_binary(binary, *subcommand.split(), "--help", tmpdir=private_tmp)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout.lower()
    assert f"appliance {subcommand}" in done.stdout
    assert "Traceback" not in done.stderr
    assert unpacked_dirs(private_tmp) == []


def test_runs_with_the_system_libnanomsg_unloadable(binary, private_tmp,
                                                    hide_system_libnanomsg):
    prefix, hidden = hide_system_libnanomsg
    # Control: in that namespace the source tree's interpreter cannot load nanomsg, so
    # the hiding is real.
    control = subprocess.run([*prefix, PYTHON, "-c", "import _nanomsg_cpy"],
                             capture_output=True, text=True, timeout=60)
    assert control.returncode != 0, "the system libnanomsg was not hidden"
    assert "libnanomsg" in control.stderr
    done = run_binary(binary, "version", "--json", tmpdir=private_tmp, prefix=prefix)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["nanomsg-wrapper"] == "_nanomsg_cpy"
    assert found["libnanomsg-path"].startswith(f"{private_tmp}/{UNPACKED_PREFIX}")
    assert found["libnanomsg-path"] not in hidden
    assert unpacked_dirs(private_tmp) == []


def _source_modules() -> set[str]:
    found = set()
    for top in ("appliance", "replica"):
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            package = os.path.relpath(folder, ROOT).replace(os.sep, ".")
            for name in files:
                if name.endswith(".py"):
                    stem = name[:-3]
                    found.add(package if stem == "__init__" else f"{package}.{stem}")
    found.discard("appliance.__main__")     # the entry script, frozen as __main__
    return found


def test_bundle_holds_every_module_of_the_code_base(binary):
    # Commands import their modules inside functions; --help alone would not notice
    # one missing from the bundle.
    bundled = set(CArchiveReader(binary).open_embedded_archive("PYZ.pyz").toc)
    missing = sorted(_source_modules() - bundled)
    assert missing == []
    for name in ("_nanomsg_cpy", "libnanomsg.so.5"):
        assert name in {os.path.basename(n).split(".cpython")[0]
                        for n in CArchiveReader(binary).toc}, name
    assert not {n for n in bundled if n.startswith(("gevent.tests", "gevent.testing",
                                                    "tkinter"))}


def test_cell_database_commands_run_frozen(binary, private_tmp, tmp_path):
    db = str(tmp_path / "cell1.db")
    done = run_binary(binary, "cell", "init", "--db", db, "--name", "cell1", tmpdir=private_tmp)
    assert done.returncode == 0, done.stderr
    assert "epoch" in done.stdout
    done = run_binary(binary, "cell", "populate", "--db", db, "--servers", "5", "--projects",
                      "2", tmpdir=private_tmp)
    assert done.returncode == 0, done.stderr
    assert os.path.getsize(db) > 0
    assert unpacked_dirs(private_tmp) == []


def test_example_config_checks_out_in_the_binary(binary, private_tmp, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    example = os.path.join(ROOT, "build", "appliance.example.toml")
    done = subprocess.run([binary, "serve", "--config", example, "--check"],
                          capture_output=True, text=True, timeout=60, cwd=private_tmp,
                          env=binary_env(private_tmp, APPLIANCE_TOKENS_FILE=str(tokens)))
    assert done.returncode == 0, done.stderr
    assert "auth = 'tokens'" in done.stdout
    assert "listen_port = 8774" in done.stdout
