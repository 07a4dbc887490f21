"""The edge-site examples agree with the code: every key of the example config is a
declared setting with a valid value, and the systemd unit stops the way the
supervisor expects."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import tomllib


from appliance import settings
from tests.conftest import ROOT, missing_part

EXAMPLE = os.path.join(ROOT, "build", "appliance.example.toml")
UNIT = os.path.join(ROOT, "build", "appliance.service")


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def test_example_config_loads_with_every_key_declared(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    # load() refuses unknown keys, so this also checks the names.
    loaded = settings.load(EXAMPLE, environ={}, overrides={"tokens_file": str(tokens)})
    with open(EXAMPLE, "rb") as f:
        table = tomllib.load(f)
    declared = {s.toml_key for s in settings.SETTINGS}
    assert set(table) <= declared
    assert loaded.auth == "tokens"
    assert loaded.admin_token
    assert len(loaded.cells) >= 2
    assert all(c.feed.startswith("tcp://") and c.control.startswith("tcp://")
               for c in loaded.cells)


def test_example_environment_overrides_the_admin_token(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    loaded = settings.load(EXAMPLE, environ={"APPLIANCE_ADMIN_TOKEN": "from-env"},
                           overrides={"tokens_file": str(tokens)})
    assert loaded.admin_token == "from-env"


def test_unit_stops_gracefully_and_keeps_state_where_the_config_says():
    service = _unit()["Service"]
    assert service["Type"] == "simple"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"
    assert service["User"] and service["User"] != "root"
    # The supervisor drains for graceful_timeout before it kills; systemd must wait longer.
    graceful = settings.BY_NAME["graceful_timeout"].default
    with open(EXAMPLE, "rb") as f:
        graceful = max(graceful, tomllib.load(f).get("graceful_timeout", graceful))
    assert float(service["TimeoutStopSec"]) > graceful
    with open(EXAMPLE, "rb") as f:
        data_dir = tomllib.load(f)["data_dir"]
    assert data_dir == "/var/lib/" + service["StateDirectory"]
    assert "--config /etc/appliance/appliance.toml" in service["ExecStart"]
    assert service["PrivateTmp"] == "yes"


def test_unit_passes_systemd_analyze_verify(binary, tmp_path):
    if not shutil.which("systemd-analyze"):
        missing_part("systemd-analyze is not installed")
    with open(UNIT) as f:
        text = f.read().replace("/usr/local/bin/appliance", binary)
    unit = tmp_path / "appliance.service"
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "appliance.service" not in done.stderr, done.stderr
