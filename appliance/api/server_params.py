"""GET /servers and /servers/detail parameters -> a ``ServerQuery``, as Nova's servers
controller, query schemas and compute API treat them (which filters a project member
may use per microversion, which are exact and which are regexes, status to vm/task
states, changes-since/before, tags, all_tenants, sort keys, limit and marker)."""

from __future__ import annotations

from appliance.api import params as P
from appliance.api.faults import ApiError, bad_request
from appliance.api.identity import Identity
from replica import render
from replica.store.reader import SERVER_SORT_COLUMNS, ServerQuery

TAG_FILTERS = ("tags", "tags-any", "not-tags", "not-tags-any")
JOINED_TABLE_PARAMS = ("block_device_mapping", "services", "metadata", "system_metadata",
                       "info_cache", "security_groups", "pci_devices")
PAGING_SORTING = ("sort_key", "sort_dir", "limit", "marker")

IGNORED_SORT_KEYS = (
    "architecture", "cell_name", "cleaned", "default_ephemeral_device",
    "default_swap_device", "deleted", "deleted_at", "disable_terminate", "ephemeral_gb",
    "ephemeral_key_uuid", "id", "key_data", "launched_on", "locked", "memory_mb", "os_type",
    "reservation_id", "root_gb", "shutdown_terminate", "user_data", "vcpus", "vm_mode")
IGNORED_SORT_KEYS_V273 = tuple(k for k in IGNORED_SORT_KEYS if k != "locked")
BASE_SORT_KEYS = (
    "access_ip_v4", "access_ip_v6", "auto_disk_config", "availability_zone", "config_drive",
    "created_at", "display_description", "display_name", "host", "hostname", "image_ref",
    "instance_type_id", "kernel_id", "key_name", "launch_index", "launched_at", "locked_by",
    "node", "power_state", "progress", "project_id", "ramdisk_id", "root_device_name",
    "task_state", "terminated_at", "updated_at", "user_id", "uuid", "vm_state")
ADMIN_SORT_KEYS = ("host", "node")

# Properties of Nova's index_query schema (2.1); the regex ones are format-checked.
REGEX_PARAMS = (
    "kernel_id", "ramdisk_id", "hostname", "key_name", "power_state", "node", "flavor",
    "reservation_id", "launched_at", "terminated_at", "availability_zone", "name",
    "display_name", "description", "display_description", "locked_by", "root_device_name",
    "config_drive", "access_ip_v4", "access_ip_v6", "auto_disk_config", "progress", "ip",
    "ip6", "created_at")
PLAIN_PARAMS = (
    "user_id", "project_id", "tenant_id", "launch_index", "image_ref", "image", "vm_state",
    "task_state", "host", "uuid", "sort_key", "sort_dir", "all_tenants", "soft_deleted",
    "deleted", "status", "changes-since", "limit", "marker")
# The properties in the order of Nova's schemas (index_query, then what 2.26, 2.66 and
# 2.73 add): jsonschema checks them in this order and reports the first that fails.
SCHEMA_ORDER_V21 = (
    "user_id", "project_id", "tenant_id", "launch_index", "image_ref", "image", "kernel_id",
    "ramdisk_id", "hostname", "key_name", "power_state", "vm_state", "task_state", "host",
    "node", "flavor", "reservation_id", "launched_at", "terminated_at", "availability_zone",
    "name", "display_name", "description", "display_description", "locked_by", "uuid",
    "root_device_name", "config_drive", "access_ip_v4", "access_ip_v6", "auto_disk_config",
    "progress", "sort_key", "sort_dir", "all_tenants", "soft_deleted", "deleted", "status",
    "changes-since", "ip", "ip6", "created_at", *JOINED_TABLE_PARAMS, "limit", "marker")
SCHEMA_V21 = frozenset(SCHEMA_ORDER_V21)
if SCHEMA_V21 != frozenset(REGEX_PARAMS + PLAIN_PARAMS + JOINED_TABLE_PARAMS):
    raise AssertionError("SCHEMA_ORDER_V21 does not name the schema's properties")
_FORMAT_REGEX = frozenset(REGEX_PARAMS + TAG_FILTERS)    # format-checked: 'regex'

# Filter -> column: exact matches (Nova's exact_match_filter_names), then regexes.
EXACT_COLUMNS = {"project_id": "project_id", "tenant_id": "project_id",
                 "user_id": "user_id", "image": "image_ref", "image_ref": "image_ref",
                 "vm_state": "vm_state", "task_state": "task_state", "uuid": "uuid",
                 "host": "host", "flavor": "flavor_id"}
# (not "description": Nova's schema takes it, but its database filter looks for an
# Instance attribute of that name, finds none and passes it by: it filters nothing)
REGEX_COLUMNS = {"name": "display_name", "display_name": "display_name",
                 "display_description": "display_description", "hostname": "hostname",
                 "key_name": "key_name", "node": "node", "reservation_id": "reservation_id",
                 "availability_zone": "availability_zone", "kernel_id": "kernel_id",
                 "ramdisk_id": "ramdisk_id", "root_device_name": "root_device_name",
                 "config_drive": "config_drive", "access_ip_v4": "access_ip_v4",
                 "access_ip_v6": "access_ip_v6", "locked_by": "locked_by",
                 "launched_at": "launched_at", "terminated_at": "terminated_at",
                 "created_at": "created_at", "power_state": "power_state",
                 "progress": "progress", "auto_disk_config": "auto_disk_config",
                 "launch_index": "launch_index"}


def member_filters(minor: int) -> frozenset:
    """Filters a project member may use (servers controller _get_server_search_options)."""
    opts = ["reservation_id", "name", "status", "image", "flavor", "ip", "changes-since",
            "all_tenants"]
    if minor >= 5:
        opts.append("ip6")
    if minor >= 26:
        opts += TAG_FILTERS
    if minor >= 66:
        opts.append("changes-before")
    if minor >= 73:
        opts.append("locked")
    if minor >= 83:
        opts += ["availability_zone", "config_drive", "key_name", "created_at", "launched_at",
                 "terminated_at", "power_state", "task_state", "vm_state", "progress",
                 "user_id"]
    if minor >= 90:
        opts.append("hostname")
    return frozenset(opts)


def schema_order(minor: int) -> tuple[str, ...]:
    """The properties of Nova's query schema at ``minor``, in the schema's order."""
    order = SCHEMA_ORDER_V21
    if minor >= 26:
        order += TAG_FILTERS
    if minor >= 66:
        order += ("changes-before",)
    if minor >= 73:
        order += ("locked",)
    return order


def schema_properties(minor: int) -> frozenset:
    return frozenset(schema_order(minor))


def valid_sort_keys(minor: int) -> tuple[str, ...]:
    if minor >= 75:
        return BASE_SORT_KEYS + ("locked",)
    if minor >= 73:
        return ("locked",) + BASE_SORT_KEYS + IGNORED_SORT_KEYS_V273
    return BASE_SORT_KEYS + IGNORED_SORT_KEYS


def _validate(multi: dict, minor: int) -> None:
    """Nova's query schema for GET /servers at this microversion: the properties' checks,
    then additionalProperties (from 2.75), in jsonschema's order."""
    for name in schema_order(minor):
        if name not in multi:
            continue
        if name == "limit":
            P.check_limit(multi)
        elif name == "sort_key":
            P.check_enum(multi, name, valid_sort_keys(minor))
        elif name in ("changes-since", "changes-before"):
            P.check_datetime(multi, (name,))
        elif name in _FORMAT_REGEX:
            P.check_regex(multi, (name,))
    if minor >= 75:
        P.additional_properties(multi, schema_properties(minor), pattern_underscore=True)



class _BadSortDirections(Exception):
    """The sort directions Nova's database layer refuses (process_sort_params)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _sort(multi: dict, minor: int, identity: Identity) -> tuple[tuple[str, str], ...]:
    keys = [k.strip() for k in multi.get("sort_key", ())] or ["created_at"]
    dirs = [d.strip() for d in multi.get("sort_dir", ())] or ["desc"]
    ignored = IGNORED_SORT_KEYS_V273 if minor >= 73 else IGNORED_SORT_KEYS
    kept_keys, kept_dirs = [], list(dirs)
    for i, key in enumerate(keys):
        if key in ignored:
            # Nova drops these keys silently, with their direction when one was given.
            position = len(kept_keys)
            if len(kept_dirs) > position:
                kept_dirs.pop(position)
            continue
        if key in ADMIN_SORT_KEYS and not identity.admin:
            raise ApiError(403, f"Only administrators can sort servers by {key}")
        kept_keys.append(key)
    for d in kept_dirs:
        if d not in ("asc", "desc"):
            raise _BadSortDirections("Invalid input received: Unknown sort direction, must "
                                     "be 'desc' or 'asc'")
    if len(kept_dirs) > len(kept_keys):
        raise _BadSortDirections("Invalid input received: Sort direction size exceeds sort "
                                 "key size")
    # Nova's order across cells (InstanceSortContext): no key left means its default,
    # created_at then the cell's id, descending (the id is not replicated: the uuid
    # decides); then the uuid ascending unless asked for, its "asc" appended to the
    # directions, which pair with the keys in order; a key still without one gets the
    # first direction (as Nova's database query pads them).
    if not kept_keys:
        kept_keys, kept_dirs = ["created_at"], ["desc"]
    if "uuid" not in kept_keys:
        kept_keys.append("uuid")
        kept_dirs.append("asc")
    while len(kept_dirs) < len(kept_keys):
        kept_dirs.append(kept_dirs[0])
    sort = []
    for key, direction in zip(kept_keys, kept_dirs):
        column = SERVER_SORT_COLUMNS[key]
        if column not in (c for c, _ in sort):
            sort.append((column, direction))
    return tuple(sort)


def server_query(multi: dict, minor: int, identity: Identity, detail: bool,
                 max_limit: int) -> ServerQuery:
    """Validate the parameters of a server listing and map them to a ServerQuery."""
    _validate(multi, minor)
    search = {k: v[-1] for k, v in multi.items()}
    if identity.admin:
        for key in PAGING_SORTING:
            search.pop(key, None)
        # Nova strips the parameters its query schema does not name (below 2.75, where
        # the schema lets them through; from 2.75 _validate refused them), and keeps
        # those its patternProperties match (a leading underscore: refused below).
        props = schema_properties(minor)
        search = {k: v for k, v in search.items() if k in props or k.startswith("_")}
    else:
        allowed = member_filters(minor)
        search = {k: v for k, v in search.items() if k in allowed}
    for key in search:
        if key in JOINED_TABLE_PARAMS or key.startswith("_"):
            raise bad_request(f"Invalid filter field: {key}.")

    query = ServerQuery()
    search.pop("status", None)
    if "status" in multi:
        vm_states, task_states = render.states_for_statuses(multi["status"])
        if not vm_states and not task_states:
            if minor >= 38:
                raise bad_request("Invalid status value")
            # Nova answers [] there and then: no other parameter is looked at.
            query.nothing = True
            return query
        search["vm_state"] = tuple(vm_states)
        if "default" not in task_states:
            search["task_state"] = tuple(task_states)

    since = before = None
    if "changes-since" in search:
        since = P.parse_isotime(search["changes-since"])
        if since is None:
            raise bad_request("Invalid filter field: changes-since.")
        query.changes_since = P.stored_stamp(since)
    if "changes-before" in search:
        before = P.parse_isotime(search["changes-before"])
        if before is None:
            raise bad_request("Invalid filter field: changes-before.")
        if since is not None and before < since:
            raise bad_request("The value of changes-since must be less than or equal to "
                              "changes-before.")
        query.changes_before = P.stored_stamp(before)

    if "deleted" not in search:
        query.deleted = None if (since or before) else False
    else:
        query.deleted = P.bool_from_string(search["deleted"], default=False)
    if "soft_deleted" in search:
        query.soft_deleted = P.bool_from_string(search["soft_deleted"], default=False)
    if search.get("vm_state") == ("deleted",):
        if not identity.admin:
            raise ApiError(403, "Only administrators may list deleted instances")
        query.deleted = True

    if minor >= 26:
        query.tags = _tags(search, "tags")
        query.tags_any = _tags(search, "tags-any")
        query.not_tags = _tags(search, "not-tags")
        query.not_tags_any = _tags(search, "not-tags-any")

    all_tenants = False
    if "all_tenants" in search:
        value = search.pop("all_tenants")
        all_tenants = P.bool_from_string(value, strict=True) if value else True
    if "locked" in search:
        query.exact["locked"] = (int(P.bool_from_string(search.pop("locked"), strict=True)),)

    if all_tenants:
        if not identity.admin:
            action = "detail" if detail else "index"
            raise ApiError(403, f"Policy doesn't allow os_compute_api:servers:{action}:"
                                f"get_all_tenants to be performed.")
        query.project_id = None
    else:
        # Without all_tenants Nova ignores tenant_id and scopes to the caller's project.
        search.pop("tenant_id", None)
        search.pop("project_id", None)
        query.project_id = identity.project_id

    for name, value in search.items():
        column = EXACT_COLUMNS.get(name)
        if column is not None:
            query.exact[column] = value if isinstance(value, tuple) else (value,)
            continue
        column = REGEX_COLUMNS.get(name)
        if column is not None:
            query.regex[column] = value
    # Nova asks Neutron for the ports with a fixed address holding each of ip and ip6
    # (ip_address_substr) and lists the servers of either answer.
    query.ips = tuple(search[k] for k in ("ip", "ip6") if k in search and search[k])

    limit = max_limit
    if "limit" in multi:
        limit = min(max_limit, P.int_param(multi["limit"][-1], "limit"))
    query.limit = limit
    if limit == 0:
        query.nothing = True
    # An empty marker is no marker (Nova's listings test it for truth).
    query.marker = (multi["marker"][-1] or None) if "marker" in multi else None
    # Nova looks an admin's marker up elevated; anyone else's is their project's only.
    query.marker_project = None if identity.admin else identity.project_id
    try:
        query.sort = _sort(multi, minor, identity)
    except _BadSortDirections as bad:
        # Nova's database layer refuses such directions. Its build requests are sorted
        # first, in nova-api, and their refusal is the 400; where it asks none (ip or ip6
        # without a marker, a limit of 0, deleted servers), only the cells' queries
        # refuse them, and a cell's failure leaves that cell out of the list: [].
        if not query.nothing and query.deleted is not True and (
                not query.ips or "marker" in multi):
            if "flavor_id" not in query.exact:
                raise bad_request(bad.message) from None
            query.refusal = bad.message         # unless the flavor is not found: []
        else:
            query.nothing = True
    return query


def _tags(search: dict, name: str) -> tuple[str, ...]:
    value = search.get(name)
    if value is None:
        return ()
    return tuple(value.split(","))
