"""What a worker runs for each job kind. Runs inside the worker process only.

Every task gets the job message (``spec`` with artifact keys already resolved by the API) and a
:class:`TaskContext` (artifact store, device, resident models) and returns a JSON-able result.
``progress(stage, done, total)`` raises :class:`JobCancelled` once a cancel was requested.
"""

from __future__ import annotations

import importlib
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import msgspec

from neurflow.service.settings import Settings
from neurflow.service.storage import ArtifactStore
from neurflow.progress import Progress



class JobCancelled(Exception):
    pass


class TaskContext:
    def __init__(self, settings: Settings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.store = ArtifactStore(settings.artifact_url, cache_dir=settings.scratch_path / "cache")
        self._models: OrderedDict[str, Any] = OrderedDict()

    def model(self, model_id: str, arch: str, num_classes: int, weights_key: str):
        """The user's model, loaded once and kept resident (LRU of ``model_cache_size``)."""
        if model_id in self._models:
            self._models.move_to_end(model_id)
            return self._models[model_id]
        from neurflow.core.model_intake import load_model

        model = load_model(arch, self.store.local_path(weights_key), num_classes)
        if self.device != "cpu":
            model = model.to(self.device)
        self._models[model_id] = model
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


def _resolve(entry: str) -> Callable[..., Any]:
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


def _finish_circuit(ctx: TaskContext, circuit_path: Path, images_root: Path, key: str, local_dir: Path) -> dict:
    from neurflow.core.circuit import Circuit
    from neurflow.labeler.patches import render_patches
    from neurflow.service.summary import summarize

    circuit = Circuit.from_json(circuit_path.read_bytes())
    if circuit_path != local_dir / "circuit.json":
        shutil.copyfile(circuit_path, local_dir / "circuit.json")
    render_patches(circuit, images_root, local_dir / "patches")
    ctx.publish(key, local_dir)
    return summarize(circuit)


def run(job: dict[str, Any], ctx: TaskContext, progress: Progress) -> dict[str, Any]:
    """Engine (+ labeling when the spec asks for it): one circuit per target class."""
    from neurflow.core.jobspec import JobSpec

    spec_dict = job["spec"]["job"]
    refs = job["spec"]["refs"]
    spec_dict = {**spec_dict, "model": {**spec_dict["model"], "weights": str(ctx.store.local_path(refs["weights_key"]))},
                 "data": {**spec_dict["data"], "images": str(ctx.store.local_path(refs["images_key"]))}}
    engine = dict(spec_dict["engine"])
    if ctx.device != "cpu" and "device" not in engine:
        engine["device"] = ctx.device
    spec_dict["engine"] = engine
    spec = msgspec.convert(spec_dict, type=JobSpec)
    progress("loading model", 0, 1)
    model = ctx.model(refs["model_id"], spec.model.arch, spec.model.num_classes, refs["weights_key"])
    out_key = f"jobs/{job['id']}/attempt-{job['attempt']}"
    out_dir = ctx.output_dir(out_key, job["id"])
    run_job = _resolve(ctx.settings.pipeline)
    paths: dict[int, Path] = run_job(spec, Path(spec.data.images), out_dir / "engine", progress=progress, model=model)
    circuits = []
    images_root = Path(spec.data.images)
    for i, (cls, path) in enumerate(sorted(paths.items())):
        progress("rendering patches", i, len(paths))
        key = f"{out_key}/class-{cls}"
        local_dir = out_dir / f"class-{cls}"
        local_dir.mkdir(parents=True, exist_ok=True)
        summary = _finish_circuit(ctx, Path(path), images_root, key, local_dir)
        circuits.append({"class_index": int(cls), "key": key, "summary": summary})
    shutil.rmtree(out_dir / "engine", ignore_errors=True)
    return {"circuits": circuits}


def relabel(job: dict[str, Any], ctx: TaskContext, progress: Progress) -> dict[str, Any]:
    """Label an existing circuit again (another vocabulary, CLIP model or captioner); no engine run."""
    from neurflow.core.circuit import Circuit
    from neurflow.labeler.config import LabelerConfig
    from neurflow.labeler.labeling import label_circuit

    refs = job["spec"]["refs"]
    progress("loading circuit", 0, 1)
    circuit = Circuit.from_json(ctx.store.get_bytes(refs["circuit_key"] + "/circuit.json"))
    images_root = ctx.store.local_path(refs["images_key"])
    config = LabelerConfig.from_spec(job["spec"]["labeling"])
    labeled = label_circuit(circuit, images_root, config, progress=progress)
    key = f"jobs/{job['id']}/attempt-{job['attempt']}/relabeled"
    local_dir = ctx.output_dir(key, job["id"])
    (local_dir / "circuit.json").write_text(labeled.to_json())
    summary = _finish_circuit(ctx, local_dir / "circuit.json", images_root, key, local_dir)
    return {"circuits": [{"class_index": labeled.target.class_index, "key": key, "summary": summary}]}


def debug(job: dict[str, Any], ctx: TaskContext, progress: Progress) -> dict[str, Any]:
    """Why did the model predict this? Group scores, firing crops and ablated target logits."""
    from neurflow.core.circuit import Circuit
    from neurflow.core.debug import debug_image
    from neurflow.service.intake import decode_image

    refs = job["spec"]["refs"]
    progress("loading model", 0, 2)
    model = ctx.model(refs["model_id"], refs["arch"], refs["num_classes"], refs["weights_key"])
    circuit = Circuit.from_json(ctx.store.get_bytes(refs["circuit_key"] + "/circuit.json"))
    image = decode_image(ctx.store.get_bytes(refs["image_key"]), ctx.settings.max_image_pixels)
    progress("explaining", 1, 2)
    kwargs = {k: v for k, v in (("layer", job["spec"].get("layer")), ("threshold", job["spec"].get("threshold")))
              if v is not None}
    result = debug_image(model, circuit, image, **kwargs)
    return msgspec.to_builtins(result)


def evaluate(job: dict[str, Any], ctx: TaskContext, progress: Progress) -> dict[str, Any]:
    """The labeler's offline evaluation of a labeled circuit (held-out retrieval, faithfulness,
    agreement with reference labels when the request gives them)."""
    from neurflow.core.circuit import Circuit
    from neurflow.labeler.evaluation import EvaluationOptions, References, evaluate_circuit

    refs = job["spec"]["refs"]
    opts = dict(job["spec"].get("options") or {})
    progress("loading circuit", 0, 1)
    circuit = Circuit.from_json(ctx.store.get_bytes(refs["circuit_key"] + "/circuit.json"))
    images_root = ctx.store.local_path(refs["images_key"])
    references = opts.pop("references", None)
    source = opts.pop("activations", "recorded")
    activations = None
    if source == "model":
        from neurflow.labeler.evaluation.evaluate import ModelActivations
        from neurflow.labeler.patches import PatchLoader

        model = ctx.model(refs["model_id"], refs["arch"], refs["num_classes"], refs["weights_key"])
        activations = ModelActivations(model, PatchLoader(circuit, images_root), circuit.model.input_size,
                                       circuit.model.mean, circuit.model.std)
    report = evaluate_circuit(circuit, images_root, References(source="request", labels=references) if references else None,
                              activations=activations, options=EvaluationOptions(**opts), progress=progress)
    return msgspec.to_builtins(report)


TASKS: dict[str, Callable[[dict[str, Any], TaskContext, Progress], dict[str, Any]]] = {
    "run": run, "relabel": relabel, "debug": debug, "evaluate": evaluate,
}
