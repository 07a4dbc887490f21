"""Tiny HTTP helpers over the standard library, for set-up and checks (not for load:
wrk makes the load)."""

from __future__ import annotations

import http.client
import json
import ssl
from urllib.parse import urlsplit

TIMEOUT_S = 30.0


def request(url: str, method: str = "GET", body: dict | None = None,
            headers: dict | None = None, timeout: float = TIMEOUT_S) -> tuple[int, dict, bytes]:
    parts = urlsplit(url)
    if parts.scheme == "https":   # the benchmarks' own self-signed certificates
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        sent = dict(headers or {})
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path or "/", body=data, headers=sent)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get_json(url: str, headers: dict | None = None, timeout: float = TIMEOUT_S) -> dict:
    status, _headers, body = request(url, headers=headers, timeout=timeout)
    if status != 200:
        raise RuntimeError(f"GET {url}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)


def post_json(url: str, body: dict | None = None, headers: dict | None = None,
              timeout: float = TIMEOUT_S) -> dict:
    status, _headers, raw = request(url, "POST", body or {}, headers, timeout)
    if status not in (200, 201, 202):
        raise RuntimeError(f"POST {url}: HTTP {status}: {raw[:300]!r}")
    return json.loads(raw) if raw else {}
