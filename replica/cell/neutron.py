"""Security group names of servers as Nova shows them: Nova asks Neutron for the ports
whose ``device_id`` is the server and for those ports' security groups, and lists
``{"name": ...}`` per port and group (a group without a name by its id; a group the
caller cannot see is left out). A security group change touches no Nova table, so the
publisher keeps the names it last got per server and asks again on an interval
(``SecurityGroupNames.recheck``), enqueueing the servers whose names changed.

An unreachable Neutron leaves the names last known (counted in ``failures`` and
logged once per outage; entity builds stop asking for a few seconds after a failure, so
that the feed does not wait on timeouts); a server never answered for keeps the cell database's own
security groups (what the entity holds without a Neutron configured).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

log = logging.getLogger("replica.cell.neutron")

TIMEOUT_SECONDS = 5.0
DOWN_BACKOFF_SECONDS = 5.0      # after a failure, builds use the last known names this long
IDS_PER_REQUEST = 100           # device_id / id filters per query string


class NeutronUnreachable(Exception):
    pass


class SecurityGroupNames:
    """``names(uuids) -> {uuid: [names]}`` from Neutron, cached per server."""

    def __init__(self, url: str, token: str | None = None, timeout: float = TIMEOUT_SECONDS):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.known: dict[str, list[str]] = {}
        self.failures = 0
        self.down = False
        self.retry_at = 0.0
        self._lock = threading.Lock()

    # -- HTTP ---------------------------------------------------------------------------

    def _get(self, path: str, query: list[tuple[str, str]]) -> dict:
        request = urllib.request.Request(
            f"{self.url}{path}?{urllib.parse.urlencode(query)}",
            headers={"Accept": "application/json", **(
                {"X-Auth-Token": self.token} if self.token else {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except (OSError, ValueError, urllib.error.URLError) as exc:
            raise NeutronUnreachable(f"GET {path}: {exc}") from exc

    def _ask(self, uuids: list[str]) -> dict[str, list[str]]:
        ports: list[dict] = []
        for start in range(0, len(uuids), IDS_PER_REQUEST):
            chunk = uuids[start:start + IDS_PER_REQUEST]
            ports += self._get("/v2.0/ports", [("device_id", u) for u in chunk] + [
                ("fields", "device_id"), ("fields", "security_groups")]).get("ports", [])
        group_ids = sorted({g for port in ports for g in port.get("security_groups") or []})
        names: dict[str, str] = {}
        for start in range(0, len(group_ids), IDS_PER_REQUEST):
            chunk = group_ids[start:start + IDS_PER_REQUEST]
            for group in self._get("/v2.0/security-groups", [("id", g) for g in chunk] + [
                    ("fields", "id"), ("fields", "name")]).get("security_groups", []):
                names[group["id"]] = group.get("name") or group["id"]
        out: dict[str, list[str]] = {uuid: [] for uuid in uuids}
        for port in ports:
            device = port.get("device_id")
            if device in out:
                out[device] += [names[g] for g in port.get("security_groups") or []
                                if g in names]
        return out

    # -- what the entity builder and the publisher call -------------------------------

    def names(self, uuids: list[str]) -> dict[str, list[str]]:
        """Names for ``uuids`` (asked now; on failure the last known ones). While
        Neutron is down, entity builds do not wait for it: they get the last known names
        until DOWN_BACKOFF_SECONDS after the failure (``recheck`` always asks)."""
        if self.down and time.monotonic() < self.retry_at:
            with self._lock:
                return {u: self.known[u] for u in uuids if u in self.known}
        try:
            answered = self._ask(list(uuids))
        except NeutronUnreachable as exc:
            self._failed(exc)
            with self._lock:
                return {u: self.known[u] for u in uuids if u in self.known}
        self._recovered()
        with self._lock:
            self.known.update(answered)
        return answered

    def recheck(self) -> list[str]:
        """Ask again for every server known; return those whose names changed."""
        with self._lock:
            before = dict(self.known)
        if not before:
            return []
        try:
            answered = self._ask(list(before))
        except NeutronUnreachable as exc:
            self._failed(exc)
            return []
        self._recovered()
        with self._lock:
            self.known.update(answered)
        return [u for u, names in answered.items() if before.get(u) != names]

    def forget(self, uuids) -> None:
        with self._lock:
            for uuid in uuids:
                self.known.pop(uuid, None)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.retry_at = time.monotonic() + DOWN_BACKOFF_SECONDS
        if not self.down:
            log.warning("Neutron %s unreachable (%s): keeping the last known security "
                        "group names", self.url, exc)
            self.down = True

    def _recovered(self) -> None:
        if self.down:
            log.info("Neutron %s answers again", self.url)
            self.down = False
