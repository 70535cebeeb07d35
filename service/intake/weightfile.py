"""Reading an uploaded safetensors file without loading it.

The header is parsed by hand (no tensor is loaded, no code from the file runs) and checked against the
file: every tensor's dtype, shape and byte range must agree, and the ranges must tile the data. The
values are checked for NaN and infinities on their bit patterns, in chunks of a memory map.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import msgspec

from neurflow.service.errors import Invalid, TooLarge, Unsupported

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
