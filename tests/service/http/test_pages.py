"""List routes are paginated: ``limit`` (at most 1000) and the ``next`` cursor, over real SQLite rows."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from neurflow.service.http.app import create_app
from neurflow.service.settings import Settings
from neurflow.service.storage.catalog import hash_key, owner_of

from ..helpers import KEY_A, KEY_B, assert_problem, make_zip, png_bytes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
A, B = {"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings(data_dir=str(tmp_path_factory.mktemp("pages")), api_keys=[KEY_A, KEY_B], workers=0)
    app = create_app(settings)
    with TestClient(app, timeout=120) as c:
        catalog = app.state.services.catalog
        with catalog.db.tx() as conn:  # 25 circuits of one job and 7 of another, as a finished job registers them
            for i in range(32):
                catalog.add_circuit(conn, circuit_id=f"c-{i:03d}", owner=owner_of(hash_key(KEY_A)),
                                    job_id="job-1" if i < 25 else "job-2", class_index=i % 25, parent=None,
                                    key=f"k/{i}", model_id="m", dataset_id="d", summary={"layers": []})
        yield c


def walk(client, path, limit, key, **params):
    seen, cursor, pages = [], None, 0
    while True:
        r = client.get(path, headers=A, params={"limit": limit, **params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body[key]) <= limit
        seen += [item["id"] for item in body[key]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            return seen, pages


def test_circuits_come_in_pages_and_every_row_once(client):
    seen, pages = walk(client, "/v1/circuits", 10, "circuits")
    assert pages == 4 and sorted(seen) == [f"c-{i:03d}" for i in range(32)] and len(set(seen)) == 32
    seen, pages = walk(client, "/v1/circuits", 7, "circuits", job_id="job-1")
    assert pages == 4 and len(seen) == 25
    classes = [int(c.split("-")[1]) % 25 for c in seen]
    assert classes == sorted(classes)  # one job's circuits in class order
    assert client.get("/v1/circuits", headers=B).json() == {"circuits": [], "next": None}  # the other key's: none


def test_jobs_datasets_and_models_come_in_pages(client):
    for _ in range(3):
        r = client.post("/v1/datasets", headers=A, files={"file": ("d.zip", make_zip({"a.png": png_bytes((1, 2, 3))}))})
        assert r.status_code == 201, r.text
    seen, pages = walk(client, "/v1/datasets", 2, "datasets")
    assert len(seen) == 3 and pages == 2
    assert client.get("/v1/models", headers=A).json() == {"models": [], "next": None}
    assert client.get("/v1/jobs", headers=A, params={"limit": 5}).json() == {"jobs": [], "next": None}


@pytest.mark.parametrize("params", [{"limit": 1001}, {"limit": 0}, {"cursor": "garbage!"}, {"cursor": "WzFd"},
                                    {"class_index": -1}, {"class_index": -59360401196037163925837120012288},
                                    {"class_index": 10**30}])
def test_limits_and_cursors_are_checked(client, params):
    r = client.get("/v1/circuits", headers=A, params=params)
    assert r.status_code in (400, 422), r.text
    assert_problem(r, r.status_code)
