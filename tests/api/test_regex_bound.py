"""A regex filter never holds a worker longer than the read deadline, whatever the
pattern: the worst patterns we know against names built to make them backtrack answer
(200, 400 when one match backtracks past its budget, or a clean 503) within the deadline,
and a plain request sent meanwhile to the same single-process server is answered too."""

from __future__ import annotations

import concurrent.futures
import time
import urllib.parse

import pytest

from replica.store.reader import DEADLINE_S, MATCH_BUDGET_S
from tests.api import entities as E
from tests.api.conftest import MEMBER, start_server, stop_server
from tests.conftest import free_port

# Exponential (or worse) in Python's backtracking engine against the names below.
BOMBS = [
    "(.*){30}x",
    "(a|a)*b",
    "(a*)*b",
    "(a+)+$b",
    "(x+x+)+y",
    "^(\\w+\\s?)*$!",
    "(a|aa)+c",
    "(.*a){20}z",
    "(a*)*\\1b",           # a backreference: no linear-time engine takes it
    "((a{1,30}){1,30}){1,30}b",
]
LONG_A = "a" * 60
SLACK_S = 1.5          # process scheduling on a shared machine, HTTP round trips


@pytest.fixture(scope="module")
def bomb_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bombs") / "replica.db")
    names = [LONG_A, LONG_A + "!", "x" * 50 + "w", "aaaa bbbb cccc dddd eeee ffff gggg hhhh!"]
    servers = [("cell1", E.server(n, display_name=name)) for n, name in enumerate(names)]
    servers += [("cell1", E.server(10 + n)) for n in range(20)]
    E.fill_replica(path, servers, [E.flavor("1", "m1.tiny")], {"cell1": len(servers)})
    proc, api = start_server(path, free_port())
    try:
        yield api
    finally:
        stop_server(proc)


def _timed_get(api, path):
    began = time.monotonic()
    response = api.get(path, token=MEMBER)
    return response, time.monotonic() - began


@pytest.mark.parametrize("pattern", BOMBS)
def test_a_catastrophic_pattern_is_cut_at_the_deadline(bomb_api, pattern):
    path = "/v2.1/servers?name=" + urllib.parse.quote(pattern, safe="")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        bombs = [pool.submit(_timed_get, bomb_api, path) for _ in range(2)]
        plain = pool.submit(_timed_get, bomb_api, "/v2.1/servers?name=server-1")
        plain_response, plain_took = plain.result(timeout=30)
        results = [b.result(timeout=30) for b in bombs]
    assert plain_response.status == 200
    assert plain_took < 2 * DEADLINE_S + SLACK_S
    for response, took in results:
        assert took < DEADLINE_S + SLACK_S, f"{pattern!r} held the worker {took:.1f}s"
        assert response.status in (200, 400, 503), response.body
        if response.status == 400:    # one match ran past its budget: the pattern's fault
            assert "backtracks too much" in response.json()["badRequest"]["message"]
        if response.status == 503:
            assert response.json()["serviceUnavailable"]["code"] == 503
    # The worker is free again at once.
    after, took = _timed_get(bomb_api, "/v2.1/servers?name=" + urllib.parse.quote("^a+$"))
    assert after.status == 200 and took < SLACK_S
    assert [s["name"] for s in after.json()["servers"]] == [LONG_A]


def test_ordinary_patterns_keep_nova_semantics(bomb_api):
    """re.search semantics, as oslo.db's SQLite REGEXP function: unanchored, Python
    syntax, case-sensitive unless the pattern says otherwise."""
    def names(pattern):
        r = bomb_api.get("/v2.1/servers?name=" + urllib.parse.quote(pattern, safe=""))
        assert r.status == 200, r.body
        assert r.statements <= 1            # still at most one SQL statement per read
        return sorted(s["name"] for s in r.json()["servers"])

    assert names("^server-1[0-2]$") == ["server-10", "server-11", "server-12"]
    assert names("a{60}!") == [LONG_A + "!"]
    assert names("(?i)AAAA B") == ["aaaa bbbb cccc dddd eeee ffff gggg hhhh!"]
    assert names("w$") == ["x" * 50 + "w"]
    assert names("(a)\\1{59}$") == [LONG_A]
    assert names("\\d{2}") == [f"server-{n}" for n in sorted(range(10, 30), key=str)]


def test_a_bomb_costs_the_worker_its_match_budget_not_the_deadline(bomb_api):
    """Ten catastrophic requests in a row take about ten match budgets: a member
    sending them cannot keep a worker busy for long."""
    path = "/v2.1/servers?name=" + urllib.parse.quote("(.*){30}x", safe="")
    began = time.monotonic()
    for _ in range(10):
        assert bomb_api.get(path).status == 400
    took = time.monotonic() - began
    # ~0.65 s here; each one cut only at the read deadline would take 10 x 0.5 s.
    assert took < 10 * DEADLINE_S / 2, f"10 bombs took {took:.2f}s"
    assert MATCH_BUDGET_S < DEADLINE_S / 5
