"""Each project's usage as Nova counts it for its quotas, kept by the writer in the same
transaction as the server rows it follows (schema step 14; ``GET /limits`` and the quota
set details read ``project_usage`` in their one statement).

A server counts when it is live in a cell (``in_cell``: not a build request), not
deleted and not soft-deleted: one instance, its flavor's vcpus and memory. The counted
servers are ``server_usage`` (one small row each: key, owning cell, project, cores, ram)
and ``project_usage`` holds their sums per project. For a batch of server upserts and
deletes the writer calls :meth:`UsageKeeper.apply` with the rows it is about to write:
the servers' previous contributions are read from ``server_usage`` (one statement), the
differences summed per project in Python, and only what changed is written (most events
change no contribution, and write nothing here). A resync's swap calls it with the rows it
stages and the keys it drops.

This replaced per-row triggers on ``servers`` (schema step 10): an AFTER INSERT trigger
on the servers' upsert, even one doing nothing, cost about 22 us per inserted row (about
twice the insert itself), the usage triggers about 25 us; see bench/README.md (ingest).
"""

from __future__ import annotations

import json
from operator import itemgetter
from typing import Iterable, Sequence

import apsw
import orjson

# The server row columns a contribution depends on, in this order.
USAGE_COLUMNS = ("uuid", "cell", "project_id", "deleted", "vm_state", "in_cell",
                 "d_flavor_v247")
SIZES_KEPT = 4096                         # flavor fragments whose sizes are kept
_FLAVOR_HEAD = ',"flavor":{"vcpus":'      # render's 2.47 flavor fragment begins so
_RAM_HEAD = '"ram":'
_OLD_SQL = ("SELECT uuid, cell, project_id, cores, ram FROM server_usage "
            "WHERE uuid IN (SELECT value FROM json_each(?))")
_PUT_SQL = ("INSERT INTO server_usage (uuid, cell, project_id, cores, ram) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (uuid) DO UPDATE SET cell = excluded.cell, "
            "project_id = excluded.project_id, cores = excluded.cores, ram = excluded.ram")
_DROP_SQL = "DELETE FROM server_usage WHERE uuid = ?"
_ADD_SQL = ("INSERT INTO project_usage (project_id, instances, cores, ram) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (project_id) DO UPDATE SET instances = instances + excluded.instances, "
            "cores = cores + excluded.cores, ram = ram + excluded.ram")


# The whole usage made again from the server rows (as schema step 14 fills it).
RECOUNT_SQL = (
    "DELETE FROM server_usage",
    "INSERT INTO server_usage (uuid, cell, project_id, cores, ram) "
    "SELECT uuid, cell, project_id, "
    "coalesce(json_extract('{' || substr(d_flavor_v247, 2) || '}', '$.flavor.vcpus'), 0), "
    "coalesce(json_extract('{' || substr(d_flavor_v247, 2) || '}', '$.flavor.ram'), 0) "
    "FROM servers WHERE deleted = 0 AND vm_state IS NOT 'soft-delete' AND in_cell = 1",
    "DELETE FROM project_usage",
    "INSERT INTO project_usage (project_id, instances, cores, ram) "
    "SELECT project_id, count(*), sum(cores), sum(ram) FROM server_usage GROUP BY project_id",
)


def recount(conn: apsw.Connection) -> None:
    """Make the usage again from every server row (for rows written without the writer,
    as tests' fixtures do), in the caller's transaction."""
    for statement in RECOUNT_SQL:
        conn.execute(statement)


def flavor_size(fragment: str | None) -> tuple[int, int]:
    """(vcpus, memory MB) of a server's embedded flavor, from its 2.47 ``d_flavor_v247``
    fragment (``,"flavor":{"vcpus":N,"ram":M,...}``); (0, 0) without one."""
    if not fragment:
        return 0, 0
    if fragment.startswith(_FLAVOR_HEAD):
        start = len(_FLAVOR_HEAD)
        end = fragment.find(",", start)
        if end > start and fragment.startswith(_RAM_HEAD, end + 1):
            ram_start = end + 1 + len(_RAM_HEAD)
            ram_end = fragment.find(",", ram_start)
            try:
                return int(fragment[start:end]), int(fragment[ram_start:ram_end])
            except ValueError:
                pass
    flavor = json.loads("{" + fragment[1:] + "}").get("flavor") or {}
    return int(flavor.get("vcpus") or 0), int(flavor.get("ram") or 0)


class UsageKeeper:
    """Keeps ``server_usage`` and ``project_usage`` for server rows of ``columns`` (the
    writer's server columns)."""

    def __init__(self, columns: Sequence[str]):
        self.at = tuple(columns.index(name) for name in USAGE_COLUMNS)
        self.width = len(columns)
        self._pick = itemgetter(*self.at)
        # (vcpus, memory) of the flavor fragments seen: a cloud has few flavors, and a
        # fragment is the same text for every server of one flavor
        self._sizes: dict[str, tuple[int, int]] = {}

    @staticmethod
    def applies_to(columns: Sequence[str]) -> bool:
        return all(name in columns for name in USAGE_COLUMNS)

    def usage_rows(self, rows: Iterable[tuple]) -> list[tuple]:
        """The ``USAGE_COLUMNS`` of full server rows (a row of another width is left to
        the server statement, which refuses it and rolls the batch back)."""
        pick, width = self._pick, self.width
        return [pick(row) for row in rows if len(row) == width]

    def apply(self, conn: apsw.Connection, upserts: Sequence[tuple],
              deletes: Sequence[tuple[str, str]]) -> None:
        """Before (or after) writing the server rows: ``upserts`` are rows of
        ``USAGE_COLUMNS`` (each server row after the write), ``deletes`` (key, cell)
        pairs (a row goes only if that cell owns it). One upsert per key; a key also
        deleted by another cell than its upsert's keeps the upsert (the row is the
        upsert's: the delete of the other cell's row finds none)."""
        if not upserts and not deletes:
            return
        keys = [row[0] for row in upserts] + [key for key, _cell in deletes]
        old = {row[0]: row[1:]
               for row in conn.execute(_OLD_SQL, (orjson.dumps(keys).decode(),))}
        if not old and not upserts:
            return
        totals: dict[str, list[int]] = {}
        put, drop = [], []

        def add(project: str, sign: int, cores: int, ram: int) -> None:
            total = totals.setdefault(project, [0, 0, 0])
            total[0] += sign
            total[1] += sign * cores
            total[2] += sign * ram

        for uuid, cell, project, deleted, vm_state, in_cell, fragment in upserts:
            was = old.get(uuid)
            if not deleted and vm_state != "soft-delete" and in_cell == 1:
                size = self._sizes.get(fragment)
                if size is None:
                    if len(self._sizes) >= SIZES_KEPT:
                        self._sizes.clear()
                    size = self._sizes[fragment] = flavor_size(fragment)
                cores, ram = size
                now = (cell, project, cores, ram)
                if now == was:
                    continue
                if was is not None:
                    add(was[1], -1, was[2], was[3])
                add(project, 1, cores, ram)
                put.append((uuid, *now))
            elif was is not None:
                add(was[1], -1, was[2], was[3])
                drop.append((uuid,))
        upserted = {row[0] for row in upserts} if deletes and upserts else ()
        for key, cell in deletes:
            was = old.get(key)
            if was is not None and was[0] == cell and key not in upserted:
                add(was[1], -1, was[2], was[3])
                drop.append((key,))
        if drop:
            conn.executemany(_DROP_SQL, drop)
        if put:
            conn.executemany(_PUT_SQL, put)
        changed = [(project, *total) for project, total in totals.items() if any(total)]
        if changed:
            conn.executemany(_ADD_SQL, changed)

    def apply_staged(self, conn: apsw.Connection, staging: str,
                     gone: Sequence[tuple[str, str]]) -> None:
        """A resync's swap: the rows staged in ``staging`` (a TEMP table of server rows)
        are upserted, the ``gone`` (key, cell) pairs deleted."""
        columns = ", ".join(USAGE_COLUMNS)
        staged = [tuple(row) for row in conn.execute(f"SELECT {columns} FROM {staging}")]
        self.apply(conn, staged, gone)
