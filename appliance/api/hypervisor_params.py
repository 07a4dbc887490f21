"""GET /os-hypervisors[/detail|/{id}] parameters (Nova's hypervisors controller and its
query schemas): before 2.33 anything (ignored); 2.33 ``limit`` and ``marker`` (others
ignored); from 2.53 only ``limit``, ``marker``, ``hypervisor_hostname_pattern`` and
``with_servers`` (each once), and show only ``with_servers``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from appliance.api import params as P

PAGING_MINOR = 33
CPU_INFO_OBJECT_MINOR = 28
UUID_MINOR = 53               # uuid ids, the query parameters; search and servers routes gone
EMPTY_SERVERS_MINOR = 75      # with_servers: "servers": [] for a host without any
NO_RESOURCES_MINOR = 88       # detail drops the resource fields and cpu_info, adds uptime
# The 2.53 schemas' properties in their order (jsonschema checks them so, then the others)
INDEX_ORDER = ("limit", "marker", "hypervisor_hostname_pattern", "with_servers")
SHOW_ORDER = ("with_servers",)
INDEX_SCHEMA = frozenset(INDEX_ORDER)
PAGING_SCHEMA = frozenset(("limit", "marker"))      # 2.33 - 2.52
SHOW_SCHEMA = frozenset(SHOW_ORDER)
# parameter_types.boolean's enum, as jsonschema names it in its message
NOVA_BOOLEAN = [True, "True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes",
                False, "False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no"]
_FQDN = re.compile(r"^[a-zA-Z0-9-._]*$")


@dataclass(slots=True)
class HypervisorQuery:
    limit: int | None = None          # None: every hypervisor
    marker: str | None = None
    pattern: str | None = None        # hypervisor_hostname_pattern (2.53)
    with_servers: bool = False        # (2.53)
    refusal: str | None = None        # a 400 Nova gives after its policy check


def _single(multi: dict, name: str) -> None:
    values = multi.get(name, ())
    if len(values) > 1:
        raise P.invalid_query(name, repr(values), f"{values!r} is too long")


def _check_values(multi: dict, name: str) -> None:
    """One 2.53 property's values against its item schema (single_param: the items, then
    maxItems, which ``_single`` checks)."""
    for value in multi[name]:
        if name == "limit":
            P.check_limit({"limit": [value]})
        elif name == "with_servers" and value not in NOVA_BOOLEAN:
            raise P.invalid_query(name, value, f"'{value}' is not one of {NOVA_BOOLEAN!r}")
        elif name == "hypervisor_hostname_pattern":
            if not value:
                raise P.invalid_query(name, value, "'' should be non-empty")
            if len(value) > 255:
                raise P.invalid_query(name, value, f"'{value}' is too long")
            if not _FQDN.match(value):
                raise P.invalid_query(name, value,
                                      f"'{value}' does not match '^[a-zA-Z0-9-._]*$'")


def hypervisor_query(multi: dict, minor: int, max_limit: int, show: bool) -> HypervisorQuery:
    query = HypervisorQuery()
    if minor >= UUID_MINOR:
        for name in SHOW_ORDER if show else INDEX_ORDER:
            if name in multi:
                _check_values(multi, name)
                _single(multi, name)
        P.additional_properties(multi, SHOW_SCHEMA if show else INDEX_SCHEMA,
                                pattern_underscore=False)
        if "with_servers" in multi:
            query.with_servers = P.bool_from_string(multi["with_servers"][0], strict=True)
        if not show and "hypervisor_hostname_pattern" in multi:
            query.pattern = multi["hypervisor_hostname_pattern"][0]
    if show or minor < PAGING_MINOR:
        return query
    P.check_limit(multi)
    if query.pattern is not None:
        if "limit" in multi or multi.get("marker", [""])[-1]:     # an empty marker is none
            # Nova gives its reason as webob's detail, not its explanation: what the
            # fault says is webob's default explanation of a 400
            query.refusal = ("The server could not comply with the request since it is "
                             "either malformed or otherwise incorrect.")
        return query
    query.limit = max_limit
    if "limit" in multi:
        query.limit = min(max_limit, P.int_param(multi["limit"][-1], "limit"))
    query.marker = multi["marker"][-1] if multi.get("marker") else None
    return query
