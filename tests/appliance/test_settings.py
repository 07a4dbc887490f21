"""Settings: TOML file, environment overrides, one-line refusals, generated docs."""

from __future__ import annotations

import os
import subprocess

import pytest

from appliance import settings
from appliance.settings import SETTINGS, SettingsError, load, render_docs
from tests.conftest import ROOT
from tests.appliance.conftest import PYTHON

CONFIG = """
listen_host = "127.0.0.1"
listen_port = 9774
workers = 3
data_dir = "{data}"
graceful_timeout = 12.5
log_format = "json"

[[cell]]
name = "cell1"
feed = "tcp://127.0.0.1:7001"
control = "tcp://127.0.0.1:7002"

[[cell]]
name = "cell2"
feed = "ipc:///tmp/c2.feed"
control = "ipc:///tmp/c2.ctl"
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text(CONFIG.format(data=tmp_path / "data"))
    return str(path)


def test_toml_file_is_read(config_file, tmp_path):
    loaded = load(config_file, environ={})
    assert loaded.listen_port == 9774
    assert loaded.workers == 3
    assert loaded.graceful_timeout == 12.5
    assert loaded.log_format == "json"
    assert [c.name for c in loaded.cells] == ["cell1", "cell2"]
    assert loaded.cells[1].control == "ipc:///tmp/c2.ctl"
    assert loaded.replica == os.path.join(str(tmp_path / "data"), "replica.db")
    assert loaded.sources["workers"] == config_file
    assert loaded.sources["admin_port"] == "default"
    assert loaded.admin_port == 8775


def test_environment_overrides_the_file(config_file):
    loaded = load(config_file, environ={"APPLIANCE_WORKERS": "5",
                                        "APPLIANCE_LOG_FORMAT": "kv",
                                        "APPLIANCE_CELLS": "c9,tcp://h:1,tcp://h:2"})
    assert loaded.workers == 5
    assert loaded.log_format == "kv"
    assert [(c.name, c.feed, c.control) for c in loaded.cells] == [
        ("c9", "tcp://h:1", "tcp://h:2")]
    assert loaded.sources["workers"] == "APPLIANCE_WORKERS"


def test_a_cell_names_its_key_file(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[[cell]]\nname = "c1"\nfeed = "tcp://h:1"\ncontrol = "tcp://h:2"\n'
                    'key_file = "/etc/appliance/c1.key"\n'
                    '[[cell]]\nname = "c2"\nfeed = "tcp://h:3"\ncontrol = "tcp://h:4"\n')
    loaded = load(str(path), environ={})
    assert [c.key_file for c in loaded.cells] == ["/etc/appliance/c1.key", ""]
    loaded = load(None, environ={"APPLIANCE_CELLS": "c9,tcp://h:1,tcp://h:2,servers,/k/c9.key;"
                                                    "f,tcp://h:3,tcp://h:4,flavors"})
    assert [(c.name, c.kind, c.key_file) for c in loaded.cells] == [
        ("c9", "servers", "/k/c9.key"), ("f", "flavors", "")]
    path.write_text('[[cell]]\nname = "c1"\nfeed = "tcp://h:1"\ncontrol = "tcp://h:2"\n'
                    'key_file = 7\n')
    with pytest.raises(SettingsError, match="key_file must be a path"):
        load(str(path), environ={})


def test_defaults():
    loaded = load(None, environ={})
    assert (loaded.listen_host, loaded.listen_port) == ("127.0.0.1", 8774)
    assert (loaded.admin_host, loaded.admin_port) == ("127.0.0.1", 8775)
    assert loaded.workers >= 1
    assert loaded.auth == "noauth"
    assert loaded.max_limit == 1000


@pytest.mark.parametrize("environ, words", [
    ({"APPLIANCE_LISTEN_PORT": "http"}, ["listen_port", "APPLIANCE_LISTEN_PORT", "integer"]),
    ({"APPLIANCE_LISTEN_PORT": "99999"}, ["listen_port", "0 and 65535"]),
    ({"APPLIANCE_WORKERS": "0"}, ["workers", "between 1 and 256"]),
    ({"APPLIANCE_LOG_LEVEL": "chatty"}, ["log_level", "debug, info"]),
    ({"APPLIANCE_ADMIN_HOST": "0.0.0.0"}, ["admin_token", "APPLIANCE_ADMIN_TOKEN"]),
    ({"APPLIANCE_AUTH": "tokens"}, ["tokens_file"]),
    ({"APPLIANCE_AUTH": "keystone"}, ["keystone_url", "APPLIANCE_KEYSTONE_URL"]),
    ({"APPLIANCE_AUTH": "keystone", "APPLIANCE_KEYSTONE_URL": "http://k:5000",
      "APPLIANCE_KEYSTONE_USER": "appliance"}, ["keystone_password_file"]),
    ({"APPLIANCE_AUTH": "keystone", "APPLIANCE_KEYSTONE_URL": "http://k:5000",
      "APPLIANCE_KEYSTONE_USER": "appliance", "APPLIANCE_KEYSTONE_PASSWORD_FILE": "/nope"},
     ["no such file"]),
    ({"APPLIANCE_AUTH": "keystone", "APPLIANCE_KEYSTONE_URL": "http://k:5000",
      "APPLIANCE_KEYSTONE_USER": "appliance", "APPLIANCE_KEYSTONE_PASSWORD": "x",
      "APPLIANCE_KEYSTONE_TIMEOUT": "30"}, ["shorter than worker_timeout"]),
    ({"APPLIANCE_CELLS": "a,http://x,tcp://y:1"}, ["nanomsg address"]),
    ({"APPLIANCE_CELLS": "a,ipc:///" + "f" * 107 + ",tcp://y:1"},
     ["cell 'a' feed", "108 bytes", "longer than the 107"]),
    ({"APPLIANCE_DATA_DIR": "/" + "d" * 100}, ["data_dir", "ingest.ctl", "longer than the 107"]),
    ({"APPLIANCE_CELLS": "a,tcp://x:1,tcp://y:1;a,tcp://x:2,tcp://y:2"}, ["unique"]),
    ({"APPLIANCE_READER_MAP_BYTES": "-1"}, ["reader_map_bytes", "0 or more"]),
    ({"APPLIANCE_GROUP_COMMIT_MS": "soon"}, ["group_commit_ms", "number"]),
    ({"APPLIANCE_GROUP_COMMIT_MS": "-2"}, ["group_commit_ms", "0 or more"]),
])
def test_bad_values_are_refused_in_one_line(environ, words):
    with pytest.raises(SettingsError) as caught:
        load(None, environ=environ)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_ingest_runs_with_the_group_commit_window_of_the_settings():
    from appliance.children import IngestChild
    assert IngestChild(load(None, environ={})).config().group_commit_ms == 0.0
    loaded = load(None, environ={"APPLIANCE_GROUP_COMMIT_MS": "0.5"})
    assert IngestChild(loaded).config().group_commit_ms == 0.5


def test_unknown_environment_variables_are_reported_not_refused():
    environ = {"APPLIANCE_LISTN_PORT": "1", "APPLIANCE_WORKERS": "2"}
    assert load(None, environ=environ).workers == 2
    assert settings.unknown_environment(environ) == ["APPLIANCE_LISTN_PORT"]


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text("listen_prot = 1\n")
    with pytest.raises(SettingsError, match="unknown setting 'listen_prot'"):
        load(str(path), environ={})


def test_serve_with_a_bad_value_exits_2_with_one_line(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('listen_port = "eighty"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    result = subprocess.run([PYTHON, "-m", "appliance", "serve", "--config", str(path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "listen_port" in lines[0] and str(path) in lines[0]
    assert "Traceback" not in result.stderr


def test_serve_with_broken_toml_exits_2(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text("listen_port = \n")
    result = subprocess.run([PYTHON, "-m", "appliance", "serve", "--config", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not valid TOML" in result.stderr


def test_configuration_doc_is_up_to_date():
    with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
        current = f.read()
    assert current == render_docs(), ("docs/configuration.md is out of date: run "
                                      "'python -m appliance config-doc > docs/configuration.md'")


def test_every_setting_is_documented():
    doc = render_docs()
    for setting in SETTINGS:
        assert f"`{setting.toml_key}`" in doc and setting.env in doc
        assert setting.help.strip(), f"{setting.name} has no help text"


def test_example_config_in_build_is_valid(tmp_path):
    example = os.path.join(ROOT, "build", "appliance.example.toml")
    if not os.path.exists(example):
        pytest.skip("no example config")
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    loaded = load(example, environ={"APPLIANCE_TOKENS_FILE": str(tokens)})
    assert loaded.cells and loaded.admin_token
    assert settings.is_loopback("127.0.0.1") and not settings.is_loopback("10.20.0.10")
