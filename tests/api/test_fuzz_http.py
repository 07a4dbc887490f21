"""Property-based tests of the HTTP surface: whatever the method, path, query string,
headers and body, the API answers below 500 and its log holds no traceback.

The default budget is small (CI); ``FUZZ_EXAMPLES=5000`` runs longer."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api import entities as E
from tests.api.conftest import ADMIN, MEMBER, OTHER, SERVE, Api, stop_server
from tests.conftest import free_port, wait_for

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))

SERVER = E.server(1)["uuid"]
ROUTES = ["", "/", "/v2.1", "/v2.1/", "/v2", "/v2.1/servers", "/v2.1/servers/detail",
          f"/v2.1/servers/{SERVER}", f"/v2.1/{E.PROJECT}/servers",
          f"/v2.1/{E.PROJECT}/servers/detail", f"/v2.1/servers/{SERVER}/ips",
          f"/v2.1/servers/{SERVER}/ips/private", f"/v2.1/servers/{SERVER}/metadata",
          f"/v2.1/servers/{SERVER}/metadata/k", f"/v2.1/servers/{SERVER}/tags",
          "/v2.1/flavors", "/v2.1/flavors/detail", "/v2.1/flavors/1",
          "/v2.1/flavors/1/os-extra_specs", "/v2.1/flavors/1/os-extra_specs/k",
          "/v2.1/os-hypervisors", "/v2.1/servers/{}"]
PARAMS = ["limit", "marker", "name", "display_name", "hostname", "ip", "ip6", "status",
          "sort_key", "sort_dir", "changes-since", "changes-before", "all_tenants",
          "deleted", "soft_deleted", "tags", "tags-any", "not-tags", "not-tags-any", "flavor",
          "image", "host", "node", "locked", "minRam", "minDisk", "is_public", "project_id",
          "tenant_id", "user_id", "vm_state", "task_state", "key_name", "uuid", "config_drive",
          "availability_zone", "launched_at", "created_at", "power_state", "progress"]
VALUES = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789", min_size=1, max_size=6000),
    st.sampled_from(["(.*){30}x", "a{99999999999}", "(a*)*b", "[", "\\", "(?P<x", "-1",
                     "1.5", "true", "none", "2026-13-45", "2026-12-01T00:00:00Z",
                     SERVER, "00000000-0000-0000-0000-000000000000", "", "%00", "\x00",
                     "\ud800".encode("utf-8", "surrogatepass").decode("latin-1")]))
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xff,
                                             blacklist_characters="\x7f"), max_size=60)
SEGMENT = st.text(max_size=30)


@pytest.fixture(scope="module")
def fuzzed(replica_file, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("fuzz") / "server.log"
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, SERVE, replica_file, str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    api = Api(port)
    try:
        wait_for(lambda: api.get("/", token=None).status == 200, timeout=20,
                 what="the API server to answer")
        yield api, log_path
    finally:
        stop_server(proc)


def _send(api: Api, method: str, target: str, headers: dict, body: bytes | None):
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value.encode("latin-1"))
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@st.composite
def requests(draw):
    route = draw(st.sampled_from(ROUTES))
    if "{}" in route:
        route = route.replace("{}", urllib.parse.quote(draw(SEGMENT), safe=""))
    if draw(st.booleans()):
        route += "/" + urllib.parse.quote(draw(SEGMENT), safe="")
    pairs = draw(st.lists(st.tuples(st.one_of(st.sampled_from(PARAMS), st.text(max_size=10)),
                                    VALUES), max_size=5))
    query = urllib.parse.urlencode(
        [(k, v.encode("utf-8", "surrogatepass")) for k, v in pairs])
    target = (route or "/") + ("?" + query if query else "")
    headers = {}
    token = draw(st.one_of(st.none(), st.sampled_from([MEMBER, OTHER, ADMIN, "notused"]),
                           HEADER_TEXT))
    if token is not None:
        headers["X-Auth-Token"] = token
    version = draw(st.one_of(st.none(), st.sampled_from(["2.1", "2.47", "2.100", "latest",
                                                         "3.0", "2.0", "2." + "9" * 5000]),
                             HEADER_TEXT))
    if version is not None:
        name = draw(st.sampled_from(["OpenStack-API-Version", "X-OpenStack-Nova-API-Version"]))
        headers[name] = ("compute " + version) if name.startswith("Open") else version
    for extra in draw(st.lists(st.tuples(st.sampled_from(
            ["Host", "X-Forwarded-Proto", "X-Forwarded-Host", "Accept", "Content-Type",
             "Authorization", "X-Openstack-Request-Id", "Forwarded"]), HEADER_TEXT),
            max_size=3)):
        headers[extra[0]] = extra[1]
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE",
                                   "PATCH", "OPTIONS"]))
    body = draw(st.one_of(st.none(), st.binary(max_size=200))) if method != "GET" else None
    return method, target, headers, body


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(request=requests())
def test_no_request_gets_a_5xx(fuzzed, request):
    api, _ = fuzzed
    method, target, headers, body = request
    status, answer = _send(api, method, target, headers, body)
    assert status < 500, (method, target[:300], headers, status, answer[:300])


def test_zz_the_fuzzed_server_logged_no_traceback(fuzzed):
    _, log_path = fuzzed
    with open(log_path, errors="replace") as f:
        text = f.read()
    assert "Traceback" not in text, text[-3000:]
