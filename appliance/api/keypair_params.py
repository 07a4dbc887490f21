"""GET /os-keypairs and /os-keypairs/{name} parameters (Nova's keypairs controller and
its query schemas: anything before 2.10 (ignored); ``user_id`` from 2.10 (an admin's
way to read another user's key pairs, the first value counts); ``limit`` and
``marker`` from 2.35; from 2.75 nothing else)."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.api import params as P

TYPE_MINOR = 2                # the key pair's type
USER_ID_MINOR = 10
PAGING_MINOR = 35
STRICT_MINOR = 75
INDEX_SCHEMA = frozenset(("user_id", "limit", "marker"))
SHOW_SCHEMA = frozenset(("user_id",))


@dataclass(slots=True)
class KeypairQuery:
    user_id: str | None = None          # asked for (None: the caller's own)
    limit: int | None = None            # None: every key pair (before 2.35)
    marker: str | None = None


def keypair_query(multi: dict, minor: int, max_limit: int, show: bool) -> KeypairQuery:
    query = KeypairQuery()
    paged = not show and minor >= PAGING_MINOR
    if paged:
        P.check_limit(multi)        # the schema's properties first, then the others
    if minor >= STRICT_MINOR:
        P.additional_properties(multi, SHOW_SCHEMA if show else INDEX_SCHEMA,
                                pattern_underscore=False)
    if minor >= USER_ID_MINOR and "user_id" in multi:
        query.user_id = multi["user_id"][0]
    if paged:
        query.limit = max_limit
        if "limit" in multi:
            query.limit = min(max_limit, P.int_param(multi["limit"][-1], "limit"))
        query.marker = multi["marker"][-1] if "marker" in multi else None
    return query
