"""What the file exports (CVAT, Datumaro, FiftyOne) share: label names, the exemplar patches cut out
of the source images, and the source images with their exemplar boxes.

Every exporter names a group by its top label (a person's correction, else ``labels[0].text``, see
:mod:`neurflow.core.group_label`), so one label name means the same thing in a CVAT tag, a Datumaro
category and a FiftyOne class. A group without labels is named ``"unlabeled <group id>"``: unique, and
visibly not a concept. Every format also carries the group's ``status`` and, for an uncertain group,
its two ``candidates`` (:func:`review_attributes`), so an annotation tool can show the labeler's doubt.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image

from neurflow.core.circuit import Circuit, Exemplar, Group
from neurflow.core.group_label import candidate_texts, top_text
from neurflow.exports.source import ExportSource

PATCHES_DIR = "patches"  # exemplar crops live under <images>/patches/<group id>/<k>.png
MOSAICS_DIR = "mosaics"  # per-group mosaics (only when the source images are gone but mosaics exist)


#: How the two candidates of an uncertain group are joined where a format takes one text attribute.
CANDIDATE_SEPARATOR = " | "


def top_label(group: Group) -> str:
    top = top_text(group)
    return top if top is not None else f"unlabeled {group.id}"


def review_attributes(group: Group) -> dict[str, str]:
    """``status`` and, for an uncertain group, ``candidates`` (its two best labels, joined by
    :data:`CANDIDATE_SEPARATOR`) as text attributes."""
    attributes = {"status": group.status}
    both = candidate_texts(group)
    if both:
        attributes["candidates"] = CANDIDATE_SEPARATOR.join(both)
    return attributes


def top_score(group: Group) -> float | None:
    return group.labels[0].score if group.labels else None


def label_names(circuit: Circuit) -> list[str]:
    """Every group's top label once, in circuit order (output layer first)."""
    names: list[str] = []
    for _, _, group in circuit.iter_groups():
        name = top_label(group)
        if name not in names:
            names.append(name)
    return names


def check_circuit(circuit: Circuit) -> None:
    """Exemplars must point at an image of the circuit and have a non-empty box; anything else is a
    corrupt document and is reported by group."""
    n = len(circuit.images)
    for _, _, group in circuit.iter_groups():
        for k, ex in enumerate(group.exemplars):
            if not 0 <= ex.image < n:
                raise ValueError(f"group {group.id} exemplar {k} refers to image {ex.image}; "
                                 f"the circuit has {n} image(s)")
            if len(ex.box) != 4 or ex.box[2] <= ex.box[0] or ex.box[3] <= ex.box[1]:
                raise ValueError(f"group {group.id} exemplar {k} has an empty or malformed box {ex.box}")
    for path in (PurePosixPath(ref.path) for ref in circuit.images):
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"image path {str(path)!r} must be relative to the data root, without '..'")
        if path.parts and path.parts[0] in (PATCHES_DIR, MOSAICS_DIR):
            raise ValueError(f"image path {str(path)!r} would collide with the export's {path.parts[0]}/ folder")


@dataclass
class GroupPicture:
    """One picture that stands for a group: an exemplar patch (``k`` = exemplar index) or, as a
    fallback, the group's mosaic (``k`` = None)."""

    layer_index: int
    layer: str
    group: Group
    k: int | None
    png: bytes
    width: int
    height: int

    @property
    def name(self) -> str:
        """Path relative to the export's image folder."""
        if self.k is None:
            return f"{MOSAICS_DIR}/{self.group.id}.png"
        return f"{PATCHES_DIR}/{self.group.id}/{self.k}.png"

    @property
    def exemplar(self) -> Exemplar | None:
        return None if self.k is None else self.group.exemplars[self.k]


@dataclass
class SourcePicture:
    """A source image and the exemplar boxes that lie on it: ``(layer index, layer, group, exemplar)``."""

    index: int
    name: str  # the circuit's relative path
    data: bytes
    width: int
    height: int
    boxes: list[tuple[int, str, Group, Exemplar]]


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def group_pictures(source: ExportSource, warnings: list[str]) -> list[GroupPicture]:
    """The exemplar patches of every group, cropped from the source images. Without source images,
    each group's rendered mosaic when there is one (the service keeps them); otherwise nothing, with
    a warning."""
    circuit = source.circuit
    check_circuit(circuit)
    pictures: list[GroupPicture] = []
    if not source.has_source_images:
        used_mosaics = 0
        for layer_index, layer, group in circuit.iter_groups():
            png = source.mosaic(group) if source.mosaics is not None else None
            if png is None:
                continue
            with Image.open(io.BytesIO(png)) as im:
                width, height = im.size
            pictures.append(GroupPicture(layer_index, layer.name, group, None, png, width, height))
            used_mosaics += 1
        warnings.append("source images are not available (pass --images DIR): exemplar patches and boxes on "
                        "source images are left out" + (f"; {used_mosaics} group mosaic(s) exported instead"
                                                         if used_mosaics else ""))
        return pictures

    missing: set[str] = set()
    for layer_index, layer, group in circuit.iter_groups():
        for k, ex in enumerate(group.exemplars):
            crop = source.crop(ex)
            if crop is None:
                missing.add(circuit.images[ex.image].path)
                continue
            pictures.append(GroupPicture(layer_index, layer.name, group, k, _png(crop), crop.width, crop.height))
    if missing:
        warnings.append(f"{len(missing)} source image(s) missing under {source.images_root}, their patches are "
                        f"left out: {', '.join(sorted(missing)[:5])}" + (" ..." if len(missing) > 5 else ""))
    return pictures


def source_pictures(source: ExportSource, warnings: list[str]) -> list[SourcePicture]:
    """Source images that carry at least one exemplar box, in image order, with their boxes. Empty
    (the caller has already warned through :func:`group_pictures`) without source images."""
    circuit = source.circuit
    check_circuit(circuit)
    if not source.has_source_images:
        return []
    boxes: dict[int, list[tuple[int, str, Group, Exemplar]]] = {}
    for layer_index, layer, group in circuit.iter_groups():
        for ex in group.exemplars:
            boxes.setdefault(ex.image, []).append((layer_index, layer.name, group, ex))
    pictures = []
    for index in sorted(boxes):
        data = source.source_image(index)
        if data is None:
            continue  # group_pictures already named the missing files
        ref = circuit.images[index]
        pictures.append(SourcePicture(index, ref.path, data, ref.width, ref.height, boxes[index]))
    return pictures
