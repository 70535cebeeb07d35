"""How every error becomes problem+json (RFC 9457) through Litestar's ``ProblemDetailsPlugin``.

The domain errors (:mod:`neurflow.service.errors`) map to a ``ProblemDetailsException`` each.
Litestar's own HTTP errors (validation, 401, 404, 405, 413, 429) go the same way, with the detail
made actionable (which field was wrong, how to send multipart, that the body is over this route's
limit). What the plugin does not cover (a full disk, JSON nested too deeply, anything unexpected)
has its own handler that names no internals.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException, ProblemDetailsPlugin

from neurflow.service.errors import ApiError, StorageFull, redact

log = logging.getLogger("neurflow.service")

PROBLEM_TYPE = "https://neurflow.dev/problems/"

_HTTP_SLUGS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
               405: "method-not-allowed", 413: "too-large", 415: "unsupported-media-type",
               429: "rate-limited", 503: "unavailable"}
_HTTP_TITLES = {401: "Unauthorized", 429: "Too many requests"}


def _from_api_error(exc: ApiError) -> ProblemDetailsException:
    return ProblemDetailsException(status_code=exc.status, type_=PROBLEM_TYPE + exc.slug, title=exc.title,
                                   detail=redact(exc.detail), extra=exc.extra or None)


def _from_http_exception(exc: HTTPException) -> ProblemDetailsException:
    status = exc.status_code
    detail = str(exc.detail)
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationException) and exc.extra:
        extra["errors"] = exc.extra
        if any(isinstance(e, dict) and e.get("message") for e in exc.extra):
            detail = f"{detail}: " + "; ".join(
                f"{e.get('key')}: {e.get('message')}" if e.get("key") else str(e.get("message"))
                for e in exc.extra if isinstance(e, dict))
    if "multipart" in detail.lower():
        detail = f"{detail}; send multipart/form-data (curl -F name=value -F file=@path)"
    if status == 413:
        detail = f"{detail}; the request body is larger than this route accepts"
    detail = redact(detail)
    title = _HTTP_TITLES.get(status, detail if len(detail) < 60 else "Error")
    return ProblemDetailsException(status_code=status, type_=PROBLEM_TYPE + _HTTP_SLUGS.get(status, "error"),
                                   title=title, detail=detail, extra=extra or None, headers=dict(exc.headers or {}))


def _on_os_error(request: Request, exc: OSError) -> Response:
    """A full disk (artifact store, scratch or database) is the server's state, not a bug: 507."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "disk is full" in str(exc):
        log.error("storage full on %s %s: %s", request.method, request.url.path, exc)
        return ProblemDetailsException(status_code=507, type_=PROBLEM_TYPE + StorageFull.slug, title=StorageFull.title,
                                       detail="the server's storage is full; nothing was stored, try again later"
                                       ).to_response(request)
    return _on_unexpected(request, exc)


def _on_recursion(request: Request, exc: RecursionError) -> Response:
    """JSON nested deeper than the decoder follows (msgspec stops before the stack does): the client's error."""
    return ProblemDetailsException(status_code=400, type_=PROBLEM_TYPE + "bad-request", title="Bad request",
                                   detail="the JSON body is nested too deeply; send a flatter document"
                                   ).to_response(request)


def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return ProblemDetailsException(status_code=500, type_=PROBLEM_TYPE + "internal", title="Internal server error",
                                   detail=f"unexpected {type(exc).__name__}; see the server log").to_response(request)


def problem_details() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(ProblemDetailsConfig(
        exception_to_problem_detail_map={ApiError: _from_api_error, HTTPException: _from_http_exception}))


#: what the plugin does not cover: anything unexpected is a 500 problem that names no internals
exception_handlers = {OSError: _on_os_error, sqlite3.OperationalError: _on_os_error, RecursionError: _on_recursion,
                      Exception: _on_unexpected}
