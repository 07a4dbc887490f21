"""GET /servers/{id}/os-instance-actions parameters (Nova's instance actions
controller and its index_query schemas: none before 2.58; limit, marker and
changes-since from 2.58, changes-before from 2.66, each given once, nothing else)."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.api import params as P
from appliance.api.faults import bad_request

PAGING_MINOR = 58             # limit, marker, changes-since, updated_at, links
CHANGES_BEFORE_MINOR = 66
DELETED_SERVERS_MINOR = 21    # the actions of a deleted server are shown from 2.21
EVENTS_MINOR = 51             # a project's reader sees the events (without traceback)
# The schemas' properties in their order (jsonschema checks them so, then the others)
ORDER_V258 = ("limit", "marker", "changes-since")
ORDER_V266 = ORDER_V258 + ("changes-before",)
SCHEMA_V258 = frozenset(ORDER_V258)
SCHEMA_V266 = frozenset(ORDER_V266)


@dataclass(slots=True)
class ActionQuery:
    limit: int | None = None              # None: every action (before 2.58)
    marker: str | None = None
    changes_since: str | None = None      # stored stamps
    changes_before: str | None = None


def _single(multi: dict, name: str) -> None:
    values = multi.get(name, ())
    if len(values) > 1:
        raise P.invalid_query(name, repr(values), f"{values!r} is too long")


def action_query(multi: dict, minor: int, max_limit: int) -> ActionQuery:
    query = ActionQuery()
    if minor < PAGING_MINOR:
        return query          # Nova's schema accepts and ignores any parameter
    order = ORDER_V266 if minor >= CHANGES_BEFORE_MINOR else ORDER_V258
    for name in order:
        if name == "limit":
            P.check_limit(multi)
        elif name in ("changes-since", "changes-before"):
            P.check_datetime(multi, (name,))
        _single(multi, name)            # each a single_param: its items, then maxItems
    P.additional_properties(multi, frozenset(order), pattern_underscore=False)
    since = before = None
    if "changes-since" in multi:
        since = P.parse_isotime(multi["changes-since"][-1])
        query.changes_since = P.stored_stamp(since)
    if "changes-before" in multi:
        before = P.parse_isotime(multi["changes-before"][-1])
        if since is not None and before < since:
            raise bad_request("The value of changes-since must be less than or equal to "
                              "changes-before.")
        query.changes_before = P.stored_stamp(before)
    query.limit = max_limit
    if "limit" in multi:
        query.limit = min(max_limit, P.int_param(multi["limit"][-1], "limit"))
    query.marker = multi["marker"][-1] if "marker" in multi else None
    return query
