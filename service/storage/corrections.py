"""A person's label for a group of a stored circuit: the one path the API route and the Label Studio
webhook share.

The correction is written into the circuit's document itself (:func:`neurflow.core.corrections.correct_group`:
the text, ``human``, the key or Label Studio user, the time, the channel, the label it replaced) and the
catalog's summary follows, so every reader (the document, listings, exports, the Label Studio backend)
sees it, and a relabel of the circuit, which starts from this document, keeps it. Read, correct and
write run under one lock per circuit folder, so two corrections at once never lose one another.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from neurflow.core.circuit import Group
from neurflow.core.corrections import correct_group
from neurflow.service.errors import Invalid, NotFound
from neurflow.service.jobs.summary import summarize
from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.catalog import Catalog
from neurflow.service.storage.circuits import load_circuit, write_document

_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
_locks_guard = threading.Lock()


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks[key]


def correct_stored(catalog: Catalog, store: ArtifactStore, owner: str, circuit_id: str, group_id: str,
                   text: object, *, via: str, key: str | None) -> Group:
    """Store a person's label for one group of the owner's circuit; return the corrected group.

    ``NotFound`` for a circuit or group the owner does not have, ``Invalid`` for a label that is not
    accepted (the message says what is)."""
    row = catalog.get_circuit(owner, circuit_id)
    with _lock(row["key"]):
        # labels live in the document: a compact one is corrected without reading its arrays
        circuit = load_circuit(store, row["key"], with_arrays=False)
        try:
            correct_group(circuit, group_id, text, key=key, via=via)
        except KeyError:
            raise NotFound(f"no group {group_id!r} in circuit {circuit_id}") from None
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        write_document(store, row["key"], circuit)
        catalog.set_summary(owner, circuit_id, summarize(circuit))
    return circuit.group(group_id)[1]
