"""The Compute API v2.1 read side: versions, servers, flavors, microversions, auth,
faults. ``make_app(ApiConfig(...))`` is the WSGI callable a worker serves; the worker
calls its ``reload()`` on SIGHUP (re-reads the tokens file).

Modules: ``app`` (dispatcher for the read routes in front of a bottle app for discovery
and every other path), ``config``, ``microversion``, ``identity`` (noauth / tokens),
``keystone`` and ``token_store`` (Keystone tokens, cached), ``upstream`` (pass-through to
the cloud's nova-api), ``outbound`` (gevent-cooperative HTTP client),
``server_params`` and ``flavor_params`` (query parameters as Nova validates and maps
them), ``params`` (shared checks, Nova's wording), ``faults``, ``versions``.

Choices where Nova leaves room or a replica differs, decided once here:

- With ``upstream_url``, everything that is not a replicated read (writes, actions,
  other resources) is passed to the cloud's nova-api unchanged. Without it:
- Writes (POST, PUT, PATCH, DELETE) on servers and flavors answer ``405 badMethod`` with
  ``Allow: GET, HEAD`` and a message saying this endpoint is a read-only replica, and
  other resources ``404 itemNotFound`` saying they are not replicated here.
  novaclient, openstacksdk and the CLI show the message and stop; none retries a 405
  (a 503 would be retried, a 501 reads as "not implemented yet").
- ``all_tenants`` from a non-admin is refused with 403, as Nova's default policy does
  (``os_compute_api:servers:index:get_all_tenants`` / ``detail:get_all_tenants``).
- ``name`` and the other regex filters: a pattern without regex metacharacters is a
  substring test (``instr()``, in C, no per-row Python); a real regex calls a registered
  ``regexp()`` Python function once per candidate row of the caller's scope (about a
  microsecond each: ~1 ms per 1,000 candidate servers), still inside the one statement.
  One match that backtracks past 50 ms is cut (400: the pattern's fault; Nova on SQLite
  would hang, on MySQL fail), a statement past the read deadline too (503).
- A member's ``marker`` must name one of the member's servers: another project's is
  ``marker [X] not found`` (400), so a page cannot tell where a foreign server sorts.
- Another project's server and its sub-resources are 404 "not found" for a member, as a
  server that does not exist (nova-api 34 answers 403 from its policy, which tells that
  the server exists). A server path's uuid is looked up as Nova's database matches it:
  as stored (lowercase, hyphens), capitals too under ``nova_database_collation =
  "utf8_general_ci"``; other spellings are not found.
  An admin's marker may be any project's, as Nova looks it up elevated.
- Bad input past Nova's checks is still the client's error: a ``limit`` past Python's
  int-digit limit is 400 ``limit must be an integer``, a microversion number of more
  than three digits 406, a regex ``re`` cannot compile for an ``OverflowError`` 400;
  the workers answer a request line over 8 KiB 414 and headers over http.client's
  limits (64 KiB a line, 100 lines) 431, where Nova's pipelines would fail or reset.
- The flavor ``name`` filter (2.102) is a regex searched in the name, as Nova's
  ``REGEXP`` on SQLite: case-sensitive (MySQL's default collation would not be). Nova
  does not check the pattern, and the database's REGEXP fails on a broken one (oslo.db's
  SQLite function raises: an error from nova-api); here such a pattern matches nothing.
- Unknown query parameters: refused (400, jsonschema's message) where Nova's query
  schema is strict at the requested version: server and flavor listings from 2.75;
  server show, flavor show, extra specs, metadata and ips from 2.102. Server tags and the
  version documents never refuse them (Nova 34 attaches lenient schemas there).
- ``ip`` / ``ip6`` match a substring of a fixed address, and a server matching either
  is listed (Nova asks Neutron's ``ip_address_substr`` for the ports of each; a floating
  address is no port's). When no server of the caller's (any, for an admin) matches,
  the list is empty and a marker is not looked up, as Nova returns before it does.
- An empty ``marker`` is no marker; an empty value of a regex filter is refused (400,
  "'' is not a 'regex'"), before the policy is checked, as Nova's query schema does.
- Sort directions Nova's database refuses answer 400, except where Nova sorts no build
  request first (``ip`` or ``ip6`` without a marker, a ``limit`` of 0, deleted
  servers): there its cells' queries fail, each cell is left out, and the list is [].
- Where the caller's project id stands anywhere in the URL (``?project_id=<own>``), the
  links name it, as when the path does (Nova tests ``project_id in request.url``); a
  next link carries only the parameters the query schema names (Nova drops the others).
- Known difference: a list sorted only by keys Nova ignores (``id``, ``memory_mb``, ...)
  comes in Nova's default order with servers created in the same second ordered by uuid;
  Nova orders those by its own instance id, which is not replicated.
- ``GET /v2.1`` answers the version document directly (Nova redirects to ``/v2.1/``).
- keystoneauth's "none" plugin sends the token ``notused``: it counts as no token, so
  ``--os-auth-type none`` gets the ``noauth_default_token`` identity.
- The advertised range is 2.1 - 2.104 (Nova 34).
- A worker's reads within one millisecond share one SQLite read transaction (snapshot):
  a read may answer from data up to 1 ms older than the newest commit, and reports the
  position of that snapshot in ``X-Replica-Position``.
"""

from appliance.api.app import ComputeApi, make_app
from appliance.api.config import ApiConfig

__all__ = ["ApiConfig", "ComputeApi", "make_app"]
