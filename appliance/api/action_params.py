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
SCHEMA_V258 = frozenset(("limit", "marker", "changes-since"))
SCHEMA_V266 = SCHEMA_V258 | {"changes-before"}


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
    allowed = SCHEMA_V266 if minor >= CHANGES_BEFORE_MINOR else SCHEMA_V258
    P.additional_properties(multi, allowed, pattern_underscore=False)
    for name in allowed:
        _single(multi, name)
    P.check_limit(multi)
    P.check_datetime(multi, [n for n in ("changes-since", "changes-before") if n in multi])
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
