"""What a job submitted over the API may ask for, beyond the job-spec schema.

* model and dataset are ids of the caller's own objects; arch, classes and input size must agree
  with the registered model (its descriptor, mean and std are what the job uses);
* target classes exist, engine layers are addressable layer names of the model;
* the ``labeling`` section is validated by the labeler, and any file it names must lie under the
  server's asset folders (``asset_dirs``), so a job cannot read arbitrary server files; an
  OpenAI-compatible captioner may only call URLs the operator listed (``captioner_urls``),
  so the server's API key cannot be sent elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from neurflow.core.jobspec import JobSpec
from neurflow.service.api.datasets import images_key
from neurflow.service.api.models import weights_key
from neurflow.service.deps import Services
from neurflow.service.errors import Invalid, NotFound


def _inside(path: Path, roots: list[Path]) -> bool:
    try:
        resolved = path.resolve()
    except OSError:
        return False
    return any(resolved == r or r in resolved.parents for r in roots)


def check_labeling(labeling: dict[str, Any], svc: Services) -> dict[str, Any]:
    """Validate a labeling section for the service; return it with asset paths made absolute."""
    try:
        from neurflow.labeler.config import LabelerConfig
    except ImportError:  # pragma: no cover - the labeler ships with the service
        raise Invalid("labeling is not available on this server") from None
    roots = svc.settings.asset_paths
    try:
        config = LabelerConfig.from_spec(labeling, base_dir=roots[0])
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    # Files: anything that is not a builtin name must lie in an asset folder. A bare clip.pretrained
    # name is a pretrained tag (workers run in an empty folder, so it never reads a file).
    files: list[tuple[str, str | None]] = [
        ("labeling.clip.model_config", config.clip.model_config),
        ("labeling.clip.model", config.clip.model[len("local-dir:"):] if config.clip.model.startswith("local-dir:") else None),
        ("labeling.vocabulary", config.vocabulary if isinstance(config.vocabulary, str)
         and not config.vocabulary.startswith("builtin:") else None),
        ("labeling.templates", config.templates if isinstance(config.templates, str)
         and not config.templates.startswith("builtin:") else None),
    ]
    pretrained = config.clip.pretrained
    if pretrained and ("/" in pretrained or "\\" in pretrained or Path(pretrained).suffix or pretrained.startswith((".", "~"))):
        files.append(("labeling.clip.pretrained", pretrained))
    cap = config.captioner
    if cap is not None and cap.backend == "transformers":
        files.append(("labeling.captioner.model", cap.model))
    for field, value in files:
        if value and not _inside(Path(value).expanduser(), roots):
            raise Invalid(f"{field}: {value!r} is not in the server's asset folders; put CLIP weights, model "
                          "configs and vocabularies there and name them relative to it")
    if cap is not None and cap.backend == "openai":
        allowed = [u.rstrip("/") for u in svc.settings.captioner_urls]
        if (cap.base_url or "").rstrip("/") not in allowed:
            raise Invalid("labeling.captioner.base_url is not allowed on this server; the operator lists allowed "
                          "OpenAI-compatible endpoints in captioner_urls")
    if config.clip.device != "cpu" and not any(d.startswith("cuda") for d in svc.settings.device_list()):
        raise Invalid(f"labeling.clip.device {config.clip.device!r} is not available; this server runs on CPU")
    return msgspec.to_builtins(config)


def prepare_run(spec: JobSpec, svc: Services, owner: str) -> dict[str, Any]:
    """Check a job spec against the caller's objects; return the stored job document."""
    model_id, dataset_id = spec.model.weights, spec.data.images
    try:
        model = svc.catalog.get_model(owner, model_id)
    except NotFound:
        raise Invalid(f"model.weights must be the id of one of your models; {model_id!r} is not "
                      "(upload with POST /v1/models first)") from None
    try:
        dataset = svc.catalog.get_dataset(owner, dataset_id)
    except NotFound:
        raise Invalid(f"data.images must be the id of one of your datasets; {dataset_id!r} is not "
                      "(upload with POST /v1/datasets first)") from None
    desc = model["descriptor"]
    for field in ("arch", "num_classes", "input_size"):
        if getattr(spec.model, field) != desc[field]:
            raise Invalid(f"model.{field} is {getattr(spec.model, field)!r} but model {model_id[:12]}… was "
                          f"registered with {desc[field]!r}")
    for c in spec.target_classes():
        if not 0 <= c < desc["num_classes"]:
            raise Invalid(f"data.target_class {c} is out of range; the model has {desc['num_classes']} classes")
    if len(set(spec.target_classes())) != len(spec.target_classes()):
        raise Invalid("data.target_class lists a class twice")
    layer_names = [name for name, _ in model["layers"]]
    for layer in spec.engine.layers:
        if layer not in layer_names:
            raise Invalid(f"engine.layers: {layer!r} is not a layer of {desc['arch']}; addressable layers are listed "
                          f"by GET /v1/models/{model_id}")
    doc = msgspec.to_builtins(spec)
    doc["model"].update({"mean": desc["mean"], "std": desc["std"], "class_names": desc.get("class_names")})
    if spec.labeling is not None:
        doc["labeling"] = check_labeling(spec.labeling, svc)
    return {"job": doc, "refs": {"model_id": model_id, "dataset_id": dataset_id, "weights_key": weights_key(model_id),
                                 "images_key": images_key(dataset_id), "dataset_images": dataset["n_images"]}}
