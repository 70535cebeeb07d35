"""Uploaded weights are content-addressed: one file per sha256 (``keys.weights``), shared by every owner
who uploaded the same bytes, and present exactly while a catalog row references it.

Both decisions about the file happen inside the catalog transaction that changes the rows, under
SQLite's write lock: an upload inserts its row and then makes sure the file is there; a delete removes
its row and deletes the file only when no row is left. So a delete can never remove the file between
another owner's check and its row (the race the tests in ``tests/service/storage/test_weights.py`` run).
The upload copies the bytes to a staging key first, outside the lock; inside it, placing the file is
a rename.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Callable

from neurflow.service.storage import keys
from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.catalog import Catalog


def register(catalog: Catalog, store: ArtifactStore, owner: str, model_id: str, local: str | Path,
             descriptor: dict[str, Any], layers: list, size: int) -> tuple[dict[str, Any], bool]:
    """The owner's model row for the weights at ``local`` (whose sha256 is ``model_id``), the file stored."""
    key = keys.weights(model_id)
    staged = None
    if not store.exists(key):
        staged = keys.staging(uuid.uuid4().hex)
        store.put_file(staged, local)

    def place() -> None:
        nonlocal staged
        if store.exists(key):
            return
        if staged is not None:
            store.move(staged, key)
            staged = None
        else:  # it existed before the lock and was deleted since: copy it under the lock (rare)
            store.put_file(key, local)

    try:
        return catalog.add_model(owner, model_id, descriptor, layers, size, place_file=place)
    finally:
        if staged is not None:
            store.delete(staged)


def unregister(catalog: Catalog, store: ArtifactStore, owner: str, model_id: str,
               check: Callable[[], None] | None = None) -> None:
    """Delete the owner's model row, and the file when no owner references it any more."""
    catalog.delete_model(owner, model_id, check=check, unreferenced=lambda: store.delete(keys.weights(model_id)))
