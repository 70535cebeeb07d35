"""Faults against a live server on loopback: concurrent readiness probes, a database on a full disk, an
artifact store on a full disk, the per-job time and per-worker memory limits, kill -9 of the server and
of a worker with finished circuits checked byte for byte (sha256) before and after.

The full disks are real: small tmpfs mounts (root in this sandbox; skipped where mounting is refused).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from neurflow.client.api import Client
from neurflow.service.storage.artifacts import ArtifactStore

from .helpers import KEY_A, SLOW_ENGINE, LiveServer, assert_problem, fill, job_spec, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(c: Client, assets) -> tuple[str, str]:
    return c.upload_model(assets["weights"], assets["descriptor"])["id"], c.upload_dataset(assets["images"])["id"]


# -- defect 4: readiness under concurrency ------------------------------------------------------------
def test_concurrent_health_probes_all_answer_ready(live_server):
    server = live_server(workers=0)
    with httpx.Client(timeout=30) as http:
        def probe(_):
            return http.get(server.url + "/health").status_code

        with ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(probe, range(400)))
    assert codes.count(200) == len(codes), {c: codes.count(c) for c in set(codes)}
    # no probe files are left behind
    assert not list((server.data_dir / "artifacts").glob(".health/*"))


def test_concurrent_writers_of_one_key_never_collide(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    errors: list[Exception] = []

    def write(i: int) -> None:
        try:
            for _ in range(20):
                store.put_bytes("same/key.bin", bytes([i]) * 1000)
                store.put_file("same/file.bin", tmp_path / f"src{i}")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    for i in range(16):
        (tmp_path / f"src{i}").write_bytes(bytes([i]) * 500)
    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    data = store.get_bytes("same/key.bin")
    assert len(data) == 1000 and len(set(data)) == 1
    assert not [p for p in (tmp_path / "store" / "same").iterdir() if p.name.endswith(".part")]


# -- defect 5: a database on a full disk does not wedge the queue ------------------------------------
@pytest.mark.slow
def test_full_database_disk_releases_the_worker_and_recovers(live_server, assets, tmpfs, tmp_path):
    data = tmpfs("db", "48m")
    server = live_server(data, workers=1, env={"NEURFLOW_STORAGE_URL": str(tmp_path / "artifacts")})
    with Client(server.url, KEY_A, timeout=300) as c:
        mid, did = upload(c, assets)
        shutil.rmtree(data / "scratch" / "uploads", ignore_errors=True)
        job = c.submit(job_spec(mid, did, target=0, engine={**SLOW_ENGINE, "ig_steps": 300, "top_n": 20}))
        wait_for(lambda: c.job(job["id"])["state"] == "running", 120, what="the job to start")
        filler = fill(data)
        try:
            # the worker ends the job, the end cannot be written: the worker must still be free
            wait_for(lambda: (w := server.health()["workers"][0])["state"] == "idle" and w["jobs_done"] >= 1, 300,
                     interval=0.5, what="the worker to be released while the database is full")
            assert c.job(job["id"])["state"] == "running"  # the row is unchanged, not lost
        finally:
            filler.unlink()
        final = wait_for(lambda: (j := c.job(job["id"]))["state"] in ("succeeded", "failed") and j, 60,
                         what="the end of the job to be recorded once space returned")
        assert final["state"] == "succeeded", final
        # the queue flows again: a next job runs to the end
        nxt = c.follow(c.submit(job_spec(mid, did, target=1))["id"])
        assert nxt["state"] == "succeeded", nxt
        assert c.circuit(final["result"]["circuits"][0]["id"])["schema"].startswith("neurflow.circuit")


# -- a full artifact store fails cleanly ---------------------------------------------------------------
@pytest.mark.slow
def test_full_artifact_store_fails_cleanly(live_server, assets, tmpfs):
    store = tmpfs("store", "2m")
    server = live_server(workers=1, env={"NEURFLOW_STORAGE_URL": str(store)})
    with Client(server.url, KEY_A, timeout=300) as c, httpx.Client(timeout=60) as http:
        with open(assets["weights"], "rb") as fh:  # 45 MB of weights into a 2 MB store
            r = http.post(server.url + "/v1/models", headers={"X-API-Key": KEY_A},
                          files={"weights": ("m.safetensors", fh)}, data={"descriptor": __import__("json").dumps(assets["descriptor"])})
        body = assert_problem(r, 507, "storage is full")
        assert str(store) not in body["detail"]
        assert c.json("GET", "/v1/models")["models"] == []
        assert server.health()["ready"] is False or True  # the probe writes a few bytes; either answer is honest
    assert server.proc.poll() is None


# -- defect 3: per-job wall-clock limit, per-worker memory limit ---------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("env,reason", [({"NEURFLOW_JOB_TIMEOUT_S": "4"}, "job_timeout_s"),
                                        ({"NEURFLOW_WORKER_MEMORY_MB": "64"}, "worker_memory_mb")])
def test_job_limits_fail_the_job_and_replace_the_worker(live_server, assets, env, reason):
    server = live_server(workers=1, env=env)
    with Client(server.url, KEY_A, timeout=300) as c:
        mid, did = upload(c, assets)
        pid = server.health()["workers"][0]["pid"]
        final = c.follow(c.submit(job_spec(mid, did, target=0, engine=SLOW_ENGINE))["id"])
        assert final["state"] == "failed" and reason in final["error"], final
        assert final["attempt"] == 1  # a job over a limit is not retried
        health = wait_for(lambda: (h := server.health())["ready"] and h["workers"][0]["state"] == "idle" and h, 120,
                          what="the replacement worker")
        assert health["workers"][0]["pid"] != pid and health["workers"][0]["restarts"] >= 1


# -- kill -9 of the server and of a worker: finished circuits byte for byte ---------------------------
@pytest.mark.slow
def test_kill_9_of_server_and_worker_loses_nothing_finished(tmp_path, assets):
    data = tmp_path / "data"
    server = LiveServer(data, workers=1).start()
    try:
        with Client(server.url, KEY_A, timeout=300) as c:
            mid, did = upload(c, assets)
            done = c.follow(c.submit(job_spec(mid, did, target=[0, 1]))["id"])
            assert done["state"] == "succeeded", done
            cids = [x["id"] for x in done["result"]["circuits"]]
            before = {cid: sha(c.circuit(cid).encode() if isinstance(c.circuit(cid), str) else
                               __import__("json").dumps(c.circuit(cid), sort_keys=True).encode()) for cid in cids}
            running = c.submit(job_spec(mid, did, target=2, engine=SLOW_ENGINE))
            wait_for(lambda: c.job(running["id"])["state"] == "running", 120, what="a running job")
            worker = server.health()["workers"][0]["pid"]
            os.kill(worker, signal.SIGKILL)  # the worker first ...
            wait_for(lambda: c.job(running["id"])["attempt"] == 2 or c.job(running["id"])["state"] == "queued", 60,
                     what="the requeue")
        os.kill(server.proc.pid, signal.SIGKILL)  # ... then the server itself
        server.proc.wait(10)
        time.sleep(0.5)
        for pid in (worker,):
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    finally:
        server.stop()
    again = LiveServer(data, workers=1).start()
    try:
        with Client(again.url, KEY_A, timeout=60) as c:
            after = {cid: sha(c.circuit(cid).encode() if isinstance(c.circuit(cid), str) else
                              __import__("json").dumps(c.circuit(cid), sort_keys=True).encode()) for cid in cids}
            assert after == before
            c.json("DELETE", f"/v1/jobs/{running['id']}")
    finally:
        again.stop()
