"""What a worker runs for each job kind. Runs inside the worker process only.

Every task gets its typed job (:mod:`neurflow.service.jobtypes`), the job's id and attempt, and a
:class:`TaskContext` (artifact store, device, resident models); it resolves the job's ids to local
paths through the store and hands them to the engine and the labeler as explicit arguments. It
returns a :class:`TaskOutput`. ``progress(stage, done, total)`` raises :class:`JobCancelled` once a
cancel was requested.
"""

from __future__ import annotations

import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any

import msgspec

from neurflow.progress import Progress
from neurflow.service import keys
from neurflow.service.jobtypes import (
    DebugJob,
    EvaluateJob,
    ModelRef,
    NewCircuit,
    RelabelJob,
    RunJob,
    RunTask,
    TaskOutput,
)
from neurflow.service.settings import Settings
from neurflow.service.storage import ArtifactStore


class JobCancelled(Exception):
    pass


class TaskContext:
    def __init__(self, settings: Settings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.store = ArtifactStore(settings.artifact_url, cache_dir=settings.scratch_path / "cache")
        self._models: OrderedDict[str, Any] = OrderedDict()

    def model(self, ref: ModelRef):
        """The user's model, loaded once and kept resident (LRU of ``model_cache_size``)."""
        if ref.id in self._models:
            self._models.move_to_end(ref.id)
            return self._models[ref.id]
        from neurflow.core.model_intake import load_model

        model = load_model(ref.arch, self.store.local_path(keys.weights(ref.id)), ref.num_classes)
        if self.device != "cpu":
            model = model.to(self.device)
        self._models[ref.id] = model
        while len(self._models) > max(1, self.settings.model_cache_size):
            self._models.popitem(last=False)
        return model

    def scratch(self, job_id: str) -> Path:
        path = self.settings.scratch_path / "jobs" / job_id
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def output_dir(self, key: str, job_id: str) -> Path:
        """Where a task writes an artifact folder: in place for a local store, else scratch."""
        if self.store.is_local:
            path = self.store.local_path(key)
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True, exist_ok=True)
            return path
        return self.scratch(job_id) / "out"

    def publish(self, key: str, local: Path) -> None:
        if not self.store.is_local:
            self.store.put_dir(key, local)


def _finish_circuit(ctx: TaskContext, circuit_path: Path, images_root: Path, key: str, local_dir: Path) -> NewCircuit:
    from neurflow.core.circuit import Circuit
    from neurflow.labeler.patches import render_patches
    from neurflow.service.summary import summarize

    circuit = Circuit.from_json(circuit_path.read_bytes())
    if circuit_path != local_dir / keys.DOCUMENT:
        shutil.copyfile(circuit_path, local_dir / keys.DOCUMENT)
    render_patches(circuit, images_root, local_dir / keys.PATCHES)
    ctx.publish(key, local_dir)
    return NewCircuit(class_index=circuit.target.class_index, key=key, summary=summarize(circuit))


def _load_circuit(ctx: TaskContext, circuit_key: str):
    from neurflow.core.circuit import Circuit

    return Circuit.from_json(ctx.store.get_bytes(keys.document(circuit_key)))


def run(job: RunJob, task: RunTask, ctx: TaskContext, progress: Progress) -> TaskOutput:
    """Engine (+ labeling when the job has a labeling section): one circuit per target class."""
    from neurflow.labeler.pipeline import run_job

    progress("loading model", 0, 1)
    model = ctx.model(job.model)
    images_root = ctx.store.local_path(keys.images(job.dataset.id))
    out_key = keys.attempt(task.id, task.attempt)
    out_dir = ctx.output_dir(out_key, task.id)
    # base_dir (out_dir) resolves nothing: the job's model and dataset are ids, their paths are passed here
    paths = run_job(job.spec, out_dir, out_dir / "engine", progress=progress, model=model, images_dir=images_root,
                    weights_path=ctx.store.local_path(keys.weights(job.model.id)),
                    device=None if ctx.device == "cpu" else ctx.device, labeling=job.labeling)
    circuits = []
    for i, (cls, path) in enumerate(sorted(paths.items())):
        progress("rendering patches", i, len(paths))
        key = keys.class_circuit(out_key, cls)
        local_dir = out_dir / key.rsplit("/", 1)[-1]
        local_dir.mkdir(parents=True, exist_ok=True)
        circuits.append(_finish_circuit(ctx, Path(path), images_root, key, local_dir))
    shutil.rmtree(out_dir / "engine", ignore_errors=True)
    return TaskOutput(circuits=circuits)


def relabel(job: RelabelJob, task: RunTask, ctx: TaskContext, progress: Progress) -> TaskOutput:
    """Label an existing circuit again (another vocabulary, CLIP model or captioner); no engine run."""
    from neurflow.labeler.labeling import label_circuit

    progress("loading circuit", 0, 1)
    circuit = _load_circuit(ctx, job.circuit.key)
    images_root = ctx.store.local_path(keys.images(job.dataset.id))
    labeled = label_circuit(circuit, images_root, job.labeling, progress=progress)
    key = keys.relabeled_circuit(keys.attempt(task.id, task.attempt))
    local_dir = ctx.output_dir(key, task.id)
    (local_dir / keys.DOCUMENT).write_text(labeled.to_json())
    return TaskOutput(circuits=[_finish_circuit(ctx, local_dir / keys.DOCUMENT, images_root, key, local_dir)])


def debug(job: DebugJob, task: RunTask, ctx: TaskContext, progress: Progress) -> TaskOutput:
    """Why did the model predict this? Group scores, firing crops and ablated target logits."""
    from neurflow.core.debug import debug_image
    from neurflow.service.intake import decode_image

    progress("loading model", 0, 2)
    model = ctx.model(job.model)
    circuit = _load_circuit(ctx, job.circuit.key)
    image = decode_image(ctx.store.get_bytes(job.image_key), ctx.settings.max_image_pixels)
    progress("explaining", 1, 2)
    options: dict[str, Any] = {}
    if job.layer is not None:
        options["layer"] = job.layer
    if job.threshold is not None:
        options["threshold"] = job.threshold
    return TaskOutput(result=msgspec.to_builtins(debug_image(model, circuit, image, **options)))


def evaluate(job: EvaluateJob, task: RunTask, ctx: TaskContext, progress: Progress) -> TaskOutput:
    """The labeler's offline evaluation of a labeled circuit (held-out retrieval, faithfulness,
    agreement with reference labels when the request gives them)."""
    from neurflow.labeler.evaluation import EvaluationOptions, References, evaluate_circuit

    opts = job.options
    progress("loading circuit", 0, 1)
    circuit = _load_circuit(ctx, job.circuit.key)
    images_root = ctx.store.local_path(keys.images(job.dataset.id))
    activations = None
    if job.model is not None:
        from neurflow.labeler.evaluation.evaluate import ModelActivations
        from neurflow.labeler.patches import PatchLoader

        activations = ModelActivations(ctx.model(job.model), PatchLoader(circuit, images_root),
                                       circuit.model.input_size, circuit.model.mean, circuit.model.std)
    references = References(source="request", labels=opts.references) if opts.references else None
    options = EvaluationOptions(source=opts.source, negatives=opts.negatives, faithfulness_pool=opts.faithfulness_pool,
                                presence_top=opts.presence_top, activation_top_fraction=opts.activation_top_fraction,
                                seed=opts.seed)
    report = evaluate_circuit(circuit, images_root, references, activations=activations, options=options,
                              progress=progress)
    return TaskOutput(result=msgspec.to_builtins(report))


_TASKS = {RunJob: run, RelabelJob: relabel, DebugJob: debug, EvaluateJob: evaluate}


def run_task(task: RunTask, ctx: TaskContext, progress: Progress) -> TaskOutput:
    return _TASKS[type(task.job)](task.job, task, ctx, progress)
