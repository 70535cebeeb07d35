"""The service's finished stages (issue 19, item 3) without a server: kept in a remote artifact store
they continue a fit on another machine (another scratch folder); they end with the job."""

from __future__ import annotations

import uuid

import msgspec
import pytest
import torch
import torchvision

from neurflow.core.engine import NeurFlow
from neurflow.service.executors.base import Executor
from neurflow.service.executors.stages import StoredStages
from neurflow.service.jobs.store import JobStore
from neurflow.service.settings import Settings
from neurflow.service.storage import keys
from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.catalog import Catalog
from neurflow.service.storage.db import Database

from ..helpers import run_job

LAYERS = ["fc", "layer4", "layer3", "layer2"]


class Killed(Exception):
    pass


def engine(progress=None) -> NeurFlow:
    return NeurFlow(LAYERS, tau=2, top_n=6, ig_steps=2, select="all", granularities=(1.0, 0.5), progress=progress)


def test_stages_in_a_remote_store_continue_a_fit_on_another_machine(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    images = torch.rand(3, 3, 32, 32)
    whole = engine().fit(model, images, 1).circuit_
    store = ArtifactStore(f"memory://stages-{uuid.uuid4().hex}")

    def kill(event):
        if event.stage == f"ig {LAYERS[2]}":
            raise Killed  # two layers are finished

    with pytest.raises(Killed):
        engine(kill).fit(model, images, 1, stages=StoredStages(store, "job-1", 1, tmp_path / "machine-a"))
    prefix = keys.class_stages("job-1", 1)
    (key,) = store.listdir(prefix)
    assert store.listdir(f"{prefix}/{key}") == ["layer-0.json", "layer-1.json", "readouts.safetensors"]

    seen: list[str] = []
    other = StoredStages(store, "job-1", 1, tmp_path / "machine-b")  # nothing of machine a's scratch
    resumed = engine(lambda event: seen.append(event.stage)).fit(model, images, 1, stages=other).circuit_
    assert "activations" not in seen and f"ig {LAYERS[0]}" not in seen and f"ig {LAYERS[1]}" not in seen
    assert f"ig {LAYERS[2]}" in seen
    assert msgspec.structs.replace(resumed, timings={}) == msgspec.structs.replace(whole, timings={})
    assert "layer-2.json" in store.listdir(f"{prefix}/{key}")  # the new stage reached the store too
    other.drop()
    assert not store.exists(prefix) and not other.root.exists()


def test_a_job_that_ends_drops_its_stages_and_a_requeued_one_keeps_them(tmp_path):
    settings = Settings(data_dir=str(tmp_path), workers=0)
    jobs = JobStore(Database(tmp_path / "j.db"))
    Executor(settings, jobs, Catalog(jobs.db))  # registers its end-of-job hook
    store = ArtifactStore(settings.artifact_url)

    def keep(job_id: str) -> None:
        store.put_bytes(f"{keys.class_stages(job_id, 0)}/k/layer-0.json", b"{}")

    for job_id, end in (("job-done", "succeeded"), ("job-failed", "failed"), ("job-requeued", None),
                        ("job-cancelled-queued", "cancel")):
        jobs.create(job_id, "o1", run_job(), max_attempts=2)
        assert jobs.claim(job_id, "w0")
        keep(job_id)
        if end in ("succeeded", "failed"):
            jobs.finish(job_id, end)
        else:
            jobs.requeue(job_id, "the worker died")
            if end == "cancel":  # a job waiting for its next attempt, cancelled
                jobs.request_cancel("o1", job_id)
    assert not store.exists(keys.stages("job-done")) and not store.exists(keys.stages("job-failed"))
    assert not store.exists(keys.stages("job-cancelled-queued"))
    assert store.exists(keys.class_stages("job-requeued", 0))  # its next attempt continues from them


def test_auto_layers_are_chosen_by_the_first_attempt_and_kept_for_the_later_ones(tmp_path, assets, monkeypatch):
    """``layers: "auto"`` is a calibration on the worker's machine: a later attempt (another worker, another
    load) must fit the list the first one chose, or it finds none of its stages."""
    from neurflow.core import pipeline
    from neurflow.core.hashing import sha256_file
    from neurflow.core.layer_budget import suggest
    from neurflow.service.executors import units
    from neurflow.service.executors.context import TaskContext
    from neurflow.service.jobs.types import ModelRef

    settings = Settings(data_dir=str(tmp_path), workers=0)
    ref = ModelRef(id=sha256_file(assets["weights"]), arch="resnet18", num_classes=3)
    job = run_job(model=ref)
    job = msgspec.structs.replace(job, spec=msgspec.structs.replace(  # as the API stores it: mean and std registered
        job.spec, engine=msgspec.structs.replace(job.spec.engine, layers="auto"),
        model=msgspec.structs.replace(job.spec.model, mean=[0.5] * 3, std=[0.5] * 3)))
    first_worker = TaskContext(settings, "cpu")
    first_worker.store.put_file(keys.weights(ref.id), assets["weights"])
    first_worker.store.put_dir(keys.images(job.dataset.id), assets["images"])
    chosen = units.prepare(job, first_worker, job_id="job-1").engine.layers
    n_images = 18  # the dataset's images (select: all)
    assert chosen == suggest(first_worker.model(ref), 32, job.spec.engine, n_images).layers and len(chosen) > 2
    assert first_worker.store.exists(keys.chosen_layers("job-1"))

    # the second attempt runs where the calibration would choose another list
    other = chosen[:2]
    calls = []
    monkeypatch.setattr(pipeline, "resolve_layers",
                        lambda params, *a, **k: calls.append(a) or msgspec.structs.replace(params, layers=other))
    second_worker = TaskContext(settings, "cpu")
    assert units.prepare(job, second_worker, job_id="job-1").engine.layers == chosen
    assert calls == []
    assert units.prepare(job, second_worker, job_id="job-2").engine.layers == other  # another job chooses afresh
    assert len(calls) == 1
    # the choice ends with the job, like its stages
    jobs = JobStore(Database(tmp_path / "j.db"))
    Executor(settings, jobs, Catalog(jobs.db)).drop_stages("job-1")
    assert not first_worker.store.exists(keys.chosen_layers("job-1"))
