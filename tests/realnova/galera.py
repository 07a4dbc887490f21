"""A private MariaDB Galera cluster of two or more nodes for tests: Debian's ``mariadbd``
with the ``galera-4`` provider, each node on its own datadir, free loopback ports (SQL, group
communication, incremental state transfer, state snapshot transfer) and the settings
docs/cell-source-mariadb.md gives for a publisher on Galera: the row binlog on every node
with ``log_slave_updates`` (so a node's binlog holds the writes made on the others),
``wsrep_gtid_mode=ON``, one ``wsrep_gtid_domain_id`` and one ``server_id`` for the
cluster, a distinct ``gtid_domain_id`` per node.

The first node bootstraps the cluster; a joiner receives a full state snapshot over
rsync (Debian's ``wsrep_sst_rsync``), so the nodes hold the same data and the same GTIDs.

    with galera_cluster(3) as (first, second, third):
        first.execute("CREATE DATABASE x")        # replicated to the others

    cluster = galera_fixture(3)                   # in a test module: one cluster for it

``galera_stack`` puts a Nova deployment, its publishers and ingest on a cluster: Nova
writing through one node, the publishers reading another's binlog.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for
from tests.realnova.mariadb import START_TIMEOUT, MariaDB, MariaDBError, scratch_dir
from tests.realnova.novadb import NovaDeployment
from tests.realnova.test_mariadb_publisher import (
    REPLICA_PASSWORD, REPLICA_USER, Publisher, _Procs, _Stack)
from tests.replica.conftest import IngestProc

PROVIDER_CANDIDATES = ("/usr/lib/galera/libgalera_smm.so", "/usr/lib/libgalera_smm.so")
CLUSTER_SERVER_ID = 1           # one server_id for the cluster: the same GTIDs on every node
CLUSTER_GTID_DOMAIN = 0         # wsrep_gtid_domain_id: the cluster's replicated writes
SYNC_TIMEOUT = 120.0            # seconds for a joiner's state transfer
BEFORE = 20                     # servers Nova writes before the publishers start
RUN_AS = "nobody"               # the nodes' user when the tests run as root
RUN_AS_OPTION = f"--user={RUN_AS}"


def _ids(user: str) -> tuple[int, int]:
    import pwd
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


RUN_AS_IDS = _ids(RUN_AS)


def provider() -> str:
    for path in PROVIDER_CANDIDATES:
        if os.path.exists(path):
            return path
    raise MariaDBError("libgalera_smm.so not found: install Debian's galera-4 "
                       "(build/bootstrap.sh does)")


class GaleraNode(MariaDB):
    """One node. ``peers`` are the group communication addresses of the nodes to join;
    none: this node bootstraps a new cluster."""

    def __init__(self, base_dir: str, node: int, peers: list[str]):
        super().__init__(base_dir, server_id=CLUSTER_SERVER_ID)
        self.node = node
        self.peers = list(peers)
        self.group_port = free_port()        # gcomm
        self.ist_port = free_port()          # incremental state transfer
        self.sst_port = free_port()          # rsync state snapshot transfer
        self.bootstrap = not peers

    @property
    def group_address(self) -> str:
        return f"{self.host}:{self.group_port}"

    def install(self):
        """The bootstrap node makes its system tables; a joiner starts from an empty
        datadir and receives everything by state transfer. Started by root, a node runs as
        ``nobody`` and its files are theirs: the rsync daemon of a state transfer (even an
        incremental one, which writes a marker file) runs as ``nobody`` under root."""
        if self.bootstrap:
            super().install()
        for path in (self.datadir, self.tmpdir, os.path.dirname(self.binlog_basename)):
            os.makedirs(path, exist_ok=True)
        if os.geteuid() == 0:
            for top in {self.base_dir, self.storage_dir}:
                os.chmod(top, 0o711)
                for root, dirs, files in os.walk(top):
                    for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                        os.chown(name, *RUN_AS_IDS)

    def server_command(self) -> list[str]:
        address = "gcomm://" + ",".join(self.peers)
        command = [RUN_AS_OPTION if part == "--user=root" and os.geteuid() == 0 else part
                   for part in super().server_command()] + [
            "--wsrep-on=ON", f"--wsrep-provider={provider()}",
            f"--wsrep-cluster-address={address}", f"--wsrep-node-name=node{self.node}",
            f"--wsrep-node-address={self.host}",
            f"--wsrep-provider-options=gmcast.listen_addr=tcp://{self.group_address};"
            f"ist.recv_addr={self.host}:{self.ist_port};gcache.size=64M",
            f"--wsrep-sst-receive-address={self.host}:{self.sst_port}",
            "--wsrep-sst-method=rsync", "--wsrep-gtid-mode=ON",
            f"--wsrep-gtid-domain-id={CLUSTER_GTID_DOMAIN}",
            f"--gtid-domain-id={CLUSTER_GTID_DOMAIN + self.node}",
            "--innodb-autoinc-lock-mode=2", "--binlog-format=ROW",
        ]
        if self.bootstrap:
            command.append("--wsrep-new-cluster")
        return command

    def start(self):
        super().start()
        self.wait_synced()

    def wait_synced(self, timeout: float = SYNC_TIMEOUT):
        try:
            wait_for(lambda: self.status("wsrep_local_state_comment") == "Synced", timeout,
                     interval=0.1, what=f"node{self.node} Synced")
        except AssertionError as exc:
            raise MariaDBError(f"{exc}:\n{self.error_log_tail()}") from None

    def status(self, name: str) -> str | None:
        rows = self.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
        return rows[0][1] if rows else None

    def cluster_size(self) -> int:
        return int(self.status("wsrep_cluster_size") or 0)


@contextlib.contextmanager
def galera_cluster(nodes: int = 2):
    """``nodes`` started nodes of one cluster (the first bootstraps it); every node is
    stopped and its data removed at exit."""
    with scratch_dir("galera") as base:
        os.chmod(base, 0o711)               # the nodes may run as another user
        started: list[GaleraNode] = []
        try:
            first = GaleraNode(os.path.join(base, "node1"), 1, [])
            os.makedirs(first.base_dir)
            first.start()
            started.append(first)
            for number in range(2, nodes + 1):
                node = GaleraNode(os.path.join(base, f"node{number}"), number,
                                  [n.group_address for n in started])
                os.makedirs(node.base_dir)
                node.start()
                started.append(node)
            # restarted later, the first node rejoins the others (not a new cluster)
            first.peers = [n.group_address for n in started[1:]]
            first.bootstrap = False
            wait_for(lambda: first.cluster_size() == nodes, START_TIMEOUT, interval=0.1,
                     what=f"a cluster of {nodes} nodes")
            yield started
        finally:
            for node in reversed(started):
                node.remove()


def galera_fixture(nodes: int, scope: str = "module", name: str | None = None):
    """A pytest fixture yielding the started nodes of one cluster of ``nodes`` (a list,
    the first bootstrapped it), all removed at teardown. In a test module::

        cluster = galera_fixture(3)
    """
    @pytest.fixture(scope=scope, name=name)
    def _cluster():
        with galera_cluster(nodes) as started:
            yield started
    return _cluster


@contextlib.contextmanager
def galera_stack(writing: GaleraNode, publishing: GaleraNode, prefix: str):
    """Nova made by nova-manage through ``writing`` with BEFORE servers; the cell and
    flavor publishers reading ``publishing``'s binlog; ingest on both feeds. Yields the
    stack (``test_mariadb_publisher._Stack``, its ``workdir`` set); everything it
    started is stopped at exit."""
    writing.create_replica_user(REPLICA_USER, REPLICA_PASSWORD, ["nova_cell1", "nova_api"])
    with scratch_dir(prefix) as workdir:
        nova = NovaDeployment.on_mariadb(writing, workdir).create()
        writer = nova.writer().__enter__()
        publishers: list[Publisher] = []
        stack = None
        try:
            writer.create_flavor(name="m1.small", vcpus=1, memory_mb=2048, root_gb=20,
                                 flavorid="2")
            writer.create_compute(host="compute-1", az="zone-1")
            writer.build_servers(count=BEFORE, name_prefix="before", user_id="u1",
                                 project_id="proj-a", flavor="2", metadata={"k": "v"})
            cell = Publisher(workdir, publishing, "cell1", "nova_cell1", "nova_api")
            flavors = Publisher(workdir, publishing, "flavors", "nova_api", flavors=True)
            publishers += [cell, flavors]
            cell.start()
            flavors.start()
            ingest = IngestProc(Path(workdir), _Procs(), f"{workdir}/replica.db",
                                [cell.feed, flavors.feed], **{"stale-after": 10.0})
            ingest.start()
            stack = _Stack(nova, writer, cell, flavors, ingest, f"{workdir}/replica.db",
                           publishing)
            stack.workdir = workdir
            yield stack
        finally:
            for proc in _Procs.started:
                proc.stop()
            # the tests may have moved the publishers (new Publisher objects)
            for publisher in publishers + ([stack.cell, stack.flavors] if stack else []):
                publisher.stop()
            writer.__exit__(None, None, None)
