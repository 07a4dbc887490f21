"""Changes of a server entity that no database row records, found by looking again:

- ``LivenessWatch``: Nova's liveness rule depends on the clock; every host's status is
  judged again and the servers of the hosts whose status changed are returned;
- ``SecurityGroupWatch``: Neutron's security group names of the live servers are asked
  again and the servers whose names changed are returned;
- ``ZoneWatch``: the hosts' availability zones (aggregates of Nova's API database) are
  read again and the live servers of the hosts whose zone changed are returned.

Both read the cell database through a ``rows(sql, params)`` function with portable SQL
(SQLite and MariaDB), so any source can run them on an interval and put what they return
into its change log (the SQLite source: ``sqlite_source.ChangeCarrier``).
"""

from __future__ import annotations

import logging
import time

from replica.cell import entity

log = logging.getLogger("replica.cell.rechecks")

_COMPUTE_SERVICES = ("SELECT sv.host, sv.disabled, sv.forced_down, sv.last_seen_up, "
                     "sv.created_at FROM services sv WHERE sv.binary = 'nova-compute' "
                     "AND sv.deleted = 0 ORDER BY sv.id")
_LIVE_ON_HOST = "SELECT uuid FROM instances WHERE host = ? AND deleted = 0 ORDER BY id"
_LIVE = "SELECT uuid FROM instances WHERE deleted = 0 ORDER BY uuid"
_NODES_ON_HOST = ("SELECT uuid FROM compute_nodes WHERE host = ? AND deleted = 0 "
                  "AND uuid IS NOT NULL ORDER BY id")


class LivenessWatch:
    """The host_status of every compute host, judged again on each ``changed_servers``."""

    def __init__(self, rows: entity.RowsFn, service_down_time: float, clock=time.time):
        self.rows = rows
        self.down_time = service_down_time
        self.clock = clock
        self.statuses: dict[str, str] | None = None
        self.node_states: dict[str, bool] | None = None
        # the compute nodes (hypervisor keys) of the hosts whose service went up or
        # down (Nova's servicegroup rule) at the last changed_servers call
        self.changed_nodes: list[str] = []

    def judge(self) -> dict[str, str]:
        now = self.clock()
        return {host: entity._host_status(host, 0, (
                    bool(disabled), bool(forced_down),
                    entity.service_is_up(seen, created, now, self.down_time)))
                for host, disabled, forced_down, seen, created in self.rows(_COMPUTE_SERVICES, ())}

    def _judge_nodes(self) -> None:
        """The hypervisors' state (up unless forced down or silent too long), judged
        again: ``changed_nodes`` gets the compute nodes of the hosts that changed."""
        now = self.clock()
        states = {host: not forced_down and entity.service_is_up(seen, created, now,
                                                                 self.down_time)
                  for host, _disabled, forced_down, seen, created
                  in self.rows(_COMPUTE_SERVICES, ())}
        before, self.node_states = self.node_states, states
        self.changed_nodes = []
        if before is None:
            return
        for host in sorted(h for h in set(before) | set(states)
                           if before.get(h) != states.get(h)):
            try:
                self.changed_nodes += [u for (u,) in self.rows(_NODES_ON_HOST, (host,))]
            except Exception:       # a cell database without compute_nodes
                log.debug("no compute nodes read for %s", host, exc_info=True)

    def changed_servers(self, involving: str | None = None) -> list[str]:
        """The live servers of the hosts whose status changed since the last call (none
        on the first call: nothing to compare with; the entities were built meanwhile);
        with ``involving``, only the hosts whose status became or left that one. The
        hypervisors whose state changed are left in ``changed_nodes``."""
        self._judge_nodes()
        statuses = self.judge()
        before, self.statuses = self.statuses, statuses
        if before is None:
            return []
        changed = sorted(h for h in set(before) | set(statuses)
                         if before.get(h) != statuses.get(h) and (
                             involving is None or involving in (before.get(h), statuses.get(h))))
        uuids: list[str] = []
        for host in changed:
            uuids += [u for (u,) in self.rows(_LIVE_ON_HOST, (host,))]
        if changed:
            log.info("host status changed on %s: %d servers", ", ".join(changed), len(uuids))
        return uuids


class SecurityGroupWatch:
    """Neutron's names for the live servers, asked again on each ``changed_servers``."""

    def __init__(self, rows: entity.RowsFn, names):
        self.rows = rows
        self.names = names          # neutron.SecurityGroupNames
        self.seeded = False

    def changed_servers(self) -> list[str]:
        live = [u for (u,) in self.rows(_LIVE, ())]
        if not self.seeded:
            # What the entities were built with, about: a change between their build
            # and this first answer waits for the server's next change.
            self.names.names(live)
            self.seeded = not self.names.down
            return []
        self.names.forget(set(self.names.known) - set(live))
        missing = [u for u in live if u not in self.names.known]
        first_seen: list[str] = []
        if missing:
            # What a new server's entity was built with is not known here (the builder
            # asked Neutron on its own, maybe before the server's ports existed, and a
            # port made after the server's last write touches no Nova table): one with
            # security groups at first sight is published again, once.
            first_seen = [u for u, names in self.names.names(missing).items() if names]
        changed = sorted(set(self.names.recheck()) | set(first_seen))
        if changed:
            log.info("security groups changed for %d servers", len(changed))
        return changed


class ZoneWatch:
    """The zone of every host (``entity.host_zones``), read again on each
    ``changed_servers``: a host put into or out of a zoned aggregate, or an aggregate's
    zone renamed, changes the availability zone Nova shows for the host's servers."""

    def __init__(self, rows: entity.RowsFn, api: entity.RowsFn):
        self.rows = rows
        self.api = api
        self.zones: dict[str, str] | None = None

    def changed_servers(self) -> list[str]:
        """The live servers of the hosts whose zone changed since the last call (none on
        the first call: the entities were built meanwhile)."""
        zones = entity.host_zones(self.api)
        before, self.zones = self.zones, zones
        if before is None:
            return []
        changed = sorted(h for h in set(before) | set(zones) if before.get(h) != zones.get(h))
        uuids: list[str] = []
        for host in changed:
            uuids += [u for (u,) in self.rows(_LIVE_ON_HOST, (host,))]
        if changed:
            log.info("availability zone changed on %s: %d servers", ", ".join(changed),
                     len(uuids))
        return uuids
