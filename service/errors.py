"""Domain errors and problem+json (RFC 9457) rendering for every error the API answers."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

log = logging.getLogger("neurflow.service")

PROBLEM_TYPE = "https://neurflow.dev/problems/"


class ApiError(Exception):
    """An error the client can act on; rendered as problem+json with ``status``."""

    status = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(ApiError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(ApiError):
    status, title, slug = 409, "Conflict", "conflict"


class Invalid(ApiError):
    """Well-formed request whose content is wrong (bad weights, bad zip, bad spec)."""

    status, title, slug = 422, "Unprocessable content", "invalid-input"


class TooLarge(ApiError):
    status, title, slug = 413, "Content too large", "too-large"


class Unsupported(ApiError):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class Unavailable(ApiError):
    status, title, slug = 503, "Service unavailable", "unavailable"


def problem(status: int, title: str, detail: str, slug: str, extra: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"type": PROBLEM_TYPE + slug, "title": title, "status": status, "detail": detail}
    if extra:
        body.update(extra)
    return Response(content=body, status_code=status, media_type="application/problem+json", headers=headers)


_HTTP_SLUGS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
               405: "method-not-allowed", 413: "too-large", 415: "unsupported-media-type",
               429: "rate-limited", 503: "unavailable"}


def _on_api_error(_: Request, exc: ApiError) -> Response:
    return problem(exc.status, exc.title, exc.detail, exc.slug, exc.extra or None)


def _on_http_exception(_: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    detail = str(exc.detail)
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationException) and exc.extra:
        extra["errors"] = exc.extra
        messages = [e.get("message") for e in exc.extra if isinstance(e, dict) and e.get("message")]
        if messages:
            detail = f"{detail}: " + "; ".join(
                f"{e.get('key')}: {e.get('message')}" if e.get("key") else str(e.get("message"))
                for e in exc.extra if isinstance(e, dict))
    if "multipart" in detail.lower():
        detail = f"{detail}; send multipart/form-data (curl -F name=value -F file=@path)"
    if status == 413:
        detail = f"{detail}; the request body is larger than this route accepts"
    headers = dict(exc.headers or {})
    title = {401: "Unauthorized", 429: "Too many requests"}.get(status, detail if len(detail) < 60 else "Error")
    return problem(status, title, detail, _HTTP_SLUGS.get(status, "error"), extra, headers or None)


def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "Internal server error", f"unexpected {type(exc).__name__}; see the server log", "internal")


exception_handlers = {
    ApiError: _on_api_error,
    HTTPException: _on_http_exception,
    Exception: _on_unexpected,
}
