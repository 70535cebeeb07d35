"""Making the generated OpenAPI document say what the service does.

Litestar generates the document from the handlers' types; two things it cannot know are added here,
once, when the app is built:

* bounds inside unions (``ig_steps: int <= 4096 | null``): Litestar drops a ``Meta`` nested in an
  optional type, so they are copied from msgspec's own JSON Schema of the request types;
* the problem responses (RFC 9457 ``application/problem+json``) every operation can answer: 400 for
  a body or parameter that does not validate, 401 without a valid key, 404 for another key's or an
  unknown id, 413 over the route's body limit, 429 over the rate limit, and what each route raises.

Schemathesis checks the result against the running service (``tests/service/http/test_schemathesis.py``).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Reference, Schema

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


_PROBLEM_REF = "#/components/schemas/Problem"
_PROBLEM = Schema(
    type=OpenAPIType.OBJECT, description="RFC 9457 problem details: what was wrong and what is accepted",
    properties={"type": Schema(type=OpenAPIType.STRING), "title": Schema(type=OpenAPIType.STRING),
                "status": Schema(type=OpenAPIType.INTEGER), "detail": Schema(type=OpenAPIType.STRING),
                "errors": Schema(type=OpenAPIType.ARRAY, items=Schema())},
    required=["status", "title", "detail"])
_STATUS_TEXT = {400: "The body or a parameter does not validate (or the JSON nests too deeply)",
                401: "No valid API key", 404: "Unknown id (or another key's)", 409: "Conflict with the object's state",
                413: "The body (or a form field) is larger than this route accepts", 415: "Unsupported media type",
                422: "Well-formed but wrong content", 429: "Rate limit exceeded",
                503: "Not ready (database, artifact store or workers)", 507: "The server's storage is full"}
_ANY_JSON = Schema(description="any JSON value")

_KEYWORDS = {"title": "title", "description": "description", "enum": "enum", "const": "const", "format": "format",
             "default": "default", "required": "required", **_BOUNDS}


def schema_of(kind: type[msgspec.Struct]) -> Schema:
    """The OpenAPI schema of a msgspec type, from msgspec's own JSON Schema (its ``$ref``s inlined): the
    document a route answers as raw bytes is then described by the one definition that encodes it."""
    top = msgspec.json.schema(kind)
    defs = top.get("$defs", {})

    def convert(node: dict[str, Any], seen: tuple[str, ...]) -> Schema:
        ref = node.get("$ref")
        if ref is not None:
            name = ref.rsplit("/", 1)[-1]
            if name in seen:  # a recursive type: any object at the second visit
                return Schema(type=OpenAPIType.OBJECT)
            return convert(defs[name], (*seen, name))
        out = Schema()
        for key, attr in _KEYWORDS.items():
            if key in node:
                setattr(out, attr, node[key])
        kind = node.get("type")
        if isinstance(kind, str):
            out.type = OpenAPIType(kind)
        elif isinstance(kind, list):
            out.type = [OpenAPIType(k) for k in kind]
        if "properties" in node:
            out.properties = {k: convert(v, seen) for k, v in node["properties"].items()}
        if isinstance(node.get("items"), dict):
            out.items = convert(node["items"], seen)
        if isinstance(node.get("additionalProperties"), dict):
            out.additional_properties = convert(node["additionalProperties"], seen)
        elif node.get("additionalProperties") is False:
            out.additional_properties = False
        for key, attr in (("anyOf", "any_of"), ("oneOf", "one_of"), ("allOf", "all_of")):
            if key in node:
                setattr(out, attr, [convert(v, seen) for v in node[key]])
        return out

    return convert(top, ())


def _document_audit_settings(components: dict[str, Any]) -> None:
    """AuditRequest.settings is typed ``Any`` for Litestar (controllers/audits.py says why): describe it
    as what the handler accepts, an AuditSettings object or null."""
    from neurflow.core.audit import AuditSettings

    request = components.get("AuditRequest")
    if isinstance(request, Schema) and request.properties and "settings" in request.properties:
        components["AuditSettings"] = schema_of(AuditSettings)
        request.properties["settings"] = Schema(one_of=[Reference(ref="#/components/schemas/AuditSettings"),
                                                        Schema(type=OpenAPIType.NULL)])


def _audit_documents() -> dict[tuple[str, str], dict[str, Schema]]:
    from neurflow.core.audit import Audit, Reviews
    from neurflow.core.diff import CircuitDiff

    audit, reviews = {"application/json": schema_of(Audit)}, {"application/json": schema_of(Reviews)}
    return {("post", "/v1/audits"): audit, ("post", "/v1/audits/reviews"): reviews,
            ("get", "/v1/audits/reviews"): reviews, ("post", "/v1/diffs"): {"application/json": schema_of(CircuitDiff)}}


#: the 200 answers Litestar cannot infer from ``Response[bytes]``
_DOCUMENTS = {
    ("get", "/v1/circuits/{circuit_id}"): {"application/json": Schema(
        type=OpenAPIType.OBJECT, description="the neurflow.circuit document (schemas/circuit.schema.json)")},
    ("get", "/v1/circuits/{circuit_id}/arrays"): {"application/octet-stream": Schema(
        type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY,
        description="the safetensors file the document names in arrays.file (sha256: arrays.sha256)")},
    ("get", "/v1/circuits/{circuit_id}/exports/{fmt}"): {
        "application/json": _ANY_JSON, "application/graphml+xml": Schema(type=OpenAPIType.STRING),
        "application/xml": Schema(type=OpenAPIType.STRING),
        "application/zip": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)},
}


def _statuses(path: str, method: str, secured: bool, multipart: bool) -> set[int]:
    codes = {400}
    if secured:
        codes |= {401, 429}
    if "{" in path:
        codes.add(404)
    if method == "post":
        codes |= {413, 415, 422}
    if multipart:
        codes |= {507}
    if method == "delete":
        codes.add(409)
    if path.startswith("/v1/circuits/{circuit_id}/") and method == "post":
        codes |= {409, 503}
    if path in ("/v1/circuits/{circuit_id}", "/v1/circuits/{circuit_id}/arrays") and method == "get":
        codes.add(409)  # a stored arrays file that is missing or does not match its document
    if path.startswith(("/v1/circuits/{circuit_id}/exports", "/v1/atlas")):
        codes |= {404, 422}
    if path == "/v1/audits" and method == "post":
        codes |= {404, 422}  # an unknown job or circuit id; circuits of different models
    if path == "/v1/diffs" and method == "post":
        codes |= {404, 409, 422}  # as the audit; with reliance, a deleted model or dataset, a failed diff job
    if path == "/health":
        codes.add(503)
    return codes


def document_problems(app: Litestar) -> None:
    """Declare, on every operation, the problem+json answers it can give, and the real 200 content of
    the routes that answer raw bytes."""
    schema = app.openapi_schema
    if schema.components.schemas is None:
        schema.components.schemas = {}
    schema.components.schemas["Problem"] = _PROBLEM
    problem = {"application/problem+json": OpenAPIMediaType(schema=Reference(ref=_PROBLEM_REF))}
    documents = _DOCUMENTS | _audit_documents()
    _document_audit_settings(schema.components.schemas)
    for path, item in (schema.paths or {}).items():
        for method in ("get", "post", "put", "patch", "delete"):
            op = getattr(item, method, None)
            if op is None:
                continue
            body = op.request_body
            multipart = body is not None and not isinstance(body, Reference) and "multipart/form-data" in (body.content or {})
            secured = bool(op.security) or path.startswith(("/v1", "/ml/"))
            responses = op.responses if op.responses is not None else {}
            for code in sorted(_statuses(path, method, secured, multipart)):
                responses[str(code)] = OpenAPIResponse(description=_STATUS_TEXT.get(code, "Error"), content=problem)
            content = documents.get((method, path))
            if content is not None:
                ok = responses.get("200")
                description = ok.description if isinstance(ok, OpenAPIResponse) else "OK"
                responses["200"] = OpenAPIResponse(
                    description=description, content={k: OpenAPIMediaType(schema=v) for k, v in content.items()},
                    headers=ok.headers if isinstance(ok, OpenAPIResponse) else None)
            op.responses = responses


def forbid_unknown_fields(app: Litestar) -> None:
    """Request objects refuse fields they do not define (msgspec ``forbid_unknown_fields``): say so."""
    for component in (app.openapi_schema.components.schemas or {}).values():
        if isinstance(component, Schema) and component.properties and component.additional_properties is None:
            component.additional_properties = False
