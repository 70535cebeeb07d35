"""A run job's units of work, the same for every executor: what its classes share, and one class.

A run of many classes (``data.target_class`` a list or ``"all"``) fans out one unit per class.
:func:`prepare` does the work every class shares once per job (per worker process, or once as its own
Ray task): loading the model and the images and one forward pass over all images (the logits that
select each class's images). :func:`run_class` fits one class, labels it when the job asks (CLIP and
its vocabulary embedding are cached per process, see ``labeler.clip_model``), writes the circuit
folder to the artifact store and returns the :class:`NewCircuit` the executor registers at once, so a
retry of the job skips it. Fit, label and write are :mod:`neurflow.labeler.pipeline`'s, the steps of
``neurflow run``; this module adds the worker's fit (:func:`fit_one`) and the publishing
(:func:`finish_circuit`). The local worker and the Ray tasks both call these functions, so both
executors produce the same documents (compact: the document and its arrays' sidecar), and both keep
each finished stage of a fit in the job's artifact folder (:mod:`neurflow.service.executors.stages`):
an attempt after a killed worker, server or Ray task continues the class where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from neurflow.progress import Meter, Progress
from neurflow.service.jobs.types import NewCircuit, RunJob
from neurflow.service.storage import keys

if TYPE_CHECKING:
    import torch

    from neurflow.core.circuit import Circuit
    from neurflow.core.pipeline import FitSetup
    from neurflow.service.executors.context import TaskContext
    from neurflow.service.executors.stages import StoredStages


def prepare(job: RunJob, ctx: TaskContext, progress: Progress | None = None,
            logits: torch.Tensor | None = None, job_id: str | None = None) -> FitSetup:
    """What every class of ``job`` shares; ``logits`` when another process already computed them. With
    ``job_id``, ``layers: "auto"`` becomes the list the job's first attempt chose (and kept in the artifact
    store: :class:`~neurflow.service.executors.stages.StoredLayerChoice`), or is chosen and kept now."""
    from neurflow.core.pipeline import prepare_fit
    from neurflow.service.executors.stages import StoredLayerChoice

    report = Meter(progress)
    report("loading model", 0, 1, "models")
    model = ctx.model(job.model)
    report("loading model", 1, 1, "models")
    images_root = ctx.store.local_path(keys.images(job.dataset.id))
    # the worker's device, whatever a stored job says (the API refuses engine.device since it is shared state)
    spec = msgspec.structs.replace(job.spec, engine=msgspec.structs.replace(job.spec.engine, device=None))
    return prepare_fit(spec, images_root, progress, model=model, images_dir=images_root,
                       weights_path=ctx.store.local_path(keys.weights(job.model.id)),
                       device=None if ctx.device == "cpu" else ctx.device, logits=logits,
                       chosen=StoredLayerChoice(ctx.store, job_id) if job_id is not None else None)


def run_class(job: RunJob, setup: FitSetup, job_id: str, attempt: int, target: int, ctx: TaskContext,
              progress: Progress | None = None) -> NewCircuit:
    """Fit (and label) one class and store its circuit folder; return what the catalog registers."""
    from neurflow.labeler import pipeline

    key, local_dir = _class_folder(job_id, attempt, target, ctx)
    path = pipeline.run_class(setup, target, local_dir, job.labeling, progress,
                              fit=lambda s, t: fit_one(s, t, ctx, progress, job_id), compact=True)
    stored = finish_circuit(ctx, path, setup.images_dir, key, local_dir)
    class_stages(ctx, job_id, target).drop()
    return stored


def fit_one(setup: FitSetup, target: int, ctx: TaskContext, progress: Progress | None = None,
            job_id: str | None = None) -> Circuit:
    """The engine's part of one class, on the worker's GPU path (:mod:`neurflow.service.executors.gpu`): batch
    sizes that adapt to device memory, and autocast when the server asks for it. With ``job_id`` each
    finished stage is kept in the job's artifact folder and the stages an earlier attempt kept are
    loaded, not computed (:mod:`neurflow.service.executors.stages`)."""
    from neurflow.core.pipeline import fit_class
    from neurflow.service.executors import gpu

    setup.engine.progress = progress
    setup.stages = class_stages(ctx, job_id, target) if job_id is not None else None
    device = setup.engine.device or "cpu"
    mode = ctx.settings.autocast
    key = (setup.info.weights_sha256, setup.spec.model.input_size, device)
    try:
        with gpu.autocast(device, mode):
            circuit = ctx.memory.run(key, setup.engine, lambda: fit_class(setup, target))
    except BaseException:  # Ray's class tasks fit outside run_task: the same distrust of the cached model
        ctx.forget(setup.info.weights_sha256)
        raise
    circuit.fit.autocast = mode
    return circuit


def store_class(job: RunJob, circuit: Circuit, job_id: str, attempt: int, ctx: TaskContext,
                progress: Progress | None = None) -> NewCircuit:
    """Label a fitted class when the job asks, render its patches and publish its folder (the second
    half of :func:`run_class`, for Ray's labeler, which receives classes fitted elsewhere)."""
    from neurflow.labeler import pipeline

    images_root = ctx.store.local_path(keys.images(job.dataset.id))
    key, local_dir = _class_folder(job_id, attempt, circuit.target.class_index, ctx)
    path = pipeline.finish(circuit, local_dir, images_root, job.labeling, progress, compact=True)
    stored = finish_circuit(ctx, path, images_root, key, local_dir)
    class_stages(ctx, job_id, circuit.target.class_index).drop()
    return stored


def class_stages(ctx: TaskContext, job_id: str, target: int) -> StoredStages:
    """Where the stages of one class of a job are kept."""
    from neurflow.service.executors.stages import StoredStages

    return StoredStages(ctx.store, job_id, target, ctx.settings.scratch_path)


def _class_folder(job_id: str, attempt: int, target: int, ctx: TaskContext) -> tuple[str, Path]:
    """A class's artifact key and the local folder its circuit is written to."""
    key = keys.class_circuit(keys.attempt(job_id, attempt), target)
    return key, ctx.output_dir(key, f"{job_id}/class-{target}")


def finish_circuit(ctx: TaskContext, circuit_path: Path, images_root: Path, key: str, local_dir: Path) -> NewCircuit:
    """Render a circuit's patches next to its document and publish the folder under ``key`` (the
    document and, for a compact one, its arrays' sidecar)."""
    from neurflow.core.circuit_arrays import read_circuit, write_circuit
    from neurflow.labeler.patches import render_patches
    from neurflow.service.jobs.summary import summarize

    circuit = read_circuit(circuit_path)
    if circuit_path != local_dir / keys.DOCUMENT:
        write_circuit(circuit, local_dir / keys.DOCUMENT)
    render_patches(circuit, images_root, local_dir / keys.PATCHES)
    ctx.publish(key, local_dir)
    return NewCircuit(class_index=circuit.target.class_index, key=key, summary=summarize(circuit))
