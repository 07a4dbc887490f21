"""GET /flavors and /flavors/detail parameters -> a ``FlavorQuery`` (Nova's flavors
controller and its index_query schema)."""

from __future__ import annotations

from appliance.api import params as P
from appliance.api.faults import ApiError, bad_request
from appliance.api.identity import Identity
from replica.store.reader import FLAVOR_SORT_COLUMNS, FlavorQuery

SORT_KEYS = ("created_at", "description", "disabled", "ephemeral_gb", "flavorid", "id",
             "is_public", "memory_mb", "name", "root_gb", "rxtx_factor", "swap", "updated_at",
             "vcpu_weight", "vcpus")
SORT_KEYS_V2102 = tuple(k for k in SORT_KEYS if k != "rxtx_factor")
SORT_DIRS = ("asc", "desc")
SCHEMA = frozenset(("limit", "marker", "is_public", "minRam", "minDisk", "sort_key",
                    "sort_dir"))
SCHEMA_V2102 = SCHEMA | {"name"}
NAME_FILTER_MINOR = 102       # the name filter (a regex) and no rxtx_factor sort key


def schema_names(minor: int) -> frozenset:
    """The parameters Nova's flavor list query schema names at ``minor`` (below 2.75 it
    drops the others from the request, and so from its next link)."""
    return SCHEMA_V2102 if minor >= NAME_FILTER_MINOR else SCHEMA


def _parse_is_public(value: str | None) -> bool | None:
    if value is None:
        return True
    if value.lower() == "none":
        return None
    try:
        return P.bool_from_string(value, strict=True)
    except ApiError:
        raise bad_request(f"Invalid is_public filter [{value}]") from None


def _int_filter(multi: dict, name: str) -> int | None:
    if name not in multi:
        return None
    value = multi[name][-1]
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"Invalid {name} filter [{value}]") from None


def flavor_query(multi: dict, minor: int, identity: Identity, max_limit: int) -> FlavorQuery:
    # Nova's index_query schemas: the properties' checks come first, then
    # additionalProperties (from 2.75); below 2.75 unknown parameters are dropped.
    v2102 = minor >= NAME_FILTER_MINOR
    P.check_limit(multi)
    P.check_enum(multi, "sort_key", SORT_KEYS_V2102 if v2102 else SORT_KEYS)
    P.check_enum(multi, "sort_dir", SORT_DIRS)
    if minor >= 75:
        P.additional_properties(multi, schema_names(minor), pattern_underscore=False)
    sort_key = (multi.get("sort_key") or [""])[-1] or "flavorid"
    sort_dir = (multi.get("sort_dir") or [""])[-1] or "asc"
    column = FLAVOR_SORT_COLUMNS[sort_key]
    sort = ((column, sort_dir),) if column == "flavorid" else (
        (column, sort_dir), ("flavorid", sort_dir))
    query = FlavorQuery(project_id=identity.project_id, admin=identity.admin, sort=sort)
    if identity.admin:
        query.is_public = _parse_is_public((multi.get("is_public") or [None])[-1])
    query.min_ram = _int_filter(multi, "minRam")
    query.min_disk = _int_filter(multi, "minDisk")
    if v2102 and "name" in multi:
        query.name = multi["name"][-1]        # a regex, as Nova's flavor DB query takes it
    query.limit = (min(max_limit, P.int_param(multi["limit"][-1], "limit")) if "limit" in multi
                   else max_limit)
    query.marker = multi["marker"][-1] if "marker" in multi else None
    return query
