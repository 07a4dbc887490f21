"""The bench stack's appliance config: valid TOML, with the stack's settings applied."""

from __future__ import annotations

import tomllib

from bench.procs import Processes
from bench.stack import Stack


def _config(tmp_path, settings: dict) -> dict:
    with Processes() as procs:
        stack = Stack(str(tmp_path), 10, procs, log=lambda *a: None)
        stack.settings = settings
        stack._write_config(2)
        with open(stack.config_path, "rb") as f:
            return tomllib.load(f)


def test_the_stack_logs_warnings_unless_its_settings_say_otherwise(tmp_path):
    assert _config(tmp_path / "a", {})["log_level"] == "warning"
    config = _config(tmp_path / "b", {"log_level": "debug", "group_commit_ms": 0.0})
    assert config["log_level"] == "debug" and config["group_commit_ms"] == 0.0
    assert config["workers"] == 2 and config["cell"][0]["name"]
