"""The API's configuration (filled by the worker from the appliance settings)."""

from __future__ import annotations

from dataclasses import dataclass

AUTH_MODES = ("noauth", "tokens")


@dataclass(frozen=True)
class ApiConfig:
    replica_path: str
    auth: str = "noauth"                      # "noauth" | "tokens"
    tokens_file: str | None = None            # JSON lines of hashed tokens (auth=tokens)
    noauth_default_token: str = "admin:demo"  # identity of a request without a token
    public_url: str | None = None             # link prefix; else from Host / X-Forwarded-*
    max_limit: int = 1000                     # Nova's [api] max_limit
    # Feeds a server (a flavor) read includes: until each has been live once, such reads
    # answer 503 "loading" instead of a list that looks empty. Empty: no waiting.
    server_feeds: tuple[str, ...] = ()
    flavor_feeds: tuple[str, ...] = ()

    def __post_init__(self):
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, not {self.auth!r}")
        if self.auth == "tokens" and not self.tokens_file:
            raise ValueError("auth 'tokens' needs tokens_file")
        if self.max_limit < 1:
            raise ValueError("max_limit must be at least 1")
