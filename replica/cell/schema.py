"""The cell database and the flavor source, modelled on Nova's own tables.

Table names, column names and value formats follow Nova's cell database
(``nova/db/main/models.py``) and, for flavors, Nova's API database
(``nova/db/api/models.py``), restricted to what rendering a server or a flavor
needs, so that the publisher can later be pointed at a real Nova database.

Value formats, as Nova writes them through SQLAlchemy on SQLite:

- datetimes: ``'YYYY-MM-DD HH:MM:SS.ffffff'`` (naive UTC, space separator);
- booleans: integers 0 / 1;
- soft delete (``SoftDeleteMixin``): ``deleted`` is 0 for a live row and the
  row's own ``id`` once soft-deleted, ``deleted_at`` is set at the same time;
- ``instance_extra.flavor``: JSON ``{"cur": <Flavor primitive>, "old": ..., "new": ...}``
  where a primitive is ``{"nova_object.name": "Flavor", "nova_object.namespace": "nova",
  "nova_object.version": "1.2", "nova_object.data": {...}}``;
- ``instance_extra.trusted_certs``: JSON TrustedCerts primitive (``data.ids``) or NULL;
- ``instance_info_caches.network_info``: JSON list of VIFs (Nova's ``NetworkInfo``);
- ``locked_reason`` lives in ``instance_system_metadata`` (Nova's lock API writes it
  there), as do the ``image_*`` keys copied from the image at boot.

Tables Nova keeps elsewhere, modelled here minimally so an adapter can map them:

- server groups live in Nova's API database (``instance_groups``,
  ``instance_group_member``, ``instance_group_policy``); the cell database here holds
  tables with the same names and columns. An adapter for a real deployment would
  attach the API database instead (``ATTACH ... AS api``) and keep these empty.
- scheduler hints and the pinned availability zone come from the API database's
  ``request_specs.spec`` (a RequestSpec primitive: ``nova_object.data.scheduler_hints``
  maps a hint to a list of values, ``nova_object.data.availability_zone`` is the AZ
  the user asked for); modelled here as the same table.

All statements use ``IF NOT EXISTS`` so creating is idempotent.
"""

from __future__ import annotations

import apsw

# Columns every Nova soft-deletable model has (TimestampMixin + SoftDeleteMixin).
_STAMPS = """
    created_at DATETIME,
    updated_at DATETIME,
    deleted_at DATETIME,
    deleted INTEGER DEFAULT 0"""

CELL_TABLES: tuple[str, ...] = (
    f"""
    CREATE TABLE IF NOT EXISTS instances (
        id INTEGER PRIMARY KEY AUTOINCREMENT,{_STAMPS},
        internal_id INTEGER,
        user_id VARCHAR(255),
        project_id VARCHAR(255),
        image_ref VARCHAR(255),
        kernel_id VARCHAR(255),
        ramdisk_id VARCHAR(255),
        hostname VARCHAR(255),
        launch_index INTEGER,
        key_name VARCHAR(255),
        key_data MEDIUMTEXT,
        power_state INTEGER,
        vm_state VARCHAR(255),
        task_state VARCHAR(255),
        memory_mb INTEGER,
        vcpus INTEGER,
        root_gb INTEGER,
        ephemeral_gb INTEGER,
        ephemeral_key_uuid VARCHAR(36),
        host VARCHAR(255),
        node VARCHAR(255),
        compute_id BIGINT,
        instance_type_id INTEGER,
        user_data MEDIUMTEXT,
        reservation_id VARCHAR(255),
        launched_at DATETIME,
        terminated_at DATETIME,
        availability_zone VARCHAR(255),
        display_name VARCHAR(255),
        display_description VARCHAR(255),
        launched_on MEDIUMTEXT,
        locked BOOLEAN,
        locked_by VARCHAR(5) CHECK (locked_by IN ('owner', 'admin')),
        os_type VARCHAR(255),
        architecture VARCHAR(255),
        vm_mode VARCHAR(255),
        uuid VARCHAR(36) NOT NULL,
        root_device_name VARCHAR(255),
        default_ephemeral_device VARCHAR(255),
        default_swap_device VARCHAR(255),
        config_drive VARCHAR(255),
        access_ip_v4 VARCHAR(39),
        access_ip_v6 VARCHAR(39),
        auto_disk_config BOOLEAN,
        progress INTEGER,
        shutdown_terminate BOOLEAN DEFAULT 0,
        disable_terminate BOOLEAN DEFAULT 0,
        cell_name VARCHAR(255),
        cleaned INTEGER DEFAULT 0,
        hidden BOOLEAN DEFAULT 0,
        CONSTRAINT uniq_instances0uuid UNIQUE (uuid)
    )""",
    "CREATE INDEX IF NOT EXISTS instances_project_id_deleted_idx ON instances (project_id, deleted)",
    "CREATE INDEX IF NOT EXISTS instances_host_node_deleted_idx ON instances (host, node, deleted)",
    "CREATE INDEX IF NOT EXISTS instances_uuid_deleted_idx ON instances (uuid, deleted)",
    "CREATE INDEX IF NOT EXISTS instances_deleted_created_at_idx ON instances (deleted, created_at)",
    f"""
    CREATE TABLE IF NOT EXISTS instance_extra (
        id INTEGER PRIMARY KEY AUTOINCREMENT,{_STAMPS},
        instance_uuid VARCHAR(36) NOT NULL REFERENCES instances (uuid),
        device_metadata TEXT,
        numa_topology TEXT,
        pci_requests TEXT,
        flavor TEXT,
        vcpu_model TEXT,
        migration_context TEXT,
        keypairs TEXT,
        trusted_certs TEXT,
        resources TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS instance_extra_idx ON instance_extra (instance_uuid)",
    f"""
    CREATE TABLE IF NOT EXISTS instance_info_caches (
        id INTEGER PRIMARY KEY AUTOINCREMENT,{_STAMPS},
        network_info MEDIUMTEXT,
        instance_uuid VARCHAR(36) NOT NULL REFERENCES instances (uuid),
        CONSTRAINT uniq_instance_info_caches0instance_uuid UNIQUE (instance_uuid)
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS instance_metadata (
        id INTEGER PRIMARY KEY,{_STAMPS},
        key VARCHAR(255),
        value VARCHAR(255),
        instance_uuid VARCHAR(36) REFERENCES instances (uuid)
    )""",
    "CREATE INDEX IF NOT EXISTS instance_metadata_instance_uuid_idx"
    " ON instance_metadata (instance_uuid)",
    f"""
    CREATE TABLE IF NOT EXISTS instance_system_metadata (
        id INTEGER PRIMARY KEY,{_STAMPS},
        key VARCHAR(255) NOT NULL,
        value VARCHAR(255),
        instance_uuid VARCHAR(36) NOT NULL REFERENCES instances (uuid)
    )""",
    "CREATE INDEX IF NOT EXISTS instance_uuid ON instance_system_metadata (instance_uuid)",
    """
    CREATE TABLE IF NOT EXISTS tags (
        resource_id VARCHAR(36) NOT NULL,
        tag VARCHAR(80) NOT NULL,
        PRIMARY KEY (resource_id, tag)
    )""",
    "CREATE INDEX IF NOT EXISTS tags_tag_idx ON tags (tag)",
    f"""
    CREATE TABLE IF NOT EXISTS block_device_mapping (
        id INTEGER PRIMARY KEY AUTOINCREMENT,{_STAMPS},
        device_name VARCHAR(255),
        delete_on_termination BOOLEAN DEFAULT 0,
        snapshot_id VARCHAR(36),
        volume_id VARCHAR(36),
        volume_size INTEGER,
        no_device BOOLEAN,
        connection_info MEDIUMTEXT,
        instance_uuid VARCHAR(36) REFERENCES instances (uuid),
        source_type VARCHAR(255),
        destination_type VARCHAR(255),
        guest_format VARCHAR(255),
        device_type VARCHAR(255),
        disk_bus VARCHAR(255),
        boot_index INTEGER,
        image_id VARCHAR(36),
        tag VARCHAR(255),
        attachment_id VARCHAR(36),
        uuid VARCHAR(36),
        volume_type VARCHAR(255),
        encrypted BOOLEAN DEFAULT 0,
        encryption_secret_uuid VARCHAR(36),
        encryption_format VARCHAR(128),
        encryption_options VARCHAR(4096)
    )""",
    "CREATE INDEX IF NOT EXISTS block_device_mapping_instance_uuid_idx"
    " ON block_device_mapping (instance_uuid)",
    f"""
    CREATE TABLE IF NOT EXISTS security_groups (
        id INTEGER PRIMARY KEY,{_STAMPS},
        name VARCHAR(255),
        description VARCHAR(255),
        user_id VARCHAR(255),
        project_id VARCHAR(255)
    )""",
    f"""
    CREATE TABLE IF NOT EXISTS security_group_instance_association (
        id INTEGER PRIMARY KEY,{_STAMPS},
        security_group_id INTEGER REFERENCES security_groups (id),
        instance_uuid VARCHAR(36) REFERENCES instances (uuid)
    )""",
    "CREATE INDEX IF NOT EXISTS security_group_instance_association_instance_uuid_idx"
    " ON security_group_instance_association (instance_uuid)",
    "CREATE INDEX IF NOT EXISTS security_group_instance_association_group_idx"
    " ON security_group_instance_association (security_group_id)",
    f"""
    CREATE TABLE IF NOT EXISTS instance_faults (
        id INTEGER PRIMARY KEY,{_STAMPS},
        instance_uuid VARCHAR(36) REFERENCES instances (uuid),
        code INTEGER NOT NULL,
        message VARCHAR(255),
        details MEDIUMTEXT,
        host VARCHAR(255)
    )""",
    "CREATE INDEX IF NOT EXISTS instance_faults_instance_uuid_deleted_created_at_idx"
    " ON instance_faults (instance_uuid, deleted, created_at)",
    f"""
    CREATE TABLE IF NOT EXISTS services (
        id INTEGER PRIMARY KEY,{_STAMPS},
        uuid VARCHAR(36),
        host VARCHAR(255),
        "binary" VARCHAR(255),
        topic VARCHAR(255),
        report_count INTEGER NOT NULL DEFAULT 0,
        disabled BOOLEAN DEFAULT 0,
        disabled_reason VARCHAR(255),
        last_seen_up DATETIME,
        forced_down BOOLEAN DEFAULT 0,
        version INTEGER DEFAULT 0,
        CONSTRAINT uniq_services0host0topic0deleted UNIQUE (host, topic, deleted),
        CONSTRAINT uniq_services0host0binary0deleted UNIQUE (host, "binary", deleted)
    )""",
    "CREATE INDEX IF NOT EXISTS services_host_idx ON services (host)",
    # Nova's compute nodes (the hypervisors), as nova/db/main/models.py declares them.
    f"""
    CREATE TABLE IF NOT EXISTS compute_nodes (
        id INTEGER PRIMARY KEY,{_STAMPS},
        service_id INTEGER,
        host VARCHAR(255),
        uuid VARCHAR(36),
        vcpus INTEGER NOT NULL,
        memory_mb INTEGER NOT NULL,
        local_gb INTEGER NOT NULL,
        vcpus_used INTEGER NOT NULL,
        memory_mb_used INTEGER NOT NULL,
        local_gb_used INTEGER NOT NULL,
        hypervisor_type MEDIUMTEXT NOT NULL,
        hypervisor_version INTEGER NOT NULL,
        hypervisor_hostname VARCHAR(255),
        free_ram_mb INTEGER,
        free_disk_gb INTEGER,
        current_workload INTEGER,
        running_vms INTEGER,
        cpu_info MEDIUMTEXT NOT NULL,
        disk_available_least INTEGER,
        host_ip VARCHAR(39),
        supported_instances TEXT,
        metrics TEXT,
        pci_stats TEXT,
        extra_resources TEXT,
        stats TEXT DEFAULT '{{}}',
        numa_topology TEXT,
        ram_allocation_ratio FLOAT,
        cpu_allocation_ratio FLOAT,
        disk_allocation_ratio FLOAT,
        mapped INTEGER DEFAULT 0,
        CONSTRAINT uniq_compute_nodes0host0hypervisor_hostname0deleted
            UNIQUE (host, hypervisor_hostname, deleted)
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS compute_nodes_uuid_idx ON compute_nodes (uuid)",
    f"""
    CREATE TABLE IF NOT EXISTS instance_actions (
        id INTEGER PRIMARY KEY,{_STAMPS},
        action VARCHAR(255),
        instance_uuid VARCHAR(36) REFERENCES instances (uuid),
        request_id VARCHAR(255),
        user_id VARCHAR(255),
        project_id VARCHAR(255),
        start_time DATETIME,
        finish_time DATETIME,
        message VARCHAR(255)
    )""",
    "CREATE INDEX IF NOT EXISTS instance_uuid_idx ON instance_actions (instance_uuid)",
    "CREATE INDEX IF NOT EXISTS request_id_idx ON instance_actions (request_id)",
    f"""
    CREATE TABLE IF NOT EXISTS instance_actions_events (
        id INTEGER PRIMARY KEY,{_STAMPS},
        event VARCHAR(255),
        action_id INTEGER REFERENCES instance_actions (id),
        start_time DATETIME,
        finish_time DATETIME,
        result VARCHAR(255),
        traceback TEXT,
        host VARCHAR(255),
        details TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS instance_actions_events_action_id_idx"
    " ON instance_actions_events (action_id)",
    # Nova's API database (server groups, request specs); see the module docstring.
    """
    CREATE TABLE IF NOT EXISTS instance_groups (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at DATETIME,
        updated_at DATETIME,
        user_id VARCHAR(255),
        project_id VARCHAR(255),
        uuid VARCHAR(36) NOT NULL,
        name VARCHAR(255),
        CONSTRAINT uniq_instance_groups0uuid UNIQUE (uuid)
    )""",
    """
    CREATE TABLE IF NOT EXISTS instance_group_policy (
        id INTEGER PRIMARY KEY,
        created_at DATETIME,
        updated_at DATETIME,
        policy VARCHAR(255),
        group_id INTEGER NOT NULL REFERENCES instance_groups (id),
        rules TEXT
    )""",
    """
    CREATE TABLE IF NOT EXISTS instance_group_member (
        id INTEGER PRIMARY KEY,
        created_at DATETIME,
        updated_at DATETIME,
        instance_uuid VARCHAR(255),
        group_id INTEGER NOT NULL REFERENCES instance_groups (id)
    )""",
    "CREATE INDEX IF NOT EXISTS instance_group_member_instance_idx"
    " ON instance_group_member (instance_uuid)",
    "CREATE INDEX IF NOT EXISTS instance_group_member_group_idx"
    " ON instance_group_member (group_id)",
    """
    CREATE TABLE IF NOT EXISTS request_specs (
        id INTEGER PRIMARY KEY,
        created_at DATETIME,
        updated_at DATETIME,
        instance_uuid VARCHAR(36) NOT NULL,
        spec MEDIUMTEXT NOT NULL,
        CONSTRAINT uniq_request_specs0instance_uuid UNIQUE (instance_uuid)
    )""",
)

# Nova's API database flavor tables (flavors are global in Nova).
FLAVOR_TABLES: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS flavors (
        created_at DATETIME,
        updated_at DATETIME,
        id INTEGER PRIMARY KEY,
        name VARCHAR(255) NOT NULL,
        memory_mb INTEGER NOT NULL,
        vcpus INTEGER NOT NULL,
        root_gb INTEGER,
        ephemeral_gb INTEGER,
        flavorid VARCHAR(255) NOT NULL,
        swap INTEGER NOT NULL DEFAULT 0,
        rxtx_factor FLOAT DEFAULT 1,
        vcpu_weight INTEGER,
        disabled BOOLEAN DEFAULT 0,
        is_public BOOLEAN DEFAULT 1,
        description TEXT,
        CONSTRAINT uniq_flavors0flavorid UNIQUE (flavorid),
        CONSTRAINT uniq_flavors0name UNIQUE (name)
    )""",
    """
    CREATE TABLE IF NOT EXISTS flavor_extra_specs (
        created_at DATETIME,
        updated_at DATETIME,
        id INTEGER PRIMARY KEY,
        key VARCHAR(255) NOT NULL,
        value VARCHAR(255),
        flavor_id INTEGER NOT NULL REFERENCES flavors (id),
        CONSTRAINT uniq_flavor_extra_specs0flavor_id0key UNIQUE (flavor_id, key)
    )""",
    """
    CREATE TABLE IF NOT EXISTS flavor_projects (
        created_at DATETIME,
        updated_at DATETIME,
        id INTEGER PRIMARY KEY,
        flavor_id INTEGER NOT NULL REFERENCES flavors (id),
        project_id VARCHAR(255) NOT NULL,
        CONSTRAINT uniq_flavor_projects0flavor_id0project_id UNIQUE (flavor_id, project_id)
    )""",
    # Nova's API database aggregates (availability zones: the availability_zone
    # metadata; no soft delete there).
    """
    CREATE TABLE IF NOT EXISTS aggregates (
        created_at DATETIME,
        updated_at DATETIME,
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid VARCHAR(36),
        name VARCHAR(255),
        CONSTRAINT uniq_aggregate0name UNIQUE (name)
    )""",
    "CREATE INDEX IF NOT EXISTS aggregate_uuid_idx ON aggregates (uuid)",
    """
    CREATE TABLE IF NOT EXISTS aggregate_hosts (
        created_at DATETIME,
        updated_at DATETIME,
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        host VARCHAR(255),
        aggregate_id INTEGER NOT NULL REFERENCES aggregates (id),
        CONSTRAINT uniq_aggregate_hosts0host0aggregate_id UNIQUE (host, aggregate_id)
    )""",
    """
    CREATE TABLE IF NOT EXISTS aggregate_metadata (
        created_at DATETIME,
        updated_at DATETIME,
        id INTEGER PRIMARY KEY,
        key VARCHAR(255) NOT NULL,
        value VARCHAR(255) NOT NULL,
        aggregate_id INTEGER NOT NULL REFERENCES aggregates (id),
        CONSTRAINT uniq_aggregate_metadata0aggregate_id0key UNIQUE (aggregate_id, key)
    )""",
    "CREATE INDEX IF NOT EXISTS aggregate_metadata_key_idx ON aggregate_metadata (key)",
    # Nova's API database key pairs (per user; no soft delete there).
    """
    CREATE TABLE IF NOT EXISTS key_pairs (
        created_at DATETIME,
        updated_at DATETIME,
        id INTEGER PRIMARY KEY,
        name VARCHAR(255) NOT NULL,
        user_id VARCHAR(255) NOT NULL,
        fingerprint VARCHAR(255),
        public_key TEXT,
        type VARCHAR(5) NOT NULL DEFAULT 'ssh',
        CONSTRAINT uniq_key_pairs0user_id0name UNIQUE (user_id, name)
    )""",
)

# Nova's API database quota tables (a project's limits, the quota classes' limits), and
# its server groups, which the projects' quota usage counts.
QUOTA_TABLES: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS quotas (
        id INTEGER PRIMARY KEY,
        created_at DATETIME,
        updated_at DATETIME,
        project_id VARCHAR(255),
        resource VARCHAR(255) NOT NULL,
        hard_limit INTEGER,
        CONSTRAINT uniq_quotas0project_id0resource UNIQUE (project_id, resource)
    )""",
    """
    CREATE TABLE IF NOT EXISTS quota_classes (
        id INTEGER PRIMARY KEY,
        created_at DATETIME,
        updated_at DATETIME,
        class_name VARCHAR(255),
        resource VARCHAR(255),
        hard_limit INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS quota_classes_class_name_idx ON quota_classes (class_name)",
) + tuple(ddl for ddl in CELL_TABLES if "CREATE TABLE IF NOT EXISTS instance_groups (" in ddl)
FLAVOR_TABLES += QUOTA_TABLES
# ... and the server groups' policies and members (the server_group kind).
FLAVOR_TABLES += tuple(ddl for ddl in CELL_TABLES if any(
    f"CREATE TABLE IF NOT EXISTS {table} (" in ddl
    for table in ("instance_group_policy", "instance_group_member")))


def has_table(conn: apsw.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                       (name,)).fetchone()
    return row is not None


def create_cell_tables(conn: apsw.Connection) -> None:
    """Create the cell tables that do not exist yet (one transaction)."""
    with conn:
        for statement in CELL_TABLES:
            conn.execute(statement)


def create_flavor_tables(conn: apsw.Connection) -> None:
    """Create the flavor source tables that do not exist yet (one transaction)."""
    with conn:
        for statement in FLAVOR_TABLES:
            conn.execute(statement)


def is_cell(conn: apsw.Connection) -> bool:
    return has_table(conn, "instances")


def is_flavor_source(conn: apsw.Connection) -> bool:
    return has_table(conn, "flavors")
