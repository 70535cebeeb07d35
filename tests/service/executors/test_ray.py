"""The Ray executor against a real Ray cluster started by the tests (2 CPUs, token auth).

A batch job of every class of the tiny model runs as Ray tasks (labeling in a CLIP actor) and makes
the same circuit documents as the local executor; a Ray worker process killed mid-job is retried by
Ray and the job completes with each class once; a cancel ends the job and its Ray tasks; the
server's per-job time limit and per-worker memory limit fail a job on Ray as they do locally; a Ray
job streams the engine's in-class stages as the same progress events.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

import msgspec  # noqa: E402

from neurflow.client.api import Client  # noqa: E402
from neurflow.progress import ProgressEvent  # noqa: E402

from ..helpers import (  # noqa: E402
    ENGINE,
    KEY_A,
    REPO,
    SLOW_ENGINE,
    LiveServer,
    identity,
    job_spec,
    stage_folder,
    wait_for,
    write_tiny_clip,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

#: a few seconds a class on the shared CPU: long enough to kill a Ray worker in the middle of one
MEDIUM_ENGINE = {**ENGINE, "ig_steps": 150, "tau": 4, "top_n": 12}
#: four layer pairs whose IG takes seconds each: a class task is killed between two of them
RESUME_ENGINE = {**ENGINE, "layers": ["fc", "layer4", "layer3", "layer2", "layer1"], "ig_steps": 40}


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head in a child process; yields the environment a server needs to join it."""
    temp = tempfile.mkdtemp(prefix="/tmp/nfray")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "PYTHONPATH": str(REPO)}
    log = open(Path(temp) / "head.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tests.service.executors.ray_head", temp, "2"],
                            stdout=subprocess.PIPE, stderr=log, cwd=REPO, env=env)
    address = proc.stdout.readline().decode().strip()
    assert address, (Path(temp) / "head.log").read_text()[-3000:]
    yield {"address": address, "temp": temp,
           "env": {k: env[k] for k in ("RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def ray_server(ray_head, tmp_path_factory):
    data = tmp_path_factory.mktemp("ray") / "data"
    labeling = write_tiny_clip(data / "assets")
    env = {**ray_head["env"], "NEURFLOW_EXECUTOR": "ray", "NEURFLOW_RAY_ADDRESS": ray_head["address"],
           "NEURFLOW_RAY_NUM_GPUS": "0", "NEURFLOW_TORCH_THREADS": "1"}
    srv = LiveServer(data, workers=1, env=env).start(timeout=180)
    srv.labeling = labeling
    yield srv
    srv.stop()


#: limits of the second server: a class of ENGINE (a cold Ray worker imports torch first) stays under the
#: time limit even on a machine loaded to 4.5 (at 30 s its prepare task once ran out), LONG_ENGINE takes
#: minutes; the memory limit is about 1 GB over a task process's resident size with the tiny model
#: (0.9-1.0 GB here), a 224 px readout batch goes past it
LIMIT_S, LIMIT_MB = 60, 2000
#: minutes of IG in chunks of one patch: long, but small (SLOW_ENGINE's chunks of 8 x 4000 samples
#: reach 1.6 GB)
LONG_ENGINE = {**SLOW_ENGINE, "batch_size": 1}
#: patches at 224 px in one forward batch: conv1 alone writes 472 x 64 x 112 x 112 floats (1.5 GB)
HUGE_ENGINE = {**ENGINE, "forward_batch_size": 1024}


@pytest.fixture(scope="module")
def limited_server(ray_head, tmp_path_factory):
    env = {**ray_head["env"], "NEURFLOW_EXECUTOR": "ray", "NEURFLOW_RAY_ADDRESS": ray_head["address"],
           "NEURFLOW_RAY_NUM_GPUS": "0", "NEURFLOW_TORCH_THREADS": "1", "NEURFLOW_JOB_TIMEOUT_S": str(LIMIT_S),
           "NEURFLOW_WORKER_MEMORY_MB": str(LIMIT_MB)}
    srv = LiveServer(tmp_path_factory.mktemp("ray-limits") / "data", workers=1, env=env).start(timeout=180)
    yield srv
    srv.stop()


def _upload(server, assets, weights=None, descriptor=None) -> tuple[str, str]:
    with Client(server.url, KEY_A) as c:
        model = c.upload_model(weights or assets["weights"], descriptor or assets["descriptor"])
        dataset = c.upload_dataset(assets["images"])
    return model["id"], dataset["id"]


def _documents(server, job_id) -> dict[int, dict]:
    with Client(server.url, KEY_A) as c:
        return {row["class_index"]: c.circuit(row["id"]) for row in c.circuits(job_id)}


def _comparable(doc: dict) -> dict:
    """A document minus what differs between runs by design: timings and the server's own paths."""
    doc = json.loads(json.dumps(doc))
    doc.pop("timings", None)
    if doc.get("labeling"):
        doc["labeling"].pop("seconds", None)
        doc["labeling"].pop("patches_source", None)  # the data folder of each server
    return doc


def _ray_pids(title: str) -> list[int]:
    """Processes of the test's Ray cluster running ``title`` (Ray sets a worker's title to its task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace") == f"ray::{title}":
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _local_documents(server, job: dict) -> dict[int, dict]:
    """The same job through the local executor's task code (``tasks.run_task``, as a worker runs it),
    in this process, reading the model and images from the server's artifact store."""
    import msgspec

    from neurflow.service.executors.context import TaskContext
    from neurflow.service.executors.tasks import run_task
    from neurflow.service.jobs.types import RunJob, RunTask
    from neurflow.service.settings import Settings
    from neurflow.service.storage import keys

    ctx = TaskContext(Settings(data_dir=str(server.data_dir)), "cpu")
    # the API shows asset files as <assets>/... (never the server's folders); the worker reads the real ones
    spec = json.loads(json.dumps(job["spec"]).replace("<assets>", str(server.data_dir / "assets")))
    task = RunTask(id="local-" + job["id"], attempt=1, job=msgspec.convert(spec, RunJob))
    output = run_task(task, ctx, lambda event: None)
    assets = str(server.data_dir / "assets")  # shown to callers as <assets>, as the API shows the Ray documents
    return {c.class_index: json.loads(ctx.store.get_bytes(keys.document(c.key)).decode().replace(assets, "<assets>"))
            for c in output.circuits}


def test_batch_job_on_ray_matches_the_local_executor(ray_server, assets):
    mid, did = _upload(ray_server, assets)
    spec = job_spec(mid, did, target="all", labeling=ray_server.labeling)
    with Client(ray_server.url, KEY_A) as c:
        health = c.health()
        assert health["workers"][0]["name"] == "ray" and health["ready"], health
        events: list[dict] = []
        final = c.follow(c.submit(spec)["id"], events.append)
        assert final["state"] == "succeeded", final
        assert sorted(x["class_index"] for x in final["result"]["circuits"]) == [0, 1, 2]
        assert final["done"] == final["total"] and final["progress"] == 1.0
    # the engine's stages inside a class reach the SSE stream as the events the local worker sends
    in_class = [msgspec.convert(e["progress_event"], ProgressEvent) for e in events if e.get("progress_event")]
    in_class = [e for e in in_class if e.target is not None]
    assert in_class and all(e.classes_total == 3 and 0 <= e.classes_done <= 3 for e in in_class), events
    assert {e.target for e in in_class} <= {0, 1, 2}
    assert {"activations", "ig fc", "grouping neurons"} & {e.stage for e in in_class} and all(e.unit for e in in_class)
    on_ray = _documents(ray_server, final["id"])
    assert all(g["labels"] for doc in on_ray.values() for layer in doc["layers"] for g in layer["groups"])
    on_local = _local_documents(ray_server, final)
    assert sorted(on_local) == sorted(on_ray) == [0, 1, 2]
    for c in on_ray:
        assert _comparable(on_ray[c]) == _comparable(on_local[c]), f"class {c} differs between executors"


def test_killed_ray_worker_is_retried_by_ray(ray_server, assets):
    mid, did = _upload(ray_server, assets)
    with Client(ray_server.url, KEY_A) as c:
        job = c.submit(job_spec(mid, did, target=[0, 1, 2], engine=MEDIUM_ENGINE))
        victims = wait_for(lambda: _ray_pids("_class_task"), 120, interval=0.05, what="a running class task")
        time.sleep(0.5)  # inside the fit
        assert victims[0] in _ray_pids("_class_task"), "the class task ended before it could be killed"
        os.kill(victims[0], signal.SIGKILL)
        final = c.follow(job["id"])
        assert final["state"] == "succeeded", final
        assert final["attempt"] == 1  # Ray retried the task; the service did not requeue the job
        listed = c.circuits(job["id"])
        assert sorted(x["class_index"] for x in listed) == [0, 1, 2]  # nothing lost, nothing twice
        for row in listed:
            assert c.circuit(row["id"])["target"]["class_index"] == row["class_index"]


def test_a_ray_task_run_again_continues_from_the_stages_of_the_killed_one(ray_server, assets):
    """Issue 19, item 3 on Ray: the class task killed after its second layer is run again by Ray and
    loads the finished stages (their files are never written again) instead of computing them."""
    from neurflow.service.storage import keys

    mid, did = _upload(ray_server, assets)
    with Client(ray_server.url, KEY_A) as c:
        job = c.submit(job_spec(mid, did, target=1, engine=RESUME_ENGINE))["id"]
        root = ray_server.data_dir / "artifacts" / keys.class_stages(job, 1)
        folder = wait_for(lambda: stage_folder(root, "layer-1.json"), 300, interval=0.02, what="layer 1's stage")
        os.kill(_ray_pids("_class_task")[0], signal.SIGKILL)
        first = identity(folder)
        assert sorted(first) == ["layer-0.json", "layer-1.json", "readouts.safetensors"], first
        wait_for(lambda: (folder / "layer-2.json").exists(), 300, interval=0.02, what="the retried task's layer 2")
        assert {name: identity(folder)[name] for name in first} == first, "the retried task computed them again"
        final = c.follow(job)
        assert final["state"] == "succeeded" and final["attempt"] == 1, final
        assert not (ray_server.data_dir / "artifacts" / keys.stages(job)).exists()


def test_an_auto_job_on_ray_fits_one_list_in_every_class_task(ray_server, assets):
    """``layers: "auto"`` on Ray: the job's prepare task chooses the list and keeps it in the artifact store,
    each class task (another Ray worker process) reads it, and every class records the suggested list. (Here
    every calibration would agree; that a kept list wins over a new calibration is tested without Ray in
    test_stages.py.)"""
    from neurflow.core.layer_budget import suggest
    from neurflow.core.model_intake import load_model
    from neurflow.core.params import EngineParams

    engine = {**ENGINE, "layers": "auto"}
    mid, did = _upload(ray_server, assets)
    with Client(ray_server.url, KEY_A) as c:
        final = c.follow(c.submit(job_spec(mid, did, target=[0, 1], engine=engine))["id"])
        assert final["state"] == "succeeded", final
        circuits = [c.circuit(row["id"]) for row in c.circuits(final["id"])]
    expected = suggest(load_model("resnet18", assets["weights"], 3), 32, msgspec.convert(engine, EngineParams),
                       n_images=18).layers  # at 32 px every candidate fits the default budget, on any machine
    assert [[layer["name"] for layer in doc["layers"]] for doc in circuits] == [expected, expected]


def test_cancel_on_ray_cancels_the_tasks(ray_server, assets):
    mid, did = _upload(ray_server, assets)
    with Client(ray_server.url, KEY_A) as c:
        job = c.submit(job_spec(mid, did, target="all", engine={**MEDIUM_ENGINE, "ig_steps": 2000}))
        # ceilings, not timings: on a loaded 2-core machine Ray's first worker took over two minutes to start
        wait_for(lambda: _ray_pids("_class_task"), 300, interval=0.1, what="a running class task")
        c.cancel(job["id"])
        final = c.follow(job["id"])
        assert final["state"] == "cancelled", final
        wait_for(lambda: not _ray_pids("_class_task"), 90, what="the class tasks to stop")
        assert len(c.circuits(job["id"])) < 3


def test_time_and_memory_limits_on_ray(limited_server, assets):
    mid, did = _upload(limited_server, assets)
    from safetensors.torch import load_file, save_file

    weights = Path(tempfile.mkdtemp()) / "tiny224.safetensors"  # other bytes: a model id of its own
    save_file(load_file(str(assets["weights"])), str(weights), metadata={"input": "224"})
    big, _ = _upload(limited_server, assets, weights, {**assets["descriptor"], "input_size": 224})
    with Client(limited_server.url, KEY_A) as c:
        first = c.follow(c.submit(job_spec(mid, did, target=[0]))["id"])
        assert first["state"] == "succeeded", first.get("error")
        kept = c.circuit(first["result"]["circuits"][0]["id"])

        slow = c.follow(c.submit(job_spec(mid, did, target=[0], engine=LONG_ENGINE))["id"])
        assert slow["state"] == "failed" and "job_timeout_s" in slow["error"], slow
        assert "class 0" in slow["error"] and slow["attempt"] == 1, slow
        wait_for(lambda: not _ray_pids("_class_task"), 30, what="the timed-out class task to be cancelled")

        spec = job_spec(big, did, target=[1], engine=HUGE_ENGINE)
        spec["model"]["input_size"] = 224
        huge = c.follow(c.submit(spec)["id"])
        assert huge["state"] == "failed" and "worker_memory_mb" in huge["error"], huge
        assert huge["attempt"] == 1, huge  # neither Ray's retry nor the service's reran it
        wait_for(lambda: not _ray_pids("_class_task"), 30, what="the retried class task to be cancelled")

        after = c.follow(c.submit(job_spec(mid, did, target=[2]))["id"])
        assert after["state"] == "succeeded", after  # the executor runs the next job
        assert [x["id"] for x in c.circuits(first["id"])] == [first["result"]["circuits"][0]["id"]]
        assert c.circuit(first["result"]["circuits"][0]["id"]) == kept  # nothing finished is lost
