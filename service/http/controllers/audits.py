"""``/v1/audits``: the shortcut audit of a job's circuits, and the caller's verdicts on its findings.

``POST /v1/audits`` with ``{"job": ID}`` (or ``{"circuits": [ID, ...]}``), optional ``expected`` and
``related`` (class index -> list) and ``settings`` answers the ``neurflow.audit/3`` document. The web
process loads no models, so the API's audit weighs labels and sharing only; the off-class ablation
runs where the model is (``neurflow audit``, or ``neurflow.atlas.audit`` in Python). The caller's
verdicts (``POST /v1/audits/reviews``) are kept per API-key owner in the artifact store and applied
to every later audit, so a dismissal survives a rerun.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any, Literal

import anyio
import msgspec
from litestar import Controller, Response, get, post

from neurflow.core.audit import AuditSettings
from neurflow.service.errors import Invalid
from neurflow.service.http.controllers.atlas import circuit_rows, read_inputs
from neurflow.service.http.deps import CatalogDep, JobsDep, Owner, StoreDep, provides
from neurflow.service.storage.artifacts import ArtifactStore

_reviews_lock = threading.Lock()


class AuditRequest(msgspec.Struct, forbid_unknown_fields=True):
    job: str | None = None
    circuits: Annotated[list[str], msgspec.Meta(max_length=2000)] | None = None
    expected: dict[str, list[str]] = {}  # class index -> the concepts the class should use
    related: dict[str, list[int]] = {}  # class index -> classes that share its content legitimately
    # the audit's own settings type, so the request is validated (and documented) by its bounds; a
    # loose dict of numbers documented a schema the route did not keep
    # AuditSettings fields, validated in the handler: Litestar takes a validation error keyed exactly
    # "settings" for one of its dependencies (the app's settings) and answers 500, so the field's type
    # accepts any JSON here; the OpenAPI document still describes it as AuditSettings (openapi.py)
    settings: Any = None


class ReviewRequest(msgspec.Struct, forbid_unknown_fields=True):
    key: str
    class_index: int
    layer: str
    neurons: list[int]
    verdict: Literal["open", "confirmed", "dismissed"]
    note: Annotated[str, msgspec.Meta(max_length=2000)] = ""


def _reviews_key(owner: str) -> str:
    import hashlib

    # an owner id is not promised to be a safe path segment; its digest is
    return f"audit-reviews/{hashlib.sha256(owner.encode()).hexdigest()[:24]}.json"


def load_reviews(store: ArtifactStore, owner: str):
    from neurflow.core.audit import Reviews

    key = _reviews_key(owner)
    return Reviews.from_json(store.get_bytes(key)) if store.exists(key) else Reviews()


def class_map(data: dict[str, list], what: str) -> dict[int, list]:
    try:
        return {int(k): v for k, v in data.items()}
    except ValueError:
        raise Invalid(f"{what}: keys must be class indices, got {list(data)}") from None


class AuditController(Controller):
    path = "/audits"
    tags = ["audits"]
    dependencies = provides("catalog", "jobs", "store")

    @post("/", summary="The shortcut audit of a job's circuits (labels and sharing; neurflow.audit/3)",
          media_type="application/json", status_code=200)
    async def audit(self, catalog: CatalogDep, jobs: JobsDep, store: StoreDep, owner: Owner,
                    data: AuditRequest) -> Response[bytes]:
        def work() -> bytes:
            from neurflow.atlas.audit import audit_circuits
            try:
                settings = msgspec.convert(data.settings or {}, AuditSettings)
            except msgspec.ValidationError as exc:
                raise Invalid(f"audit settings: {exc}; accepted: an object of AuditSettings fields") from None
            ids = ",".join(data.circuits) if data.circuits is not None else None
            inputs = read_inputs(store, circuit_rows(catalog, jobs, owner, data.job, ids))
            try:
                audit = audit_circuits(inputs, expected=class_map(data.expected, "expected"),
                                       related=class_map(data.related, "related"), settings=settings,
                                       reviews=load_reviews(store, owner))
            except ValueError as exc:
                raise Invalid(str(exc)) from None
            return msgspec.json.encode(audit)

        return Response(await anyio.to_thread.run_sync(work), media_type="application/json")

    @post("/reviews", summary="Confirm, dismiss or reopen a finding; kept for every later audit",
          media_type="application/json", status_code=200)
    async def review(self, store: StoreDep, owner: Owner, data: ReviewRequest) -> Response[bytes]:
        def work() -> bytes:
            from datetime import datetime, timezone

            from neurflow.core.audit import Finding, FindingEvidence, Review

            stub = Finding(key=data.key, class_index=data.class_index, class_name=None, layer=data.layer, group="",
                           neurons=data.neurons, score=0.0, reasons=[], sentence="",
                           evidence=FindingEvidence(importance=0.0))
            at = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
            with _reviews_lock:  # read-modify-write of the owner's one document
                reviews = load_reviews(store, owner)
                reviews.record(stub, Review(verdict=data.verdict, by=f"api:{owner}", at=at, note=data.note))
                store.put_bytes(_reviews_key(owner), reviews.to_json().encode())
            return msgspec.json.encode(reviews)

        return Response(await anyio.to_thread.run_sync(work), media_type="application/json")

    @get("/reviews", summary="The caller's verdicts on audit findings (neurflow.audit-reviews/1)",
         media_type="application/json")
    async def reviews(self, store: StoreDep, owner: Owner) -> Response[bytes]:
        def work() -> bytes:
            return msgspec.json.encode(load_reviews(store, owner))

        return Response(await anyio.to_thread.run_sync(work), media_type="application/json")
