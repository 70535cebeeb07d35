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
