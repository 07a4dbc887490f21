"""The replica database schema, as a user_version ladder.

Each step is applied once, in order, inside one transaction with the new
user_version. Never edit a released step: add one.

Row layout: every server and flavor row carries the indexed columns that the
API filters and sorts on, and the pre-rendered response fragments (``brief``: the
list entry; ``d_*`` / ``f_*``: the pieces of the detail document that differ between
microversions and audiences) so that a read is one indexed statement that concatenates
bytes. Columns are filled by ``replica.render``.
"""

from __future__ import annotations

import apsw

STEPS: tuple[str, ...] = (
    # 1: servers, flavors, positions, dead letters
    """
    CREATE TABLE servers (
        uuid TEXT PRIMARY KEY,
        cell TEXT NOT NULL,
        seq INTEGER NOT NULL,             -- feed seq of the event that wrote this row
        project_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        deleted INTEGER NOT NULL,         -- 1: soft-deleted, shown only with changes-since
        display_name TEXT,
        display_description TEXT,
        status TEXT NOT NULL,             -- API status (ACTIVE, SHUTOFF, ...)
        vm_state TEXT,
        task_state TEXT,
        power_state INTEGER,
        host TEXT,
        node TEXT,
        availability_zone TEXT,
        image_ref TEXT,
        flavor_id TEXT,
        flavor_name TEXT,
        key_name TEXT,
        locked INTEGER NOT NULL,
        locked_by TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT,
        launched_at TEXT,
        terminated_at TEXT,
        deleted_at TEXT,
        access_ip_v4 TEXT,
        access_ip_v6 TEXT,
        config_drive TEXT,
        progress INTEGER,
        hostname TEXT,
        launch_index INTEGER,
        reservation_id TEXT,
        kernel_id TEXT,
        ramdisk_id TEXT,
        root_device_name TEXT,
        auto_disk_config INTEGER,
        ips TEXT NOT NULL,                -- every fixed address (step 18), space separated
        tags TEXT NOT NULL,               -- JSON array of tags
        flavor_ref TEXT NOT NULL,         -- flavorid as written inside a JSON string
        image_ref_id TEXT,                -- image id as written inside a JSON string; NULL: none
        image_props TEXT NOT NULL,        -- the image properties object (2.98)
        brief TEXT NOT NULL,              -- list entry without its links: '{"id":..,"name":..'
        -- detail fragments (see replica.render.STORED_FRAGMENTS): d_base opens the
        -- object, each other one is '' or ',"key":value'; a view concatenates its own,
        -- and SQL adds the fragments that hold links (replica.store.reader).
        d_base TEXT NOT NULL,
        d_fault_user TEXT NOT NULL,
        d_fault_admin TEXT NOT NULL,
        d_flavor_v247 TEXT NOT NULL,
        d_volumes_v21 TEXT NOT NULL,
        d_volumes_v23 TEXT NOT NULL,
        d_ext_v21 TEXT NOT NULL,
        d_ext_v23 TEXT NOT NULL,
        d_locked TEXT NOT NULL,
        d_host_status TEXT NOT NULL,
        d_description TEXT NOT NULL,
        d_tags TEXT NOT NULL,
        d_trusted_certs TEXT NOT NULL,
        d_server_groups TEXT NOT NULL,
        d_locked_reason TEXT NOT NULL,
        d_hostname TEXT NOT NULL,
        d_pinned_az TEXT NOT NULL,
        d_scheduler_hints TEXT NOT NULL,
        entity_hash INTEGER NOT NULL,     -- replica.feed.entity_hash of the entity
        bucket INTEGER NOT NULL           -- replica.feed.bucket_of(uuid)
    );
    CREATE INDEX servers_project_created ON servers (project_id, deleted, created_at, uuid);
    CREATE INDEX servers_created ON servers (deleted, created_at, uuid);
    CREATE INDEX servers_updated ON servers (updated_at);
    CREATE INDEX servers_cell_bucket ON servers (cell, bucket);

    CREATE TABLE flavors (
        flavorid TEXT PRIMARY KEY,
        source TEXT NOT NULL,             -- the feed that publishes it
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        memory_mb INTEGER NOT NULL,
        vcpus INTEGER NOT NULL,
        root_gb INTEGER NOT NULL,
        ephemeral_gb INTEGER NOT NULL,
        swap INTEGER NOT NULL,
        rxtx_factor REAL NOT NULL,
        vcpu_weight INTEGER,
        disabled INTEGER NOT NULL,
        is_public INTEGER NOT NULL,
        description TEXT,
        projects TEXT NOT NULL,           -- JSON array of projects with access (private flavors)
        created_at TEXT NOT NULL,
        -- fragments (see replica.render.FLAVOR_FRAGMENTS): f_brief and f_detail open
        -- the object, the others are ',"key":value'.
        f_brief TEXT NOT NULL,
        f_detail TEXT NOT NULL,
        f_swap_v21 TEXT NOT NULL,
        f_swap_v275 TEXT NOT NULL,
        f_description TEXT NOT NULL,
        f_extra_specs TEXT NOT NULL,
        entity_hash INTEGER NOT NULL,
        bucket INTEGER NOT NULL
    );
    CREATE INDEX flavors_source_bucket ON flavors (source, bucket);

    CREATE TABLE positions (
        cell TEXT PRIMARY KEY,
        epoch TEXT NOT NULL,
        seq INTEGER NOT NULL,
        applied_at REAL NOT NULL          -- unix time of the commit that wrote it
    );

    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        received_at REAL NOT NULL,
        cell TEXT,                        -- as claimed by the message, when readable
        reason TEXT NOT NULL,             -- replica.feed.FeedError.reason
        message TEXT NOT NULL,
        payload BLOB NOT NULL             -- the first bytes of the refused message
    );
    """,
    # 2: entity hashes are CRC-32 of the entity's wire bytes (feed version 2); the rows'
    # hashes no longer match their cells', so every cell is resynced once, as after a
    # new epoch (the resync renders again each row whose hash differs: all of them).
    """
    UPDATE positions SET epoch = 'rehash-' || epoch;
    """,
    # 3: the ips view of a building server (the server view hides its addresses). Rows
    # written before hold NULL: until an event or a resync renders them again, the ips
    # of a building server show as empty, as they did.
    """
    ALTER TABLE servers ADD COLUMN addresses_building TEXT;  -- addresses view JSON, or NULL
    """,
    # 4: the 2.102 flavor view (no OS-FLV-DISABLED:disabled, no rxtx_factor). Rows written
    # before are filled from their f_detail by cutting those two members out: f_detail's
    # members are in a fixed order (replica.render), and ',"' occurs in JSON text only
    # between members (a quote inside a string is escaped), so each instr() below finds
    # the member itself, never text inside the id or the name.
    """
    ALTER TABLE flavors ADD COLUMN f_detail_v2102 TEXT NOT NULL DEFAULT '';
    UPDATE flavors SET f_detail_v2102 =
        substr(f_detail, 1, instr(f_detail, ',"OS-FLV-DISABLED:disabled":') - 1)
        || substr(f_detail, instr(f_detail, ',"vcpus":'),
                  instr(f_detail, ',"rxtx_factor":') - instr(f_detail, ',"vcpus":'))
        || substr(f_detail, instr(f_detail, ',"links":'));
    """,
    # 5: the feeds that have been live at least once. Until every feed a read includes
    # is here, the API answers 503 (loading) instead of a list that looks empty.
    """
    CREATE TABLE cells_live (
        cell TEXT PRIMARY KEY,
        first_live_at REAL NOT NULL       -- unix time ingest first caught up with it
    );
    """,
    # 6: Nova's default server order is created_at descending, then the uuid ascending
    # (what decides between servers created in the same second on MariaDB): the indexes
    # hold the uuid descending, so that a backward scan gives that order.
    """
    DROP INDEX servers_project_created;
    DROP INDEX servers_created;
    CREATE INDEX servers_project_created ON servers (project_id, deleted, created_at,
                                                     uuid DESC);
    CREATE INDEX servers_created ON servers (deleted, created_at, uuid DESC);
    """,
    # 7: a server that is still a build request (only in Nova's API database) has no tags
    # resource in nova-api (404): in_cell = 0 for it. Rows written before are in a cell.
    """
    ALTER TABLE servers ADD COLUMN in_cell INTEGER NOT NULL DEFAULT 1;
    """,
    # 8: instance actions with their events (replica.render.instance_action_row). Rows
    # come with the cells' next events or resync: a cell publishing them before this
    # build resynced nothing, as it published none.
    """
    CREATE TABLE instance_actions (
        action_key TEXT PRIMARY KEY,      -- instance uuid / zero-padded action id
        cell TEXT NOT NULL,
        seq INTEGER NOT NULL,
        instance_uuid TEXT NOT NULL,
        action_id INTEGER NOT NULL,
        request_id TEXT,
        created_at TEXT,
        updated_at TEXT,
        deleted INTEGER NOT NULL,
        a_v21 TEXT NOT NULL,              -- the action's members, no braces
        a_updated TEXT NOT NULL,          -- ,"updated_at":... (2.58)
        ev_user_v251 TEXT NOT NULL,       -- events arrays per audience and microversion
        ev_user_v262 TEXT NOT NULL,
        ev_admin_v21 TEXT NOT NULL,
        ev_admin_v262 TEXT NOT NULL,
        ev_admin_v284 TEXT NOT NULL,
        entity_hash INTEGER NOT NULL,
        bucket INTEGER NOT NULL
    );
    CREATE INDEX instance_actions_order ON instance_actions
        (instance_uuid, deleted, created_at, action_id);
    CREATE INDEX instance_actions_request ON instance_actions (instance_uuid, request_id);
    CREATE INDEX instance_actions_cell_bucket ON instance_actions (cell, bucket);
    """,
    # 9: key pairs (replica.render.keypair_row), per user, from the API database's feed.
    """
    CREATE TABLE keypairs (
        keypair_key TEXT PRIMARY KEY,     -- user id / name
        source TEXT NOT NULL,
        seq INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        name TEXT NOT NULL,
        k_item_v21 TEXT NOT NULL,         -- {"keypair":{...}} of a list
        k_item_v22 TEXT NOT NULL,
        k_show_v21 TEXT NOT NULL,         -- the show document's keypair object
        k_show_v22 TEXT NOT NULL,
        entity_hash INTEGER NOT NULL,
        bucket INTEGER NOT NULL
    );
    CREATE INDEX keypairs_user_name ON keypairs (user_id, name);
    CREATE INDEX keypairs_source_bucket ON keypairs (source, bucket);
    """,
    # 10 (limits: usage): each project's usage as Nova counts it for its quotas (live
    # servers in a cell (not build requests: in_cell), not soft-deleted: their count,
    # vcpus and memory, from the embedded flavor
    # of d_flavor_v247), kept by triggers on servers, so in the same transaction as the
    # server rows whatever writes them (events, resync, repair). Filled from the rows
    # already held.
    """
    CREATE TABLE project_usage (
        project_id TEXT PRIMARY KEY,
        instances INTEGER NOT NULL,
        cores INTEGER NOT NULL,
        ram INTEGER NOT NULL
    );
    INSERT INTO project_usage (project_id, instances, cores, ram)
        SELECT project_id, count(*),
               sum(coalesce(json_extract('{' || substr(d_flavor_v247, 2) || '}', '$.flavor.vcpus'), 0)),
               sum(coalesce(json_extract('{' || substr(d_flavor_v247, 2) || '}', '$.flavor.ram'), 0))
        FROM servers WHERE deleted = 0 AND vm_state IS NOT 'soft-delete' AND in_cell = 1
        GROUP BY project_id;
    CREATE TRIGGER project_usage_insert AFTER INSERT ON servers
        WHEN NEW.deleted = 0 AND NEW.vm_state IS NOT 'soft-delete' AND NEW.in_cell = 1
    BEGIN
        INSERT INTO project_usage (project_id, instances, cores, ram) VALUES (
            NEW.project_id, 1,
            coalesce(json_extract('{' || substr(NEW.d_flavor_v247, 2) || '}', '$.flavor.vcpus'), 0),
            coalesce(json_extract('{' || substr(NEW.d_flavor_v247, 2) || '}', '$.flavor.ram'), 0))
        ON CONFLICT (project_id) DO UPDATE SET instances = instances + 1,
            cores = cores + excluded.cores, ram = ram + excluded.ram;
    END;
    CREATE TRIGGER project_usage_delete AFTER DELETE ON servers
        WHEN OLD.deleted = 0 AND OLD.vm_state IS NOT 'soft-delete' AND OLD.in_cell = 1
    BEGIN
        UPDATE project_usage SET instances = instances - 1,
            cores = cores - coalesce(json_extract('{' || substr(OLD.d_flavor_v247, 2) || '}', '$.flavor.vcpus'), 0),
            ram = ram - coalesce(json_extract('{' || substr(OLD.d_flavor_v247, 2) || '}', '$.flavor.ram'), 0)
        WHERE project_id = OLD.project_id;
    END;
    CREATE TRIGGER project_usage_update AFTER UPDATE ON servers
        WHEN OLD.deleted IS NOT NEW.deleted OR OLD.vm_state IS NOT NEW.vm_state
            OR OLD.project_id IS NOT NEW.project_id
            OR OLD.d_flavor_v247 IS NOT NEW.d_flavor_v247 OR OLD.in_cell IS NOT NEW.in_cell
    BEGIN
        UPDATE project_usage SET instances = instances - 1,
            cores = cores - coalesce(json_extract('{' || substr(OLD.d_flavor_v247, 2) || '}', '$.flavor.vcpus'), 0),
            ram = ram - coalesce(json_extract('{' || substr(OLD.d_flavor_v247, 2) || '}', '$.flavor.ram'), 0)
        WHERE project_id = OLD.project_id
            AND OLD.deleted = 0 AND OLD.vm_state IS NOT 'soft-delete' AND OLD.in_cell = 1;
        INSERT INTO project_usage (project_id, instances, cores, ram)
            SELECT NEW.project_id, 1,
                coalesce(json_extract('{' || substr(NEW.d_flavor_v247, 2) || '}', '$.flavor.vcpus'), 0),
                coalesce(json_extract('{' || substr(NEW.d_flavor_v247, 2) || '}', '$.flavor.ram'), 0)
            WHERE NEW.deleted = 0 AND NEW.vm_state IS NOT 'soft-delete' AND NEW.in_cell = 1
        ON CONFLICT (project_id) DO UPDATE SET instances = instances + 1,
            cores = cores + excluded.cores, ram = ram + excluded.ram;
    END;
    """,
    # 11 (limits and quota sets: quotas): Nova's quota limits from its API database
    # (replica.render.quota_row): a project's own limits (quotas), or the defaults
    # (key 'class/default': the publisher's configured defaults under the quota class
    # 'default'), with the project's server group count. NULL: not set.
    """
    CREATE TABLE quotas (
        quota_key TEXT PRIMARY KEY,       -- 'project/<id>' or 'class/default'
        source TEXT NOT NULL,             -- the feed that publishes it
        seq INTEGER NOT NULL,
        project_id TEXT,
        instances INTEGER,
        cores INTEGER,
        ram INTEGER,
        metadata_items INTEGER,
        injected_files INTEGER,
        injected_file_content_bytes INTEGER,
        injected_file_path_bytes INTEGER,
        key_pairs INTEGER,
        server_groups INTEGER,
        server_group_members INTEGER,
        fixed_ips INTEGER,
        floating_ips INTEGER,
        security_groups INTEGER,
        security_group_rules INTEGER,
        server_groups_used INTEGER NOT NULL,
        entity_hash INTEGER NOT NULL,
        bucket INTEGER NOT NULL
    );
    CREATE INDEX quotas_source_bucket ON quotas (source, bucket);
    """,
    # 12: Nova lists the build requests (in_cell = 0) before every cell's servers: the
    # indexes hold in_cell right after the columns every list fixes, descending, so
    # that a backward walk gives the build requests first, newest first, then the
    # cells' servers (replica.store.reader._server_list_sql).
    """
    DROP INDEX servers_project_created;
    DROP INDEX servers_created;
    CREATE INDEX servers_project_created ON servers (project_id, deleted, in_cell DESC,
                                                     created_at, uuid DESC);
    CREATE INDEX servers_created ON servers (deleted, in_cell DESC, created_at, uuid DESC);
    """,
    # 13 (hypervisors): a cell's compute nodes with their host's nova-compute service
    # (replica.render.hypervisor_row), in Nova's order (cell, compute node id); listed
    # 0: no live service on its host (Nova's API leaves the node out). The servers of a
    # host (with_servers, /os-hypervisors/{pattern}/servers) are read from the servers
    # table by host.
    """
    CREATE TABLE hypervisors (
        uuid TEXT PRIMARY KEY,            -- compute_nodes.uuid
        cell TEXT NOT NULL,
        seq INTEGER NOT NULL,
        node_id INTEGER NOT NULL,         -- compute_nodes.id (the id before 2.53)
        host TEXT,
        hypervisor_hostname TEXT,
        listed INTEGER NOT NULL,
        h_basic_v21 TEXT NOT NULL,        -- each a whole object without "servers"
        h_basic_v253 TEXT NOT NULL,
        h_detail_v21 TEXT NOT NULL,
        h_detail_v228 TEXT NOT NULL,
        h_detail_v253 TEXT NOT NULL,
        h_detail_v288 TEXT NOT NULL,
        entity_hash INTEGER NOT NULL,
        bucket INTEGER NOT NULL
    );
    CREATE INDEX hypervisors_order ON hypervisors (cell, node_id);
    CREATE INDEX hypervisors_cell_bucket ON hypervisors (cell, bucket);
    CREATE INDEX servers_live_host ON servers (host, cell) WHERE deleted = 0;
    """,
    # 14 (limits: usage kept by the writer): the usage triggers of step 10 cost more than
    # the server upsert they ride on; the writer keeps the usage in its batch instead
    # (replica/store/usage.py), from one small row per counted server. Filled from the
    # rows already held, and the sums made again from them.
    """
    DROP TRIGGER project_usage_insert;
    DROP TRIGGER project_usage_delete;
    DROP TRIGGER project_usage_update;
    CREATE TABLE server_usage (
        uuid TEXT PRIMARY KEY,
        cell TEXT NOT NULL,
        project_id TEXT NOT NULL,
        cores INTEGER NOT NULL,
        ram INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO server_usage (uuid, cell, project_id, cores, ram)
        SELECT uuid, cell, project_id,
               coalesce(json_extract('{' || substr(d_flavor_v247, 2) || '}', '$.flavor.vcpus'), 0),
               coalesce(json_extract('{' || substr(d_flavor_v247, 2) || '}', '$.flavor.ram'), 0)
        FROM servers WHERE deleted = 0 AND vm_state IS NOT 'soft-delete' AND in_cell = 1;
    DELETE FROM project_usage;
    INSERT INTO project_usage (project_id, instances, cores, ram)
        SELECT project_id, count(*), sum(cores), sum(ram) FROM server_usage
        GROUP BY project_id;
    """,
    # 15 (services: the service kind): each cell's services (replica.render.service_row),
    # GET /os-services and (with aggregate_zones) GET /os-availability-zone; up or down
    # is judged when read, from heartbeat and down_after.
    """
    CREATE TABLE services (
        uuid TEXT PRIMARY KEY,
        cell TEXT NOT NULL,
        seq INTEGER NOT NULL,
        id INTEGER NOT NULL,              -- the row's id in its cell (the id below 2.53)
        host TEXT,
        "binary" TEXT,
        topic TEXT,                       -- 'compute': zoned by its host's aggregates
        disabled INTEGER NOT NULL,
        forced_down INTEGER NOT NULL,
        heartbeat TEXT,                   -- last_seen_up, else created_at
        down_after INTEGER NOT NULL,      -- seconds (service_down_time); 0: no liveness rule
        s_head TEXT NOT NULL,             -- '{"binary":..,"host":..' (open)
        s_id_v21 TEXT NOT NULL,           -- ',"id":<id>'
        s_id_v253 TEXT NOT NULL,          -- ',"id":"<uuid>"'
        s_status TEXT NOT NULL,           -- ',"status":"enabled"|"disabled"'
        s_updated_at TEXT NOT NULL,       -- its updated_at as JSON (os-services, zone detail)
        s_tail TEXT NOT NULL,             -- ',"disabled_reason":..'
        s_forced TEXT NOT NULL,           -- ',"forced_down":..' (2.11)
        entity_hash INTEGER NOT NULL,
        bucket INTEGER NOT NULL
    );
    CREATE INDEX services_cell_id ON services (cell, id);
    CREATE INDEX services_cell_bucket ON services (cell, bucket);
    """,
    # 16 (host aggregates: the aggregate kind): Nova's host aggregates
    # (replica.render.aggregate_row), GET /os-aggregates[/{id}]; and each host's zones
    # (aggregate_zones: the hosts of aggregates with an availability_zone), kept by
    # triggers on aggregates in the writer's transaction, for the services' zone (in
    # GET /os-services and GET /os-availability-zone).
    """
    CREATE TABLE aggregates (
        aggregate_key TEXT PRIMARY KEY,   -- the aggregate's id as text
        source TEXT NOT NULL,
        seq INTEGER NOT NULL,
        id INTEGER NOT NULL,
        uuid TEXT NOT NULL,
        hosts TEXT NOT NULL,              -- JSON array of host names
        availability_zone TEXT,
        a_doc_v21 TEXT NOT NULL,          -- the aggregate object
        a_doc_v241 TEXT NOT NULL,         -- ... with its uuid
        entity_hash INTEGER NOT NULL,
        bucket INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX aggregates_id ON aggregates (id);
    CREATE INDEX aggregates_source_bucket ON aggregates (source, bucket);
    CREATE TABLE aggregate_zones (
        host TEXT NOT NULL,
        zone TEXT NOT NULL,
        aggregate_key TEXT NOT NULL
    );
    CREATE INDEX aggregate_zones_host ON aggregate_zones (host, zone);
    CREATE INDEX aggregate_zones_aggregate ON aggregate_zones (aggregate_key);
    CREATE TRIGGER aggregate_zones_insert AFTER INSERT ON aggregates
        WHEN NEW.availability_zone IS NOT NULL
    BEGIN
        INSERT INTO aggregate_zones (host, zone, aggregate_key)
            SELECT value, NEW.availability_zone, NEW.aggregate_key FROM json_each(NEW.hosts);
    END;
    CREATE TRIGGER aggregate_zones_delete AFTER DELETE ON aggregates
    BEGIN
        DELETE FROM aggregate_zones WHERE aggregate_key = OLD.aggregate_key;
    END;
    CREATE TRIGGER aggregate_zones_update AFTER UPDATE ON aggregates
        WHEN OLD.hosts IS NOT NEW.hosts
            OR OLD.availability_zone IS NOT NEW.availability_zone
            OR OLD.aggregate_key IS NOT NEW.aggregate_key
    BEGIN
        DELETE FROM aggregate_zones WHERE aggregate_key = OLD.aggregate_key;
        INSERT INTO aggregate_zones (host, zone, aggregate_key)
            SELECT value, NEW.availability_zone, NEW.aggregate_key FROM json_each(NEW.hosts)
            WHERE NEW.availability_zone IS NOT NULL;
    END;
    """,
    # 17 (server groups): the API database's server groups (replica.render.server_group_row):
    # their documents around the members, which a read filters (not deleted servers).
    """
    CREATE TABLE server_groups (
        group_key TEXT PRIMARY KEY,       -- the group's uuid
        source TEXT NOT NULL,
        seq INTEGER NOT NULL,
        id INTEGER NOT NULL,              -- Nova's id: the list's order
        project_id TEXT,
        members TEXT NOT NULL,            -- JSON array of instance uuids, by member row
        sg_head_v21 TEXT NOT NULL,        -- '{"id":..,"name":..,"policies":[..],"metadata":{}'
        sg_head_v264 TEXT NOT NULL,       -- '{"id":..,"name":..,"policy":..,"rules":{..}'
        sg_tail_v213 TEXT NOT NULL,       -- ',"project_id":..,"user_id":..}'
        entity_hash INTEGER NOT NULL,
        bucket INTEGER NOT NULL
    );
    CREATE INDEX server_groups_project ON server_groups (project_id, id);
    CREATE INDEX server_groups_order ON server_groups (id);
    CREATE INDEX server_groups_source_bucket ON server_groups (source, bucket);
    """,
    # 18: the ip / ip6 filters match fixed addresses only (render version 3): the rows
    # whose addresses hold a floating one keep their fixed ones, read back out of the
    # addresses view they store (a building server's from addresses_building; one
    # written before step 3 holds none and keeps its ips until it changes).
    """
    UPDATE servers SET ips = coalesce((
        SELECT group_concat(json_extract(a.value, '$.addr'), ' ')
        FROM json_each(coalesce(addresses_building,
                                json_extract(d_base || '}', '$.addresses'))) AS n,
             json_each(n.value) AS a
        WHERE json_extract(a.value, '$."OS-EXT-IPS:type"') = 'fixed'), '')
    WHERE instr(coalesce(addresses_building, d_base), '"OS-EXT-IPS:type":"floating"') > 0
      AND NOT (vm_state = 'building' AND addresses_building IS NULL);
    """,
)


class ReplicaTooNew(RuntimeError):
    """The replica's schema is past this build's: a newer release wrote it."""


def user_version(conn: apsw.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchall()[0][0]


def migrate(conn: apsw.Connection) -> int:
    """Apply the steps this database has not seen yet; return the new user_version."""
    current = user_version(conn)
    if current > len(STEPS):
        raise ReplicaTooNew(f"replica database is at schema {current}, newer than this "
                            f"build ({len(STEPS)}): use a newer appliance or a new data dir")
    for number, ddl in enumerate(STEPS[current:], start=current + 1):
        with conn:
            conn.execute(ddl)
            conn.execute(f"PRAGMA user_version = {number}")
    return len(STEPS)
