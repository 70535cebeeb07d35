"""Every fault has a status of its own, against the real app (in process, real SQLite, real file systems):
an archive entry the file system refuses is a 422 naming it, the multipart parser's limits a 413, a full
disk a 507 on every route that writes (SQLite's "database or disk is full" included), a read-only store a
503. And a property-based fuzz of archive layouts and multipart parts that never sees a 5xx.

The full and read-only disks are real tmpfs mounts (skipped where mounting is refused)."""

from __future__ import annotations

import json
import string
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from neurflow.service.http.app import create_app
from neurflow.service.settings import Settings

from ..helpers import KEY_A, assert_problem, fill, job_spec, make_zip, png_bytes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
A = {"X-API-Key": KEY_A}
PNG = png_bytes((10, 200, 10), size=16)


def app_settings(data, **kw) -> Settings:
    return Settings(data_dir=str(data), api_keys=[KEY_A], workers=0, max_dataset_mb=1, max_zip_entries=30,
                    max_body_kb=64, **kw)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with TestClient(create_app(app_settings(tmp_path_factory.mktemp("faults"))), timeout=120) as c:
        yield c


def post_zip(client, payload: bytes, filename: str = "d.zip"):
    return client.post("/v1/datasets", headers=A, files={"file": (filename, payload, "application/zip")})


def post_model(client, weights, descriptor):
    with open(weights, "rb") as fh:
        return client.post("/v1/models", headers=A, files={"weights": ("m.safetensors", fh)},
                           data={"descriptor": json.dumps(descriptor)})


# -- extraction: an entry the file system refuses ----------------------------------------------------
@pytest.mark.parametrize("entries,named", [
    ({"x.png": PNG, "x.png/y.png": PNG}, "x.png/y.png"),  # a file where a folder must go
    ({"a/" + "n" * 300 + ".png": PNG}, "nnnn"),  # a name longer than the file system holds
])
def test_an_entry_the_file_system_refuses_is_a_422_naming_it(client, entries, named):
    body = assert_problem(post_zip(client, make_zip(entries)), 422, "cannot be extracted")
    assert named in body["detail"]


# -- the multipart parser's limits -----------------------------------------------------------------
def test_multipart_parser_limits_are_413(client):
    r = client.post("/v1/datasets", headers=A, files={"file": ("n" * 5000 + ".zip", b"PK")})
    assert_problem(r, 413, "4 KB")  # a very long filename (was a 500)
    r = client.post("/v1/datasets", headers=A, files=[("file", ("a.zip", b"x"))] * 1001)
    assert_problem(r, 413, "1000 parts")
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\nX-Pad: ' + b"a" * 9000 + \
        b"\r\n\r\nxx\r\n--b--\r\n"
    r = client.post("/v1/datasets", headers={**A, "content-type": "multipart/form-data; boundary=b"}, content=body)
    assert_problem(r, 413)
    r = client.post("/v1/datasets", headers={**A, "content-type": "multipart/form-data; boundary=b"},
                    content=b"--b\r\ngarbage")
    assert_problem(r, 400)  # malformed is the client's 400, not a limit


# -- full and read-only disks --------------------------------------------------------------------------
def test_a_full_disk_is_507_on_every_route_that_writes(tmpfs, tmp_path, assets):
    data = tmpfs("data", "96m")
    with TestClient(create_app(app_settings(data, storage_url=str(tmp_path / "artifacts"))), timeout=120) as c:
        model = post_model(c, assets["weights"], assets["descriptor"]).json()["id"]
        dataset = post_zip(c, assets["zip"].read_bytes()).json()["id"]
        filler = fill(data)
        try:
            # the database's own file system is full: SQLite answers "database or disk is full"
            r = c.post("/v1/jobs", headers=A, json=job_spec(model, dataset))
            body = assert_problem(r, 507, "storage is full")
            assert str(data) not in json.dumps(body)
            assert_problem(post_zip(c, assets["zip"].read_bytes()), 507)  # scratch on the same full disk
        finally:
            filler.unlink()
        assert c.post("/v1/jobs", headers=A, json=job_spec(model, dataset)).status_code == 202


def test_a_read_only_store_is_503(tmpfs, tmp_path, assets):
    store = tmpfs("store", "8m")
    with TestClient(create_app(app_settings(tmp_path / "data", storage_url=str(store))), timeout=120) as c:
        done = subprocess.run(["mount", "-o", "remount,ro", str(store)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only: {done.stderr.decode().strip()}")
        body = assert_problem(post_zip(c, assets["zip"].read_bytes()), 503, "refuses writes")
        assert str(store) not in json.dumps(body)
        assert_problem(post_model(c, assets["weights"], assets["descriptor"]), 503)
        assert c.get("/v1/datasets", headers=A).json()["datasets"] == []  # nothing registered without its files


# -- the fuzz: archive layouts and multipart parts never make a 5xx ---------------------------------
_SEGMENT = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "._- ", min_size=1, max_size=12),
    st.sampled_from(["..", ".", "", "CON", "a" * 260, "ä", "\u202e", "x:y", "a\\b", "__MACOSX", ".hidden"]),
)
_NAME = st.lists(_SEGMENT, min_size=1, max_size=6).map("/".join).flatmap(
    lambda stem: st.sampled_from(["", "/", ".png", ".PNG", ".jpg", ".txt"]).map(lambda ext: stem + ext))
_CONTENT = st.sampled_from([PNG, b"", b"\x89PNG\r\n\x1a\n", b"garbage" * 10, png_bytes((1, 2, 3), size=8)])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(entries=st.lists(st.tuples(_NAME, _CONTENT), min_size=1, max_size=8))
def test_fuzz_archive_layouts_never_5xx(client, entries):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in entries:
            zf.writestr(zipfile.ZipInfo(name), content)
    r = post_zip(client, buf.getvalue())
    assert r.status_code < 500, (entries, r.text)
    assert r.status_code in (201, 400, 413, 415, 422), r.text


_HEADER_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40) | \
    st.sampled_from(["n" * 5000, "", "a.zip", "../../etc/passwd", "x\r\ny", "\x00"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(route=st.sampled_from(["/v1/datasets", "/v1/models"]),
       parts=st.lists(st.tuples(st.sampled_from(["file", "weights", "descriptor", "name", "x"]) | _HEADER_TEXT,
                                st.none() | _HEADER_TEXT, st.binary(max_size=64)), max_size=5))
def test_fuzz_multipart_parts_never_5xx(client, route, parts):
    files = [(name, (filename, content) if filename is not None else content) for name, filename, content in parts]
    try:
        r = client.post(route, headers=A, files=files) if files else client.post(route, headers=A)
    except (UnicodeEncodeError, ValueError):  # a header the HTTP client itself cannot send
        return
    assert r.status_code < 500, (route, parts, r.text)
