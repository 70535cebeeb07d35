"""Class names of a model's outputs: given in the spec, built in (``builtin:imagenet1k``), or read
from the metadata of published weights.

The built-in lists live in ``core/classes/`` (one name a line in class-index order, ``#`` comments
skipped); the labeler's ``builtin:imagenet1k`` vocabulary reads the same file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

CLASS_LIST_DIR = Path(__file__).parent / "classes"

#: Normalisation of ImageNet-trained models: the default for 1000-class torchvision/timm models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def builtin_class_lists() -> list[str]:
    return sorted(p.stem for p in CLASS_LIST_DIR.glob("*.txt"))


def read_class_list(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def builtin_class_names(spec: str) -> list[str]:
    """``builtin:NAME`` -> the class list ``core/classes/NAME.txt``."""
    name = spec.split(":", 1)[1] if spec.startswith("builtin:") else spec
    path = CLASS_LIST_DIR / f"{name}.txt"
    if not path.is_file():
        raise ValueError(f"unknown built-in class list {spec!r}; built-ins are "
                         f"{', '.join('builtin:' + n for n in builtin_class_lists())}")
    return read_class_list(path)


def resolve_class_names(value: list[str] | str | None, num_classes: int, arch: str | None = None,
                        weights: str | None = None) -> list[str] | None:
    """The spec's ``class_names`` (a list or ``builtin:NAME``), else those of published weights named
    by ``weights`` (a torchvision weights enum / timm tag), else None. The count must match."""
    if isinstance(value, str):
        names = builtin_class_names(value)
    elif value is not None:
        names = list(value)
    else:
        from .pretrained import is_pretrained_tag, pretrained_meta

        if arch is None or not is_pretrained_tag(weights):
            return None
        names = pretrained_meta(arch, weights).class_names
        if names is None:
            return None
    _check_count(names, num_classes)
    return names


def _check_count(names: Sequence[str], num_classes: int) -> None:
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names but the model has {num_classes} classes")


def class_folder_names(model_names: Sequence[str] | None, num_classes: int, circuits) -> list[str | None]:
    """By class index, the folder name that marks an image as the class's: the model's class names (one per
    class), else the names the circuits give their targets (None for a class no circuit names)."""
    if model_names is not None:
        _check_count(model_names, num_classes)
        return list(model_names)
    known = {c.target.class_index: c.target.name for c in circuits if c.target.name}
    return [known.get(i) for i in range(num_classes)]
