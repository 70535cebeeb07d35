"""Label Studio's ML-backend protocol under ``/ml/labelstudio``: pre-annotations from cached labels.

Connect it in Label Studio (project settings -> Model, or ``ls.ml.create(url=.../ml/labelstudio,
auth_method="BASIC_AUTH", basic_auth_user=<anything>, basic_auth_pass=<API key>)``). The API key
also works in ``X-API-Key``/``Authorization: Bearer``; with ``auth = false`` nothing is needed.

=====================  =============================================================================
``GET /``, ``/health``  ``{"status": "UP", "model_class": "NeurFlow"}``
``POST /setup``        ``{"model_version": "neurflow-<version>"}``
``POST /predict``      ``{"results": [...]}``, one prediction per task, in the tasks' order
``POST /webhook``      annotation events: a group task's ``concept`` choice is a person's label
                       (:func:`corrections_from_event`); ``{"stored": [...], "skipped": [...]}``
=====================  =============================================================================

**Corrections from Label Studio.** Point a project webhook at ``/ml/labelstudio/webhook`` (*Project
settings -> Webhooks*, with the header ``X-API-Key: <key>`` and "send payload"). When an annotator
submits or updates an annotation of a group task, its one ``concept`` choice is stored as the group's
label with provenance (``via: labelstudio``, ``key: labelstudio-user:<id>``): the same path as ``PUT
/v1/circuits/{id}/groups/{group_id}/label``. Events that are not ours (another project's tasks, image
tasks, cancelled or empty annotations, several choices) are skipped with the reason in the answer.

``/predict`` only reads finished circuits of the key's owner (the ``circuit.json`` in the artifact
store, found through the catalog by the task's ``circuit_id``) and answers with the same predictions
as the export (``labeler.exports.labelstudio``): group tasks (``group_id``) get the top label and
caption, image tasks (``image_index``) the exemplar rectangles. It never runs the engine or CLIP, so
it stays far inside Label Studio's 100 s predict timeout. A task it cannot place (no or unknown
circuit, unknown group, unlabeled group, a prediction that does not fit the project's labeling
config) gets an empty result rather than an error, so that one stray task does not fail the batch.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import anyio
from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from neurflow import __version__
from neurflow.core.circuit import Circuit
from neurflow.exports.labelstudio import CONCEPT, group_prediction, image_prediction, interface_for
from neurflow.exports.source import ExportSource
from neurflow.service.errors import ApiError, Invalid, NotFound
from neurflow.service.http.deps import CatalogDep, Owner, StoreDep, provides
from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.catalog import Catalog
from neurflow.service.storage.circuits import load_circuit
from neurflow.service.storage.corrections import correct_stored

PREFIX = "/ml/labelstudio"
MODEL_CLASS = "NeurFlow"
BACKEND_VERSION = f"neurflow-{__version__}"
MAX_TASKS = 10_000
log = logging.getLogger("neurflow.service")


class BadRequest(ApiError):
    status, title, slug = 400, "Bad request", "bad-request"


class CircuitCache:
    """Parsed circuits by artifact key and summary (a relabel makes a new circuit; a correction
    rewrites the document and its summary, so a corrected circuit is read again). The catalog is
    still asked on every request, so deleted circuits are not served."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[Circuit, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, catalog: Catalog, store: ArtifactStore, owner: str, circuit_id: str) -> tuple[Circuit, str] | None:
        try:
            row = catalog.get_circuit(owner, circuit_id)
        except NotFound:
            return None
        key = row["key"] + "#" + json.dumps(row["summary"], sort_keys=True)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        try:
            circuit = load_circuit(store, row["key"], public=True)
        except (KeyError, ValueError) as exc:
            log.warning("label studio backend: circuit %s unreadable: %s", circuit_id, exc)
            return None
        entry = (circuit, ExportSource(circuit=circuit, circuit_id=circuit_id).model_version)
        with self._lock:
            self._items[key] = entry
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return entry


def _index(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def provide_cache(state: State) -> CircuitCache:
    """One cache per app, made on first use."""
    cache = state.get("labelstudio_cache")
    if cache is None:
        cache = state["labelstudio_cache"] = CircuitCache()
    return cache


def predict_task(catalog: Catalog, store: ArtifactStore, owner: str, task: Any,
                 cache: CircuitCache) -> dict[str, Any] | None:
    """The cached prediction for one Label Studio task, or ``None`` when it is not one of ours."""
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("circuit_id"), str):
        return None
    found = cache.get(catalog, store, owner, data["circuit_id"])
    if found is None:
        return None
    circuit, version = found
    if isinstance(data.get("group_id"), str):
        try:
            _, group = circuit.group(data["group_id"])
        except KeyError:
            return None
        return group_prediction(group, version)
    index = _index(data.get("image_index"))
    if index is not None and 0 <= index < len(circuit.images):
        return image_prediction(circuit, index, version)
    return None


def _fits(interface: Any, prediction: dict[str, Any]) -> bool:
    if interface is None:
        return True
    errors = interface.validate_prediction(prediction, return_errors=True)
    if errors:
        log.info("label studio backend: prediction does not fit the project's config: %s", errors)
    return not errors


def _interface(config: Any) -> Any:
    """The project's labeling config, to check predictions against (``None``: do not check)."""
    if not isinstance(config, str) or not config.strip():
        return None
    try:
        return interface_for(config)
    except Exception as exc:  # noqa: BLE001 - an odd config must not fail the batch; predictions go unchecked
        log.warning("label studio backend: cannot read the project's labeling config (%s); predictions unchecked", exc)
        return None


class LabelStudioBackendController(Controller):
    path = PREFIX
    tags = ["label studio ml backend"]
    security = [{"apiKey": []}]
    dependencies = {**provides("catalog", "store"), "cache": Provide(provide_cache, sync_to_thread=False)}

    @get(["/", "/health"], summary="ML backend health (Label Studio protocol)")
    async def health(self) -> dict[str, str]:
        return {"status": "UP", "model_class": MODEL_CLASS}

    @post("/setup", status_code=200, summary="ML backend setup (Label Studio protocol)")
    async def setup(self, data: dict[str, Any]) -> dict[str, str]:
        return {"model_version": BACKEND_VERSION}

    @post("/predict", status_code=200,  # body limit: the app's max_predict_kb (service.http.app)
          summary="Cached NeurFlow labels as Label Studio predictions, one per task")
    async def predict(self, data: dict[str, Any], catalog: CatalogDep, store: StoreDep, cache: NamedDependency[CircuitCache],
                      owner: Owner) -> dict[str, Any]:
        tasks = data.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("predict takes {\"tasks\": [...]} (Label Studio's ML-backend protocol)")
        if len(tasks) > MAX_TASKS:
            raise BadRequest(f"at most {MAX_TASKS} tasks per request, got {len(tasks)}")

        def work() -> list[dict[str, Any]]:
            interface = _interface(data.get("label_config"))
            results = []
            for task in tasks:
                prediction = predict_task(catalog, store, owner, task, cache)
                if prediction is None or not _fits(interface, prediction):
                    prediction = {"model_version": BACKEND_VERSION, "score": None, "result": []}
                results.append(prediction)
            return results

        return {"results": await anyio.to_thread.run_sync(work)}

    @post("/webhook", status_code=200,  # body limit: the app's max_predict_kb (service.http.app)
          summary="Annotation events: a group task's concept choice is stored as a person's label")
    async def webhook(self, data: dict[str, Any], catalog: CatalogDep, store: StoreDep, owner: Owner) -> dict[str, Any]:
        if not isinstance(data.get("action"), str):
            raise BadRequest("a webhook event is Label Studio's {\"action\": ..., \"annotation\": ..., \"task\": ...}")

        def work() -> dict[str, Any]:
            stored, skipped = [], []
            for found in corrections_from_event(data):
                if isinstance(found, Skipped):
                    skipped.append(found.as_dict())
                    continue
                try:
                    group = correct_stored(catalog, store, owner, found.circuit_id, found.group_id, found.label,
                                           via="labelstudio", key=found.user)
                except (NotFound, Invalid) as exc:
                    skipped.append(Skipped(found.task, exc.detail).as_dict())
                    continue
                stored.append({"circuit_id": found.circuit_id, "group_id": group.id, "label": found.label})
            if skipped:
                log.info("label studio webhook %s: skipped %s", data["action"], skipped)
            return {"stored": stored, "skipped": skipped}

        return await anyio.to_thread.run_sync(work)


# -- corrections from annotation events --------------------------------------------------------------
#: Label Studio's actions that carry a finished annotation (the single and the bulk form).
ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")


@dataclass
class Found:
    task: Any
    circuit_id: str
    group_id: str
    label: str
    user: str


@dataclass
class Skipped:
    task: Any
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "why": self.why}


def _user(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return f"labelstudio-user:{who if who not in (None, '') else 'unknown'}"


def _one(task: Any, annotation: Any) -> Found | Skipped:
    task_id = task.get("id") if isinstance(task, dict) else None
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("circuit_id"), str) \
            or not isinstance(data.get("group_id"), str):
        return Skipped(task_id, "not a NeurFlow group task (its data has no circuit_id and group_id)")
    if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
        return Skipped(task_id, "the annotation was cancelled or is missing")
    choices = [c for r in annotation.get("result") or [] if isinstance(r, dict) and r.get("from_name") == CONCEPT
               for c in (r.get("value") or {}).get("choices") or []]
    if len(choices) != 1:
        return Skipped(task_id, f"a correction is exactly one {CONCEPT!r} choice, the annotation has {len(choices)}")
    return Found(task_id, data["circuit_id"], data["group_id"], choices[0], _user(annotation))


def corrections_from_event(event: dict[str, Any]) -> list[Found | Skipped]:
    """What a Label Studio webhook event asks to store: one :class:`Found` per annotated group task,
    one :class:`Skipped` (with the reason) per annotation that is not a correction."""
    if event.get("action") not in ANNOTATION_ACTIONS:
        return [Skipped(None, f"action {event.get('action')!r} carries no annotation; "
                              f"corrections come from {', '.join(ANNOTATION_ACTIONS)}")]
    if isinstance(event.get("annotations"), list):  # the bulk form: tasks and annotations side by side
        tasks = {t.get("id"): t for t in event.get("tasks") or [] if isinstance(t, dict)}
        return [_one(tasks.get(a.get("task")) if isinstance(a, dict) else None, a) for a in event["annotations"]]
    return [_one(event.get("task"), event.get("annotation"))]
