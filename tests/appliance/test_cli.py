"""The command line: help with examples on every subcommand, one-line errors, the
admin commands against a listener that is down, version, config-doc."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT, free_port, missing_part
from tests.appliance.conftest import PYTHON

SUBCOMMANDS = [["demo"], ["serve"], ["cell"], ["cell", "init"], ["cell", "populate"],
               ["cell", "simulate"], ["status"], ["resync"], ["verify"], ["version"],
               ["config-doc"], ["completion"], ["keygen"], []]


def appliance(*args, timeout=30):
    return subprocess.run([PYTHON, "-m", "appliance", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "appliance")
def test_help_has_examples(words):
    result = appliance(*words, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: appliance")
    assert "examples:" in result.stdout


@pytest.mark.parametrize("args, expected", [
    (["nosuch"], "invalid choice: 'nosuch'"),
    (["demo", "--cells", "zero"], "--cells: expected a whole number"),
    (["demo", "--port", "70000"], "--port: expected a port 0-65535"),
    (["cell"], "missing --db (or --source), --name, --feed, --control"),
    (["cell", "--source", "mysql://replica@db/nova_cell1", "--name", "c", "--feed", "ipc://f",
      "--control", "ipc://c"], "missing --state-dir"),
    (["cell", "--db", "x.db", "--source", "mysql://replica@db/nova_cell1"], "not both"),
    (["cell", "--db", "x.db", "--name", "c", "--feed", "ipc://f", "--control", "ipc://c",
      "--flavors"], "go with --source"),
    (["cell", "init", "--db", "x.db"], "the following arguments are required: --name"),
    (["cell", "simulate", "--db", "x", "--rate", "1", "--servers", "1", "--projects", "1",
      "--duration", "1", "--ops", "2"], "not allowed with argument"),
    (["verify", "--repair", "maybe"], "unrecognized arguments: maybe"),
    ([], "the following arguments are required: COMMAND"),
])
def test_bad_command_lines_are_one_line(args, expected):
    result = appliance(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "--help" in lines[0]


def test_admin_commands_say_when_the_listener_is_down():
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["status"], ["resync", "--cell", "c1"], ["verify"]):
        result = appliance(*command, "--admin-url", url)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot reach the admin listener" in lines[0], lines


def test_version_json():
    result = appliance("version", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    for key in ("appliance", "python", "sqlite", "apsw", "gevent", "bottle"):
        assert found[key]
    assert appliance("version").stdout.startswith("appliance")


def test_config_doc_check(tmp_path):
    assert appliance("config-doc", "--check", "docs/configuration.md").returncode == 0
    stale = tmp_path / "c.md"
    stale.write_text("old\n")
    result = appliance("config-doc", "--check", str(stale))
    assert result.returncode == 1 and "out of date" in result.stderr


CELLS = ('[[cell]]\nname = "c1"\nfeed = "tcp://127.0.0.1:1"\ncontrol = "tcp://127.0.0.1:2"\n'
         '[[cell]]\nname = "flavors"\nkind = "flavors"\nfeed = "tcp://127.0.0.1:3"\n'
         'control = "tcp://127.0.0.1:4"\n')


def test_serve_check_prints_the_settings(tmp_path):
    config = tmp_path / "a.toml"
    config.write_text('workers = 2\n' + CELLS)
    result = appliance("serve", "--config", str(config), "--check")
    assert result.returncode == 0, result.stderr
    assert f"workers = 2  ({config})" in result.stdout
    assert "listen_port = 8774  (default)" in result.stdout


def test_serve_check_does_not_print_the_admin_token(tmp_path):
    config = tmp_path / "a.toml"
    config.write_text('admin_token = "very-secret-admin-token"\n' + CELLS)
    result = appliance("serve", "--config", str(config), "--check")
    assert result.returncode == 0, result.stderr
    assert "very-secret" not in result.stdout
    assert f"admin_token = (set, not shown)  ({config})" in result.stdout


def test_cell_init_creates_a_database(tmp_path):
    db = tmp_path / "c1.db"
    result = appliance("cell", "init", "--db", str(db), "--name", "c1")
    assert result.returncode == 0, result.stderr
    assert db.exists() and "cell c1, epoch" in result.stdout
    result = appliance("cell", "populate", "--db", str(db), "--servers", "20", "--projects",
                       "2")
    assert result.returncode == 0, result.stderr
    assert "20 servers" in result.stdout
    result = appliance("cell", "simulate", "--db", str(db), "--rate", "0", "--servers", "20",
                       "--projects", "2", "--ops", "30", "--seed", "1")
    assert result.returncode == 0, result.stderr


def test_cell_publisher_runs_until_sigterm(tmp_path):
    import os
    import signal

    from tests.conftest import wait_for
    db = tmp_path / "c1.db"
    assert appliance("cell", "init", "--db", str(db), "--name", "c1").returncode == 0
    feed, control = tmp_path / "c1.feed", tmp_path / "c1.ctl"
    proc = subprocess.Popen([PYTHON, "-m", "appliance", "cell", "--db", str(db), "--name",
                             "c1", "--feed", f"ipc://{feed}", "--control", f"ipc://{control}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(feed) and os.path.exists(control), timeout=20,
                 what="publisher sockets")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------
# The rough edges an operator meets first
# ---------------------------------------------------------------------------

def _admin_port_of(running) -> int:
    from tests.conftest import wait_for

    def port():
        for line in running.log().splitlines():
            if "event=supervisor_started" in line:
                return int(line.split("admin=")[1].split()[0].rsplit(":", 1)[1])
    return wait_for(port, what="supervisor_started line")


def test_output_into_a_closed_pipe_ends_quietly(trivial):
    """`appliance status --json | head -1` when head has gone: no traceback, no message,
    the exit status a shell gives a program ended by SIGPIPE."""
    import os

    from tests.appliance.conftest import get
    from tests.conftest import wait_for
    running = trivial(workers=1, TEST_WITH_ADMIN="1")
    url = f"http://127.0.0.1:{_admin_port_of(running)}"
    wait_for(lambda: get(int(url.rsplit(":", 1)[1]), "/healthz")[0] == 200, what="admin up")
    for command in (["status", "--json", "--admin-url", url],
                    ["status", "--admin-url", url], ["version", "--json"],
                    ["completion", "bash"], ["config-doc"]):
        read_end, write_end = os.pipe()
        os.close(read_end)                  # the reader is gone before the first write
        try:
            result = subprocess.run([PYTHON, "-m", "appliance", *command], cwd=ROOT,
                                    stdout=write_end, stderr=subprocess.PIPE, text=True,
                                    timeout=30)
        finally:
            os.close(write_end)
        assert result.stderr == "", (command, result.stderr)
        assert result.returncode == 141, command

    # As typed in a shell: the first line arrives, nothing on stderr.
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {PYTHON} -m appliance status "
                             f"--json --admin-url {url} | head -1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.stdout == "{\n" and result.stderr == ""
    assert result.returncode in (0, 141)


def test_status_table_counts_live_and_deleted_servers_apart(cells_appliance):
    import re

    from replica.cell import connection
    from tests.conftest import wait_for
    conn = connection.open_cell(cells_appliance.feeds["cell1"]["db"])
    try:
        with conn:
            conn.execute("UPDATE instances SET deleted = id, deleted_at = updated_at, "
                         "vm_state = 'deleted' WHERE id IN (SELECT id FROM instances "
                         "WHERE deleted = 0 ORDER BY id LIMIT 3)")
    finally:
        conn.close()
    admin = ["--admin-url", f"http://127.0.0.1:{cells_appliance.admin_port}"]

    def row(text: str, cell: str) -> dict:
        lines = text.splitlines()
        header = re.split(r"\s{2,}", lines[0])
        found = next(line for line in lines if line.split()[0] == cell)
        return dict(zip(header, re.split(r"\s{2,}", found)))

    def table():
        result = appliance("status", *admin)
        assert result.returncode == 0, result.stderr
        return result.stdout
    text = wait_for(lambda: (lambda t: row(t, "cell1")["DELETED"] == "3" and t)(table()),
                    timeout=20, what="cell1 with 3 deleted servers")
    assert row(text, "cell1")["SERVERS"] == "17" and row(text, "cell1")["STATE"] == "live"
    assert row(text, "cell2")["SERVERS"] == "20" and row(text, "cell2")["DELETED"] == "0"
    assert (row(text, "flavors")["SERVERS"], row(text, "flavors")["DELETED"]) == ("-", "-")
    assert int(row(text, "flavors")["FLAVORS"]) > 0
    header = text.splitlines()[0].split()
    assert header[header.index("SERVERS") + 1] == "DELETED"
    assert "SERVERS: live servers; DELETED: soft-deleted servers" in text
    cells = {c["cell"]: c for c in json.loads(appliance("status", "--json", *admin).stdout)
             ["cells"]}
    assert (cells["cell1"]["servers_live"], cells["cell1"]["servers_deleted"]) == (17, 3)
    assert cells["cell1"]["servers"] == 20


def _check(tmp_path, text: str, **env):
    config = tmp_path / "check.toml"
    config.write_text(text)
    return subprocess.run([PYTHON, "-m", "appliance", "serve", "--config", str(config),
                           "--check"], cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env={**{k: v for k, v in __import__("os").environ.items()
                                  if not k.startswith("APPLIANCE_")}, **env})


def test_serve_check_refuses_a_bad_tokens_line(tmp_path):
    import hashlib
    tokens = tmp_path / "tokens"
    good = json.dumps({"sha256": hashlib.sha256(b"t").hexdigest(), "project_id": "p1",
                       "user_id": "u1", "roles": ["member"]})
    tokens.write_text(good + "\n" + '{"sha256": "abc", "project_id": "p2"}\n')
    result = _check(tmp_path, f'auth = "tokens"\ntokens_file = "{tokens}"\n' + CELLS)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"appliance serve: error: tokens_file {tokens}:2: bad token line (sha256 is not 64 "
        "hex digits); each line must be a JSON object with sha256, project_id, user_id and "
        "roles"]
    tokens.write_text(good + "\n")
    result = _check(tmp_path, f'auth = "tokens"\ntokens_file = "{tokens}"\n' + CELLS)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_serve_check_needs_a_server_cell_and_the_flavor_source(tmp_path):
    result = _check(tmp_path, "workers = 1\n")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "appliance serve: error: no server cell configured: add a [[cell]] table (name, "
        "feed, control) for each cell's publisher",
        "appliance serve: error: no flavor source configured: add a [[cell]] table with "
        "kind = 'flavors' for the publisher beside the API database's flavor tables"]
    result = _check(tmp_path, CELLS.split("[[cell]]\nname = \"flavors\"")[0])
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "appliance serve: error: no flavor source configured: add a [[cell]] table with "
        "kind = 'flavors' for the publisher beside the API database's flavor tables"]
    result = _check(tmp_path, "", APPLIANCE_CELLS="c1,tcp://127.0.0.1:1,tcp://127.0.0.1:2;"
                    "f,tcp://127.0.0.1:3,tcp://127.0.0.1:4,flavors")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    result = _check(tmp_path, CELLS.replace('kind = "flavors"', 'kind = "flavours"'))
    assert result.returncode == 2
    assert "kind must be one of servers, flavors (got 'flavours')" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_serve_check_warns_on_every_setting_that_exposes_data(tmp_path):
    result = _check(tmp_path, CELLS)                 # loopback, noauth: nothing to say
    assert result.returncode == 0 and result.stderr == ""
    result = _check(tmp_path, 'listen_host = "0.0.0.0"\nadmin_host = "0.0.0.0"\n'
                    'admin_token = "secret"\nallow_noauth_remote = true\n' + CELLS)
    assert result.returncode == 0
    warnings = result.stderr.splitlines()
    assert len(warnings) == 3 and all(w.startswith("appliance serve: warning: ")
                                      for w in warnings), warnings
    assert "auth is 'noauth' and listen_host '0.0.0.0' is not loopback" in warnings[0]
    assert "noauth_default_token 'admin:demo' answers requests without a token as an " \
           "admin" in warnings[1]
    assert "admin_host '0.0.0.0' is not loopback" in warnings[2]
    assert "secret" not in result.stdout + result.stderr
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    result = _check(tmp_path, f'listen_host = "0.0.0.0"\nauth = "tokens"\n'
                    f'tokens_file = "{tokens}"\n' + CELLS)
    assert result.returncode == 0 and result.stderr == ""


def _bash_complete(script: str, line: str) -> list[str]:
    """What bash offers for ``line`` (the cursor at its end) with ``script`` loaded."""
    import shlex
    words = line.split(" ")
    program = (f"{script}\nCOMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
               f"COMP_CWORD={len(words) - 1}\n_appliance\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True,
                            timeout=30, cwd=ROOT)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [w for w in result.stdout.splitlines() if w]


def test_bash_completion_is_generated_from_the_parser():
    result = appliance("completion", "bash")
    assert result.returncode == 0 and result.stderr == ""
    script = result.stdout
    assert "complete -F _appliance appliance" in script
    assert _bash_complete(script, "appliance st") == ["status"]
    assert set(_bash_complete(script, "appliance ")) >= {
        "demo", "serve", "cell", "status", "resync", "verify", "version", "completion",
        "config-doc"}
    assert _bash_complete(script, "appliance cell i") == ["init"]
    assert _bash_complete(script, "appliance cell --db x.db i") == ["init"]
    assert _bash_complete(script, "appliance cell init --fl") == ["--flavors"]
    assert _bash_complete(script, "appliance verify --re") == ["--repair"]
    assert _bash_complete(script, "appliance completion ") == ["bash", "zsh"]
    assert _bash_complete(script, "appliance demo --cells ") == []
    # --config takes a file: the files of the directory are offered.
    assert "pyproject.toml" in _bash_complete(script, "appliance serve --config py")
    # The value of an option is not taken for a subcommand.
    assert _bash_complete(script, "appliance cell --name init --fe") == ["--feed"]
    assert _bash_complete(script, "appliance cell init --f") == ["--flavors"]
    assert "--json" in _bash_complete(script, "appliance status ")


def test_zsh_completion_is_generated_from_the_parser():
    import shutil
    result = appliance("completion", "zsh")
    assert result.returncode == 0 and result.stderr == ""
    script = result.stdout
    assert script.startswith("#compdef appliance\n")
    zsh = shutil.which("zsh")
    if zsh is None:
        missing_part("zsh is missing")
    assert subprocess.run([zsh, "-n"], input=script, text=True).returncode == 0
    # Run the generated function with zsh's completion builtins stood in by functions
    # that print what they were given.
    stubs = ("compdef() { :; }\n"
             "_describe() { print -l -- \"$3\" \"${(@P)4}\"; }\n"
             "compadd() { shift; print -l -- compadd \"$@\"; }\n"
             "_files() { print -- files \"$@\"; }\n"
             "_message() { print -- message \"$@\"; }\n")

    def offered(line: str) -> list[str]:
        program = (stubs + script + f"\nwords=({line})\nCURRENT=${{#words}}\n"
                   + ("CURRENT=$((CURRENT + 1)); words+=('')\n" if line.endswith(" ") else "")
                   + "_appliance\n")
        done = subprocess.run([zsh, "-f", "-c", program], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        return done.stdout.splitlines()

    commands = offered("appliance ")
    assert commands[0] == "command" and "status:per-cell freshness and the processes" \
        in commands
    assert ("init:create a cell database (or a flavor source), or install the outbox into an "
            "existing one") in offered("appliance cell ")
    options = offered("appliance verify --")
    assert options[0] == "option" and "--repair:repair what differs" in options
    assert offered("appliance serve --config ") == ["files"]
    assert offered("appliance completion ")[1:] == ["bash", "zsh"]
    assert offered("appliance cell --feed ") == ["message PUB address, e.g. tcp://0.0.0.0:7001"]


def test_status_says_when_the_store_cannot_write_and_why_a_cell_resyncs():
    from appliance.cli import format_status
    text = format_status({
        "cells": [{"cell": "c1", "state": "resyncing", "state_since": 0.0, "seq": 5,
                   "resync_reason": "epoch 1234abcd -> 5678ef00"}],
        "ingest": {"store_failing_since": 1_800_000_000.0, "disk_full": True,
                   "store_error": "commit of 3 changes: database or disk is full"},
        "processes": []})
    assert "replica store: disk full since" in text and "database or disk is full" in text
    assert "c1: resyncing (epoch 1234abcd -> 5678ef00)" in text


def test_status_says_when_reads_are_slower_while_the_wal_is_copied_back():
    from appliance.cli import format_status
    status = {"cells": [], "processes": [], "ingest": {"wal_backlog_bytes": 3 << 30}}
    assert "3,072 MiB of the write-ahead log not copied back" in format_status(status)
    status["ingest"]["wal_backlog_bytes"] = 1 << 20
    assert "write-ahead log" not in format_status(status)


def test_noauth_on_a_public_address_is_refused(tmp_path):
    config = tmp_path / "a.toml"
    config.write_text('listen_host = "0.0.0.0"\n')
    for args in (("--check",), ()):
        result = appliance("serve", "--config", str(config), *args)
        assert result.returncode == 2
        assert "'noauth'" in result.stderr and "allow_noauth_remote" in result.stderr
    config.write_text('listen_host = "0.0.0.0"\nallow_noauth_remote = true\n' + CELLS)
    assert appliance("serve", "--config", str(config), "--check").returncode == 0
    config.write_text('listen_host = "::1"\n' + CELLS)
    assert appliance("serve", "--config", str(config), "--check").returncode == 0


def test_serve_check_reads_the_tokens_file_and_asks_the_cells(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text('{"sha256": "' + "a" * 64 + '", "project_id": "p", "user_id": "u"}\n')
    config = tmp_path / "a.toml"
    config.write_text(f'auth = "tokens"\ntokens_file = "{tokens}"\n[[cell]]\nname = "c1"\n'
                      f'feed = "tcp://127.0.0.1:{free_port()}"\n'
                      f'control = "tcp://127.0.0.1:{free_port()}"\n'
                      '[[cell]]\nname = "flavors"\nkind = "flavors"\n'
                      f'feed = "tcp://127.0.0.1:{free_port()}"\n'
                      f'control = "tcp://127.0.0.1:{free_port()}"\n')
    result = appliance("serve", "--config", str(config), "--check")
    assert result.returncode == 0, result.stderr
    assert "ok: tokens_file: 1 tokens" in result.stdout
    assert "warning: cell c1 does not answer" in result.stdout
    tokens.write_text("not json\n")
    result = appliance("serve", "--config", str(config), "--check")
    assert result.returncode == 2
    assert "tokens_file" in result.stderr and "bad token line" in result.stderr


def test_serve_check_hides_the_keystone_password(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("kept-secret\n")
    config = tmp_path / "a.toml"
    config.write_text('auth = "keystone"\nkeystone_url = "http://127.0.0.1:5000"\n'
                      'keystone_user = "appliance"\nkeystone_password = "very-secret"\n' + CELLS)
    result = appliance("serve", "--config", str(config), "--check")
    assert result.returncode == 0, result.stderr
    assert "very-secret" not in result.stdout
    assert "keystone_password = (set, not shown)" in result.stdout
    config.write_text('auth = "keystone"\nkeystone_url = "http://127.0.0.1:5000"\n'
                      f'keystone_user = "appliance"\nkeystone_password_file = "{secret}"\n' + CELLS)
    result = appliance("serve", "--config", str(config), "--check")
    assert result.returncode == 0, result.stderr
    assert "kept-secret" not in result.stdout
    secret.write_text("")
    result = appliance("serve", "--config", str(config), "--check")
    assert result.returncode == 2 and "password is empty" in result.stderr


def test_keygen_writes_a_key_file_and_rotates_its_keys(tmp_path):
    import os
    import stat
    from replica.key_file import read_key_file
    path = str(tmp_path / "c1.key")
    result = appliance("keygen", path)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    (old,) = read_key_file(path).ids
    result = appliance("keygen", path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"appliance keygen: error: {path} exists; use --add to add a key to it"]
    assert appliance("keygen", "--add", path).returncode == 0
    new = read_key_file(path).ids[1]
    assert read_key_file(path).sealing_id == old
    assert appliance("keygen", "--promote", new, path).returncode == 0
    assert read_key_file(path).sealing_id == new
    assert appliance("keygen", "--remove", old, path).returncode == 0
    assert read_key_file(path).ids == (new,)
    result = appliance("keygen", "--remove", new, path)
    assert result.returncode == 2 and "its only key" in result.stderr


def test_a_bad_key_file_stops_the_cell_and_serve_with_one_line(tmp_path):
    import os
    key = tmp_path / "c1.key"
    assert appliance("keygen", str(key)).returncode == 0
    os.chmod(key, 0o644)
    result = appliance("cell", "--db", str(tmp_path / "c1.db"), "--name", "c1",
                       "--feed", f"ipc://{tmp_path}/f", "--control", f"ipc://{tmp_path}/c",
                       "--key-file", str(key))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"appliance cell: error: key file {key}: mode 0644 lets group or others at it; "
        f"run 'chmod 600 {key}'"]
    config = CELLS.replace('control = "tcp://127.0.0.1:2"\n',
                           f'control = "tcp://127.0.0.1:2"\nkey_file = "{key}"\n')
    result = _check(tmp_path, config)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"appliance serve: error: cell c1: key file {key}: mode 0644 lets group or others "
        f"at it; run 'chmod 600 {key}'"]
    (tmp_path / "serve.toml").write_text(config)
    result = appliance("serve", "--config", str(tmp_path / "serve.toml"))
    assert result.returncode == 2
    assert "run 'chmod 600" in result.stderr and len(result.stderr.splitlines()) == 1


def test_an_appliance_with_sealed_feeds_serves_and_says_so(tmp_path):
    """``appliance serve`` with a key_file per [[cell]] and ``appliance cell --key-file``:
    the cells load and go live, status says which key seals, serve --check asks each
    cell's hello with its key."""
    from appliance.cli import format_status
    from tests.appliance.cells import CellsAppliance
    running = CellsAppliance(tmp_path / "cells", cells=("cell1",), servers=5, keyed=True)
    try:
        running.start()
        cells = running.status()["cells"]
        assert {c["cell"]: c["auth"] for c in cells} == {"cell1": "aes-256-gcm",
                                                         "flavors": "aes-256-gcm"}
        assert all(len(c["auth_keys"]) == 1 and c["dead_letters"] == 0 for c in cells)
        assert next(c for c in cells if c["cell"] == "cell1")["servers"] == 5
        check = appliance("serve", "--config", running.config, "--check")
        assert check.returncode == 0, check.stderr
        assert "ok: cell cell1 answers" in check.stdout and ", sealed (key k" in check.stdout
        assert "auth: none" not in format_status({"cells": cells})
    finally:
        running.stop()
    assert "auth: none (feed and control not authenticated" in format_status(
        {"cells": [{"cell": "c9", "state": "live", "auth": "none"}]})


def test_a_socket_path_too_long_for_unix_stops_the_cell_with_one_line(tmp_path):
    """nanomsg would abort the process on an ipc:// path longer than a Unix socket's
    107 bytes: the publisher refuses it first, saying what to do."""
    long_feed = "ipc://" + str(tmp_path / ("f" * 110))
    result = appliance("cell", "--db", str(tmp_path / "x.db"), "--name", "c", "--feed",
                       long_feed, "--control", "ipc://" + str(tmp_path / "c"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("appliance cell: error: --feed ")
    assert "longer than the 107" in lines[-1] and "shorter path" in lines[-1]



def test_a_replica_from_a_newer_release_is_one_line(tmp_path):
    """A rollback: the replica's schema is past this build's. serve says so in one line
    and how to go on, no traceback."""
    import apsw
    data = tmp_path / "data"
    data.mkdir()
    apsw.Connection(str(data / "replica.db")).execute("PRAGMA user_version = 999")
    config = tmp_path / "a.toml"
    config.write_text(f'data_dir = "{data}"\nlisten_port = {free_port()}\n'
                      f'admin_port = {free_port()}\n' + CELLS)
    result = appliance("serve", "--config", str(config))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("appliance serve: error: replica "), lines
    assert "newer than this build" in lines[0] and "data_dir" in lines[0]
