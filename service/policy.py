"""What a job submitted over the API may ask for, beyond the job-spec schema.

* model and dataset are ids of the caller's own objects; arch, classes and input size must agree
  with the registered model (its descriptor, mean and std are what the job uses);
* target classes exist, engine layers are addressable layer names of the model;
* the ``labeling`` section is validated by the labeler, and any file it names must lie under the
  server's asset folders (``asset_dirs``), so a job cannot read arbitrary server files; an
  OpenAI-compatible captioner may only call URLs the operator listed (``captioner_urls``),
  so the server's API key cannot be sent elsewhere.

The public job spec becomes the internal typed job (:class:`~neurflow.service.jobtypes.RunJob`) here,
once, at submit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from neurflow.core.jobspec import JobSpec
from neurflow.labeler.config import LabelerConfig, local_dir
from neurflow.service.catalog import Catalog
from neurflow.service.errors import Invalid, NotFound
from neurflow.service.jobtypes import CircuitRef, DatasetRef, ModelRef, RunJob
from neurflow.service.settings import Settings


def _inside(path: Path, roots: list[Path]) -> bool:
    try:
        resolved = path.resolve()
    except OSError:
        return False
    return any(resolved == r or r in resolved.parents for r in roots)


def check_labeling(labeling: dict[str, Any], settings: Settings) -> LabelerConfig:
    """Validate a labeling section for the service; return it with asset paths made absolute."""
    roots = settings.asset_paths
    try:
        config = LabelerConfig.from_spec(labeling, base_dir=roots[0])
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    # Files: anything that is not a builtin name must lie in an asset folder. A bare clip.pretrained
    # name is a pretrained tag (workers run in an empty folder, so it never reads a file).
    files: list[tuple[str, str | None]] = [
        ("labeling.clip.model_config", config.clip.model_config),
        ("labeling.clip.model", local_dir(config.clip.model)),
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
        allowed = [u.rstrip("/") for u in settings.captioner_urls]
        if (cap.base_url or "").rstrip("/") not in allowed:
            raise Invalid("labeling.captioner.base_url is not allowed on this server; the operator lists allowed "
                          "OpenAI-compatible endpoints in captioner_urls")
    if config.clip.device != "cpu" and not any(d.startswith("cuda") for d in settings.device_list()):
        raise Invalid(f"labeling.clip.device {config.clip.device!r} is not available; this server runs on CPU")
    return config


def model_ref(model: dict[str, Any]) -> ModelRef:
    """The typed reference to a catalog model record."""
    desc = model["descriptor"]
    return ModelRef(id=model["id"], arch=desc["arch"], num_classes=desc["num_classes"])


def circuit_ref(row: dict[str, Any]) -> CircuitRef:
    """The typed reference to a catalog circuit record."""
    return CircuitRef(id=row["id"], key=row["key"], model_id=row["model_id"])


def prepare_run(spec: JobSpec, catalog: Catalog, settings: Settings, owner: str) -> RunJob:
    """Check a job spec against the caller's objects; return the job to store."""
    model_id, dataset_id = spec.model.weights, spec.data.images
    try:
        model = catalog.get_model(owner, model_id)
    except NotFound:
        raise Invalid(f"model.weights must be the id of one of your models; {model_id!r} is not "
                      "(upload with POST /v1/models first)") from None
    try:
        catalog.get_dataset(owner, dataset_id)
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
    # the registered model's normalisation and class names are what the job uses
    registered = msgspec.structs.replace(spec.model, mean=list(desc["mean"]), std=list(desc["std"]),
                                         class_names=desc.get("class_names"))
    labeling = check_labeling(spec.labeling, settings) if spec.labeling is not None else None
    return RunJob(spec=msgspec.structs.replace(spec, model=registered), model=model_ref(model),
                  dataset=DatasetRef(id=dataset_id), labeling=labeling)
