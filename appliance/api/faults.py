"""Nova-style faults: ``{"<name>": {"code": N, "message": "..."}}`` (nova.api.openstack.wsgi
Fault), raised as ``ApiError`` anywhere in the API and rendered in one place."""

from __future__ import annotations

import json

from replica import kinds

FAULT_NAMES = {
    400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
    405: "badMethod", 409: "conflictingRequest", 413: "overLimit", 415: "badMediaType",
    429: "overLimit", 501: "notImplemented", 503: "serviceUnavailable",
}
REASONS = {
    200: "OK", 204: "No Content",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 429: "Too Many Requests",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}
READ_ONLY_ALLOW = "GET, HEAD"


class ApiError(Exception):
    """An HTTP error the API answers as a Nova fault."""

    content_type = "application/json"

    def __init__(self, status: int, message: str, headers: tuple = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)

    def body(self) -> bytes:
        return fault_body(self.status, self.message)


def fault_body(status: int, message: str) -> bytes:
    name = FAULT_NAMES.get(status, "computeFault")
    return json.dumps({name: {"code": status, "message": message}}).encode()


def status_line(status: int) -> str:
    return f"{status} {REASONS.get(status, 'Error')}"


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str = "The resource could not be found.") -> ApiError:
    return ApiError(404, message)


class NoSuchRoute(ApiError):
    """A path nova-api's router matches no route for (e.g. a metadata key holding a
    ``/``): its router's plain-text 404 (webob's HTTPNotFound), not a Nova fault."""

    content_type = "text/plain; charset=UTF-8"

    def __init__(self):
        super().__init__(404, "The resource could not be found.")

    def body(self) -> bytes:
        return b"404 Not Found\n\nThe resource could not be found.\n\n   "


# What the replica answers, from the kinds' declarations (a kind added is listed).
NOT_REPLICATED = ("The resource could not be found. This endpoint is a read replica of the "
                  f"Compute API: it answers reads of {kinds.reads_as()}; other resources "
                  "are not replicated here (send them to the cloud's Compute API, or set "
                  "upstream_url to pass them through).")


def not_replicated() -> ApiError:
    return ApiError(404, NOT_REPLICATED)


def read_only(method: str) -> ApiError:
    # 405 with Allow: novaclient, openstacksdk and the CLI print the message and stop;
    # none of them retries a 405 (they would retry a 503).
    return ApiError(405, f"This endpoint is a read-only replica of the Compute API: "
                         f"{method} is not served here. Send changes to the cloud's "
                         f"Compute API.", (("Allow", READ_ONLY_ALLOW),))
