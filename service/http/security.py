"""API keys and rate limits.

* Keys travel in the ``X-API-Key`` header (or ``Authorization: Bearer``, or as the password of HTTP
  basic auth, which is what Label Studio's ML-backend connection sends). Only their sha256 is
  stored; every object is filed under the key's owner id and a key sees only its own objects.
* With ``auth = false`` (trusted loopback use) every request acts as the owner ``anonymous``.
* Rate limits are per key (per client address when auth is off), ``rate_limit_per_minute``.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address

from neurflow.service.storage.catalog import ANONYMOUS, Catalog, hash_key

PUBLIC = ["^/health", "^/schema"]
_CACHE_TTL = 5.0


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


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    def __init__(self, app: Any, catalog: Catalog, required: bool, **kwargs: Any) -> None:
        super().__init__(app, exclude=PUBLIC, **kwargs)
        self.catalog = catalog
        self.required = required
        self._cache: dict[str, tuple[str | None, float]] = {}

    def _lookup(self, key: str) -> str | None:
        h = hash_key(key)
        hit = self._cache.get(h)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        owner = self.catalog.owner_for_key(key)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[h] = (owner, time.monotonic() + _CACHE_TTL)
        return owner

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        if not self.required:
            return AuthenticationResult(user=ANONYMOUS, auth=None)
        key = key_from(connection)
        if not key:
            raise NotAuthorizedException("missing API key: send it in the X-API-Key header")
        owner = self._lookup(key)
        if owner is None:
            raise NotAuthorizedException("unknown or revoked API key")
        return AuthenticationResult(user=owner, auth=key)


def auth_middleware(catalog: Catalog, required: bool) -> DefineMiddleware:
    return DefineMiddleware(ApiKeyMiddleware, catalog=catalog, required=required)


def _identifier(request: Any) -> str:
    key = key_from(request)
    return "key:" + hash_key(key)[:24] if key else "ip:" + get_remote_address(request)


def rate_limit(per_minute: int) -> RateLimitConfig:
    return RateLimitConfig(rate_limit=("minute", per_minute), exclude=PUBLIC, identifier_for_request=_identifier)
