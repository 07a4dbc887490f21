"""Every setting of the appliance, declared once.

Each row (``Setting``) names the setting, its type, default, environment variable
(``APPLIANCE_<NAME>``), help text and validator. From these rows come: loading a TOML
file (``load``), environment overrides, the one-line error for a bad value, and
``docs/configuration.md`` (``render_docs``). A setting not declared here does not exist.

Cells are a TOML array of tables (``kind`` is "servers", the default, or "flavors" for
the flavor source)::

    [[cell]]
    name = "cell1"
    feed = "tcp://10.0.0.5:7001"
    control = "tcp://10.0.0.5:7002"
    key_file = "/etc/appliance/cell1.key"   # optional: sealed feed and control
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable

ENV_PREFIX = "APPLIANCE_"
CELL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
URL_SCHEMES = ("tcp://", "ipc://")
INGEST_CONTROL_SOCKET = "ingest.ctl"      # in data_dir
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("kv", "json")
AUTH_MODES = ("noauth", "tokens", "keystone")
ACCESS_LOG_LEVELS = ("off", "debug", "info", "warning")
ACCESS_LOG_FORMATS = ("log", "combined")
CELL_KINDS = ("servers", "flavors")   # a cell's feed, or the flavor source's


class SettingsError(ValueError):
    """A setting that cannot be accepted. The message is one line: what is wrong and how
    to fix it."""


@dataclass(frozen=True)
class Cell:
    """One upstream feed: a cell (or the flavor source) and its publisher's sockets."""

    name: str
    feed: str
    control: str
    kind: str = "servers"           # "flavors": the flavor source (Nova API DB)
    key_file: str = ""              # the cell's feed key file; "": unauthenticated


# ---------------------------------------------------------------------------
# Converters: raw value (TOML-typed, or a string from the environment) -> typed value.
# Each raises ValueError with the "what is expected" half of the message.
# ---------------------------------------------------------------------------

def _to_str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError("expected a string")
    return raw


def _to_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d+\s*", raw):
        return int(raw)
    raise ValueError("expected an integer")


def _to_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number")
    if isinstance(raw, (int, float)):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            pass
    raise ValueError("expected a number")


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


# A Unix socket's path fits in sockaddr_un.sun_path (108 bytes with its NUL); nanomsg
# aborts the process on a longer ipc:// path, so it is refused before any socket is made.
IPC_PATH_MAX_BYTES = 107


def ipc_path_problem(url: str) -> str | None:
    """Why an ``ipc://`` address cannot be used (None: it can, or it is not ipc)."""
    if not url.startswith("ipc://"):
        return None
    size = len(url[len("ipc://"):].encode())
    if size > IPC_PATH_MAX_BYTES:
        return (f"{url!r}: its path is {size} bytes, longer than the {IPC_PATH_MAX_BYTES} "
                "a Unix socket path may have; use a shorter path (or tcp://)")
    return None


def _check_url(url: Any, what: str) -> str:
    if not isinstance(url, str) or not url.startswith(URL_SCHEMES) or len(url) < 7:
        raise ValueError(f"{what} must be a nanomsg address like tcp://host:port or "
                         f"ipc:///path, got {url!r}")
    problem = ipc_path_problem(url)
    if problem is not None:
        raise ValueError(f"{what} {problem}")
    return url


def _data_dir(value: str) -> None:
    _nonempty(value)
    control = "ipc://" + os.path.join(os.path.abspath(value), INGEST_CONTROL_SOCKET)
    problem = ipc_path_problem(control)
    if problem is not None:
        raise ValueError(f"holds ingest's control socket, and {problem}")


def _to_cells(raw: Any) -> tuple[Cell, ...]:
    """TOML: a list of tables {name, feed, control[, kind][, key_file]}. Environment:
    entries separated by ';', each 'name,feed,control[,kind[,key_file]]'."""
    if isinstance(raw, str):
        entries = []
        for part in filter(None, (p.strip() for p in raw.split(";"))):
            fields = [f.strip() for f in part.split(",")]
            if len(fields) not in (3, 4, 5):
                raise ValueError("expected 'name,feed_url,control_url[,kind[,key_file]]' "
                                 "entries separated by ';'")
            entries.append({k: v for k, v in zip(("name", "feed", "control", "kind",
                                                  "key_file"), fields) if v or k != "key_file"})
        raw = entries
    if not isinstance(raw, (list, tuple)):
        raise ValueError("expected an array of [[cell]] tables")
    cells = []
    for index, table in enumerate(raw):
        if not isinstance(table, dict):
            raise ValueError(f"cell #{index + 1} must be a table with name, feed, control")
        unknown = set(table) - {"name", "feed", "control", "kind", "key_file"}
        if unknown:
            raise ValueError(f"cell #{index + 1} has unknown keys {sorted(unknown)}; "
                             "allowed: name, feed, control, kind, key_file")
        name = table.get("name")
        if not isinstance(name, str) or not CELL_NAME.match(name):
            raise ValueError(f"cell #{index + 1} needs a name of letters, digits, '_', '.' "
                             f"or '-' (got {name!r})")
        feed = _check_url(table.get("feed"), f"cell {name!r} feed")
        control = _check_url(table.get("control"), f"cell {name!r} control")
        kind = table.get("kind", "servers")
        if kind not in CELL_KINDS:
            raise ValueError(f"cell {name!r} kind must be one of {', '.join(CELL_KINDS)} "
                             f"(got {kind!r})")
        key_file = table.get("key_file", "")
        if not isinstance(key_file, str):
            raise ValueError(f"cell {name!r} key_file must be a path (got {key_file!r})")
        cells.append(Cell(name, feed, control, kind, key_file))
    names = [c.name for c in cells]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"cell names must be unique; repeated: {', '.join(duplicates)}")
    return tuple(cells)


# ---------------------------------------------------------------------------
# Validators: typed value -> None, or ValueError with what is allowed.
# ---------------------------------------------------------------------------

def _port(value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port between 0 and 65535")


def _positive(value: float) -> None:
    if value <= 0:
        raise ValueError("must be greater than 0")


def _non_negative(value: float) -> None:
    if value < 0:
        raise ValueError("must be 0 or more")


def _host(value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError("must be an IP address or host name")


def _choice(options: tuple[str, ...]) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
    check.options = options
    return check


def _url_or_empty(value: str) -> None:
    if value and not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("must be an http:// or https:// URL (or empty)")


def _worker_count(value: int) -> None:
    if not 1 <= value <= 256:
        raise ValueError("must be between 1 and 256")


def _nonempty(value: str) -> None:
    if not value.strip():
        raise ValueError("must not be empty")


def _nothing(value: Any) -> None:
    return None


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str                       # shown in the docs: int, float, str, bool, path, cells
    default: Any                    # a value, or a callable for a default computed at load
    help: str
    convert: Callable[[Any], Any]
    validate: Callable[[Any], None] = _nothing
    default_doc: str | None = None  # how the docs show a computed default

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def toml_key(self) -> str:
        return "cell" if self.name == "cells" else self.name

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default


def _cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


SETTINGS: tuple[Setting, ...] = (
    Setting("listen_host", "str", "127.0.0.1",
            "Address the Compute API listens on.", _to_str, _host),
    Setting("listen_port", "int", 8774,
            "TCP port of the Compute API (Nova's is 8774). 0 picks a free port.",
            _to_int, _port),
    Setting("admin_host", "str", "127.0.0.1",
            "Address of the admin listener (status, resync, verify, metrics, health). "
            "Anything but loopback requires admin_token.", _to_str, _host),
    Setting("admin_port", "int", 8775, "TCP port of the admin listener.", _to_int, _port),
    Setting("admin_token", "str", "",
            "Token the admin listener requires (X-Auth-Token or Authorization: Bearer). "
            "Required when admin_host is not a loopback address.", _to_str),
    Setting("admin_token_always", "bool", False,
            "Require admin_token on loopback too.", _to_bool),
    Setting("workers", "int", _cores,
            "Number of API worker processes.", _to_int, _worker_count,
            default_doc="the number of CPU cores"),
    Setting("worker_connections", "int", 1000,
            "Concurrent connections per worker.", _to_int, _positive),
    Setting("data_dir", "path", "./appliance-data",
            "Directory for the replica, control sockets, process table, metrics and "
            "heartbeats. Created if missing.", _to_str, _data_dir),
    Setting("replica_path", "path", "",
            "The replica database. Empty means replica.db in data_dir.", _to_str),
    Setting("auth", "str", "noauth",
            "How API requests are authenticated: 'noauth' (X-Auth-Token "
            "'<user>:<project>', as Nova's noauth2), 'tokens' (tokens_file) or 'keystone' "
            "(Keystone v3 tokens, validated with the keystone_* settings and cached).",
            _to_str, _choice(AUTH_MODES)),
    Setting("allow_noauth_remote", "bool", False,
            "Let auth = 'noauth' listen on an address other than loopback (anyone who "
            "reaches the port may then claim any project). Off: serve refuses to start.",
            _to_bool),
    Setting("noauth_default_token", "str", "admin:demo",
            "With auth = 'noauth': the identity a request without a token gets "
            "('<user>:<project>'; user 'admin' is an admin). Empty refuses such requests.",
            _to_str),
    Setting("tokens_file", "path", "",
            "With auth = 'tokens': a file of tokens and the identities they stand for. "
            "Re-read on SIGHUP.", _to_str),
    Setting("keystone_url", "str", "",
            "With auth = 'keystone': Keystone's public URL (e.g. http://keystone:5000, "
            "without /v3). Also the uri of the WWW-Authenticate header of a 401.",
            _to_str, _url_or_empty),
    Setting("keystone_user", "str", "",
            "With auth = 'keystone': the appliance's own user, which validates tokens "
            "(it needs the 'service' role on keystone_project).", _to_str),
    Setting("keystone_password", "str", "",
            "Password of keystone_user (or use keystone_password_file).", _to_str),
    Setting("keystone_password_file", "path", "",
            "A file whose first line is keystone_user's password; read by each worker "
            "at start (so a SIGHUP reload picks up a new one).", _to_str),
    Setting("keystone_project", "str", "service",
            "Project the appliance's service token is scoped to.", _to_str),
    Setting("keystone_user_domain", "str", "Default",
            "Domain (name) of keystone_user.", _to_str),
    Setting("keystone_project_domain", "str", "Default",
            "Domain (name) of keystone_project.", _to_str),
    Setting("keystone_cafile", "path", "",
            "CA bundle to verify an https keystone_url. Empty: the system's.", _to_str),
    Setting("keystone_timeout", "float", 5.0,
            "Deadline in seconds of one round trip to Keystone; must be shorter than "
            "worker_timeout.", _to_float, _positive),
    Setting("keystone_cache_seconds", "float", 300.0,
            "A validated token is served from the cache this long, then checked again "
            "(never past its expiry). While Keystone is unreachable, cached tokens keep "
            "working until they expire.", _to_float, _positive),
    Setting("keystone_negative_seconds", "float", 10.0,
            "How long a token Keystone refused is refused without asking again.",
            _to_float, _positive),
    Setting("keystone_cache_size", "int", 10000,
            "Validated tokens remembered per worker (least recently used out).",
            _to_int, _positive),
    Setting("upstream_url", "str", "",
            "The cloud's own Compute API (e.g. http://nova-api:8774). Every request the "
            "replica does not answer (writes, server actions, resources not replicated) "
            "is passed to it with the caller's token and headers, and its answer comes "
            "back unchanged. Empty: such requests get 405 / 404.", _to_str, _url_or_empty),
    Setting("upstream_timeout", "float", 25.0,
            "Seconds the upstream gets to start answering a passed-through request "
            "(then 504); must be shorter than worker_timeout.", _to_float, _positive),
    Setting("upstream_cafile", "path", "",
            "CA bundle to verify an https upstream_url. Empty: the system's.", _to_str),
    Setting("read_your_writes_wait", "float", 5.0,
            "Longest wait, in seconds, of a read that sends X-Replica-Min-Position (the "
            "X-Replica-Write-Position a passed-through write answered) for the replica to "
            "apply it; then it answers with what it has, X-Replica-Position-Reached: "
            "false.", _to_float, _positive),
    Setting("read_your_writes_window", "float", 10.0,
            "For this many seconds after a write passed through, reads by the same user "
            "and project wait for its position as if they had sent "
            "X-Replica-Min-Position (for clients that do not send headers back, such as "
            "`openstack server stop` followed by `openstack server show`). 0 turns it "
            "off. Needs upstream_url and [[cell]] feeds.", _to_float, _non_negative),
    Setting("tls_cert_file", "path", "",
            "PEM certificate (with its chain) for TLS on the API and admin listeners. "
            "Empty: plain HTTP. New files are read by the new workers of a SIGHUP reload "
            "(the admin listener re-reads them when they change).", _to_str),
    Setting("tls_key_file", "path", "",
            "PEM private key of tls_cert_file.", _to_str),
    Setting("public_url", "str", "",
            "Base URL used in links (version discovery, servers_links). Empty means "
            "the request's own host.", _to_str, _url_or_empty),
    Setting("reader_map_bytes", "int", 0,
            "Bytes of the replica file each API worker maps into memory (SQLite's "
            "mmap_size) instead of reading its pages through its own cache. 0: none. On "
            "a replica of about a million servers GET /servers/{id} got about 10 % "
            "cheaper mapped and GET /servers/detail?limit=1000 about 10 % dearer, other "
            "lists the same; every mapped page a worker touches counts in its RSS (the "
            "OS's shared page cache, not the worker's own memory), up to the replica's "
            "size per worker. E.g. 4294967296 (4 GiB) maps a 1,000,000-server replica "
            "whole.", _to_int, _non_negative),
    Setting("max_limit", "int", 1000,
            "Largest page a list request returns (Nova's osapi_max_limit).",
            _to_int, _positive),
    Setting("default_availability_zone", "str", "nova",
            "Nova's default_availability_zone: the zone GET /os-availability-zone and "
            "GET /os-services show for a compute host in no aggregate with an "
            "availability_zone.",
            _to_str, _nonempty),
    Setting("nova_database_collation", "str", "binary",
            "How Nova's cell databases order and match text, which nova-api's server "
            "sorts (sort_key=display_name, hostname, ...) and regex filters (name, ...) "
            "follow: 'binary' (SQLite: by code point, case-sensitive) or "
            "'utf8_general_ci' (MariaDB/MySQL, Nova's tables: case and accents ignored "
            "in order, case in the filters). Build requests are filtered by code point "
            "either way, as nova-api does.",
            _to_str, _choice(("binary", "utf8_general_ci"))),
    Setting("internal_service_availability_zone", "str", "internal",
            "Nova's internal_service_availability_zone: the zone of the services other "
            "than nova-compute (GET /os-availability-zone/detail and GET /os-services).",
            _to_str, _nonempty),
    Setting("cells", "cells", (),
            "The feeds to replicate: a TOML array of [[cell]] tables with name, feed and "
            "control (nanomsg URLs), kind: 'servers' (a cell, the default) or 'flavors' "
            "(the flavor source beside the API database), and key_file: the file of keys "
            "the cell's publisher has too (appliance cell --key-file; made by appliance "
            "keygen, mode 0600): its feed and control are then authenticated and encrypted "
            "(docs/feed-authentication.md); without it they are not, and a warning says so. "
            "Environment form: 'name,feed,control[,kind[,key_file]];...'.",
            _to_cells),
    Setting("worker_timeout", "float", 30.0,
            "Seconds a worker may stay silent (no heartbeat) before it is aborted, then "
            "killed and replaced.", _to_float, _positive),
    Setting("graceful_timeout", "float", 30.0,
            "Seconds in-flight requests get to finish on SIGTERM or SIGHUP before their "
            "worker is killed.", _to_float, _positive),
    Setting("group_commit_ms", "float", 0.0,
            "Milliseconds ingest lets more changes join a commit after the first one "
            "arrives while the feed keeps sending (an idle feed's changes are committed "
            "at once). 0 commits as soon as ingest has taken in what has arrived: "
            "changes show soonest. Higher: fewer, larger commits under a steady flow, "
            "changes shown later. Read when ingest starts (a SIGHUP reload keeps the "
            "running value).", _to_float, _non_negative),
    Setting("readyz_max_lag_ms", "float", 5000.0,
            "/readyz answers 503 while any cell lags more than this many milliseconds.",
            _to_float, _positive),
    Setting("log_level", "str", "info", "Lowest level logged to stderr.",
            _to_str, _choice(LOG_LEVELS)),
    Setting("log_format", "str", "kv",
            "Log line format on stderr: 'kv' (key=value) or 'json' (one object a line).",
            _to_str, _choice(LOG_FORMATS)),
    Setting("access_log", "str", "off",
            "One line per API request (method, path, status, bytes, duration, SQL "
            "statements, request id, project) at this level, or 'off'. A level below "
            "log_level writes nothing (and costs nothing).",
            _to_str, _choice(ACCESS_LOG_LEVELS)),
    Setting("access_log_format", "str", "log",
            "Access line format: 'log' (a log line, event=access, in log_format) or "
            "'combined' (NCSA combined, as web servers write it, then duration, "
            "statements and request id).", _to_str, _choice(ACCESS_LOG_FORMATS)),
)

BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """The loaded, validated settings. Attribute names are the setting names."""

    values: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)   # name -> "default" | file path | env var

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "values")
        if name in values:
            return values[name]
        raise AttributeError(name)

    @property
    def replica(self) -> str:
        return self.replica_path or os.path.join(self.data_dir, "replica.db")

    @property
    def ingest_control_url(self) -> str:
        return "ipc://" + os.path.join(os.path.abspath(self.data_dir), INGEST_CONTROL_SOCKET)

    @property
    def admin_url(self) -> str:
        host = self.admin_host
        if ":" in host:
            host = f"[{host}]"
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        scheme = "https" if self.tls_cert_file else "http"
        return f"{scheme}://{host}:{self.admin_port}"

    def replace(self, **changes: Any) -> "Settings":
        values = dict(self.values)
        values.update(changes)
        sources = dict(self.sources)
        sources.update({k: "override" for k in changes})
        settings = Settings(values, sources)
        _check_together(settings)
        return settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fail(setting: Setting, source: str, raw: Any, why: str) -> SettingsError:
    where = {"default": "its default"}.get(source, source)
    shown = raw if not isinstance(raw, str) else repr(raw)
    if setting.name == "cells":
        shown = ""
    fix = f"set {setting.toml_key} in the config file or {setting.env}"
    value = f" {shown}" if shown != "" else ""
    return SettingsError(f"setting {setting.name}{value} (from {where}): {why}; {fix}")


def _convert(setting: Setting, raw: Any, source: str) -> Any:
    try:
        value = setting.convert(raw)
        setting.validate(value)
    except ValueError as exc:
        raise _fail(setting, source, raw, str(exc)) from None
    return value


def _check_together(settings: Settings) -> None:
    """Rules that involve more than one setting."""
    if not is_loopback(settings.admin_host) and not settings.admin_token:
        raise SettingsError(f"setting admin_host {settings.admin_host!r} is not loopback, "
                            "so admin_token is required; set admin_token in the config "
                            "file or APPLIANCE_ADMIN_TOKEN (or bind admin_host to 127.0.0.1)")
    if settings.admin_token_always and not settings.admin_token:
        raise SettingsError("setting admin_token_always is true but admin_token is empty; "
                            "set admin_token in the config file or APPLIANCE_ADMIN_TOKEN")
    if settings.auth == "tokens" and not settings.tokens_file:
        raise SettingsError("setting auth is 'tokens' but tokens_file is empty; set "
                            "tokens_file in the config file or APPLIANCE_TOKENS_FILE")
    if settings.auth == "tokens" and not os.path.isfile(settings.tokens_file):
        raise SettingsError(f"setting tokens_file {settings.tokens_file!r}: no such file; "
                            "create it or fix tokens_file / APPLIANCE_TOKENS_FILE")
    if settings.auth == "noauth" and not is_loopback(settings.listen_host) \
            and not settings.allow_noauth_remote:
        raise SettingsError(f"setting auth is 'noauth' and listen_host "
                            f"{settings.listen_host!r} is not loopback: anyone who reaches "
                            "it could read every project's servers; set auth = 'keystone' "
                            "or 'tokens' (or allow_noauth_remote = true / "
                            "APPLIANCE_ALLOW_NOAUTH_REMOTE if that is really meant)")
    if settings.auth == "keystone":
        _check_keystone(settings)
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise SettingsError("settings tls_cert_file and tls_key_file go together; set both "
                            "(APPLIANCE_TLS_CERT_FILE, APPLIANCE_TLS_KEY_FILE) or neither")
    for name in ("tls_cert_file", "tls_key_file"):
        path = getattr(settings, name)
        if path and not os.path.isfile(path):
            raise SettingsError(f"setting {name} {path!r}: no such file; fix {name} / "
                                f"{BY_NAME[name].env}")
    if settings.upstream_url and settings.upstream_timeout >= settings.worker_timeout:
        raise SettingsError(f"setting upstream_timeout {settings.upstream_timeout:g} is not "
                            f"shorter than worker_timeout {settings.worker_timeout:g}; "
                            "lower upstream_timeout")
    if (settings.listen_port and settings.listen_port == settings.admin_port
            and settings.listen_host == settings.admin_host):
        raise SettingsError(f"settings listen_port and admin_port are both "
                            f"{settings.listen_port}; give the admin listener its own port")


def exposure_warnings(settings: Settings) -> list[str]:
    """Settings that let someone read data they may not be meant to: one line each (what,
    why, how to close it). Printed by ``serve --check`` and logged at start; not refused."""
    warnings = []
    api_open = not is_loopback(settings.listen_host)
    if settings.auth == "noauth" and api_open:
        warnings.append(
            f"auth is 'noauth' and listen_host {settings.listen_host!r} is not loopback: "
            "anyone who reaches the API reads every project's servers by naming any "
            "project in X-Auth-Token; use auth = 'tokens' or listen_host = '127.0.0.1'")
    if settings.auth == "noauth" and api_open and settings.noauth_default_token:
        user = settings.noauth_default_token.partition(":")[0]
        warnings.append(
            f"noauth_default_token {settings.noauth_default_token!r} answers requests "
            f"without a token" + (" as an admin (all_tenants)" if user == "admin" else "")
            + "; set noauth_default_token = '' to refuse them")
    if not is_loopback(settings.admin_host):
        warnings.append(
            f"admin_host {settings.admin_host!r} is not loopback: status, metrics, resync "
            "and verify are reachable with admin_token over plain HTTP; keep it on a "
            "management network")
    return warnings


def key_file_problems(settings: Settings) -> list[str]:
    """One line per [[cell]] key_file that cannot be used (``serve`` refuses to start)."""
    from replica.key_file import KeyFileError, read_key_file   # the reader ingest uses
    problems = []
    for cell in settings.cells:
        if cell.key_file:
            try:
                read_key_file(cell.key_file)
            except KeyFileError as exc:
                problems.append(f"cell {cell.name}: {exc}")
    return problems


def deployment_problems(settings: Settings) -> list[str]:
    """What ``serve --check`` refuses beyond single settings: what a serving appliance
    needs (cells to replicate, the flavor source, a readable tokens file)."""
    problems = []
    kinds = [c.kind for c in settings.cells]
    if "servers" not in kinds:
        problems.append("no server cell configured: add a [[cell]] table (name, feed, "
                        "control) for each cell's publisher")
    if "flavors" not in kinds:
        problems.append("no flavor source configured: add a [[cell]] table with kind = "
                        "'flavors' for the publisher beside the API database's flavor "
                        "tables")
    problems += key_file_problems(settings)
    if settings.auth == "tokens" and settings.tokens_file:
        from appliance.api.identity import load_tokens  # the loader the workers use
        try:
            load_tokens(settings.tokens_file)
        except OSError as exc:
            problems.append(f"tokens_file {settings.tokens_file}: cannot read it "
                            f"({exc.strerror})")
        except ValueError as exc:
            problems.append(f"tokens_file {exc}; each line must be a JSON object with "
                            "sha256, project_id, user_id and roles")
    return problems


def _check_keystone(settings: Settings) -> None:
    for name in ("keystone_url", "keystone_user"):
        if not getattr(settings, name):
            raise SettingsError(f"setting auth is 'keystone' but {name} is empty; set "
                                f"{name} in the config file or {BY_NAME[name].env}")
    if not settings.keystone_password and not settings.keystone_password_file:
        raise SettingsError("setting auth is 'keystone' but neither keystone_password nor "
                            "keystone_password_file is set; set one in the config file or "
                            "APPLIANCE_KEYSTONE_PASSWORD_FILE")
    if settings.keystone_password_file and not os.path.isfile(
            settings.keystone_password_file):
        raise SettingsError(f"setting keystone_password_file "
                            f"{settings.keystone_password_file!r}: no such file; create it "
                            "or fix keystone_password_file / "
                            "APPLIANCE_KEYSTONE_PASSWORD_FILE")
    if settings.keystone_timeout >= settings.worker_timeout:
        raise SettingsError(f"setting keystone_timeout {settings.keystone_timeout:g} is not "
                            f"shorter than worker_timeout {settings.worker_timeout:g}: a "
                            "worker waiting on Keystone would be killed as silent; lower "
                            "keystone_timeout")


SECRETS = ("admin_token", "keystone_password")


def check_files(settings: Settings) -> list[str]:
    """Read what ``serve`` will read at start (tokens file, Keystone password file):
    SettingsError for the first that fails; else lines saying what was read."""
    from appliance.api.identity import load_tokens
    lines = []
    if settings.auth == "tokens":
        try:
            lines.append(f"tokens_file: {len(load_tokens(settings.tokens_file))} tokens")
        except (OSError, ValueError) as exc:
            raise SettingsError(f"setting tokens_file {settings.tokens_file!r}: {exc}; fix "
                                "the file") from None
    if settings.auth == "keystone":
        try:
            password = keystone_password(settings)
        except OSError as exc:
            raise SettingsError(f"setting keystone_password_file "
                                f"{settings.keystone_password_file!r}: cannot read it "
                                f"({exc.strerror})") from None
        if not password:
            raise SettingsError("the Keystone password is empty; put it in "
                                "keystone_password_file (first line) or keystone_password")
        lines.append(f"keystone: {settings.keystone_url} as {settings.keystone_user} "
                     f"(project {settings.keystone_project})")
    if settings.tls_cert_file:
        import ssl
        from appliance.tls import server_context
        try:
            server_context(settings.tls_cert_file, settings.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"settings tls_cert_file / tls_key_file: they do not load "
                                f"({exc}); give a PEM certificate and its key") from None
        lines.append(f"tls: {settings.tls_cert_file} loads with its key")
    if not settings.cells:
        lines.append("cells: none configured (the replica is served as it is)")
    return lines


def keystone_password(settings: Settings) -> str:
    """keystone_password, or the first line of keystone_password_file."""
    if settings.keystone_password_file:
        with open(settings.keystone_password_file, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    return settings.keystone_password


def read_file(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"config file {path}: no such file; pass an existing file "
                            "to --config") from None
    except OSError as exc:
        raise SettingsError(f"config file {path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path}: not valid TOML ({exc}); fix the "
                            "syntax") from None


def load(path: str | None = None, environ: dict | None = None,
         overrides: dict | None = None) -> Settings:
    """Defaults, then the TOML file at ``path``, then ``APPLIANCE_*`` variables, then
    ``overrides`` (from the command line). Raises SettingsError (one line)."""
    environ = os.environ if environ is None else environ
    table = read_file(path) if path else {}
    known = {s.toml_key for s in SETTINGS}
    unknown = sorted(set(table) - known)
    if unknown:
        raise SettingsError(f"config file {path}: unknown setting {unknown[0]!r}; see "
                            "docs/configuration.md for the settings that exist")
    values, sources = {}, {}
    for setting in SETTINGS:
        raw, source = setting.default_value(), "default"
        if setting.toml_key in table:
            raw, source = table[setting.toml_key], path
        if setting.env in environ:
            raw, source = environ[setting.env], setting.env
        if overrides and overrides.get(setting.name) is not None:
            raw, source = overrides[setting.name], "the command line"
        values[setting.name] = _convert(setting, raw, source)
        sources[setting.name] = source
    settings = Settings(values, sources)
    _check_together(settings)
    return settings


def unknown_environment(environ: dict | None = None) -> list[str]:
    """``APPLIANCE_*`` variables that are no setting (a typo, most likely). Not refused:
    build scripts use the prefix too; the supervisor logs a warning for each."""
    environ = os.environ if environ is None else environ
    return sorted(k for k in environ if k.startswith(ENV_PREFIX)
                  and k[len(ENV_PREFIX):].lower() not in BY_NAME)


# ---------------------------------------------------------------------------
# Documentation, generated from the rows above.
# ---------------------------------------------------------------------------

DOC_HEADER = """\
# Configuration

<!-- Generated from appliance/settings.py by `appliance config-doc`; do not edit. -->

`appliance serve --config FILE` reads a TOML file. Every setting can be overridden by
its environment variable; the environment wins over the file. A bad value stops the
appliance at start with one line saying which setting is wrong, where it came from and
how to fix it (exit code 2).

```toml
listen_host = "0.0.0.0"
listen_port = 8774
workers = 4
data_dir = "/var/lib/appliance"

[[cell]]
name = "cell1"
feed = "tcp://10.0.0.5:7001"
control = "tcp://10.0.0.5:7002"

[[cell]]
name = "flavors"
kind = "flavors"          # the flavor source, beside the API database
feed = "tcp://10.0.0.4:7001"
control = "tcp://10.0.0.4:7002"
```

`appliance serve --config FILE --check` prints every setting with where it came from,
then refuses (exit code 2, one line each) what a serving appliance cannot work with: no
server cell, no flavor source (`kind = "flavors"`), a `tokens_file` with a bad line; and
warns about every setting that exposes data (noauth off loopback, a default noauth
identity off loopback, the admin listener off loopback).

| setting | type | default | environment | description |
|---|---|---|---|---|
"""


def _doc_default(setting: Setting) -> str:
    if setting.default_doc:
        return setting.default_doc
    value = setting.default
    if value in ("", ()):
        return "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


DOC_FOOTER = """
## Processes, signals and listening

`appliance serve` is a supervisor (`appliance: supervisor`) with children: `workers` API
workers (`appliance: worker N`), the ingest (`appliance: ingest`) and the admin listener
(`appliance: admin`). A child that dies is restarted; one that cannot boot stops the
supervisor (exit code 3) instead of being restarted in a loop. Every child dies with the
supervisor, even when the supervisor is killed with SIGKILL.

The supervisor binds `listen_host:listen_port` once at start (a bad or busy address stops
it there, exit code 1) and keeps the port reserved; each worker opens its own
`SO_REUSEPORT` listener on it, so the kernel spreads connections evenly across workers.
Accepted sockets get `TCP_NODELAY`. The admin address is handled the same way.

| signal | effect |
|---|---|
| `SIGTERM`, `SIGINT`, `SIGQUIT` | stop: workers stop accepting, finish in-flight requests (up to `graceful_timeout`), exit; then the rest stops. A second stop signal more than a second after the first kills what is still draining; the same signal twice within a second is one request (Ctrl-C under the one-file binary reaches the supervisor from the terminal and again from the launcher) |
| `SIGHUP` | reload: re-read the config file (settings that need a restart are logged and kept), then replace workers one at a time, each new one serving before an old one drains; new workers read `tokens_file`, `keystone_password_file` and the TLS files afresh |
| `SIGTTIN`, `SIGTTOU` | one worker more, one fewer |

A worker that stops touching its heartbeat file (in `data_dir/run/`) for `worker_timeout`
seconds gets `SIGABRT`, then `SIGKILL`, and is replaced. The process table is
`data_dir/processes.json` (also in the admin listener's `GET /status`).

Under the one-file binary the supervisor is the child of PyInstaller's launcher. If the
launcher dies, even by `SIGKILL`, the supervisor gets `SIGTERM` (`PR_SET_PDEATHSIG`),
logs `launcher_gone`, stops gracefully and, as its last act, removes the unpacked
`_MEI` directory the launcher can no longer remove.

## The admin listener

On `admin_host:admin_port`. Off loopback (or with `admin_token_always`) every request
needs `X-Auth-Token: <admin_token>`, `Authorization: Bearer <admin_token>` or HTTP Basic
authentication with the token as the password (browsers). Answers are JSON; errors are
`{"error": {"code": ..., "message": ...}}`. A POST from another site's page (`Origin`) is
refused.

| request | answer |
|---|---|
| `GET /` | the status page: cells (state, seq, lag and its chart, servers, dead letters, errors), processes, resync and verify buttons; refreshes itself |
| `GET /lag-history` | each cell's lag samples of the last 5 minutes |
| `GET /healthz` | 200 while the listener runs |
| `GET /readyz` | 200 once every cell has been live at least once and lags less than `readyz_max_lag_ms`; else 503 with `reasons` |
| `GET /status` | per cell: state, epoch, seq, head, lag, servers, last event, gaps, dead letters; per process: role, pid, state, restarts, started |
| `POST /resync[?cell=NAME]` | 202 with the job (`appliance resync` follows it) |
| `POST /verify[?cell=NAME][&repair=true]` | 202 with the job (`appliance verify`) |
| `GET /jobs/ID` | the job: state, done, total, error, result |
| `GET /metrics` | Prometheus text in base units: `appliance_api_request_seconds` (histogram by method, endpoint, status; buckets from 100 us), per cell `appliance_cell_lag_seconds`, `appliance_cell_lag_events`, `appliance_cell_seq`, `appliance_cell_head_seq`, `appliance_cell_state`, `appliance_cell_live_once`, `appliance_cell_servers`, `appliance_cell_flavors`, `appliance_cell_gaps_total`, `appliance_cell_replays_total`, `appliance_cell_resyncs_total`, `appliance_cell_resync_failures_total`, `appliance_cell_dead_letters_total`, ingest totals, `appliance_ready`, `appliance_build_info`, `appliance_process_restarts_total` and `process_*` per process (labels `process`, `role`), and with `auth = "keystone"` `appliance_keystone_validations_total` (by outcome: `valid`, `invalid`, `cached_while_unreachable`, `refused_while_unreachable`). The README's Monitoring section lists them; `docs/monitoring/` has alert rules and a Grafana dashboard |
"""


def render_docs() -> str:
    rows = []
    for s in SETTINGS:
        options = getattr(s.validate, "options", None)
        text = s.help + (f" One of: {', '.join(options)}." if options else "")
        rows.append(f"| `{s.toml_key}` | {s.kind} | {_doc_default(s)} | `{s.env}` | "
                    f"{text.replace('|', '/')} |")
    return DOC_HEADER + "\n".join(rows) + "\n" + DOC_FOOTER
