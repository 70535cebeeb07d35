"""Per-part limits of multipart bodies: a field without a filename is held in memory by the form parser,
so it may be no larger than a JSON body (``max_body_kb``); only file parts (spooled to disk) may use
the upload route's whole limit.

An ASGI middleware that watches the request stream of ``multipart/form-data`` requests with its own
push parser (the ``multipart`` package Litestar uses) and stops the request with a 413 problem as soon
as a non-file part passes the limit, before the parser has buffered it; a part header past the
parser's limit (a very long filename) or too many parts is a 413 too, malformed bodies Litestar's 400.
"""

from __future__ import annotations

from typing import Any

from multipart import MultipartError, MultipartSegment, ParserLimitReached, PushMultipartParser

from neurflow.service.errors import TooLarge


#: parts of one multipart body (Litestar's own parser stops at the same count)
MAX_PARTS = 1000


class _Watcher:
    def __init__(self, boundary: bytes, limit: int) -> None:
        self.parser = PushMultipartParser(boundary, max_segment_count=MAX_PARTS)
        self.limit = limit
        self.in_field: str | None = None
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        try:
            for part in self.parser.parse(chunk):
                if isinstance(part, MultipartSegment):
                    self.in_field = None if part.filename else part.name
                    self.size = 0
                elif part and self.in_field is not None:
                    self.size += len(part)
                    if self.size > self.limit:
                        raise TooLarge(f"form field {self.in_field[:100]!r} is over {self.limit // 1024} KB; only file "
                                       "parts (with a filename) may be larger")
                elif not part:
                    self.in_field = None
        except ParserLimitReached as exc:  # a part header (its filename) over 4 KB, or too many parts
            raise TooLarge(f"the multipart body is over the parser's limits ({exc}); a part's headers, filename "
                           f"included, may hold 4 KB, and a body at most {MAX_PARTS} parts") from None
        except MultipartError:
            self.limit = -1  # malformed: Litestar's own parser reports it (400)


def _boundary(scope: dict[str, Any]) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-type" and value.lower().startswith(b"multipart/form-data"):
            for param in value.split(b";")[1:]:
                key, _, val = param.strip().partition(b"=")
                if key.lower() == b"boundary" and val:
                    return val.strip(b'"')
    return None


def multipart_field_limit(max_field_bytes: int):
    """The middleware factory (for ``Litestar(middleware=[...])``)."""

    def middleware(app: Any) -> Any:
        async def limited(scope: dict[str, Any], receive: Any, send: Any) -> None:
            boundary = _boundary(scope) if scope["type"] == "http" else None
            if boundary is None:
                await app(scope, receive, send)
                return
            watcher = _Watcher(boundary, max_field_bytes)

            async def watched() -> dict[str, Any]:
                message = await receive()
                if message["type"] == "http.request" and watcher.limit >= 0:
                    watcher.feed(message.get("body", b""))
                return message

            await app(scope, watched, send)

        return limited

    return middleware
