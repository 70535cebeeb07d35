"""A run's finished stages in the artifact store: a job whose worker died continues where it stopped.

The engine keeps each finished stage of a fit (the readouts, each layer's IG and concepts) in a
:class:`~neurflow.core.stages.StageStore`, filed under a key of everything the stage depends on
(parameters, class, selected pixels, weights). :class:`StoredStages` keeps that store under the job's
artifact folder, ``jobs/<job id>/stages/class-<c>/<fit key>/``, which every attempt of the job (and,
on Ray, every node) sees: the next attempt after a killed worker or server loads the stages instead
of computing them. On a local store the files are written there directly; on a remote one (``s3://``)
they are written to the worker's scratch folder and uploaded as each is finished, and an attempt
downloads what earlier ones stored when it opens the fit key.

:class:`StoredLayerChoice` keeps, beside them, the list a job's ``layers: "auto"`` became at its first
attempt: the choice is a calibration on the machine that made it, and an attempt on another worker (or
the same one under other load) must fit the same layers, or it would find none of the stages and make
circuits of other layers than the classes already stored.

A class's stages are removed once its circuit is published (a retry skips the class then), and the
whole ``stages`` folder when the job ends, whatever the end (:meth:`Executor.drop_stages`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from neurflow.core.stages import ChosenLayers, StageStore
from neurflow.service.storage import keys
from neurflow.service.storage.artifacts import ArtifactStore


class StoredStages(StageStore):
    """The finished stages of one class of a job, kept in the artifact store."""

    def __init__(self, store: ArtifactStore, job_id: str, target: int, scratch: Path) -> None:
        self.store = store
        self.prefix = keys.class_stages(job_id, target)
        self.remote = not store.is_local
        super().__init__(scratch / "stages" / job_id / f"class-{target}" if self.remote else store.local_path(self.prefix))

    def open(self, key: str) -> StoredStages:
        super().open(key)
        if self.remote:  # what an earlier attempt (on any machine) stored for this fit
            for name in self.store.listdir(f"{self.prefix}/{key}"):
                if name.endswith(".part") or (self.folder / name).exists():
                    continue
                self.folder.mkdir(parents=True, exist_ok=True)
                part = self.folder / (name + ".part")
                part.write_bytes(self.store.get_bytes(f"{self.prefix}/{key}/{name}"))
                part.replace(self.folder / name)
        return self

    def _write(self, name: str, data: bytes) -> None:
        super()._write(name, data)
        if self.remote:
            self.store.put_bytes(f"{self.prefix}/{self.key}/{name}", data)

    def drop(self) -> None:
        """Remove this class's stages (its circuit is stored: nothing will continue from them)."""
        self.store.delete(self.prefix)
        if self.remote:
            shutil.rmtree(self.root, ignore_errors=True)


class StoredLayerChoice(ChosenLayers):
    """The list a job's ``layers: "auto"`` became, kept in the artifact store (every attempt, on any node, sees it)."""

    def __init__(self, store: ArtifactStore, job_id: str) -> None:  # no local file: the store's key instead
        self.store = store
        self.key = keys.chosen_layers(job_id)

    def _read(self) -> bytes | None:
        try:
            return self.store.get_bytes(self.key)
        except KeyError:
            return None

    def _write(self, data: bytes) -> None:
        self.store.put_bytes(self.key, data)
