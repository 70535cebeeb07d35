"""Checking uploads before anything is stored: weights, dataset zips, images.

* Weights: only safetensors. The header is parsed by hand (no tensor is loaded) and compared, key by
  key and shape by shape, with the architecture built on the ``meta`` device, so a 1 GB checkpoint is
  verified without allocating it and without running any code from the file. The addressable layer
  names come from a forward pass on ``meta`` tensors.
* Dataset zips: no absolute paths, no ``..``, no links, a cap on entries and on uncompressed bytes
  (counted while extracting, not trusted from the zip directory), images only, every image decoded.
* Images: PNG or JPEG that decode, with a pixel cap against decompression bombs.
"""

from __future__ import annotations

import io
import json
import shutil
import stat
import struct
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import msgspec

from PIL import Image, UnidentifiedImageError

from neurflow.service.errors import Invalid, TooLarge, Unsupported

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IGNORED_PREFIXES = ("__MACOSX/",)

Finite = Annotated[float, msgspec.Meta(gt=-1e6, lt=1e6)]


class ModelDescriptor(msgspec.Struct, forbid_unknown_fields=True):
    """The JSON part of ``POST /v1/models``."""

    arch: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    num_classes: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    input_size: Annotated[int, msgspec.Meta(ge=8, le=2048)]
    mean: Annotated[list[Finite], msgspec.Meta(min_length=3, max_length=3)] = msgspec.field(
        default_factory=lambda: [0.485, 0.456, 0.406])
    std: Annotated[list[Annotated[float, msgspec.Meta(gt=0, lt=1e6)]], msgspec.Meta(min_length=3, max_length=3)] = (
        msgspec.field(default_factory=lambda: [0.229, 0.224, 0.225]))
    class_names: list[Annotated[str, msgspec.Meta(max_length=200)]] | None = None
    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None


def parse_descriptor(raw: str | bytes) -> ModelDescriptor:
    try:
        desc = msgspec.json.decode(raw, type=ModelDescriptor)
    except msgspec.ValidationError as exc:
        raise Invalid(f"invalid model descriptor: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Invalid(f"the model descriptor is not valid JSON: {exc}") from None
    if desc.class_names is not None and len(desc.class_names) != desc.num_classes:
        raise Invalid(f"class_names has {len(desc.class_names)} names but num_classes is {desc.num_classes}")
    return desc


# -- weights ------------------------------------------------------------------------------------------
_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2",
           "U16", "U32", "U64"}


def read_safetensors_header(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header; ``Invalid`` if the file is anything else."""
    path = Path(path)
    size = path.stat().st_size
    not_st = ("the weights file is not a safetensors file; only .safetensors weights are accepted "
              "(pickled .pt/.pth/.bin and TorchScript files are refused)")
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise Unsupported(not_st)
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > min(size - 8, 100 * 1024 * 1024):
            raise Unsupported(not_st)
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except ValueError:
        raise Unsupported(not_st) from None
    if not isinstance(header, dict):
        raise Unsupported(not_st)
    shapes: dict[str, tuple[int, ...]] = {}
    data_len = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = dtype in _DTYPES and all(isinstance(d, int) and d >= 0 for d in shape) and 0 <= begin <= end <= data_len
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise Invalid(f"the safetensors file is corrupt: bad header entry for tensor {name!r}")
        shapes[name] = tuple(shape)
    if not shapes:
        raise Invalid("the safetensors file holds no tensors")
    return shapes


def check_weights(path: str | Path, desc: ModelDescriptor) -> list[tuple[str, tuple[int, ...]]]:
    """Verify the weights fit ``desc.arch`` exactly; return the model's addressable layers."""
    import torch

    from neurflow.core.model_intake import build_architecture, describe_mismatch, list_layers

    shapes = read_safetensors_header(path)
    try:
        with torch.device("meta"):
            model = build_architecture(desc.arch, desc.num_classes)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a library refusing the arguments
        raise Invalid(f"cannot build {desc.arch} with {desc.num_classes} classes: {exc}") from None
    fake = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    problem = describe_mismatch(model, fake)
    if problem:
        raise Invalid(f"the weights do not fit {desc.arch} with {desc.num_classes} classes: {problem}")
    try:
        with torch.device("meta"):
            layers = list_layers(model, desc.input_size)
    except Exception as exc:  # noqa: BLE001
        raise Invalid(f"{desc.arch} does not run on {desc.input_size}x{desc.input_size} inputs: {exc}") from None
    return [(name, tuple(int(d) for d in shape)) for name, shape in layers]


# -- images -------------------------------------------------------------------------------------------
def decode_image(data: bytes | Path, max_pixels: int, name: str = "the image") -> Image.Image:
    """Decode PNG/JPEG fully; ``Invalid`` for anything else, ``TooLarge`` past ``max_pixels``."""
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                if im.format not in ("PNG", "JPEG"):
                    raise Invalid(f"{name} is {im.format or 'an unknown format'}; PNG and JPEG images are accepted")
                w, h = im.size
                if w * h > max_pixels:
                    raise TooLarge(f"{name} has {w}x{h} pixels; at most {max_pixels} pixels are accepted")
                if w < 1 or h < 1:
                    raise Invalid(f"{name} is empty")
                im.load()
                return im.convert("RGB")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise TooLarge(f"{name} is too large to decode safely") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as exc:
        raise Invalid(f"{name} cannot be decoded as an image ({type(exc).__name__}: {exc}); PNG and JPEG are accepted") from None


# -- dataset zips -------------------------------------------------------------------------------------
class DatasetInfo(msgspec.Struct):
    n_images: int
    classes: list[str]
    size: int


def _safe_member(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The relative path of an image member, None for ignorable entries; ``Invalid`` if unsafe."""
    name = info.filename
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise Invalid(f"zip entry {name!r} has an absolute or Windows path; only relative paths are accepted")
    path = PurePosixPath(name)
    if any(part in ("..", ".") for part in path.parts):
        raise Invalid(f"zip entry {name!r} escapes the dataset folder (path traversal)")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise Invalid(f"zip entry {name!r} is a symbolic link; links are not accepted")
    if info.is_dir() or name.startswith(IGNORED_PREFIXES) or any(p.startswith(".") for p in path.parts):
        return None
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise Invalid(f"zip entry {name!r} is not a PNG or JPEG image; a dataset zip holds images only")
    if len(path.parts) > 4:
        raise Invalid(f"zip entry {name!r} is nested too deep; use a flat zip or one folder per class")
    if info.flag_bits & 0x1:
        raise Invalid(f"zip entry {name!r} is encrypted")
    return path


def extract_dataset(zip_path: str | Path, dest: str | Path, *, max_entries: int, max_bytes: int,
                    max_pixels: int) -> DatasetInfo:
    """Extract a checked dataset zip into ``dest``: ``images/...`` laid out flat or one folder per class."""
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise Invalid("the dataset upload is not a valid zip archive") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_entries:
            raise TooLarge(f"the zip has {len(infos)} entries; at most {max_entries} are accepted")
        members = [(info, p) for info in infos if (p := _safe_member(info)) is not None]
        if not members:
            raise Invalid("the zip holds no PNG or JPEG images")
        declared = sum(info.file_size for info, _ in members)
        if declared > max_bytes:
            raise TooLarge(f"the zip expands to {declared} bytes; at most {max_bytes} are accepted")
        # one wrapping folder (zip of a folder) is stripped
        tops = {p.parts[0] for _, p in members}
        strip = 1 if len(tops) == 1 and all(len(p.parts) > 1 for _, p in members) else 0
        rels = [PurePosixPath(*p.parts[strip:]) for _, p in members]
        if len({r.as_posix().lower() for r in rels}) != len(rels):
            raise Invalid("the zip holds two entries with the same path")
        classes = sorted({r.parts[0] for r in rels if len(r.parts) > 1})
        tmp = dest.with_name(dest.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        total = 0
        try:
            for (info, original), rel in zip(members, rels):
                target = tmp / "images" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                written = 0
                with zf.open(info) as src, open(target, "wb") as out:
                    while block := src.read(1 << 16):
                        written += len(block)
                        total += len(block)
                        if written > info.file_size or total > max_bytes:
                            raise TooLarge(f"zip entry {original} expands past its declared or the allowed size")
                        out.write(block)
                decode_image(target, max_pixels, name=f"zip entry {original}")
            shutil.rmtree(dest, ignore_errors=True)
            tmp.replace(dest)
        except (zipfile.BadZipFile, EOFError, zlib_error()) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise Invalid(f"the zip archive is corrupt: {exc}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return DatasetInfo(n_images=len(rels), classes=classes, size=total)


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def to_jsonable(value: Any) -> Any:
    return msgspec.to_builtins(value)
