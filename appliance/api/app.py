"""The Compute API WSGI app: a small dispatcher for the read routes in front of a bottle
app that serves version discovery and every other path; with an upstream, whatever is
not a replicated read is passed to it (``upstream.py``).

The read routes do as little Python as possible per request: split the path, read two
headers, run ONE reader statement that returns the body bytes, add the headers. Errors
anywhere are ``ApiError`` and leave as Nova faults; nothing leaves as a traceback.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import re
import time
from email.utils import formatdate
from urllib.parse import urlencode

import apsw
import bottle
import gevent

from appliance.api import microversion
from appliance.api.action_params import (DELETED_SERVERS_MINOR, PAGING_MINOR,
                                         action_query)
from appliance.api.config import ApiConfig
from appliance.api.faults import (ApiError, NoSuchRoute, bad_request, fault_body, not_found,
                                  not_replicated, read_only, status_line)
from appliance.api.flavor_params import flavor_query
from appliance.api.flavor_params import schema_names as flavor_schema_names
from appliance.api import hypervisor_params as HV
from appliance.api.keypair_params import INDEX_SCHEMA as KEYPAIR_INDEX_SCHEMA
from appliance.api.keypair_params import PAGING_MINOR as KEYPAIR_PAGING_MINOR
from appliance.api.keypair_params import TYPE_MINOR as KEYPAIR_TYPE_MINOR
from appliance.api.keypair_params import keypair_query
from appliance.api.identity import NoAuth, TokenFile
from appliance.api.keystone import KeystoneAuth
from appliance.api.params import (CANONICAL_UUID, NO_PARAMETERS, STRICT_QUERY_MINOR,
                                  additional_properties, canonical_uuid, is_uuid_like,
                                  parse_query)
from appliance.api.positions import FeedHeads, format_position, parse_position, wait_for
from appliance.api.recent_writes import RecentWrites
from appliance.api.server_group_params import check_show_query, server_group_query
from appliance.api.server_params import schema_properties, server_query
from appliance.api.token_store import TokenStore
from appliance.api.upstream import Upstream
from appliance.api.versions import version_document, versions_document
from replica import render
from replica.render import FlavorView, InstanceActionView, ServerView
from replica.store.reader import (UNKNOWN_SERVER, Prefixes, ReadResult, ReadTimeout,
                                  RegexTooCostly, reader_for, server_list, stored_server_uuid)

LOG = logging.getLogger(__name__)
READ_METHODS = ("GET", "HEAD")
COLLECTIONS = ("servers", "flavors", "os-keypairs", "limits", "os-quota-sets",
               "os-hypervisors", "os-services", "os-aggregates", "os-availability-zone",
               "os-server-groups")
# The feeds whose loading holds a collection's reads back (replica.kinds feed roles;
# limits and quota sets: the servers' usage and the API database's quota limits): 503
# "loading" until each was live once.
_LOADS_WITH = {"servers": ("servers",), "flavors": ("flavors",), "os-keypairs": ("flavors",),
               "limits": ("servers", "flavors"), "os-quota-sets": ("servers", "flavors"),
               "os-hypervisors": ("servers",), "os-services": ("servers", "flavors"),
               "os-aggregates": ("flavors",),
               "os-availability-zone": ("servers", "flavors"),
               "os-server-groups": ("servers", "flavors")}
# GET /limits: its one parameter, and the microversion from which others are refused.
LIMITS_PARAMETERS = frozenset({"tenant_id"})
LIMITS_STRICT_QUERY_MINOR = 75
QUOTA_SET_PARAMETERS = frozenset({"user_id"})      # show and detail, refused others from 2.75
ZONES_STRICT_QUERY_MINOR = 102     # /os-availability-zone[/detail] refuse any parameter
# GET /os-services: its filters, from 2.75 the only parameters; 2.11 forced_down, 2.53 uuids.
SERVICES_PARAMETERS = frozenset({"host", "binary"})
SERVICES_STRICT_QUERY_MINOR = 75
SHOW_SERVER = "/v2.1/servers/"
DISCOVERY = ("/", "/v2.1", "/v2.1/")     # answered here, with or without an upstream
MIN_POSITION = "HTTP_X_REPLICA_MIN_POSITION"      # a read waits for this position
REACHED = "appliance.position_reached"            # ... and says whether it came
_HOST = re.compile(r"^[A-Za-z0-9.\-_:\[\]]{1,255}$")
_SCHEME = ("http", "https")
# The statements of this long share one read transaction (Reader.hold_snapshots): a
# read may answer from a snapshot up to a millisecond old.
SNAPSHOT_HOLD_S = 0.001
TAGS_MINOR = 26               # server tags exist from 2.26
PARSED_QUERIES_KEPT = 1024    # server list queries kept parsed per worker
PIECES_FROM_BYTES = 64 << 10  # a bigger list page and its closing are sent as two pieces
LOADING_RECHECK_S = 0.0       # while loading, every request asks the store (one statement, as
                              # the read would): no worker says "loading" after another served
LOADING_RETRY_AFTER = 2       # seconds, in the Retry-After of the "loading" fault
LOADING_MESSAGE = ("The replica is still loading: not every cell has been replicated yet. "
                   "Retry the request shortly.")
# /servers/{id}/<kind>: (the reader's sub-resource of the collection, of one item) and
# Nova's message when the item is missing.
# The sub-resources whose last path segment is a key: nova-api routes no deeper path.
_KEYED_SUBRESOURCES = ("tags", "metadata", "ips", "os-extra_specs", "os-instance-actions")
_SERVER_SUBRESOURCES = {
    "tags": (("tags", None), ("tag", "Server {server} has no tag '{key}'")),
    "metadata": (("metadata", None), ("meta", "Metadata item was not found")),
    "ips": (("ips", None), ("network", "Instance is not a member of specified network")),
}


class _Read:
    """What one read request carries through its handler."""

    __slots__ = ("environ", "minor", "identity", "url_project", "root", "prefixes",
                 "pairs", "multi")

    def __init__(self, environ, minor, identity, url_project, root, prefixes):
        self.environ = environ
        self.minor = minor
        self.identity = identity
        self.url_project = url_project
        self.root = root
        self.prefixes = prefixes
        self.pairs = None
        self.multi = None

    def query(self):
        if self.multi is None:
            self.pairs, self.multi = parse_query(self.environ)
        return self.multi

    def no_query(self) -> None:
        """Routes whose query schema has no properties: from 2.102 any parameter is
        refused (below, Nova drops them)."""
        if self.minor >= STRICT_QUERY_MINOR and self.environ.get("QUERY_STRING"):
            additional_properties(self.query(), NO_PARAMETERS, pattern_underscore=False)


class ComputeApi:
    """The WSGI callable (``make_app``); ``reload()`` re-reads the tokens file."""

    def __init__(self, config: ApiConfig):
        self.config = config
        if config.auth == "keystone":
            store = (TokenStore(config.token_store_path, config.keystone.cache_size)
                     if config.token_store_path else None)
            self.auth = KeystoneAuth(config.keystone, store)
        elif config.auth == "tokens":
            self.auth = TokenFile(config.tokens_file)
        else:
            self.auth = NoAuth(config.noauth_default_token)
        self._version_headers = {m: microversion.response_headers(m)
                                 for m in range(microversion.MIN_MINOR,
                                                microversion.MAX_MINOR + 1)}
        self._prefixes: dict[tuple[str, str | None], Prefixes] = {}
        # (query string, minor, identity, detail) -> (ServerQuery, pairs, multi, view,
        # the store's ServerList statement): read only
        self._server_queries: dict[tuple, tuple] = {}
        # (that key, root, URL project, page count, last id) -> the page's closing bytes
        self._closings: dict[tuple, bytes] = {}
        self._roots: dict[tuple, str] = {}
        self._by_host: dict[str | None, Prefixes] = {}
        self._server_views = {(m, a, s): ServerView(m, a, s)
                              for m in range(1, microversion.MAX_MINOR + 1)
                              for a in (False, True) for s in (False, True)}
        self._flavor_views = {(m, d): FlavorView(m, d)
                              for m in range(1, microversion.MAX_MINOR + 1)
                              for d in (False, True)}
        self.upstream = (Upstream(config.upstream_url, config.upstream_timeout,
                                  config.upstream_cafile) if config.upstream_url else None)
        self.heads = (FeedHeads(config.feeds) if config.feeds and self.upstream is not None
                      else None)
        self.recent = (RecentWrites(config.recent_writes_path,
                                    config.read_your_writes_window)
                       if self.heads is not None and config.recent_writes_path
                       and config.read_your_writes_window > 0 else None)
        self.bottle = _bottle_app(self)
        # Until the store says every feed of a kind has been live once, reads of that
        # kind answer 503 "loading". Each flag flips to False once and stays so: after
        # that the check costs one attribute test, no statement.
        self._loading = {"servers": bool(config.server_feeds),
                         "flavors": bool(config.flavor_feeds)}
        self._servers_loading = self._loading["servers"]
        self._loading_checked = 0.0

    def reload(self) -> None:
        self.auth.reload()

    # -- WSGI entry -------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request_id = _request_id()
        try:
            path = environ.get("PATH_INFO", "")
            if path.startswith(SHOW_SERVER) and environ.get("REQUEST_METHOD") == "GET":
                server_id = path[len(SHOW_SERVER):]
                if CANONICAL_UUID.match(server_id) and MIN_POSITION not in environ:
                    return self._show_server_fast(environ, start_response, request_id,
                                                  server_id)
            return self._dispatch(environ, start_response, request_id)
        except ApiError as err:
            return self._fault(start_response, err, request_id, environ, None, None)
        except RegexTooCostly:
            err = ApiError(400, "Invalid input for query parameters: a regex filter "
                                "backtracks too much to be matched; simplify the pattern.")
            return self._fault(start_response, err, request_id, environ, None, None)
        except ReadTimeout as exc:
            LOG.warning("%s %s: %s", request_id, environ.get("PATH_INFO"), exc)
            err = ApiError(503, "The replica did not answer in time; retry the request.")
            return self._fault(start_response, err, request_id, environ, None, None)
        except apsw.Error as exc:
            LOG.error("%s %s: replica store: %s", request_id, environ.get("PATH_INFO"), exc)
            err = ApiError(503, "The replica store is not available right now.")
            return self._fault(start_response, err, request_id, environ, None, None)
        except Exception:  # the last line: log it, answer a fault, never a traceback
            LOG.exception("%s %s %s failed", request_id, environ.get("REQUEST_METHOD"),
                          environ.get("PATH_INFO"))
            err = ApiError(503, f"The request could not be answered ({request_id}).")
            return self._fault(start_response, err, request_id, environ, None, None)

    def _show_server_fast(self, environ, start_response, request_id, server_id):
        """GET /v2.1/servers/{uuid}, the hottest route, without the general dispatch."""
        minor = microversion.requested(environ)
        identity = self.auth.identify(environ)
        if minor >= STRICT_QUERY_MINOR and environ.get("QUERY_STRING"):
            try:        # server show's query schema names no parameter
                additional_properties(parse_query(environ)[1], NO_PARAMETERS, False)
            except ApiError as err:
                return self._fault(start_response, err, request_id, environ, minor, None)
        if not identity.reader:
            raise _policy_refused("servers:show")
        if self._servers_loading:
            self._refuse_while_loading("servers")
        if self.recent is not None and self.recent.active():
            self._wait_for_own_write(environ, identity)
        host = environ.get("HTTP_HOST")
        if _names_project(identity.project_id, host, environ["PATH_INFO"], environ):
            return self._dispatch(environ, start_response, request_id)
        forwarded = self._forwarded(environ)
        prefixes = None if forwarded else self._by_host.get(host)
        if prefixes is None:
            prefixes = self._prefixes_for(self._root(environ), None)
            if not forwarded:
                self._remember_host(host, prefixes)
        result = self._reader.show_server(
            server_id, self._server_views[(minor, identity.admin, True)], prefixes,
            None if identity.admin else identity.project_id)
        if result.body is None:
            if REACHED in environ and self.upstream is not None:
                # The caller has just written (`server create`, then `--wait` asks for
                # it): a server Nova is still building lives only in Nova's API database
                # until a cell has it, and is not replicated yet. nova-api answers.
                return self._pass(environ, start_response, request_id)
            err = _NotFoundWith(f"Instance {server_id} could not be found.", result)
            return self._fault(start_response, err, request_id, environ, minor, result)
        body = b'{"server":' + result.body + b"}"
        headers = [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("x-openstack-request-id", request_id), ("x-compute-request-id", request_id),
            ("Server-Timing", 'db;desc="1 stmt";dur=%.3f' % result.elapsed_ms),
            ("X-Replica-Position", result.position), *self._version_headers[minor],
            _date()]
        if REACHED in environ:
            headers.append(("X-Replica-Position-Reached", environ[REACHED]))
        start_response("200 OK", headers)
        return [body]

    def _refuse_while_loading(self, kind: str) -> None:
        """Raise the "loading" fault while a feed of ``kind`` has never been live; asks
        the store at most every LOADING_RECHECK_S, and never again once all were."""
        now = time.monotonic()
        if now - self._loading_checked >= LOADING_RECHECK_S:
            self._loading_checked = now
            try:
                live = self._reader.cells_live_once()
            except apsw.Error:
                live = set()
            for name, feeds in (("servers", self.config.server_feeds),
                                ("flavors", self.config.flavor_feeds)):
                if self._loading[name] and live.issuperset(feeds):
                    self._loading[name] = False
                    LOG.info("every %s feed has been live once: %s reads served", name,
                             name)
            self._servers_loading = self._loading["servers"]
        if self._loading[kind]:
            raise ApiError(503, LOADING_MESSAGE, (("Retry-After", str(LOADING_RETRY_AFTER)),))

    @property
    def _reader(self):
        reader = reader_for(self.config.replica_path)
        if not reader.holds_snapshots:
            reader.hold_snapshots(SNAPSHOT_HOLD_S, _call_later)
        return reader

    @staticmethod
    def _forwarded(environ) -> bool:
        return "HTTP_X_FORWARDED_HOST" in environ or "HTTP_X_FORWARDED_PROTO" in environ

    def _remember_host(self, host, prefixes: Prefixes) -> None:
        # Prefixes by Host header alone, for requests without forwarding headers (the
        # URL scheme and SCRIPT_NAME are fixed for one server).
        if len(self._by_host) > 1000:
            self._by_host.clear()
        self._by_host[host] = prefixes

    def _dispatch(self, environ, start_response, request_id):
        path = environ.get("PATH_INFO") or "/"
        parts = path.strip("/").split("/")
        if parts[0] != "v2.1" or len(parts) == 1:
            if self.upstream is not None and path not in DISCOVERY:
                return self._pass(environ, start_response, request_id)
            return self._bottle(environ, start_response, request_id)
        rest = parts[1:]
        url_project = None
        if rest[0] not in COLLECTIONS:
            url_project = rest[0]
            rest = rest[1:]
        if not rest or rest[0] not in COLLECTIONS:
            if self.upstream is not None:
                return self._pass(environ, start_response, request_id)
            raise not_replicated()
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in READ_METHODS:
            if self.upstream is not None:
                return self._pass(environ, start_response, request_id)
            raise read_only(method)
        minor = None
        try:
            minor = microversion.requested(environ)
            identity = self.auth.identify(environ)
            for role in _LOADS_WITH[rest[0]]:
                if self._loading[role]:
                    self._refuse_while_loading(role)
            if url_project is not None and url_project != identity.project_id:
                raise ApiError(400, f"Malformed request URL: URL's project_id "
                                    f"'{url_project}' doesn't match Context's project_id "
                                    f"'{identity.project_id}'")
            if rest[0] == "servers" and not identity.reader:
                raise _policy_refused(_servers_rule(rest))
            if MIN_POSITION in environ:
                self._wait_for_position(environ)
            elif self.recent is not None and self.recent.active():
                self._wait_for_own_write(environ, identity)
            root = self._root(environ)
            if url_project is None and _names_project(identity.project_id, root, path,
                                                      environ):
                url_project = identity.project_id
            read = _Read(environ, minor, identity, url_project, root,
                         self._prefixes_for(root, url_project))
            status, body, result = self._route(rest, read)
        except _NotRouted as unrouted:
            if self.upstream is not None:
                return self._pass(environ, start_response, request_id)
            err = NoSuchRoute() if isinstance(unrouted, _NoNovaRoute) else not_replicated()
            return self._fault(start_response, err, request_id, environ, minor, None)
        except ApiError as err:
            return self._fault(start_response, err, request_id, environ, minor, None)
        return self._respond(start_response, environ, status, body, result, request_id,
                             minor)

    def _route(self, rest: list[str], read: _Read):
        collection = rest[0]
        if collection == "os-keypairs":
            if len(rest) > 2 or not self._published("flavors"):
                raise _NotRouted()
            return self._keypairs(read, _path_text(rest[1]) if len(rest) == 2 else None)
        if collection == "limits":
            if len(rest) == 1:
                return self._limits(read)
            raise _NotRouted()
        if collection == "os-quota-sets":
            if len(rest) == 2:
                return self._quota_set(read, _path_text(rest[1]), "show")
            if len(rest) == 3 and rest[2] in ("detail", "defaults"):
                return self._quota_set(read, _path_text(rest[1]), rest[2])
            raise _NotRouted()
        if collection == "os-hypervisors":
            return self._hypervisors(rest, read)
        if collection == "os-aggregates":
            if len(rest) <= 2 and self._published("flavors"):
                return self._aggregates(read, rest[1] if len(rest) == 2 else None)
            raise _NotRouted()
        if collection == "os-services":
            if len(rest) == 1 and self._published("servers"):
                return self._services(read)
            raise _NotRouted()
        if collection == "os-server-groups":
            if len(rest) > 2 or not self._published("flavors"):
                raise _NotRouted()
            return self._server_groups(read, _path_text(rest[1]) if len(rest) == 2 else None)
        if collection == "os-availability-zone":
            # the cells' services and the API database's aggregates: both feeds
            if len(rest) > 2 or (len(rest) == 2 and rest[1] != "detail") \
                    or not (self._published("servers") and self._published("flavors")):
                raise _NotRouted()
            return self._availability_zones(read, len(rest) == 2)
        if len(rest) == 1:
            return (self._list_servers(read, False) if collection == "servers"
                    else self._list_flavors(read, False))
        if len(rest) == 2:
            if rest[1] == "detail":
                return (self._list_servers(read, True) if collection == "servers"
                        else self._list_flavors(read, True))
            return (self._show_server(read, rest[1]) if collection == "servers"
                    else self._show_flavor(read, rest[1]))
        if len(rest) > 4 and rest[2] in _KEYED_SUBRESOURCES:
            raise _NoNovaRoute()        # a key holding '/': no route of nova-api's
        if len(rest) <= 4:
            # Nova looks the key of a metadata item, tag, network or extra spec up as
            # WSGI gives it (PATH_INFO's bytes as latin-1, not decoded as UTF-8): a key
            # beyond ASCII is not found, and its 404 names it so; the same here.
            key = rest[3] if len(rest) == 4 else None
            if collection == "flavors":
                if rest[2] == "os-extra_specs":
                    return self._extra_specs(read, rest[1], key)
                if rest[2] == "os-flavor-access" and key is None:
                    return self._flavor_access(read, rest[1])
            elif rest[2] in _SERVER_SUBRESOURCES:
                return self._server_subresource(read, rest[1], rest[2], key)
            elif rest[2] == "os-instance-actions" and self._published("servers"):
                return self._instance_actions(read, rest[1], key)
        raise _NotRouted()

    # -- handlers ----------------------------------------------------------------------

    def _show_server(self, read: _Read, server_id: str):
        read.no_query()
        stored = stored_server_uuid(server_id)
        if stored is None:
            raise not_found(f"Instance {server_id} could not be found.")
        identity = read.identity
        view = self._server_views[(read.minor, identity.admin, True)]
        result = self._reader.show_server(
            stored, view, read.prefixes,
            None if identity.admin else identity.project_id)
        if result.body is None:         # (named as stored: Nova names the row it found)
            raise _NotFoundWith(f"Instance {stored} could not be found.", result)
        return 200, b'{"server":' + result.body + b"}", result

    def _show_flavor(self, read: _Read, flavorid: str):
        read.no_query()
        identity = read.identity
        view = self._flavor_views[(read.minor, True)]
        result = self._reader.show_flavor(
            flavorid, view, read.prefixes, None if identity.admin else identity.project_id)
        if result.body is None:
            raise _NotFoundWith(f"Flavor {flavorid} could not be found.", result)
        return 200, b'{"flavor":' + result.body + b"}", result

    def _extra_specs(self, read: _Read, flavorid: str, key: str | None):
        """GET /flavors/{id}/os-extra_specs[/{key}] (flavors_extraspecs index / show)."""
        read.no_query()
        identity = read.identity
        result = self._reader.subresource(
            "extra_specs" if key is None else "extra_spec", flavorid,
            None if identity.admin else identity.project_id, key)
        if not result.count:
            raise _NotFoundWith(f"Flavor {flavorid} could not be found.", result)
        if result.body is None:
            raise _NotFoundWith(f"Flavor {flavorid} has no extra specs with key {key}.",
                                result)
        return 200, result.body, result

    def _flavor_access(self, read: _Read, flavorid: str):
        """GET /flavors/{id}/os-flavor-access (Nova's flavor_access index; policy: admins):
        the projects a private flavor is shared with."""
        read.no_query()         # Nova checks the query before the policy
        if not read.identity.admin:
            raise _policy_refused("os-flavor-access")
        flavorid = _path_text(flavorid)
        result = self._reader.subresource("flavor_access", flavorid, None)
        if not result.count:
            raise _NotFoundWith(f"Flavor {flavorid} could not be found.", result)
        if result.body is None:
            raise _NotFoundWith("Access list not available for public flavors.", result)
        return 200, result.body, result

    def _server_subresource(self, read: _Read, server_id: str, kind: str, key: str | None):
        """GET /servers/{id}/tags[/{tag}], /metadata[/{key}], /ips[/{network}]."""
        if kind == "tags":
            if read.minor < TAGS_MINOR:
                raise not_found()      # Nova: no such method below 2.26
            # Nova 34 defines strict 2.102 query schemas for tags but does not attach
            # them: tags keep dropping unknown parameters.
        else:
            read.no_query()
        # Nova finds the tags through the server's cell mapping, which a server it has
        # never had (or a malformed id) lacks: "not found" in other words.
        unknown = f"Instance {server_id} has no mapping to a cell."
        stored = stored_server_uuid(server_id)
        gone = f"Instance {stored or server_id} could not be found."
        if kind != "tags":
            unknown = gone
        if stored is None:
            raise not_found(unknown)
        identity = read.identity
        name, missing = _SERVER_SUBRESOURCES[kind][key is not None]
        result = self._reader.subresource(
            name, stored, None if identity.admin else identity.project_id, key)
        if result.count == UNKNOWN_SERVER:
            raise _NotFoundWith(unknown, result)
        if not result.count:
            raise _NotFoundWith(gone, result)
        if result.body is None:
            raise _NotFoundWith(missing.format(server=server_id, key=key), result)
        return (204 if name == "tag" else 200), result.body, result

    def _instance_actions(self, read: _Read, server_id: str, request_id: str | None):
        """GET /servers/{id}/os-instance-actions[/{request_id}]: Nova's instance actions
        (policy: a project reader or an admin; the events' traceback and host for admins;
        a deleted server's actions from 2.21)."""
        identity, minor = read.identity, read.minor
        if request_id is None:
            query = action_query(read.query(), minor, self.config.max_limit)
        else:
            read.no_query()
        stored = stored_server_uuid(server_id)
        if stored is None:
            raise not_found(f"Instance {server_id} could not be found.")
        project = None if identity.admin else identity.project_id
        deleted = minor >= DELETED_SERVERS_MINOR
        if request_id is not None:
            result = self._reader.show_instance_action(
                stored, request_id,
                InstanceActionView(minor, identity.admin), project, deleted)
            if not result.count:
                raise _NotFoundWith(f"Instance {stored} could not be found.", result)
            if result.body is None:
                raise _NotFoundWith(f"Action {request_id} not found", result)
            return 200, result.body, result
        found, result = self._reader.list_instance_actions(
            stored, project, deleted, minor >= PAGING_MINOR, query.marker,
            query.limit, query.changes_since, query.changes_before)
        if not found:
            raise _NotFoundWith(f"Instance {stored} could not be found.", result)
        if query.marker is not None and not result.marker_found and query.limit != 0:
            # Nova names the marker after its lookup came back empty (a limit of 0
            # answers [] before the lookup)
            raise _BadRequestWith("Marker None could not be found.", result)
        if minor < PAGING_MINOR:
            return 200, result.body + b"}", result
        collection = f"servers/{server_id}/os-instance-actions"
        return 200, self._close_list(read, result, collection, "links"), result

    def _published(self, role: str) -> bool:
        """Whether a feed of ``role`` is configured to publish a kind read here: without
        one (an appliance that only passes through), the upstream answers."""
        return self.upstream is None or bool(
            self.config.server_feeds if role == "servers" else self.config.api_db_feeds)

    def _keypairs(self, read: _Read, name: str | None):
        """GET /os-keypairs[/{name}]: the caller's key pairs, or (an admin, 2.10+) those
        of ``user_id``; Nova's policy: an admin or the key pairs' own user."""
        identity, minor = read.identity, read.minor
        query = keypair_query(read.query(), minor, self.config.max_limit, name is not None)
        user_id = query.user_id or identity.user_id
        if not identity.admin and user_id != identity.user_id:
            raise _policy_refused(f"os-keypairs:{'show' if name else 'index'}")
        with_type = minor >= KEYPAIR_TYPE_MINOR
        if name is not None:
            result = self._reader.show_keypair(user_id, name, with_type)
            if result.body is None:
                raise _NotFoundWith(f"Keypair {name} not found for user {user_id}", result)
            return 200, result.body, result
        result = self._reader.list_keypairs(user_id, with_type, query.marker, query.limit)
        if query.marker is not None and not result.marker_found:
            raise _BadRequestWith(f"Marker {query.marker} could not be found.", result)
        if minor < KEYPAIR_PAGING_MINOR:
            return 200, result.body + b"}", result
        return 200, self._close_list(read, result, "os-keypairs", "keypairs_links",
                                     KEYPAIR_INDEX_SCHEMA), result

    def _limits(self, read: _Read):
        """GET /limits: the project's absolute limits and usage (policy: anyone; another
        project's, ``tenant_id``, for admins only)."""
        multi = read.query()
        if read.minor >= LIMITS_STRICT_QUERY_MINOR:
            additional_properties(multi, LIMITS_PARAMETERS, pattern_underscore=False)
        identity = read.identity
        project_id = identity.project_id
        if "tenant_id" in multi:
            if not identity.admin:
                raise _policy_refused("limits:other_project")
            project_id = multi["tenant_id"][-1]
        result = self._reader.limits(project_id or "", read.minor)
        return 200, result.body, result

    def _quota_set(self, read: _Read, project_id: str, mode: str):
        """GET /os-quota-sets/{project}[/detail|/defaults] (policy: the project's readers
        and admins; the defaults for anyone). A user's quotas (``user_id``) are not
        replicated: that read goes to the upstream."""
        multi = read.query()
        identity = read.identity
        if mode != "defaults":
            if read.minor >= LIMITS_STRICT_QUERY_MINOR:
                additional_properties(multi, QUOTA_SET_PARAMETERS, pattern_underscore=False)
            if not identity.admin and not (identity.reader
                                           and identity.project_id == project_id):
                raise _policy_refused(f"os-quota-sets:{mode}")
            if "user_id" in multi:
                raise _NotRouted()
        result = self._reader.quota_set(project_id, read.minor, mode)
        return 200, result.body, result

    def _hypervisors(self, rest: list[str], read: _Read):
        """GET /os-hypervisors, /detail, /{id}, and before 2.53 /{pattern}/search and
        /{pattern}/servers (admin only). Statistics and uptime (before 2.88) are not
        replicated: an aggregate over every compute node, and a call to the compute
        host; they go to the upstream."""
        if not self._published("servers") or len(rest) > 3 or (
                len(rest) == 2 and rest[1] == "statistics") or (
                len(rest) == 3 and rest[2] == "uptime"):
            raise _NotRouted()
        minor, identity = read.minor, read.identity
        if len(rest) == 3:
            if rest[2] not in ("search", "servers") or minor >= HV.UUID_MINOR:
                raise not_found()
            if not identity.admin:
                raise _policy_refused(f"os-hypervisors:{rest[2]}")
            pattern = _path_text(rest[1])
            matched, result = self._reader.list_hypervisors(
                "h_basic_v21", False, None, None, pattern, rest[2] == "servers", False)
            if not matched:
                raise _NotFoundWith(f"No hypervisor matching '{pattern}' could be found.",
                                    result)
            return 200, result.body + b"}", result
        detail = len(rest) == 2 and rest[1] == "detail"
        show = len(rest) == 2 and not detail
        query = HV.hypervisor_query(read.query(), minor, self.config.max_limit, show)
        if not identity.admin:
            raise _policy_refused("os-hypervisors:" + (
                "show" if show else "list-detail" if detail else "list"))
        if query.refusal is not None:
            raise bad_request(query.refusal)
        uuids = minor >= HV.UUID_MINOR
        if not detail and not show:
            column = "h_basic_v253" if uuids else "h_basic_v21"
        elif minor >= HV.NO_RESOURCES_MINOR:
            column = "h_detail_v288"
        elif uuids:
            column = "h_detail_v253"
        else:
            column = ("h_detail_v228" if minor >= HV.CPU_INFO_OBJECT_MINOR
                      else "h_detail_v21")
        empty_servers = minor >= HV.EMPTY_SERVERS_MINOR
        if show:
            hypervisor_id = _path_text(rest[1])
            if uuids:
                if not is_uuid_like(hypervisor_id):
                    raise ApiError(400, f"Invalid uuid {hypervisor_id}")
                key = canonical_uuid(hypervisor_id)
            else:
                try:
                    key = str(int(hypervisor_id))
                except ValueError:
                    raise not_found(f"Hypervisor with ID '{hypervisor_id}' could not be "
                                    f"found.") from None
            result = self._reader.show_hypervisor(column, uuids, key, query.with_servers,
                                                  empty_servers)
            if result.body is None:
                raise _NotFoundWith(f"Hypervisor with ID '{hypervisor_id}' could not be "
                                    f"found.", result)
            return 200, result.body, result
        matched, result = self._reader.list_hypervisors(
            column, uuids, query.marker, query.limit, query.pattern, query.with_servers,
            empty_servers)
        if query.pattern is not None and not matched:
            raise _NotFoundWith(f"No hypervisor matching '{query.pattern}' could be found.",
                                result)
        if query.marker is not None and not result.marker_found:
            raise _BadRequestWith(f"marker [{query.marker}] not found", result)
        if minor < HV.PAGING_MINOR or query.pattern is not None:
            return 200, result.body + b"}", result
        collection = "os-hypervisors/detail" if detail else "os-hypervisors"
        named = HV.INDEX_SCHEMA if minor >= HV.UUID_MINOR else HV.PAGING_SCHEMA
        return 200, self._close_list(read, result, collection, "hypervisors_links",
                                     named), result

    def _services(self, read: _Read):
        """GET /os-services (Nova's services index; policy: admins): every cell's
        services, ``host=`` and ``binary=`` keep those that match (empty: any)."""
        multi = read.query()
        if read.minor >= SERVICES_STRICT_QUERY_MINOR:
            additional_properties(multi, SERVICES_PARAMETERS, pattern_underscore=False)
        if not read.identity.admin:
            raise _policy_refused("os-services:list")
        host = multi["host"][-1] if multi.get("host") else None
        binary = multi["binary"][-1] if multi.get("binary") else None
        result = self._reader.list_services(
            host or None, binary or None, read.minor >= render.SERVICE_UUID_ID_MINOR,
            read.minor >= render.SERVICE_FORCED_DOWN_MINOR,
            self.config.default_availability_zone,
            self.config.internal_service_availability_zone)
        return 200, result.body, result

    def _aggregates(self, read: _Read, aggregate_id: str | None):
        """GET /os-aggregates[/{id}] (Nova's aggregates index and show; policy: admins):
        2.41 adds the uuid; an id that is no integer is a 400, an unknown one a 404."""
        read.no_query()
        if not read.identity.admin:
            raise _policy_refused(f"os-aggregates:{'index' if aggregate_id is None else 'show'}")
        with_uuid = read.minor >= render.AGGREGATE_UUID_MINOR
        if aggregate_id is None:
            result = self._reader.list_aggregates(with_uuid)
            return 200, result.body, result
        aggregate_id = _path_text(aggregate_id)
        try:
            number = int(aggregate_id)
        except ValueError:
            raise ApiError(400, "Invalid input received: id must be an integer") from None
        if not -(1 << 63) <= number < (1 << 63):
            raise not_found(f"Aggregate {aggregate_id} could not be found.")
        result = self._reader.show_aggregate(number, with_uuid)
        if result.body is None:
            raise _NotFoundWith(f"Aggregate {aggregate_id} could not be found.", result)
        return 200, result.body, result

    def _server_groups(self, read: _Read, group_id: str | None):
        """GET /os-server-groups[/{id}] (policy: the project's readers and admins; a
        group of another project is not found, except by an admin; every project's
        groups with all_projects, for admins only: others get their own)."""
        identity, minor = read.identity, read.minor
        multi = read.query()
        if group_id is not None:
            check_show_query(multi, minor)
            project = None if identity.admin else identity.project_id
            result = self._reader.show_server_group(group_id, project, minor)
            if result.body is None:
                raise _NotFoundWith(f"Instance group {group_id} could not be found.", result)
            if not identity.admin and not identity.reader:
                raise _policy_refused("os-server-groups:show")
            return 200, result.body, result
        query = server_group_query(multi, minor, self.config.max_limit)
        if not identity.admin and not identity.reader:
            raise _policy_refused("os-server-groups:index")
        project = None if identity.admin and query.all_projects else identity.project_id
        result = self._reader.list_server_groups(project, query.limit, query.offset, minor)
        return 200, result.body, result

    def _availability_zones(self, read: _Read, detail: bool):
        """GET /os-availability-zone[/detail] (policy: the list for anyone, the detail
        for admins)."""
        multi = read.query()
        if read.minor >= ZONES_STRICT_QUERY_MINOR:
            additional_properties(multi, frozenset(), pattern_underscore=False)
        if detail and not read.identity.admin:
            raise _policy_refused("os-availability-zone:detail")
        result = self._reader.availability_zones(
            detail, self.config.default_availability_zone,
            self.config.internal_service_availability_zone)
        return 200, result.body, result

    def _list_servers(self, read: _Read, detail: bool):
        # The same list asked again (a dashboard, a poller): its parsed query and its
        # statement are kept, and so is the closing of its page (the next link).
        key = (read.environ.get("QUERY_STRING", ""), read.minor, read.identity, detail)
        found = self._server_queries.get(key)
        if found is None:
            multi = read.query()
            query = server_query(multi, read.minor, read.identity, detail,
                                 self.config.max_limit)
            view = (self._server_views[(read.minor, read.identity.admin, False)]
                    if detail else None)
            if len(self._server_queries) >= PARSED_QUERIES_KEPT:
                self._server_queries.clear()
            found = self._server_queries[key] = (query, read.pairs, multi, view,
                                                 server_list(query, view))
        query, read.pairs, read.multi, view, statement = found
        result = self._reader.list_servers(query, view, read.prefixes, statement)
        if query.refusal is not None:
            if result.marker_found:       # here: the flavor asked for was found
                raise _BadRequestWith(query.refusal, result)
        elif query.marker is not None and not result.marker_found:
            raise _BadRequestWith(f"marker [{query.marker}] not found", result)
        closing_key = (key, read.root, read.url_project, result.count, result.last_id)
        closing = self._closings.get(closing_key)
        if closing is None:
            collection = "servers/detail" if detail else "servers"
            closing = self._list_closing(read, result, collection, "servers_links",
                                         schema_properties(read.minor))
            if len(self._closings) >= PARSED_QUERIES_KEPT:
                self._closings.clear()
            self._closings[closing_key] = closing
        if len(result.body) > PIECES_FROM_BYTES:
            return 200, (result.body, closing), result
        return 200, result.body + closing, result

    def _list_flavors(self, read: _Read, detail: bool):
        multi = read.query()
        query = flavor_query(multi, read.minor, read.identity, self.config.max_limit)
        view = self._flavor_views[(read.minor, detail)]
        result = self._reader.list_flavors(query, view, read.prefixes)
        if query.marker is not None and not result.marker_found:
            raise _BadRequestWith(f"marker [{query.marker}] not found", result)
        collection = "flavors/detail" if detail else "flavors"
        return 200, self._close_list(read, result, collection, "flavors_links",
                                     flavor_schema_names(read.minor)), result

    def _close_list(self, read: _Read, result: ReadResult, collection: str,
                    links_key: str, named: frozenset | None = None
                    ) -> bytes | tuple[bytes, bytes]:
        """Close the list body, with Nova's next link when the page is full. A big page
        and its closing stay two pieces (sent together, not copied)."""
        closing = self._list_closing(read, result, collection, links_key, named)
        if len(result.body) > PIECES_FROM_BYTES:
            return result.body, closing
        return result.body + closing

    def _list_closing(self, read: _Read, result: ReadResult, collection: str,
                      links_key: str, named: frozenset | None = None) -> bytes:
        """What closes a list body: ``}``, or Nova's next link and ``}`` when the page
        is full. ``named``: the parameters the route's query schema names (Nova takes
        the others out of the request, so its next link lacks them); None: all."""
        multi = read.multi or {}
        max_items = self.config.max_limit
        if "limit" in multi:
            max_items = min(int(multi["limit"][-1]), max_items)
        if not max_items or result.count != max_items or result.last_id is None:
            closing = b"}"
        else:
            params = dict(sorted(pair for pair in read.pairs or ()
                                 if named is None or pair[0] in named))
            params["marker"] = result.last_id
            self_prefix = _self_prefix(read.root, read.url_project)
            href = f"{self_prefix}/{collection}?{urlencode(params)}"
            links = json.dumps([{"rel": "next", "href": href}])
            closing = b',"' + links_key.encode() + b'":' + links.encode() + b"}"
        return closing

    # -- links ---------------------------------------------------------------------------

    def _root(self, environ) -> str:
        """scheme://host[/path] of the request, as clients reach the API."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        key = (environ.get("HTTP_HOST"), environ.get("HTTP_X_FORWARDED_PROTO"),
               environ.get("HTTP_X_FORWARDED_HOST"), environ.get("wsgi.url_scheme"),
               environ.get("SCRIPT_NAME"))
        root = self._roots.get(key)
        if root is None:
            if len(self._roots) > 1000:
                self._roots.clear()
            root = self._roots[key] = self._root_of(environ)
        return root

    def _root_of(self, environ) -> str:
        scheme = environ.get("HTTP_X_FORWARDED_PROTO") or environ.get("wsgi.url_scheme")
        scheme = scheme.split(",")[0].strip().lower() if scheme else "http"
        if scheme not in _SCHEME:
            scheme = "http"
        host = environ.get("HTTP_X_FORWARDED_HOST") or environ.get("HTTP_HOST")
        host = host.split(",")[0].strip() if host else ""
        if not _HOST.match(host):
            host = f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
        return f"{scheme}://{host}{environ.get('SCRIPT_NAME', '').rstrip('/')}"

    def _prefixes_for(self, root: str, url_project: str | None) -> Prefixes:
        key = (root, url_project)
        found = self._prefixes.get(key)
        if found is None:
            project = f"/{url_project}" if url_project else ""
            # Escaped for JSON: the prefixes are pasted into JSON strings by SQL.
            found = Prefixes(json.dumps(f"{root}/v2.1{project}")[1:-1],
                             json.dumps(f"{root}{project}")[1:-1])
            if len(self._prefixes) > 1000:
                self._prefixes.clear()
            self._prefixes[key] = found
        return found

    # -- responses -----------------------------------------------------------------------

    def _respond(self, start_response, environ, status: int,
                 body: bytes | tuple[bytes, ...], result: ReadResult | None,
                 request_id: str, minor: int | None):
        # ``body``: the bytes, or a tuple of pieces sent in turn (a big list page).
        pieces = body if isinstance(body, tuple) else (body,)
        length = sum(map(len, pieces))
        headers = [("Content-Type", "application/json"), ("Content-Length", str(length)),
                   ("x-openstack-request-id", request_id),
                   ("x-compute-request-id", request_id)]
        headers.append(_server_timing(result))
        if result is not None:
            headers.append(("X-Replica-Position", result.position))
        if minor is not None:
            headers.extend(self._version_headers[minor])
        if REACHED in environ:
            headers.append(("X-Replica-Position-Reached", environ[REACHED]))
        headers.append(_date())
        start_response(status_line(status), headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return [b""]
        return list(pieces)

    def _fault(self, start_response, err: ApiError, request_id: str, environ,
               minor: int | None, result: ReadResult | None):
        if isinstance(err, _WithResult):
            result = err.result
        body = err.body()
        headers = [("Content-Type", err.content_type), ("Content-Length", str(len(body))),
                   ("x-openstack-request-id", request_id),
                   ("x-compute-request-id", request_id), _server_timing(result)]
        if result is not None:
            headers.append(("X-Replica-Position", result.position))
        if minor is not None:
            headers.extend(self._version_headers[minor])
        if REACHED in environ:
            headers.append(("X-Replica-Position-Reached", environ[REACHED]))
        headers.extend(err.headers)
        start_response(status_line(err.status), headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return [b""]
        return [body]

    def _pass(self, environ, start_response, request_id):
        """A request the replica does not answer, answered by the upstream nova-api. A
        write it accepted carries the feeds' heads (read-your-writes)."""
        status, headers, body = self.upstream.open(environ)
        if self.heads is not None and environ.get("REQUEST_METHOD") not in READ_METHODS \
                and status[:1] == "2":
            heads = self.heads.heads()
            if heads:
                headers.append(("X-Replica-Write-Position", format_position(heads)))
                if self.recent is not None:
                    self._remember_write(environ, heads)
        start_response(status, headers)
        return body

    def _remember_write(self, environ, heads) -> None:
        """Keep the write's position under the caller's identity (read-your-writes for
        clients that do not send the header back). nova-api accepted the token; a token
        this appliance cannot resolve just leaves the write unremembered."""
        try:
            identity = self.auth.identify(environ)
        except ApiError:
            return
        self.recent.record(identity, heads)

    def _wait_for_own_write(self, environ, identity) -> None:
        wanted = self.recent.pending(identity)
        if wanted is not None:
            done = wait_for(wanted, self._reader.positions,
                            self.config.read_your_writes_wait)
            environ[REACHED] = "true" if done else "false"

    def _wait_for_position(self, environ) -> None:
        wanted = parse_position(environ[MIN_POSITION])
        if wanted is None:
            raise ApiError(400, "Invalid X-Replica-Min-Position: expected "
                                "cell@epoch:seq items separated by commas, as "
                                "X-Replica-Write-Position gives them.")
        done = wait_for(wanted, self._reader.positions, self.config.read_your_writes_wait)
        environ[REACHED] = "true" if done else "false"

    def _bottle(self, environ, start_response, request_id):
        def with_ids(status, headers, exc_info=None):
            headers = [h for h in headers if h[0].lower() != "content-type"]
            headers += [("Content-Type", "application/json"),
                        ("x-openstack-request-id", request_id),
                        ("x-compute-request-id", request_id), _server_timing(None)]
            return start_response(status, headers, exc_info)
        return self.bottle(environ, with_ids)

    def versions(self, environ) -> bytes:
        return versions_document(self._root(environ))

    def version(self, environ) -> bytes:
        return version_document(self._root(environ))


class _WithResult(ApiError):
    """An error found after the statement ran: the response still reports it."""

    def __init__(self, status: int, message: str, result: ReadResult):
        super().__init__(status, message)
        self.result = result


class _NotRouted(Exception):
    """A path under /servers or /flavors that is no replicated read."""


class _NoNovaRoute(_NotRouted):
    """A path under /servers or /flavors that nova-api routes nowhere either."""


class _NotFoundWith(_WithResult):
    def __init__(self, message: str, result: ReadResult):
        super().__init__(404, message, result)


class _BadRequestWith(_WithResult):
    def __init__(self, message: str, result: ReadResult):
        super().__init__(400, message, result)


def _new_request_ids() -> None:
    # Version-4-shaped uuids: 72 random bits per process, then a counter (48 bits,
    # from a random start). Called again in a forked child, so workers never repeat
    # each other's ids.
    global _REQUEST_PREFIX, _REQUEST_COUNTER
    r = random.getrandbits
    _REQUEST_PREFIX = f"req-{r(32):08x}-{r(16):04x}-4{r(12):03x}-a{r(12):03x}-"
    _REQUEST_COUNTER = itertools.count(r(47))


_REQUEST_PREFIX = ""
_REQUEST_COUNTER = itertools.count()
_new_request_ids()
os.register_at_fork(after_in_child=_new_request_ids)


def _request_id() -> str:
    return f"{_REQUEST_PREFIX}{next(_REQUEST_COUNTER) & 0xFFFFFFFFFFFF:012x}"


_DATE = [0, ("Date", "")]


def _date() -> tuple[str, str]:
    """The Date header, formatted once a second (the server would format it per
    response)."""
    now = int(time.time())
    if now != _DATE[0]:
        _DATE[0], _DATE[1] = now, ("Date", formatdate(now, usegmt=True))
    return _DATE[1]


def _call_later(delay: float, fn) -> None:
    # A timer on the worker's event loop that does not keep the loop alive.
    gevent.get_hub().loop.timer(delay, ref=False).start(fn)


def _policy_refused(rule: str) -> ApiError:
    return ApiError(403, f"Policy doesn't allow os_compute_api:{rule} to be performed.")


_SUBRESOURCE_RULES = {"ips": "ips", "metadata": "server-metadata", "tags": "os-server-tags"}


def _servers_rule(rest: list[str]) -> str:
    """The name of Nova's policy rule for a read under /servers (for the 403 message)."""
    if len(rest) == 1:
        return "servers:index"
    if len(rest) == 2:
        return "servers:detail" if rest[1] == "detail" else "servers:show"
    if rest[2] == "os-instance-actions":
        return f"os-instance-actions:{'show' if len(rest) == 4 else 'list'}"
    kind = _SUBRESOURCE_RULES.get(rest[2], "servers")
    return f"{kind}:{'show' if len(rest) == 4 else 'index'}"


def _path_text(segment: str) -> str:
    """A path segment as text: WSGI gives PATH_INFO's bytes as latin-1."""
    try:
        return segment.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return segment


def _names_project(project: str | None, root: str | None, path: str, environ) -> bool:
    """Whether the caller's project id stands anywhere in the request's URL (``root``:
    its scheme and host, or the host alone). Nova's links then name the project, as if
    the path did (its view builders test ``project_id in request.url``): a query such
    as ``?project_id=<own>`` gives links under ``/v2.1/<project>/``."""
    return bool(project) and (project in environ.get("QUERY_STRING", "") or project in path
                              or (root is not None and project in root))


def _self_prefix(root: str, url_project: str | None) -> str:
    return f"{root}/v2.1/{url_project}" if url_project else f"{root}/v2.1"


def _server_timing(result: ReadResult | None) -> tuple[str, str]:
    if result is None:
        return ("Server-Timing", 'db;desc="0 stmt";dur=0')
    return ("Server-Timing",
            f'db;desc="{result.statements} stmt";dur={result.elapsed_ms:.3f}')


def _bottle_app(api: ComputeApi) -> bottle.Bottle:
    """Version discovery, and Nova-style faults for every path the dispatcher does not
    own (unknown paths, writes to the version documents)."""
    app = bottle.Bottle(catchall=False, autojson=False)

    @app.route("/", method=["GET", "HEAD"])
    def versions():
        return api.versions(bottle.request.environ)

    @app.route("/v2.1", method=["GET", "HEAD"])
    @app.route("/v2.1/", method=["GET", "HEAD"])
    def version():
        return api.version(bottle.request.environ)

    def fault(error: bottle.HTTPError):
        status = error.status_code
        if status == 405:
            bottle.response.set_header("Allow", "GET, HEAD")
            method = bottle.request.method
            return fault_body(405, f"The method {method} is not allowed for this resource.")
        if status == 404:
            return fault_body(404, "The resource could not be found.")
        return fault_body(status, str(error.body or "The request could not be answered."))

    for code in (400, 404, 405, 500):
        app.error(code)(fault)
    return app


def make_app(config: ApiConfig) -> ComputeApi:
    """The WSGI callable of the Compute API read side."""
    return ComputeApi(config)

