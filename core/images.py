"""Image intake and patch geometry.

Images are brought to the model's input the way a standard torchvision pipeline does: resize the
shorter side to ``resize`` (bilinear, antialiased), centre-crop an ``input_size`` square, scale to
[0, 1], normalise with ``mean``/``std``. ``resize`` defaults to ``input_size`` (the whole shorter side
is kept); ImageNet's evaluation transform, which the reference uses, is ``resize=256`` for
``input_size=224`` (:data:`IMAGENET_RESIZE`): the crop drops a border of 1/8 of the shorter side. Patches are cut from that square, and every patch
keeps its box in *source-image* pixels so that it can be shown, labeled and exported later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .image_files import open_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: ImageNet's standard evaluation transform: Resize(256) then CenterCrop(224).
IMAGENET_RESIZE = {224: 256}


def list_images(root: str | Path) -> list[Path]:
    """PNG/JPEG files under ``root`` (recursively), in sorted relative-path order."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist or is not a folder")
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


@dataclass(frozen=True)
class Geometry:
    """Maps boxes in the model-input square back to source-image pixels."""

    width: int
    height: int
    input_size: int
    resize: int | None = None  # the shorter side before the crop (None: input_size)

    @property
    def scale(self) -> float:  # source pixels per input pixel
        return min(self.width, self.height) / (self.resize or self.input_size)

    @property
    def offset(self) -> tuple[float, float]:  # top-left of the centre crop, in source pixels
        side = self.input_size * self.scale
        return (self.width - side) / 2.0, (self.height - side) / 2.0

    def to_source(self, box: tuple[float, float, float, float]) -> list[int]:
        ox, oy = self.offset
        s = self.scale
        x0, y0, x1, y1 = box
        out = [round(ox + x0 * s), round(oy + y0 * s), round(ox + x1 * s), round(oy + y1 * s)]
        out[2] = min(max(out[2], out[0] + 1), self.width)
        out[3] = min(max(out[3], out[1] + 1), self.height)
        return out


class Preprocess:
    """Resize shorter side (to ``resize``, default ``input_size``), centre crop ``input_size``,
    normalise: the model-input tensor of one image."""

    def __init__(self, input_size: int, mean, std, resize: int | None = None):
        self.input_size = int(input_size)
        if resize is not None and int(resize) < self.input_size:
            raise ValueError(f"resize ({resize}) must be at least input_size ({input_size}): the crop is taken "
                             "from the resized image")
        self.resize = int(resize) if resize is not None and int(resize) != self.input_size else None
        if len(list(mean)) != 3 or len(list(std)) != 3 or min(float(v) for v in std) <= 0:
            raise ValueError(f"mean and std must be three numbers each (one per RGB channel), std positive; got "
                             f"mean={list(mean)}, std={list(std)}")
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)

    def normalisation(self) -> tuple[list[float], list[float]]:
        """(mean, std) as given (float32 rounding undone), as a circuit records them."""
        return ([round(float(v), 6) for v in self.mean.flatten()], [round(float(v), 6) for v in self.std.flatten()])

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """The centre-cropped square in [0, 1], shape (3, S, S)."""
        s = self.input_size
        r = self.resize or s
        w, h = image.size
        scale = r / min(w, h)
        nw, nh = max(r, round(w * scale)), max(r, round(h * scale))
        resized = image.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
        left, top = int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))
        square = resized.crop((left, top, left + s, top + s))
        arr = np.asarray(square, dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean.to(pixels.device)) / self.std.to(pixels.device)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalise(self.pixels(image))


def crop_source(path: str | Path, box: list[int], size: int | None = None) -> Image.Image:
    """The source-image crop of an exemplar box, optionally resized to ``size`` x ``size``."""
    crop = open_rgb(path).crop(tuple(box))
    return crop.resize((size, size), Image.BILINEAR) if size else crop


@dataclass
class ImageSet:
    """Model-input tensors of a list of images, with where each came from."""

    pixels: torch.Tensor  # (N, 3, S, S), normalised
    paths: list[str]  # relative to the data root ("" when built from tensors)
    sizes: list[tuple[int, int]]  # source (width, height)
    labels: list[int | None] | None = None  # optional ground-truth class per image
    resize: int | None = None  # the Preprocess resize the pixels were made with (None: input_size)
    preprocess: Preprocess | None = None  # how the pixels were made; None: unknown (a bare tensor)

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def input_size(self) -> int:
        return int(self.pixels.shape[-1])

    def geometry(self, i: int) -> Geometry:
        w, h = self.sizes[i]
        return Geometry(w, h, self.input_size, self.resize)

    def subset(self, keep: list[int]) -> ImageSet:
        return ImageSet(self.pixels[keep], [self.paths[i] for i in keep], [self.sizes[i] for i in keep],
                        [self.labels[i] for i in keep] if self.labels else None, self.resize, self.preprocess)

    @classmethod
    def from_tensor(cls, pixels: torch.Tensor, mean=None, std=None) -> ImageSet:
        """Already-normalised square inputs; boxes are then in input pixels. ``mean``/``std``: the
        normalisation the pixels were made with; without them it is recorded as unknown."""
        if pixels.dim() != 4 or pixels.shape[-1] != pixels.shape[-2]:
            raise ValueError(f"expected a (N, C, S, S) tensor of square images, got shape {tuple(pixels.shape)}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (the normalisation the pixels were made with), or neither")
        s = int(pixels.shape[-1])
        preprocess = Preprocess(s, mean, std) if mean is not None else None
        return cls(pixels, [""] * len(pixels), [(s, s)] * len(pixels), preprocess=preprocess)

    @classmethod
    def from_folder(cls, root: str | Path, preprocess: Preprocess) -> ImageSet:
        """Every PNG/JPEG under ``root`` in sorted relative-path order; paths are kept relative."""
        root = Path(root)
        files = list_images(root)
        if not files:
            raise ValueError(f"no PNG or JPEG images found under {root}")
        tensors, paths, sizes = [], [], []
        for f in files:
            image = open_rgb(f)
            sizes.append(image.size)
            tensors.append(preprocess(image))
            paths.append(f.relative_to(root).as_posix())
        return cls(torch.stack(tensors), paths, sizes, resize=preprocess.resize, preprocess=preprocess)
