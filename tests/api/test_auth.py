"""Token-file auth: 401 without a valid token, identities from the file, SIGHUP reload."""

from __future__ import annotations

import hashlib
import json
import signal

import pytest

from tests.api import entities as E
from tests.api.conftest import start_server, stop_server
from tests.conftest import free_port, wait_for


def token_line(token: str, project: str, user: str, roles: list[str]) -> str:
    return json.dumps({"sha256": hashlib.sha256(token.encode()).hexdigest(),
                       "project_id": project, "user_id": user, "roles": roles}) + "\n"


@pytest.fixture
def token_api(tmp_path, replica_file):
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text("# hashed tokens\n"
                      + token_line("s3cret", E.PROJECT, "alice", ["member"])
                      + token_line("r00t", "admin-project", "root", ["admin", "member"]))
    proc, api = start_server(replica_file, free_port(), str(tokens))
    try:
        yield proc, api, tokens
    finally:
        stop_server(proc)


def test_tokens(token_api):
    proc, api, tokens = token_api
    r = api.get("/v2.1/servers", token=None)
    assert r.status == 401
    assert r.json() == {"unauthorized": {
        "code": 401, "message": "The request you have made requires authentication."}}
    assert api.get("/v2.1/servers", token="wrong").status == 401
    assert api.get("/v2.1/servers", token="fake:" + E.PROJECT).status == 401
    member = api.get("/v2.1/servers", token="s3cret")
    assert member.status == 200 and len(member.json()["servers"]) == 28
    admin = api.get(f"/v2.1/servers/{E.server(100)['uuid']}", token="r00t")
    assert admin.status == 200
    assert "OS-EXT-SRV-ATTR:host" in admin.json()["server"]
    assert api.get("/", token=None).status == 200          # discovery needs no token


def test_sighup_reloads_and_a_bad_file_keeps_the_old_tokens(token_api):
    proc, api, tokens = token_api
    assert api.get("/v2.1/servers", token="n3w").status == 401
    tokens.write_text(tokens.read_text() + token_line("n3w", E.PROJECT, "bob", []))
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: api.get("/v2.1/servers", token="n3w").status == 200,
             what="the new token to be accepted")
    tokens.write_text("this is not json\n")
    proc.send_signal(signal.SIGHUP)
    # The broken file is refused; the tokens loaded before stay valid.
    for _ in range(3):
        assert api.get("/v2.1/servers", token="n3w").status == 200
    assert proc.poll() is None
