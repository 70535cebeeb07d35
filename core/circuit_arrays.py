"""Compact circuit documents: the bulky arrays in a safetensors sidecar, the structure in JSON.

A real-size circuit (ResNet-50, five layers, 50 images) is mostly two arrays per concept: its
``vector`` (the mean lower-layer activation, one float per lower channel: 2,048 for ``layer4``) and
its ``patches`` (every top patch). Written as JSON they make a document of about 100 MB that takes
seconds to parse. :func:`write_circuit` moves them into ``<name>.arrays.safetensors`` next to the
document, which names the file and its sha256 in ``Circuit.arrays``; everything a person reads
(groups, labels, exemplars, edges) stays in the JSON. :func:`read_circuit` puts them back, after
checking the hash, so every consumer sees the same :class:`~neurflow.core.circuit.Circuit` as before.
A document without ``arrays`` (every circuit written before, or one written with ``compact=False``)
reads as it always did.

Per layer ``l{i}`` (its index in ``Circuit.layers``), concepts in document order (neuron by neuron):

* ``l{i}.vectors``: float64 (concepts, lower channels);
* ``l{i}.patch_counts``: int64 (concepts,), patches per concept;
* ``l{i}.patch_boxes``: int64 (patches, 5): image index and the box ``x0, y0, x1, y1``;
* ``l{i}.patch_values``: float64 (patches, 2): activation and granularity.

float64 keeps every number the JSON held, so a document read back equals the one written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np

from .circuit import Circuit, CircuitArrays, Exemplar

SIDECAR_SUFFIX = ".arrays.safetensors"
#: what the sidecar holds, recorded in ``CircuitArrays.fields``
MOVED = ["concept.vector", "concept.patches"]


def sidecar_name(document: str | Path) -> str:
    """``circuit.arrays.safetensors`` for ``circuit.json``."""
    return Path(document).name.removesuffix(".json") + SIDECAR_SUFFIX


def split_arrays(circuit: Circuit) -> tuple[Circuit, dict[str, np.ndarray]]:
    """A copy of ``circuit`` without concept vectors and patches, and those arrays by name."""
    compact = msgspec.convert(msgspec.to_builtins(circuit), Circuit)
    tensors: dict[str, np.ndarray] = {}
    for i, layer in enumerate(compact.layers):
        concepts = [c for n in layer.neurons for c in n.concepts]
        if not concepts:
            continue
        widths = {len(c.vector) for c in concepts}
        if len(widths) != 1:
            raise ValueError(f"layer {layer.name!r}: concept vectors of different lengths {sorted(widths)}")
        tensors[f"l{i}.vectors"] = np.asarray([c.vector for c in concepts], dtype=np.float64).reshape(len(concepts), -1)
        patches = [p for c in concepts for p in c.patches]
        tensors[f"l{i}.patch_counts"] = np.asarray([len(c.patches) for c in concepts], dtype=np.int64)
        tensors[f"l{i}.patch_boxes"] = np.asarray([[p.image, *p.box] for p in patches], dtype=np.int64).reshape(-1, 5)
        tensors[f"l{i}.patch_values"] = np.asarray([[p.activation, p.granularity] for p in patches],
                                                   dtype=np.float64).reshape(-1, 2)
        for c in concepts:
            c.vector, c.patches = [], []
    return compact, tensors


def join_arrays(compact: Circuit, tensors: dict[str, np.ndarray]) -> Circuit:
    """``compact`` with its concept vectors and patches filled in from ``tensors`` (in place)."""
    for i, layer in enumerate(compact.layers):
        concepts = [c for n in layer.neurons for c in n.concepts]
        if not concepts:
            continue
        try:
            vectors, counts = tensors[f"l{i}.vectors"], tensors[f"l{i}.patch_counts"]
            boxes, values = tensors[f"l{i}.patch_boxes"], tensors[f"l{i}.patch_values"]
        except KeyError as exc:
            raise ValueError(f"the circuit's arrays file has no {exc.args[0]!r} for layer {layer.name!r}") from None
        if len(vectors) != len(concepts) or len(counts) != len(concepts) or int(counts.sum()) != len(boxes):
            raise ValueError(f"the circuit's arrays file does not match layer {layer.name!r} "
                             f"({len(concepts)} concepts in the document, {len(vectors)} in the file)")
        rows = vectors.tolist()
        box_rows, value_rows = boxes.tolist(), values.tolist()
        start = 0
        for c, vector, count in zip(concepts, rows, counts.tolist()):
            c.vector = vector
            c.patches = [Exemplar(image=b[0], box=b[1:], activation=v[0], granularity=v[1])
                         for b, v in zip(box_rows[start:start + count], value_rows[start:start + count])]
            start += count
    compact.arrays = None
    return compact


def encode_circuit(circuit: Circuit, sidecar: str) -> tuple[bytes, bytes]:
    """(compact JSON document, sidecar bytes); the document names ``sidecar`` and its hash."""
    from safetensors.numpy import save

    compact, tensors = split_arrays(circuit)
    blob = save(tensors)
    compact.arrays = CircuitArrays(file=sidecar, sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob),
                                   fields=list(MOVED))
    return compact.to_json(indent=0).encode(), blob  # no indentation: a machine's file, a fifth smaller


def decode_circuit(document: bytes | str, sidecar: Callable[[str], bytes] | None = None) -> Circuit:
    """A circuit from its JSON ``document``; when the document keeps its arrays in a sidecar,
    ``sidecar(file name)`` returns that file's bytes (checked against the recorded sha256)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    circuit = Circuit.from_json(document, without_arrays=True)
    ref = circuit.arrays
    if ref is None:
        return circuit
    if sidecar is None:
        raise ValueError(f"this circuit keeps its concept vectors and patches in {ref.file}; read it with "
                         "neurflow.core.circuit_arrays.read_circuit(path) (the file next to the document)")
    blob = sidecar(ref.file)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != ref.sha256:
        raise ValueError(f"{ref.file} does not belong to this circuit: its sha256 is {digest[:16]}..., the document "
                         f"names {ref.sha256[:16]}...")
    try:
        tensors = load(blob)
    except SafetensorError as exc:
        raise ValueError(f"cannot read {ref.file}: {exc}") from None
    return join_arrays(circuit, tensors)


def write_circuit(circuit: Circuit, path: str | Path, compact: bool = True) -> list[Path]:
    """Write ``circuit`` to ``path`` (JSON), with its arrays in the sidecar next to it when
    ``compact``; return the files written (the sidecar first: a document never names a missing file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not compact:
        path.write_text(circuit.to_json())
        return [path]
    document, blob = encode_circuit(circuit, sidecar_name(path))
    side = path.with_name(sidecar_name(path))
    side.write_bytes(blob)
    path.write_bytes(document)
    return [side, path]


def read_circuit(path: str | Path) -> Circuit:
    """The circuit at ``path``, its sidecar (if it has one) read from the same folder."""
    path = Path(path)

    def sidecar(name: str) -> bytes:
        side = path.with_name(name)
        if Path(name).name != name or not side.is_file():
            raise ValueError(f"the circuit {path} keeps its arrays in {name}, which is not next to it")
        return side.read_bytes()

    return decode_circuit(path.read_bytes(), sidecar)
