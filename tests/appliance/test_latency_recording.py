"""The latency recorder's endpoint labels and the worker handler's status labels."""

from __future__ import annotations

import random
import uuid

import pytest

from appliance import metrics
from appliance.worker import _status_label


def _paths():
    words = sorted(metrics.ENDPOINT_WORDS) + ["", "x", "{id}"]
    rng = random.Random(7)
    yield from ("", "/", "x", "/x", "//", "/v2.1", "/v2.1/", "/v2.1/servers",
                "/v2.1/servers/", "/v2.1/servers/detail", "/v2.1/p1/servers/abc",
                "/v2.1/p1/servers/abc/ips/net", "/v2/p1", "/v2/p1/x", "servers/abc",
                "/v2.1//servers/abc", "/v2.1/servers/abc/")
    for _ in range(3000):
        parts = [rng.choice(words + [uuid.UUID(int=rng.getrandbits(128)).hex])
                 for _ in range(rng.randint(0, 6))]
        yield ("/" if rng.random() < 0.9 else "") + "/".join(parts)


def test_endpoint_of_matches_endpoint_cached_or_not():
    recorder = metrics.LatencyRecorder.__new__(metrics.LatencyRecorder)
    recorder.endpoints, recorder.children = {}, {}
    paths = list(_paths())
    for _ in range(2):  # the second pass answers from the caches
        for path in paths:
            assert recorder.endpoint_of(path) == metrics.endpoint(path), path
    assert len(recorder.endpoints) <= metrics.ENDPOINT_CACHE
    assert len(recorder.children) <= metrics.ENDPOINT_CACHE


@pytest.mark.parametrize("code, label", [(200, "200"), (404, "404"), (-200, "200"),
                                         (None, "500"), (999, "999")])
def test_status_label(code, label):
    assert _status_label(code) == label


def test_handler_records_each_response_and_drain_says_close():
    import http.client

    import gevent
    import gevent.pool

    from appliance.worker import Handler, Server, closing_when_draining, reuseport_listener

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        code = "404 Not Found" if environ["PATH_INFO"] == "/missing" else "200 OK"
        start_response(code, [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    class QuietLog:
        def write(self, text):
            pass

        def flush(self):
            pass

    seen = []
    listener = reuseport_listener("127.0.0.1", 0)
    server = Server(listener, application=app, spawn=gevent.pool.Pool(10),
                    handler_class=Handler, log=None, error_log=QuietLog())
    server.observe = lambda *row: seen.append(row)
    server.start()
    port = listener.getsockname()[1]

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        answers = []
        for path in ("/v2.1/servers/abc", "/missing", "/boom"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            answers.append((response.status, response.getheader("Connection")))
            if response.status == 500:  # gevent closes after an app error
                conn.close()
        server.draining = True
        server.application = closing_when_draining(server.application, server)
        conn.request("GET", "/v2.1/servers/def")
        response = conn.getresponse()
        response.read()
        answers.append((response.status, response.getheader("Connection")))
        conn.close()
        return answers

    try:
        answers = gevent.get_hub().threadpool.spawn(client).get(timeout=20)
    finally:
        server.stop(timeout=1)
    assert answers[:2] == [(200, None), (404, None)]
    assert answers[2][0] == 500
    assert answers[3] == (200, "close")
    assert [(m, p, s) for m, p, s, _ in seen] == [
        ("GET", "/v2.1/servers/abc", "200"), ("GET", "/missing", "404"),
        ("GET", "/boom", "500"), ("GET", "/v2.1/servers/def", "200")]
    assert all(0 <= seconds < 5 for *_, seconds in seen)
