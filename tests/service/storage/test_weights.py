"""Content-addressed weights shared by owners: uploads and deletes of identical bytes from two keys race
(threads, hundreds of rounds) and no surviving row ever points at a missing or wrong file."""

from __future__ import annotations

import hashlib
import os
import threading

from neurflow.service.storage import keys, weights
from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.catalog import Catalog
from neurflow.service.storage.db import Database

ROUNDS = 300


def test_uploads_and_deletes_of_identical_weights_race_without_losing_the_file(tmp_path):
    db = Database(tmp_path / "neurflow.db")
    store = ArtifactStore(str(tmp_path / "artifacts"))
    local = tmp_path / "w.safetensors"
    local.write_bytes(os.urandom(64 * 1024))
    model_id = hashlib.sha256(local.read_bytes()).hexdigest()
    problems: list[str] = []
    start = threading.Barrier(2)

    def file_ok() -> bool:
        return store.exists(keys.weights(model_id)) and \
            hashlib.sha256(store.get_bytes(keys.weights(model_id))).hexdigest() == model_id

    def owner_loop(owner: str, keep_last: bool) -> None:
        catalog = Catalog(db)  # one connection per thread, as the web process's worker threads
        start.wait()
        for i in range(ROUNDS):
            weights.register(catalog, store, owner, model_id, local, {"arch": "x"}, [], 1)
            if not file_ok():  # our own row exists: nobody may have removed the file under it
                problems.append(f"{owner} round {i}: the file is missing right after the upload")
            if not (keep_last and i == ROUNDS - 1):
                weights.unregister(catalog, store, owner, model_id)

    threads = [threading.Thread(target=owner_loop, args=("k-a", True)),
               threading.Thread(target=owner_loop, args=("k-b", False))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []
    rows = db.all("SELECT owner, id FROM models")
    assert [tuple(r) for r in rows] == [("k-a", model_id)]
    assert file_ok()
    assert store.listdir("staging") == []  # no staged copy left behind
    weights.unregister(Catalog(db), store, "k-a", model_id)
    assert not store.exists(keys.weights(model_id))  # the last reference gone, the file with it
