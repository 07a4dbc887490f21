"""`appliance demo` end to end: real cells, publishers, simulators, ingest, workers,
admin; servers listed over HTTP; Ctrl-C leaves no process and no temporary directory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

from tests.conftest import ROOT, VENV_BIN, free_port, wait_for
from tests.appliance.conftest import PYTHON, alive, get, start_process


def test_demo_serves_and_stops_cleanly(tmp_path):
    port, admin_port = free_port(), free_port()
    env = {"TMPDIR": str(tmp_path)}
    argv = [PYTHON, "-m", "appliance", "demo", "--port", str(port), "--admin-port",
            str(admin_port), "--servers", "60", "--rate", "5", "--workers", "1"]
    # Its own process group, as a shell gives a foreground job: Ctrl-C reaches them all.
    running = start_process(argv, env, tmp_path / "out", cwd=ROOT, new_session=True)
    try:
        wait_for(lambda: "The appliance is ready." in running.log(), timeout=90,
                 what="demo ready")
        data_dir = re.search(r"data in (\S+)", running.log()).group(1)
        assert data_dir.startswith(str(tmp_path))
        table = json.load(open(os.path.join(data_dir, "processes.json")))
        pids = {p["pid"] for p in table["processes"]}
        roles = sorted(p["role"] for p in table["processes"])
        assert roles == ["admin", "ingest", "publisher", "publisher", "publisher",
                         "simulator", "simulator", "worker"]

        status, body, _ = get(port, "/v2.1/servers/detail?all_tenants=1&limit=1000",
                              headers={"X-Auth-Token": "admin:demo"})
        assert status == 200
        servers = json.loads(body)["servers"]
        assert len(servers) >= 50
        assert {s["status"] for s in servers} & {"ACTIVE", "BUILD", "SHUTOFF"}
        # The demo's log has an access line per request.
        demo_log = os.path.join(data_dir, "logs", "appliance.log")
        wait_for(lambda: any("event=access" in line and "/v2.1/servers/detail" in line
                             and "status=200" in line and "statements=1" in line
                             for line in open(demo_log, errors="replace")),
                 what="the access line of the detail request")

        # The openstack command the demo prints works as printed.
        # (Run from the source tree, it names the copy beside the interpreter.)
        command = [line.strip() for line in running.log().splitlines()
                   if line.strip().split(" ")[0].endswith("openstack")][0].split()
        program = command[0] if "/" in command[0] else os.path.join(VENV_BIN, command[0])
        result = subprocess.run([os.path.join(ROOT, program), *command[1:], "-f", "json"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        listed = json.loads(result.stdout)
        assert listed and all(s["ID"] and s["Status"] for s in listed)
        # ... and so does its hypervisor list (the demo's token is an admin's): every
        # compute host of the two cells, up
        command = [line.strip() for line in running.log().splitlines()
                   if line.strip().endswith("hypervisor list")][0].split()
        result = subprocess.run([os.path.join(ROOT, program), *command[1:], "-f", "json"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        hypervisors = json.loads(result.stdout)
        # (the simulator forces a host down now and then)
        assert len(hypervisors) >= 2 and "up" in {h["State"] for h in hypervisors}

        # ... and so does its availability zone list: Nova's default zone for the cells'
        # compute hosts (the seeded aggregate's az-west has compute-0002 and more: the
        # cells here have two hosts each; the simulator disables one now and then).
        printed = [line.strip() for line in running.log().splitlines()
                   if " availability zone list" in line]
        command = printed[0].split()
        result = subprocess.run([os.path.join(ROOT, program), *command[1:], "-f", "json"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        zones = {z["Zone Name"]: z["Zone Status"] for z in json.loads(result.stdout)}
        assert set(zones) == {"nova"}, zones
        # ... and its server group list (the demo project's, seeded in the API database)
        printed = [line.strip() for line in running.log().splitlines()
                   if line.strip().endswith(" server group list")]
        command = printed[0].split()
        result = subprocess.run([os.path.join(ROOT, program), *command[1:], "-f", "json"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert [g["Name"] for g in json.loads(result.stdout)] == [
            "web-spread", "db-pack", "batch"]

        result = subprocess.run([PYTHON, "-m", "appliance", "status", "--json",
                                 "--admin-url", f"http://127.0.0.1:{admin_port}"],
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        cells = {c["cell"]: c for c in json.loads(result.stdout)["cells"]}
        assert set(cells) == {"cell1", "cell2", "flavors"}
        assert all(c["live_once"] for c in cells.values())

        result = subprocess.run([PYTHON, "-m", "appliance", "status",
                                 "--admin-url", f"http://127.0.0.1:{admin_port}"],
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0
        assert re.search(r"^cell1\s+live", result.stdout, re.M), result.stdout
        assert "publisher cell1" in result.stdout

        result = subprocess.run([PYTHON, "-m", "appliance", "resync", "--cell", "cell2",
                                 "--admin-url", f"http://127.0.0.1:{admin_port}"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "resync of cell2 done" in result.stdout
        assert "100.0%" in result.stderr

        # Drift: change a flavor in the flavor source behind the outbox's back.
        from replica.cell import connection, outbox
        conn = connection.open_cell(os.path.join(data_dir, "cells", "flavors.db"))
        try:
            with conn:
                with outbox.triggers_suspended(conn):
                    flavorid = conn.execute("SELECT flavorid FROM flavors ORDER BY id "
                                            "LIMIT 1").fetchone()[0]
                    conn.execute("UPDATE flavors SET name = 'drifted' WHERE flavorid = ?",
                                 (flavorid,))
        finally:
            conn.close()
        admin = ["--admin-url", f"http://127.0.0.1:{admin_port}"]
        result = subprocess.run([PYTHON, "-m", "appliance", "verify", "--cell", "flavors",
                                 *admin], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert re.search(rf"^flavors\s+{re.escape(flavorid)}\s+differs", result.stdout, re.M)
        result = subprocess.run([PYTHON, "-m", "appliance", "verify", "--cell", "flavors",
                                 "--repair", *admin], cwd=ROOT, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert "1 repaired" in result.stdout
        result = subprocess.run([PYTHON, "-m", "appliance", "verify", *admin], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "flavors: 0 differing" in result.stdout

        os.killpg(running.proc.pid, signal.SIGINT)  # what Ctrl-C delivers
        assert running.proc.wait(timeout=40) == 0
        assert "appliance demo: stopped" in running.log()
        wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10,
                 what="every demo process gone")
        assert not os.path.exists(data_dir)
    finally:
        running.stop()


def test_the_demo_puts_its_sockets_in_a_short_directory_when_its_own_is_too_long(tmp_path):
    """A data directory deep in a long TMPDIR would give socket paths past the 107 bytes
    of a Unix socket; the demo then makes a short socket directory under /tmp."""
    import shutil
    from appliance import demo
    assert demo.socket_dir(str(tmp_path / "short"), 2) is None
    deep = str(tmp_path / ("d" * 100))
    sockets = demo.socket_dir(deep, 2)
    try:
        assert sockets is not None and sockets.startswith("/tmp/appliance-demo-")
        where = demo.layout(deep, 2, sockets)
        assert all(feed["feed"].startswith(f"ipc://{sockets}/")
                   for feed in where["feeds"].values())
        assert all(len(feed[end]) - len("ipc://") <= 107 for feed in where["feeds"].values()
                   for end in ("feed", "control"))
    finally:
        if sockets:
            shutil.rmtree(sockets, ignore_errors=True)
