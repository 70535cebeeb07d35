"""A failed task never leaves the worker's shared cached model modified: the next job on the same weights
(from any key) gets the model as its file holds it."""

from __future__ import annotations

import pytest

from neurflow.service.executors import tasks
from neurflow.service.executors.context import TaskContext
from neurflow.service.jobs.types import ModelRef, RunTask
from neurflow.service.settings import Settings
from neurflow.service.storage import keys

from ..helpers import run_job


def test_a_failed_task_does_not_leave_the_cached_model_modified(tmp_path, assets, monkeypatch):
    import torch

    from neurflow.core.hashing import sha256_file

    ctx = TaskContext(Settings(data_dir=str(tmp_path), workers=0), "cpu")
    ref = ModelRef(id=sha256_file(assets["weights"]), arch="resnet18", num_classes=3)
    ctx.store.put_file(keys.weights(ref.id), assets["weights"])
    before = ctx.model(ref)
    original = before.fc.weight.detach().clone()

    def run_that_breaks_the_model(job, task, ctx, progress):
        model = ctx.model(job.model)
        with torch.no_grad():
            model.fc.weight.zero_()  # what a job cut short may leave: moved, hooked, half-converted
        raise RuntimeError("the job fails on purpose")

    monkeypatch.setitem(tasks._TASKS, type(run_job()), run_that_breaks_the_model)
    with pytest.raises(RuntimeError, match="on purpose"):
        tasks.run_task(RunTask(id="job-1", attempt=1, job=run_job(model=ref)), ctx, lambda event: None)
    after = ctx.model(ref)  # the next job on the same weights, another key's
    assert after is not before
    assert torch.equal(after.fc.weight, original)
