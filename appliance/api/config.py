"""The API's configuration (filled by the worker from the appliance settings)."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.api.keystone import KeystoneConfig

AUTH_MODES = ("noauth", "tokens", "keystone")


@dataclass(frozen=True)
class ApiConfig:
    replica_path: str
    auth: str = "noauth"                      # "noauth" | "tokens" | "keystone"
    tokens_file: str | None = None            # JSON lines of hashed tokens (auth=tokens)
    keystone: KeystoneConfig | None = None    # (auth=keystone)
    token_store_path: str | None = None       # validated tokens shared by the workers
    noauth_default_token: str = "admin:demo"  # identity of a request without a token
    upstream_url: str | None = None           # the cloud's nova-api: what is not replicated
    upstream_timeout: float = 25.0
    upstream_cafile: str | None = None
    feeds: tuple = ()                 # (name, control URL[, key file]): heads after a write
    read_your_writes_wait: float = 5.0        # longest wait for X-Replica-Min-Position
    read_your_writes_window: float = 0.0      # a caller's reads wait for its last write
    recent_writes_path: str | None = None     # ... kept in this file (shared by workers)
    public_url: str | None = None             # link prefix; else from Host / X-Forwarded-*
    max_limit: int = 1000                     # Nova's [api] max_limit
    default_availability_zone: str = "nova"             # Nova's options of the same names
    internal_service_availability_zone: str = "internal"
    # Feeds a server (a flavor) read includes: until each has been live once, such reads
    # answer 503 "loading" instead of a list that looks empty. Empty: no waiting.
    server_feeds: tuple[str, ...] = ()
    flavor_feeds: tuple[str, ...] = ()
    # Feeds declared as Nova's API database (kind "flavors"): with an upstream and none,
    # what only that database holds (key pairs) is the upstream's to answer.
    api_db_feeds: tuple[str, ...] = ()

    def __post_init__(self):
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, not {self.auth!r}")
        if self.auth == "tokens" and not self.tokens_file:
            raise ValueError("auth 'tokens' needs tokens_file")
        if self.auth == "keystone" and self.keystone is None:
            raise ValueError("auth 'keystone' needs the keystone settings")
        if self.max_limit < 1:
            raise ValueError("max_limit must be at least 1")
