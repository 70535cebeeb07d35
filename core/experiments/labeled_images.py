"""Images with their true class: a folder per class, or a CSV of ``path,label`` rows.

The fidelity experiments need the images whose *true* label is the class, not only those the model
predicts as it; a plain image folder says nothing about labels, so they come from the layout.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path, PurePosixPath

from ..images import ImageSet, Preprocess

_FOLDER_INDEX = re.compile(r"^(?:class[_-]?)?(\d+)(?:[_-].*)?$", re.IGNORECASE)

LABEL_LAYOUTS = ("a folder per class under the image folder, named as a class name, '<index>' or "
                 "'class_<index>[_anything]'; or a CSV of 'path,label' rows (labels_csv)")


def _label_of(text: str, class_names: list[str], num_classes: int, where: str) -> int:
    text = text.strip()
    if text in class_names:
        return class_names.index(text)
    found = _FOLDER_INDEX.match(text)
    if found and int(found.group(1)) < num_classes:
        return int(found.group(1))
    raise ValueError(f"{where}: cannot read a class from {text!r}; the model has {num_classes} classes. "
                     f"Accepted: {LABEL_LAYOUTS}")


def folder_labels(paths: list[str], class_names: list[str], num_classes: int) -> list[int]:
    """The class of each relative path from its first folder."""
    labels = []
    for p in paths:
        parts = PurePosixPath(p).parts
        if len(parts) < 2:
            raise ValueError(f"image {p!r} is not inside a class folder; accepted: {LABEL_LAYOUTS}")
        labels.append(_label_of(parts[0], class_names, num_classes, f"folder of {p!r}"))
    return labels


def csv_labels(csv_path: Path, paths: list[str], class_names: list[str], num_classes: int) -> list[int | None]:
    """The class of each relative path from a ``path,label`` CSV (a header row is optional);
    images the CSV does not list get ``None`` and take part in no experiment."""
    try:
        rows = list(csv.reader(csv_path.read_text().splitlines()))
    except OSError as exc:
        raise ValueError(f"cannot read labels CSV {csv_path}: {exc.strerror}") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    table: dict[str, int] = {}
    for n, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise ValueError(f"{csv_path} row {n}: expected 'path,label', got {row}")
        table[PurePosixPath(row[0].strip()).as_posix()] = _label_of(row[1], class_names, num_classes,
                                                                    f"{csv_path} row {n}")
    unknown = sorted(set(table) - set(paths))
    if unknown:
        raise ValueError(f"{csv_path}: {len(unknown)} listed image(s) not found under the image folder, "
                         f"e.g. {unknown[0]!r} (paths are relative to the image folder)")
    return [table.get(p) for p in paths]


def load_labeled_images(root: Path, preprocess: Preprocess, class_names: list[str], num_classes: int,
                        labels_csv: Path | None = None) -> ImageSet:
    images = ImageSet.from_folder(root, preprocess)
    if labels_csv is not None:
        images.labels = csv_labels(labels_csv, images.paths, class_names, num_classes)
    else:
        images.labels = folder_labels(images.paths, class_names, num_classes)
    return images


def images_of_class(images: ImageSet, label: int, limit: int | None = None) -> ImageSet:
    if images.labels is None:
        raise ValueError("these images carry no labels")
    keep = [i for i, lab in enumerate(images.labels) if lab == label]
    if not keep:
        counts = {c: images.labels.count(c) for c in sorted({x for x in images.labels if x is not None})}
        raise ValueError(f"no image has the true label {label}; images per label: {counts}")
    return images.subset(keep[:limit] if limit else keep)
