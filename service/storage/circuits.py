"""Reading and writing the stored circuit documents: the JSON document and, for circuits written
since compact documents (:mod:`neurflow.core.circuit_arrays`), its arrays' sidecar next to it.

A worker writes a circuit folder as ``neurflow run`` does: ``circuit.json`` holds the structure and
labels, ``circuit.arrays.safetensors`` the concept vectors and patches, named in the document with
its sha256. Circuits stored before have the whole document in ``circuit.json`` and no sidecar; every
reader here takes both, so nothing stored earlier stops loading.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from neurflow.core.circuit import Circuit
from neurflow.core.circuit_arrays import decode_circuit
from neurflow.service.errors import NotFound, public_json
from neurflow.service.storage import keys
from neurflow.service.storage.artifacts import ArtifactStore

CHUNK = 1 << 20  # bytes per piece of a streamed sidecar


def load_circuit(store: ArtifactStore, circuit_key: str, public: bool = False,
                 with_arrays: bool = True) -> Circuit:
    """The stored circuit of the folder ``circuit_key``, its sidecar joined (hash checked) when it has one;
    ``public``: the document as a caller reads it (the server's folders redacted, :func:`public_json`);
    ``with_arrays=False``: only the document (a compact one then has no concept vectors or patches: for
    readers of labels and groups, such as a correction)."""
    raw = store.get_bytes(keys.document(circuit_key))
    if public:
        raw = public_json(raw)
    if not with_arrays:
        return Circuit.from_json(raw, without_arrays=True)
    return decode_circuit(raw, lambda name: store.get_bytes(keys.sidecar(circuit_key, name)))


def write_document(store: ArtifactStore, circuit_key: str, circuit: Circuit) -> None:
    """Replace a stored document whose arrays did not change (a corrected label): a compact document
    keeps naming its sidecar, which stays as it is."""
    store.put_bytes(keys.document(circuit_key), circuit.to_json(indent=0 if circuit.arrays else 1).encode())


def sidecar_of(store: ArtifactStore, circuit_key: str) -> tuple[str, str, int]:
    """(sidecar key, sha256, bytes) of a stored circuit's sidecar; ``NotFound`` for a circuit without one
    (stored before compact documents: its document holds everything)."""
    circuit = Circuit.from_json(store.get_bytes(keys.document(circuit_key)), without_arrays=True)
    if circuit.arrays is None:
        raise NotFound("this circuit has no arrays file: it was stored as one document, which holds its concept "
                       "vectors and patches (GET /v1/circuits/{id})")
    return keys.sidecar(circuit_key, circuit.arrays.file), circuit.arrays.sha256, circuit.arrays.bytes


def stream_checked(store: ArtifactStore, key: str, sha256: str) -> Iterator[bytes]:
    """The file's bytes in pieces, hashed as they go. Its last piece is held back until the whole file
    matched the document's hash: a file that does not match ends the stream early, so the client never
    receives a complete, wrong file (the response announced the document's byte count)."""
    digest = hashlib.sha256()
    try:
        fh = store.fs.open(store.path(key), "rb")
    except FileNotFoundError:
        raise NotFound("this circuit's arrays file is missing from the store") from None
    with fh:
        held = fh.read(CHUNK)
        while piece := fh.read(CHUNK):
            digest.update(held)
            yield held
            held = piece
        digest.update(held)
    if digest.hexdigest() != sha256:
        raise RuntimeError(f"the stored arrays file {key} does not match its document's sha256; not served")
    yield held
