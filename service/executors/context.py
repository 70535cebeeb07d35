"""What a task runs with inside a worker process (local or Ray): the artifact store, the device, the
models kept resident between jobs and the batch sizes that fit the device; and :class:`JobCancelled`,
which a task's progress callback raises once a cancel was requested.

Apart from :mod:`~neurflow.service.executors.tasks` so that the units of work
(:mod:`~neurflow.service.executors.units`), which tasks call, need not import tasks for its type.
"""

from __future__ import annotations

import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from neurflow.service.jobs.types import ModelRef, NewCircuit
from neurflow.service.settings import Settings
from neurflow.service.storage import keys
from neurflow.service.storage.artifacts import ArtifactStore


class JobCancelled(Exception):
    pass


class TaskContext:
    def __init__(self, settings: Settings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.store = ArtifactStore(settings.artifact_url, cache_dir=settings.scratch_path / "cache")
        self._models: OrderedDict[str, Any] = OrderedDict()
        # called with each class of a run as soon as it is stored (the local worker sends it to the executor)
        self.emit: Callable[[NewCircuit], None] | None = None
        from neurflow.service.executors.gpu import BatchMemory

        self.memory = BatchMemory()  # batch sizes that fit this worker's device, learned from OOM errors

    def model(self, ref: ModelRef):
        """The user's model, loaded once and kept resident (LRU of ``model_cache_size``)."""
        if ref.id in self._models:
            self._models.move_to_end(ref.id)
            return self._models[ref.id]
        from neurflow.core.model_intake import load_model

        model = load_model(ref.arch, self.store.local_path(keys.weights(ref.id)), ref.num_classes)
        if self.device != "cpu":
            model = model.to(self.device)
        self._models[ref.id] = model
        while len(self._models) > max(1, self.settings.model_cache_size):
            self._models.popitem(last=False)
        return model

    def forget(self, model_id: str | None) -> None:
        """Drop a resident model: a task that failed part-way may have left it moved, hooked or half-converted,
        and the next job on the same weights (of any key) loads it again from the file."""
        if model_id is not None:
            self._models.pop(model_id, None)

    def scratch(self, job_id: str) -> Path:
        path = self.settings.scratch_path / "jobs" / job_id
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def output_dir(self, key: str, job_id: str) -> Path:
        """Where a task writes an artifact folder: in place for a local store, else scratch."""
        if self.store.is_local:
            path = self.store.local_path(key)
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True, exist_ok=True)
            return path
        path = self.scratch(job_id) / "out"
        path.mkdir()
        return path

    def publish(self, key: str, local: Path) -> None:
        if not self.store.is_local:
            self.store.put_dir(key, local)
