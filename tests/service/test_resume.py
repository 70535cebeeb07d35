"""Resumable service runs (issue 19, item 3): a job whose worker, then whose whole server, was killed
with ``kill -9`` continues from the stages its earlier attempts finished, recomputes none of them and
makes the circuit an uninterrupted job makes; its stages are gone once it ends.

"Not recomputed" is read from the stage files themselves: the engine writes every stage it computes
(written aside and renamed, so each write is a new inode), and loads, without writing, every stage
it finds. A finished stage whose inode and mtime are unchanged after a later attempt ran past it
was loaded, not computed again.
"""

from __future__ import annotations

import os
import signal

import msgspec
import pytest

from neurflow.client.api import Client
from neurflow.core.circuit import Circuit
from neurflow.service.storage import keys

from .helpers import KEY_A, LiveServer, identity, job_spec, stage_folder, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

#: four layer pairs, each IG slow enough (a few seconds) to kill the worker between two of them
ENGINE = {"layers": ["fc", "layer4", "layer3", "layer2", "layer1"], "tau": 2, "top_n": 6, "granularities": [1.0, 0.5],
          "ig_steps": 40, "n_exemplars": 3}


def without_timings(circuit: Circuit) -> Circuit:
    return msgspec.structs.replace(circuit, timings={})


@pytest.mark.slow  # three attempts and an uninterrupted job: about 5 minutes on 2 busy cores
def test_a_killed_worker_and_server_continue_from_the_finished_stages(tmp_path, assets):
    data = tmp_path / "data"
    env = {"NEURFLOW_MAX_ATTEMPTS": "3", "NEURFLOW_RATE_LIMIT_PER_MINUTE": "1000000"}  # the test polls often
    server = LiveServer(data, workers=1, env=env).start()
    try:
        with Client(server.url, KEY_A, timeout=300) as c:
            mid = c.upload_model(assets["weights"], assets["descriptor"])["id"]
            did = c.upload_dataset(assets["images"])["id"]
            spec = job_spec(mid, did, target=1, engine=ENGINE)
            job = c.submit(spec)["id"]
            root = data / "artifacts" / keys.class_stages(job, 1)
            # attempt 1: the worker is killed once the second layer is finished
            folder = wait_for(lambda: stage_folder(root, "layer-1.json"), 600, interval=0.02, what="layer 1's stage")
            os.kill(server.health()["workers"][0]["pid"], signal.SIGKILL)
            first = identity(folder)
            assert sorted(first) == ["layer-0.json", "layer-1.json", "readouts.safetensors"], first
            # attempt 2 runs past them without writing them again; then the whole server is killed
            wait_for(lambda: (folder / "layer-2.json").exists(), 600, interval=0.02, what="attempt 2's layer 2")
            server.proc.kill()
            server.proc.wait(10)
            second = identity(folder)
            assert {name: second[name] for name in first} == first, "attempt 2 computed a finished stage again"
            assert "layer-2.json" in second
    finally:
        server.stop()
    # attempt 3, after the server's restart: continues from layer 3
    server = LiveServer(data, workers=1, env=env).start()
    try:
        with Client(server.url, KEY_A, timeout=300) as c:
            seen: list[dict[str, tuple[int, int]]] = []

            def watch() -> bool:
                if folder.is_dir():
                    seen.append(identity(folder))
                return c.job(job)["state"] not in ("queued", "running")

            wait_for(watch, 600, interval=0.05, what="attempt 3 to end")
            final = c.job(job)
            assert final["state"] == "succeeded" and final["attempt"] == 3, final
            # the first look, before attempt 3 got far, finds every stage attempt 2 left
            assert seen and set(second) <= set(seen[0]), (second, seen[:1])
            for files in seen:  # layer 3 may be written before the end; none of the others is written again
                kept = {name: files[name] for name in second if name in files}  # (the job's end deletes them)
                assert kept == {name: second[name] for name in kept}
            assert not (data / "artifacts" / keys.stages(job)).exists()  # stages end with the job
            resumed = Circuit.from_json(c.request("GET", f"/v1/circuits/{final['result']['circuits'][0]['id']}",
                                                  params={"arrays": "inline"}).content)
            # the same job, never interrupted
            again = c.follow(c.submit(spec)["id"])
            assert again["state"] == "succeeded" and again["attempt"] == 1, again
            whole = Circuit.from_json(c.request("GET", f"/v1/circuits/{again['result']['circuits'][0]['id']}",
                                                params={"arrays": "inline"}).content)
            assert without_timings(resumed) == without_timings(whole)
            assert not (data / "artifacts" / keys.stages(again["id"])).exists()
    finally:
        server.stop()
