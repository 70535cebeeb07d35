"""The job-spec document: what ``neurflow run SPEC.json`` and ``POST /v1/jobs`` accept.

One Struct tree validated by msgspec (unknown keys are errors); its JSON Schema is committed as
``schemas/jobspec.schema.json`` and generated from these Structs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]

#: Parameters of the fast preset. Validated against the exact preset by ``make bench``
#: (mean per-layer Jaccard of core-neuron sets); see README "Speed".
FAST_PRESET: dict[str, Any] = {"ig_steps": 8, "batch_size": 16}


class ModelSpec(msgspec.Struct, forbid_unknown_fields=True):
    arch: str  # "torchvision:resnet18", "timm:resnet18", or a bare torchvision name
    weights: str  # path to a .safetensors state_dict (relative to the spec file), or a model id in the service
    num_classes: PositiveInt
    input_size: PositiveInt
    mean: Annotated[list[float], msgspec.Meta(min_length=3, max_length=3)] = msgspec.field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: Annotated[list[float], msgspec.Meta(min_length=3, max_length=3)] = msgspec.field(default_factory=lambda: [0.229, 0.224, 0.225])
    class_names: list[str] | None = None


class DataSpec(msgspec.Struct, forbid_unknown_fields=True):
    images: str  # folder searched recursively for PNG/JPEG (or a dataset id in the service)
    target_class: int | list[int]
    select: Literal["predicted", "all"] = "predicted"
    max_images: PositiveInt | None = None  # keep at most this many selected images (sorted path order)


class EngineSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    layers: Annotated[list[str], msgspec.Meta(min_length=2)]
    tau: PositiveInt | msgspec.UnsetType = msgspec.UNSET
    top_n: PositiveInt | msgspec.UnsetType = msgspec.UNSET
    granularities: list[Annotated[float, msgspec.Meta(gt=0, le=1)]] | msgspec.UnsetType = msgspec.UNSET
    stride_ratio: Annotated[float, msgspec.Meta(gt=0, le=1)] | msgspec.UnsetType = msgspec.UNSET
    ig_steps: PositiveInt | msgspec.UnsetType = msgspec.UNSET
    seed: int | msgspec.UnsetType = msgspec.UNSET
    reference_compat: bool | msgspec.UnsetType = msgspec.UNSET
    acceptable_error_range: float | msgspec.UnsetType = msgspec.UNSET
    max_concepts: Annotated[int, msgspec.Meta(ge=2)] | msgspec.UnsetType = msgspec.UNSET
    allow_single_concept: bool | msgspec.UnsetType = msgspec.UNSET
    n_exemplars: PositiveInt | msgspec.UnsetType = msgspec.UNSET
    n_groups: PositiveInt | dict[str, PositiveInt] | None | msgspec.UnsetType = msgspec.UNSET
    max_groups: Annotated[int, msgspec.Meta(ge=2)] | msgspec.UnsetType = msgspec.UNSET
    token_reduce: Literal["mean", "cls"] | msgspec.UnsetType = msgspec.UNSET
    batch_size: PositiveInt | msgspec.UnsetType = msgspec.UNSET
    device: str | msgspec.UnsetType = msgspec.UNSET
    preset: Literal["exact", "fast"] = "exact"

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`core.engine.NeurFlow`: preset first, explicit values win."""
        kwargs: dict[str, Any] = dict(FAST_PRESET) if self.preset == "fast" else {}
        for field in self.__struct_fields__:
            value = getattr(self, field)
            if field != "preset" and value is not msgspec.UNSET:
                kwargs[field] = value
        if "granularities" in kwargs:
            kwargs["granularities"] = tuple(kwargs["granularities"])
        return kwargs


class JobSpec(msgspec.Struct, forbid_unknown_fields=True):
    model: ModelSpec
    data: DataSpec
    engine: EngineSpec
    labeling: dict[str, Any] | None = None  # validated by the labeler (see labeler.config)

    def target_classes(self) -> list[int]:
        tc = self.data.target_class
        return list(tc) if isinstance(tc, list) else [tc]


def load_jobspec(path: str | Path) -> tuple[JobSpec, Path]:
    """Read and validate a spec file; return it with the folder relative paths resolve against."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read job spec {path}: {exc.strerror}") from None
    return parse_jobspec(raw), path.resolve().parent


def parse_jobspec(raw: bytes | str) -> JobSpec:
    try:
        return msgspec.json.decode(raw, type=JobSpec)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid job spec: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"job spec is not valid JSON: {exc}") from None


def json_schema() -> dict[str, Any]:
    schema = msgspec.json.schema(JobSpec)
    schema["title"] = "NeurFlow job spec"
    return schema
