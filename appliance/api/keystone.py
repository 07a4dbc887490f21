"""Keystone v3 tokens, validated as keystonemiddleware does and cached per token hash.

A request's ``X-Auth-Token`` is checked with ``GET /v3/auth/tokens?nocatalog``
(``X-Subject-Token``: the caller's token, ``X-Auth-Token``: the appliance's own service
token, got with a password authentication and renewed before it expires or when Keystone
refuses it). The answer becomes an ``Identity`` the way Nova's default policy reads a
token: the project of a project-scoped token, ``admin`` for the admin role (Nova's
``context_is_admin``), ``reader`` for reader, member or admin (Keystone lists the implied
roles too: admin implies member implies reader). A token that is not project-scoped
(unscoped, domain, system) has no project and no reader rights here, as Nova's
``scope_types = ['project']`` rules refuse it.

Cache: per SHA-256 of the token (the token itself is not kept), bounded (least recently
used out), in each worker's memory and in a file the workers share (``token_store.py``):
a token checked by one worker is served by all without another round trip. A valid token
is answered from the cache until its ``expires_at``; once it is older than
``cache_seconds`` (keystonemiddleware's ``token_cache_time``), one background greenlet
asks Keystone again while requests go on being answered, so a revoked token stops
working within ``cache_seconds`` plus a round trip and no request waits for Keystone
after the first. Keystone's 404 (invalid, expired, revoked) is cached
``negative_seconds``. While Keystone cannot be reached, a token validated before is
served until its expiry (counted; asked again every ``negative_seconds``), a new one gets
401. Concurrent first requests with one token share one round trip.

A 401 carries what keystonemiddleware sends: ``WWW-Authenticate: Keystone uri="<auth
url>"`` and ``{"error": {"code": 401, "title": "Unauthorized", "message": ...}}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import gevent.event
import gevent.lock
from prometheus_client import Counter

from appliance.api.faults import ApiError
from appliance.api.identity import MAX_TOKEN_CHARS, Identity
from appliance.api.outbound import Endpoint, OutboundError
from appliance.api.token_store import TokenStore

LOG = logging.getLogger(__name__)
SERVICE_TOKEN_RENEW_S = 120.0   # renew the service token this long before it expires
UNAUTHORIZED_MESSAGE = "The request you have made requires authentication."
READER_ROLES = frozenset({"reader", "member", "admin"})


@dataclass(frozen=True)
class KeystoneConfig:
    url: str                          # e.g. http://keystone:5000 (the /v3 is added)
    user: str
    password: str
    project: str
    user_domain: str = "Default"
    project_domain: str = "Default"
    timeout: float = 5.0              # deadline of one round trip to Keystone
    cache_size: int = 10_000
    cache_seconds: float = 300.0
    negative_seconds: float = 10.0
    cafile: str | None = None


class KeystoneUnavailable(Exception):
    """Keystone did not give an answer that settles the token."""


class TokenError(ApiError):
    """401 as keystonemiddleware words it."""

    def __init__(self, www_authenticate: str):
        super().__init__(401, UNAUTHORIZED_MESSAGE,
                         (("WWW-Authenticate", www_authenticate),))

    def body(self) -> bytes:
        return json.dumps({"error": {"code": 401, "title": "Unauthorized",
                                     "message": UNAUTHORIZED_MESSAGE}}).encode()


_VALIDATIONS = None


def validations_counter() -> Counter:
    """``appliance_keystone_validations_total{outcome}``: valid, invalid (Keystone said
    no), cached_while_unreachable (served from the cache because Keystone could not be
    reached), refused_while_unreachable (a token not in the cache got 401). Created on
    first use, after the worker chose its metrics directory."""
    global _VALIDATIONS
    if _VALIDATIONS is None:
        _VALIDATIONS = Counter("appliance_keystone_validations",
                               "Keystone token validations by outcome.", ("outcome",),
                               registry=None)
    return _VALIDATIONS


def parse_expiry(text: str) -> float:
    """Keystone's ``expires_at`` (``2026-12-05T08:40:00.000000Z``) as a Unix time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def identity_of(token: dict) -> Identity:
    """The request identity of a validated token body (``{"token": {...}}``'s inside)."""
    roles = frozenset(str(r.get("name", "")).lower() for r in token.get("roles") or ())
    project = token.get("project") or {}
    project_id = str(project.get("id") or "")
    admin = "admin" in roles
    return Identity(str((token.get("user") or {}).get("id") or ""), project_id,
                    admin and bool(project_id),
                    reader=bool(project_id) and bool(roles & READER_ROLES))


class _Entry:
    __slots__ = ("identity", "fresh_until", "expires_at")

    def __init__(self, identity: Identity | None, fresh_until: float, expires_at: float):
        self.identity = identity          # None: Keystone said the token is not valid
        self.fresh_until = fresh_until    # serve without asking Keystone until then
        self.expires_at = expires_at      # never serve after (0 for a refused token)


class KeystoneAuth:
    def __init__(self, config: KeystoneConfig, store: TokenStore | None = None,
                 clock=time.time):
        self.config = config
        self.keystone = Endpoint(config.url, config.timeout, config.cafile)
        self.www_authenticate = f'Keystone uri="{config.url.rstrip("/")}"'
        self.store = store
        self._clock = clock
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._pending: dict[bytes, gevent.event.AsyncResult] = {}   # first checks
        self._refreshing: set[bytes] = set()                        # background checks
        self._service_token: str | None = None
        self._service_expires = 0.0
        self._service_lock = gevent.lock.Semaphore()
        self._counter = validations_counter()

    # -- the request path -------------------------------------------------------------

    def identify(self, environ: dict) -> Identity:
        token = environ.get("HTTP_X_AUTH_TOKEN")
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError(self.www_authenticate)
        key = hashlib.sha256(token.encode()).digest()
        entry = self._cache.get(key)
        if entry is not None:
            now = self._clock()
            if entry.identity is None:
                if now < entry.fresh_until:
                    raise TokenError(self.www_authenticate)
            elif now < entry.expires_at:
                # Valid and not expired: answer now; past fresh_until, one greenlet asks
                # Keystone again meanwhile (a revoked token stops working once it has).
                if now >= entry.fresh_until and key not in self._refreshing:
                    self._refreshing.add(key)
                    gevent.spawn(self._refresh, key, token, entry)
                return entry.identity
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = gevent.event.AsyncResult()
            try:
                pending.set(self._check(key, token, entry))
            except BaseException as exc:
                pending.set_exception(exc)
            finally:
                del self._pending[key]
        identity = pending.get()
        if identity is None:
            raise TokenError(self.www_authenticate)
        return identity

    def _refresh(self, key: bytes, token: str, entry: _Entry) -> None:
        try:
            self._check(key, token, entry)
        except Exception as exc:  # a background check must not die silently
            LOG.error("keystone revalidation failed: %r", exc)
        finally:
            self._refreshing.discard(key)

    def _check(self, key: bytes, token: str, entry: _Entry | None) -> Identity | None:
        """Ask again about a token this worker has no fresh answer for: the shared store
        if another worker checked it recently, else Keystone. Returns the identity, or
        None for a token to refuse."""
        config = self.config
        shared = self.store.get(key) if self.store is not None else None
        if shared is not None:
            identity, expires_at, checked_at = shared
            limit = config.cache_seconds if identity is not None else config.negative_seconds
            if self._clock() < checked_at + limit:
                self._remember(key, _Entry(identity, checked_at + limit, expires_at))
                return identity if identity is not None and self._clock() < expires_at \
                    else None
            if identity is not None and (entry is None or entry.identity is None):
                entry = _Entry(identity, 0.0, expires_at)
        try:
            found = self._validate(token)
        except KeystoneUnavailable as exc:
            now = self._clock()
            if entry is not None and entry.identity is not None and now < entry.expires_at:
                # Keep serving it; ask again after negative_seconds, not at every request.
                self._counter.labels("cached_while_unreachable").inc()
                self._remember(key, _Entry(entry.identity, now + config.negative_seconds,
                                           entry.expires_at))
                return entry.identity
            self._counter.labels("refused_while_unreachable").inc()
            LOG.warning("keystone unreachable, token refused: %s", exc)
            return None
        now = self._clock()
        if found is None:
            self._counter.labels("invalid").inc()
            self._remember(key, _Entry(None, now + config.negative_seconds, 0.0))
            if self.store is not None:
                self.store.put(key, None, now + config.negative_seconds, now)
            return None
        identity, expires_at = found
        self._counter.labels("valid").inc()
        self._remember(key, _Entry(identity, now + config.cache_seconds, expires_at))
        if self.store is not None:
            self.store.put(key, identity, expires_at, now)
        return identity if now < expires_at else None

    def _remember(self, key: bytes, entry: _Entry) -> None:
        cache = self._cache
        cache[key] = entry
        cache.move_to_end(key)
        while len(cache) > self.config.cache_size:
            cache.popitem(last=False)

    # -- Keystone -----------------------------------------------------------------------

    def _validate(self, token: str) -> tuple[Identity, float] | None:
        """``(identity, expires_at)``, or None if Keystone says the token is not valid.
        Raises KeystoneUnavailable when Keystone does not settle it."""
        for attempt in (0, 1):
            service = self._service(renew=attempt == 1)
            try:
                status, _, body = self.keystone.request(
                    "GET", "/v3/auth/tokens?nocatalog",
                    {"X-Auth-Token": service, "X-Subject-Token": token,
                     "Accept": "application/json"})
            except OutboundError as exc:
                raise KeystoneUnavailable(str(exc)) from None
            if status == 200:
                try:
                    inside = json.loads(body)["token"]
                    return identity_of(inside), parse_expiry(inside["expires_at"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise KeystoneUnavailable(f"token validation: bad answer "
                                              f"({exc!r})") from None
            if status == 404:
                return None
            if status == 401 and attempt == 0:
                continue       # our service token was refused: renew it once
            if status == 403:
                LOG.error("keystone refuses the service user %r token validation (403): "
                          "give it the 'service' role on its project", self.config.user)
            raise KeystoneUnavailable(f"token validation: Keystone answered {status}")
        raise KeystoneUnavailable("token validation: the service token is refused")

    def service_token(self) -> str:
        """The appliance's own token (``serve --check`` asks for it)."""
        return self._service()

    def _service(self, renew: bool = False) -> str:
        """The appliance's own token (one renewal at a time)."""
        with self._service_lock:
            if renew or self._service_token is None \
                    or self._clock() > self._service_expires - SERVICE_TOKEN_RENEW_S:
                self._service_token, self._service_expires = self._authenticate()
            return self._service_token

    def _authenticate(self) -> tuple[str, float]:
        config = self.config
        body = json.dumps({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": config.user, "domain": {"name": config.user_domain},
                "password": config.password}}},
            "scope": {"project": {"name": config.project,
                                  "domain": {"name": config.project_domain}}}}}).encode()
        try:
            status, headers, answer = self.keystone.request(
                "POST", "/v3/auth/tokens?nocatalog", {"Content-Type": "application/json",
                                                     "Accept": "application/json"}, body)
        except OutboundError as exc:
            raise KeystoneUnavailable(f"service token: {exc}") from None
        if status != 201 or "x-subject-token" not in headers:
            LOG.error("keystone refuses the appliance's service credentials (user %r, "
                      "project %r): %s", config.user, config.project, status)
            raise KeystoneUnavailable(f"service token: Keystone answered {status}")
        try:
            expires = parse_expiry(json.loads(answer)["token"]["expires_at"])
        except (ValueError, KeyError, TypeError):
            expires = self._clock() + 3600
        return headers["x-subject-token"], expires

    def reload(self) -> None:
        self._cache.clear()
