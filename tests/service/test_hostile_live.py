"""A live server with two keys: isolation on every route of the OpenAPI document, load (concurrent readers
while a job runs, many jobs submitted at once) and the web process's memory (no torch, RSS idle and under
load). The measured numbers are printed and written to ``$NEURFLOW_HARDENING_REPORT`` when set
(docs/security.md quotes them)."""

from __future__ import annotations

import json
import os
import re
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from neurflow.client.api import Client

from .helpers import KEY_A, KEY_B, SLOW_ENGINE, LiveServer, job_spec, labeling_section, wait_for, write_tiny_clip

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
A, B = {"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}
REPORT: dict = {}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture(scope="module")
def live(tmp_path_factory, assets):
    data = tmp_path_factory.mktemp("live-hostile") / "data"
    labeling = write_tiny_clip(data / "assets")
    server = LiveServer(data, workers=1, env={"NEURFLOW_RATE_LIMIT_PER_MINUTE": "1000000", "NEURFLOW_MAX_JOBS_PER_KEY": "1000"}).start()
    try:
        time.sleep(3)
        REPORT["rss_idle_mb"] = round(rss_mb(server.proc.pid), 1)
        with Client(server.url, KEY_A, timeout=300) as c:
            model = c.upload_model(assets["weights"], assets["descriptor"])["id"]
            dataset = c.upload_dataset(assets["images"])["id"]
            job = c.follow(c.submit(job_spec(model, dataset, target=0, labeling=labeling))["id"])
            assert job["state"] == "succeeded", job
            circuit = job["result"]["circuits"][0]["id"]
        REPORT["rss_after_upload_and_job_mb"] = round(rss_mb(server.proc.pid), 1)
        yield {"server": server, "model_id": model, "dataset_id": dataset, "job_id": job["id"], "circuit_id": circuit}
    finally:
        server.stop()
        out = os.environ.get("NEURFLOW_HARDENING_REPORT")
        if out:
            Path(out).write_text(json.dumps(REPORT, indent=2))
        print("\nhardening measurements:", json.dumps(REPORT))


def test_the_web_process_holds_no_torch(live):
    pid = live["server"].proc.pid
    assert not maps_torch(pid), "libtorch is mapped into the web process"
    assert REPORT["rss_after_upload_and_job_mb"] < 400, REPORT
    # the worker does hold it: the check can see torch where it is
    worker = live["server"].health()["workers"][0]["pid"]
    assert maps_torch(worker)


def _calls(live) -> list[tuple[str, str, dict | None]]:
    """Every operation of the document, with A's ids in its path (and in its body where it takes ids)."""
    doc = httpx.get(live["server"].url + "/schema/openapi.json").json()
    ids = {"model_id": live["model_id"], "dataset_id": live["dataset_id"], "job_id": live["job_id"],
           "circuit_id": live["circuit_id"], "group_id": "g0", "name": "0.png", "fmt": "graphml"}
    calls = []
    for path, item in doc["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method in item:
            if "{" not in path and not path.startswith("/v1/atlas") and not (path == "/v1/jobs" and method == "post"):
                continue  # listings: checked below (B's are empty)
            body = None
            if path == "/v1/jobs" and method == "post":
                body = job_spec(live["model_id"], live["dataset_id"])
            elif path.endswith("/labels"):
                body = {"labeling": labeling_section()}
            elif path.endswith("/evaluate"):
                body = {}
            elif path.endswith("/label"):
                body = {"label": "red disc"}
            url = re.sub(r"{(\w+)}", lambda m: ids[m.group(1)], path)
            if path.startswith("/v1/atlas"):
                url += f"?job={live['job_id']}"
            calls.append((method.upper(), url, body))
    return calls


def test_two_keys_are_isolated_on_every_route(live):
    url = live["server"].url
    calls = _calls(live)
    assert len(calls) >= 15, calls
    with httpx.Client(base_url=url, timeout=120) as http:
        before = {p: http.get(p, headers=A).content for p in
                  (f"/v1/circuits/{live['circuit_id']}", f"/v1/models/{live['model_id']}", f"/v1/jobs/{live['job_id']}")}
        for method, path, body in calls:
            if method == "POST" and path.endswith("/debug"):
                r = http.post(path, headers=B, files={"image": ("x.png", b"\x89PNG")})
            else:
                r = http.request(method, path, headers=B, json=body)
            assert r.status_code in (404, 422), (method, path, r.status_code, r.text[:300])
            text = r.text
            for secret in (live["model_id"], live["dataset_id"]):
                if secret not in path and (body is None or secret not in json.dumps(body)):
                    assert secret not in text, (method, path, text)
        # listings of B are empty, A's objects untouched
        for listing in ("/v1/models", "/v1/datasets", "/v1/jobs", "/v1/circuits"):
            assert all(not v for v in http.get(listing, headers=B).json().values()), listing
        after = {p: http.get(p, headers=A).content for p in before}
        assert after == before
    REPORT["isolation_routes_checked"] = len(calls)


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def test_concurrent_readers_while_a_job_runs(live):
    url, server = live["server"].url, live["server"]
    with Client(url, KEY_A, timeout=120) as c:
        running = c.submit(job_spec(live["model_id"], live["dataset_id"], target=1, engine=SLOW_ENGINE))
        wait_for(lambda: c.job(running["id"])["state"] == "running", 120, what="the job to run")
        stop = time.monotonic() + 20
        lat: dict[str, list[float]] = {"health": [], "circuit": [], "circuit_info": []}
        errors: list[str] = []
        rss_peak = [0.0]
        paths = {"health": "/health", "circuit": f"/v1/circuits/{live['circuit_id']}",
                 "circuit_info": f"/v1/circuits/{live['circuit_id']}/info"}

        def reader(kind: str) -> None:
            with httpx.Client(base_url=url, timeout=30, headers=A) as http:
                while time.monotonic() < stop:
                    t0 = time.perf_counter()
                    r = http.get(paths[kind])
                    lat[kind].append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        errors.append(f"{kind} {r.status_code}")

        def sampler() -> None:
            while time.monotonic() < stop:
                rss_peak[0] = max(rss_peak[0], rss_mb(server.proc.pid))
                time.sleep(0.2)

        threads = [threading.Thread(target=reader, args=(k,)) for k in ("health", "health", "circuit", "circuit",
                                                                         "circuit_info", "circuit_info", "circuit", "health")]
        threads.append(threading.Thread(target=sampler))
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        still = c.job(running["id"])
        c.json("DELETE", f"/v1/jobs/{running['id']}")
    assert not errors, errors[:10]
    assert still["state"] == "running" and still["done"] >= 0
    total = sum(len(v) for v in lat.values())
    REPORT["load_readers"] = 8
    REPORT["load_seconds"] = round(elapsed, 1)
    REPORT["load_requests_per_s"] = round(total / elapsed, 1)
    for kind, values in lat.items():
        REPORT[f"{kind}_p50_ms"] = round(1000 * statistics.median(values), 1)
        REPORT[f"{kind}_p99_ms"] = round(1000 * _percentile(values, 0.99), 1)
    REPORT["rss_under_load_peak_mb"] = round(rss_peak[0], 1)
    assert REPORT["health_p99_ms"] < 2000 and REPORT["circuit_p99_ms"] < 3000, REPORT
    assert not maps_torch(server.proc.pid)


def test_many_jobs_submitted_at_once(live):
    url = live["server"].url
    spec = job_spec(live["model_id"], live["dataset_id"], target=2, engine=SLOW_ENGINE)
    with httpx.Client(base_url=url, timeout=120, headers=A) as http:
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: http.post("/v1/jobs", json=spec), range(60)))
        elapsed = time.monotonic() - t0
        assert [r.status_code for r in answers] == [202] * 60, {r.status_code for r in answers}
        ids = {r.json()["id"] for r in answers}
        assert len(ids) == 60
        listed = {j["id"] for j in http.get("/v1/jobs", params={"limit": 1000}).json()["jobs"]}
        assert ids <= listed
        with ThreadPoolExecutor(16) as pool:
            cancels = list(pool.map(lambda i: http.delete(f"/v1/jobs/{i}"), ids))
        assert all(r.status_code in (200, 202) for r in cancels)
        final = wait_for(lambda: all((s := http.get(f"/v1/jobs/{i}").json()["state"]) in ("cancelled", "failed",
                                                                                          "succeeded") for i in ids)
                         and True, 120, what="every job to end")
        assert final
        health = wait_for(lambda: (h := http.get("/health").json())["ready"] and h["queued"] == 0 and h, 120,
                          what="an empty queue")
    REPORT["burst_jobs"] = 60
    REPORT["burst_submit_per_s"] = round(60 / elapsed, 1)
    assert health["workers"][0]["alive"]
