"""Every read response of the appliance, validated against the response schema that Nova
(nova_schemas.NOVA_VERSION) attaches to the same API method for the same microversion.

The microversions requested are every version at which one of Nova's response schemas of
these methods starts or ends (read from the controllers' decorators), plus the lowest
(2.1) and the highest the appliance advertises, for each path, as an admin and as a
member of the project."""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import quote

import pytest

from tests.api import entities as E
from tests.conftest import ROOT
from tests.conformance import nova_schemas as N
from tests.conformance.replicas import (CHANGES_SINCE, ROLES, SIM_PROJECT, SIM_ROLES,
                                        flavor_ids, server_ids)

MIN_VERSION = (2, 1)
MAX_VERSION = (2, 104)   # the highest microversion the appliance advertises

ENDPOINTS = [("servers", "index"), ("servers", "detail"), ("servers", "show"),
             ("flavors", "index"), ("flavors", "detail"), ("flavors", "show"),
             ("versions", "index"), ("versionsV21", "show")]

P = E.PROJECT
SINCE = "changes-since=" + quote(CHANGES_SINCE)

# (resource, method, path, roles allowed to ask it)
BOTH = ("admin", "member")
LISTINGS = [
    ("versions", "index", "/", BOTH),
    ("versionsV21", "show", "/v2.1", BOTH),
    ("versionsV21", "show", "/v2.1/", BOTH),
]
for _method in ("index", "detail"):
    _base = "/v2.1/servers" + ("/detail" if _method == "detail" else "")
    LISTINGS += [
        ("servers", _method, _base, BOTH),
        ("servers", _method, _base.replace("/v2.1/", f"/v2.1/{P}/"), BOTH),
        ("servers", _method, _base + "?limit=2", BOTH),                # servers_links
        ("servers", _method, _base + "?" + SINCE, BOTH),               # soft-deleted too
        ("servers", _method, _base + "?all_tenants=1&" + SINCE, ("admin",)),
        ("servers", _method, _base + "?deleted=true&all_tenants=1", ("admin",)),
    ]
for _method in ("index", "detail"):
    _base = "/v2.1/flavors" + ("/detail" if _method == "detail" else "")
    LISTINGS += [
        ("flavors", _method, _base, BOTH),
        ("flavors", _method, _base.replace("/v2.1/", f"/v2.1/{P}/"), BOTH),
        ("flavors", _method, _base + "?limit=2", BOTH),                # flavors_links
        ("flavors", _method, _base + "?is_public=None", ("admin",)),   # private ones too
    ]


def _cases():
    versions = N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION)
    for version in versions:
        v = N.format_version(version)
        for role in ROLES:
            paths = [(r, m, p) for r, m, p, roles in LISTINGS if role in roles]
            paths += [("servers", "show", f"/v2.1/servers/{sid}") for sid in server_ids(role)]
            paths.append(("servers", "show", f"/v2.1/{P}/servers/{server_ids(role)[0]}"))
            paths += [("flavors", "show", f"/v2.1/flavors/{quote(fid)}")
                      for fid in flavor_ids(role)]
            for resource, method, path in paths:
                yield pytest.param(version, role, resource, method, path,
                                   id=f"{v}-{role}-{path}")


CASES = list(_cases())


LEGACY = "X-OpenStack-Nova-API-Version"


def _check(api, version, role, resource, method, path, header="OpenStack-API-Version",
           roles=ROLES):
    v = N.format_version(version)
    attached, schema = N.schema_for(resource, method, version)
    if header is None:       # no microversion asked: the minimum
        where = f"GET {path} (no microversion header: {v}) as {role}"
        response = api.get(path, token=roles[role])
    elif header == LEGACY:
        where = f"GET {path} at microversion {v} ({LEGACY}) as {role}"
        response = api.get(path, token=roles[role], headers={LEGACY: v})
    else:
        where = f"GET {path} at microversion {v} as {role}"
        response = api.get(path, token=roles[role], version=v)
    # A method whose response schema is null answers 204 without a body (a tag's show).
    no_body = schema.get("type") == "null"
    expected = 204 if no_body else 200
    if response.status != expected:
        pytest.fail(f"{where}: HTTP {response.status}, expected {expected}: "
                    f"{response.body[:300]!r}", pytrace=False)
    if resource not in ("versions", "versionsV21"):
        answered = response.headers.get("openstack-api-version")
        if answered != f"compute {v}":
            pytest.fail(f"{where}: answered OpenStack-API-Version {answered!r}, "
                        f"expected 'compute {v}'", pytrace=False)
    problems = N.violations(schema, None if no_body else response.json())
    if no_body and response.body:
        problems.append(f"a body where Nova sends none: {response.body[:100]!r}")
    if problems:
        pytest.fail(f"{where}: the body breaks nova {N.NOVA_VERSION}'s {attached.where}:\n  "
                    + "\n  ".join(problems), pytrace=False)


@pytest.mark.parametrize("version, role, resource, method, path", CASES)
def test_body_matches_nova_schema(conformance_api, version, role, resource, method, path):
    _check(conformance_api, version, role, resource, method, path)


OTHER_HEADERS = [
    pytest.param(version, role, header, resource, method, path,
                 id=f"{N.format_version(version)}-{role}-{header or 'no header'}-{path}")
    for version in N.boundaries(ENDPOINTS, MIN_VERSION, MAX_VERSION)
    for role in ROLES
    for header in ((None, LEGACY) if version == MIN_VERSION else (LEGACY,))
    for resource, method, path in [("servers", "detail", f"/v2.1/servers/detail?{SINCE}"),
                                   ("servers", "index", "/v2.1/servers?limit=2"),
                                   ("servers", "show", f"/v2.1/servers/{server_ids(role)[1]}"),
                                   ("flavors", "detail", "/v2.1/flavors/detail"),
                                   ("flavors", "show", "/v2.1/flavors/2")]
]


@pytest.mark.parametrize("version, role, header, resource, method, path", OTHER_HEADERS)
def test_body_matches_nova_schema_other_headers(conformance_api, version, role, header,
                                                resource, method, path):
    """The legacy X-OpenStack-Nova-API-Version header, and no header at all (2.1)."""
    _check(conformance_api, version, role, resource, method, path, header)


# Sub-resources: Nova's schemas for them hold at every version; the appliance renders
# them the same at every version. Checked at both ends and where tags begin.
SUB_VERSIONS = [MIN_VERSION, (2, 26), MAX_VERSION]
SUB_ENDPOINTS = [("flavors_extraspecs", "index"), ("flavors_extraspecs", "show"),
                 ("server_metadata", "index"), ("server_metadata", "show"),
                 ("ips", "index"), ("ips", "show"), ("server_tags", "index"),
                 ("server_tags", "show")]
_SERVER_1 = E.server(1)["uuid"]          # metadata "role", tags "web"
_SERVER_17 = E.server(17)["uuid"]        # networks "private" and "public"
# Server 14's metadata key 'k\u00e9y' is one Nova refuses on write, and its metadata
# index schema refuses it too (server show's does not): left out of that check.
_NOT_NOVA_METADATA = {E.server(14)["uuid"]}


def _sub_cases():
    for version in SUB_VERSIONS:
        v = N.format_version(version)
        for role in ROLES:
            paths = [("flavors_extraspecs", "index", f"/v2.1/flavors/{quote(fid)}/os-extra_specs")
                     for fid in flavor_ids(role)]
            paths += [("flavors_extraspecs", "show", "/v2.1/flavors/2/os-extra_specs/hw:cpu_policy"),
                      ("server_metadata", "show", f"/v2.1/servers/{_SERVER_1}/metadata/role"),
                      ("ips", "show", f"/v2.1/servers/{_SERVER_17}/ips/public")]
            for sid in server_ids(role):
                paths.append(("ips", "index", f"/v2.1/servers/{sid}/ips"))
                if sid not in _NOT_NOVA_METADATA:
                    paths.append(("server_metadata", "index", f"/v2.1/servers/{sid}/metadata"))
                if version >= (2, 26):
                    paths.append(("server_tags", "index", f"/v2.1/servers/{sid}/tags"))
            if version >= (2, 26):
                paths.append(("server_tags", "show", f"/v2.1/servers/{_SERVER_1}/tags/web"))
            for resource, method, path in paths:
                yield pytest.param(version, role, resource, method, path,
                                   id=f"{v}-{role}-{path}")


@pytest.mark.parametrize("version, role, resource, method, path", list(_sub_cases()))
def test_subresource_body_matches_nova_schema(conformance_api, version, role, resource,
                                              method, path):
    _check(conformance_api, version, role, resource, method, path)


def test_every_version_tested_has_one_nova_schema_per_method():
    """Nova's ranges cover the appliance's whole range without gaps or overlaps."""
    for version in [(2, m) for m in range(MIN_VERSION[1], MAX_VERSION[1] + 1)]:
        for resource, method in ENDPOINTS + SUB_ENDPOINTS:
            N.schema_for(resource, method, version)   # raises unless exactly one matches
            N.schema_for(resource, method, version, N.QUERY)


def test_the_appliance_advertises_the_tested_range(conformance_api):
    body = conformance_api.get("/", token=None).json()
    (v21,) = [v for v in body["versions"] if v["id"] == "v2.1"]
    assert (v21["min_version"], v21["version"]) == (N.format_version(MIN_VERSION),
                                                    N.format_version(MAX_VERSION))


def test_listings_include_what_the_cases_need(conformance_api):
    """The variety is really served: soft-deleted servers under changes-since, faults,
    volume-backed servers, locks and tags, so the schema checks above see them."""
    detail = conformance_api.get(f"/v2.1/servers/detail?{SINCE}", token=ROLES["admin"],
                                 version=N.format_version(MAX_VERSION)).json()["servers"]
    statuses = {s["status"] for s in detail}
    assert {"ACTIVE", "ERROR", "DELETED", "SOFT_DELETED", "BUILD", "SHUTOFF",
            "SHELVED_OFFLOADED", "PAUSED", "RESCUE"} <= statuses, statuses
    assert any(s.get("fault") for s in detail)
    assert any(s["image"] == "" for s in detail)
    assert any(s["locked"] and s["locked_reason"] for s in detail)
    assert any(s["tags"] for s in detail)
    assert any(ip.get("OS-EXT-IPS:type") == "floating"
               for s in detail for ips in s["addresses"].values() for ip in ips)


# Over the simulated cell: every version where a schema starts, plus both ends.
SIM_VERSIONS = sorted({MIN_VERSION, MAX_VERSION}
                      | {a.min_version for r, m in ENDPOINTS for a in N.attached(r, m)
                         if a.min_version and MIN_VERSION <= a.min_version <= MAX_VERSION})
SIM_LISTINGS = [
    ("servers", "index", "/v2.1/servers?" + SINCE, BOTH),
    ("servers", "detail", "/v2.1/servers/detail?" + SINCE, BOTH),
    ("servers", "detail", "/v2.1/servers/detail?all_tenants=1&" + SINCE, ("admin",)),
    ("servers", "detail", f"/v2.1/{SIM_PROJECT}/servers/detail?limit=3", BOTH),
    ("flavors", "detail", "/v2.1/flavors/detail?is_public=None", ("admin",)),
    ("flavors", "detail", "/v2.1/flavors/detail", ("member",)),
    ("flavors", "index", "/v2.1/flavors", BOTH),
]


@pytest.mark.parametrize("version", SIM_VERSIONS, ids=N.format_version)
@pytest.mark.parametrize("role", SIM_ROLES)
def test_simulated_cell_bodies_match_nova_schemas(simulated, version, role):
    """Entities as the publisher builds them from a churned cell database: listings with
    soft-deleted servers, one server of each shape, every visible flavor."""
    paths = [(r, m, p) for r, m, p, roles in SIM_LISTINGS if role in roles]
    paths += [("servers", "show", f"/v2.1/servers/{sid}") for sid in simulated.show_sample(role)]
    paths += [("flavors", "show", f"/v2.1/flavors/{quote(f['flavorid'])}")
              for f in simulated.flavors if f["is_public"] or role == "admin"]
    failures = []
    for resource, method, path in paths:
        try:
            _check(simulated.api, version, role, resource, method, path, roles=SIM_ROLES)
        except pytest.fail.Exception as exc:
            failures.append(str(exc))
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


def test_simulated_cell_has_variety(simulated):
    states = {(e["vm_state"], e["deleted"]) for e in simulated.servers
              if e["project_id"] == SIM_PROJECT}
    assert ("deleted", True) in states and ("active", False) in states, states
    assert len(simulated.show_sample("member")) >= 4


@pytest.mark.parametrize("version", [MIN_VERSION, (2, 47), (2, 69), MAX_VERSION],
                         ids=N.format_version)
def test_the_checker_rejects_what_nova_rejects(conformance_api, version):
    """Nova's schemas, as loaded here, do fail bodies they should fail, each reported
    at its JSON path (through the 2.69+ oneOf of full / down-cell servers too)."""
    v = N.format_version(version)
    _, schema = N.schema_for("servers", "show", version)
    good = conformance_api.get(f"/v2.1/servers/{server_ids('admin')[0]}", token=ROLES["admin"],
                               version=v).json()
    assert N.violations(schema, good) == []
    breakages = {
        "$.server: Additional properties are not allowed ('bogus' was unexpected)":
            lambda s: s.update(bogus=1),
        "$.server: 'created' is a required property": lambda s: s.pop("created"),
        "$.server.updated: 'yesterday' is not a 'date-time'":
            lambda s: s.update(updated="yesterday"),
        "$.server.id: 'nope' is not a 'uuid'": lambda s: s.update(id="nope"),
        "$.server.flavor: Additional properties are not allowed":
            lambda s: s["flavor"].update(bogus=1),
        "$.server.status: 'SLEEPING' is not one of": lambda s: s.update(status="SLEEPING"),
    }
    for expected, breakage in breakages.items():
        body = json.loads(json.dumps(good))
        breakage(body["server"])
        found = N.violations(schema, body)
        assert any(line.startswith(expected) for line in found), (v, expected, found)


def test_nova_schemas_load_without_novas_runtime():
    """Only the schema modules and what they import run: no ``nova`` module stays loaded
    afterwards, and Nova's database, RPC, object and eventlet layers are never imported."""
    code = ("import sys; from tests.conformance import nova_schemas as N; N.modules(); "
            "heavy = ('nova', 'sqlalchemy', 'oslo_db', 'oslo_versionedobjects', "
            "'oslo_messaging', 'eventlet', 'keystonemiddleware'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]", out


LINK_HEADERS = {
    "Host": {"Host": "compute.example.com"},
    "X-Forwarded": {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com:8774"},
    "IPv6 Host": {"Host": "[::1]:8774"},
}


@pytest.mark.parametrize("headers", LINK_HEADERS.values(), ids=LINK_HEADERS.keys())
@pytest.mark.parametrize("resource, method, path", [
    ("versions", "index", "/"), ("versionsV21", "show", "/v2.1"),
    ("servers", "detail", "/v2.1/servers/detail?limit=2"),
    ("flavors", "index", "/v2.1/flavors?limit=2")])
def test_links_under_other_hosts_match_nova_schema(conformance_api, headers, resource,
                                                   method, path):
    """Links built from Host / X-Forwarded-* are still the URIs Nova's schemas demand."""
    _, schema = N.schema_for(resource, method, MAX_VERSION)
    v = N.format_version(MAX_VERSION)
    response = conformance_api.request("GET", path, token=ROLES["admin"], version=v,
                                       headers=headers)
    assert response.status == 200, (path, headers, response.body[:300])
    problems = N.violations(schema, response.json())
    assert not problems, f"GET {path} at microversion {v} with {headers}:\n  " + \
        "\n  ".join(problems)
