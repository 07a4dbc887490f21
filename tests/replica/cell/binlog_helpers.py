"""Helpers of the binlog source tests: Nova-shaped tables in a private MariaDB
(plain DDL modelled on Nova's cell and API databases), a replica-grants-only
user, and a tailer running in a thread of the test process."""

from __future__ import annotations

import contextlib
import threading

from replica.cell import binlog, mysql

from tests.conftest import wait_for

CELL_DB = "nova_cell1"
API_DB = "nova_api"
REPLICA_USER = "replica"
REPLICA_PASSWORD = "replica-secret"

CELL_DDL = (
    """CREATE TABLE instances (
        id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME, updated_at DATETIME,
        deleted_at DATETIME, deleted INT DEFAULT 0, uuid VARCHAR(36) NOT NULL,
        host VARCHAR(255), vm_state VARCHAR(255), display_name VARCHAR(255),
        project_id VARCHAR(255), UNIQUE KEY uniq_instances0uuid (uuid),
        KEY instances_host_deleted_idx (host, deleted)) ENGINE=InnoDB""",
    """CREATE TABLE instance_metadata (
        id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME, updated_at DATETIME,
        deleted_at DATETIME, deleted INT DEFAULT 0, `key` VARCHAR(255), value VARCHAR(255),
        instance_uuid VARCHAR(36), KEY instance_metadata_instance_uuid_idx (instance_uuid))
        ENGINE=InnoDB""",
    """CREATE TABLE instance_extra (
        id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME, updated_at DATETIME,
        deleted_at DATETIME, deleted INT DEFAULT 0, instance_uuid VARCHAR(36) NOT NULL,
        flavor TEXT, UNIQUE KEY (instance_uuid)) ENGINE=InnoDB""",
    """CREATE TABLE tags (
        resource_id VARCHAR(36) NOT NULL, tag VARCHAR(80) NOT NULL,
        PRIMARY KEY (resource_id, tag)) ENGINE=InnoDB""",
    """CREATE TABLE services (
        id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME, updated_at DATETIME,
        deleted_at DATETIME, deleted INT DEFAULT 0, host VARCHAR(255),
        `binary` VARCHAR(255), topic VARCHAR(255), report_count INT NOT NULL DEFAULT 0,
        disabled TINYINT(1), disabled_reason VARCHAR(255), last_seen_up DATETIME,
        forced_down TINYINT(1), version INT, uuid VARCHAR(36)) ENGINE=InnoDB""",
    """CREATE TABLE security_groups (
        id INT AUTO_INCREMENT PRIMARY KEY, deleted INT DEFAULT 0, name VARCHAR(255),
        description VARCHAR(255), project_id VARCHAR(255)) ENGINE=InnoDB""",
    """CREATE TABLE security_group_instance_association (
        id INT AUTO_INCREMENT PRIMARY KEY, deleted INT DEFAULT 0, security_group_id INT,
        instance_uuid VARCHAR(36)) ENGINE=InnoDB""",
    """CREATE TABLE instance_actions (
        id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME, updated_at DATETIME,
        deleted_at DATETIME, deleted INT DEFAULT 0, action VARCHAR(255),
        instance_uuid VARCHAR(36), request_id VARCHAR(255)) ENGINE=InnoDB""",
    """CREATE TABLE instance_actions_events (
        id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME, updated_at DATETIME,
        deleted_at DATETIME, deleted INT DEFAULT 0, event VARCHAR(255), action_id INT,
        result VARCHAR(255)) ENGINE=InnoDB""",
)

API_DDL = (
    """CREATE TABLE instance_mappings (
        id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME, updated_at DATETIME,
        instance_uuid VARCHAR(36) NOT NULL, cell_id INT, project_id VARCHAR(255),
        queued_for_delete TINYINT(1), user_id VARCHAR(255), UNIQUE KEY (instance_uuid))
        ENGINE=InnoDB""",
    """CREATE TABLE request_specs (
        id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME, updated_at DATETIME,
        instance_uuid VARCHAR(36) NOT NULL, spec MEDIUMTEXT NOT NULL,
        UNIQUE KEY (instance_uuid)) ENGINE=InnoDB""",
    """CREATE TABLE instance_groups (
        id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME, updated_at DATETIME,
        user_id VARCHAR(255), project_id VARCHAR(255), uuid VARCHAR(36) NOT NULL,
        name VARCHAR(255), UNIQUE KEY (uuid)) ENGINE=InnoDB""",
    """CREATE TABLE instance_group_member (
        id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME, updated_at DATETIME,
        instance_uuid VARCHAR(255), group_id INT NOT NULL) ENGINE=InnoDB""",
    """CREATE TABLE flavors (
        id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME, updated_at DATETIME,
        name VARCHAR(255) NOT NULL, memory_mb INT NOT NULL, vcpus INT NOT NULL,
        root_gb INT, flavorid VARCHAR(255) NOT NULL, is_public TINYINT(1),
        UNIQUE KEY (flavorid)) ENGINE=InnoDB""",
    """CREATE TABLE flavor_extra_specs (
        id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME, updated_at DATETIME,
        flavor_id INT NOT NULL, `key` VARCHAR(255) NOT NULL, value VARCHAR(255))
        ENGINE=InnoDB""",
    """CREATE TABLE key_pairs (
        id INT AUTO_INCREMENT PRIMARY KEY, created_at DATETIME, updated_at DATETIME,
        name VARCHAR(255) NOT NULL, user_id VARCHAR(255) NOT NULL,
        fingerprint VARCHAR(255), public_key MEDIUMTEXT, type VARCHAR(5) NOT NULL DEFAULT 'ssh',
        UNIQUE KEY (user_id, name)) ENGINE=InnoDB""",
)


def create_nova_tables(mariadb) -> None:
    """The cell and API databases with Nova-shaped tables and the replica user
    (``REPLICATION SLAVE, REPLICATION CLIENT`` on ``*.*``, ``SELECT`` on both)."""
    for db, ddl in ((CELL_DB, CELL_DDL), (API_DB, API_DDL)):
        mariadb.create_database(db)
        for statement in ddl:
            mariadb.execute(statement.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1),
                            db=db)
    mariadb.create_replica_user(REPLICA_USER, REPLICA_PASSWORD, [CELL_DB, API_DB])


def source_for(mariadb, journal_path: str, port: int | None = None) -> binlog.Source:
    """A Source reading ``mariadb`` as the replica user (password in the URL)."""
    cell = mysql.MySQLURL(user=REPLICA_USER, password=REPLICA_PASSWORD, host=mariadb.host,
                          port=port or mariadb.port, database=CELL_DB)
    return binlog.Source(cell_url=cell, api_url=cell.with_database(API_DB),
                         journal_path=journal_path)


class Writer:
    """Root's connection to one database, for writing Nova-like rows."""

    def __init__(self, mariadb, db: str = CELL_DB):
        self.conn = mariadb.connect(db)

    def run(self, sql: str, params=None) -> None:
        with self.conn.cursor() as cursor:
            cursor.execute(sql, params)

    @contextlib.contextmanager
    def transaction(self):
        self.conn.begin()
        try:
            yield self
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def tailing(source: binlog.Source, **tailer_options):
    """A ready ChangeLog and a Tailer following the binlog in a thread; stopped
    (and checked to have stopped cleanly) at the end."""
    change_log = binlog.open_change_log(source)
    stop = threading.Event()
    tailer = binlog.Tailer(source, stop, **tailer_options)
    errors = []

    def run():
        try:
            tailer.run()
        except BaseException as exc:   # reported at the end of the block
            errors.append(exc)

    thread = threading.Thread(target=run, name="binlog-tailer")
    thread.start()
    try:
        yield tailer, change_log
    finally:
        stop.set()
        thread.join(30)
        change_log.close()
    assert not thread.is_alive(), "the tailer did not stop"
    assert not errors, f"the tailer failed: {errors[0]!r}"


def wait_head(change_log, head: int, timeout: float = 30.0) -> int:
    return wait_for(lambda: change_log.head() >= head, timeout=timeout,
                    what=f"journal head {head} (now {change_log.head()})") and change_log.head()


def journal_rows(change_log) -> list[tuple]:
    return change_log.conn.execute(
        "SELECT seq, kind, key, gtid FROM journal ORDER BY seq").fetchall()


def events(change_log, after: int = 0) -> list[tuple[str, str]]:
    return [(kind, key) for _seq, kind, key in change_log.events_after(after, 1_000_000)]
