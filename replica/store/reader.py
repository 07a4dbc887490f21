"""The API's named queries: each read is ONE SQL statement that returns the response
body ready to send.

Documents are stored as fragments (``replica.render``); a view's SQL expression
concatenates (``concat()``, one pass) the stored fragments it needs and builds the few
that hold links around the request's prefixes, all inside SQLite: no JSON function and
no per-row Python. Flavor documents carry link tokens that ``replace()`` substitutes
(flavor lists are short). The same statement also returns the replica position that
answered (every feed's seq) and, for a list, whether the marker exists, so a request
never needs a second statement. A list statement returns one row per document and a
trailer row; the page is joined once in Python (``bytes.join``), not in SQLite. A reader
keeps the pages it built (``PAGE_CACHE_BYTES``) with the replica's data version: the
same statement asked again carries that version, and while nothing has been committed
since, its LIMIT is 0: one statement that reads no item, and the kept page is answered.
The whole-collection reads (services, zones, hypervisors, aggregates, key pairs, server
groups: one row, the body built inside SQLite) are kept the same way (``KeptStatement``):
their build sits behind a CASE that is skipped while the data version is unchanged and,
where the body shows a service's up/down, until the first moment one may flip, which the
statement that built the body computed with SQLite's own clock.

Filters: exact ones are ``IN`` lists on indexed or plain columns; a regex without
metacharacters is ``instr()``; a real regex calls the registered ``regexp()`` (Python's
``re.search``, once per candidate row, as oslo.db's SQLite REGEXP does for Nova); tags use
``json_each`` over the row's tag array.

A user's regex can backtrack for ever on one value (``(.*){30}x``), inside one call the
progress handler never sees. So a statement that calls ``regexp()`` runs under an
interval timer (``_MatchClock``): its signal, caught while a match runs, ends a match
that ran past ``MATCH_BUDGET_S`` (``RegexTooCostly``: a bomb costs the worker ~50 ms, not
the read deadline) or past the statement's deadline (``ReadTimeout``); ``re`` checks for
signals while it backtracks, and the exception aborts the statement. ``regexp()`` also
refuses to start a match past the deadline. The engine stays Nova's (a linear-time one
would refuse backreferences, which need a bound anyway, and read ``\\w``, ``\\s`` and ``$``
differently), so every pattern keeps its meaning.

Sub-resources (``SUBRESOURCE_SQL``: extra specs, server tags, metadata, ips) are one
statement over the parent's row by primary key; the ones that pick one member (or trim
the addresses to Nova's ips view) read it out of the stored fragment with SQLite's JSON
functions, over that one row.

Reader connections are read-only (``open_reader``), cached one per process (gevent:
``threading.local`` would be per greenlet) and every statement runs under a deadline
enforced by a progress handler. The API workers let the statements of a millisecond
share one read transaction (``Reader.hold_snapshots``).
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import time
import unicodedata
from dataclasses import dataclass, field

import apsw

from replica import feed, render
from replica.store.connection import READ_DEADLINE_VM_STEPS, open_reader

DEADLINE_S = 0.5                  # a reader statement never holds a worker's hub longer
REGEX_CACHE = 256                 # compiled filter patterns kept per process
MATCH_BUDGET_S = 0.05             # one regex match on one value (a normal one: microseconds)
MATCH_TICK_S = 0.01               # how often the timer looks while a regex statement runs

# Every feed's seq, in the order the feeds were first written (a cheap table scan). It is
# the last column of every statement; in a held snapshot (Reader.hold_snapshots) only the
# snapshot's first statement reads it, the others answer the same position.
POSITION_SQL = "(SELECT group_concat(cell || '=' || seq, ',') FROM positions)"
POSITIONS_SQL = "SELECT cell, epoch, seq FROM positions"
# Changes whenever another connection (ingest) has committed since this connection last
# read: what a kept list page is checked against (Reader's page cache).
DATA_VERSION_SQL = "(SELECT data_version FROM pragma_data_version)"
PAGE_CACHE_BYTES = 4 << 20        # list pages a reader keeps, per process


# The feeds that have been live once, newline-separated (schema step 4).
CELLS_LIVE_SQL = (f"SELECT (SELECT group_concat(cell, char(10)) FROM cells_live), "
                  f"{POSITION_SQL}")
# Soft-deleted servers per cell, as {"cell": count} JSON (admin status, not the API).
DELETED_SERVERS_SQL = ("SELECT (SELECT json_group_object(cell, n) FROM (SELECT cell, "
                       "count(*) AS n FROM servers WHERE deleted = 1 GROUP BY cell)), "
                       f"{POSITION_SQL}")


# -- whole answers kept while nothing changed ------------------------------------------
# A whole-collection read (services, zones, hypervisors, aggregates, key pairs, server
# groups) builds its body from every row inside SQLite. A reader keeps the answer it
# built with the data version it saw and, when the body depends on the clock (a
# service's up/down), the julian day until which it stays right; the same statement
# asked again carries both, and while neither has moved on, its CASE skips the whole
# build (a MATERIALIZED CTE referenced only inside the skipped branch is not computed
# either): one statement that reads no row of the collection.
KEPT_ANSWER_BYTES = 4 << 20       # whole answers a reader keeps, per process
# A flip moment is computed in julian days (double: ~40 us resolution today) from
# stamps SQLite rounds to the millisecond: an answer is built again this much before
# a moment at which one of its rows may flip, never after.
FLIP_MARGIN_DAYS = 0.002 / 86400.0


@dataclass(frozen=True, slots=True)
class KeptStatement:
    """One read whose answer a ``Reader`` keeps (``kept_statement``): ``sql`` returns one
    row ``(fresh, *answer, valid until, built at, data version, position)``; its own
    parameters are ?1..?``params``, then the kept answer's data version and, when
    ``timed``, the julian days it is valid until and was built at (NULL: none kept)."""

    sql: str
    params: int
    timed: bool


def kept_statement(ctes: str, answer: tuple[str, ...], params: int,
                   valid_until: str | None = None) -> KeptStatement:
    """``WITH ctes SELECT *answer`` as a ``KeptStatement``. ``valid_until``: an
    expression (evaluated only when the answer is built) of the julian day before which
    the answer stays right without a commit, NULL for ever; None: it does not depend on
    the clock. A timed answer is also built again when the clock reads before the moment
    it was built (set back)."""
    fresh = f"dv IS NOT ?{params + 1}"
    built_at = "NULL"
    if valid_until is not None:
        fresh += (f" OR coalesce(julianday('now') >= ?{params + 2}, 0)"
                  f" OR coalesce(julianday('now') < ?{params + 3}, 0)")
        built_at = "julianday('now')"
    columns = ", ".join(f"CASE WHEN k.fresh THEN {c} END" for c in answer)
    return KeptStatement(
        f"WITH {ctes}, kept AS MATERIALIZED (SELECT dv, ({fresh}) AS fresh FROM "
        f"(SELECT data_version AS dv FROM pragma_data_version)) "
        f"SELECT k.fresh, {columns}, CASE WHEN k.fresh THEN {valid_until or 'NULL'} END, "
        f"CASE WHEN k.fresh THEN {built_at} END, k.dv, {POSITION_SQL} FROM kept AS k",
        params, valid_until is not None)


@functools.lru_cache(maxsize=1024)
def _without_position(sql: str) -> str:
    return sql.replace(POSITION_SQL, "NULL")


# API sort key -> column (Nova's VALID_SORT_KEYS; instance_type_id is the flavor).
SERVER_SORT_COLUMNS = {
    "access_ip_v4": "access_ip_v4", "access_ip_v6": "access_ip_v6",
    "auto_disk_config": "auto_disk_config", "availability_zone": "availability_zone",
    "config_drive": "config_drive", "created_at": "created_at",
    "display_description": "display_description", "display_name": "display_name",
    "host": "host", "hostname": "hostname", "image_ref": "image_ref",
    "instance_type_id": "flavor_id", "kernel_id": "kernel_id", "key_name": "key_name",
    "launch_index": "launch_index", "launched_at": "launched_at", "locked_by": "locked_by",
    "node": "node", "power_state": "power_state", "progress": "progress",
    "project_id": "project_id", "ramdisk_id": "ramdisk_id",
    "root_device_name": "root_device_name", "task_state": "task_state",
    "terminated_at": "terminated_at", "updated_at": "updated_at", "user_id": "user_id",
    "uuid": "uuid", "vm_state": "vm_state", "locked": "locked",
}
# Flavors have no internal id or updated_at here: the closest stored order stands in.
FLAVOR_SORT_COLUMNS = {
    "created_at": "created_at", "description": "description", "disabled": "disabled",
    "ephemeral_gb": "ephemeral_gb", "flavorid": "flavorid", "id": "created_at",
    "is_public": "is_public", "memory_mb": "memory_mb", "name": "name", "root_gb": "root_gb",
    "rxtx_factor": "rxtx_factor", "swap": "swap", "updated_at": "created_at",
    "vcpu_weight": "vcpu_weight", "vcpus": "vcpus",
}
_NOT_NULL = frozenset({"uuid", "created_at", "project_id", "user_id", "locked", "flavorid",
                       "name", "memory_mb", "vcpus", "root_gb", "ephemeral_gb", "swap",
                       "rxtx_factor", "disabled", "is_public"})
# Columns a server filter may name (exact or regex); anything else is refused here.
SERVER_FILTER_COLUMNS = frozenset(render.SERVER_INDEXED) - {"ips", "tags"}


class ReadTimeout(RuntimeError):
    """A reader statement ran past its deadline and was interrupted."""


class RegexTooCostly(ValueError):
    """One regex match ran past ``MATCH_BUDGET_S`` on one value: the pattern backtracks
    catastrophically (the caller's error, not the replica's)."""


class _Overtime(Exception):
    """Raised inside ``regexp()`` past a bound: it aborts the statement (apsw raises it
    from ``execute``). ``costly``: one match ran past its budget."""

    def __init__(self, costly: bool):
        super().__init__(costly)
        self.costly = costly


@dataclass(frozen=True, slots=True)
class Prefixes:
    """The link prefixes of one request: ``self`` is scheme://host/v2.1[/project],
    ``bookmark`` is scheme://host[/project]."""

    self: str
    bookmark: str


@dataclass(slots=True)
class ReadResult:
    body: bytes | None            # None: not found
    position: str                 # "cell1=1234,cell2=877"
    elapsed_ms: float
    count: int = 0
    last_id: str | None = None
    marker_found: bool = True
    statements: int = 1


# Nova's order without a sort key: newest first, then the uuid (replica schema step 6)
DEFAULT_SERVER_SORT = (("created_at", "desc"), ("uuid", "asc"))


@dataclass(slots=True)
class ServerQuery:
    """A server listing, already validated and mapped to columns by the API."""

    project_id: str | None = None          # None: every project (admin all_tenants)
    exact: dict[str, tuple] = field(default_factory=dict)   # column IN values
    regex: dict[str, str] = field(default_factory=dict)     # column REGEXP pattern
    deleted: bool | None = False           # False: live, True: deleted, None: both
    soft_deleted: bool | None = None       # Nova's soft_deleted filter (None: default)
    changes_since: str | None = None       # stored-format stamps
    changes_before: str | None = None
    tags: tuple[str, ...] = ()
    tags_any: tuple[str, ...] = ()
    not_tags: tuple[str, ...] = ()
    not_tags_any: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()              # substrings of an address (ip, ip6)
    sort: tuple[tuple[str, str], ...] = DEFAULT_SERVER_SORT
    limit: int = 1000
    marker: str | None = None
    # the caller's project unless an admin: a marker must be one of its servers (None: any)
    marker_project: str | None = None
    nothing: bool = False                  # a filter that matches nothing (Nova: [])
    # An error Nova gives only when the flavor filter names a flavor the caller can see
    # (else it answers [] before it gets there): the statement lists nothing and its
    # trailer says, in place of the marker's, whether that flavor exists.
    refusal: str | None = None


@dataclass(slots=True)
class FlavorQuery:
    project_id: str | None = None          # the caller's project (access to private ones)
    admin: bool = False
    is_public: bool | None = True          # admin only; None: public and private
    min_ram: int | None = None
    min_disk: int | None = None
    name: str | None = None                # a regex on the name (2.102)
    sort: tuple[tuple[str, str], ...] = (("flavorid", "asc"),)
    limit: int = 1000
    marker: str | None = None


# ---------------------------------------------------------------------------
# SQL builders (pure; cached by shape)
# ---------------------------------------------------------------------------

# The server fragments that hold links, built around the request's prefixes (?2: self,
# ?4: bookmark) from columns that are safe inside a JSON string.
_SERVER_LINK_SQL = {
    "d_links": ("',\"links\":[{\"rel\":\"self\",\"href\":\"' || ?2 || '/servers/' || uuid || "
                "'\"},{\"rel\":\"bookmark\",\"href\":\"' || ?4 || '/servers/' || uuid || '\"}]'"),
    "d_flavor_v21": ("',\"flavor\":{\"id\":\"' || flavor_ref || '\",\"links\":[{\"rel\":"
                     "\"bookmark\",\"href\":\"' || ?4 || '/flavors/' || flavor_ref || '\"}]}'"),
    "d_image_v21": ("coalesce(',\"image\":{\"id\":\"' || image_ref_id || '\",\"links\":[{"
                    "\"rel\":\"bookmark\",\"href\":\"' || ?4 || '/images/' || image_ref_id || "
                    "'\"}]}', ',\"image\":\"\"')"),
    "d_image_v298": ("coalesce(',\"image\":{\"id\":\"' || image_ref_id || '\",\"links\":[{"
                     "\"rel\":\"bookmark\",\"href\":\"' || ?4 || '/images/' || image_ref_id || "
                     "'\"}],\"properties\":' || image_props || '}', ',\"image\":\"\"')"),
}
SERVER_BRIEF_SQL = "concat(brief, " + _SERVER_LINK_SQL["d_links"] + ", '}')"
# A server whose updated_at is unset (Nova buries a server in cell0 with one insert):
# Nova shows the time of the request as "updated". Its d_base holds the member as null
# (replica.render; "updated" lies between "user_id" and "OS-DCF:diskConfig", and no
# other member of d_base can hold a null under that name: metadata values are
# strings), replaced by the statement's own time; every other row is copied as it is.
UPDATED_UNSET = ',"updated":null,'
_SERVER_BASE_SQL = (f"CASE WHEN updated_at IS NULL THEN replace(d_base, '{UPDATED_UNSET}', "
                    "',\"updated\":\"' || strftime('%Y-%m-%dT%H:%M:%SZ', 'now') || '\",') "
                    "ELSE d_base END")


@functools.lru_cache(maxsize=None)
def server_doc_expr(view: render.ServerView) -> str:
    """The SQL of one server document for ``view``: stored fragments copied, link
    fragments built, no JSON function; replace() only for a server never updated."""
    parts = [_SERVER_BASE_SQL if p == "d_base" else _SERVER_LINK_SQL.get(p, p)
             for p in render.server_pieces_for(view)]
    # concat() builds the result in one pass; a chain of || copies it once per piece.
    return "concat(" + ", ".join(parts) + ", '}')"


@functools.lru_cache(maxsize=None)
def flavor_doc_expr(view: render.FlavorView) -> str:
    return "concat(" + ", ".join(render.flavor_pieces_for(view)) + ", '}')"


def _with_prefixes(expr: str) -> str:
    # Flavor fragments hold link tokens: ?1/?2 self token/prefix, ?3/?4 bookmark.
    return f"replace(replace({expr}, ?1, ?2), ?3, ?4)"


@functools.lru_cache(maxsize=None)
def show_server_sql(view: render.ServerView, scoped: bool) -> str:
    # max() makes it an aggregate: one row even when the server is missing, so the
    # position still comes back (cheaper than a LEFT JOIN from a constant row).
    scope = " AND project_id = ?6" if scoped else ""
    return (f"SELECT max(CAST({server_doc_expr(view)} AS BLOB)), {POSITION_SQL} "
            f"FROM servers WHERE uuid = ?5 AND deleted = 0{scope}")


@functools.lru_cache(maxsize=None)
def show_flavor_sql(view: render.FlavorView, scoped: bool) -> str:
    scope = (" AND (is_public = 1 OR EXISTS (SELECT 1 FROM json_each(flavors.projects) "
             "WHERE value = ?6))") if scoped else ""
    return (f"SELECT max(CAST({_with_prefixes(flavor_doc_expr(view))} AS BLOB)), "
            f"{POSITION_SQL} FROM flavors WHERE flavorid = ?5{scope}")


# -- sub-resources of one flavor or server ------------------------------------------
# Each is ONE statement over one row found by its primary key: ?1 the flavor or server
# id, ?2 the caller's project (NULL: any, an admin), ?3 the item's key. Every statement
# returns (parent found, body or NULL, position): max() keeps it one row when the parent
# is missing, so the position still comes back.

_FLAVOR_ACCESS = ("(?2 IS NULL OR is_public = 1 OR EXISTS (SELECT 1 FROM "
                  "json_each(flavors.projects) WHERE value = ?2))")
_SERVER_ACCESS = "deleted = 0 AND (?2 IS NULL OR project_id = ?2)"
# f_extra_specs is ',"extra_specs":{...}' (replica.render.flavor_row).
_EXTRA_SPECS_MEMBER = ',"extra_specs":'
_EXTRA_SPECS = f"substr(f_extra_specs, {len(_EXTRA_SPECS_MEMBER) + 1})"
# d_base opens the server's base object without closing it (replica.render.server_row).
_BASE = "(d_base || '}')"
# A json_each row's value as JSON (json_each gives true / false as 1 / 0).
_EACH_VALUE = ("CASE type WHEN 'true' THEN json('true') WHEN 'false' THEN json('false') "
               "ELSE value END")
# The addresses the ips view shows: the server view's, or a building server's own
# (replica.render.IPS_COLUMNS).
_ADDRESSES = f"coalesce(addresses_building, json_extract({_BASE}, '$.addresses'))"
# Nova's ips view of one network's addresses: version and addr only (no OS-EXT-IPS*).
_NETWORK_IPS = ("json((SELECT json_group_array(json_object('version', "
                "json_extract(a.value, '$.version'), 'addr', json_extract(a.value, '$.addr'))) "
                "FROM json_each(n.value) AS a))")


def _sub_sql(table: str, key: str, access: str, body: str, unknown: int | None = None
             ) -> str:
    """(count, body, position); ``unknown``: the count when no row has the key at all
    (else 0, as when the caller may not see it)."""
    found = "count(*)"
    if unknown is not None:
        found = (f"CASE WHEN count(*) > 0 THEN count(*) WHEN EXISTS (SELECT 1 FROM {table} "
                 f"WHERE {key} = ?1) THEN 0 ELSE {unknown} END")
    return (f"SELECT {found}, max(CAST({body} AS BLOB)), {POSITION_SQL} "
            f"FROM {table} WHERE {key} = ?1 AND {access}")


UNKNOWN_SERVER = -1     # a sub-resource's count: no server of that uuid at all


SUBRESOURCE_SQL = {
    # GET /flavors/{id}/os-extra_specs: the stored member as its own object.
    "extra_specs": _sub_sql("flavors", "flavorid", _FLAVOR_ACCESS,
                            "'{' || substr(f_extra_specs, 2) || '}'"),
    "extra_spec": _sub_sql("flavors", "flavorid", _FLAVOR_ACCESS,
                           f"(SELECT json_object(key, {_EACH_VALUE}) FROM "
                           f"json_each({_EXTRA_SPECS}) WHERE key = ?3)"),
    # GET /flavors/{id}/os-flavor-access (admins only: any flavor): the projects of a
    # private flavor; NULL for a public one (Nova: no access list).
    "flavor_access": _sub_sql("flavors", "flavorid", "?2 IS NULL",
                              "CASE WHEN is_public = 0 THEN '{\"flavor_access\":' || "
                              "(SELECT json_group_array(json_object('flavor_id', flavorid, "
                              "'tenant_id', value)) FROM json_each(flavors.projects)) || '}' "
                              "END"),
    # A build request (in_cell = 0) has no tags resource in nova-api: 404.
    # nova-api finds tags through the server's cell mapping: a server it has none of
    # (UNKNOWN_SERVER) is "no mapping", one it may not see or that is deleted "not found".
    "tags": _sub_sql("servers", "uuid", _SERVER_ACCESS + " AND in_cell = 1",
                     "'{\"tags\":' || tags || '}'", UNKNOWN_SERVER),
    # '' when the tag exists (204), NULL when not.
    "tag": _sub_sql("servers", "uuid", _SERVER_ACCESS + " AND in_cell = 1",
                    "(SELECT '' FROM json_each(servers.tags) WHERE value = ?3 LIMIT 1)",
                    UNKNOWN_SERVER),
    # nova-api reads a server's metadata from the cell database without targeting the
    # server's cell (compute API get_instance_metadata): a build request, in no cell
    # yet, has none there: {} and no key (its own metadata shows in the server view).
    "metadata": _sub_sql("servers", "uuid", _SERVER_ACCESS,
                         "CASE WHEN in_cell = 0 THEN '{\"metadata\":{}}' ELSE "
                         f"'{{\"metadata\":' || json_extract({_BASE}, '$.metadata') || '}}' "
                         "END"),
    "meta": _sub_sql("servers", "uuid", _SERVER_ACCESS,
                     f"(SELECT '{{\"meta\":' || json_object(key, {_EACH_VALUE}) || '}}' "
                     f"FROM json_each({_BASE}, '$.metadata') WHERE key = ?3 "
                     "AND servers.in_cell = 1)"),
    "ips": _sub_sql("servers", "uuid", _SERVER_ACCESS,
                    f"'{{\"addresses\":' || (SELECT json_group_object(n.key, {_NETWORK_IPS}) "
                    f"FROM json_each({_ADDRESSES}) AS n) || '}}'"),
    "network": _sub_sql("servers", "uuid", _SERVER_ACCESS,
                        f"(SELECT json_object(n.key, {_NETWORK_IPS}) "
                        f"FROM json_each({_ADDRESSES}) AS n WHERE n.key = ?3)"),
}


# -- instance actions of one server ----------------------------------------------------
# ?1 the server's uuid, ?2 the caller's project (NULL: an admin), ?3 1 when a deleted
# server's actions are shown (2.21+). Every statement returns first whether the server
# is visible (Nova looks the instance up before the actions), so one statement answers
# the 404s too. Nova orders actions newest first: (created_at, id) descending.

_ACTION_SERVER = ("(SELECT count(*) FROM servers WHERE uuid = ?1 AND (?2 IS NULL OR "
                  "project_id = ?2) AND (?3 OR deleted = 0))")
_ACTION_ORDER = "ORDER BY created_at DESC, action_id DESC"


@functools.lru_cache(maxsize=16)
def show_instance_action_sql(view: render.InstanceActionView) -> str:
    """?4 the request id. Returns (server visible, body or NULL, position)."""
    events = render.instance_action_events_column(view)
    body = "'{\"instanceAction\":{' || a_v21"
    if view.minor >= 58:
        body += " || a_updated"
    if events is not None:
        body += f" || ',\"events\":' || {events}"
    body += " || '}}'"
    return (f"SELECT {_ACTION_SERVER}, (SELECT CAST({body} AS BLOB) FROM instance_actions "
            f"WHERE instance_uuid = ?1 AND request_id = ?4 AND deleted = 0 {_ACTION_ORDER} "
            f"LIMIT 1), {POSITION_SQL}")


@functools.lru_cache(maxsize=4)
def list_instance_actions_sql(updated: bool) -> str:
    """?4 the marker (a request id, NULL: none), ?5 the limit (-1: none), ?6 / ?7
    changes-since / changes-before (stored stamps, NULL: none). Returns (server
    visible, '{"instanceActions":[...]' (no closing brace), count, last request id,
    marker found, position)."""
    doc = "'{' || a_v21 || " + ("a_updated || " if updated else "") + "'}'"
    return (
        f"WITH m AS (SELECT created_at AS m0, action_id AS m1 FROM instance_actions "
        f"WHERE instance_uuid = ?1 AND request_id = ?4 AND deleted = 0 {_ACTION_ORDER} "
        f"LIMIT 1), "
        f"page AS MATERIALIZED (SELECT request_id AS id, {doc} AS d, created_at AS k0, "
        f"action_id AS k1 FROM instance_actions WHERE instance_uuid = ?1 AND deleted = 0 "
        f"AND (?6 IS NULL OR updated_at >= ?6) AND (?7 IS NULL OR updated_at <= ?7) "
        f"AND (?4 IS NULL OR created_at < (SELECT m0 FROM m) OR (created_at = "
        f"(SELECT m0 FROM m) AND action_id < (SELECT m1 FROM m))) {_ACTION_ORDER} LIMIT ?5) "
        f"SELECT {_ACTION_SERVER}, CAST('{{\"instanceActions\":[' || "
        f"coalesce((SELECT group_concat(d, ',') FROM page), '') || ']' AS BLOB), "
        f"(SELECT count(*) FROM page), (SELECT id FROM page ORDER BY k0 ASC, k1 ASC LIMIT 1), "
        f"(?4 IS NULL OR EXISTS (SELECT 1 FROM m)), {POSITION_SQL}")


# -- key pairs of one user ---------------------------------------------------------------
# ?1 the user. Nova lists a user's key pairs by name; a marker is a name of theirs.

def show_keypair_sql(with_type: bool) -> str:
    """?2 the name. Returns (body or NULL, position)."""
    column = "k_show_v22" if with_type else "k_show_v21"
    return (f"SELECT (SELECT CAST('{{\"keypair\":' || {column} || '}}' AS BLOB) FROM keypairs "
            f"WHERE user_id = ?1 AND name = ?2), {POSITION_SQL}")


def list_keypairs_sql(with_type: bool) -> KeptStatement:
    """?2 the marker (a name, NULL: none), ?3 the limit (-1: none). Answers
    ('{"keypairs":[...]' without its closing brace, count, last name, marker found)."""
    column = "k_item_v22" if with_type else "k_item_v21"
    return kept_statement(
        f"page AS MATERIALIZED (SELECT name AS id, {column} AS d FROM keypairs "
        f"WHERE user_id = ?1 AND (?2 IS NULL OR name > ?2) ORDER BY name LIMIT ?3)",
        ("CAST('{\"keypairs\":[' || coalesce((SELECT group_concat(d, ',') FROM page), '') "
         "|| ']' AS BLOB)", "(SELECT count(*) FROM page)",
         "(SELECT id FROM page ORDER BY id DESC LIMIT 1)",
         "(?2 IS NULL OR EXISTS (SELECT 1 FROM keypairs WHERE user_id = ?1 AND name = ?2))"),
        3)


KEYPAIR_SQL = {(show, with_type): (show_keypair_sql if show else list_keypairs_sql)(with_type)
               for show in (False, True) for with_type in (False, True)}
# -- hypervisors ---------------------------------------------------------------------------
# Nova's order: cell, then compute node id. A stored document is a whole object without
# "servers"; with servers asked for, the host's live servers ({"name", "uuid"}, the name
# being Nova's instance name, read from the server's stored extended attributes) go in
# before its closing brace. ?4 servers asked for, ?5 an empty list shown (2.75).

HYPERVISOR_COLUMNS = frozenset(render.HYPERVISOR_FRAGMENTS)
_INSTANCE_NAME_SQL = ("json_extract('{' || substr(s.d_ext_v21, 2) || '}', "
                      "'$.\"OS-EXT-SRV-ATTR:instance_name\"')")


def _hypervisor_item_sql(column: str, ref: str) -> str:
    """The document of the row ``ref`` (its columns d, host, cell), with its servers."""
    return (
        f"CASE WHEN ?4 THEN (SELECT CASE WHEN count(*) = 0 THEN "
        f"(CASE WHEN ?5 THEN substr({ref}.d, 1, length({ref}.d) - 1) || ',\"servers\":[]}}' "
        f"ELSE {ref}.d END) ELSE substr({ref}.d, 1, length({ref}.d) - 1) || "
        f"',\"servers\":[' || group_concat(item, ',') || ']}}' END FROM "
        f"(SELECT json_object('name', {_INSTANCE_NAME_SQL}, 'uuid', s.uuid) AS item "
        f"FROM servers s WHERE s.host = {ref}.host AND s.cell = {ref}.cell "
        f"AND s.deleted = 0 ORDER BY {_INSTANCE_NAME_SQL}, s.uuid)) ELSE {ref}.d END")


def _hypervisor_marker_sql(ref: str, any_kind: bool = False) -> str:
    """?1 (a uuid, or an integer id before 2.53: ?6 false) names the hypervisor ``ref``;
    ``any_kind``: either at any microversion, as Nova takes a list's marker (a uuid-like
    one is looked up by uuid, any other as an id)."""
    if any_kind:
        return f"({ref}.uuid = ?1 OR CAST({ref}.node_id AS TEXT) = ?1)"
    return f"({ref}.uuid = ?1 OR (?6 = 0 AND CAST({ref}.node_id AS TEXT) = ?1))"


@functools.lru_cache(maxsize=8)
def list_hypervisors_sql(column: str) -> KeptStatement:
    """?1 the marker (NULL: none), ?2 the limit (-1: none), ?3 the hostname pattern
    (NULL: any; Nova's LIKE '%pattern%'), ?6 ids are uuids (2.53). Answers
    ('{"hypervisors":[...]' without its closing brace, count, last id, marker found,
    a compute node matches the pattern); a hypervisor's state is the publisher's,
    stored: nothing in it depends on the clock."""
    if column not in HYPERVISOR_COLUMNS:
        raise ValueError(column)
    return kept_statement(
        f"m AS (SELECT h.cell AS mc, h.node_id AS mn FROM hypervisors h "
        f"WHERE ?1 IS NOT NULL AND {_hypervisor_marker_sql('h', any_kind=True)} "
        f"ORDER BY h.cell, h.node_id LIMIT 1), "
        f"page AS MATERIALIZED (SELECT h.uuid, h.node_id, h.cell, h.host, h.{column} AS d "
        f"FROM hypervisors h WHERE h.listed = 1 AND "
        f"(?3 IS NULL OR h.hypervisor_hostname LIKE '%' || ?3 || '%') AND "
        f"(?1 IS NULL OR (h.cell, h.node_id) > (SELECT mc, mn FROM m)) "
        f"ORDER BY h.cell, h.node_id LIMIT ?2)",
        (f"CAST('{{\"hypervisors\":[' || coalesce((SELECT group_concat(doc, ',') FROM "
         f"(SELECT {_hypervisor_item_sql(column, 'p')} AS doc FROM page p "
         f"ORDER BY p.cell, p.node_id)), '') || ']' AS BLOB)", "(SELECT count(*) FROM page)",
         "(SELECT CASE WHEN ?6 THEN uuid ELSE node_id END FROM page "
         "ORDER BY cell DESC, node_id DESC LIMIT 1)",
         "(?1 IS NULL OR EXISTS (SELECT 1 FROM m))",
         "(?3 IS NULL OR EXISTS (SELECT 1 FROM hypervisors h "
         "WHERE h.hypervisor_hostname LIKE '%' || ?3 || '%'))"), 6)


@functools.lru_cache(maxsize=8)
def show_hypervisor_sql(column: str) -> str:
    """?1 the id (a uuid from 2.53, else an integer id: the first cell's node of that
    id, as Nova looks cell by cell), ?6 ids are uuids. Returns (body or NULL, a compute
    node has the id, position)."""
    if column not in HYPERVISOR_COLUMNS:
        raise ValueError(column)
    return (
        f"WITH one AS (SELECT h.host, h.cell, h.listed, h.{column} AS d FROM hypervisors h "
        f"WHERE {_hypervisor_marker_sql('h')} ORDER BY h.cell, h.node_id LIMIT 1) "
        f"SELECT (SELECT CAST('{{\"hypervisor\":' || {_hypervisor_item_sql(column, 'o')} "
        f"|| '}}' AS BLOB) FROM one o WHERE o.listed = 1), EXISTS (SELECT 1 FROM one), "
        f"{POSITION_SQL}")


@functools.lru_cache(maxsize=8)
def limits_sql(minor: int) -> str:
    """GET /limits of the project ?1 at 2.``minor``: each limit from the project's quota
    row, else the defaults' row, else Nova's default; usages from the project's usage
    row (instances, cores, ram) and its quota row (server groups), zero for the rest."""
    names, used = render.limits_shown(minor)
    counted = {"instances": "u.instances", "cores": "u.cores", "ram": "u.ram",
               "server_groups": "p.server_groups_used"}
    parts = [f"'\"{name}\":' || coalesce(p.{resource}, d.{resource}, "
             f"{render.QUOTA_NOVA_DEFAULTS[resource]})" for name, resource in names]
    parts += [f"'\"{name}\":' || " + (f"coalesce({counted[resource]}, 0)"
                                       if resource in counted else "'0'")
              for name, resource in used]
    body = " || ',' || ".join(parts)
    return (f"SELECT CAST('{{\"limits\":{{\"rate\":[],\"absolute\":{{' || {body} "
            f"|| '}}}}}}' AS BLOB), "
            f"{POSITION_SQL} FROM (SELECT ?1 AS project_id) AS q "
            f"LEFT JOIN quotas AS d ON d.quota_key = '{feed.QUOTA_DEFAULT_KEY}' "
            "LEFT JOIN quotas AS p ON p.quota_key = 'project/' || q.project_id "
            "LEFT JOIN project_usage AS u ON u.project_id = q.project_id")


# What a quota set's usage counts (QUOTA_SET_MODES' detail; zero for the rest).
_COUNTED = {"instances": "u.instances", "cores": "u.cores", "ram": "u.ram",
            "server_groups": "p.server_groups_used"}
QUOTA_SET_MODES = ("show", "detail", "defaults")


@functools.lru_cache(maxsize=16)
def quota_set_sql(minor: int, mode: str) -> str:
    """GET /os-quota-sets/{project ?1}: its limits (``show``), with their usage
    (``detail``), or the defaults (``defaults``), at 2.``minor``."""
    parts = []
    for resource in render.quota_set_resources(minor):
        default = render.QUOTA_NOVA_DEFAULTS[resource]
        limit = (f"coalesce(d.{resource}, {default})" if mode == "defaults"
                 else f"coalesce(p.{resource}, d.{resource}, {default})")
        if mode == "detail":
            used = (f"coalesce({_COUNTED[resource]}, 0)" if resource in _COUNTED else "'0'")
            parts.append(f"'\"{resource}\":{{\"in_use\":' || {used} || ',\"limit\":' || "
                         f"{limit} || ',\"reserved\":0}}'")
        else:
            parts.append(f"'\"{resource}\":' || {limit}")
    body = " || ',' || ".join(parts)
    return (f"SELECT CAST('{{\"quota_set\":{{\"id\":' || json_quote(q.project_id) || ',' "
            f"|| {body} || '}}}}' AS BLOB), {POSITION_SQL} "
            "FROM (SELECT ?1 AS project_id) AS q "
            f"LEFT JOIN quotas AS d ON d.quota_key = '{feed.QUOTA_DEFAULT_KEY}' "
            "LEFT JOIN quotas AS p ON p.quota_key = 'project/' || q.project_id "
            "LEFT JOIN project_usage AS u ON u.project_id = q.project_id")


# -- services (GET /os-services) -----------------------------------------------------------
# Nova leaves out its API services (never reporting, always "down"), lists each cell's
# services in row order, and judges a service up when it is not forced down and its last
# report is at most service_down_time old (either way: the clocks may disagree) by
# nova-api's clock; here, by the replica's, when the statement runs.

SERVICE_API_BINARIES = ("nova-osapi_compute", "nova-metadata")
_SERVICE_UP = ("(forced_down = 0 AND heartbeat IS NOT NULL AND (down_after <= 0 OR "
               "abs(julianday('now') - julianday(heartbeat)) * 86400.0 <= down_after))")
# The next moment (julian day) at which _SERVICE_UP may change with no commit: a service
# not forced down, with a heartbeat and a liveness rule, is up from heartbeat -
# down_after to heartbeat + down_after (the clocks may disagree either way); the first
# of those still ahead (within FLIP_MARGIN_DAYS), else NULL (it never flips).
_SERVICE_FLIP = (
    "CASE WHEN forced_down = 0 AND heartbeat IS NOT NULL AND down_after > 0 THEN "
    "CASE WHEN julianday(heartbeat) - down_after / 86400.0 > julianday('now') - "
    f"{FLIP_MARGIN_DAYS!r} THEN julianday(heartbeat) - down_after / 86400.0 "
    "WHEN julianday(heartbeat) + down_after / 86400.0 > julianday('now') - "
    f"{FLIP_MARGIN_DAYS!r} THEN julianday(heartbeat) + down_after / 86400.0 END END")


def _valid_until(cte: str) -> str:
    """The julian day before which no row of ``cte`` (its ``flip`` column) flips."""
    return f"(SELECT min(flip) - {FLIP_MARGIN_DAYS!r} FROM {cte})"


# A compute service's zone: its host's aggregates' (none: the default zone, ?3); others:
# the internal zone (?4).
_SERVICE_ZONE = ("CASE WHEN topic = 'compute' THEN coalesce((SELECT group_concat(zone, ',') "
                 "FROM (SELECT DISTINCT zone FROM aggregate_zones z "
                 "WHERE z.host = services.host ORDER BY zone)), ?3) ELSE ?4 END")


@functools.lru_cache(maxsize=8)
def list_services_sql(uuid_ids: bool, forced_down: bool) -> KeptStatement:
    """?1 the host, ?2 the binary (NULL: any), ?3 and ?4 Nova's default and internal
    zone names. Answers (the whole body); kept until a commit or until a listed
    service's state may flip."""
    doc = (f"s_head || {'s_id_v253' if uuid_ids else 's_id_v21'} || ',\"zone\":' || "
           f"json_quote({_SERVICE_ZONE}) || s_status || ',\"state\":' || "
           f"CASE WHEN {_SERVICE_UP} THEN '\"up\"' ELSE '\"down\"' END || "
           f"',\"updated_at\":' || s_updated_at || s_tail"
           f"{' || s_forced' if forced_down else ''} || '}}'")
    api = ", ".join(f"'{b}'" for b in SERVICE_API_BINARIES)
    return kept_statement(
        f"page AS MATERIALIZED (SELECT {doc} AS d, {_SERVICE_FLIP} AS flip FROM services "
        f"WHERE coalesce(\"binary\", '') NOT IN ({api}) AND (?1 IS NULL OR host = ?1) "
        f"AND (?2 IS NULL OR \"binary\" = ?2) ORDER BY cell, id)",
        ("CAST('{\"services\":[' || coalesce((SELECT group_concat(d, ',') FROM page), '') "
         "|| ']}' AS BLOB)",), 4, _valid_until("page"))


# -- host aggregates (GET /os-aggregates[/{id}]) -------------------------------------------
# Nova lists them in row (id) order; a show finds one by its id.

def aggregates_sql(with_uuid: bool, show: bool) -> str | KeptStatement:
    """List: the whole body (a ``KeptStatement``). Show (?1 the id): the body or NULL,
    then the position."""
    column = "a_doc_v241" if with_uuid else "a_doc_v21"
    if show:
        return (f"SELECT (SELECT CAST('{{\"aggregate\":' || {column} || '}}' AS BLOB) "
                f"FROM aggregates WHERE id = ?1), {POSITION_SQL}")
    return kept_statement(
        f"page AS MATERIALIZED (SELECT {column} AS d FROM aggregates ORDER BY id)",
        ("CAST('{\"aggregates\":[' || coalesce((SELECT group_concat(d, ',') FROM page), '') "
         "|| ']}' AS BLOB)",), 0)


AGGREGATE_SQL = {(with_uuid, show): aggregates_sql(with_uuid, show)
                 for with_uuid in (False, True) for show in (False, True)}


def _after_marker(sort: tuple[tuple[str, str], ...]) -> str:
    """Rows strictly after the marker row (CTE ``m``, columns m0..mn) in ``sort`` order,
    with SQLite's NULL ordering (NULL sorts first ascending, last descending)."""
    cols = [c for c, _ in sort]
    dirs = [d for _, d in sort]
    if len(set(dirs)) == 1 and all(c in _NOT_NULL for c in cols):
        op = "<" if dirs[0] == "desc" else ">"   # row values: one index range
        marks = ", ".join(f"(SELECT m{i} FROM m)" for i in range(len(cols)))
        return f"({', '.join(cols)}) {op} ({marks})"
    if all(c in _NOT_NULL for c in cols):
        # Mixed directions (Nova's default: created_at desc, uuid asc): the first column's
        # bound gives the index range, the terms the rows within it.
        first = f"{cols[0]} {'<=' if dirs[0] == 'desc' else '>='} (SELECT m0 FROM m)"
        terms = []
        for i, (col, direction) in enumerate(sort):
            equal = [f"{cols[j]} = (SELECT m{j} FROM m)" for j in range(i)]
            after = f"{col} {'<' if direction == 'desc' else '>'} (SELECT m{i} FROM m)"
            terms.append("(" + " AND ".join(equal + [after]) + ")")
        return f"({first} AND ({' OR '.join(terms)}))"
    terms = []
    for i, (col, direction) in enumerate(sort):
        mi = f"(SELECT m{i} FROM m)"
        equal = [f"{cols[j]} IS (SELECT m{j} FROM m)" for j in range(i)]
        if direction == "asc":
            after = f"(CASE WHEN {mi} IS NULL THEN {col} IS NOT NULL ELSE {col} > {mi} END)"
        else:
            after = f"(CASE WHEN {mi} IS NULL THEN 0 ELSE ({col} < {mi} OR {col} IS NULL) END)"
        terms.append("(" + " AND ".join(equal + [after]) + ")")
    return "(" + " OR ".join(terms) + ")"


def _list_sql(table: str, key: str, doc: str, where: list[str],
              sort: tuple[tuple[str, str], ...], has_marker: bool, marker_scope: str,
              kept_version: str, volatile: str = "0") -> str:
    """One row per listed item, ``(id, document, volatile)`` in ``sort`` order, then one
    trailer row ``(marker found, data version, position)``: the worker joins the
    documents, so SQLite never concatenates the page (a 1.6 MB page built inside SQLite
    cost three times as much as the rows that hold it). The trailer comes even when the
    page is empty. ``kept_version`` (a parameter): the data version of the page the
    reader keeps for this statement; while the replica is still at that version the
    page's LIMIT is 0 and no item row is read. ``volatile``: an expression true for an
    item whose document depends on the time of the request (a page holding one is not
    kept)."""
    order = ", ".join(f"{c} {d.upper()}" for c, d in sort)
    conditions = list(where)
    marker_cte = ""
    if has_marker:
        mcols = ", ".join(f"{c} AS m{i}" for i, (c, _) in enumerate(sort))
        marker_cte = f"WITH m AS (SELECT {mcols} FROM {table} WHERE {key} = ?5{marker_scope}) "
        conditions.append(_after_marker(sort))
    where_sql = " AND ".join(conditions) if conditions else "1"
    found = "(SELECT count(*) FROM m)" if has_marker else "1"
    # The version test sits in LIMIT, evaluated once before the scan (in WHERE, SQLite
    # would test it on every row of the index: a kept page scanned the whole table).
    limit = f"CASE WHEN {DATA_VERSION_SQL} IS NOT {kept_version} THEN ?6 ELSE 0 END"
    # UNION ALL returns its arms in order, and the page arm its rows in ORDER BY order.
    return (
        f"{marker_cte}SELECT * FROM (SELECT {key}, CAST({doc} AS BLOB), {volatile} "
        f"FROM {table} WHERE {where_sql} ORDER BY {order} LIMIT {limit}) "
        f"UNION ALL SELECT {found}, {DATA_VERSION_SQL}, {POSITION_SQL}")


def _server_list_sql(doc: str, where: list[str], in_cell_only: list[str],
                     sort: tuple[tuple[str, str], ...], has_marker: bool, marker_scope: str,
                     kept_version: str, volatile: str, marker_checked: str | None = None,
                     found_as: str | None = None) -> str:
    """``_list_sql`` for servers in Nova's order (nova.compute.api.API.get_all): the
    build requests (``in_cell`` = 0) first, sorted among themselves, then the cells'
    servers, whatever the sort. ``in_cell_only``: conditions that only the cells'
    servers must meet (Nova's build requests ignore changes-since and changes-before).
    A marker that is a build request lists the build requests after it, then the cells'
    servers from the first; a marker in a cell lists the cells' servers after it and no
    build request.

    The default order without a marker or times is one walk of an index that holds
    ``in_cell`` descending before ``created_at`` (ORDER BY in_cell first; the hot
    path). Otherwise two parts, each its own ORDER BY ... LIMIT over that index with
    ``in_cell`` fixed (UNION ALL returns them in order): the marker's group after the
    marker (without a marker: the build requests), then the cells' servers from the
    first when the marker is a build request (without a marker: always). Each part may
    fill the page: the reader keeps the first ``limit`` rows. (A part costs even when
    its LIMIT is 0, measured 5 to 45 us on a 10,000-server replica: the hot path has
    one.)"""
    order = ", ".join(f"{c} {d.upper()}" for c, d in sort)
    fresh = f"{DATA_VERSION_SQL} IS NOT {kept_version}"
    columns = f"uuid, CAST({doc} AS BLOB), {volatile}"
    in_cell = [*where, *in_cell_only, "in_cell = 1"]

    def part(conditions: list[str], limit: str) -> str:
        return (f"SELECT * FROM (SELECT {columns} FROM servers WHERE "
                f"{' AND '.join(conditions)} ORDER BY {order} LIMIT {limit})")

    limit = f"CASE WHEN {fresh} THEN ?6 ELSE 0 END"
    if not has_marker and sort == DEFAULT_SERVER_SORT and not in_cell_only:
        return (f"SELECT * FROM (SELECT {columns} FROM servers WHERE "
                f"{' AND '.join(where) or '1'} ORDER BY in_cell ASC, {order} "
                f"LIMIT {limit}) "
                f"UNION ALL SELECT {found_as or 1}, {DATA_VERSION_SQL}, {POSITION_SQL}")
    if has_marker:
        mcols = ", ".join(f"{c} AS m{i}" for i, (c, _) in enumerate(sort))
        # Nova looks a marker up among the build requests that pass the filters (a
        # build request filtered out is looked for in the cells, where it is not found),
        # and in the cells whatever the filters.
        build_request = " AND ".join(where) or "1"
        marker_cte = (f"WITH m AS (SELECT in_cell AS mc, {mcols} FROM servers "
                      f"WHERE uuid = ?5{marker_scope} AND (in_cell = 1 OR ({build_request}))) ")
        found = "(SELECT count(*) FROM m)"
        if marker_checked is not None:      # the marker is looked up only when this holds
            found = f"(CASE WHEN {marker_checked} THEN {found} ELSE 1 END)"
        # The marker's own group: in_cell_only applies when that is the cells' (a
        # build request meets those conditions as true).
        own = [*where, "in_cell = (SELECT mc FROM m)", _after_marker(sort),
               *(f"(in_cell = 0 OR {c})" for c in in_cell_only)]
        parts = [part(own, limit),
                 part(in_cell, f"CASE WHEN {fresh} AND (SELECT mc FROM m) = 0 "
                               "THEN ?6 ELSE 0 END")]
    else:
        marker_cte, found = "", found_as or "1"
        # (a build request is never deleted: with deleted = 0 the index is searched even
        # when the list takes deleted servers too)
        parts = [part([*where, "deleted = 0", "in_cell = 0"], limit), part(in_cell, limit)]
    return (f"{marker_cte}{' UNION ALL '.join(parts)} "
            f"UNION ALL SELECT {found}, {DATA_VERSION_SQL}, {POSITION_SQL}")


class _Params:
    """Numbered parameters of the filters: ?1..?7 are fixed (tokens, prefixes, marker,
    limit, caller's project), the filters' start at ?8, so the order they appear in the
    SQL text does not matter."""

    FIRST = 8

    def __init__(self):
        self.values: list = []

    def __call__(self, value) -> str:
        self.values.append(value)
        return f"?{self.FIRST + len(self.values) - 1}"

    def last(self) -> str:
        """The parameter after the filters' (a list's kept data version)."""
        return f"?{self.FIRST + len(self.values)}"


def _in(column: str, values: tuple, p: _Params, collate: str | None = None) -> str:
    if not values:
        return "0"
    collated = f" COLLATE {collate}" if collate else ""
    return f"{column}{collated} IN ({', '.join(p(v) for v in values)})"


def _tags_exist(values: tuple[str, ...], p: _Params) -> str:
    marks = ", ".join(p(v) for v in values)
    return f"EXISTS (SELECT 1 FROM json_each(servers.tags) WHERE value IN ({marks}))"


def build_server_list(query: ServerQuery, view: render.ServerView | None
                      ) -> tuple[str, list]:
    """The SQL and the filter parameters (?8...) of one server listing."""
    p = _Params()
    where: list[str] = []
    in_cell_only: list[str] = []
    if query.nothing:
        where.append("0")
    if query.project_id is not None:
        where.append(f"project_id = {p(query.project_id)}")
    if query.deleted is False:
        where.append("deleted = 0")
        if not query.soft_deleted:
            where.append("(vm_state IS NULL OR vm_state != 'soft-delete')")
    elif query.deleted is True:
        if query.soft_deleted is False:
            where.append("deleted = 1")
        else:
            where.append("(deleted = 1 OR vm_state = 'soft-delete')")
    # Nova filters its build requests in Python, differently from its instances: a build
    # request (in_cell = 0) passes the time filters (in_cell_only), and any regex filter
    # on a field it has no value for (BUILD_REQUEST_REGEX_COLUMNS, _falsy).
    if query.changes_since is not None:
        in_cell_only.append(f"updated_at >= {p(query.changes_since)}")
    if query.changes_before is not None:
        in_cell_only.append(f"updated_at <= {p(query.changes_before)}")
    for column, values in sorted(query.exact.items()):
        if column not in SERVER_FILTER_COLUMNS:
            raise ValueError(f"no such server filter column {column!r}")
        condition = _in(column, tuple(values), p)
        if _nova_collation != "binary" and column in COLLATED_EXACT_COLUMNS and values:
            # the cells' servers under the collation, build requests exactly (nova-api
            # matches those in Python)
            collated = _in(column, tuple(values), p, GENERAL_CI)
            condition = f"(CASE WHEN in_cell = 0 THEN {condition} ELSE {collated} END)"
        if column in BUILD_REQUEST_REGEX_COLUMNS:
            condition = f"({condition} OR (in_cell = 0 AND {_falsy(column)}))"
        where.append(condition)
    for column, pattern in sorted(query.regex.items()):
        if column not in SERVER_FILTER_COLUMNS:
            raise ValueError(f"no such server filter column {column!r}")
        where.append(f"({_regex_condition(column, pattern, p, servers=True)} OR "
                     f"(in_cell = 0 AND {_falsy(column)}))")
    for tag in query.tags:
        where.append(_tags_exist((tag,), p))
    if query.tags_any:
        where.append(_tags_exist(query.tags_any, p))
    if query.not_tags:
        where.append("NOT (" + " AND ".join(_tags_exist((t,), p) for t in query.not_tags)
                     + ")")
    if query.not_tags_any:
        where.append("NOT " + _tags_exist(query.not_tags_any, p))
    marker_checked = []           # what must hold for Nova to look the marker up
    flavors = query.exact.get("flavor_id")
    if flavors:
        # Nova first looks the flavor up (the caller's flavors: public ones and those
        # its project has access to; any, for an admin): one it cannot find answers [],
        # whatever else was asked, the servers of a deleted flavor too.
        access = ("" if query.marker_project is None else
                  f" AND (is_public = 1 OR EXISTS (SELECT 1 FROM json_each(flavors.projects) "
                  f"WHERE value = {p(query.marker_project)}))")
        flavor_found = (f"EXISTS (SELECT 1 FROM flavors WHERE flavorid = {p(flavors[-1])}"
                        f"{access})")
        where.append(flavor_found)
        marker_checked.append(flavor_found)
    if query.ips:
        # Either substring in one of the server's addresses. An address has no space: a
        # pattern with one would only match across two of them in the column.
        found = [f"instr(ips, {p(ip)}) > 0" for ip in query.ips if " " not in ip]
        matched = f"({' OR '.join(found)})" if found else "0"
        where.append(matched)
        # Nova asks Neutron first: when no port of the caller's (any, for an admin) has
        # such an address, it answers [] without looking the marker up.
        scope = ("" if query.marker_project is None
                 else f" AND project_id = {p(query.marker_project)}")
        marker_checked.append(f"EXISTS (SELECT 1 FROM servers WHERE {matched} AND "
                              f"deleted = 0 AND in_cell = 1{scope})")
    doc = SERVER_BRIEF_SQL if view is None else server_doc_expr(view)
    sort = _collated_sort(query.sort)
    if query.deleted is not False and "d_host_status" in doc:
        doc = doc.replace("d_host_status", _host_status_as_listed(sort))
    # A member's marker must be one of the member's servers (deleted ones too): another
    # project's is "not found", or the page would show where it falls in the order.
    marker_scope = ""
    if query.marker is not None and query.marker_project is not None:
        marker_scope = f" AND project_id = {p(query.marker_project)}"
    # A detail page with a server never updated shows the time of the request.
    found_as = None
    if query.refusal is not None:       # (set only with a flavor filter)
        found_as = flavor_found
        where.append("0")
    has_marker = query.marker is not None and query.refusal is None
    sql = _server_list_sql(doc, where, in_cell_only, sort, has_marker, marker_scope, p.last(),
                           "0" if view is None else "updated_at IS NULL",
                           " AND ".join(marker_checked) or None, found_as)
    return sql, p.values


# Nova's BuildRequestList.get_by_filters matches a few fields exactly (project, user,
# image, vm/task state, flavor, uuid, host, metadata, tags); every other filter is a regex
# search that a build request passes when it has no value for the field (None, False,
# 0, ""). Of the columns filtered exactly here, these are such regex filters there.
BUILD_REQUEST_REGEX_COLUMNS = frozenset({"locked"})


def _falsy(column: str) -> str:
    """The column holds no value in Python's sense (None, False, 0, "")."""
    return f"({column} IS NULL OR {column} = '' OR {column} = 0)"


def _host_status_as_listed(sort: tuple[tuple[str, str], ...]) -> str:
    """host_status in a list that may hold deleted servers, as nova-api shows it: it
    works a host's status out once per page, from the first server listed on that host,
    and gives every server of that host on the page the same; a deleted server has no
    service to ask (its join to services requires deleted = 0), so when the first is a
    deleted one the host's servers show "", and when it is a live one its status shows on
    the deleted ones too. The window runs over the rows after the marker, in the page's
    order, so the first of a host's rows on the page is the first it sees."""
    order = ", ".join(f"{c} {d.upper()}" for c, d in sort)
    return (f"CASE WHEN host IS NULL THEN d_host_status ELSE first_value(CASE WHEN "
            f"deleted != 0 THEN '{HOST_STATUS_NONE}' ELSE d_host_status END) OVER (PARTITION "
            f"BY host ORDER BY {order}) END")


HOST_STATUS_NONE = ',"host_status":""'


@dataclass(frozen=True, slots=True)
class ServerList:
    """One server listing's statement, built once (``server_list``): a caller that asks
    the same listing again keeps it and hands it back to ``Reader.list_servers``."""

    sql: str
    extra: tuple            # the filters' parameters (?8...)
    matches: bool           # the statement calls regexp()


def server_list(query: ServerQuery, view: render.ServerView | None) -> ServerList:
    sql, extra = build_server_list(query, view)
    return ServerList(sql, tuple(extra), " REGEXP " in sql or "regexp_ci(" in sql)


# -- Nova's database collation ----------------------------------------------------------
# nova-api sorts and filters servers in its cell databases: on MariaDB/MySQL under the
# text columns' collation (Nova's tables are utf8 with utf8_general_ci: case and
# accents ignored in order and equality, trailing spaces too; a REGEXP ignores case),
# on SQLite by code point. ``set_nova_collation`` (the nova_database_collation setting)
# picks the one the appliance follows: "binary" (SQLite, the default) or
# "utf8_general_ci". Build requests are filtered by nova-api in Python, so by code point
# whatever the database (it sorts them in Python too; here they sort under the collation).
NOVA_COLLATIONS = ("binary", "utf8_general_ci")
GENERAL_CI = "nova_general_ci"          # the SQLite collation that approximates it
COLLATED_SORT_COLUMNS = frozenset({
    "display_name", "display_description", "hostname", "host", "node", "key_name",
    "availability_zone", "kernel_id", "ramdisk_id", "root_device_name", "access_ip_v4",
    "access_ip_v6", "config_drive", "vm_state", "task_state", "locked_by"})
# Nova's exact filters compared in the cell database (so under its collation there).
COLLATED_EXACT_COLUMNS = frozenset({"host", "project_id", "user_id", "image_ref",
                                    "vm_state", "task_state", "uuid"})
_nova_collation = "binary"


def set_nova_collation(name: str) -> None:
    """Follow Nova's database collation ``name`` (one of ``NOVA_COLLATIONS``) in server
    sorts and regex filters, from now on (a worker sets it once, at start)."""
    global _nova_collation
    if name not in NOVA_COLLATIONS:
        raise ValueError(f"unknown Nova database collation {name!r}")
    _nova_collation = name


def stored_server_uuid(value: str) -> str | None:
    """The uuid as the replica stores it (lowercase, hyphenated) that ``value`` in a
    server's path names in Nova's database, or None: Nova looks the server up by the
    text as given, so another spelling finds nothing, except that under MariaDB's
    case-insensitive collation capitals find it too."""
    if CANONICAL_UUID.match(value):
        return value
    if _nova_collation != "binary" and CANONICAL_UUID.match(value.lower()):
        return value.lower()
    return None


# A uuid as Nova and the replica store it: lowercase, hyphenated.
CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@functools.lru_cache(maxsize=65536)
def general_ci_key(text: str) -> str:
    """A text's weight under utf8_general_ci, approximated: accents dropped (NFD, no
    combining marks), upper case, trailing spaces ignored (PAD SPACE)."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper().rstrip(" ")


def general_ci_compare(a: str, b: str) -> int:
    ka, kb = general_ci_key(a), general_ci_key(b)
    return (ka > kb) - (ka < kb)


def _collated_sort(sort: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    if _nova_collation == "binary":
        return sort
    return tuple((f"{c} COLLATE {GENERAL_CI}" if c in COLLATED_SORT_COLUMNS else c, d)
                 for c, d in sort)


def _regex_condition(column: str, pattern: str, p: _Params, servers: bool = False) -> str:
    """Nova's regex filters (``column REGEXP pattern``, a search anywhere in the value);
    ``servers``: on a server column (Nova's database collation: the cells' servers
    ignore case under utf8_general_ci, build requests do not)."""
    if servers and _nova_collation != "binary":
        return (f"CASE WHEN in_cell = 0 THEN CAST({column} AS TEXT) REGEXP {p(pattern)} "
                f"ELSE regexp_ci({p(pattern)}, CAST({column} AS TEXT)) END")
    if _is_literal(pattern):
        # A pattern without metacharacters is a substring test: instr() runs in C.
        return f"instr(CAST({column} AS TEXT), {p(pattern)}) > 0"
    # A real regex calls back into Python once per candidate row (regexp()).
    return f"CAST({column} AS TEXT) REGEXP {p(pattern)}"


def build_flavor_list(query: FlavorQuery, view: render.FlavorView) -> tuple[str, list]:
    """The SQL and the filter parameters (?8...) of one flavor listing; ?7 is the
    caller's project (access to private flavors)."""
    p = _Params()
    where: list[str] = []
    access = ("(is_public = 1 OR EXISTS (SELECT 1 FROM json_each(flavors.projects) "
              "WHERE value = ?7))")
    if not query.admin:
        where += [access, "disabled = 0"]
    elif query.is_public is True:
        where.append(access)
    elif query.is_public is False:
        where.append("is_public = 0")
    if query.min_ram is not None:
        where.append(f"memory_mb >= {p(query.min_ram)}")
    if query.min_disk is not None:
        where.append(f"root_gb >= {p(query.min_disk)}")
    if query.name is not None:
        where.append(_regex_condition("name", query.name, p))
    # A non-admin's marker must be a flavor the caller may see.
    marker_scope = "" if query.admin else " AND " + access
    sql = _list_sql("flavors", "flavorid", _with_prefixes(flavor_doc_expr(view)), where,
                    query.sort,
                    query.marker is not None, marker_scope, p.last())
    return sql, p.values


@functools.lru_cache(maxsize=1024)
def _parameter_count(sql: str) -> int:
    # SQLite counts parameters up to the highest number used in the statement.
    return max(int(n) for n in re.findall(r"\?(\d+)", sql))


_META = re.compile(r"[.^$*+?{}\[\]\\|()]")


def _is_literal(pattern: str) -> bool:
    return not _META.search(pattern)


@functools.lru_cache(maxsize=REGEX_CACHE)
def _compiled(pattern: str, flags: int = 0) -> re.Pattern:
    return re.compile(pattern, flags)


class _MatchClock:
    """The bounds of statements that call ``regexp()``, kept by an interval timer whose
    signal ends a running match: one match may run ``MATCH_BUDGET_S`` (a pattern that
    backtracks that long on one value is the pattern's fault: ``RegexTooCostly``), the
    statement until its deadline (``ReadTimeout``). Signals reach the main thread only
    (gevent's ``threading`` cannot tell which one that is; installing the handler can):
    elsewhere only the checks before each match hold. The API workers read in their
    main thread."""

    def __init__(self):
        self.matching = False
        self.armed = False
        self.deadline = 0.0
        self.match_started = 0.0

    def arm(self, deadline: float) -> bool:
        self.deadline = deadline
        try:
            signal.signal(signal.SIGALRM, self._fired)
        except ValueError:      # not the main thread
            return False
        signal.setitimer(signal.ITIMER_REAL, MATCH_TICK_S, MATCH_TICK_S)
        self.armed = True
        return True

    def disarm(self) -> None:
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _fired(self, signum, frame) -> None:
        # Outside a match the signal changes nothing: the next regexp() call or the
        # progress handler sees the deadline.
        if self.matching:
            now = time.monotonic()
            if now - self.match_started > MATCH_BUDGET_S:
                raise _Overtime(True)
            if now > self.deadline:
                raise _Overtime(False)

    def regexp_ci(self, pattern, value) -> bool:
        """``regexp`` ignoring case (MariaDB's REGEXP under a case-insensitive
        collation)."""
        return self.regexp(pattern, value, re.IGNORECASE)

    def regexp(self, pattern, value, flags: int = 0) -> bool:
        """SQLite's ``X REGEXP Y`` is ``regexp(Y, X)``: ``re.search`` as oslo.db does."""
        if value is None or pattern is None:
            return False
        now = time.monotonic()
        if now > self.deadline:
            raise _Overtime(False)
        try:
            compiled = _compiled(pattern, flags)
        except (re.error, OverflowError, RecursionError):
            return False   # the API refuses these before a statement runs
        self.match_started = now
        self.matching = self.armed
        try:
            return compiled.search(str(value)) is not None
        finally:
            self.matching = False


_MATCH_CLOCK = _MatchClock()


# ---------------------------------------------------------------------------
# The reader
# ---------------------------------------------------------------------------

# -- availability zones -------------------------------------------------------------------
# Why the zones are put together here, at read time, and not rendered by a publisher: a
# zone is what two databases say together (a cell's services, and the API database's
# aggregates that give a compute host its zone), and its detail says whether each
# service is alive, which changes with the clock and no row. Rendered by a publisher,
# an aggregate's change would have to re-render the zones of every cell, and a service
# that stops reporting would need a publisher watching the clock; here each fact
# travels in the feed of the database that holds it (the service and aggregate kinds),
# and one statement over the small tables os-services and os-aggregates read
# (``services``, one row per service; ``aggregate_zones``, one per zoned host of an
# aggregate) renders the zones as Nova computes them at the moment of the request
# (nova/availability_zones.py, nova/api/openstack/compute/availability_zone.py):
# a compute service is in its host's aggregates' zones (joined with ','), else the
# default zone (?1); any other service is in the internal zone (?2); a zone is
# available when one of its services is enabled; the list shows the available zones,
# then the others, each by name; it hides the internal zone, the detail does not and
# lists the enabled services (not the API ones) of each available zone by host, each
# alive as os-services judges it up (not forced down, its last heartbeat within its
# publisher's service_down_time of now).
DEFAULT_AVAILABILITY_ZONE = "nova"          # Nova's default_availability_zone (a setting)
INTERNAL_AVAILABILITY_ZONE = "internal"     # Nova's internal_service_availability_zone
_API_SERVICES = "('nova-osapi_compute', 'nova-metadata')"
_ZONES_WITH = (
    "zone_of AS MATERIALIZED (SELECT host, group_concat(zone, ',') AS zone FROM "
    "(SELECT DISTINCT host, zone FROM aggregate_zones ORDER BY host, zone) GROUP BY host), "
    "svc AS MATERIALIZED (SELECT s.host, s.\"binary\" AS binary, s.disabled, "
    f"{_SERVICE_UP} AS alive, {_SERVICE_FLIP} AS flip, s.s_updated_at, "
    "CASE WHEN s.topic = 'compute' THEN coalesce(z.zone, ?1) ELSE ?2 END AS zone "
    "FROM services AS s LEFT JOIN zone_of AS z ON z.host = s.host), "
    "zones AS MATERIALIZED (SELECT zone, min(disabled) AS off FROM svc GROUP BY zone)")
_ZONE_HEAD = ("'{\"zoneName\":' || json_quote(z.zone) || ',\"zoneState\":{\"available\":' "
              "|| iif(z.off, 'false', 'true') || '},\"hosts\":' || ")
_ALIVE = "iif(alive, 'true', 'false')"


def availability_zones_sql(detail: bool) -> KeptStatement:
    """GET /os-availability-zone[/detail]: ?1 the default zone, ?2 the internal one.
    Answers (body). The list shows no liveness (a zone's "available" is whether one of
    its services is enabled): kept until a commit; the detail until a commit or until
    a service's "available" may flip."""
    if not detail:
        return kept_statement(_ZONES_WITH, (
            f"CAST('{{\"availabilityZoneInfo\":[' || coalesce(("
            f"SELECT group_concat({_ZONE_HEAD} 'null}}', ',' ORDER BY z.off, z.zone) "
            f"FROM zones AS z WHERE z.zone IS NOT ?2), '') || ']}}' AS BLOB)",), 2)
    hosts = (f", hosts AS MATERIALIZED (SELECT zone, json_quote(coalesce(host, '')) || ':{{' "
             f"|| group_concat(json_quote(coalesce(binary, '')) || ':{{\"available\":' || "
             f"{_ALIVE} || ',\"active\":true,\"updated_at\":' || s_updated_at || '}}', "
             f"',') || '}}' AS doc FROM svc WHERE disabled = 0 AND coalesce(binary, '') "
             f"NOT IN {_API_SERVICES} GROUP BY zone, host)")
    return kept_statement(_ZONES_WITH + hosts, (
        f"CAST('{{\"availabilityZoneInfo\":[' || coalesce(("
        f"SELECT group_concat({_ZONE_HEAD} iif(z.off, 'null', '{{' || coalesce((SELECT "
        f"group_concat(h.doc, ',') FROM hosts AS h WHERE h.zone = z.zone), '') || '}}') "
        f"|| '}}', ',' ORDER BY z.off, z.zone) FROM zones AS z), '') || ']}}' AS BLOB)",),
        2, _valid_until("svc"))


AVAILABILITY_ZONES_SQL = {detail: availability_zones_sql(detail) for detail in (False, True)}


# -- server groups ------------------------------------------------------------------------
# A group's members as Nova shows them: those whose server is neither deleted nor
# soft-deleted (Nova's instance filter deleted=False leaves both out; a build request
# counts), in member row order; the rest of its document is pre-rendered.

_GROUP_MEMBERS = ("(SELECT json_group_array(m.value) FROM json_each(g.members) AS m "
                  "WHERE EXISTS (SELECT 1 FROM servers AS s WHERE s.uuid = m.value "
                  "AND s.deleted = 0 AND s.vm_state IS NOT 'soft-delete'))")


def _server_group_doc(minor: int) -> str:
    head = "g.sg_head_v264" if minor >= 64 else "g.sg_head_v21"
    tail = "g.sg_tail_v213" if minor >= 13 else "'}'"
    return f"{head} || ',\"members\":' || {_GROUP_MEMBERS} || {tail}"


def show_server_group_sql(minor: int) -> str:
    """?1 the group's uuid, ?2 the caller's project (NULL: an admin's, any). Returns
    (body or NULL, position)."""
    return (f"SELECT (SELECT CAST('{{\"server_group\":' || {_server_group_doc(minor)} || '}}' "
            f"AS BLOB) FROM server_groups AS g WHERE g.group_key = ?1 AND (?2 IS NULL OR "
            f"g.project_id = ?2)), {POSITION_SQL}")


def list_server_groups_sql(minor: int) -> KeptStatement:
    """?1 the project (NULL: every project's), ?2 the limit, ?3 the offset. Answers
    (body, count)."""
    return kept_statement(
        f"page AS MATERIALIZED (SELECT g.id AS n, {_server_group_doc(minor)} AS d "
        f"FROM server_groups AS g WHERE (?1 IS NULL OR g.project_id = ?1) ORDER BY g.id "
        f"LIMIT ?2 OFFSET ?3)",
        ("CAST('{\"server_groups\":[' || coalesce((SELECT group_concat(d, ',' ORDER BY n) "
         "FROM page), '') || ']}' AS BLOB)", "(SELECT count(*) FROM page)"), 3)


SERVER_GROUP_MINORS = (1, 13, 64)       # where a group's document changes
SERVER_GROUP_SQL = {(show, minor): (show_server_group_sql if show else
                                    list_server_groups_sql)(minor)
                    for show in (False, True) for minor in SERVER_GROUP_MINORS}


def _server_group_minor(minor: int) -> int:
    return max(m for m in SERVER_GROUP_MINORS if m <= minor)


class Reader:
    """The API's named queries over one read-only connection.

    By default every statement is its own read transaction. ``hold_snapshots`` makes
    the statements of a short window share one: starting a read transaction takes the
    WAL read lock and checks the file (three system calls), about as much as the point
    read itself. A held snapshot is at most ``seconds`` old when a statement starts, and
    is let go that long after it was taken, so an idle process does not keep the WAL
    from being checkpointed."""

    def __init__(self, conn: apsw.Connection):
        self.conn = conn
        self._cursor = conn.cursor()   # reused: every statement runs to its end
        self._deadline = 0.0
        self._hold = 0.0               # seconds one read transaction is reused (0: none)
        self._call_later = None
        self._held_until = 0.0         # monotonic end of the held transaction (0: none)
        self._position = None          # the held snapshot's position, once read
        # (statement, parameters) -> (data_version pragma, ReadResult, pager's data
        # version) of list pages, newest last
        self._pages = _KeptBytes(lambda kept: len(kept[1].body))
        # (statement, parameters) -> (data version, valid until, built at, answer) of
        # whole answers (KeptStatement)
        self._answers = _KeptBytes(lambda kept: _answer_size(kept[3]))
        conn.create_scalar_function("regexp", _MATCH_CLOCK.regexp, 2, deterministic=True)
        conn.create_scalar_function("regexp_ci", _MATCH_CLOCK.regexp_ci, 2,
                                    deterministic=True)
        conn.create_collation(GENERAL_CI, general_ci_compare)
        conn.set_progress_handler(self._past_deadline, READ_DEADLINE_VM_STEPS)

    def hold_snapshots(self, seconds: float, call_later) -> None:
        """Let the statements of ``seconds`` share one read transaction;
        ``call_later(delay, fn)`` must run ``fn`` after ``delay`` seconds (the event
        loop's timer), to let an unused snapshot go."""
        self.release()
        self._hold = seconds
        self._call_later = call_later

    @property
    def holds_snapshots(self) -> bool:
        return self._hold > 0

    def release(self) -> None:
        """End the held read transaction, if there is one."""
        self._held_until = 0.0
        self._position = None
        if self.conn.in_transaction:
            self._cursor.execute("COMMIT")

    def _release_if_due(self) -> None:
        if self._held_until and time.monotonic() >= self._held_until:
            try:
                self.release()
            except apsw.Error:      # the connection was closed meanwhile
                self._held_until = 0.0

    def _snapshot(self, now: float) -> None:
        self.release()
        self._cursor.execute("BEGIN")
        self._held_until = now + self._hold
        self._call_later(self._hold, self._release_if_due)

    def _past_deadline(self) -> bool:
        return time.monotonic() > self._deadline

    def _one_row(self, sql: str, params, matches: bool = False) -> tuple[tuple, float]:
        """Run a statement of one row to its end; ``matches``: it calls ``regexp()``."""
        rows, ms = self._rows(sql, params, matches)
        return rows[0], ms

    def _kept_row(self, statement: KeptStatement, params: tuple) -> tuple[tuple, float]:
        """Run a ``KeptStatement``: ``(*answer, position)``. The answer this reader
        kept for the same statement and parameters is given back when the statement
        says that nothing was committed since and its time has not run out (it then
        built nothing); otherwise the one it built is kept in its place."""
        key = (statement.sql, params)
        kept = self._answers.get(key)
        extra = (None, None, None) if kept is None else kept[:3]
        row, ms = self._one_row(statement.sql,
                                params + extra[:3 if statement.timed else 1])
        fresh, *answer, valid_until, built_at, version, position = row
        if not fresh and kept is not None:
            return (*kept[3], position), ms
        self._answers.keep(key, (version, valid_until, built_at, tuple(answer)),
                           KEPT_ANSWER_BYTES)
        return (*answer, position), ms

    def _rows(self, sql: str, params, matches: bool = False) -> tuple[list, float]:
        """Run one statement to its end: its rows, the last of which ends with the
        position; ``matches``: it calls ``regexp()``."""
        start = time.perf_counter()
        now = time.monotonic()
        self._deadline = now + DEADLINE_S
        if self._hold and now >= self._held_until:
            self._snapshot(now)
        position = self._position
        armed = False
        if matches:
            armed = _MATCH_CLOCK.arm(self._deadline)
        try:
            # Read to the end: a statement left on its row would keep its read
            # transaction (and the WAL's read mark) until the cursor's next statement.
            rows = self._cursor.execute(sql if position is None else _without_position(sql),
                                        params).fetchall()
        except _Overtime as exc:
            self.release()
            if exc.costly:
                raise RegexTooCostly(f"one regex match ran past {MATCH_BUDGET_S}s") from None
            raise ReadTimeout(f"read statement interrupted after {DEADLINE_S}s") from None
        except apsw.InterruptError:
            self.release()
            raise ReadTimeout(f"read statement interrupted after {DEADLINE_S}s") from None
        except apsw.Error:
            self.release()
            raise
        finally:
            if armed:
                _MATCH_CLOCK.disarm()
        if not rows:
            raise RuntimeError("reader statement returned no row")
        if position is None:
            if self._held_until:
                self._position = rows[-1][-1]
        else:
            rows[-1] = rows[-1][:-1] + (position,)
        return rows, (time.perf_counter() - start) * 1000.0

    def positions(self) -> dict[str, tuple[str, int]]:
        """Each feed's applied ``(epoch, seq)`` as of now (a fresh read transaction, not
        a held snapshot): what a read waiting for a position polls."""
        self.release()
        self._deadline = time.monotonic() + DEADLINE_S
        return {cell: (epoch, seq) for cell, epoch, seq in
                self._cursor.execute(POSITIONS_SQL).fetchall()}

    def show_server(self, uuid: str, view: render.ServerView, prefixes: Prefixes,
                    project_id: str | None) -> ReadResult:
        """One server's document for ``view``; ``project_id`` scopes it (None: any)."""
        sql = show_server_sql(view, project_id is not None)
        params = (*_tokens(prefixes),
                  uuid) + ((project_id,) if project_id is not None else ())
        (body, position), ms = self._one_row(sql, params)
        return ReadResult(body, position or "", ms, int(body is not None))

    def list_servers(self, query: ServerQuery, view: render.ServerView | None,
                     prefixes: Prefixes, statement: ServerList | None = None
                     ) -> ReadResult:
        """``{"servers":[...]`` (without the closing brace: the caller adds the links);
        ``view`` None is the brief list (GET /servers). ``statement``: the listing's
        ``server_list(query, view)``, kept by a caller that asks the same one again."""
        if statement is None:
            statement = server_list(query, view)
        return self._list(statement.sql, statement.extra, prefixes, query.marker,
                          query.limit, None, statement.matches, b'{"servers":[')

    def show_flavor(self, flavorid: str, view: render.FlavorView, prefixes: Prefixes,
                    project_id: str | None) -> ReadResult:
        """One flavor; ``project_id`` (None: admin) limits it to public flavors and
        private ones the project has access to."""
        sql = show_flavor_sql(view, project_id is not None)
        params = (*_tokens(prefixes),
                  flavorid) + ((project_id,) if project_id is not None else ())
        (body, position), ms = self._one_row(sql, params)
        return ReadResult(body, position or "", ms, count=int(body is not None))

    def subresource(self, name: str, parent: str, project_id: str | None,
                    key: str | None = None) -> ReadResult:
        """One sub-resource of a flavor or server (``SUBRESOURCE_SQL[name]``):
        ``count`` 0 when the parent is missing (or not the caller's), ``body`` None
        when the item is; ``project_id`` None: any project."""
        sql = SUBRESOURCE_SQL[name]
        params = (parent, project_id) if key is None else (parent, project_id, key)
        (found, body, position), ms = self._one_row(sql, params)
        return ReadResult(body, position or "", ms, count=found)

    def list_flavors(self, query: FlavorQuery, view: render.FlavorView,
                     prefixes: Prefixes) -> ReadResult:
        sql, extra = build_flavor_list(query, view)
        return self._list(sql, extra, prefixes, query.marker, query.limit, query.project_id,
                          " REGEXP " in sql, b'{"flavors":[')

    def _list(self, sql: str, extra: list, prefixes: Prefixes, marker: str | None,
              limit: int, project_id: str | None, matches: bool, opening: bytes) -> ReadResult:
        params = [*_tokens(prefixes), marker, limit, project_id, *extra]
        key = (sql, tuple(params))
        kept = self._pages.get(key)
        if kept is not None and self._position is not None \
                and time.monotonic() < self._held_until \
                and kept[2] == self.conn.data_version():
            # A statement has read in the held snapshot, and the page was built from the
            # same data (the pager's version, which moves with every commit that the
            # snapshot sees): the page is what a statement would return, so none runs.
            page = kept[1]
            return ReadResult(page.body, self._position, 0.0, count=page.count,
                              last_id=page.last_id, marker_found=page.marker_found,
                              statements=0)
        params.append(kept[0] if kept is not None else None)
        rows, ms = self._rows(sql, params[:_parameter_count(sql)], matches)
        found, version, position = rows.pop()
        del rows[limit:]          # a server list's parts may each fill the page
        if kept is not None and kept[0] == version:
            # Nothing committed since the page was built: the statement read no item.
            page = kept[1]
            return ReadResult(page.body, position or "", ms, count=page.count,
                              last_id=page.last_id, marker_found=bool(found))
        body = b"".join((opening, b",".join([doc for _id, doc, _ in rows]), b"]"))
        result = ReadResult(body, position or "", ms, count=len(rows),
                            last_id=rows[-1][0] if rows else None, marker_found=bool(found))
        if not any(volatile for _id, _doc, volatile in rows):
            # with the pager's data version too (read after the statement that built
            # it), for the answer without a statement above
            self._pages.keep(key, (version, result, self.conn.data_version()),
                             PAGE_CACHE_BYTES)
        return result

    def show_instance_action(self, server_id: str, request_id: str,
                             view: render.InstanceActionView, project_id: str | None,
                             deleted_servers: bool) -> ReadResult:
        """One action of a server with its events as ``view`` shows them: ``count`` 0
        when the server is missing (or not the caller's), ``body`` None when the action
        is."""
        params = (server_id, project_id, int(deleted_servers), request_id)
        (found, body, position), ms = self._one_row(show_instance_action_sql(view), params)
        return ReadResult(body, position or "", ms, count=found)

    def list_instance_actions(self, server_id: str, project_id: str | None,
                              deleted_servers: bool, updated: bool, marker: str | None,
                              limit: int | None, changes_since: str | None,
                              changes_before: str | None) -> tuple[int, ReadResult]:
        """A server's actions, newest first: (server visible, the page), the page's body
        ``{"instanceActions":[...]`` without its closing brace."""
        params = (server_id, project_id, int(deleted_servers), marker,
                  -1 if limit is None else limit, changes_since, changes_before)
        (found, body, count, last_id, marker_found, position), ms = self._one_row(
            list_instance_actions_sql(updated), params)
        return found, ReadResult(body, position or "", ms, count=count, last_id=last_id,
                                 marker_found=bool(marker_found))

    def show_keypair(self, user_id: str, name: str, with_type: bool) -> ReadResult:
        """One of a user's key pairs (``body`` None: the user has none of that name)."""
        (body, position), ms = self._one_row(KEYPAIR_SQL[(True, with_type)],
                                             (user_id, name))
        return ReadResult(body, position or "", ms, count=int(body is not None))

    def list_keypairs(self, user_id: str, with_type: bool, marker: str | None,
                      limit: int | None) -> ReadResult:
        """A user's key pairs by name: ``{"keypairs":[...]`` without its closing brace."""
        (body, count, last_id, found, position), ms = self._kept_row(
            KEYPAIR_SQL[(False, with_type)], (user_id, marker, -1 if limit is None else limit))
        return ReadResult(body, position or "", ms, count=count, last_id=last_id,
                          marker_found=bool(found))
    def list_hypervisors(self, column: str, uuids: bool, marker: str | None,
                         limit: int | None, pattern: str | None, with_servers: bool,
                         empty_servers: bool) -> tuple[bool, ReadResult]:
        """A page of hypervisors (``column``: the stored view) as
        ``{"hypervisors":[...]`` without its closing brace, and whether a compute
        node matches ``pattern``."""
        (body, count, last_id, found, matched, position), ms = self._kept_row(
            list_hypervisors_sql(column),
            (marker, -1 if limit is None else limit, pattern, int(with_servers),
             int(empty_servers), int(uuids)))
        return bool(matched), ReadResult(
            body, position or "", ms, count=count,
            last_id=None if last_id is None else str(last_id), marker_found=bool(found))

    def show_hypervisor(self, column: str, uuids: bool, hypervisor_id: str,
                        with_servers: bool, empty_servers: bool) -> ReadResult:
        """``{"hypervisor":{...}}`` (``body`` None: no such hypervisor, or no live
        service on its host; ``count`` 1: a compute node has the id)."""
        (body, exists, position), ms = self._one_row(
            show_hypervisor_sql(column),
            (hypervisor_id, None, None, int(with_servers), int(empty_servers), int(uuids)))
        return ReadResult(body, position or "", ms, count=int(bool(exists)))
    def limits(self, project_id: str, minor: int) -> ReadResult:
        """GET /limits of ``project_id`` at 2.``minor`` (the whole body)."""
        (body, position), ms = self._one_row(limits_sql(minor), (project_id,))
        return ReadResult(body, position or "", ms, count=1)

    def quota_set(self, project_id: str, minor: int, mode: str) -> ReadResult:
        """GET /os-quota-sets/{project_id}[/detail|/defaults] (``mode``: QUOTA_SET_MODES)."""
        (body, position), ms = self._one_row(quota_set_sql(minor, mode), (project_id,))
        return ReadResult(body, position or "", ms, count=1)

    def list_services(self, host: str | None, binary: str | None, uuid_ids: bool,
                      forced_down: bool, default_zone: str = DEFAULT_AVAILABILITY_ZONE,
                      internal_zone: str = INTERNAL_AVAILABILITY_ZONE) -> ReadResult:
        """GET /os-services: every cell's services (``host``, ``binary``: only those)."""
        (body, position), ms = self._kept_row(list_services_sql(uuid_ids, forced_down),
                                              (host, binary, default_zone, internal_zone))
        return ReadResult(body, position or "", ms, count=1)

    def list_aggregates(self, with_uuid: bool) -> ReadResult:
        """GET /os-aggregates: every host aggregate, by id (the whole body)."""
        (body, position), ms = self._kept_row(AGGREGATE_SQL[(with_uuid, False)], ())
        return ReadResult(body, position or "", ms, count=1)

    def show_aggregate(self, aggregate_id: int, with_uuid: bool) -> ReadResult:
        """GET /os-aggregates/{id} (``body`` None: no such aggregate)."""
        (body, position), ms = self._one_row(AGGREGATE_SQL[(with_uuid, True)],
                                             (aggregate_id,))
        return ReadResult(body, position or "", ms, count=int(body is not None))

    def availability_zones(self, detail: bool, default_zone: str = DEFAULT_AVAILABILITY_ZONE,
                           internal_zone: str = INTERNAL_AVAILABILITY_ZONE) -> ReadResult:
        """GET /os-availability-zone[/detail] (the whole body), with Nova's default and
        internal zone names."""
        (body, position), ms = self._kept_row(AVAILABILITY_ZONES_SQL[detail],
                                              (default_zone, internal_zone))
        return ReadResult(body, position or "", ms, count=1)

    def show_server_group(self, group_id: str, project_id: str | None,
                          minor: int) -> ReadResult:
        """One server group (``body`` None: none of that uuid, or another project's)."""
        (body, position), ms = self._one_row(
            SERVER_GROUP_SQL[(True, _server_group_minor(minor))], (group_id, project_id))
        return ReadResult(body, position or "", ms, count=int(body is not None))

    def list_server_groups(self, project_id: str | None, limit: int, offset: int,
                           minor: int) -> ReadResult:
        """A project's server groups (``project_id`` None: every project's) by id."""
        (body, count, position), ms = self._kept_row(
            SERVER_GROUP_SQL[(False, _server_group_minor(minor))], (project_id, limit, offset))
        return ReadResult(body, position or "", ms, count=count)

    def cells_live_once(self) -> set[str]:
        """The feeds ingest has caught up with at least once (ever, in this replica)."""
        (found, _position), _ms = self._one_row(CELLS_LIVE_SQL, ())
        return set(found.split("\n")) if found else set()

    def deleted_servers(self) -> dict[str, int]:
        """Soft-deleted servers per cell (for the admin's status; not an API read). Walks
        the (deleted, ...) index over the deleted rows only."""
        (found, _position), _ms = self._one_row(DELETED_SERVERS_SQL, ())
        return json.loads(found) if found else {}


class _KeptBytes(dict):
    """What a reader keeps by (statement, parameters), newest last, within a byte
    budget: the oldest go first, and one entry may take at most half of the budget.
    ``size_of(entry)``: the bytes an entry holds."""

    def __init__(self, size_of):
        super().__init__()
        self.size_of = size_of
        self.bytes = 0

    def keep(self, key, entry, budget: int) -> None:
        old = self.pop(key, None)
        if old is not None:
            self.bytes -= self.size_of(old)
        size = self.size_of(entry)
        if size > budget // 2:
            return
        while self and self.bytes + size > budget:
            self.bytes -= self.size_of(self.pop(next(iter(self))))
        self[key] = entry
        self.bytes += size

    def clear(self) -> None:
        super().clear()
        self.bytes = 0


def _answer_size(answer: tuple) -> int:
    return sum(len(v) for v in answer if isinstance(v, (bytes, str)))


def _tokens(prefixes: Prefixes) -> tuple[str, str, str, str]:
    # ?1..?4 of every statement: (self token, self prefix, bookmark token, bookmark prefix)
    return (render.SELF_TOKEN_JSON, prefixes.self, render.BOOKMARK_TOKEN_JSON,
            prefixes.bookmark)


_READERS: dict[str, Reader] = {}
# A connection inherited across a fork is never used (nor closed) by the child.
os.register_at_fork(after_in_child=_READERS.clear)


def reader_for(path: str) -> Reader:
    """This process's reader of ``path``: opened on first use after any fork."""
    reader = _READERS.get(path)
    if reader is None:
        reader = _READERS[path] = Reader(open_reader(path))
    return reader
