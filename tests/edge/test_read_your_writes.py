"""Read-your-writes through the pass-through: a real cell database with its publisher
(`appliance cell`), the appliance replicating it, and an upstream stand-in that changes
the cell database as nova-api would (server stop / start). The write's answer carries
the feeds' heads; a read that presents them waits for the replica to apply them (ingest
is held with SIGSTOP to make the wait visible), or answers after the bound saying it
did not get there."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.appliance.conftest import Running, read_table, start_process, wait_for
from tests.conftest import PYTHON, free_port
from tests.edge.conftest import serve

HERE = os.path.dirname(os.path.abspath(__file__))
ADMIN = {"X-Auth-Token": "admin:ops"}
WRITER = {"X-Auth-Token": "admin:writes"}      # another caller: ADMIN's reads do not wait
SERVERS = 12
WAIT_BOUND = 1.5


def call(port, method, path, body=None, headers=None, caller=ADMIN):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers={**caller, **(headers or {})})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from replica.cell.connection import open_cell_reader
    from replica.cell.outbox import init_cell_db
    from replica.cell.simulator import populate

    tmp = tmp_path_factory.mktemp("ryw")
    cell_db = str(tmp / "cell1.db")
    init_cell_db(cell_db, "cell1")
    populate(cell_db, SERVERS, 2)
    conn = open_cell_reader(cell_db)
    active = [row[0] for row in conn.execute(
        "SELECT uuid FROM instances WHERE vm_state = 'active' ORDER BY uuid")]
    conn.close()
    feed, control = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    publisher = start_process([PYTHON, "-m", "appliance", "cell", "--db", cell_db, "--name",
                               "cell1", "--feed", feed, "--control", control], {},
                              tmp / "publisher")
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, os.path.join(HERE, "recording_upstream.py"),
                                 str(upstream_port), str(tmp / "requests.jsonl"), cell_db])
    port = free_port()
    appliance = None
    try:
        appliance = serve(tmp, "appliance", port, str(tmp / "replica.db"),
                          cells=(("cell1", feed, control),),
                          upstream_url=f"http://127.0.0.1:{upstream_port}",
                          read_your_writes_wait=WAIT_BOUND)
        wait_for(lambda: len(json.loads(call(port, "GET", "/v2.1/servers?all_tenants=1")[2])
                             ["servers"]) == SERVERS, timeout=30,
                 what="the cell replicated")
        yield appliance, active
    finally:
        if appliance is not None:
            ingest_continue(appliance)
            appliance.stop()
        upstream.kill()
        upstream.wait()
        publisher.stop()


def ingest_pid(appliance: Running) -> int:
    return next(p["pid"] for p in read_table(appliance.data_dir)["processes"]
                if p["role"] == "ingest")


def ingest_continue(appliance: Running) -> None:
    try:
        os.kill(ingest_pid(appliance), signal.SIGCONT)
    except (OSError, StopIteration):
        pass


def status_of(appliance, uuid, headers=None, caller=ADMIN):
    status, got, body = call(appliance.port, "GET", f"/v2.1/servers/{uuid}", headers=headers,
                             caller=caller)
    assert status == 200, body
    return json.loads(body)["server"]["status"], got


def test_a_read_with_the_write_position_sees_the_write(stack):
    appliance, active = stack
    uuid = active[0]
    assert status_of(appliance, uuid)[0] == "ACTIVE"
    ingest = ingest_pid(appliance)
    os.kill(ingest, signal.SIGSTOP)
    try:
        status, got, _ = call(appliance.port, "POST", f"/v2.1/servers/{uuid}/action",
                              b'{"os-stop": null}', {"Content-Type": "application/json"},
                              caller=WRITER)
        assert status == 202
        position = got["x-replica-write-position"]
        assert position.startswith("cell1@")
        # Without the position: the replica has not applied the change yet.
        assert status_of(appliance, uuid)[0] == "ACTIVE"
        answers = []
        reader = threading.Thread(target=lambda: answers.append(
            status_of(appliance, uuid, {"X-Replica-Min-Position": position})))
        reader.start()
        time.sleep(0.3)          # the reader is waiting: nothing came back yet
        assert not answers
    finally:
        os.kill(ingest, signal.SIGCONT)
    reader.join(timeout=10)
    state, got = answers[0]
    assert state == "SHUTOFF"
    assert got["x-replica-position-reached"] == "true"


def test_the_wait_is_bounded(stack):
    appliance, active = stack
    uuid = active[1]
    ingest = ingest_pid(appliance)
    os.kill(ingest, signal.SIGSTOP)
    try:
        status, got, _ = call(appliance.port, "POST", f"/v2.1/servers/{uuid}/action",
                              b'{"os-stop": null}', {"Content-Type": "application/json"},
                              caller=WRITER)
        assert status == 202
        started = time.monotonic()
        state, got = status_of(appliance, uuid,
                               {"X-Replica-Min-Position": got["x-replica-write-position"]})
        took = time.monotonic() - started
    finally:
        os.kill(ingest, signal.SIGCONT)
    assert state == "ACTIVE" and got["x-replica-position-reached"] == "false"
    assert WAIT_BOUND - 0.1 < took < WAIT_BOUND + 1.0
    # A position already applied answers at once; a malformed one is a 400.
    wait_for(lambda: status_of(appliance, uuid)[0] == "SHUTOFF", what="the stop replicated")
    state, got = status_of(appliance, uuid, {"X-Replica-Min-Position": "cell1@x:1"})
    assert got["x-replica-position-reached"] == "false"     # another epoch: not comparable
    status, _, body = call(appliance.port, "GET", f"/v2.1/servers/{uuid}",
                           headers={"X-Replica-Min-Position": "nonsense"})
    assert status == 400 and b"X-Replica-Min-Position" in body


def test_a_server_not_replicated_yet_is_asked_of_the_upstream_after_the_callers_write(stack):
    """`openstack server create --wait`: the create passes through, then the client asks
    for the new server at once. Nova keeps it as a build request (API database) until a
    cell has it, so the replica has nothing yet: after the caller's own write, a show that
    finds nothing is answered by the upstream; anyone else's is the replica's 404."""
    appliance, _active = stack
    me = {"X-Auth-Token": "admin:creates"}
    requests = os.path.join(appliance.data_dir, "..", "requests.jsonl")
    building = "0f0e0d0c-0b0a-4908-8706-050403020100"
    status, _, _ = call(appliance.port, "POST", "/v2.1/servers",
                        b'{"server": {"name": "new"}}', {"Content-Type": "application/json"},
                        caller=me)
    assert status == 202
    with open(requests) as f:
        before = len(f.readlines())
    status, _, body = call(appliance.port, "GET", f"/v2.1/servers/{building}", caller=me)
    assert status == 200 and json.loads(body)["upstream"] is True
    status, _, body = call(appliance.port, "GET", f"/v2.1/servers/{building}", caller=ADMIN)
    assert status == 404 and b"could not be found" in body
    with open(requests) as f:
        seen = [json.loads(line)["path"] for line in f.readlines()[before:]]
    assert seen == [f"/v2.1/servers/{building}"]


def test_the_same_callers_next_read_waits_without_a_header(stack):
    """As `openstack server stop` then `openstack server show` (new token, new
    connection, maybe another worker): the same user and project within the window."""
    appliance, active = stack
    uuid = active[2]
    me = {"X-Auth-Token": "admin:window"}
    ingest = ingest_pid(appliance)
    os.kill(ingest, signal.SIGSTOP)
    try:
        status, _, _ = call(appliance.port, "POST", f"/v2.1/servers/{uuid}/action",
                            b'{"os-stop": null}', {"Content-Type": "application/json"},
                            caller=me)
        assert status == 202
        # Another caller is not held back: it sees the replica as it is.
        state, got = status_of(appliance, uuid)
        assert state == "ACTIVE" and "x-replica-position-reached" not in got
        answers = []
        reader = threading.Thread(target=lambda: answers.append(
            status_of(appliance, uuid, caller=me)))
        reader.start()
        time.sleep(0.3)
        assert not answers
    finally:
        os.kill(ingest, signal.SIGCONT)
    reader.join(timeout=10)
    state, got = answers[0]
    assert state == "SHUTOFF" and got["x-replica-position-reached"] == "true"


def test_openstack_server_stop_then_show_through_the_catalog(edge, tmp_path):
    """The user story: `openstack server stop` then `openstack server show`, each with a
    new Keystone token, through the catalog of a region whose compute endpoint is the
    appliance (reads from the replica, the stop passed to the upstream, which changes the
    cell as nova-api does). Ingest is held until the show's request has reached the
    appliance: the show can only print SHUTOFF if it waited for the stop."""
    from replica.cell.connection import open_cell
    from replica.cell.outbox import init_cell_db
    from replica.cell.simulator import populate
    from tests.edge.conftest import OPENSTACK, keystone_settings, openstack, openstack_env
    from tests.edge.test_keystone import metric

    cell_db = str(tmp_path / "cell1.db")
    init_cell_db(cell_db, "cell1")
    populate(cell_db, 4, 1)
    conn = open_cell(cell_db)
    with conn:
        conn.execute("UPDATE instances SET project_id = ?", (edge.project("alpha"),))
    uuid = conn.execute("SELECT uuid FROM instances WHERE vm_state = 'active' "
                        "ORDER BY uuid").fetchone()[0]
    conn.close()
    feed, control = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    publisher = start_process([PYTHON, "-m", "appliance", "cell", "--db", cell_db, "--name",
                               "cell1", "--feed", feed, "--control", control], {},
                              tmp_path / "publisher")
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, os.path.join(HERE, "recording_upstream.py"),
                                 str(upstream_port), str(tmp_path / "requests.jsonl"),
                                 cell_db])
    port = free_port()
    edge.keystone.add_region("edge-ryw", f"http://127.0.0.1:{port}/v2.1")
    appliance = show = None
    try:
        appliance = serve(tmp_path, "appliance", port, str(tmp_path / "replica.db"),
                          cells=(("cell1", feed, control),),
                          upstream_url=f"http://127.0.0.1:{upstream_port}",
                          read_your_writes_wait=20.0, **keystone_settings(edge))
        token = edge.keystone.token("alpha-member", "user-secret", "alpha")
        wait_for(lambda: len(json.loads(call(port, "GET", "/v2.1/servers", caller={
            "X-Auth-Token": token})[2])["servers"]) == 4, timeout=30,
            what="the cell replicated")
        ingest = ingest_pid(appliance)
        os.kill(ingest, signal.SIGSTOP)
        try:
            stopped = openstack(edge, "alpha-member", "alpha", "server", "stop", uuid,
                                region="edge-ryw")
            assert stopped.returncode == 0, stopped.stderr
            validations = metric(appliance, "valid")
            show = subprocess.Popen(
                [OPENSTACK, "--os-cloud", "edge", "server", "show", uuid, "-f", "json"],
                env=openstack_env(edge, "alpha-member", "edge-ryw"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # The show's new token reached the appliance: its read is in.
            wait_for(lambda: metric(appliance, "valid") > validations, timeout=60,
                     what="the show's request at the appliance")
            assert show.poll() is None, show.communicate()
        finally:
            os.kill(ingest, signal.SIGCONT)
        out, err = show.communicate(timeout=60)
        assert show.returncode == 0, err
        assert json.loads(out)["status"] == "SHUTOFF"
    finally:
        if show is not None and show.poll() is None:
            show.kill()
            show.wait()
        if appliance is not None:
            ingest_continue(appliance)
            appliance.stop()
        upstream.kill()
        upstream.wait()
        publisher.stop()
