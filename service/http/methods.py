"""``OPTIONS`` answers with the methods the OpenAPI document lists for the path.

Litestar builds its automatic ``OPTIONS`` answer per route object, and a path served by handlers
that land in different route objects got an ``Allow`` header missing some of its methods (a client
or a schema checker then believes ``GET /v1/circuits/{id}`` does not exist). The document is the
contract, so the ``Allow`` header is computed from it. CORS preflights (with
``Access-Control-Request-Method``) are left to Litestar's CORS handling.
"""

from __future__ import annotations

import re
from typing import Any

_METHODS = ("get", "put", "post", "delete", "patch")


def _table(app: Any) -> list[tuple[re.Pattern[str], str]]:
    table = []
    for path, item in (app.openapi_schema.paths or {}).items():
        methods = [m.upper() for m in _METHODS if getattr(item, m, None) is not None]
        parts = ["[^/]+" if part.startswith("{") and part.endswith("}") else re.escape(part) for part in path.split("/")]
        pattern = re.compile("^" + "/".join(parts) + "/?$")
        table.append((pattern, ", ".join(sorted(set(methods) | {"OPTIONS"}))))
    # literal paths before templated ones: /v1/atlas/report is not /v1/atlas/{x}
    table.sort(key=lambda row: row[0].pattern.count("[^/]+"))
    return table


def allow_from_document(app: Any) -> Any:
    table: list[tuple[re.Pattern[str], str]] | None = None

    async def middleware(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal table
        if scope["type"] != "http" or scope["method"] != "OPTIONS" or any(
                name == b"access-control-request-method" for name, _ in scope.get("headers", ())):
            await app(scope, receive, send)
            return
        if table is None:
            table = _table(scope["app"])
        allow = next((methods for pattern, methods in table if pattern.match(scope["path"])), None)
        if allow is None:
            await app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", allow.encode())]})
        await send({"type": "http.response.body", "body": b""})

    return middleware
