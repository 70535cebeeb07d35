"""API keys and rate limits.

* Keys travel in the ``X-API-Key`` header (or ``Authorization: Bearer``, or as the password of HTTP
  basic auth, which is what Label Studio's ML-backend connection sends). Only their sha256 is
  stored; every object is filed under the key's owner id and a key sees only its own objects.
* With ``auth = false`` (trusted loopback use) every request acts as the owner ``anonymous``.
* Rate limits are per key (per client address when auth is off), ``rate_limit_per_minute``; requests with
  a missing, unknown or revoked key are limited per client address (``auth_failures_per_minute``), so
  guessing keys, or rotating made-up keys past the per-key limit, is slowed down.
* A key is looked up on every request (one indexed read): a revoked key fails on its next request.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import deque
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address

from neurflow.service.storage.catalog import ANONYMOUS, Catalog, hash_key

PUBLIC = ["^/health", "^/schema"]
_WINDOW_S = 60.0


def key_from(conn: ASGIConnection) -> str | None:
    key = conn.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = conn.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if auth.lower().startswith("basic "):  # user:key, the user name is ignored
        try:
            _, _, password = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password.strip() or None
    return None


class FailedAuthLimit:
    """Failed authentications per client address in a sliding minute."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}

    def _window(self, address: str, now: float) -> deque[float]:
        seen = self._seen.setdefault(address, deque())
        while seen and seen[0] <= now - _WINDOW_S:
            seen.popleft()
        return seen

    def check(self, address: str) -> None:
        now = time.monotonic()
        seen = self._window(address, now)
        if len(seen) >= self.per_minute:
            retry = int(seen[0] + _WINDOW_S - now) + 1
            raise TooManyRequestsException(
                f"too many requests with a missing, unknown or revoked API key from this address; at most "
                f"{self.per_minute} a minute (auth_failures_per_minute)", headers={"Retry-After": str(retry)})

    def record(self, address: str) -> None:
        if len(self._seen) > 10_000:  # bounded memory under a spray of addresses
            self._seen.clear()
        self._window(address, time.monotonic()).append(time.monotonic())


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    def __init__(self, app: Any, catalog: Catalog, required: bool, failures_per_minute: int, **kwargs: Any) -> None:
        super().__init__(app, exclude=PUBLIC, **kwargs)
        self.catalog = catalog
        self.required = required
        self.failures = FailedAuthLimit(failures_per_minute)

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        if not self.required:
            return AuthenticationResult(user=ANONYMOUS, auth=None)
        address = get_remote_address(connection)
        self.failures.check(address)
        key = key_from(connection)
        owner = self.catalog.owner_for_key(key) if key else None
        if owner is None:
            self.failures.record(address)
            raise NotAuthorizedException("missing API key: send it in the X-API-Key header" if not key
                                         else "unknown or revoked API key")
        return AuthenticationResult(user=owner, auth=key)


def auth_middleware(catalog: Catalog, required: bool, failures_per_minute: int) -> DefineMiddleware:
    return DefineMiddleware(ApiKeyMiddleware, catalog=catalog, required=required,
                            failures_per_minute=failures_per_minute)


def _identifier(request: Any) -> str:
    key = key_from(request)
    return "key:" + hash_key(key)[:24] if key else "ip:" + get_remote_address(request)


def rate_limit(per_minute: int) -> RateLimitConfig:
    return RateLimitConfig(rate_limit=("minute", per_minute), exclude=PUBLIC, identifier_for_request=_identifier)
