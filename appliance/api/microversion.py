"""Compute API microversions: ``OpenStack-API-Version: compute X.Y`` and the legacy
``X-OpenStack-Nova-API-Version`` (nova.api.openstack.wsgi / api_version_request)."""

from __future__ import annotations

import re

from appliance.api.faults import ApiError

MIN_MINOR = 1
MAX_MINOR = 104           # advertised range: 2.1 .. 2.104 (Nova 34)
MIN_VERSION = f"2.{MIN_MINOR}"
MAX_VERSION = f"2.{MAX_MINOR}"
_FORMAT = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")


def _compute_value(header: str) -> str | None:
    # "compute 2.5" or a list of services: "placement 1.2, compute 2.5".
    for item in header.split(","):
        parts = item.strip().split(None, 1)
        if len(parts) == 2 and parts[0].lower() == "compute":
            return parts[1].strip()
    return None


def requested(environ: dict) -> int:
    """The requested minor version of 2.x; raises ApiError 400 (malformed) or 406."""
    value = None
    header = environ.get("HTTP_OPENSTACK_API_VERSION")
    if header:
        value = _compute_value(header)
    if value is None:
        value = environ.get("HTTP_X_OPENSTACK_NOVA_API_VERSION")
        value = value.strip() if value else None
    if not value:
        return MIN_MINOR
    if value.lower() == "latest":
        return MAX_MINOR
    match = _FORMAT.match(value)
    if not match:
        raise ApiError(400, f"API Version String {value} is of invalid format. Must be of "
                            f"format MajorNum.MinorNum.")
    # No leading zeros: a number of more digits than 3 is out of range, and past
    # Python's int-digit limit int() would raise.
    major, minor = match.group(1), match.group(2)
    if major != "2" or len(minor) > 3 or not MIN_MINOR <= int(minor) <= MAX_MINOR:
        raise ApiError(406, f"Version {major}.{minor} is not supported by the API. Minimum "
                            f"is {MIN_VERSION} and maximum is {MAX_VERSION}.")
    minor = int(minor)
    return minor


def response_headers(minor: int) -> list[tuple[str, str]]:
    version = f"2.{minor}"
    return [("OpenStack-API-Version", f"compute {version}"),
            ("X-OpenStack-Nova-API-Version", version),
            ("Vary", "OpenStack-API-Version, X-OpenStack-Nova-API-Version")]
