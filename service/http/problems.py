"""How every error becomes problem+json (RFC 9457) through Litestar's ``ProblemDetailsPlugin``.

The domain errors (:mod:`neurflow.service.errors`) map to a ``ProblemDetailsException`` each.
Litestar's own HTTP errors (validation, 401, 404, 405, 413, 429) go the same way, with the detail
made actionable (which field was wrong, how to send multipart, that the body is over this route's
limit). What the plugin does not cover (a full disk: 507, a read-only store or database: 503, JSON
nested too deeply, anything unexpected) has its own handler that names no internals.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException, ProblemDetailsPlugin

from neurflow.service.errors import ApiError, StorageFull, TooMany, Unavailable, redact

log = logging.getLogger("neurflow.service")

PROBLEM_TYPE = "https://neurflow.dev/problems/"

_HTTP_SLUGS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
               405: "method-not-allowed", 413: "too-large", 415: "unsupported-media-type",
               429: "rate-limited", 503: "unavailable"}
_HTTP_TITLES = {401: "Unauthorized", 429: "Too many requests"}


def _from_api_error(exc: ApiError) -> ProblemDetailsException:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooMany) else None
    return ProblemDetailsException(status_code=exc.status, type_=PROBLEM_TYPE + exc.slug, title=exc.title,
                                   detail=redact(exc.detail), extra=exc.extra or None, headers=headers)


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
    if status == 400 and detail == "Request Entity Too Large":  # Litestar's multipart parser limit, said as a 400
        status = 413
        detail = "the multipart body is over the parser's limits (too many parts, or a part header over 4 KB)"
    if "multipart" in detail.lower():
        detail = f"{detail}; send multipart/form-data (curl -F name=value -F file=@path)"
    if status == 413:
        detail = f"{detail}; the request body is larger than this route accepts"
    detail = redact(detail)
    title = _HTTP_TITLES.get(status, detail if len(detail) < 60 else "Error")
    return ProblemDetailsException(status_code=status, type_=PROBLEM_TYPE + _HTTP_SLUGS.get(status, "error"),
                                   title=title, detail=detail, extra=extra or None, headers=dict(exc.headers or {}))


def naming_accepted(accepted: Callable[[str], str | None]) -> Callable[[Request, ValidationException], Response]:
    """A route's handler of its body's validation errors that says, for each refused field, what the field
    accepts (``accepted``: the body type's own account, e.g. :func:`neurflow.service.jobs.limits.accepted`);
    msgspec's own message names only what was wrong ("Invalid enum value 'Auto'")."""
    def handler(request: Request, exc: ValidationException) -> Response:
        extra = []
        for e in exc.extra if isinstance(exc.extra, list) else []:
            said = accepted(e["key"]) if isinstance(e, dict) and isinstance(e.get("key"), str) else None
            extra.append({**e, "message": f"{e.get('message')}; {e['key']} accepts {said}"} if said else e)
        named = ValidationException(detail=exc.detail, extra=extra or exc.extra)
        return _from_http_exception(named).to_response(request)

    return handler


#: SQLite's primary result codes of a full disk and of a file it may not write
_SQLITE_FULL, _SQLITE_READONLY, _SQLITE_BUSY = 13, 8, 5


def storage_fault(exc: BaseException) -> ApiError | None:
    """The problem a storage error is (the server's state, not a bug), or None for anything else.

    A full disk (artifact store, scratch or database: ``ENOSPC``, ``EDQUOT``, SQLite's "database or disk
    is full") is 507; a store or database that refuses writes (``EROFS``, a permission error, SQLite's
    read-only or locked database) is 503. Neither message names a path."""
    code = getattr(exc, "errno", None)  # sqlite3 errors have none: they carry sqlite_errorcode
    sqlite_code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc).lower()
    if code in (errno.ENOSPC, errno.EDQUOT) or sqlite_code == _SQLITE_FULL or "disk is full" in text:
        return StorageFull("the server's storage is full; nothing was stored, try again later")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or isinstance(exc, PermissionError) \
            or sqlite_code == _SQLITE_READONLY or "readonly database" in text:
        return Unavailable("the server's storage refuses writes at the moment (read-only); nothing was stored, "
                           "try again later")
    if sqlite_code == _SQLITE_BUSY or isinstance(exc, sqlite3.DatabaseError):
        return Unavailable("the server's database is not available at the moment; try again later")
    return None


def _on_storage_error(request: Request, exc: Exception) -> Response:
    problem = storage_fault(exc)
    if problem is None:
        return _on_unexpected(request, exc)
    log.error("storage fault on %s %s: %s", request.method, request.url.path, exc)
    return _from_api_error(problem).to_response(request)


def _on_recursion(request: Request, exc: RecursionError) -> Response:
    """JSON nested deeper than the decoder follows (msgspec stops before the stack does): the client's error."""
    return ProblemDetailsException(status_code=400, type_=PROBLEM_TYPE + "bad-request", title="Bad request",
                                   detail="the JSON body is nested too deeply; send a flatter document"
                                   ).to_response(request)


def _on_undecodable(request: Request, exc: UnicodeDecodeError) -> Response:
    """A form field (a part without a filename) Litestar's parser decodes as UTF-8 and cannot: the client's error."""
    return ProblemDetailsException(status_code=400, type_=PROBLEM_TYPE + "bad-request", title="Bad request",
                                   detail="a form field is not UTF-8 text; send text fields as UTF-8 and files as "
                                          "parts with a filename").to_response(request)


def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return ProblemDetailsException(status_code=500, type_=PROBLEM_TYPE + "internal", title="Internal server error",
                                   detail=f"unexpected {type(exc).__name__}; see the server log").to_response(request)


def problem_details() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(ProblemDetailsConfig(
        exception_to_problem_detail_map={ApiError: _from_api_error, HTTPException: _from_http_exception}))


#: what the plugin does not cover: anything unexpected is a 500 problem that names no internals
exception_handlers = {OSError: _on_storage_error, sqlite3.DatabaseError: _on_storage_error,
                      RecursionError: _on_recursion, UnicodeDecodeError: _on_undecodable, Exception: _on_unexpected}
