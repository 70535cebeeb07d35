"""Request and response bodies of the API (msgspec Structs; the OpenAPI schema is built from them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar.params import Parameter

from neurflow.core.circuit import Correction, GroupStatus
from neurflow.progress import ProgressEvent
from neurflow.service.intake.models import MAX_CLASSES
from neurflow.service.jobs.limits import LabelingRequest
from neurflow.service.jobs.types import EvaluateOptions, Job, Kind
from neurflow.service.storage.pages import DEFAULT_PAGE, MAX_PAGE

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Layer(msgspec.Struct):
    name: str
    shape: list[int]


class ModelOut(msgspec.Struct):
    id: str  # sha256 of the weights
    arch: str
    num_classes: int
    input_size: int
    mean: list[float]
    std: list[float]
    class_names: list[str] | None
    name: str | None
    size: int
    created_at: float
    layers: list[Layer] = []
    warnings: list[str] = []  # in the upload's answer only: what the server filled in for the caller


class ModelList(msgspec.Struct):
    models: list[ModelOut]
    next: str | None = None  # the cursor of the next page; None on the last


class DatasetOut(msgspec.Struct):
    id: str
    name: str
    n_images: int
    classes: list[str]
    size: int
    created_at: float


class DatasetList(msgspec.Struct):
    datasets: list[DatasetOut]
    next: str | None = None  # the cursor of the next page; None on the last


class JobOut(msgspec.Struct):
    id: str
    kind: Kind
    state: JobState
    stage: str  # progress_event's, repeated
    done: int
    total: int
    progress: float  # how much of the job is done, 0..1 (ProgressEvent.fraction)
    progress_event: ProgressEvent  # the last progress event of the running job (its stage's units, elapsed, ETA)
    error: str | None
    attempt: int
    max_attempts: int
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    spec: Job  # the job as stored and run (``kind`` says which)
    result: dict[str, Any] | None


class JobList(msgspec.Struct):
    jobs: list[JobOut]
    next: str | None = None  # the cursor of the next page; None on the last


class CircuitOut(msgspec.Struct):
    id: str
    job_id: str
    class_index: int
    parent: str | None
    model_id: str
    dataset_id: str
    summary: dict[str, Any]
    created_at: float
    links: dict[str, str] = {}


class CircuitList(msgspec.Struct):
    circuits: list[CircuitOut]
    next: str | None = None  # the cursor of the next page; None on the last


class RelabelIn(msgspec.Struct, forbid_unknown_fields=True):
    """The ``labeling`` section of a job spec (vocabulary, CLIP model, captioner), and whose
    corrections re-score the groups: the circuit's own and those of the model's other circuits
    (``"model"``, the default), or the circuit's own only (``"circuit"``)."""

    labeling: LabelingRequest  # type: ignore[valid-type]
    corrections: Literal["model", "circuit"] = "model"


class LabelIn(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``PUT /v1/circuits/{id}/groups/{group_id}/label``: a person's label for the group."""

    label: str


class GroupLabelOut(msgspec.Struct):
    """A group's label after a correction: what readers now see, and the stored provenance."""

    circuit_id: str
    group_id: str
    label: str | None
    status: GroupStatus
    correction: Correction | None


class EvaluateIn(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/circuits/{id}/evaluate`` (optional)."""

    options: EvaluateOptions = msgspec.field(default_factory=EvaluateOptions)


class HealthOut(msgspec.Struct):
    status: Literal["ok", "degraded"]
    live: bool
    ready: bool
    database: bool
    storage: bool
    workers: list[dict[str, Any]]
    queued: int
    running: int
    version: str


#: ``?limit=`` of the list routes (at most ``MAX_PAGE`` rows a page) and ``?cursor=`` (a page's ``next``)
PageLimit = Annotated[int, Parameter(ge=1, le=MAX_PAGE, description=f"rows of this page (at most {MAX_PAGE})")]
Cursor = Annotated[str | None, Parameter(max_length=200, description="the 'next' value of the previous page")]
#: ``?class_index=`` of a list route: a class of some registered model
ClassIndexFilter = Annotated[int | None, Parameter(ge=0, le=MAX_CLASSES - 1,
                                                   description=f"only this class (0 to {MAX_CLASSES - 1})")]

WaitSeconds = Annotated[float, msgspec.Meta(ge=0, le=600)]


def model_out(record: dict[str, Any], with_layers: bool = True) -> ModelOut:
    d = record["descriptor"]
    return ModelOut(id=record["id"], arch=d["arch"], num_classes=d["num_classes"], input_size=d["input_size"],
                    mean=d["mean"], std=d["std"], class_names=d.get("class_names"), name=d.get("name"),
                    size=record["size"], created_at=record["created_at"],
                    layers=[Layer(name=n, shape=list(s)) for n, s in record["layers"]] if with_layers else [])


def circuit_out(record: dict[str, Any]) -> CircuitOut:
    cid = record["id"]
    return CircuitOut(id=cid, job_id=record["job_id"], class_index=record["class_index"], parent=record["parent"],
                      model_id=record["model_id"], dataset_id=record["dataset_id"], summary=record["summary"],
                      created_at=record["created_at"],
                      links={"document": f"/v1/circuits/{cid}",
                             "mosaic": f"/v1/circuits/{cid}/groups/{{group_id}}/mosaic.png",
                             "exemplar": f"/v1/circuits/{cid}/groups/{{group_id}}/exemplars/{{k}}.png"})
