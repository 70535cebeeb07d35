"""A model upload: the descriptor (the JSON part of ``POST /v1/models``) and the weights checked against it.

Only safetensors are accepted. The header and the values are read here without loading a tensor
(:mod:`~neurflow.service.intake.weightfile`); the architecture is compared in the weight checker's
child process (:mod:`~neurflow.service.intake.weightcheck`), so the web process never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from neurflow.core.class_names import IMAGENET_MEAN, IMAGENET_STD
from neurflow.core.jobspec import imagenet_default_message
from neurflow.service.errors import Invalid
from neurflow.service.intake.weightcheck import WeightCheck, run_checker
from neurflow.service.intake.weightfile import check_finite, read_safetensors_index

Finite = Annotated[float, msgspec.Meta(gt=-1e6, lt=1e6)]
#: the most classes a registered model may have
MAX_CLASSES = 100_000


class ModelDescriptor(msgspec.Struct, forbid_unknown_fields=True):
    """The JSON part of ``POST /v1/models``."""

    arch: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    num_classes: Annotated[int, msgspec.Meta(ge=1, le=MAX_CLASSES)]
    input_size: Annotated[int, msgspec.Meta(ge=8, le=2048)]
    # Left out: ImageNet's, said in the upload's answer (a model trained otherwise reads wrong inputs).
    mean: Annotated[list[Finite], msgspec.Meta(min_length=3, max_length=3)] | None = None
    std: Annotated[list[Annotated[float, msgspec.Meta(gt=0, lt=1e6)]], msgspec.Meta(min_length=3, max_length=3)] | None = None
    class_names: list[Annotated[str, msgspec.Meta(max_length=200)]] | None = None
    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None


def parse_descriptor(raw: str | bytes) -> tuple[ModelDescriptor, list[str]]:
    """The descriptor with its normalisation filled in, and the warnings for what was filled."""
    try:
        desc = msgspec.json.decode(raw, type=ModelDescriptor)
    except msgspec.ValidationError as exc:
        raise Invalid(f"invalid model descriptor: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Invalid(f"the model descriptor is not valid JSON: {exc}") from None
    if desc.class_names is not None and len(desc.class_names) != desc.num_classes:
        raise Invalid(f"class_names has {len(desc.class_names)} names but num_classes is {desc.num_classes}")
    left_out = [k for k in ("mean", "std") if getattr(desc, k) is None]
    if not left_out:
        return desc, []
    desc = msgspec.structs.replace(desc, mean=desc.mean or list(IMAGENET_MEAN), std=desc.std or list(IMAGENET_STD))
    return desc, [imagenet_default_message(left_out, "the descriptor", desc.mean, desc.std, desc.arch)]


def check_weights(path: str | Path, desc: ModelDescriptor) -> list[tuple[str, tuple[int, ...]]]:
    """Verify the weights fit ``desc.arch`` exactly; return the model's addressable layers.

    The header and the values are checked here; the architecture (torch, on the ``meta`` device) in a
    child process (:mod:`neurflow.service.intake.weightcheck`), so the web process never imports torch
    and an architecture that misbehaves cannot take it down.
    """
    read_safetensors_index(path)
    check_finite(path)
    verdict = run_checker(WeightCheck(path=str(path), arch=desc.arch, num_classes=desc.num_classes,
                                      input_size=desc.input_size))
    if verdict.problem is not None:
        raise Invalid(verdict.problem)
    return [(name, tuple(shape)) for name, shape in verdict.layers or []]
