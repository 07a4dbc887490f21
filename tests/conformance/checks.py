"""The two checks every route's conformance test makes against Nova's own schemas: a
200 body against the response schema (one statement), and query strings judged as Nova's
query validator judges them."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest

from tests.conformance import nova_schemas as N
from tests.conformance.replicas import ROLES

_ENUM = re.compile(r"^(.* is not one of )\[(.*)\]$")


def comparable(message):
    """A message with the list of an enum error as a set: Nova builds the servers' sort
    key enum from a set from 2.73 on, so its order is the nova-api process's hash order
    (it differs between two runs of Nova itself)."""
    match = _ENUM.match(message) if isinstance(message, str) else None
    if match is None:
        return message
    return (match.group(1), frozenset(match.group(2).split(", ")))


def check_body(api, resource: str, method: str, version, path: str, role: str) -> None:
    """GET ``path`` as ``role`` answers 200 with at most one statement (a list page kept
    in the held snapshot needs none), and its body is valid
    under Nova's response schema of ``resource``'s ``method`` at ``version``."""
    v = N.format_version(version)
    attached, schema = N.schema_for(resource, method, version)
    response = api.get(path, token=ROLES[role], version=v)
    where = f"GET {path} at {v} as {role}"
    assert response.status == 200, f"{where}: {response.status} {response.body[:300]!r}"
    assert response.statements <= 1
    problems = N.violations(schema, response.json())
    if problems:
        pytest.fail(f"{where}: the body breaks {attached.where}:\n  " + "\n  ".join(problems),
                    pytrace=False)


def check_query(api, resource: str, method: str, version, path: str, probes, role: str,
                status: int = 200) -> None:
    """Each probe (a query string as (name, value) pairs) on ``path``: where Nova's query
    validator refuses it, the same 400; where it accepts it, ``status``."""
    v = N.format_version(version)
    attached, schema = N.schema_for(resource, method, version, N.QUERY)
    failures = []
    for probe in probes:
        params: dict[str, list[str]] = {}
        for name, value in probe:
            params.setdefault(name, []).append(value)
        refused = N.query_error(schema, params)
        query = urlencode(probe)
        response = api.get(f"{path}?{query}", token=ROLES[role], version=v)
        where = f"GET {path}?{query} at {v} as {role} ({attached.where})"
        if refused is not None:
            expected = {"badRequest": {"code": 400, "message": comparable(refused)}}
            got = response.json() if response.status == 400 else None
            if got is not None and isinstance(got.get("badRequest"), dict):
                got["badRequest"]["message"] = comparable(got["badRequest"].get("message"))
            if got != expected:
                failures.append(f"{where}: Nova answers 400 {refused!r}; the appliance "
                                f"{response.status} {response.body[:200]!r}")
        elif response.status != status:
            failures.append(f"{where}: Nova's schema accepts it; the appliance answered "
                            f"{response.status} {response.body[:200]!r}")
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


def check_every_version(endpoints, min_version, max_version) -> None:
    """Nova has one response and one query schema per (resource, method) at every
    microversion of the range."""
    for minor in range(min_version[1], max_version[1] + 1):
        for resource, method in endpoints:
            N.schema_for(resource, method, (2, minor))
            N.schema_for(resource, method, (2, minor), N.QUERY)
