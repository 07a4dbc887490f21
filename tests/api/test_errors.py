"""The bad-input matrix: each answered with the right 4xx and Nova's fault body, and the
server keeps serving."""

from __future__ import annotations

import pytest

from appliance.api.faults import not_replicated
from tests.api.conftest import MEMBER

NOT_REPLICATED = not_replicated().message


def fault(r):
    (name, body), = r.json().items()
    assert body["code"] == r.status
    return name, body["message"]


@pytest.mark.parametrize("path,version,status,name,message", [
    ("/v2.1/servers?limit=abc", None, 400, "badRequest",
     "Invalid input for query parameters limit. Value: abc. 'abc' does not match '^[0-9]*$'"),
    ("/v2.1/servers/detail?limit=-1", None, 400, "badRequest",
     "Invalid input for query parameters limit. Value: -1. '-1' does not match '^[0-9]*$'"),
    ("/v2.1/servers?limit=", None, 400, "badRequest",
     "Invalid input for query parameters limit. Value: . '' should be non-empty"),
    ("/v2.1/flavors?limit=1.5", None, 400, "badRequest",
     "Invalid input for query parameters limit. Value: 1.5. '1.5' does not match '^[0-9]*$'"),
    ("/v2.1/servers?marker=00000000-0000-0000-0000-000000000000", None, 400, "badRequest",
     "marker [00000000-0000-0000-0000-000000000000] not found"),
    ("/v2.1/flavors?marker=nope", None, 400, "badRequest", "marker [nope] not found"),
    ("/v2.1/flavors?marker=6", None, 400, "badRequest", "marker [6] not found"),
    ("/v2.1/servers?sort_dir=sideways", None, 400, "badRequest",
     "Invalid input received: Unknown sort direction, must be 'desc' or 'asc'"),
    ("/v2.1/servers?sort_key=display_name&sort_dir=asc&sort_dir=desc", None, 400,
     "badRequest", "Invalid input received: Sort direction size exceeds sort key size"),
    ("/v2.1/servers?status=NOPE", "2.38", 400, "badRequest", "Invalid status value"),
    ("/v2.1/servers?changes-since=yesterday", None, 400, "badRequest",
     "Invalid input for query parameters changes-since. Value: yesterday. "
     "'yesterday' is not a 'date-time'"),
    ("/v2.1/servers?changes-before=2026-13-45", "2.66", 400, "badRequest",
     "Invalid input for query parameters changes-before. Value: 2026-13-45. "
     "'2026-13-45' is not a 'date-time'"),
    ("/v2.1/servers?changes-since=2026-11-05T00:00:00Z&changes-before=2026-11-01T00:00:00Z",
     "2.66", 400, "badRequest",
     "The value of changes-since must be less than or equal to changes-before."),
    ("/v2.1/servers?name=[", None, 400, "badRequest",
     "Invalid input for query parameters name. Value: [. '[' is not a 'regex'"),
    ("/v2.1/servers?locked=maybe", "2.73", 400, "badRequest",
     "Unrecognized value 'maybe', acceptable values are: '0', '1', "
     "'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"),
    # GET /servers' schema has patternProperties ('^_'): jsonschema names the regexes;
    # the unexpected names come sorted.
    ("/v2.1/servers?foo=bar", "2.75", 400, "badRequest",
     "'foo' does not match any of the regexes: '^_'"),
    ("/v2.1/servers/detail?foo=1&bar=2", "2.75", 400, "badRequest",
     "'bar', 'foo' do not match any of the regexes: '^_'"),
    # The properties are checked before additionalProperties.
    ("/v2.1/servers?foo=1&limit=x", "2.75", 400, "badRequest",
     "Invalid input for query parameters limit. Value: x. 'x' does not match '^[0-9]*$'"),
    ("/v2.1/flavors?zeta=1&alpha=2", "2.75", 400, "badRequest",
     "Additional properties are not allowed ('alpha', 'zeta' were unexpected)"),
    ("/v2.1/flavors?foo=bar", "2.75", 400, "badRequest",
     "Additional properties are not allowed ('foo' was unexpected)"),
    ("/v2.1/flavors?sort_key=colour", None, 400, "badRequest", None),
    ("/v2.1/flavors?sort_dir=up", None, 400, "badRequest",
     "Invalid input for query parameters sort_dir. Value: up. 'up' is not one of "
     "['asc', 'desc']"),
    ("/v2.1/flavors/detail?minRam=lots", None, 400, "badRequest", "Invalid minRam filter [lots]"),
    ("/v2.1/flavors?minDisk=x", None, 400, "badRequest", "Invalid minDisk filter [x]"),
    ("/v2.1/servers?sort_key=vcpus", "2.75", 400, "badRequest", None),
    ("/v2.1/servers?sort_key=colour", None, 400, "badRequest", None),
    ("/v2.1/servers/nope", None, 404, "itemNotFound", "Instance nope could not be found."),
    ("/v2.1/flavors/nope", None, 404, "itemNotFound", "Flavor nope could not be found."),
    ("/v2.1/flavors/6", None, 404, "itemNotFound", "Flavor 6 could not be found."),
    ("/v2.1/os-simple-tenant-usage", None, 404, "itemNotFound", NOT_REPLICATED),
    ("/v2.1/servers/x/y/z", None, 404, "itemNotFound", NOT_REPLICATED),
    ("/nowhere", None, 404, "itemNotFound", "The resource could not be found."),
    ("/v2.1/servers", "2.a", 400, "badRequest",
     "API Version String 2.a is of invalid format. Must be of format MajorNum.MinorNum."),
    ("/v2.1/servers", "2.105", 406, "computeFault",
     "Version 2.105 is not supported by the API. Minimum is 2.1 and maximum is 2.104."),
    ("/v2.1/servers", "3.0", 406, "computeFault",
     "Version 3.0 is not supported by the API. Minimum is 2.1 and maximum is 2.104."),
    ("/v2.1/servers", "2.0", 406, "computeFault",
     "Version 2.0 is not supported by the API. Minimum is 2.1 and maximum is 2.104."),
])
def test_bad_input(api, path, version, status, name, message):
    r = api.get(path, version=version)
    assert r.status == status, r.body
    assert r.headers["content-type"] == "application/json"
    got_name, got_message = fault(r)
    assert got_name == name
    if message is not None:
        assert got_message == message
    assert api.get("/v2.1/servers?limit=1").status == 200     # still serving


def test_sort_key_error_names_the_valid_keys(api):
    r = api.get("/v2.1/servers?sort_key=colour")
    message = fault(r)[1]
    assert message.startswith("Invalid input for query parameters sort_key. Value: colour. "
                              "'colour' is not one of [")
    assert "'display_name'" in message


def test_invalid_status_before_2_38_is_an_empty_list(api):
    r = api.get("/v2.1/servers?status=NOPE", version="2.37")
    assert r.status == 200
    assert r.json() == {"servers": []}


def test_huge_query_strings(api):
    # A long but acceptable query: a long name filter simply matches nothing.
    r = api.get("/v2.1/servers?name=" + "x" * 6000)
    assert r.status == 200 and r.json() == {"servers": []}
    # Many unknown parameters from 2.75: refused by the schema.
    many = "&".join(f"p{i}=1" for i in range(600))
    r = api.get("/v2.1/servers?" + many, version="2.75")
    assert r.status == 400
    assert fault(r)[1].startswith("'p0', 'p1', 'p10', 'p100', 'p101'")
    assert fault(r)[1].endswith("' do not match any of the regexes: '^_'")
    # Past the server's request-line limit the WSGI server itself answers 414.
    r = api.get("/v2.1/servers?name=" + "y" * 20000)
    assert r.status == 414
    assert api.get("/v2.1/servers?limit=1").status == 200


def test_bad_headers_are_harmless(api):
    r = api.get("/v2.1/servers?limit=1",
                headers={"Host": 'evil"host', "X-Forwarded-Proto": "gopher"})
    assert r.status == 200
    href = r.json()["servers"][0]["links"][0]["href"]
    assert "evil" not in href and href.startswith("http://")
    r = api.get("/v2.1/servers?limit=1", token='we"ird:' + "p" * 10)
    assert r.status == 200 and r.json() == {"servers": []}
    r = api.get('/v2.1/we"ird/servers', token='we"ird')
    assert r.status == 200
    assert r.json() == {"servers": []}


def test_version_header_variants(api):
    r = api.get("/v2.1/servers?limit=1", headers={"OpenStack-API-Version":
                                                  "placement 1.2, compute 2.47"})
    assert r.headers["openstack-api-version"] == "compute 2.47"
    r = api.get("/v2.1/servers?limit=1", headers={"OpenStack-API-Version": "compute LATEST"})
    assert r.headers["openstack-api-version"] == "compute 2.104"
    r = api.get("/v2.1/servers?limit=1", headers={"OpenStack-API-Version": "placement 1.2"})
    assert r.headers["openstack-api-version"] == "compute 2.1"


def test_fault_carries_version_headers(api):
    r = api.get("/v2.1/servers/nope", version="2.60", token=MEMBER)
    assert r.status == 404
    assert r.headers["openstack-api-version"] == "compute 2.60"
    assert r.headers["x-openstack-request-id"].startswith("req-")
    assert r.headers["server-timing"].startswith("db;")


def test_the_not_replicated_fault_lists_every_kind_read():
    """The list comes from the kinds' declarations: each kind's reads are named, and a
    kind added to the registry is listed without touching the message."""
    import dataclasses

    from replica import kinds
    for kind in kinds.KINDS.values():
        for name in kind.reads_as:
            assert name in NOT_REPLICATED, name
    assert "answers reads of servers, flavors, " in NOT_REPLICATED
    assert "limits, quota sets, " in NOT_REPLICATED
    assert NOT_REPLICATED.count("availability zones") == 1     # two kinds, one read
    extra = dataclasses.replace(kinds.KINDS["flavor"], count_label="new_things")
    saved = dict(kinds.KINDS)
    try:
        kinds.KINDS["new_thing"] = extra
        assert kinds.reads_as().endswith("aggregates, server groups and new things")
    finally:
        kinds.KINDS.clear()
        kinds.KINDS.update(saved)
