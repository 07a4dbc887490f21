"""Who is asking: Nova's noauth2 semantics or a file of hashed tokens (Keystone tokens:
``keystone.py``).

noauth: ``X-Auth-Token: user:project`` (project defaults to the user), admin when the
user is ``admin``; without a token, the identity of ``noauth_default_token``. keystoneauth's
"none" plugin (``openstack --os-auth-type none``, openstacksdk ``auth_type="none"``) sends
the literal token ``notused``: it counts as no token.

tokens: a file of JSON lines ``{"sha256": hex, "project_id", "user_id", "roles": [...]}``
(admin when "admin" is a role); the token itself is never stored. ``reload()`` re-reads
it (the worker calls it on SIGHUP); a file that fails to load keeps the previous set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from appliance.api.faults import ApiError

LOG = logging.getLogger(__name__)
MAX_TOKEN_CHARS = 4096
KEYSTONEAUTH_NO_TOKEN = "notused"   # what keystoneauth1.noauth.NoAuth sends


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    project_id: str
    admin: bool
    # May read the project's servers (Nova's project_reader_or_admin): always with
    # noauth and the tokens file; with Keystone, a reader, member or admin role.
    reader: bool = True


def _unauthorized() -> ApiError:
    return ApiError(401, "The request you have made requires authentication.",
                    (("WWW-Authenticate", "Keystone uri=''"),))


def noauth_identity(token: str) -> Identity:
    user, _, project = token.partition(":")
    project = project or user
    return Identity(user, project, user == "admin")


class NoAuth:
    def __init__(self, default_token: str):
        self.default = noauth_identity(default_token)
        self._cache: dict[str, Identity] = {}

    def identify(self, environ: dict) -> Identity:
        token = environ.get("HTTP_X_AUTH_TOKEN")
        if not token or token == KEYSTONEAUTH_NO_TOKEN:
            return self.default
        found = self._cache.get(token)
        if found is None:
            if len(token) > MAX_TOKEN_CHARS:
                raise _unauthorized()
            found = noauth_identity(token)
            if len(self._cache) < 10_000:
                self._cache[token] = found
        return found

    def reload(self) -> None:
        self._cache.clear()


def load_tokens(path: str) -> dict[str, Identity]:
    tokens = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                row = json.loads(line)
                digest = str(row["sha256"]).lower()
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ValueError("sha256 is not 64 hex digits")
                roles = [str(r).lower() for r in row.get("roles", [])]
                tokens[digest] = Identity(str(row["user_id"]), str(row["project_id"]),
                                          "admin" in roles)
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: bad token line ({exc})") from None
    return tokens


class TokenFile:
    def __init__(self, path: str):
        self.path = path
        self.tokens = load_tokens(path)

    def identify(self, environ: dict) -> Identity:
        token = environ.get("HTTP_X_AUTH_TOKEN")
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise _unauthorized()
        found = self.tokens.get(hashlib.sha256(token.encode()).hexdigest())
        if found is None:
            raise _unauthorized()
        return found

    def reload(self) -> None:
        try:
            self.tokens = load_tokens(self.path)
        except (OSError, ValueError) as exc:
            LOG.error("reload tokens (%s): %s; keeping the %d tokens loaded before",
                      self.path, exc, len(self.tokens))
