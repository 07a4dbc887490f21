"""A private two-node MariaDB Galera cluster for tests: Debian's ``mariadbd`` with the
``galera-4`` provider, each node on its own datadir, free loopback ports (SQL, group
communication, incremental state transfer, state snapshot transfer) and the settings
docs/cell-source-mariadb.md gives for a publisher on Galera: the row binlog on every node
with ``log_slave_updates`` (so a node's binlog holds the writes made on the others),
``wsrep_gtid_mode=ON``, one ``wsrep_gtid_domain_id`` and one ``server_id`` for the
cluster, a distinct ``gtid_domain_id`` per node.

The first node bootstraps the cluster; a joiner receives a full state snapshot over
rsync (Debian's ``wsrep_sst_rsync``), so the nodes hold the same data and the same GTIDs.

    with galera_cluster() as (first, second):
        first.execute("CREATE DATABASE x")        # replicated to second
"""

from __future__ import annotations

import contextlib
import os

from tests.conftest import free_port, wait_for
from tests.realnova.mariadb import START_TIMEOUT, MariaDB, MariaDBError, scratch_dir

PROVIDER_CANDIDATES = ("/usr/lib/galera/libgalera_smm.so", "/usr/lib/libgalera_smm.so")
CLUSTER_SERVER_ID = 1           # one server_id for the cluster: the same GTIDs on every node
CLUSTER_GTID_DOMAIN = 0         # wsrep_gtid_domain_id: the cluster's replicated writes
SYNC_TIMEOUT = 120.0            # seconds for a joiner's state transfer
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
