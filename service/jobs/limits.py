"""What one request may cost: the bounds a job spec must keep over the API, and the estimated cost.

The engine's own parameter types (``core.params``) only say what is *valid* (``tau >= 1``); a server
also needs to say what is *affordable*, so one request cannot hold the only worker for hours or grow
it past the machine's memory. :data:`JobRequest` is the public job spec with upper bounds on every
size parameter; it is what ``POST /v1/jobs`` decodes, so the bounds are checked by msgspec and
appear in the OpenAPI document (``maximum``/``maxItems``). The same spec becomes the engine's
:class:`~neurflow.core.jobspec.JobSpec` right after decoding.

The bounds of the engine and data sections are tables over their fields (:data:`ENGINE_BOUNDS`,
:data:`DATA_BOUNDS`); the labeling section's are checked by :func:`check_labeling_bounds`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from neurflow.core.circuit import CaptionerSettings, LabelingSettings
from neurflow.core.jobspec import DataSpec, JobSpec
from neurflow.core.params import EngineParams

MAX_IG_STEPS = 4096
MAX_BATCH = 1024
MAX_MAP_CACHE_MB = 65536  # the worker's memory limit still applies below this
MAX_LAYERS = 32
MAX_TARGETS = 1000  # classes one job may run (a list, or "all" of the model's)


def _ints(lo: int, hi: int) -> Any:
    return Annotated[int, Meta(ge=lo, le=hi)]


_Count = _ints(1, 1000)
_Fraction = Annotated[float, Meta(gt=0, le=1)]
_Layer = Annotated[str, Meta(min_length=1, max_length=200)]

#: What the API accepts for the engine's size parameters: field of
#: :class:`~neurflow.core.params.EngineParams` -> its bounded type. Defaults and descriptions are
#: EngineParams' own; a field not listed keeps its type. ``layers`` is "auto" (resolved by the worker, once per
#: job: :mod:`neurflow.service.executors.stages`) or explicit names, checked against the model at submit.
ENGINE_BOUNDS: dict[str, Any] = {
    "layers": Literal["auto"] | Annotated[list[_Layer], Meta(min_length=2, max_length=MAX_LAYERS)],
    "tau": _ints(1, 4096),
    "top_n": _ints(1, 1000),
    "granularities": Annotated[list[_Fraction], Meta(min_length=1, max_length=8)],
    "stride_ratio": Annotated[float, Meta(ge=0.05, le=1)],
    "ig_patches": _ints(1, 1000) | None,
    "ig_steps": _ints(1, MAX_IG_STEPS) | None,
    "max_concepts": _ints(2, 50),
    "n_exemplars": _ints(1, 100),
    "n_groups": _Count | dict[_Layer, _Count] | None,
    "max_groups": _ints(2, 1000),
    "batch_size": _ints(1, MAX_BATCH) | None,
    "forward_batch_size": _ints(1, MAX_BATCH),
    "map_cache_mb": _ints(0, MAX_MAP_CACHE_MB) | None,
}
#: The same for the data section (:class:`~neurflow.core.jobspec.DataSpec`); ``target_class`` keeps the
#: job spec's own bounds (or "all").
DATA_BOUNDS: dict[str, Any] = {"max_images": _ints(1, 1_000_000) | None}


def bounded(name: str, kind: type[msgspec.Struct], bounds: dict[str, Any]) -> type[msgspec.Struct]:
    """A Struct ``name``: ``kind`` with the types of ``bounds`` in place of its own (same defaults, same descriptions)."""
    props = msgspec.json.schema(kind)["$defs"][kind.__name__]["properties"]
    fields = {f.name: f for f in msgspec.inspect.type_info(kind).fields}
    unknown = set(bounds) - set(fields)
    if unknown:
        raise ValueError(f"bounds for {sorted(unknown)}, which {kind.__name__} has no field for")
    new = []
    for field_name, bounded_type in bounds.items():
        field = fields[field_name]
        default = (field.default if field.default is not msgspec.NODEFAULT
                   else msgspec.field(default_factory=field.default_factory)
                   if field.default_factory is not msgspec.NODEFAULT else msgspec.NODEFAULT)
        new.append((field_name, Annotated[bounded_type, Meta(description=props[field_name].get("description", ""))],
                    default))
    return msgspec.defstruct(name, new, bases=(kind,), kw_only=True,
                             forbid_unknown_fields=True)


#: The engine section as the API accepts it: the engine's parameters with upper bounds.
EngineRequest = bounded("EngineRequest", EngineParams, ENGINE_BOUNDS)
DataRequest = bounded("DataRequest", DataSpec, DATA_BOUNDS)
#: The captioner as the API accepts it: the key of each endpoint is the operator's
#: (``policy.check_labeling`` and ``policy.submitted_spec`` refuse a request that names one).
CaptionerRequest = msgspec.defstruct("CaptionerRequest", [("api_key_env", msgspec.UnsetType | str | None, msgspec.UNSET)],
                                     bases=(CaptionerSettings,), frozen=True, forbid_unknown_fields=True)
LabelingRequest = msgspec.defstruct("LabelingRequest", [("captioner", CaptionerRequest | None, None)],
                                    bases=(LabelingSettings,), frozen=True, forbid_unknown_fields=True)
#: What ``POST /v1/jobs`` decodes: the job spec with bounded engine and data sections.
JobRequest = msgspec.defstruct("JobRequest", [("data", DataRequest), ("engine", EngineRequest),
                                              ("labeling", LabelingRequest | None, None)], bases=(JobSpec,),
                               forbid_unknown_fields=True)


def accepted(key: str) -> str | None:
    """What :data:`JobRequest` accepts at ``key`` (``engine.layers``), said from its own schema (so a refusal
    names what would have been accepted); None for a key it has no field for."""
    doc = msgspec.json.schema(JobRequest)
    defs = doc["$defs"]
    node: dict[str, Any] = doc
    for part in key.split("."):
        node = _deref(node, defs)
        props = node.get("properties") or next((_deref(o, defs).get("properties") for o in node.get("anyOf", [])
                                                if _deref(o, defs).get("properties")), None)
        if not props or part not in props:
            return None
        node = props[part]
    return _said(node, defs)


def _deref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    return defs[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node


def _said(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """A JSON-schema node in words: '"auto" or a list of 2 to 32 items (each a text of 1 to 200 characters)'."""
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        return " or ".join(_said(o, defs) for o in options)
    if "enum" in node:
        return " or ".join(msgspec.json.encode(v).decode() for v in node["enum"])
    if "$ref" in node:
        return "an object"
    kind = node.get("type")
    lo = node.get("minimum", node.get("exclusiveMinimum"))
    hi = node.get("maximum", node.get("exclusiveMaximum"))
    if kind in ("integer", "number"):
        name = "an integer" if kind == "integer" else "a number"
        low = "" if lo is None else f" {'above' if 'exclusiveMinimum' in node else 'from'} {lo:g}"
        high = "" if hi is None else f" {'below' if 'exclusiveMaximum' in node else 'up to'} {hi:g}"
        return name + low + high
    if kind == "array":
        n_lo, n_hi = node.get("minItems", 0), node.get("maxItems")
        count = f"{n_lo} to {n_hi}" if n_hi is not None else f"at least {n_lo}"
        items = f" (each {_said(node['items'], defs)})" if node.get("items") else ""
        return f"a list of {count} items{items}"
    if kind == "string":
        n_lo, n_hi = node.get("minLength"), node.get("maxLength")
        return "a text" + (f" of {n_lo} to {n_hi} characters" if n_lo is not None and n_hi is not None else "")
    return {"null": "null", "boolean": "true or false", "object": "an object"}.get(kind, "a value")


def to_jobspec(request: msgspec.Struct) -> JobSpec:
    """The engine's plain job spec (the stored job holds no service types)."""
    return msgspec.convert(msgspec.to_builtins(request), JobSpec)


def patches_per_image(granularities: list[float], stride_ratio: float) -> int:
    """Patches the engine cuts from one image: per granularity, a grid of side ``(1-g)/(g*stride)+1``."""
    return sum((int((1 - g) / (g * stride_ratio) + 1e-9) + 1) ** 2 for g in granularities)


def estimated_cost(spec: JobSpec, n_images: int, model_layers: int = MAX_LAYERS) -> int:
    """Integrated-Gradients sample passes of a run: images x targets x patches x steps x layer pairs.

    An upper bound (``select: predicted`` usually keeps fewer images); it is what grows a run's time.
    ``layers: "auto"`` is only resolved by the worker (a calibration on its machine), so it counts as the
    longest list it could be: every one of the model's ``model_layers`` addressable layers, at most
    :data:`MAX_LAYERS`.
    """
    engine = spec.engine.resolved()
    steps = engine.ig_steps
    images = min(n_images, spec.data.max_images or n_images)
    n_layers = min(model_layers, MAX_LAYERS) if engine.layers == "auto" else len(engine.layers)
    return (images * len(spec.target_classes()) * patches_per_image(engine.granularities, engine.stride_ratio)
            * steps * max(1, n_layers - 1))


#: Upper bounds of the labeling section (and its captioner), checked by the service at submit.
LABELING_BOUNDS: dict[str, int | float] = {"batch_size": MAX_BATCH, "vocabulary": 50_000, "templates": 100}
CAPTIONER_BOUNDS: dict[str, int | float] = {"timeout_s": 300.0}
MAX_TEXT = 300  # characters of one concept or template


def check_labeling_bounds(config: LabelingSettings) -> str | None:
    """What is over a bound in a validated labeling section, or None."""
    if config.batch_size > LABELING_BOUNDS["batch_size"]:
        return f"labeling.batch_size is {config.batch_size}; at most {LABELING_BOUNDS['batch_size']} is accepted"
    for field, value in (("vocabulary", config.vocabulary), ("templates", config.templates)):
        if isinstance(value, list):
            if len(value) > LABELING_BOUNDS[field]:
                return f"labeling.{field} has {len(value)} entries; at most {LABELING_BOUNDS[field]} are accepted"
            if any(not isinstance(v, str) or len(v) > MAX_TEXT for v in value):
                return f"labeling.{field} entries are text of at most {MAX_TEXT} characters"
    cap = config.captioner
    if cap is not None and cap.timeout_s > CAPTIONER_BOUNDS["timeout_s"]:
        return f"labeling.captioner.timeout_s is {cap.timeout_s}; at most {CAPTIONER_BOUNDS['timeout_s']} s is accepted"
    return None
