"""GET /os-server-groups and /os-server-groups/{id} parameters (Nova's server groups
controller and its query schemas): the list's ``all_projects`` (an admin's: any value),
``limit`` and ``offset`` (non-negative integers, every value checked, the last one
counts; a limit of 0 or above the maximum is the maximum), nothing else from 2.75; the
show takes nothing from 2.102."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.api import params as P

INDEX_STRICT_MINOR = 75
INDEX_SCHEMA = frozenset(("all_projects", "limit", "offset"))


@dataclass(slots=True)
class ServerGroupQuery:
    all_projects: bool = False
    limit: int = 0
    offset: int = 0


def _non_negative(multi: dict, name: str) -> int | None:
    P.check_limit(multi, name)
    values = multi.get(name, ())
    return int(values[-1]) if values else None


def server_group_query(multi: dict, minor: int, max_limit: int) -> ServerGroupQuery:
    """The list's query."""
    limit = _non_negative(multi, "limit")       # the schema's properties, in its order,
    offset = _non_negative(multi, "offset")     # then the others
    if minor >= INDEX_STRICT_MINOR:
        P.additional_properties(multi, INDEX_SCHEMA, pattern_underscore=False)
    return ServerGroupQuery(all_projects="all_projects" in multi,
                            limit=min(max_limit, limit or max_limit), offset=offset or 0)


def check_show_query(multi: dict, minor: int) -> None:
    if minor >= P.STRICT_QUERY_MINOR:
        P.additional_properties(multi, P.NO_PARAMETERS, pattern_underscore=False)
