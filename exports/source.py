"""What every exporter reads (:class:`ExportSource`) and what it returns (:class:`Exported`).

The same circuit can come from a file on disk (CLI: the images live under ``--images``) or from the
service's artifact store (API: mosaics were rendered when the job finished; the source images exist
only while the dataset does). :class:`ExportSource` hides that difference behind three questions:
the mosaic of a group, the bytes of a source image, and whether source images are available at all.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from neurflow import __version__
from neurflow.core.circuit import Circuit, Exemplar, Group
from neurflow.core.circuit_arrays import read_circuit



@dataclass
class Exported:
    """An export: ``files`` (relative path -> bytes, what the CLI writes into ``--out``) and, when the
    format is naturally one document, ``document``/``media_type`` (what the API answers with; the
    API answers a zip of ``files`` otherwise, or when asked for ``?archive=zip``)."""

    files: dict[str, bytes]
    document: bytes | None = None
    media_type: str = "application/json"
    warnings: list[str] = field(default_factory=list)


@dataclass
class ExportSource:
    """A labeled circuit and access to its pictures.

    ``circuit_id``: the service's id (carried into tasks so that the Label Studio ML backend can find
    the cached labels again); ``None`` for a file on disk.
    ``images_root``: folder the circuit's ``images[i].path`` are relative to; ``None`` when the source
    images are not available (then exports leave out region annotations on source images).
    ``mosaics``: group id -> PNG of its exemplar mosaic, when already rendered (the service); otherwise
    mosaics are cropped from ``images_root``.
    ``image_url``: image index -> URL, for exports that should reference source images rather than
    embed them (e.g. a Label Studio that can fetch from the service or a bucket).
    """

    circuit: Circuit
    circuit_id: str | None = None
    images_root: Path | None = None
    mosaics: Callable[[str], bytes | None] | None = None
    image_url: Callable[[int], str] | None = None
    _loader: Any = field(default=None, init=False, repr=False)

    # -- pictures ----------------------------------------------------------------------------------
    @property
    def has_source_images(self) -> bool:
        return self.images_root is not None and self.images_root.is_dir()

    def source_path(self, index: int) -> Path | None:
        if not self.has_source_images:
            return None
        path = self.images_root / self.circuit.images[index].path
        return path if path.is_file() else None

    def source_image(self, index: int) -> bytes | None:
        path = self.source_path(index)
        return path.read_bytes() if path else None

    def crop(self, ex: Exemplar) -> Image.Image | None:
        """The exemplar's patch (source pixels), or ``None`` when its source image is not available.
        Source images are decoded once and kept in a bounded cache (:class:`labeler.patches.PatchLoader`)."""
        if self.source_path(ex.image) is None:
            return None
        if self._loader is None:
            from neurflow.labeler.patches import PatchLoader

            self._loader = PatchLoader(self.circuit, self.images_root)
        return self._loader.crop(ex)

    def mosaic(self, group: Group) -> bytes | None:
        """PNG of the group's exemplar mosaic, or ``None`` when neither a rendered one nor the source
        images are available."""
        if self.mosaics is not None:
            found = self.mosaics(group.id)
            if found is not None:
                return found
        if not self.has_source_images or not group.exemplars:
            return None
        from neurflow.labeler.patches import PATCH_SIZE, mosaic

        crops = []
        for ex in group.exemplars:
            crop = self.crop(ex)
            if crop is None:
                return None
            crops.append(crop.resize((PATCH_SIZE, PATCH_SIZE)))
        buf = io.BytesIO()
        mosaic(crops).save(buf, format="PNG")
        return buf.getvalue()

    def all_mosaics(self) -> dict[str, bytes]:
        """Group id -> mosaic PNG, for every group that has one."""
        found = {}
        for _, _, group in self.circuit.iter_groups():
            png = self.mosaic(group)
            if png is not None:
                found[group.id] = png
        return found

    # -- provenance --------------------------------------------------------------------------------
    @property
    def model_version(self) -> str:
        """``neurflow-<version>+clip-<model>+vocab-<name>``: which code, CLIP model and vocabulary made
        the labels (annotation tools show and filter predictions by it)."""
        parts = [f"neurflow-{__version__}"]
        labeling = self.circuit.labeling
        if labeling is not None:
            tag = labeling.clip.pretrained
            parts.append(f"clip-{labeling.clip.model}" + (f"@{tag}" if tag and not tag.startswith("/") else ""))
            parts.append(f"vocab-{labeling.vocabulary.name}")
        return "+".join(parts)

    @classmethod
    def from_files(cls, circuit_path: str | Path, images_root: str | Path | None = None) -> ExportSource:
        """A circuit JSON file; ``images_root`` defaults to where it was labeled from, when that
        folder still exists."""
        path = Path(circuit_path)
        if not path.is_file():
            raise FileNotFoundError(f"no circuit file {path}")
        circuit = read_circuit(path)
        if images_root is None:
            recorded = circuit.labeling.patches_source if circuit.labeling else None
            images_root = recorded if recorded and Path(recorded).is_dir() else None
        root = Path(images_root) if images_root else None
        if root is not None and not root.is_dir():
            raise FileNotFoundError(f"--images {root} is not a folder")
        return cls(circuit=circuit, images_root=root)
