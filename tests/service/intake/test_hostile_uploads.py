"""Hostile uploads: weights (pickles with a payload, truncated and lying safetensors, wrong architecture,
NaN weights, oversized), dataset archives (slip, bombs, links, too many entries, decompression bombs,
corrupt images and archives, the total decode budget), oversized form fields and JSON bodies, deeply
nested JSON. Each is a 4xx problem+json that says what was wrong and names nothing of the server."""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from litestar.testing import TestClient
from PIL import Image

from neurflow.service.http.app import create_app
from neurflow.service.settings import Settings

from ..helpers import KEY_A, REPO, assert_problem, make_zip, png_bytes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
A = {"X-API-Key": KEY_A}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = tmp_path_factory.mktemp("uploads") / "data"
    settings = Settings(data_dir=str(data), api_keys=[KEY_A], workers=0, max_weights_mb=60, max_dataset_mb=4,
                        max_zip_entries=40, max_zip_uncompressed_mb=8, max_image_pixels=30_000_000,
                        max_dataset_pixels=50_000_000, max_body_kb=256, max_predict_kb=512)
    with TestClient(create_app(settings), timeout=300) as client:
        yield {"client": client, "data": data}


def clean(env, body: dict) -> dict:
    """A problem names nothing of the server: no data dir, no scratch file, no traceback."""
    text = json.dumps(body)
    assert str(env["data"]) not in text and "/tmp/" not in text and "Traceback" not in text, text
    return body


def post_weights(env, payload: bytes, descriptor: dict | None = None, filename: str = "m.safetensors"):
    desc = descriptor or {"arch": "resnet18", "num_classes": 3, "input_size": 32}
    return env["client"].post("/v1/models", headers=A, files={"weights": (filename, payload)},
                              data={"descriptor": json.dumps(desc)})


def post_zip(env, payload: bytes):
    return env["client"].post("/v1/datasets", headers=A, files={"file": ("d.zip", payload, "application/zip")})


def safetensors(header: dict, data: bytes = b"", header_bytes: bytes | None = None) -> bytes:
    raw = header_bytes if header_bytes is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


# -- weights ------------------------------------------------------------------------------------------
class _WritesAFile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (Path(self.target).write_text, ("pwned",))


def test_pickles_never_run(env, tmp_path):
    marker = tmp_path / "pwned.txt"
    payload = pickle.dumps({"state_dict": _WritesAFile(str(marker))})
    for filename in ("m.pt", "m.pth", "m.bin", "m.safetensors", "m", "m.ckpt"):
        r = post_weights(env, payload, filename=filename)
        clean(env, assert_problem(r, 415, "safetensors"))
    torch_zip = io.BytesIO()
    with zipfile.ZipFile(torch_zip, "w") as zf:  # the layout of torch.save: a zip holding data.pkl
        zf.writestr("archive/data.pkl", payload)
    clean(env, assert_problem(post_weights(env, torch_zip.getvalue()), 415, "safetensors"))
    assert not marker.exists()


def test_truncated_and_lying_safetensors(env, assets):
    real = assets["weights"].read_bytes()
    for cut in (4, 8, 100, len(real) // 2, len(real) - 1):
        r = post_weights(env, real[:cut])
        assert r.status_code in (415, 422), (cut, r.status_code, r.text)
        clean(env, r.json())
    f32 = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    cases = [
        ({"w": {**f32, "shape": [4, 4]}}, b"\0" * 16, 422, "byte range"),  # shape says 64 bytes
        ({"w": {**f32, "data_offsets": [0, 64]}}, b"\0" * 16, 422, "bad header"),  # past the end
        ({"w": f32}, b"\0" * 32, 422, "truncated or padded"),  # trailing bytes
        ({"w": f32, "v": f32}, b"\0" * 16, 422, "overlap"),  # two tensors on the same bytes
        ({"w": {**f32, "shape": [10**30]}}, b"\0" * 16, 422, "bad header"),
        ({"w": {**f32, "shape": [True, 2]}}, b"\0" * 16, 422, "bad header"),
        ({"w": {**f32, "shape": [-1, 2]}}, b"\0" * 16, 422, "bad header"),
        ({"w": {**f32, "shape": [1] * 40}}, b"\0" * 4, 422, "bad header"),
        ({"w": {**f32, "dtype": "F128"}}, b"\0" * 16, 422, "bad header"),
        ({"w": {**f32, "dtype": ["F32"]}}, b"\0" * 16, 422, "bad header"),
        ({"w": {"dtype": "F32", "shape": [2, 2]}}, b"\0" * 16, 422, "bad header"),
        ({"w": {**f32, "data_offsets": [0, 16, 32]}}, b"\0" * 16, 422, "bad header"),
        ({"w": 7}, b"", 422, "bad header"),
        ({"__metadata__": {"a": "b"}}, b"", 422, "no tensors"),
    ]
    for header, data, status, words in cases:
        clean(env, assert_problem(post_weights(env, safetensors(header, data)), status, words))
    nested = b"[" * 100_000 + b"]" * 100_000
    clean(env, assert_problem(post_weights(env, safetensors({}, b"", header_bytes=nested)), 415))
    clean(env, assert_problem(post_weights(env, safetensors({}, b"", header_bytes=b'["not", "a dict"]')), 415))
    huge = b'{"pad": "' + b"x" * (9 << 20) + b'"}'
    clean(env, assert_problem(post_weights(env, safetensors({}, b"", header_bytes=huge)), 413, "header"))
    lying_len = struct.pack("<Q", 10**12) + b"{}"
    clean(env, assert_problem(post_weights(env, lying_len), 415))


def test_wrong_architecture(env, assets):
    real = assets["weights"].read_bytes()
    for desc, words in (({"arch": "resnet34", "num_classes": 3, "input_size": 32}, "do not fit"),
                        ({"arch": "resnet18", "num_classes": 1000, "input_size": 32}, "fc.weight"),
                        ({"arch": "no-such-net", "num_classes": 3, "input_size": 32}, "no-such-net"),
                        ({"arch": "../../../etc/passwd", "num_classes": 3, "input_size": 32}, None),
                        ({"arch": "timm:../../x", "num_classes": 3, "input_size": 32}, None)):
        r = post_weights(env, real, desc)
        clean(env, assert_problem(r, 422, words))
    r = post_weights(env, real, {"arch": "resnet18", "num_classes": 3, "input_size": 32, "extra": 1})
    clean(env, assert_problem(r, 422, "extra"))


@pytest.mark.parametrize("dtype,bad", [("F32", float("nan")), ("F16", float("-inf")), ("BF16", float("nan"))])
def test_non_finite_weights_are_refused(env, assets, dtype, bad):
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(assets["weights"]))
    torch_dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}[dtype]
    tensors = {k: v.to(torch_dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    tensors["layer3.0.conv1.weight"].view(-1)[123] = bad
    path = env["data"].parent / f"bad-{dtype}.safetensors"
    save_file(tensors, str(path))
    clean(env, assert_problem(post_weights(env, path.read_bytes()), 422, "NaN or infinite"))
    # its neighbour without the bad value is accepted (same dtype)
    tensors["layer3.0.conv1.weight"].view(-1)[123] = 0.5
    save_file(tensors, str(path))
    r = post_weights(env, path.read_bytes())
    assert r.status_code in (200, 201), r.text


@pytest.mark.parametrize("dtype", ["int8", "uint16", "bool", "float8_e4m3fn", "uint8"])
def test_weights_in_a_dtype_the_architecture_cannot_load_are_refused(env, assets, dtype):
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(assets["weights"]))
    tensors["layer3.0.conv1.weight"] = tensors["layer3.0.conv1.weight"].to(getattr(torch, dtype))
    path = env["data"].parent / f"odd-{dtype}.safetensors"
    save_file(tensors, str(path))
    clean(env, assert_problem(post_weights(env, path.read_bytes()), 422, "layer3.0.conv1.weight is stored as"))
    # a batch norm's counter stored as a float is refused too; the same file in F16 is accepted
    tensors = load_file(str(assets["weights"]))
    tensors["bn1.num_batches_tracked"] = tensors["bn1.num_batches_tracked"].float()
    save_file(tensors, str(path))
    clean(env, assert_problem(post_weights(env, path.read_bytes()), 422, "bn1.num_batches_tracked"))
    tensors["bn1.num_batches_tracked"] = tensors["bn1.num_batches_tracked"].long()
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(path))
    assert post_weights(env, path.read_bytes()).status_code in (200, 201)


def test_oversized_weights_and_fields(env):
    clean(env, assert_problem(post_weights(env, b"\0" * (61 << 20)), 413))
    r = env["client"].post("/v1/models", headers=A, files={"weights": ("m.safetensors", b"x" * 10)},
                           data={"descriptor": "x" * (300 << 10)})
    clean(env, assert_problem(r, 413, "form field 'descriptor'"))
    # the neighbour: a field under the limit is parsed (and refused for what it says)
    r = env["client"].post("/v1/models", headers=A, files={"weights": ("m.safetensors", b"x" * 10)},
                           data={"descriptor": "x" * (200 << 10)})
    clean(env, assert_problem(r, 422, "not valid JSON"))
    r = env["client"].post("/v1/datasets", headers=A, files={"file": ("d.zip", b"PK")}, data={"name": "n" * (300 << 10)})
    clean(env, assert_problem(r, 413, "form field 'name'"))


# -- archives -----------------------------------------------------------------------------------------
PNG = png_bytes((10, 200, 10))


def zip_with(infos: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in infos:
            zf.writestr(info, data)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["../x.png", "/abs.png", "a/../../x.png", "C:/x.png", "a\\..\\x.png", "..\\x.png",
                                  "a/b/c/d/e/x.png", "a/../x.png", "//x.png"])
def test_zip_slip_and_odd_paths(env, name):
    body = clean(env, assert_problem(post_zip(env, make_zip({name: PNG, "ok.png": PNG})), 422))
    assert "zip entry" in body["detail"]


def test_links_bombs_and_too_many_entries(env):
    link = zipfile.ZipInfo("x.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    clean(env, assert_problem(post_zip(env, zip_with([(link, b"/etc/passwd")])), 422, "link"))
    clean(env, assert_problem(post_zip(env, make_zip({f"{i}.png": PNG for i in range(41)})), 413, "entries"))
    assert post_zip(env, make_zip({f"{i}.png": PNG for i in range(40)})).status_code == 201  # the neighbour
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.png", b"\0" * (20 << 20))  # 20 MB of zeros in ~20 KB
    assert len(bomb.getvalue()) < 100_000
    clean(env, assert_problem(post_zip(env, bomb.getvalue()), 413, "expands"))
    clean(env, assert_problem(post_zip(env, b"0" * (5 << 20)), 413))


def _lying_sizes(payload: bytes) -> bytes:
    """A zip whose directory says the member is 10 bytes while it inflates to much more."""
    buf = bytearray(payload)
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = buf.find(sig)
        buf[at + offset:at + offset + 4] = struct.pack("<I", 10)
    return bytes(buf)


def test_lying_and_corrupt_archives(env):
    deflated = io.BytesIO()
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", PNG)
    r = post_zip(env, _lying_sizes(deflated.getvalue()))  # zipfile's own check or ours, whichever comes first
    assert r.status_code in (413, 422) and ("declared" in r.text or "corrupt" in r.text), r.text
    clean(env, r.json())
    raw = make_zip({"a.png": PNG, "b.png": PNG})
    for broken in (raw[: len(raw) // 2], raw[:30] + b"\xff" * 50 + raw[80:], b"PK\x05\x06" + b"\0" * 18,
                   raw.replace(b"PK\x01\x02", b"PK\x01\x03", 1)):
        r = post_zip(env, broken)
        assert r.status_code in (413, 422), (r.status_code, r.text)
        clean(env, r.json())
    weird = bytearray(raw)  # an unsupported compression method (99, AES) in both headers
    for sig, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = weird.find(sig)
        weird[at + offset:at + offset + 2] = struct.pack("<H", 99)
    clean(env, assert_problem(post_zip(env, bytes(weird)), 422))
    encrypted = bytearray(raw)
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = encrypted.find(sig)
        encrypted[at + offset] |= 1
    clean(env, assert_problem(post_zip(env, bytes(encrypted)), 422, "encrypted"))


def _plain_png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), 7).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def test_decompression_bombs_and_the_decode_budget(env):
    bomb = _plain_png(6000, 6000)  # 36 Mpx over the 30 Mpx cap, a few KB on the wire
    assert len(bomb) < 100_000
    clean(env, assert_problem(post_zip(env, make_zip({"a.png": bomb})), 413, "pixels"))
    # each under the per-image cap, together over the dataset's 50 Mpx budget
    big = _plain_png(5000, 5000)
    assert post_zip(env, make_zip({"a.png": big})).status_code == 201
    body = clean(env, assert_problem(post_zip(env, make_zip({"a.png": big, "b.png": big, "c.png": big})), 413,
                                     "max_dataset_pixels"))
    assert "zip entry" in body["detail"]


@pytest.mark.parametrize("data", [b"garbage", PNG[:40], PNG[: len(PNG) // 2], b"\x89PNG\r\n\x1a\n" + b"\0" * 64,
                                  b"\xff\xd8\xff\xe0" + b"\0" * 64, b"GIF89a" + b"\0" * 32, b"", b"BM" + b"\0" * 60])
def test_corrupt_images_in_an_archive(env, data):
    body = clean(env, assert_problem(post_zip(env, make_zip({"cls/a.png": data})), 422))
    assert "zip entry" in body["detail"] and "PNG and JPEG" in body["detail"]


def test_gif_and_bmp_are_refused_by_name(env):
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    clean(env, assert_problem(post_zip(env, make_zip({"a.png": gif.getvalue()})), 422, "PNG and JPEG"))


# -- bodies ---------------------------------------------------------------------------------------------
NESTED = [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 20_000 + b"1" + b"}" * 20_000]


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/circuits/c-x/labels", "/v1/circuits/c-x/evaluate",
                                  "/ml/labelstudio/predict", "/ml/labelstudio/setup"])
def test_deeply_nested_json_is_a_400(env, path):
    for body in NESTED:
        r = env["client"].post(path, headers={**A, "content-type": "application/json"}, content=body)
        assert r.status_code in (400, 413), (path, r.status_code, r.text[:200])
        clean(env, r.json())


def test_label_studio_predict_body_is_sized_for_its_route(env):
    big = {"tasks": [{"data": {"image": "x" * 1000}}] * 600}  # ~600 KB: over the route's 512 KB
    clean(env, assert_problem(env["client"].post("/ml/labelstudio/predict", headers=A, json=big), 413))
    small = {"tasks": [{"data": {"image": "x"}}]}
    assert env["client"].post("/ml/labelstudio/predict", headers=A, json=small).status_code == 200


# -- defect 8: torch stays out of the web process ------------------------------------------------------
def test_the_web_process_never_imports_torch(tmp_path, assets):
    """Build the app, upload a model (checked against its architecture), a dataset, read every listing, and
    a labeled circuit over its images in every export format, its report and atlas (exports crop exemplars
    from the source images), all in a fresh interpreter; torch must not be in its sys.modules."""
    script = f"""
import json, sys
from litestar.testing import TestClient
from neurflow.service.http.app import create_app
from neurflow.service.settings import Settings
app = create_app(Settings(data_dir={str(tmp_path / 'd')!r}, api_keys=['k'], workers=0))
H = {{'X-API-Key': 'k'}}
with TestClient(app) as c:
    with open({str(assets['weights'])!r}, 'rb') as fh:
        r = c.post('/v1/models', headers=H, files={{'weights': ('m.safetensors', fh)}},
                   data={{'descriptor': json.dumps({{'arch': 'resnet18', 'num_classes': 3, 'input_size': 32}})}})
    assert r.status_code == 201, r.text
    assert len(r.json()['layers']) > 5
    r = c.post('/v1/datasets', headers=H, files={{'file': ('d.zip', open({str(assets['zip'])!r}, 'rb').read())}})
    assert r.status_code == 201, r.text
    for path in ('/v1/models', '/v1/datasets', '/v1/jobs', '/v1/circuits', '/health', '/schema/openapi.json'):
        assert c.get(path, headers=H).status_code == 200, path
    # a labeled circuit over a dataset holding its images: exports crop exemplars from them
    import io, zipfile
    from PIL import Image
    from neurflow.service.storage import keys
    doc = json.loads(open({str(REPO / 'tests/core/data/circuit-v1-labeled.json')!r}).read())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as zf:
        for im in doc['images']:
            png = io.BytesIO()
            Image.new('RGB', (im['width'], im['height']), (200, 30, 30)).save(png, 'PNG')
            zf.writestr(im['path'], png.getvalue())
    ds = c.post('/v1/datasets', headers=H, files={{'file': ('c.zip', buf.getvalue())}}).json()['id']
    services = app.state.services
    services.store.put_bytes(keys.document('jobs/j/attempt-1/class-0'), json.dumps(doc).encode())
    with services.db.tx() as conn:
        services.catalog.add_circuit(conn, circuit_id='c-1', owner='k-' + __import__('hashlib').sha256(b'k').hexdigest()[:16],
                                     job_id='j', class_index=0, parent=None, key='jobs/j/attempt-1/class-0',
                                     model_id='m', dataset_id=ds, summary={{'layers': []}})
    routes = ['/v1/circuits/c-1', '/v1/circuits/c-1/info', '/v1/circuits/c-1/report', '/v1/atlas?circuits=c-1']
    routes += [f'/v1/circuits/c-1/exports/{{fmt}}' + q for fmt in ('labelstudio', 'cvat', 'datumaro', 'fiftyone', 'graphml')
               for q in ('', '?archive=zip')]
    for path in routes:
        r = c.get(path, headers=H)
        assert r.status_code == 200, (path, r.text[:300])
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'open_clip', 'timm', 'transformers'))
print(json.dumps(heavy))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
