"""What one request may cost: the bounds a job spec must keep over the API, and the estimated cost.

The engine's own parameter types (``core.params``) only say what is *valid* (``tau >= 1``); a server
also needs to say what is *affordable*, so one request cannot hold the only worker for hours or grow
it past the machine's memory. :data:`JobRequest` is the public job spec with upper bounds on every
size parameter; it is what ``POST /v1/jobs`` decodes, so the bounds are checked by msgspec and
appear in the OpenAPI document (``maximum``/``maxItems``). The same spec becomes the engine's
:class:`~neurflow.core.jobspec.JobSpec` right after decoding.

The labeling section is a free-form object in the job spec (validated by the labeler), so its
bounds are checked by :func:`check_labeling_bounds`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from neurflow.core.jobspec import DataSpec, JobSpec
from neurflow.core.params import PRESETS, EngineParams

MAX_IG_STEPS = 4096
MAX_BATCH = 1024
MAX_MAP_CACHE_MB = 65536  # the worker's memory limit still applies below this
MAX_LAYERS = 32
MAX_TARGETS = 1000  # classes one job may run (a list, or "all" of the model's)


def _described(kind: type[msgspec.Struct]) -> dict[str, str]:
    props = msgspec.json.schema(kind)["$defs"][kind.__name__]["properties"]
    return {name: prop.get("description", "") for name, prop in props.items()}


_ENGINE_DOC = _described(EngineParams)
_DATA_DOC = _described(DataSpec)


def _int(doc: str, lo: int, hi: int) -> Any:
    return Annotated[int, Meta(ge=lo, le=hi, description=doc)]


def _opt_int(doc: str, lo: int, hi: int) -> Any:
    return Annotated[Annotated[int, Meta(ge=lo, le=hi)] | None, Meta(description=doc)]


_Count = Annotated[int, Meta(ge=1, le=1000)]
_Fraction = Annotated[float, Meta(gt=0, le=1)]
_Layer = Annotated[str, Meta(min_length=1, max_length=200)]

_ENGINE_FIELDS = [
    ("layers", Annotated[list[_Layer], Meta(min_length=2, max_length=MAX_LAYERS, description=_ENGINE_DOC["layers"])],
     msgspec.NODEFAULT),
    ("tau", _int(_ENGINE_DOC["tau"], 1, 4096), 16),
    ("top_n", _int(_ENGINE_DOC["top_n"], 1, 1000), 50),
    ("granularities", Annotated[list[_Fraction], Meta(min_length=1, max_length=8, description=_ENGINE_DOC["granularities"])],
     msgspec.field(default_factory=lambda: [1.0, 0.5, 0.25])),
    ("stride_ratio", Annotated[float, Meta(ge=0.05, le=1, description=_ENGINE_DOC["stride_ratio"])], 0.5),
    ("ig_steps", _opt_int(_ENGINE_DOC["ig_steps"], 1, MAX_IG_STEPS), None),
    ("max_concepts", _int(_ENGINE_DOC["max_concepts"], 2, 50), 5),
    ("n_exemplars", _int(_ENGINE_DOC["n_exemplars"], 1, 100), 5),
    ("n_groups", Annotated[_Count | dict[_Layer, _Count] | None, Meta(description=_ENGINE_DOC["n_groups"])], None),
    ("max_groups", _int(_ENGINE_DOC["max_groups"], 2, 1000), 100),
    ("batch_size", _opt_int(_ENGINE_DOC["batch_size"], 1, MAX_BATCH), None),
    ("forward_batch_size", _int(_ENGINE_DOC["forward_batch_size"], 1, MAX_BATCH), 32),
    ("map_cache_mb", _opt_int(_ENGINE_DOC["map_cache_mb"], 0, MAX_MAP_CACHE_MB), None),
]

#: The engine section as the API accepts it: the engine's parameters with upper bounds.
EngineRequest = msgspec.defstruct("EngineRequest", _ENGINE_FIELDS, bases=(EngineParams,), kw_only=True,
                                  forbid_unknown_fields=True)
DataRequest = msgspec.defstruct("DataRequest", [  # target_class keeps the job spec's own bounds (or "all")
    ("max_images", _opt_int(_DATA_DOC["max_images"], 1, 1_000_000), None),
], bases=(DataSpec,), kw_only=True, forbid_unknown_fields=True)
#: What ``POST /v1/jobs`` decodes: the job spec with bounded engine and data sections.
JobRequest = msgspec.defstruct("JobRequest", [("data", DataRequest), ("engine", EngineRequest)], bases=(JobSpec,),
                               forbid_unknown_fields=True)


def to_jobspec(request: msgspec.Struct) -> JobSpec:
    """The engine's plain job spec (the stored job holds no service types)."""
    return msgspec.convert(msgspec.to_builtins(request), JobSpec)


def patches_per_image(granularities: list[float], stride_ratio: float) -> int:
    """Patches the engine cuts from one image: per granularity, a grid of side ``(1-g)/(g*stride)+1``."""
    return sum((int((1 - g) / (g * stride_ratio) + 1e-9) + 1) ** 2 for g in granularities)


def estimated_cost(spec: JobSpec, n_images: int) -> int:
    """Integrated-Gradients sample passes of a run: images x targets x patches x steps x layer pairs.

    An upper bound (``select: predicted`` usually keeps fewer images); it is what grows a run's time.
    """
    engine = spec.engine
    steps = engine.ig_steps or PRESETS[engine.preset]["ig_steps"]
    images = min(n_images, spec.data.max_images or n_images)
    return (images * len(spec.target_classes()) * patches_per_image(engine.granularities, engine.stride_ratio)
            * steps * max(1, len(engine.layers) - 1))


#: Upper bounds of the labeling section (and its captioner), checked by the service at submit.
LABELING_BOUNDS: dict[str, int | float] = {"batch_size": MAX_BATCH, "vocabulary": 50_000, "templates": 100}
CAPTIONER_BOUNDS: dict[str, int | float] = {"timeout_s": 300.0}
MAX_TEXT = 300  # characters of one concept or template


def check_labeling_bounds(config: Any) -> str | None:
    """What is over a bound in a validated labeling section, or None."""
    if config.batch_size > LABELING_BOUNDS["batch_size"]:
        return f"labeling.batch_size is {config.batch_size}; at most {LABELING_BOUNDS['batch_size']} is accepted"
    for field in ("vocabulary", "templates"):
        value = getattr(config, field)
        if isinstance(value, list):
            if len(value) > LABELING_BOUNDS[field]:
                return f"labeling.{field} has {len(value)} entries; at most {LABELING_BOUNDS[field]} are accepted"
            if any(not isinstance(v, str) or len(v) > MAX_TEXT for v in value):
                return f"labeling.{field} entries are text of at most {MAX_TEXT} characters"
    cap = config.captioner
    if cap is not None and cap.timeout_s > CAPTIONER_BOUNDS["timeout_s"]:
        return f"labeling.captioner.timeout_s is {cap.timeout_s}; at most {CAPTIONER_BOUNDS['timeout_s']} s is accepted"
    return None
