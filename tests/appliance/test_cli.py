"""The command line: help with examples on every subcommand, one-line errors, the
admin commands against a listener that is down, version, config-doc."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT, free_port
from tests.appliance.conftest import PYTHON

SUBCOMMANDS = [["demo"], ["serve"], ["cell"], ["cell", "init"], ["cell", "populate"],
               ["cell", "simulate"], ["status"], ["resync"], ["verify"], ["version"],
               ["config-doc"], []]


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
    (["cell"], "missing --db, --name, --feed, --control"),
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


def test_serve_check_prints_the_settings(tmp_path):
    config = tmp_path / "a.toml"
    config.write_text('workers = 2\n[[cell]]\nname = "c1"\nfeed = "tcp://127.0.0.1:1"\n'
                      'control = "tcp://127.0.0.1:2"\n')
    result = appliance("serve", "--config", str(config), "--check")
    assert result.returncode == 0, result.stderr
    assert f"workers = 2  ({config})" in result.stdout
    assert "listen_port = 8774  (default)" in result.stdout


def test_serve_check_does_not_print_the_admin_token(tmp_path):
    config = tmp_path / "a.toml"
    config.write_text('admin_token = "very-secret-admin-token"\n')
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


def test_noauth_on_a_public_address_is_refused(tmp_path):
    config = tmp_path / "a.toml"
    config.write_text('listen_host = "0.0.0.0"\n')
    for args in (("--check",), ()):
        result = appliance("serve", "--config", str(config), *args)
        assert result.returncode == 2
        assert "'noauth'" in result.stderr and "allow_noauth_remote" in result.stderr
    config.write_text('listen_host = "0.0.0.0"\nallow_noauth_remote = true\n')
    assert appliance("serve", "--config", str(config), "--check").returncode == 0
    config.write_text('listen_host = "::1"\n')
    assert appliance("serve", "--config", str(config), "--check").returncode == 0


def test_serve_check_reads_the_tokens_file_and_asks_the_cells(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text('{"sha256": "' + "a" * 64 + '", "project_id": "p", "user_id": "u"}\n')
    config = tmp_path / "a.toml"
    config.write_text(f'auth = "tokens"\ntokens_file = "{tokens}"\n[[cell]]\nname = "c1"\n'
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
                      'keystone_user = "appliance"\nkeystone_password = "very-secret"\n')
    result = appliance("serve", "--config", str(config), "--check")
    assert result.returncode == 0, result.stderr
    assert "very-secret" not in result.stdout
    assert "keystone_password = (set, not shown)" in result.stdout
    config.write_text('auth = "keystone"\nkeystone_url = "http://127.0.0.1:5000"\n'
                      f'keystone_user = "appliance"\nkeystone_password_file = "{secret}"\n')
    result = appliance("serve", "--config", str(config), "--check")
    assert result.returncode == 0, result.stderr
    assert "kept-secret" not in result.stdout
    secret.write_text("")
    result = appliance("serve", "--config", str(config), "--check")
    assert result.returncode == 2 and "password is empty" in result.stderr
