"""`appliance serve` with the real Compute API app and ingest (no cells configured):
tokens re-read on SIGHUP without a failed request, dead children restarted, metrics."""

from __future__ import annotations

import hashlib
import json
import os
import signal

import pytest

from tests.appliance.conftest import (PYTHON, alive, get, read_table, under_load,
                                      start_process, wait_for, wait_running, worker_pids)
from tests.conftest import free_port


def token_line(token: str, project: str, roles=("member",)) -> str:
    return json.dumps({"sha256": hashlib.sha256(token.encode()).hexdigest(),
                       "project_id": project, "user_id": f"user-{project}",
                       "roles": list(roles)}) + "\n"


def _serve(tmp_path, extra: str = ""):
    """`appliance serve` with two workers, a tokens file and ``extra`` TOML lines."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    tokens = tmp_path / "tokens"
    tokens.write_text(token_line("first-token", "p1"))
    port, admin_port = free_port(), free_port()
    config = tmp_path / "appliance.toml"
    config.write_text(f'listen_port = {port}\nadmin_port = {admin_port}\nworkers = 2\n'
                      f'data_dir = "{tmp_path / "data"}"\nauth = "tokens"\n'
                      f'tokens_file = "{tokens}"\ngraceful_timeout = 10\n' + extra)
    running = start_process([PYTHON, "-m", "appliance", "serve", "--config", str(config)],
                            {}, tmp_path / "data", port=port, admin_port=admin_port)
    running.tokens = tokens
    return running


@pytest.fixture
def served(tmp_path):
    running = _serve(tmp_path)
    try:
        wait_running(running, 2)
        yield running
    finally:
        running.stop()


def _post(port, path):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path)
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def servers(port, token):
    return get(port, "/v2.1/servers", headers={"X-Auth-Token": token})


def test_sighup_rereads_tokens_without_failed_requests(served):
    assert servers(served.port, "first-token")[0] == 200
    assert servers(served.port, "second-token")[0] == 401
    with under_load(served.port, 1, 0, path="/v2.1/") as results:
        before = worker_pids(served.data_dir)
        served.tokens.write_text(token_line("second-token", "p2"))
        served.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload_finished" in served.log()
                 and not worker_pids(served.data_dir) & before, timeout=30,
                 what="workers replaced")
        served.remember_children()
    assert results and all(ok for ok, _ in results), [d for ok, d in results if not ok][:3]
    status, body, _ = servers(served.port, "second-token")
    assert status == 200 and json.loads(body) == {"servers": []}
    assert servers(served.port, "first-token")[0] == 401


def test_dead_ingest_and_admin_are_restarted(served):
    table = read_table(served.data_dir)["processes"]
    by_role = {p["role"]: p["pid"] for p in table if p["role"] in ("ingest", "admin")}
    for role, pid in by_role.items():
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(
        any(p["role"] == role and p["pid"] != pid and p["state"] == "running"
            and p["restarts"] == 1 for p in read_table(served.data_dir)["processes"])
        for role, pid in by_role.items()), timeout=20, what="ingest and admin restarted")
    served.remember_children()
    wait_for(lambda: get(served.admin_port, "/healthz")[0] == 200, what="admin back")
    status, body, _ = get(served.admin_port, "/readyz")
    assert status == 200, body  # no cells configured: ready once ingest answers
    wait_for(lambda: "appliance_ingest_up 1.0" in get(served.admin_port, "/metrics")[1]
             .decode(), what="ingest metrics")
    status, body, _ = get(served.admin_port, "/status")
    report = json.loads(body)
    assert report["ingest_error"] is None and report["cells"] == []
    conn_status, body, _ = _post(served.admin_port, "/resync?cell=nosuch")
    assert conn_status in (400, 404) and "nosuch" in json.loads(body)["error"]["message"]
    assert not any(alive(pid) for pid in by_role.values())


def _mapped_replicas(pid: int, data_dir: str) -> list[str]:
    """The lines of a process's memory map that map the replica file."""
    replica = os.path.join(data_dir, "replica.db")
    with open(f"/proc/{pid}/maps") as f:
        return [line for line in f if line.rstrip().endswith(replica)]


def test_workers_map_the_replica_only_when_reader_map_bytes_says_so(tmp_path):
    unmapped = _serve(tmp_path / "default")
    mapped = _serve(tmp_path / "mapped", "reader_map_bytes = 67108864\n")
    try:
        for running in (unmapped, mapped):
            wait_running(running, 2)
            for _ in range(4):   # fresh connections: both workers are likely to read
                assert servers(running.port, "first-token")[0] == 200
        for pid in worker_pids(unmapped.data_dir):
            assert _mapped_replicas(pid, unmapped.data_dir) == []
        assert any(_mapped_replicas(pid, mapped.data_dir)
                   for pid in worker_pids(mapped.data_dir))
    finally:
        unmapped.stop()
        mapped.stop()


def test_a_reload_keeps_the_group_commit_window_and_says_so(tmp_path):
    running = _serve(tmp_path, "group_commit_ms = 5\n")
    try:
        wait_running(running, 2)
        config = tmp_path / "appliance.toml"
        config.write_text(config.read_text().replace("group_commit_ms = 5",
                                                     "group_commit_ms = 0"))
        ingest = [p["pid"] for p in read_table(running.data_dir)["processes"]
                  if p["role"] == "ingest"]
        running.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload_finished" in running.log(), timeout=30,
                 what="reload finished")
        running.remember_children()
        log = running.log()
        assert "reload_needs_restart" in log and "group_commit_ms" in log, log[-2000:]
        assert [p["pid"] for p in read_table(running.data_dir)["processes"]
                if p["role"] == "ingest"] == ingest
    finally:
        running.stop()
