"""Query-string parsing and the value checks made by Nova's query schemas and utilities,
with Nova's wording (nova/api/validation, oslo strutils, common.py)."""

from __future__ import annotations

import datetime
import functools
import re
import uuid
from urllib.parse import parse_qsl

from appliance.api.faults import ApiError, bad_request
from replica.store.reader import CANONICAL_UUID

MAX_QUERY_CHARS = 16384          # longer query strings are refused (414)
TRUE_STRINGS = ("1", "t", "true", "on", "y", "yes")
FALSE_STRINGS = ("0", "f", "false", "off", "n", "no")
_ACCEPTABLE = ", ".join(f"'{s}'" for s in sorted(TRUE_STRINGS + FALSE_STRINGS))
_DIGITS = re.compile(r"^[0-9]*$")


def parse_query(environ: dict) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """(pairs in order, name -> values) of the query string."""
    qs = environ.get("QUERY_STRING", "")
    if not qs:
        return [], {}
    if len(qs) > MAX_QUERY_CHARS:
        raise ApiError(414, f"The query string is longer than {MAX_QUERY_CHARS} characters.")
    pairs = parse_qsl(qs, keep_blank_values=True)
    multi: dict[str, list[str]] = {}
    for k, v in pairs:
        multi.setdefault(k, []).append(v)
    return pairs, multi


def invalid_query(name: str, value: str, reason: str) -> ApiError:
    return bad_request(f"Invalid input for query parameters {name}. Value: {value}. {reason}")


STRICT_QUERY_MINOR = 102         # from 2.102 every query schema refuses unknown parameters
NO_PARAMETERS = frozenset()


def additional_properties(multi: dict, allowed: frozenset, pattern_underscore: bool) -> None:
    """Nova's ``additionalProperties: False`` (GET /servers and /flavors from 2.75, the
    other query schemas from 2.102), in jsonschema's words: the unexpected names sorted;
    a schema with ``patternProperties`` (``^_`` on GET /servers) says which regexes they
    miss instead."""
    extra = sorted(k for k in multi if k not in allowed
                   and not (pattern_underscore and k.startswith("_")))
    if extra:
        names = ", ".join(repr(k) for k in extra)
        if pattern_underscore:
            verb = "does" if len(extra) == 1 else "do"
            raise bad_request(f"{names} {verb} not match any of the regexes: '^_'")
        verb = "was" if len(extra) == 1 else "were"
        raise bad_request(f"Additional properties are not allowed ({names} {verb} unexpected)")


def check_limit(multi: dict, name: str = "limit") -> None:
    """Nova's non_negative_integer for each value of ``name`` (limit, offset)."""
    for value in multi.get(name, ()):
        if not value:
            # jsonschema's minLength message for a minimum of one (Nova 34's jsonschema)
            raise invalid_query(name, value, "'' should be non-empty")
        if not _DIGITS.match(value):
            raise invalid_query(name, value, f"'{value}' does not match '^[0-9]*$'")


def check_enum(multi: dict, name: str, allowed) -> None:
    for value in multi.get(name, ()):
        if value not in allowed:
            raise invalid_query(name, value, f"'{value}' is not one of {list(allowed)}")


@functools.lru_cache(maxsize=256)
def _regex_ok(pattern: str) -> bool:
    if not pattern:
        return False        # Nova's format check: an empty pattern matches nothing useful
    try:
        re.compile(pattern)
        return True
    except (re.error, OverflowError, RecursionError):
        # a{99999999999}: re raises OverflowError, and nesting past the parser's
        # recursion: both are patterns re cannot take, as Nova's format check means.
        return False


def int_param(value: str, name: str) -> int:
    """A validated run of digits as an int; past Python's int-digit limit it is no
    integer at all (Nova: oslo's validate_integer)."""
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None


def check_regex(multi: dict, names) -> None:
    for name in names:
        for value in multi.get(name, ()):
            if not _regex_ok(value):
                raise invalid_query(name, value, f"'{value}' is not a 'regex'")


def parse_isotime(value: str) -> datetime.datetime | None:
    """An ISO 8601 stamp as naive UTC, or None when it is not one."""
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        stamp = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return stamp


def check_datetime(multi: dict, names) -> None:
    for name in names:
        for value in multi.get(name, ()):
            if parse_isotime(value) is None:
                raise invalid_query(name, value, f"'{value}' is not a 'date-time'")


def stored_stamp(stamp: datetime.datetime) -> str:
    """The replica's stored form of a stamp (sortable text)."""
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")


def bool_from_string(value: str, strict: bool = False, default: bool = False) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE_STRINGS:
        return True
    if lowered in FALSE_STRINGS:
        return False
    if strict:
        # Nova raises InvalidInput with oslo's message as its whole text (no "Invalid
        # input received: " before it), for all_tenants and locked alike.
        raise bad_request(f"Unrecognized value '{value}', acceptable values are: {_ACCEPTABLE}")
    return default




def is_uuid_like(value: str) -> bool:
    """oslo's is_uuid_like: any spelling uuid.UUID accepts (hyphens, case, braces)."""
    if CANONICAL_UUID.match(value):
        return True
    try:
        return str(uuid.UUID(value)).replace("-", "") == value.lower().replace("-", "")
    except (ValueError, TypeError, AttributeError):
        return False


def canonical_uuid(value: str) -> str:
    if CANONICAL_UUID.match(value):
        return value
    return str(uuid.UUID(value))
