"""Rows of the catalog: API keys, models, datasets and circuits, always scoped by owner.

Every read takes the owner, so one key can never see another key's objects: a foreign id answers
404 exactly like a missing one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any, Callable

from neurflow.service.errors import Conflict, NotFound
from neurflow.service.storage import pages
from neurflow.service.storage.db import Database, now

ANONYMOUS = "anonymous"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def owner_of(key_hash: str) -> str:
    return "k-" + key_hash[:16]


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


class Catalog:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- API keys --------------------------------------------------------------------------------
    def add_key(self, key: str, name: str) -> str:
        h = hash_key(key)
        with self.db.tx() as c:
            c.execute("INSERT OR IGNORE INTO api_keys (hash, owner, name, created_at) VALUES (?,?,?,?)",
                      (h, owner_of(h), name, now()))
        return owner_of(h)

    def create_key(self, name: str) -> tuple[str, str]:
        key = "nf_" + secrets.token_urlsafe(24)
        return key, self.add_key(key, name)

    def owner_for_key(self, key: str) -> str | None:
        row = self.db.one("SELECT owner FROM api_keys WHERE hash=? AND revoked=0", (hash_key(key),))
        return row["owner"] if row else None

    def list_keys(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.all("SELECT owner, name, created_at, revoked FROM api_keys ORDER BY created_at")]

    def revoke_key(self, owner: str) -> bool:
        with self.db.tx() as c:
            return c.execute("UPDATE api_keys SET revoked=1 WHERE owner=?", (owner,)).rowcount > 0

    def has_keys(self) -> bool:
        return self.db.one("SELECT 1 FROM api_keys WHERE revoked=0 LIMIT 1") is not None

    # -- models ----------------------------------------------------------------------------------
    def add_model(self, owner: str, model_id: str, descriptor: dict[str, Any], layers: list, size: int, *,
                  place_file: Callable[[], None] | None = None) -> tuple[dict, bool]:
        """Insert the owner's row (or find it); True when it is new.

        ``place_file()`` runs inside the same transaction, under SQLite's write lock: the shared weights
        file is put in place while no delete can decide that it is unreferenced (:meth:`delete_model`).
        """
        with self.db.tx() as c:
            row = c.execute("SELECT * FROM models WHERE owner=? AND id=?", (owner, model_id)).fetchone()
            if row is not None and json.loads(row["descriptor"]) != descriptor:
                raise Conflict(f"model {model_id} (these weights) is already registered with another descriptor; "
                               "delete it first to change arch, classes or normalisation")
            created = row is None
            if created:
                c.execute("INSERT INTO models (owner, id, descriptor, layers, size, created_at) VALUES (?,?,?,?,?,?)",
                          (owner, model_id, json.dumps(descriptor), json.dumps(layers), size, now()))
                row = c.execute("SELECT * FROM models WHERE owner=? AND id=?", (owner, model_id)).fetchone()
            if place_file is not None:
                place_file()
        return self._model(row), created

    @staticmethod
    def _model(row) -> dict[str, Any]:
        return {"id": row["id"], "descriptor": json.loads(row["descriptor"]),
                "layers": json.loads(row["layers"]), "size": row["size"], "created_at": row["created_at"]}

    def get_model(self, owner: str, model_id: str) -> dict[str, Any]:
        row = self.db.one("SELECT * FROM models WHERE owner=? AND id=?", (owner, model_id))
        if row is None:
            raise NotFound(f"no model {model_id!r}")
        return self._model(row)

    def delete_model(self, owner: str, model_id: str, *, check: Callable[[], None] | None = None,
                     unreferenced: Callable[[], None] | None = None) -> None:
        """Delete the owner's row. ``check()`` may refuse first; ``unreferenced()`` (deleting the shared file)
        runs when no row of any owner references the weights any more. Both run inside the transaction
        that removes the row, so an upload of the same weights waits for it (and then puts the file back)."""
        with self.db.tx() as c:
            if c.execute("SELECT 1 FROM models WHERE owner=? AND id=?", (owner, model_id)).fetchone() is None:
                raise NotFound(f"no model {model_id!r}")
            if check is not None:
                check()
            c.execute("DELETE FROM models WHERE owner=? AND id=?", (owner, model_id))
            if unreferenced is not None and c.execute("SELECT 1 FROM models WHERE id=?", (model_id,)).fetchone() is None:
                unreferenced()

    # -- datasets --------------------------------------------------------------------------------
    def add_dataset(self, owner: str, dataset_id: str, name: str, n_images: int, classes: list[str], size: int) -> dict:
        with self.db.tx() as c:
            c.execute("INSERT INTO datasets (id, owner, name, n_images, classes, size, created_at) VALUES (?,?,?,?,?,?,?)",
                      (dataset_id, owner, name, n_images, json.dumps(classes), size, now()))
        return self.get_dataset(owner, dataset_id)

    @staticmethod
    def _dataset(row) -> dict[str, Any]:
        return {"id": row["id"], "name": row["name"], "n_images": row["n_images"],
                "classes": json.loads(row["classes"]), "size": row["size"], "created_at": row["created_at"]}

    def get_dataset(self, owner: str, dataset_id: str) -> dict[str, Any]:
        row = self.db.one("SELECT * FROM datasets WHERE owner=? AND id=?", (owner, dataset_id))
        if row is None:
            raise NotFound(f"no dataset {dataset_id!r}")
        return self._dataset(row)

    def delete_dataset(self, owner: str, dataset_id: str) -> None:
        with self.db.tx() as c:
            if c.execute("DELETE FROM datasets WHERE owner=? AND id=?", (owner, dataset_id)).rowcount == 0:
                raise NotFound(f"no dataset {dataset_id!r}")

    # -- pages of the list routes ------------------------------------------------------------------
    def page(self, kind: str, owner: str, limit: int, cursor: str | None = None, job_id: str | None = None,
             class_index: int | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the owner's ``models``, ``datasets`` or ``circuits`` (of one job: in class order; of
        one class)."""
        where, params, order = "owner=?", (owner,), ("created_at", "id")
        if kind == "circuits" and job_id:
            where, params, order = "owner=? AND job_id=?", (owner, job_id), ("class_index", "id")
        if kind == "circuits" and class_index is not None:
            where, params = where + " AND class_index=?", params + (class_index,)
        rows, after = pages.page(self.db.conn(), kind, where, params, order, limit, cursor)
        view = {"models": self._model, "datasets": self._dataset, "circuits": self._circuit}[kind]
        return [view(r) for r in rows], after

    # -- circuits --------------------------------------------------------------------------------
    def add_circuit(self, c, *, circuit_id: str, owner: str, job_id: str, class_index: int, parent: str | None,
                    key: str, model_id: str, dataset_id: str, summary: dict[str, Any]) -> None:
        """Insert inside the caller's transaction ``c`` (the job's completion)."""
        c.execute("INSERT OR IGNORE INTO circuits (id, owner, job_id, class_index, parent, key, model_id, dataset_id, "
                  "summary, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                  (circuit_id, owner, job_id, class_index, parent, key, model_id, dataset_id, json.dumps(summary), now()))

    @staticmethod
    def _circuit(row) -> dict[str, Any]:
        return {"id": row["id"], "job_id": row["job_id"], "class_index": row["class_index"], "parent": row["parent"],
                "key": row["key"], "model_id": row["model_id"], "dataset_id": row["dataset_id"],
                "summary": json.loads(row["summary"]), "created_at": row["created_at"]}

    def get_circuit(self, owner: str, circuit_id: str) -> dict[str, Any]:
        row = self.db.one("SELECT * FROM circuits WHERE owner=? AND id=?", (owner, circuit_id))
        if row is None:
            raise NotFound(f"no circuit {circuit_id!r}")
        return self._circuit(row)

    def list_circuits(self, owner: str, job_id: str | None = None) -> list[dict[str, Any]]:
        if job_id:
            rows = self.db.all("SELECT * FROM circuits WHERE owner=? AND job_id=? ORDER BY class_index", (owner, job_id))
        else:
            rows = self.db.all("SELECT * FROM circuits WHERE owner=? ORDER BY created_at", (owner,))
        return [self._circuit(r) for r in rows]

    def set_summary(self, owner: str, circuit_id: str, summary: dict[str, Any]) -> None:
        """Replace a circuit's summary (its document changed: a person corrected a label)."""
        with self.db.tx() as c:
            if c.execute("UPDATE circuits SET summary=? WHERE owner=? AND id=?",
                         (json.dumps(summary), owner, circuit_id)).rowcount == 0:
                raise NotFound(f"no circuit {circuit_id!r}")

    def delete_circuit(self, owner: str, circuit_id: str, *,
                       unreferenced: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Delete the row; ``unreferenced(key)`` (deleting the artifact folder) runs in the same transaction when
        no other circuit points at the folder."""
        with self.db.tx() as c:
            row = c.execute("SELECT * FROM circuits WHERE owner=? AND id=?", (owner, circuit_id)).fetchone()
            if row is None:
                raise NotFound(f"no circuit {circuit_id!r}")
            c.execute("DELETE FROM circuits WHERE owner=? AND id=?", (owner, circuit_id))
            if unreferenced is not None and c.execute("SELECT 1 FROM circuits WHERE key=? LIMIT 1",
                                                      (row["key"],)).fetchone() is None:
                unreferenced(row["key"])
        return self._circuit(row)
