"""The job-spec document: what ``neurflow run SPEC.json`` and ``POST /v1/jobs`` accept.

One Struct tree validated by msgspec (unknown keys are errors); its JSON Schema is committed as
``schemas/jobspec.schema.json`` and generated from these Structs. The ``engine`` section is the
engine's own :class:`~neurflow.core.params.EngineParams`, ``data`` extends its
:class:`~neurflow.core.params.ImageSelection` (the parameters are listed once, in ``params``), and
``labeling`` is the :class:`~neurflow.core.circuit.LabelingSettings` that a labeled circuit records.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from .circuit import LabelingSettings
from .params import EngineParams, ImageSelection, PositiveInt


class ModelSpec(msgspec.Struct, forbid_unknown_fields=True):
    arch: str  # "torchvision:resnet18", "timm:resnet18", or a bare torchvision name
    weights: str  # path to a .safetensors state_dict (relative to the spec file), or a model id in the service
    num_classes: PositiveInt
    input_size: PositiveInt
    # left out: published weights' own normalisation, else ImageNet's with a NormalisationWarning
    mean: Annotated[list[float], msgspec.Meta(min_length=3, max_length=3)] | None = None
    std: Annotated[list[Annotated[float, msgspec.Meta(gt=0)]], msgspec.Meta(min_length=3, max_length=3)] | None = None
    class_names: list[str] | str | None = None  # a list, "builtin:imagenet1k", or None (published weights' own)

    def normalisation(self) -> tuple[list[float], list[float]]:
        """The (mean, std) images are normalised with: the spec's; where left out, the published
        weights' own (``weights`` names them), else ImageNet's, with a :class:`NormalisationWarning`
        naming the values, since a model trained otherwise would then read wrong inputs silently."""
        from .class_names import IMAGENET_MEAN, IMAGENET_STD
        from .pretrained import is_pretrained_tag, pretrained_meta

        if self.mean is not None and self.std is not None:
            return list(self.mean), list(self.std)
        if is_pretrained_tag(self.weights):
            meta = pretrained_meta(self.arch, self.weights)
            return list(self.mean or meta.mean), list(self.std or meta.std)
        mean, std = list(self.mean or IMAGENET_MEAN), list(self.std or IMAGENET_STD)
        left_out = [f"model.{k}" for k in ("mean", "std") if getattr(self, k) is None]
        warnings.warn(imagenet_default_message(left_out, "the spec", mean, std, self.arch), NormalisationWarning,
                      stacklevel=2)
        return mean, std


def imagenet_default_message(left_out: list[str], where: str, mean: list[float], std: list[float], arch: str) -> str:
    """What a caller is told when ``left_out`` (mean, std) became ImageNet's: the CLI's warning and the
    service's upload answer say it the same way."""
    return (f"{' and '.join(left_out)} left out of {where}: normalising the images with mean {mean} and std {std} "
            f"(ImageNet's); set them to the normalisation {arch} was trained with")


class NormalisationWarning(UserWarning):
    """A job spec leaves out model.mean or model.std and the weights do not say theirs."""


#: The most target classes one job may list (a batch job of a whole model: ``"all"`` of up to this many)
MAX_TARGET_CLASSES = 10000


class DataSpec(ImageSelection, forbid_unknown_fields=True):
    images: str  # folder searched recursively for PNG/JPEG (or a dataset id in the service)
    # one class, a list of classes, or "all" (every class of the model): one circuit per class
    target_class: int | Annotated[list[int], msgspec.Meta(min_length=1, max_length=MAX_TARGET_CLASSES)] | Literal["all"]


class JobSpec(msgspec.Struct, forbid_unknown_fields=True):
    model: ModelSpec
    data: DataSpec
    engine: EngineParams
    labeling: LabelingSettings | None = None  # labeler.config checks it further and resolves its paths

    def class_folder(self, out_dir: str | Path, target: int) -> Path:
        """Where a class's circuit folder goes under ``out_dir``: ``out_dir`` itself when the spec names one
        class, ``out_dir/class-<c>`` when it names a list or ``"all"`` (every command that writes a job's
        circuits uses this rule)."""
        return Path(out_dir) if isinstance(self.data.target_class, int) else Path(out_dir) / f"class-{target}"

    def target_classes(self) -> list[int]:
        tc = self.data.target_class
        if tc == "all":
            return list(range(self.model.num_classes))
        return list(tc) if isinstance(tc, list) else [tc]


def read_spec_file(path: str | Path, what: str) -> tuple[bytes, Path]:
    """A spec file's bytes and the folder its relative paths resolve against; unreadable: a clear error."""
    path = Path(path)
    try:
        return path.read_bytes(), path.resolve().parent
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror}") from None


def decode_spec(raw: bytes | str, type: Any, what: str) -> Any:
    """Decode and validate a JSON spec into ``type``; every problem becomes one ValueError naming it."""
    try:
        return msgspec.json.decode(raw, type=type)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid {what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None


def load_jobspec(path: str | Path) -> tuple[JobSpec, Path]:
    """Read and validate a spec file; return it with the folder relative paths resolve against."""
    raw, base = read_spec_file(path, "job spec")
    return parse_jobspec(raw), base


def parse_jobspec(raw: bytes | str) -> JobSpec:
    return decode_spec(raw, JobSpec, "job spec")


def json_schema() -> dict[str, Any]:
    schema = msgspec.json.schema(JobSpec)
    schema["title"] = "NeurFlow job spec"
    return schema
