"""Baselines 2 and 3, the normalized way, as Nova's API reads: at request time, the
servers are read from the cell database schema with its joins (``build_servers``: one
query per child table for the page), each row is rendered into its API document, and
the response is JSON-encoded.

With several cells (baseline 3, scatter-gather) a list asks every cell for a full page
(each cell loads and joins ``limit`` instances, as Nova's multi-cell lister does), merges
them by the sort keys and keeps ``limit``; a show finds the one cell that holds the id.

    python -m bench.normalized_server --port P --workers N --cell a.db [--cell b.db ...]
        [--api-db flavors.db]

Answers GET /v2.1/servers/{id}, /v2.1/servers and /v2.1/servers/detail with ``limit``,
``status`` and ``name`` (substring), every project (an admin's ``all_tenants``), newest
first like Nova's default sort (created_at desc, id desc).

With ``--api-db`` (Nova's API database tables, a flavor source) also the routes beyond
servers the way Nova's API answers them, at request time (``bench/routes.py``): the
flavors (list, detail, show: the page query, the flavor joins, rendering), and for the
benchmarks' project (the noauth admin's, ``demo``) ``/limits`` and
``/os-quota-sets/{project}[/detail|/defaults]``: the quota rows of the project and the
default class over Nova's defaults, and the usage counted in every cell at request time
(Nova counts instances, cores and ram with one aggregate per cell). The admin routes and
server groups the same way, each from its tables at request time with the cell side's
builders (``replica.cell.entity``) and ``replica.render``'s documents: a private flavor's
access list, ``/os-server-groups`` and one group (the demo project's: the group rows,
their policies and members, the members kept that are live servers in some cell),
``/os-services`` (every cell's services, each compute service's zone from the host
aggregates' metadata, its state from its heartbeat), ``/os-aggregates`` and one
aggregate, ``/os-hypervisors``, ``/detail`` and one hypervisor (every cell's compute
nodes with their host's compute service), ``/os-availability-zone`` and ``/detail`` (every
cell's services with their zones, grouped), all at 2.1. Extra specs, key pairs and the
quota defaults have no normalized way here (``bench/routes.py`` compares them with the
constant body only).
"""

from __future__ import annotations

import argparse
import heapq
import json
import re
from urllib.parse import parse_qs

import apsw

from bench import prefork

API = "/v2.1"
DEFAULT_LIMIT = 1000
SHOW = re.compile(r"^/v2\.1/servers/([0-9a-fA-F-]{36})$")
FLAVOR = re.compile(r"^/v2\.1/flavors/([^/]+)$")
QUOTA_SET = re.compile(r"^/v2\.1/os-quota-sets/([^/]+?)(/detail|/defaults)?$")
FLAVOR_ACCESS = re.compile(r"^/v2\.1/flavors/([^/]+)/os-flavor-access$")
SERVER_GROUP = re.compile(r"^/v2\.1/os-server-groups/([^/]+)$")
AGGREGATE = re.compile(r"^/v2\.1/os-aggregates/([0-9]+)$")
HYPERVISOR = re.compile(r"^/v2\.1/os-hypervisors/([0-9]+)$")
DEFAULT_ZONE = "nova"            # Nova's default_availability_zone
INTERNAL_ZONE = "internal"       # Nova's internal_service_availability_zone
SERVICE_DOWN_TIME_S = 60         # Nova's service_down_time
API_BINARIES = ("nova-osapi_compute", "nova-metadata")      # not listed by os-services
LIVE_MEMBERS_SQL = ("SELECT uuid FROM instances WHERE deleted = 0 AND uuid IN ({marks}) "
                    "AND (vm_state IS NULL OR vm_state != 'soft-delete')")
PROJECT = "demo"         # the noauth admin's project: the benchmarks' requests
USAGE_SQL = ("SELECT count(*), coalesce(sum(vcpus), 0), coalesce(sum(memory_mb), 0) "
             "FROM instances WHERE project_id = ? AND deleted = 0 "
             "AND (vm_state IS NULL OR vm_state != 'soft-delete')")
# Nova's status filter maps an API status to vm states (ACTIVE is vm_state active).
STATUS_VM_STATES = {"ACTIVE": ("active",), "SHUTOFF": ("stopped",), "ERROR": ("error",),
                    "BUILD": ("building",), "PAUSED": ("paused",), "SUSPENDED": ("suspended",),
                    "RESIZE": ("resized",), "VERIFY_RESIZE": ("resized",),
                    "SHELVED_OFFLOADED": ("shelved_offloaded",), "SHELVED": ("shelved",)}


def _page_sql(status: str | None, name: str | None, detail: bool = True) -> tuple[str, list]:
    """The page query. A brief list reads every column of the page's instances, as
    Nova's does (``GET /servers`` loads whole Instance objects, without the joins
    the detail view asks for); the detail list reads the keys, then the entities
    (``build_servers``)."""
    where, args = ["deleted = 0"], []
    if status:
        states = STATUS_VM_STATES.get(status.upper(), (status.lower(),))
        where.append(f"vm_state IN ({', '.join('?' * len(states))})")
        args += list(states)
    if name:
        where.append("display_name LIKE ?")
        args.append(f"%{name}%")
    columns = "created_at, id, uuid, display_name" + ("" if detail else ", instances.*")
    sql = (f"SELECT {columns} FROM instances WHERE {' AND '.join(where)} "
           "ORDER BY created_at DESC, id DESC LIMIT ?")
    return sql, args


def _column_names(cursor) -> list[str]:
    try:
        return [d[0] for d in cursor.getdescription()]
    except apsw.ExecutionCompleteError:     # no row
        return []


class Cells:
    """The cell databases, opened in the worker (after the fork)."""

    def __init__(self, paths: list[str]):
        from replica.cell.connection import open_cell_reader
        self.conns = [open_cell_reader(p) for p in paths]

    def page(self, limit: int, status: str | None, name: str | None, detail: bool):
        """Per cell: its page of rows with their entities (the joins), then merged."""
        from replica.cell.entity import build_servers
        sql, args = _page_sql(status, name, detail)
        per_cell = []
        for conn in self.conns:
            with conn:  # one read transaction per cell: a consistent page
                cursor = conn.execute(sql, (*args, limit))
                names = _column_names(cursor)[4:]
                rows = cursor.fetchall()
                if detail:
                    entities = build_servers(conn, [r[2] for r in rows])
                else:       # one object per instance, of all its columns (brief list)
                    entities = {r[2]: dict(zip(names, r[4:])) for r in rows}
            per_cell.append([(r[0], r[1], r[2], r[3], entities.get(r[2])) for r in rows])
        if len(per_cell) == 1:
            merged = per_cell[0]
        else:
            merged = list(heapq.merge(*per_cell, key=lambda r: (r[0] or "", r[1]), reverse=True))
        return merged[:limit]

    def show(self, uuid: str):
        from replica.cell.entity import build_servers
        for conn in self.conns:
            with conn:
                if conn.execute("SELECT 1 FROM instances WHERE uuid = ? AND deleted = 0",
                                (uuid,)).fetchone():
                    return build_servers(conn, [uuid]).get(uuid)
        return None


def _service_up(forced_down: bool, heartbeat: str | None, now: float) -> bool:
    import datetime
    if forced_down or not heartbeat:
        return False
    seen = datetime.datetime.fromisoformat(heartbeat.replace("Z", "+00:00").replace(" ", "T"))
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=datetime.timezone.utc)
    return abs(now - seen.timestamp()) <= SERVICE_DOWN_TIME_S


def _services(cells: "Cells", host_zones: dict[str, str]) -> list[tuple[dict, str, bool]]:
    """Every cell's services in row order: (the entity, its zone, up now)."""
    import time
    from replica.cell.entity import build_services
    now = time.time()
    out = []
    for conn in cells.conns:
        with conn:
            keys = [u for (u,) in conn.execute(
                "SELECT uuid FROM services WHERE deleted = 0 AND uuid IS NOT NULL ORDER BY id")]
            built = build_services(conn, keys)
        for key in keys:
            s = built.get(key)
            if s is None:
                continue
            zone = (host_zones.get(s["host"], DEFAULT_ZONE) if s["topic"] == "compute"
                    else INTERNAL_ZONE)
            out.append((s, zone, _service_up(s["forced_down"], s["heartbeat"], now)))
    return out


def services_document(cells: "Cells", host_zones: dict[str, str]) -> dict:
    """GET /os-services at 2.1: every cell's services but the API's (row order), each with
    its zone and its state judged now."""
    from replica.render import plain_time
    return {"services": [
        {"binary": s["binary"], "host": s["host"], "id": s["id"], "zone": zone,
         "status": "disabled" if s["disabled"] else "enabled", "state": "up" if up else "down",
         "updated_at": plain_time(s["updated_at"]), "disabled_reason": s["disabled_reason"]}
        for s, zone, up in _services(cells, host_zones) if s["binary"] not in API_BINARIES]}


def zones_document(cells: "Cells", host_zones: dict[str, str], detail: bool) -> dict:
    """GET /os-availability-zone[/detail]: the zones of enabled services (sorted), then
    those of disabled services only; the list hides the internal zone, the detail gives
    each available zone's hosts and their enabled services but the API's."""
    from replica.render import plain_time
    services = _services(cells, host_zones)
    available = sorted({zone for s, zone, _up in services if not s["disabled"]})
    unavailable = sorted({zone for s, zone, _up in services if s["disabled"]} - set(available))
    if not detail:
        return {"availabilityZoneInfo": [
            {"zoneName": zone, "zoneState": {"available": state}, "hosts": None}
            for zones, state in ((available, True), (unavailable, False))
            for zone in zones if zone != INTERNAL_ZONE]}
    hosts: dict[str, dict] = {}
    for s, zone, up in services:
        if s["disabled"] or s["binary"] in API_BINARIES:
            continue
        hosts.setdefault(zone, {}).setdefault(s["host"], {})[s["binary"]] = {
            "available": up, "active": True, "updated_at": plain_time(s["updated_at"])}
    return {"availabilityZoneInfo": [
        {"zoneName": zone, "zoneState": {"available": True}, "hosts": hosts.get(zone, {})}
        for zone in available] + [
        {"zoneName": zone, "zoneState": {"available": False}, "hosts": None}
        for zone in unavailable]}


def hypervisors(cells: "Cells", node_id: int | None = None) -> list[dict]:
    """Every cell's listed hypervisor entities (a compute node whose host has a live
    compute service), by id (``node_id``: that one only)."""
    from replica.cell.entity import build_hypervisors
    out = []
    for conn in cells.conns:
        with conn:
            sql = "SELECT uuid FROM compute_nodes WHERE deleted = 0"
            args: tuple = ()
            if node_id is not None:
                sql += " AND id = ?"
                args = (node_id,)
            keys = [u for (u,) in conn.execute(sql + " ORDER BY id", args)]
            built = build_hypervisors(conn, keys)
        out += [built[k] for k in keys
                if built.get(k) is not None and built[k]["service_id"] is not None]
    return out


def live_members(cells: "Cells", uuids: list[str]) -> list[str]:
    """The members that are live servers in some cell, in the group's order."""
    if not uuids:
        return []
    live: set[str] = set()
    sql = LIVE_MEMBERS_SQL.format(marks=", ".join("?" * len(uuids)))
    for conn in cells.conns:
        with conn:
            live.update(u for (u,) in conn.execute(sql, uuids))
    return [u for u in uuids if u in live]


class ApiDatabase:
    """Nova's API database tables (a flavor source), opened in the worker."""

    def __init__(self, path: str):
        from replica.cell.connection import open_cell_reader
        self.conn = open_cell_reader(path)

    def flavors(self, detail: bool, host: str) -> dict:
        from replica.cell.entity import build_flavors
        from replica.render import FlavorView, render_flavor_document
        with self.conn:
            ids = [r[0] for r in self.conn.execute(
                "SELECT flavorid FROM flavors WHERE disabled = 0 ORDER BY flavorid")]
            entities = build_flavors(self.conn, ids)
        view = FlavorView(minor=1, detail=detail)
        return {"flavors": [render_flavor_document(entities[i], view, f"http://{host}{API}",
                                                   f"http://{host}")
                            for i in ids if entities.get(i) is not None]}

    def flavor(self, flavorid: str, host: str) -> dict | None:
        from replica.cell.entity import build_flavors
        from replica.render import FlavorView, render_flavor_document
        with self.conn:
            entity = build_flavors(self.conn, [flavorid]).get(flavorid)
        if entity is None:
            return None
        return {"flavor": render_flavor_document(entity, FlavorView(minor=1, detail=True),
                                                 f"http://{host}{API}", f"http://{host}")}

    def quotas(self, project_id: str) -> tuple[dict, dict, int]:
        """(the project's limits, the defaults' limits, its server groups)."""
        from replica import feed
        from replica.cell.entity import build_quotas
        keys = [feed.QUOTA_DEFAULT_KEY, feed.quota_key(project_id)]
        with self.conn:
            built = build_quotas(self.conn, keys)
        defaults = built[keys[0]]["limits"]
        own = built[keys[1]] or {"limits": {}, "server_groups_used": 0}
        limits = {name: own["limits"].get(name) if own["limits"].get(name) is not None
                  else value for name, value in defaults.items()}
        return limits, defaults, own["server_groups_used"]

    def flavor_access(self, flavorid: str) -> dict | None:
        """A private flavor's access list (None: no such flavor, or a public one)."""
        from replica.cell.entity import build_flavors
        with self.conn:
            entity = build_flavors(self.conn, [flavorid]).get(flavorid)
        if entity is None or entity["is_public"]:
            return None
        return {"flavor_access": [{"flavor_id": flavorid, "tenant_id": project}
                                  for project in entity["projects"]]}

    def server_groups(self, project_id: str, group: str | None = None) -> list[dict]:
        """The project's server group entities in row order (``group``: that one only)."""
        from replica.cell.entity import build_server_groups
        with self.conn:
            if group is None:
                keys = [u for (u,) in self.conn.execute(
                    "SELECT uuid FROM instance_groups WHERE project_id = ? ORDER BY id",
                    (project_id,))]
            else:
                keys = [group]
            built = build_server_groups(self.conn, keys)
        return [built[k] for k in keys if built.get(k) is not None]

    def aggregates(self, aggregate_id: int | None = None) -> list[dict]:
        """Host aggregate entities by id (``aggregate_id``: that one only)."""
        from replica.cell.entity import build_aggregates
        with self.conn:
            if aggregate_id is None:
                keys = [str(a) for (a,) in self.conn.execute(
                    "SELECT id FROM aggregates ORDER BY id")]
            else:
                keys = [str(aggregate_id)]
            built = build_aggregates(self.conn, keys)
        return [built[k] for k in keys if built.get(k) is not None]

    def host_zones(self) -> dict[str, str]:
        """{host: its zones, as Nova joins them} from the aggregates' metadata."""
        zones: dict[str, set] = {}
        with self.conn:
            for host, zone in self.conn.execute(
                    "SELECT h.host, m.value FROM aggregate_hosts h JOIN aggregate_metadata m "
                    "ON m.aggregate_id = h.aggregate_id WHERE m.\"key\" = 'availability_zone'"):
                zones.setdefault(host, set()).add(zone)
        return {host: ",".join(sorted(names)) for host, names in zones.items()}


def make_app(paths: list[str], minor: int = 1, api_db: str | None = None):
    # Request-time rendering: the pure renderer the replica's fragments are built from.
    from replica.render import (ServerView, quota_set_resources, render_aggregate_document,
                                render_hypervisor_document, render_limits_document,
                                render_server_brief, render_server_document,
                                render_server_group)

    cells = Cells(paths)
    api = ApiDatabase(api_db) if api_db else None

    def usage(project_id: str, server_groups: int) -> dict:
        counted = {"instances": 0, "cores": 0, "ram": 0, "server_groups": server_groups}
        for conn in cells.conns:
            with conn:
                count, cores, ram = conn.execute(USAGE_SQL, (project_id,)).fetchone()
            counted["instances"] += count
            counted["cores"] += cores
            counted["ram"] += ram
        return counted

    def beyond_servers(path: str, host: str):
        """A route beyond servers (``--api-db``): its document, or None."""
        if path in (f"{API}/flavors", f"{API}/flavors/detail"):
            return api.flavors(path.endswith("/detail"), host)
        match = FLAVOR.match(path)
        if match:
            return api.flavor(match.group(1), host)
        if path == f"{API}/limits":
            limits, _defaults, groups = api.quotas(PROJECT)
            return render_limits_document(limits, usage(PROJECT, groups), minor)
        match = QUOTA_SET.match(path)
        if match:
            project_id, mode = match.group(1), match.group(2)
            limits, defaults, groups = api.quotas(project_id)
            shown = quota_set_resources(minor)
            if mode == "/defaults":
                return {"quota_set": {"id": project_id, **{r: defaults[r] for r in shown}}}
            if mode == "/detail":
                used = usage(project_id, groups)
                return {"quota_set": {"id": project_id, **{
                    r: {"in_use": used.get(r, 0), "limit": limits[r], "reserved": 0}
                    for r in shown}}}
            return {"quota_set": {"id": project_id, **{r: limits[r] for r in shown}}}
        match = FLAVOR_ACCESS.match(path)
        if match:
            return api.flavor_access(match.group(1))
        if path == f"{API}/os-server-groups":
            return {"server_groups": [
                render_server_group(g, minor, live_members(cells, g["members"]))
                for g in api.server_groups(PROJECT)]}
        match = SERVER_GROUP.match(path)
        if match:
            found = api.server_groups(PROJECT, match.group(1))
            return {"server_group": render_server_group(
                found[0], minor, live_members(cells, found[0]["members"]))} if found else None
        if path == f"{API}/os-services":
            return services_document(cells, api.host_zones())
        if path in (f"{API}/os-availability-zone", f"{API}/os-availability-zone/detail"):
            return zones_document(cells, api.host_zones(), path.endswith("/detail"))
        if path == f"{API}/os-aggregates":
            return {"aggregates": [render_aggregate_document(a, minor)
                                   for a in api.aggregates()]}
        match = AGGREGATE.match(path)
        if match:
            found = api.aggregates(int(match.group(1)))
            return {"aggregate": render_aggregate_document(found[0], minor)} if found else None
        if path in (f"{API}/os-hypervisors", f"{API}/os-hypervisors/detail"):
            detail = path.endswith("/detail")
            return {"hypervisors": [render_hypervisor_document(h, minor, detail)
                                    for h in hypervisors(cells)]}
        match = HYPERVISOR.match(path)
        if match:
            found = hypervisors(cells, int(match.group(1)))
            return {"hypervisor": render_hypervisor_document(found[0], minor, True)} \
                if found else None
        return None
    show_view = ServerView(minor=minor, admin=True, show=True)
    list_view = ServerView(minor=minor, admin=True, show=False)

    def respond(start_response, status: str, document) -> list[bytes]:
        body = json.dumps(document).encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(body)))])
        return [body]

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        host = environ.get("HTTP_HOST", "localhost")
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        match = SHOW.match(path)
        if match:
            entity = cells.show(match.group(1))
            if entity is None:
                return respond(start_response, "404 Not Found",
                               {"itemNotFound": {"code": 404, "message": "Instance could not be found."}})
            return respond(start_response, "200 OK", {"server": render_server_document(
                entity, show_view, f"http://{host}{API}", f"http://{host}")})
        if path in (f"{API}/servers", f"{API}/servers/detail"):
            detail = path.endswith("/detail")
            limit = min(int(query.get("limit", DEFAULT_LIMIT)), DEFAULT_LIMIT)
            rows = cells.page(limit, query.get("status"), query.get("name"), detail)
            if detail:
                servers = [render_server_document(e, list_view, f"http://{host}{API}", f"http://{host}")
                           for _c, _i, _u, _n, e in rows if e is not None]
            else:
                servers = [render_server_brief(e, f"http://{host}{API}", f"http://{host}")
                           for _c, _i, _u, _n, e in rows]
            document = {"servers": servers}
            if len(rows) == limit:
                document["servers_links"] = [{"rel": "next", "href": f"http://{host}{path}"
                                              f"?limit={limit}&marker={rows[-1][2]}"}]
            return respond(start_response, "200 OK", document)
        if api is not None:
            document = beyond_servers(path, host)
            if document is not None:
                return respond(start_response, "200 OK", document)
        return respond(start_response, "404 Not Found",
                       {"itemNotFound": {"code": 404, "message": "Not found."}})

    return app


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cell", action="append", required=True, help="a cell database (repeat)")
    parser.add_argument("--api-db", help="Nova's API database tables (a flavor source): "
                                         "flavors, limits and quota sets too")
    args = parser.parse_args(argv)
    prefork.serve(lambda: make_app(args.cell, api_db=args.api_db), args.host, args.port,
                  args.workers)


if __name__ == "__main__":
    main()
