"""What a worker runs for each job kind. Runs inside the worker process only.

Every task gets its typed job (:mod:`neurflow.service.jobs.types`), the job's id and attempt, and a
:class:`~neurflow.service.executors.context.TaskContext` (artifact store, device, resident models); it
resolves the job's ids to local paths through the store and hands them to the engine and the labeler
as explicit arguments. It returns a :class:`TaskOutput`. ``progress`` receives
:class:`~neurflow.progress.ProgressEvent` s and raises
:class:`~neurflow.service.executors.context.JobCancelled` once a cancel was requested.
"""

from __future__ import annotations

from typing import Any

import msgspec

from neurflow.progress import Meter, Progress, in_class
from neurflow.service.executors.context import TaskContext
from neurflow.service.jobs.types import (DebugJob, DiffJob, EvaluateJob, RelabelJob, RunJob, RunTask, TaskOutput,
                                        model_used)
from neurflow.service.storage import keys


def _load_circuit(ctx: TaskContext, circuit_key: str):
    from neurflow.service.storage.circuits import load_circuit

    return load_circuit(ctx.store, circuit_key)


def run(job: RunJob, task: RunTask, ctx: TaskContext, progress: Progress) -> TaskOutput:
    """Engine (+ labeling when the job has a labeling section): one unit of work per target class.

    Each finished class is stored and announced through ``ctx.emit`` at once (the executor registers
    it), so a retry of the job skips the classes in ``task.skip``; the output lists none of them."""
    from neurflow.service.executors.units import prepare, run_class

    classes = job.spec.target_classes()
    todo = [c for c in classes if c not in set(task.skip)]
    setup = prepare(job, ctx, progress, job_id=task.id) if todo else None
    circuits = []
    for target in todo:
        finished = len(classes) - len(todo) + len(circuits)
        # the stages keep their own units; the class and the job's count of classes ride along
        report = in_class(progress, target, finished, len(classes)) if len(classes) > 1 else progress
        circuit = run_class(job, setup, task.id, task.attempt, target, ctx, report)
        circuits.append(circuit)
        if ctx.emit is not None:
            ctx.emit(circuit)
    return TaskOutput(circuits=[] if ctx.emit is not None else circuits)


def relabel(job: RelabelJob, task: RunTask, ctx: TaskContext, progress: Progress) -> TaskOutput:
    """Label an existing circuit again (another vocabulary, CLIP model or captioner); no engine run.
    The corrections of the circuit and of ``job.evidence`` (the model's other corrected circuits)
    re-score its groups (:mod:`neurflow.labeler.prototypes`)."""
    from neurflow.labeler import pipeline
    from neurflow.labeler.prototypes import relabel_with_corrections
    from neurflow.service.executors.units import finish_circuit

    report = Meter(progress)
    report("loading circuit", 0, 1, "circuits")
    circuit = _load_circuit(ctx, job.circuit.key)
    report("loading circuit", 1, 1, "circuits")
    images_root = ctx.store.local_path(keys.images(job.dataset.id))
    evidence = []
    for other in job.evidence:
        try:
            evidence.append((_load_circuit(ctx, other.circuit.key), ctx.store.local_path(keys.images(other.dataset.id))))
        except (KeyError, ValueError):  # deleted since the job was submitted: its corrections are gone with it
            continue
    (labeled,) = relabel_with_corrections([(circuit, images_root)], job.labeling, evidence=evidence,
                                          progress=progress)
    key = keys.relabeled_circuit(keys.attempt(task.id, task.attempt))
    local_dir = ctx.output_dir(key, task.id)
    path = pipeline.write(labeled, local_dir, compact=True)
    return TaskOutput(circuits=[finish_circuit(ctx, path, images_root, key, local_dir)])


def debug(job: DebugJob, task: RunTask, ctx: TaskContext, progress: Progress) -> TaskOutput:
    """Why did the model predict this? Group scores, firing crops and ablated target logits."""
    from neurflow.core.debug import debug_image
    from neurflow.service.intake.images import decode_image

    report = Meter(progress)
    report("loading model", 0, 1, "models")
    model = ctx.model(job.model)
    report("loading model", 1, 1, "models")
    circuit = _load_circuit(ctx, job.circuit.key)
    image = decode_image(ctx.store.get_bytes(job.image_key), ctx.settings.max_image_pixels)
    report("explaining", 0, 1, "images")
    options: dict[str, Any] = {}
    if job.layer is not None:
        options["layer"] = job.layer
    if job.threshold is not None:
        options["threshold"] = job.threshold
    result = debug_image(model, circuit, image, **options)
    report("explaining", 1, 1, "images")
    return TaskOutput(result=msgspec.to_builtins(result))


def evaluate(job: EvaluateJob, task: RunTask, ctx: TaskContext, progress: Progress) -> TaskOutput:
    """The labeler's offline evaluation of a labeled circuit (held-out retrieval, faithfulness,
    agreement with reference labels when the request gives them)."""
    from neurflow.labeler.evaluation import EvaluationOptions, References, evaluate_circuit

    opts = job.options
    report = Meter(progress)
    report("loading circuit", 0, 1, "circuits")
    circuit = _load_circuit(ctx, job.circuit.key)
    report("loading circuit", 1, 1, "circuits")
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


def diff(job: DiffJob, task: RunTask, ctx: TaskContext, progress: Progress) -> TaskOutput:
    """The circuit diff of two checkpoints, each change with its off-class reliance (both networks on
    the dataset's images)."""
    from neurflow.atlas.diff import diff_circuits
    from neurflow.atlas.offclass import folder_labels
    from neurflow.core.images import ImageSet, Preprocess

    report = Meter(progress)
    report("loading circuits", 0, 1, "circuits")
    before = [_load_circuit(ctx, ref.key) for ref in job.before]
    after = [_load_circuit(ctx, ref.key) for ref in job.after]
    report("loading circuits", 1, 1, "circuits")
    report("loading models", 0, 2, "models")
    models = (ctx.model(job.before_model), ctx.model(job.model))
    report("loading models", 2, 2, "models")
    info = after[0].model
    images = ImageSet.from_folder(ctx.store.local_path(keys.images(job.dataset.id)),
                                  Preprocess(info.input_size, info.mean, info.std))
    labels = folder_labels(images, job.class_names)
    report("off-class reliance", 0, 1, "diffs")
    result = diff_circuits(before, after, min_similarity=job.min_similarity, min_delta=job.min_delta, models=models,
                           images=images, labels=labels, related=job.related, max_images=job.max_images)
    report("off-class reliance", 1, 1, "diffs")
    return TaskOutput(result=msgspec.to_builtins(result))


_TASKS = {RunJob: run, RelabelJob: relabel, DebugJob: debug, EvaluateJob: evaluate, DiffJob: diff}


def run_task(task: RunTask, ctx: TaskContext, progress: Progress) -> TaskOutput:
    try:
        return _TASKS[type(task.job)](task.job, task, ctx, progress)
    except BaseException:  # failed or cancelled: the shared cached model is never trusted afterwards
        ctx.forget(model_used(task.job))
        raise
