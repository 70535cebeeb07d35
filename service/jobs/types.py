"""A job as it travels HTTP -> SQLite -> pipe -> worker: one tagged msgspec union, built once at submit.

The API turns a request into one of :data:`Job` (``kind`` is the tag), with typed references to the
caller's objects, already checked against the catalog. The job store keeps it encoded in its row
(plus the ids it uses as columns), the local executor sends it to a worker inside a :class:`RunTask`
message, and the worker decodes it with the same types. Nothing on that path edits a job.

The pipe between the local executor and a worker carries :data:`ToWorker` and :data:`FromWorker` messages
(tagged by ``op`` and ``ev``), msgspec JSON, never pickles.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec

from neurflow.core.jobspec import JobSpec
from neurflow.labeler.config import LabelerConfig
from neurflow.progress import ProgressEvent

# -- references to the caller's objects ----------------------------------------------------------


class ModelRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A registered model: its id (sha256 of the weights) and what a worker needs to build it."""

    id: str
    arch: str
    num_classes: int


class DatasetRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str


class CircuitRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A finished circuit: its id, its folder in the store and the model it was made from."""

    id: str
    key: str
    model_id: str


class CorrectedCircuit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A circuit of the same model whose corrections are evidence for a relabel, and its images."""

    circuit: CircuitRef
    dataset: DatasetRef


# -- the jobs ------------------------------------------------------------------------------------


class EvaluateOptions(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Options of the offline evaluation (see labeler.evaluation); all optional."""

    references: dict[str, list[str]] | None = None  # group id -> acceptable reference labels
    activations: Literal["recorded", "model"] = "recorded"  # "model" runs the model on the patches
    source: Literal["clip", "caption"] = "clip"
    negatives: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 200
    faithfulness_pool: Annotated[int, msgspec.Meta(ge=1, le=20000)] = 400
    presence_top: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    activation_top_fraction: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.2
    seed: int = 0


class RunJob(msgspec.Struct, tag="run", tag_field="kind", forbid_unknown_fields=True):
    """The engine (and labeling) on a dataset: one circuit per target class.

    ``spec`` is the submitted job spec with the registered model's normalisation and class names;
    its ``model.weights`` and ``data.images`` stay the ids the caller sent (the worker passes the
    resolved paths to the engine as overrides). ``labeling`` is ``spec.labeling`` validated, asset
    paths absolute.
    """

    spec: JobSpec
    model: ModelRef
    dataset: DatasetRef
    labeling: LabelerConfig | None = None


class RelabelJob(msgspec.Struct, tag="relabel", tag_field="kind", forbid_unknown_fields=True):
    """Label a finished circuit again (no engine run); makes a new circuit whose parent it is."""

    circuit: CircuitRef
    dataset: DatasetRef
    labeling: LabelerConfig
    evidence: list[CorrectedCircuit] = []  # the model's other corrected circuits (labeler.prototypes)


class DebugJob(msgspec.Struct, tag="debug", tag_field="kind", forbid_unknown_fields=True):
    """Which groups of a circuit fire on one image (stored at ``image_key``), and their ablations."""

    circuit: CircuitRef
    model: ModelRef
    image_key: str
    layer: str | None = None
    threshold: float | None = None


class EvaluateJob(msgspec.Struct, tag="evaluate", tag_field="kind", forbid_unknown_fields=True):
    """The labeler's offline evaluation of a labeled circuit; ``model`` only for model activations."""

    circuit: CircuitRef
    dataset: DatasetRef
    options: EvaluateOptions = msgspec.field(default_factory=EvaluateOptions)
    model: ModelRef | None = None


class DiffJob(msgspec.Struct, tag="diff", tag_field="kind", forbid_unknown_fields=True):
    """The circuit diff of two checkpoints with the off-class reliance (:mod:`neurflow.atlas.diff`):
    both networks run on ``dataset``'s images, each image's class read from a folder named like a class
    (``class_names``). The web process checked everything it could without the networks."""

    before: list[CircuitRef]
    after: list[CircuitRef]
    before_model: ModelRef
    model: ModelRef  # the second checkpoint's
    dataset: DatasetRef
    class_names: list[str | None]  # by class index; None: no folder names that class
    min_similarity: float
    min_delta: float
    max_images: int
    related: dict[int, list[int]] = {}


Job = Union[RunJob, RelabelJob, DebugJob, EvaluateJob, DiffJob]
Kind = Literal["run", "relabel", "debug", "evaluate", "diff"]
KINDS: tuple[str, ...] = ("run", "relabel", "debug", "evaluate", "diff")


def kind_of(job: Job) -> str:
    return type(job).__struct_config__.tag


def model_used(job: Job) -> str | None:
    """The model a worker loads for this job (a column of the job table; a diff's second checkpoint)."""
    model = job.model if isinstance(job, (RunJob, DebugJob, EvaluateJob, DiffJob)) else None
    return model.id if model is not None else None


def dataset_used(job: Job) -> str | None:
    """The dataset whose images this job reads (a column of the job table)."""
    dataset = job.dataset if isinstance(job, (RunJob, RelabelJob, EvaluateJob, DiffJob)) else None
    return dataset.id if dataset is not None else None


def circuit_used(job: Job) -> str | None:
    circuit = None if isinstance(job, RunJob) else job.after[0] if isinstance(job, DiffJob) else job.circuit
    return circuit.id if circuit is not None else None


_job_encoder = msgspec.json.Encoder()
_job_decoder = msgspec.json.Decoder(Job)


def encode_job(job: Job) -> bytes:
    return _job_encoder.encode(job)


def decode_job(raw: bytes | str) -> Job:
    return _job_decoder.decode(raw)


# -- what a job produces -------------------------------------------------------------------------


class NewCircuit(msgspec.Struct, forbid_unknown_fields=True):
    """A circuit a run or relabel wrote; the executor registers it in the catalog."""

    class_index: int
    key: str
    summary: dict[str, Any]


class TaskOutput(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What a task returns: new circuits (run, relabel) or a result document (debug, evaluate)."""

    circuits: list[NewCircuit] | None = None
    result: dict[str, Any] | None = None


# -- the pipe between the local executor and a worker --------------------------------------------


class RunTask(msgspec.Struct, tag="run", tag_field="op", forbid_unknown_fields=True):
    id: str
    attempt: int
    job: Job
    skip: list[int] = []  # classes of a run whose circuits an earlier attempt already stored


class CancelTask(msgspec.Struct, tag="cancel", tag_field="op", forbid_unknown_fields=True):
    job_id: str


class StopWorker(msgspec.Struct, tag="stop", tag_field="op", forbid_unknown_fields=True):
    pass


class Hello(msgspec.Struct, tag="hello", tag_field="ev", forbid_unknown_fields=True):
    pid: int
    device: str


class Progressed(msgspec.Struct, tag="progress", tag_field="ev", forbid_unknown_fields=True):
    job_id: str
    event: ProgressEvent  # as the engine, the labeler or the task made it (already throttled there)


class ClassDone(msgspec.Struct, tag="class", tag_field="ev", forbid_unknown_fields=True):
    """One class of a run is stored: the executor registers it at once (a retry skips it)."""

    job_id: str
    circuit: NewCircuit


class Finished(msgspec.Struct, tag="done", tag_field="ev", forbid_unknown_fields=True):
    job_id: str
    output: TaskOutput


class Failed(msgspec.Struct, tag="failed", tag_field="ev", forbid_unknown_fields=True):
    job_id: str
    error: str


class Cancelled(msgspec.Struct, tag="cancelled", tag_field="ev", forbid_unknown_fields=True):
    job_id: str


ToWorker = Union[RunTask, CancelTask, StopWorker]
FromWorker = Union[Hello, Progressed, ClassDone, Finished, Failed, Cancelled]
