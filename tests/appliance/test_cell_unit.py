"""The systemd template unit of a MariaDB/MySQL cell publisher: what it runs is a valid
``appliance cell`` command line (no password in it), and systemd accepts the unit."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess


from appliance import cli
from tests.conftest import ROOT, missing_part

UNIT = os.path.join(ROOT, "build", "appliance-cell@.service")


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser["Service"]


def test_the_unit_runs_a_publisher_command_the_cli_accepts():
    service = _service()
    assert service["User"] != "root" and service["RestartPreventExitStatus"] == "2"
    command = service["ExecStart"].replace("\\\n", " ")
    env = {"SOURCE": "mysql://replica@db:3306/nova_cell1",
           "SOURCE_OPTIONS": "--api-source mysql://replica@db:3306/nova_api",
           "FEED": "tcp://0.0.0.0:7001", "CONTROL": "tcp://0.0.0.0:7002",
           "CREDENTIALS_DIRECTORY": "/run/credentials/appliance-cell@cell1.service"}
    for name, value in sorted(env.items(), key=lambda item: -len(item[0])):
        command = command.replace("${%s}" % name, value).replace("$" + name, value)
    argv = shlex.split(command.replace("%i", "cell1"))
    assert argv[0] == "/usr/local/bin/appliance"
    args = cli.build_parser().parse_args(argv[1:])
    assert (args.command, args.name, args.source, args.api_source) == \
        ("cell", "cell1", env["SOURCE"], "mysql://replica@db:3306/nova_api")
    assert args.password_file.endswith("/db-password") and args.state_dir
    assert "password" not in env["SOURCE"]


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        missing_part("systemd-analyze is not installed")
    program = tmp_path / "appliance"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    with open(UNIT) as f:
        text = f.read().replace("/usr/local/bin/appliance", str(program))
    unit = tmp_path / "appliance-cell@cell1.service"
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "appliance-cell" not in done.stderr, done.stderr
