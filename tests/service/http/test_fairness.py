"""Fair, bounded use per key: caps on queued+running jobs, open event streams and uploads in progress (429
with Retry-After), the queue taking keys in turn, failed authentication limited per client address, and
revocation on the next request. In-process app, real SQLite, no worker (jobs wait in the queue)."""

from __future__ import annotations

import json

import httpx
import pytest
from litestar.testing import TestClient

from neurflow.client.api import Client
from neurflow.service.http.app import create_app
from neurflow.service.jobs.store import JobStore
from neurflow.service.settings import Settings
from neurflow.service.storage.catalog import hash_key, owner_of
from neurflow.service.storage.db import Database

from ..helpers import KEY_A, KEY_B, assert_problem, debug_job, job_spec, make_zip, png_bytes, run_job

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
A, B = {"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}
OWNER_A = owner_of(hash_key(KEY_A))
ZIP = make_zip({"a.png": png_bytes((1, 2, 3))})


@pytest.fixture(scope="module")
def env(tmp_path_factory, assets):
    settings = Settings(data_dir=str(tmp_path_factory.mktemp("fair")), api_keys=[KEY_A, KEY_B], workers=0,
                        max_jobs_per_key=2, max_streams_per_key=1, max_uploads_per_key=1)
    app = create_app(settings)
    with TestClient(app, timeout=120) as client:
        ids = {}
        for name, headers in (("a", A), ("b", B)):
            with open(assets["weights"], "rb") as fh:
                model = client.post("/v1/models", headers=headers, files={"weights": ("m.safetensors", fh)},
                                    data={"descriptor": json.dumps(assets["descriptor"])}).json()["id"]
            dataset = client.post("/v1/datasets", headers=headers, files={"file": ("d.zip", ZIP)}).json()["id"]
            ids[name] = (model, dataset)
        yield {"client": client, "ids": ids, "services": app.state.services}


def test_queued_and_running_jobs_are_capped_per_key(env):
    c, (model, dataset) = env["client"], env["ids"]["a"]
    first = [c.post("/v1/jobs", headers=A, json=job_spec(model, dataset)) for _ in range(2)]
    assert [r.status_code for r in first] == [202, 202]
    r = c.post("/v1/jobs", headers=A, json=job_spec(model, dataset))
    assert_problem(r, 429, "max_jobs_per_key")
    assert int(r.headers["Retry-After"]) > 0
    other = c.post("/v1/jobs", headers=B, json=job_spec(*env["ids"]["b"]))
    assert other.status_code == 202, other.text  # the other key is not affected
    c.delete(f"/v1/jobs/{first[0].json()['id']}", headers=A)  # one ends: there is room again
    again = c.post("/v1/jobs", headers=A, json=job_spec(model, dataset))
    assert again.status_code == 202, again.text
    for job in (first[1], again, other):
        c.delete(f"/v1/jobs/{job.json()['id']}", headers=A if job is not other else B)


@pytest.mark.integration
def test_open_event_streams_are_capped_per_key(live_server, assets):
    """Over real HTTP (the in-process test client reads a stream to its end before returning)."""
    server = live_server(workers=0, env={"NEURFLOW_MAX_STREAMS_PER_KEY": "1"})
    with Client(server.url, KEY_A, timeout=120) as c, httpx.Client(timeout=30) as http:
        model = c.upload_model(assets["weights"], assets["descriptor"])["id"]
        job = c.submit(job_spec(model, c.upload_dataset(assets["images"])["id"]))["id"]
        url = f"{server.url}/v1/jobs/{job}/events"
        with http.stream("GET", url, headers=A) as first:
            assert first.status_code == 200
            r = http.get(url, headers=A)
            assert_problem(r, 429, "max_streams_per_key")
            assert int(r.headers["Retry-After"]) > 0
            c.cancel(job)  # the job ends: its stream sends 'end' and closes
            assert "event: end" in first.read().decode()
        with http.stream("GET", url, headers=A) as again:  # released: a new stream is accepted
            assert again.status_code == 200


def test_uploads_in_progress_are_capped_per_key(env):
    c, uploads = env["client"], env["services"].quotas.uploads
    uploads.acquire(OWNER_A)  # an upload of this key in progress
    try:
        r = c.post("/v1/datasets", headers=A, files={"file": ("d.zip", ZIP)})
        assert_problem(r, 429, "max_uploads_per_key")
        assert c.post("/v1/datasets", headers=B, files={"file": ("d.zip", ZIP)}).status_code == 201
    finally:
        uploads.release(OWNER_A)
    assert c.post("/v1/datasets", headers=A, files={"file": ("d.zip", ZIP)}).status_code == 201


def test_revocation_takes_effect_on_the_next_request(env):
    c, catalog = env["client"], env["services"].catalog
    key, owner = catalog.create_key("short-lived")
    assert c.get("/v1/models", headers={"X-API-Key": key}).status_code == 200
    catalog.revoke_key(owner)
    assert_problem(c.get("/v1/models", headers={"X-API-Key": key}), 401, "revoked")


def test_the_queue_takes_keys_in_turn(tmp_path):
    jobs = JobStore(Database(tmp_path / "q.db"))
    for i in range(5):
        jobs.create(f"a-{i}", "owner-a", run_job(), max_attempts=1)
    jobs.create("b-0", "owner-b", run_job(), max_attempts=1)
    jobs.create("b-1", "owner-b", debug_job(), max_attempts=1)
    order = []
    for _ in range(4):
        row = jobs.next_queued()
        order.append(row["id"])
        jobs.claim(row["id"], "w")
        jobs.finish(row["id"], "succeeded")
    # the keys alternate (b's debug job first: neither key ran anything yet, and interactive kinds go first);
    # not a's five before b's two
    assert order == ["b-1", "a-0", "b-0", "a-1"], order


def test_failed_authentication_is_limited_per_address(tmp_path):
    settings = Settings(data_dir=str(tmp_path), api_keys=[KEY_A], workers=0, auth_failures_per_minute=3)
    with TestClient(create_app(settings), timeout=60) as c:
        for i in range(3):
            assert_problem(c.get("/v1/models", headers={"X-API-Key": f"guess-{i}"}), 401)
        r = c.get("/v1/models", headers={"X-API-Key": "guess-4"})
        assert_problem(r, 429, "auth_failures_per_minute")
        assert 0 < int(r.headers["Retry-After"]) <= 61
        assert_problem(c.get("/v1/models", headers=A), 429)  # the address is held off, whatever key it sends
        assert c.get("/health").status_code in (200, 503)  # public routes are not
