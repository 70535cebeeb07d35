"""What a job submitted over the API may ask for, beyond the job-spec schema.

* model and dataset are ids of the caller's own objects; arch, classes and input size must agree
  with the registered model (its descriptor, mean and std are what the job uses);
* target classes exist, engine layers are addressable layer names of the model (or "auto": the worker's
  choice, made once per job);
* the engine's device is the worker's, never the caller's (a job that moved a worker's cached model
  to ``meta`` would break every later job on those weights, of any key);
* the job's estimated cost (:func:`~neurflow.service.jobs.limits.estimated_cost`) is within
  ``max_job_cost``; the size parameters' bounds are in the request type (``limits.JobRequest``);
* the ``labeling`` section is validated by the labeler, and any name in it that becomes a path must
  resolve inside the server's asset folders (``<data_dir>/assets`` and ``asset_dirs``), so a job
  cannot read arbitrary server files; an OpenAI-compatible captioner may only call URLs the operator
  listed (``captioner_urls``), with the key the operator configured for that URL (``captioner_keys``).

The public job spec becomes the internal typed job (:class:`~neurflow.service.jobs.types.RunJob`) here,
once, at submit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from neurflow.core.circuit import LabelingSettings
from neurflow.core.jobspec import JobSpec
from neurflow.core.layer_shape import num_channels
from neurflow.labeler.config import LabelerConfig, local_dir
from neurflow.labeler.vocabulary import BUILTIN_TEMPLATES, builtin_vocabularies
from neurflow.prompts import available as available_prompts
from neurflow.service.errors import Invalid, NotFound
from neurflow.service.jobs.limits import (MAX_TARGETS, CaptionerRequest, JobRequest, check_labeling_bounds,
                                         estimated_cost, to_jobspec)
from neurflow.service.jobs.types import CircuitRef, DatasetRef, ModelRef, RunJob
from neurflow.service.settings import Settings
from neurflow.service.storage.catalog import Catalog


def _inside(path: Path, roots: list[Path]) -> bool:
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return False
    return any(resolved == r or r in resolved.parents for r in roots)


#: Names that are never paths: open_clip model names and pretrained tags, prompt ids.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}")


def _asset(field: str, value: str, roots: list[Path]) -> None:
    """A name the client sent that becomes a path must resolve inside an asset folder."""
    path = Path(value)
    if not path.is_absolute() or not _inside(path, roots) or not path.exists():
        # only the last part of the name: a relative name the labeler resolved (the file exists somewhere) and
        # one it could not must read the same, or the message tells which server files exist
        shown = path.name
        raise Invalid(f"{field}: {shown!r} is not a file or folder of the server's asset folders; put CLIP "
                      "weights, model configs, vocabularies and captioner folders there and name them relative "
                      "to it")


def _builtin(field: str, value: str, known: list[str]) -> None:
    if value.split(":", 1)[1] not in known:
        raise Invalid(f"{field}: unknown built-in {value!r}; built-ins are {['builtin:' + k for k in known]}")


def _refuse_client_key(labeling: LabelingSettings | None) -> None:
    cap = labeling.captioner if labeling is not None else None
    if isinstance(cap, CaptionerRequest) and cap.api_key_env is not msgspec.UNSET:
        raise Invalid("labeling.captioner.api_key_env is not accepted by the service: the key of each captioner "
                      "endpoint is configured by the operator (captioner_keys)")


def submitted_spec(request: JobRequest) -> JobSpec:  # type: ignore[valid-type]
    """The job spec of a ``POST /v1/jobs`` request (the stored job holds no service types)."""
    _refuse_client_key(request.labeling)
    return to_jobspec(request)


def check_labeling(labeling: LabelingSettings, settings: Settings) -> LabelerConfig:
    """Validate a labeling section for the service; return it with asset paths made absolute.

    Every name that becomes a path (vocabulary and template files, CLIP weights and configs,
    ``local-dir:`` bundles, captioner folders) resolves only inside the asset folders; names that are
    not paths (built-ins, pretrained tags, open_clip names, prompt ids) are plain names. The
    captioner's key is the operator's (``captioner_keys``), never the client's: a request
    (:data:`~neurflow.service.jobs.limits.LabelingRequest`) that names one is refused.
    """
    roots = settings.asset_paths
    _refuse_client_key(labeling)
    try:
        config = LabelerConfig.from_spec(labeling, base_dir=roots)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    over = check_labeling_bounds(config)
    if over:
        raise Invalid(over)
    for field, value, known in (("labeling.vocabulary", config.vocabulary, builtin_vocabularies()),
                                ("labeling.templates", config.templates, list(BUILTIN_TEMPLATES))):
        if isinstance(value, str):
            if value.startswith("builtin:"):
                _builtin(field, value, known)
            else:
                _asset(field, value, roots)
    for n, clip in enumerate(config.clips):  # every CLIP of a list passes the same checks as the first
        key = "labeling.clip" if n == 0 else f"labeling.extra_clips[{n - 1}]"
        folder = local_dir(clip.model)
        if folder is not None:
            _asset(f"{key}.model", folder, roots)
        elif not _PLAIN_NAME.fullmatch(clip.model) or ".." in clip.model:
            raise Invalid(f"{key}.model: {clip.model!r} is not an open_clip model name; use a name such as "
                          "'ViT-B-32', a name defined by model_config, or 'local-dir:FOLDER' in the asset folders")
        if clip.model_config is not None:
            _asset(f"{key}.model_config", clip.model_config, roots)
        pretrained = clip.pretrained
        if pretrained and not (_PLAIN_NAME.fullmatch(pretrained) and "." not in pretrained):
            _asset(f"{key}.pretrained", pretrained, roots)
        # Only the server's own devices: a CLIP moved to ``meta`` or a missing GPU would fail this job
        # and, through the worker's model cache, every later one on the same CLIP.
        allowed = sorted({"cpu", *settings.device_list()})
        if clip.device not in allowed:
            raise Invalid(f"{key}.device {clip.device!r} is not one of this server's devices; accepted: "
                          + ", ".join(repr(d) for d in allowed))
    cap = config.captioner
    if cap is not None:
        for field, prompt in (("prompt", cap.prompt), ("circuit_prompt", cap.circuit_prompt)):
            if prompt is not None and (prompt.split("@", 1)[0] not in available_prompts()
                                       or not _PLAIN_NAME.fullmatch(prompt)):
                raise Invalid(f"labeling.captioner.{field}: unknown prompt {prompt!r}; prompts are "
                              f"{sorted(available_prompts())}")
        if cap.backend == "transformers":
            _asset("labeling.captioner.model", cap.model, roots)
        else:
            allowed = {u.rstrip("/"): u for u in settings.captioner_urls}
            url = (cap.base_url or "").rstrip("/")
            if url not in allowed:
                raise Invalid("labeling.captioner.base_url is not allowed on this server; the operator lists allowed "
                              "OpenAI-compatible endpoints in captioner_urls")
            keys = {u.rstrip("/"): env for u, env in settings.captioner_keys.items()}
            config = msgspec.structs.replace(config, captioner=msgspec.structs.replace(cap, api_key_env=keys.get(url)))
    return config


def model_ref(model: dict[str, Any]) -> ModelRef:
    """The typed reference to a catalog model record."""
    desc = model["descriptor"]
    return ModelRef(id=model["id"], arch=desc["arch"], num_classes=desc["num_classes"])


def circuit_ref(row: dict[str, Any]) -> CircuitRef:
    """The typed reference to a catalog circuit record."""
    return CircuitRef(id=row["id"], key=row["key"], model_id=row["model_id"])


def _check_layers(spec: JobSpec, model: dict[str, Any], model_id: str) -> None:
    """Explicit ``engine.layers`` are addressable layers of the model, and the first one holds every target class."""
    desc = model["descriptor"]
    layer_names = [name for name, _ in model["layers"]]
    for layer in spec.engine.layers:
        if layer not in layer_names:
            raise Invalid(f"engine.layers: {layer!r} is not a layer of {desc['arch']}; addressable layers are listed "
                          f"by GET /v1/models/{model_id} (or send \"auto\" to let the server choose them)")
    # the first layer's channels are what a target class indexes (the logits when it is the output layer)
    top = spec.engine.layers[0]
    shape = dict(model["layers"])[top]
    channels = num_channels(shape)
    beyond = [c for c in spec.target_classes() if c >= channels]
    if beyond:
        raise Invalid(f"engine.layers[0] {top!r} has {channels} channels (shape {list(shape)}), so class {beyond[0]} "
                      f"of data.target_class cannot be traced from it ({len(beyond)} classes are beyond it); put the "
                      f"model's output layer ({model['layers'][-1][0]!r}) first")


def prepare_run(spec: JobSpec, catalog: Catalog, settings: Settings, owner: str) -> RunJob:
    """Check a job spec against the caller's objects; return the job to store."""
    model_id, dataset_id = spec.model.weights, spec.data.images
    try:
        model = catalog.get_model(owner, model_id)
    except NotFound:
        raise Invalid(f"model.weights must be the id of one of your models; {model_id!r} is not "
                      "(upload with POST /v1/models first)") from None
    try:
        dataset = catalog.get_dataset(owner, dataset_id)
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
    if len(spec.target_classes()) > MAX_TARGETS:  # "all" of a model with more classes than a job may fit
        raise Invalid(f"data.target_class \"all\" means {len(spec.target_classes())} classes; a job fits at most "
                      f"{MAX_TARGETS}: list the classes in several jobs")
    if spec.engine.device is not None:
        raise Invalid(f"engine.device {spec.engine.device!r} is not accepted: the device is the server's setting (each "
                      "worker runs on its own device); leave engine.device out")
    if spec.engine.layers != "auto":  # "auto" starts at the classifier; the worker picks the rest on its machine
        _check_layers(spec, model, model_id)
    cost = estimated_cost(spec, dataset["n_images"], len(model["layers"]))
    if cost > settings.max_job_cost:
        raise Invalid(f"the job would run about {cost:,} Integrated-Gradients sample passes (images x targets x "
                      f"patches x ig_steps x layer pairs); this server accepts at most {settings.max_job_cost:,} "
                      "per job: lower ig_steps, max_images, granularities or the number of targets")
    # the registered model's normalisation and class names are what the job uses
    registered = msgspec.structs.replace(spec.model, mean=list(desc["mean"]), std=list(desc["std"]),
                                         class_names=desc.get("class_names"))
    labeling = check_labeling(spec.labeling, settings) if spec.labeling is not None else None
    return RunJob(spec=msgspec.structs.replace(spec, model=registered), model=model_ref(model),
                  dataset=DatasetRef(id=dataset_id), labeling=labeling)
