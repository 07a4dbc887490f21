"""``appliance cell --source mysql://...`` publishing a real Nova cell on MariaDB, end to
end: Nova's databases made by nova-manage and written by Nova's objects, the publisher
as a real process with the replica-grants-only user (a password from the environment),
the flavor publisher on the API database, and ingest: every server reaches the replica,
Nova's writes follow, the drift check finds nothing differing. Then the faults, each
followed by the same convergence checks: the publisher SIGKILLed mid-stream, MariaDB
restarted, the binlog purged while the publisher is down (a new epoch: a resync), a
rolled-back transaction, a 10,000-row transaction, and a migration during the stream.

The tests of this module run in order on one deployment (each leaves it converged)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request

import apsw
import pytest

from replica.cell import journal
from replica.ingest import CellFeed

from tests.conftest import ROOT, free_port, ipc_listening, wait_for
from tests.realnova.mariadb import mariadb_fixture, scratch_dir
from tests.realnova.novadb import NovaDeployment
from tests.replica.conftest import IngestProc, Proc, read_rows

mariadb = mariadb_fixture(scope="module")

REPLICA_USER = "replica"
REPLICA_PASSWORD = "replica-secret"
BEFORE = 40                 # servers Nova wrote before the publisher started
CONVERGE_S = 90
NOVA_CONF_GROUP_MEMBERS = 17  # the flavor publisher's nova.conf [quota] server_group_members


class Publisher:
    """``appliance cell --source mysql://...`` as a process (restartable)."""

    def __init__(self, workdir: str, mariadb, name: str, database: str,
                 api_database: str | None = None, flavors: bool = False):
        self.workdir, self.name = workdir, name
        base = f"mysql://{REPLICA_USER}@{mariadb.host}:{mariadb.port}"
        self.argv = [sys.executable, "-m", "appliance", "cell", "--source",
                     f"{base}/{database}", "--name", name,
                     "--feed", f"ipc://{workdir}/{name}.feed",
                     "--control", f"ipc://{workdir}/{name}.ctl",
                     "--state-dir", f"{workdir}/state"]
        if api_database:
            self.argv += ["--api-source", f"{base}/{api_database}"]
        if flavors:
            # the operator's nova.conf beside it: its [quota] defaults under the class's
            # (a file of its own: the deployment's nova.conf in workdir is nova-manage's)
            nova_conf = os.path.join(workdir, f"{name}-nova.conf")
            with open(nova_conf, "w") as f:
                f.write(f"[quota]\nserver_group_members = {NOVA_CONF_GROUP_MEMBERS}\n"
                        f"cores = 3\n")
            self.argv += ["--flavors", "--nova-conf", nova_conf]
        self.feed = CellFeed(name, f"ipc://{workdir}/{name}.feed", f"ipc://{workdir}/{name}.ctl")
        self.journal_path = f"{workdir}/state/{name}.journal"
        self.proc: Proc | None = None

    def start(self) -> None:
        os.environ["APPLIANCE_MYSQL_PASSWORD"] = REPLICA_PASSWORD   # never in argv
        try:
            self.proc = Proc(self.argv, f"{self.workdir}/{self.name}.log")
        finally:
            del os.environ["APPLIANCE_MYSQL_PASSWORD"]
        # listening, not only there: a publisher killed with SIGKILL leaves its file
        wait_for(lambda: ipc_listening(self.feed.control_url) or not self.proc.alive(), 30,
                 what=f"{self.name} control socket")
        assert self.proc.alive(), self.proc.output()[-3000:]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def kill9(self) -> None:
        self.proc.kill9()
        self.proc.log.close()

    def keys_after(self, seq: int) -> set[tuple[str, str]]:
        changes = journal.JournalChangeLog(self.journal_path)
        try:
            return {(kind, key) for _seq, kind, key in changes.events_after(seq, 1_000_000)}
        finally:
            changes.close()

    def state(self) -> journal.JournalState:
        conn = apsw.Connection(self.journal_path, flags=apsw.SQLITE_OPEN_READONLY)
        try:
            return journal.read_state(conn)
        finally:
            conn.close()


@pytest.fixture(scope="module")
def stack(mariadb):
    """Nova on MariaDB with servers written before the publishers start; the cell and
    flavor publishers; ingest on both feeds."""
    mariadb.create_replica_user(REPLICA_USER, REPLICA_PASSWORD, ["nova_cell1", "nova_api"])
    with scratch_dir("mariadb-publisher") as workdir:
        nova = NovaDeployment.on_mariadb(mariadb, workdir).create()
        writer = nova.writer().__enter__()
        try:
            writer.create_flavor(name="m1.small", vcpus=1, memory_mb=2048, root_gb=20,
                                 flavorid="2", extra_specs={"hw:cpu_policy": "shared"})
            writer.create_compute(host="compute-1", az="zone-1")
            writer.build_servers(count=BEFORE, name_prefix="before", user_id="u1",
                                 project_id="proj-a", flavor="2", metadata={"k": "v"},
                                 tags=["t1"])
            cell = Publisher(workdir, mariadb, "cell1", "nova_cell1", "nova_api")
            flavors = Publisher(workdir, mariadb, "flavors", "nova_api", flavors=True)
            cell.start()
            flavors.start()
            from pathlib import Path
            # the machine running the tests may be busy: a feed is stale after 10 s
            ingest = IngestProc(Path(workdir), _Procs(), f"{workdir}/replica.db",
                                [cell.feed, flavors.feed], **{"stale-after": 10.0})
            ingest.start()
            yield _Stack(nova, writer, cell, flavors, ingest, f"{workdir}/replica.db", mariadb)
        finally:
            for proc in _Procs.started:
                proc.stop()
            for publisher in (locals().get("cell"), locals().get("flavors")):
                if publisher is not None:
                    publisher.stop()
            writer.__exit__(None, None, None)


class _Procs:
    started: list = []

    def start(self, argv, log_path):
        proc = Proc(argv, log_path)
        self.started.append(proc)
        return proc


class _Stack:
    def __init__(self, nova, writer, cell, flavors, ingest, replica, mariadb):
        self.nova, self.writer, self.cell, self.flavors = nova, writer, cell, flavors
        self.ingest, self.replica, self.mariadb = ingest, replica, mariadb

    def in_nova(self) -> dict:
        return {uuid: (name, vm_state, int(bool(deleted))) for uuid, name, vm_state, deleted
                in self.nova.query("cell1", "SELECT uuid, display_name, vm_state, deleted "
                                   "FROM instances")}

    def in_replica(self) -> dict:
        return {uuid: (name, vm_state, deleted) for uuid, name, vm_state, deleted in read_rows(
            self.replica, "SELECT uuid, display_name, vm_state, deleted FROM servers "
                          "WHERE cell = 'cell1'")}

    def converged(self, timeout: float = CONVERGE_S) -> dict:
        """Wait until the journal has read all the binlog, ingest is live at its head
        and the replica's servers are Nova's; then the drift check: 0 differing."""
        last = {}

        def done():
            state = self.cell.state()
            last.update(journal=state, server=self.mariadb.gtid_binlog_pos())
            if state.position != last["server"]:
                return False
            cells = {c["cell"]: c for c in self.ingest.status()["cells"]}
            last["ingest"] = cells["cell1"]
            if cells["cell1"]["state"] != "live" or cells["cell1"]["seq"] != state.head:
                return False
            replica, nova = self.in_replica(), self.in_nova()
            last["differing"] = sorted(u for u in set(replica) | set(nova)
                                       if replica.get(u) != nova.get(u))[:5]
            return not last["differing"] and cells
        try:
            cells = wait_for(done, timeout, interval=0.2,
                             what="the replica converged with Nova")
        except AssertionError:
            raise AssertionError(f"not converged: {last}\n--- publisher:\n"
                                 f"{self.cell.proc.output()[-4000:]}\n--- ingest:\n"
                                 f"{self.ingest_log()[-4000:]}") from None
        assert cells["cell1"]["dead_letters"] == 0 and cells["flavors"]["dead_letters"] == 0
        job = self.ingest.client.wait_job(self.ingest.client.verify(), timeout=120)
        assert job["state"] == "done", (job.get("error"), self.ingest_log()[-3000:])
        assert {name: r["differing"] for name, r in job["result"]["cells"].items()} == \
            {"cell1": [], "flavors": []}
        return cells

    def api_servers(self, token: str) -> list[dict]:
        """GET /v2.1/servers from the appliance's API app over the replica."""
        port = free_port()
        api = Proc([sys.executable, os.path.join(ROOT, "tests", "api", "serve.py"),
                    self.replica, str(port)], f"{os.path.dirname(self.replica)}/api.log")
        try:
            def get():
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v2.1/servers?limit=1000",
                    headers={"X-Auth-Token": token})
                with urllib.request.urlopen(request, timeout=5) as reply:
                    return json.load(reply)["servers"]
            return wait_for(get, 30, what="the appliance's API")
        finally:
            api.stop()

    def ingest_log(self) -> str:
        return self.ingest.proc.output()

    def metadata_keys(self, uuid: str, prefix: str) -> int:
        """How many metadata keys starting with ``prefix`` the replica's server has."""
        (detail,), = read_rows(self.replica, "SELECT d_base FROM servers WHERE uuid = ?",
                               (uuid,))
        return detail.count(f'"{prefix}')


def test_every_server_and_nova_writes_reach_the_replica(stack):
    assert len(stack.in_nova()) == BEFORE
    stack.converged()
    assert read_rows(stack.replica, "SELECT flavorid FROM flavors") == [("2",)]
    w = stack.writer
    uuid = w.build_server(user_id="u1", project_id="proj-a", flavor="2", name="after",
                          metadata={"a": "1"})["uuid"]
    w.stop(uuid=uuid)
    w.set_metadata(uuid=uuid, metadata={"b": "2"})
    gone = stack.nova.query("cell1", "SELECT uuid FROM instances ORDER BY id LIMIT 1")[0][0]
    w.delete(uuid=gone)
    w.set_flavor_extra_specs(flavorid="2", extra_specs={"hw:mem_page_size": "large"})
    stack.converged()
    wait_for(lambda: "hw:mem_page_size" in read_rows(
        stack.replica, "SELECT f_extra_specs FROM flavors WHERE flavorid = '2'")[0][0], 30,
        what="the flavor's new extra spec in the replica")
    assert stack.in_replica()[uuid][1] == "stopped"
    assert stack.in_replica()[gone][2] == 1
    archived = stack.nova.archive_deleted_rows()
    assert "instances" in archived, archived
    stack.converged()
    assert gone not in stack.in_replica()
    # and the appliance's API serves them from the replica
    live = {u for u, (_n, _s, deleted) in stack.in_nova().items() if not deleted}
    assert {s["id"] for s in stack.api_servers("u1:proj-a")} == live
    # the publisher never wrote to Nova's databases: the user cannot
    assert stack.cell.proc.alive() and stack.flavors.proc.alive()


def test_quota_limits_and_usage_reach_the_replica(stack):
    """The flavor publisher's quota kind through the binlog (quotas, quota_classes,
    instance_groups rows), and each project's usage kept at ingest equal to Nova's count."""
    stack.converged()
    w = stack.writer
    w.set_quotas(project_id="proj-a", limits={"instances": 33})
    w.set_quota_class(class_name="default", limits={"cores": 44})
    w.create_server_group(user_id="u1", project_id="proj-a", name="quota-group")
    (groups,), = stack.nova.query("api", "SELECT count(*) FROM instance_groups "
                                         "WHERE project_id = 'proj-a'")
    wait_for(lambda: read_rows(stack.replica, "SELECT instances, server_groups_used FROM "
                               "quotas WHERE quota_key = 'project/proj-a'") == [(33, groups)],
             30, what="proj-a's quota limits in the replica")
    # the class's row over nova.conf's cores = 3; nova.conf's server_group_members
    wait_for(lambda: read_rows(stack.replica, "SELECT cores, server_group_members FROM "
                               "quotas WHERE quota_key = 'class/default'")
             == [(44, NOVA_CONF_GROUP_MEMBERS)],
             30, what="the default quota class in the replica")
    (nova,) = stack.nova.query(
        "cell1", "SELECT count(*), sum(vcpus), sum(memory_mb) FROM instances WHERE "
        "project_id = 'proj-a' AND deleted = 0 AND (vm_state IS NULL OR "
        "vm_state != 'soft-delete')")
    assert read_rows(stack.replica, "SELECT instances, cores, ram FROM project_usage "
                     "WHERE project_id = 'proj-a'") == [tuple(int(v or 0) for v in nova)]


def _churn(writer, uuids, stop: threading.Event, rounds: int = 40):
    for n in range(rounds):
        if stop.is_set():
            return
        writer.update(uuid=uuids[n % len(uuids)], name=f"churn-{n}")


def test_publisher_sigkilled_mid_stream_then_restarted(stack):
    epoch = stack.cell.state().epoch
    uuids = sorted(stack.in_nova())[:10]
    stop = threading.Event()
    churn = threading.Thread(target=_churn, args=(stack.writer, uuids, stop))
    churn.start()
    try:
        wait_for(lambda: stack.cell.state().head > 0, 30, what="changes under way")
        stack.cell.kill9()
        stack.cell.start()
    finally:
        churn.join(120)
    stack.converged()
    assert stack.cell.state().epoch == epoch


def test_mariadb_restarted(stack):
    epoch = stack.cell.state().epoch
    stack.mariadb.restart()
    uuid = sorted(stack.in_nova())[1]
    stack.writer.update(uuid=uuid, name="after-restart")
    stack.converged()
    assert stack.in_replica()[uuid][0] == "after-restart"
    assert stack.cell.state().epoch == epoch          # same history: no resync


def test_binlog_purged_while_the_publisher_is_down(stack):
    epoch = stack.cell.state().epoch
    stack.cell.stop()
    uuid = sorted(stack.in_nova())[2]
    stack.writer.update(uuid=uuid, name="while-down")
    stack.mariadb.purge_binlogs()
    stack.cell.start()
    wait_for(lambda: stack.cell.state().epoch != epoch, 30, what="a new epoch")
    assert "purged" in stack.cell.proc.output()
    stack.converged()
    assert stack.in_replica()[uuid][0] == "while-down"


def test_rolled_back_transaction_never_appears(stack):
    uuid = sorted(stack.in_nova())[3]
    head = stack.cell.state().head
    conn = stack.mariadb.connect("nova_cell1")
    try:
        with conn.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("UPDATE instances SET display_name = 'rolled-back' WHERE uuid = %s",
                           (uuid,))
            cursor.execute("ROLLBACK")
    finally:
        conn.close()
    committed = sorted(stack.in_nova())[4]
    stack.writer.update(uuid=committed, name="after-rollback")
    stack.converged()
    assert stack.in_replica()[uuid][0] != "rolled-back"
    assert stack.cell.keys_after(head) == {("server", committed)}   # only what committed


def test_ten_thousand_row_transaction_appears_whole(stack):
    uuid = sorted(stack.in_nova())[5]
    stack.writer.set_metadata(uuid=uuid, metadata={f"key-{n}": str(n) for n in range(10_000)})
    stack.converged()
    assert stack.metadata_keys(uuid, "key-") == 10_000


def test_migration_during_the_stream(stack):
    uuid = sorted(stack.in_nova())[6]
    stack.writer.update(uuid=uuid, name="before-migration")
    stack.mariadb.execute("ALTER TABLE instances ADD COLUMN replica_test_column INT NULL",
                          db="nova_cell1")
    try:
        stack.writer.update(uuid=uuid, name="after-migration")
        new = stack.writer.build_server(user_id="u1", project_id="proj-a", flavor="2",
                                        name="after-migration-new")["uuid"]
        stack.converged()
        assert stack.in_replica()[uuid][0] == "after-migration"
        assert new in stack.in_replica()
    finally:
        stack.mariadb.execute("ALTER TABLE instances DROP COLUMN replica_test_column",
                              db="nova_cell1")
    stack.converged()


def _tailer_pid(publisher_pid: int) -> int | None:
    with open(f"/proc/{publisher_pid}/task/{publisher_pid}/children") as f:
        children = [int(pid) for pid in f.read().split()]
    for pid in children:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"appliance cell: binlog tailer"):
                    return pid
        except OSError:
            pass
    return None


def test_a_killed_binlog_tailer_is_started_again(stack):
    epoch = stack.cell.state().epoch
    killed = wait_for(lambda: _tailer_pid(stack.cell.proc.pid), 10, what="the tailer process")
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: _tailer_pid(stack.cell.proc.pid) not in (None, killed), 30,
             what="a new tailer process")
    uuid = sorted(stack.in_nova())[7]
    stack.writer.update(uuid=uuid, name="after-tailer-restart")
    stack.converged()
    assert stack.in_replica()[uuid][0] == "after-tailer-restart"
    assert stack.cell.state().epoch == epoch          # resumed where it was: no resync


def test_a_setting_that_cannot_work_stops_the_publisher_with_one_line(stack):
    stack.mariadb.execute("SET GLOBAL binlog_row_image = 'MINIMAL'")
    try:
        with scratch_dir("wrong-setting") as workdir:
            other = Publisher(workdir, stack.mariadb, "cell9", "nova_cell1", "nova_api")
            done = subprocess.run(other.argv, cwd=ROOT, capture_output=True, text=True,
                                  timeout=60, env={**os.environ, "PYTHONPATH": ROOT,
                                                   "APPLIANCE_MYSQL_PASSWORD": REPLICA_PASSWORD})
    finally:
        stack.mariadb.execute("SET GLOBAL binlog_row_image = 'FULL'")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "binlog_row_image" in errors[0], done.stderr
    assert REPLICA_PASSWORD not in done.stderr


def test_a_new_epoch_started_by_the_tailer_at_run_time_is_published(stack):
    """The running publisher's tailer reconnects to a binlog that no longer holds its
    position: the tailer starts a new epoch, the publisher publishes it, ingest resyncs."""
    epoch = stack.cell.state().epoch
    publisher = stack.cell.proc.pid
    tailer = wait_for(lambda: _tailer_pid(publisher), 10, what="the tailer process")
    os.kill(publisher, signal.SIGSTOP)          # so that it cannot start a tailer yet
    try:
        os.kill(tailer, signal.SIGKILL)
        uuid = sorted(stack.in_nova())[8]
        stack.writer.update(uuid=uuid, name="while-the-tailer-was-gone")
        stack.mariadb.purge_binlogs()
    finally:
        os.kill(publisher, signal.SIGCONT)
    wait_for(lambda: stack.cell.state().epoch != epoch, 30, what="a new epoch")
    wait_for(lambda: "epoch changed under the publisher" in stack.cell.proc.output(), 30,
             what="the publisher publishing the new epoch")
    stack.converged()
    assert stack.in_replica()[uuid][0] == "while-the-tailer-was-gone"
    assert stack.cell.proc.alive()
