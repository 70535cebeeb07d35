"""Making the generated OpenAPI document say what the service does.

Litestar generates the document from the handlers' types; two things it cannot know are added here,
once, when the app is built:

* bounds inside unions (``ig_steps: int <= 4096 | null``): Litestar drops a ``Meta`` nested in an
  optional type, so they are copied from msgspec's own JSON Schema of the request types;
* the problem responses (RFC 9457 ``application/problem+json``) every operation can answer: 400 for
  a body or parameter that does not validate, 401 without a valid key, 404 for another key's or an
  unknown id, 413 over the route's body limit, 429 over the rate limit, and what each route raises.

Schemathesis checks the result against the running service (``tests/service/test_schemathesis.py``).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi.spec import OpenAPIResponse, Schema
from litestar.openapi.spec.media_type import OpenAPIMediaType

_BOUNDS = {"minimum": "minimum", "maximum": "maximum", "exclusiveMinimum": "exclusive_minimum",
           "exclusiveMaximum": "exclusive_maximum", "minItems": "min_items", "maxItems": "max_items",
           "minLength": "min_length", "maxLength": "max_length"}


def _type_of(node: dict[str, Any]) -> str | None:
    return node.get("type")


def _copy_bounds(source: dict[str, Any], target: Schema) -> None:
    for key, attr in _BOUNDS.items():
        if key in source and getattr(target, attr, None) is None:
            setattr(target, attr, source[key])
    alternatives = source.get("anyOf") or source.get("oneOf")
    if alternatives and target.one_of:
        for alt in alternatives:
            match = next((t for t in target.one_of if isinstance(t, Schema) and t.type is not None
                          and t.type.value == _type_of(alt)), None)
            if match is not None:
                _copy_bounds(alt, match)
    if isinstance(source.get("items"), dict) and isinstance(target.items, Schema):
        _copy_bounds(source["items"], target.items)
    if isinstance(source.get("additionalProperties"), dict) and isinstance(target.additional_properties, Schema):
        _copy_bounds(source["additionalProperties"], target.additional_properties)


def document_bounds(app: Litestar, kinds: list[type[msgspec.Struct]]) -> None:
    """Copy the bounds of ``kinds``' fields (msgspec's schema) into the app's component schemas."""
    components = app.openapi_schema.components.schemas or {}
    for kind in kinds:
        component = components.get(kind.__name__)
        if component is None or not component.properties:
            continue
        props = msgspec.json.schema(kind)["$defs"][kind.__name__]["properties"]
        for name, source in props.items():
            target = component.properties.get(name)
            if isinstance(target, Schema):
                _copy_bounds(source, target)


_PROBLEM = Schema(type=None, properties=None, description="RFC 9457 problem details", additional_properties=True)
_STATUS_TEXT = {400: "The body or a parameter does not validate", 401: "No valid API key",
                404: "Unknown id (or another key's)", 405: "Method not allowed", 409: "Conflict with the object's state",
                413: "The body is larger than this route accepts", 415: "Unsupported media type",
                422: "Well-formed but wrong content", 429: "Rate limit exceeded", 503: "Not ready"}


def document_problems(app: Litestar, statuses: dict[str, list[int]] | None = None, every: tuple[int, ...] = ()) -> None:
    """Declare the problem+json responses of every operation (``every``) and of some paths' operations."""
    paths = app.openapi_schema.paths or {}
    for path, item in paths.items():
        for method in ("get", "post", "put", "patch", "delete"):
            op = getattr(item, method, None)
            if op is None:
                continue
            extra = list(every)
            for prefix, codes in (statuses or {}).items():
                if path.startswith(prefix):
                    extra += codes
            responses = op.responses if op.responses is not None else {}
            for code in sorted(set(extra)):
                if str(code) not in responses:
                    responses[str(code)] = OpenAPIResponse(
                        description=_STATUS_TEXT.get(code, "Error"),
                        content={"application/problem+json": OpenAPIMediaType(schema=_PROBLEM)})
            op.responses = responses
