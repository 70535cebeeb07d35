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
#: bytes per element of each safetensors dtype
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
#: A vision network's header is kilobytes (ResNet-50: 30 KB); 8 MB leaves room for 100k tensors.
MAX_HEADER_BYTES = 8 * 1024 * 1024
MAX_DIMS = 8
#: float dtypes -> (unsigned view, exponent mask): all exponent bits set is an infinity or a NaN
_NONFINITE = {"F64": ("<u8", 0x7FF0000000000000), "F32": ("<u4", 0x7F800000), "F16": ("<u2", 0x7C00),
              "BF16": ("<u2", 0x7F80)}


class TensorInfo(msgspec.Struct, frozen=True):
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_safetensors_header(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header; ``Invalid`` if the file is anything else."""
    return {name: t.shape for name, t in read_safetensors_index(path)[0].items()}


def read_safetensors_index(path: str | Path) -> tuple[dict[str, TensorInfo], int]:
    """Every tensor's dtype, shape and byte range, checked against each other and the file (a header
    that lies about sizes or offsets is refused); and where the data starts."""
    path = Path(path)
    size = path.stat().st_size
    not_st = ("the weights file is not a safetensors file; only .safetensors weights are accepted "
              "(pickled .pt/.pth/.bin and TorchScript files are refused)")
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise Unsupported(not_st)
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > size - 8:
            raise Unsupported(not_st)
        if n > MAX_HEADER_BYTES:
            raise TooLarge(f"the safetensors header is {n} bytes; at most {MAX_HEADER_BYTES} are accepted")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise Unsupported(not_st) from None
    if not isinstance(header, dict):
        raise Unsupported(not_st)
    data_len = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _tensor_info(name, info, data_len)
    if not tensors:
        raise Invalid("the safetensors file holds no tensors")
    # the byte ranges tile the data exactly, as the format requires: no overlaps, no gaps, no tail
    cursor = 0
    for t in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if t.begin != cursor:
            raise Invalid("the safetensors file is corrupt: its tensors' byte ranges overlap or leave gaps")
        cursor = t.end
    if cursor != data_len:
        raise Invalid(f"the safetensors file is corrupt: its header describes {cursor} bytes of tensor data but the "
                      f"file holds {data_len} (truncated or padded)")
    return tensors, 8 + n


def _tensor_info(name: str, info: Any, data_len: int) -> TensorInfo:
    shown = name[:80]
    try:
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        ok = (isinstance(dtype, str) and dtype in _ITEMSIZE and isinstance(shape, list) and len(shape) <= MAX_DIMS
              and all(type(d) is int and 0 <= d < 2**40 for d in shape)
              and isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
              and 0 <= offsets[0] <= offsets[1] <= data_len)
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise Invalid(f"the safetensors file is corrupt: bad header entry for tensor {shown!r}")
    count = 1
    for d in shape:
        count *= d
    if count * _ITEMSIZE[dtype] != offsets[1] - offsets[0]:
        raise Invalid(f"the safetensors file is corrupt: tensor {shown!r} is {dtype} {shape} "
                      f"({count * _ITEMSIZE[dtype]} bytes) but its byte range holds {offsets[1] - offsets[0]}")
    return TensorInfo(dtype=dtype, shape=tuple(shape), begin=offsets[0], end=offsets[1])


def check_finite(path: str | Path) -> None:
    """``Invalid`` if a float tensor holds a NaN or an infinity (checked on the bit patterns, in chunks of
    a memory map: no torch, no copy of the file)."""
    import numpy as np

    tensors, start = read_safetensors_index(path)
    with open(path, "rb") as fh:
        try:
            mm = np.memmap(fh, dtype=np.uint8, mode="r")
        except ValueError:  # an empty data section
            return
        for name, t in tensors.items():
            if t.dtype not in _NONFINITE or t.end == t.begin:
                continue
            view, mask = _NONFINITE[t.dtype]
            width = np.dtype(view).itemsize
            step = (1 << 24) // width * width
            for lo in range(start + t.begin, start + t.end, step):
                chunk = np.frombuffer(mm[lo:min(lo + step, start + t.end)], dtype=view)
                if np.any((chunk & np.array(mask, dtype=view)) == np.array(mask, dtype=view)):
                    raise Invalid(f"tensor {name[:80]!r} holds NaN or infinite values; a trained network's weights "
                                  "are finite")


class WeightCheck(msgspec.Struct, forbid_unknown_fields=True):
    """What the weight checker (a child process: torch stays out of the web process) is asked."""

    path: str
    arch: str
    num_classes: int
    input_size: int


class WeightVerdict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    layers: list[tuple[str, list[int]]] | None = None
    problem: str | None = None  # what the client sent wrong (422)


def check_weights(path: str | Path, desc: ModelDescriptor) -> list[tuple[str, tuple[int, ...]]]:
    """Verify the weights fit ``desc.arch`` exactly; return the model's addressable layers.

    The header and the values are checked here; the architecture (torch, on the ``meta`` device) in a
    child process (:mod:`neurflow.service.weightcheck`), so the web process never imports torch and an
    architecture that misbehaves cannot take it down.
    """
    from neurflow.service.weightcheck import run_checker

    read_safetensors_index(path)
    check_finite(path)
    verdict = run_checker(WeightCheck(path=str(path), arch=desc.arch, num_classes=desc.num_classes,
                                      input_size=desc.input_size))
    if verdict.problem is not None:
        raise Invalid(verdict.problem)
    return [(name, tuple(shape)) for name, shape in verdict.layers or []]


def check_architecture(request: WeightCheck) -> WeightVerdict:
    """The torch half of :func:`check_weights` (runs in the checker process)."""
    import torch

    from neurflow.core.model_intake import build_architecture, describe_mismatch, list_layers

    shapes = read_safetensors_header(request.path)
    try:
        with torch.device("meta"):
            model = build_architecture(request.arch, request.num_classes)
    except ValueError as exc:
        return WeightVerdict(problem=str(exc))
    except Exception as exc:  # noqa: BLE001 - a library refusing the arguments
        return WeightVerdict(problem=f"cannot build {request.arch} with {request.num_classes} classes: "
                                     f"{type(exc).__name__}")
    fake = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    problem = describe_mismatch(model, fake)
    if problem:
        return WeightVerdict(problem=f"the weights do not fit {request.arch} with {request.num_classes} classes: {problem}")
    try:
        with torch.device("meta"):
            layers = list_layers(model, request.input_size)
    except Exception as exc:  # noqa: BLE001
        return WeightVerdict(problem=f"{request.arch} does not run on {request.input_size}x{request.input_size} inputs "
                                     f"({type(exc).__name__})")
    return WeightVerdict(layers=[(name, [int(d) for d in shape]) for name, shape in layers])


# -- images -------------------------------------------------------------------------------------------
class PixelBudget:
    """The pixels a whole dataset may decode: images that are cheap to send and expensive to decode
    (a tiny PNG of a 6000x6000 plain colour) add up, even under the per-image cap."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.total = total

    def take(self, pixels: int, name: str) -> None:
        self.left -= pixels
        if self.left < 0:
            raise TooLarge(f"the images up to {name} hold more than {self.total} pixels together; at most "
                           f"{self.total} pixels are decoded per dataset (max_dataset_pixels)")


def decode_image(data: bytes | Path, max_pixels: int, name: str = "the image",
                 budget: PixelBudget | None = None) -> Image.Image:
    """Decode PNG/JPEG fully; ``Invalid`` for anything else, ``TooLarge`` past ``max_pixels`` (or past
    the dataset's ``budget``). Errors never name the file's server path."""
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
                if budget is not None:
                    budget.take(w * h, name)
                im.load()
                return im.convert("RGB")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise TooLarge(f"{name} is too large to decode safely") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError,
            TypeError, KeyError, ZeroDivisionError, MemoryError) as exc:
        # Pillow's messages are about the bytes; the type is enough and names no path
        raise Invalid(f"{name} cannot be decoded as an image ({type(exc).__name__}); PNG and JPEG are accepted") from None


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
                    max_pixels: int, max_total_pixels: int | None = None) -> DatasetInfo:
    """Extract a checked dataset zip into ``dest``: ``images/...`` laid out flat or one folder per class."""
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error):
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
        budget = PixelBudget(max_total_pixels) if max_total_pixels else None
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
                decode_image(target, max_pixels, name=f"zip entry {str(original)[:200]}", budget=budget)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.replace(dest)
        except (zipfile.BadZipFile, EOFError, zlib_error(), NotImplementedError, RuntimeError, ValueError,
                struct.error) as exc:
            # unsupported compression methods, bad CRCs, truncated members: the archive's fault
            shutil.rmtree(tmp, ignore_errors=True)
            raise Invalid(f"the zip archive is corrupt or uses an unsupported feature ({type(exc).__name__}); "
                          "a plain (stored or deflated) zip of images is accepted") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return DatasetInfo(n_images=len(rels), classes=classes, size=total)


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def to_jsonable(value: Any) -> Any:
    return msgspec.to_builtins(value)
