"""Bad input from a client is the client's error (4xx), never a 503, a reset connection
or a traceback in the log: `appliance serve` with its real workers, API and admin
listener."""

from __future__ import annotations

import json
import os
import socket
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.appliance.conftest import PYTHON, get, start_process, wait_running
from tests.appliance.test_serve import token_line
from tests.conftest import free_port

ADMIN_TOKEN = "admin-secret"
MEMBER = "member-token"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("hostile")
    tokens = tmp_path / "tokens"
    tokens.write_text(token_line(MEMBER, "p1"))
    port, admin_port = free_port(), free_port()
    config = tmp_path / "appliance.toml"
    config.write_text(f'listen_port = {port}\nadmin_port = {admin_port}\nworkers = 1\n'
                      f'data_dir = "{tmp_path / "data"}"\nauth = "tokens"\n'
                      f'tokens_file = "{tokens}"\nadmin_token = "{ADMIN_TOKEN}"\n'
                      f'admin_token_always = true\n')
    running = start_process([PYTHON, "-m", "appliance", "serve", "--config", str(config)],
                            {}, tmp_path / "data", port=port, admin_port=admin_port)
    try:
        wait_running(running, 1)
        yield running
    finally:
        running.stop()


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send the whole request, then read the whole answer (a reset raises)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def member_get(served, path, **headers):
    return get(served.port, path, headers={"X-Auth-Token": MEMBER, **headers})


def test_a_64k_url_is_414(served):
    path = "/v2.1/servers?name=" + "a" * 65536
    answer = raw_exchange(served.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status_of(answer) == 414


def test_a_1mb_header_is_431(served):
    request = (b"GET /v2.1/servers HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20)
               + b"\r\n\r\n")
    assert status_of(raw_exchange(served.port, request)) == 431


def test_500_headers_are_431_without_a_traceback(served):
    headers = b"".join(b"X-H%d: v\r\n" % n for n in range(500))
    request = b"GET /v2.1/servers HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
    assert status_of(raw_exchange(served.port, request)) == 431
    # The worker still serves.
    assert member_get(served, "/v2.1/servers")[0] == 200


@pytest.mark.parametrize("path,status,message", [
    ("/v2.1/servers?limit=" + "9" * 5000, 400, "limit must be an integer"),
    ("/v2.1/servers/detail?limit=" + "1" * 4301, 400, "limit must be an integer"),
    ("/v2.1/flavors?limit=" + "9" * 5000, 400, "limit must be an integer"),
    ("/v2.1/servers?name=" + urllib.parse.quote("a{99999999999}"), 400,
     "Invalid input for query parameters name. Value: a{99999999999}. "
     "'a{99999999999}' is not a 'regex'"),
    ("/v2.1/servers?hostname=" + urllib.parse.quote("(x{4294967296})"), 400,
     "is not a 'regex'"),
    ("/v2.1/flavors?minRam=" + "9" * 5000, 400, "Invalid minRam filter"),
])
def test_huge_numbers_are_a_bad_request(served, path, status, message):
    got, body, _ = member_get(served, path)
    assert got == status, body[:300]
    (fault,) = json.loads(body).values()
    assert message in fault["message"]


def test_a_huge_microversion_is_not_supported(served):
    version = "2." + "1" * 5000
    got, body, _ = member_get(served, "/v2.1/servers",
                              **{"OpenStack-API-Version": f"compute {version}"})
    assert got == 406, body[:300]
    (fault,) = json.loads(body).values()
    assert fault["code"] == 406 and fault["message"].startswith("Version 2.111")


def test_the_admin_listener_refuses_long_urls_and_many_headers_cleanly(served):
    answer = raw_exchange(served.admin_port,
                          f"GET /status?{'a' * 65536} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status_of(answer) == 414
    headers = b"".join(b"X-H%d: v\r\n" % n for n in range(500))
    answer = raw_exchange(served.admin_port,
                          b"GET /status HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status_of(answer) == 431


def test_a_non_utf8_admin_token_is_a_clean_401(served):
    answer = raw_exchange(served.admin_port,
                          b"GET /status HTTP/1.1\r\nHost: x\r\nX-Auth-Token: \xff\xfe\x80\r\n"
                          b"Connection: close\r\n\r\n")
    assert status_of(answer) == 401
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head
    assert json.loads(body)["error"]["code"] == 401


def test_a_non_utf8_api_token_is_a_clean_401(served):
    answer = raw_exchange(served.port,
                          b"GET /v2.1/servers HTTP/1.1\r\nHost: x\r\nX-Auth-Token: \xff\xfe\r\n"
                          b"Connection: close\r\n\r\n")
    assert status_of(answer) == 401


RAW_LINE = st.binary(max_size=120).filter(lambda b: b"\r" not in b and b"\n" not in b)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
          database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow])
@given(method=st.one_of(st.sampled_from([b"GET", b"HEAD", b"POST", b"BREW"]), RAW_LINE),
       target=st.one_of(st.sampled_from([b"/v2.1/servers", b"/", b"*", b""]), RAW_LINE),
       version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/x", b""]),
       headers=st.lists(st.one_of(RAW_LINE, st.sampled_from([
           b"Content-Length: -1", b"Content-Length: 99999999999999999999",
           b"Transfer-Encoding: chunked", b"Host:", b": novalue", b"X-Auth-Token: \xff",
           b"OpenStack-API-Version: compute 2." + b"9" * 5000])), max_size=6),
       body=st.binary(max_size=64))
def test_raw_requests_get_no_5xx(served, method, target, version, headers, body):
    request = b" ".join(p for p in (method, target, version) if p) + b"\r\n"
    request += b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body
    try:
        answer = raw_exchange(served.port, request)
    except ConnectionResetError:
        return      # a request gevent cannot parse at all may be cut; never a 5xx
    if answer.startswith(b"HTTP/"):      # HTTP/0.9 answers have no status line
        assert status_of(answer) < 500, (request[:200], answer[:200])


def test_a_malformed_chunked_body_is_no_traceback(served):
    """gevent finds the bad chunk size while discarding the unread body, after the app
    answered."""
    request = (b"POST /v2.1/servers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"X-Auth-Token: " + MEMBER.encode() + b"\r\n\r\n\r\n")
    answer = raw_exchange(served.port, request)
    assert status_of(answer) < 500
    assert "Traceback" not in served.log()


NEXT_REQUEST = (b"GET /v2.1/flavors HTTP/1.1\r\nHost: x\r\nX-Auth-Token: " + MEMBER.encode()
                + b"\r\n\r\n")


@pytest.mark.parametrize("framing, status", [
    (b"Content-Length: 2\r\nContent-Length: 40", 400),     # two lengths
    (b"Content-Length: 2, 40", 400),
    (b"Content-Length: +2", 400),                           # what int() would take
    (b"Content-Length: 2_0", 400),
    (b"Content-Length: 2\r\nTransfer-Encoding: chunked", 400),   # both
    (b"Transfer-Encoding: chunked\r\nContent-Length: 2", 400),
    (b"Transfer-Encoding: chunked, identity", 400),        # chunked is not last
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 400),
    (b"Transfer-Encoding: xchunked", 400),
    (b"Transfer-Encoding: gzip, chunked", 501),             # a coding not supported
])
def test_a_body_whose_length_can_be_read_two_ways_is_refused(served, framing, status):
    """The answer is the refusal alone and the connection closes: what follows is never
    read as a request of its own."""
    request = (b"POST /v2.1/os-keypairs HTTP/1.1\r\nHost: x\r\nX-Auth-Token: "
               + MEMBER.encode() + b"\r\n" + framing + b"\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
               + NEXT_REQUEST)
    answer = raw_exchange(served.port, request)
    assert status_of(answer) == status, answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1, answer[:600]
    assert b"Connection: close" in answer


def test_transfer_encoding_in_an_http10_request_is_refused(served):
    request = (b"POST /v2.1/os-keypairs HTTP/1.0\r\nHost: x\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    assert status_of(raw_exchange(served.port, request)) == 400


@pytest.mark.parametrize("framing, body", [
    (b"Content-Length: 2\r\nContent-Length: 2", b"{}"),      # the same length twice
    (b"Transfer-Encoding: Chunked ", b"2\r\n{}\r\n0\r\n\r\n"),
])
def test_a_body_with_one_reading_is_read_and_the_next_request_answered(served, framing,
                                                                      body):
    request = (b"POST /v2.1/os-keypairs HTTP/1.1\r\nHost: x\r\nX-Auth-Token: "
               + MEMBER.encode() + b"\r\n" + framing + b"\r\n\r\n" + body + NEXT_REQUEST)
    answers = raw_exchange(served.port, request).split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2, answers
    assert 400 <= int(answers[0][:3]) < 500                    # the keypair body is bad
    assert answers[1].startswith(b"200 "), answers[1][:300]    # the flavors


def test_a_read_in_the_absolute_form_is_answered_with_its_host(served):
    answer = raw_exchange(served.port, b"GET http://edge.example:9/v2.1/ HTTP/1.1\r\n"
                          b"Host: x\r\nX-Auth-Token: " + MEMBER.encode() + b"\r\n\r\n")
    assert status_of(answer) == 200, answer[:300]
    assert b'"href": "http://edge.example:9/v2.1/"' in answer, answer


def test_zz_nothing_above_left_a_traceback(served):
    log = served.log()
    at = log.find("Traceback")
    assert at < 0, log[max(0, at - 1500):at + 2500]
