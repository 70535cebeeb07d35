"""Run the engine from a job spec: model intake, image intake, one circuit per target class."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import torch
from torch import nn

from .circuit import Circuit, ModelInfo
from .stages import ChosenLayers, StageStore
from .engine import NeurFlow
from .images import ImageSet, Preprocess
from .jobspec import JobSpec
from .hashing import sha256_file
from .class_names import resolve_class_names
from .layer_budget import CALIBRATION_IMAGES, resolve_layers
from .model_intake import load_model
from .params import EngineParams
from .pretrained import is_pretrained_tag
from neurflow.progress import Meter, Progress



def resolve(base_dir: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else (base_dir / path)


def model_info(spec: JobSpec, weights_path: Path | None, sha256: str | None = None,
               preprocess: Preprocess | None = None) -> ModelInfo:
    """The circuit's model record; ``preprocess``: what the images were made with (default: the spec's)."""
    m = spec.model
    digest = sha256 or (sha256_file(weights_path) if weights_path else None)
    mean, std = preprocess.normalisation() if preprocess else m.normalisation()
    return ModelInfo(arch=m.arch, weights_sha256=digest, num_classes=m.num_classes, input_size=m.input_size,
                     mean=mean, std=std)


@dataclass
class FitSetup:
    """What every target class of one job shares: the model, the images, one forward pass over them
    (``logits``) and the configured engine. Built once per job by :func:`prepare_fit`."""

    spec: JobSpec
    model: nn.Module
    images: ImageSet
    info: ModelInfo
    engine: NeurFlow
    logits: torch.Tensor
    images_dir: Path  # the folder the images were read from (the circuits' image paths are relative to it)
    readouts: dict = field(default_factory=dict)  # the last selection's patch readouts (engine readout_cache)
    weights_name: str | None = None  # a published-weights name, when the spec's weights are one
    # where finished stages are kept, so that a stopped run continues: a folder, or a store of the caller's
    # (the service keeps them in its artifact store)
    stages: Path | StageStore | None = None


def prepare_fit(spec: JobSpec, base_dir: Path, progress: Progress | None = None, model: nn.Module | None = None,
                images_dir: Path | None = None, weights_path: Path | None = None, device: str | None = None,
                logits: torch.Tensor | None = None, chosen: ChosenLayers | None = None) -> FitSetup:
    """Load what :func:`fit_class` needs for every class of ``spec`` (see :func:`fit_spec` for the
    overrides); ``logits`` when the caller already ran the model on the images; ``chosen``: where the list
    ``layers: "auto"`` became is kept, so that a run continuing this job uses the same list
    (:func:`job_layers`)."""
    # a published-weights name ("IMAGENET1K_V2") is passed as it is, not as a path; with an explicit
    # weights_path (the service's worker: spec.model.weights is then a model id) it is never a name
    named = spec.model.weights if weights_path is None and is_pretrained_tag(spec.model.weights) else None
    weights_path = weights_path or resolve(base_dir, spec.model.weights)
    report = Meter(progress)
    if model is None:
        report("loading model", 0, 1, "models")
        model = load_model(spec.model.arch, named or weights_path, spec.model.num_classes)
        report("loading model", 1, 1, "models")
    images_dir = images_dir or resolve(base_dir, spec.data.images)
    report("reading images", 0, 1, "folders")
    images = ImageSet.from_folder(images_dir, Preprocess(spec.model.input_size, *spec.model.normalisation()))
    report("reading images", len(images), len(images), "images")
    info = model_info(spec, weights_path if weights_path.is_file() else None, preprocess=images.preprocess)
    params = job_layers(spec, model, min(len(images), spec.data.max_images or len(images)), info, chosen,
                        images.pixels[:CALIBRATION_IMAGES])
    engine = NeurFlow(**msgspec.structs.asdict(params), select=spec.data.select, max_images=spec.data.max_images,
                      progress=progress)
    if engine.device is None and device is not None:
        engine.set_params(device=device)
    if logits is None:
        logits = engine.predict_logits(model, images)  # one forward pass serves every target class
    return FitSetup(spec=spec, model=model, images=images, info=info, engine=engine, logits=logits,
                    images_dir=Path(images_dir), weights_name=named)


def job_layers(spec: JobSpec, model: nn.Module, n_images: int, info: ModelInfo,
               chosen: ChosenLayers | None = None, sample: torch.Tensor | None = None) -> EngineParams:
    """The job's engine parameters with ``layers: "auto"`` made a list: the one ``chosen`` kept for this job
    (its spec and weights) when an earlier run chose, else the suggestion for this job's images (at most
    the images a class can keep; calibrated on ``sample``, the first of them), tau and preset on this
    machine, which ``chosen`` then keeps."""
    if spec.engine.layers != "auto":
        return spec.engine
    job = hashlib.sha256(msgspec.json.encode([spec, info.weights_sha256, n_images])).hexdigest()[:32]
    kept = chosen.load(job) if chosen is not None else None
    if kept is not None:
        return msgspec.structs.replace(spec.engine, layers=kept)
    params = resolve_layers(spec.engine, model, spec.model.input_size, n_images, sample=sample)
    if chosen is not None:
        chosen.save(job, params.layers)
    return params


def fit_class(setup: FitSetup, target: int) -> Circuit:
    """The circuit of one target class."""
    m = setup.spec.model
    names = resolve_class_names(m.class_names, m.num_classes, m.arch, setup.weights_name) or []
    name = names[target] if 0 <= target < len(names) else None
    store = setup.stages if isinstance(setup.stages, StageStore) or setup.stages is None else StageStore(setup.stages)
    return setup.engine.fit(setup.model, setup.images, target, model_info=setup.info, target_name=name,
                            logits=setup.logits, readout_cache=setup.readouts, stages=store).circuit_


def fit_spec(spec: JobSpec, base_dir: Path, progress: Progress | None = None, model: nn.Module | None = None,
             images_dir: Path | None = None, weights_path: Path | None = None,
             device: str | None = None, stages: Path | None = None) -> dict[int, Circuit]:
    """Fit one circuit per target class of ``spec``; paths in the spec resolve against ``base_dir``.

    ``model`` / ``images_dir`` / ``weights_path`` let a caller that already holds them (the service's
    worker keeps models loaded between jobs, and its spec names ids, not paths) skip the intake;
    ``device`` is where the engine runs when the spec names no device (a worker's own device);
    ``stages``: a folder for finished stages (:mod:`neurflow.core.stages`), and the list ``layers: "auto"``
    became: a run stopped midway and started again with the same folder continues where it stopped.
    """
    chosen = ChosenLayers(Path(stages) / ChosenLayers.NAME) if stages is not None else None
    setup = prepare_fit(spec, base_dir, progress, model, images_dir, weights_path, device, chosen=chosen)
    setup.stages = stages
    return {target: fit_class(setup, target) for target in spec.target_classes()}
