"""The read requests the benchmarks make, as wrk targets.

Lists are made as an admin with ``all_tenants=1`` so every size of replica lists as many
servers as it holds (a project's own list would depend on how populate() spreads them).
"""

from __future__ import annotations

from dataclasses import dataclass

API = "/v2.1"
FILTER_NAME = "web"   # a name prefix of about a tenth of the simulated servers


@dataclass(frozen=True)
class Endpoint:
    key: str
    label: str
    path: str | None           # fixed path with query; None: show of random ids
    expect_servers: int | None = None  # entries a full page holds

    @property
    def is_show(self) -> bool:
        return self.path is None


ENDPOINTS = {e.key: e for e in (
    Endpoint("show", "GET /servers/{id}", None),
    Endpoint("list100", "GET /servers?limit=100", f"{API}/servers?limit=100&all_tenants=1", 100),
    Endpoint("detail100", "GET /servers/detail?limit=100",
             f"{API}/servers/detail?limit=100&all_tenants=1", 100),
    Endpoint("detail1000", "GET /servers/detail?limit=1000",
             f"{API}/servers/detail?limit=1000&all_tenants=1", 1000),
    Endpoint("filtered", "GET /servers/detail?status=ACTIVE&name=..",
             f"{API}/servers/detail?status=ACTIVE&name={FILTER_NAME}&limit=100&all_tenants=1"),
)}

SHOW_PREFIX = f"{API}/servers/"
