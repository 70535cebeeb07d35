"""Domain errors: plain exceptions the catalog, the job store, upload checks and handlers raise alike.

Each kind carries the HTTP status, title and slug a client sees; :mod:`neurflow.service.http.problems`
renders them (and Litestar's own errors) as problem+json. :func:`redact` keeps the server's own folders
out of every message a client reads, :func:`public_json` out of every stored document it reads.
"""

from __future__ import annotations

from typing import Any

import msgspec

#: (absolute path, what a client sees instead), longest first: the server's own folders never appear in
#: a problem or a job's error (a library's message may quote a path of the data dir or the install)
_PRIVATE: list[tuple[str, str]] = []


def register_private_paths(paths: dict[str, str]) -> None:
    """Folders whose absolute paths are replaced by a label (``{"/srv/neurflow-data": "<data>"}``)."""
    known = dict(_PRIVATE)
    known.update({str(p).rstrip("/"): label for p, label in paths.items() if str(p).rstrip("/")})
    _PRIVATE[:] = sorted(known.items(), key=lambda kv: -len(kv[0]))


def redact(text: str) -> str:
    for path, label in _PRIVATE:
        text = text.replace(path, label)
    return text


#: fields of a stored document that name something of the operator's (the env var of a captioner's key)
_OPERATORS = ("api_key_env",)


def public_json(raw: bytes | str) -> bytes:
    """A stored JSON document (a job, a circuit) as a caller reads it: the server's folders replaced by their
    labels (:func:`redact`) and the operator's env-var names left out (null)."""
    data = msgspec.json.decode(redact(raw if isinstance(raw, str) else raw.decode("utf-8")))
    return msgspec.json.encode(_without_operators(data))


def _without_operators(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: None if k in _OPERATORS else _without_operators(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_operators(v) for v in value]
    return value


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


class TooMany(ApiError):
    """A per-key cap or rate is reached; ``retry_after`` seconds is when trying again makes sense."""

    status, title, slug = 429, "Too many requests", "rate-limited"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))


class Unavailable(ApiError):
    status, title, slug = 503, "Service unavailable", "unavailable"


class StorageFull(ApiError):
    status, title, slug = 507, "Insufficient storage", "storage-full"
