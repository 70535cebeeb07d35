"""Pieces of the service without a server: settings, upload checks, artifact store, job table."""

from __future__ import annotations

import io
import pickle
import stat
import zipfile

import pytest

from neurflow.service.db import Database
from neurflow.service.errors import Conflict, Invalid, TooLarge, Unsupported
from neurflow.service.intake import (
    check_weights,
    decode_image,
    extract_dataset,
    parse_descriptor,
    read_safetensors_header,
)
from neurflow.service.jobstore import JobStore
from neurflow.service.settings import load_settings
from neurflow.service.storage import ArtifactStore

from .helpers import dataset_entries, debug_job, make_zip, png_bytes, run_job

LIMITS = {"max_entries": 100, "max_bytes": 10 * 1024 * 1024, "max_pixels": 10_000_000}


def test_settings_precedence(tmp_path):
    cfg = tmp_path / "neurflow.toml"
    cfg.write_text('port = 9001\nworkers = 3\napi_keys = ["a"]\n')
    s = load_settings(cfg, overrides={"workers": 2}, environ={"NEURFLOW_PORT": "9002", "NEURFLOW_AUTH": "false",
                                                              "NEURFLOW_API_KEYS": "x, y"})
    assert (s.port, s.workers, s.auth, s.api_keys) == (9002, 2, False, ["x", "y"])
    assert s.device_list() == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="NEURFLOW_PORT"):
        load_settings(environ={"NEURFLOW_PORT": "eighty"})
    with pytest.raises(ValueError, match="invalid settings"):
        load_settings(overrides={"bogus": 1}, environ={})


def test_descriptor_checks():
    assert parse_descriptor(b'{"arch": "resnet18", "num_classes": 3, "input_size": 32}').mean == [0.485, 0.456, 0.406]
    with pytest.raises(Invalid, match="not valid JSON"):
        parse_descriptor(b"{arch")
    with pytest.raises(Invalid, match="num_classes"):
        parse_descriptor(b'{"arch": "resnet18", "num_classes": 0, "input_size": 32}')
    with pytest.raises(Invalid, match="class_names has 1"):
        parse_descriptor(b'{"arch": "resnet18", "num_classes": 3, "input_size": 32, "class_names": ["a"]}')


def test_weights_checked_against_architecture(assets, tmp_path):
    desc = parse_descriptor(b'{"arch": "resnet18", "num_classes": 3, "input_size": 32}')
    layers = dict(check_weights(assets["weights"], desc))
    assert layers["layer4"] == (512, 1, 1) and layers["fc"] == (3,)
    with pytest.raises(Invalid, match="shape conflicts: fc.bias"):
        check_weights(assets["weights"], parse_descriptor(b'{"arch": "resnet18", "num_classes": 5, "input_size": 32}'))
    with pytest.raises(Invalid, match="missing keys"):
        check_weights(assets["weights"], parse_descriptor(b'{"arch": "resnet34", "num_classes": 3, "input_size": 32}'))
    with pytest.raises(Invalid, match="unknown torchvision architecture"):
        check_weights(assets["weights"], parse_descriptor(b'{"arch": "resnet9000", "num_classes": 3, "input_size": 32}'))
    pkl = tmp_path / "model.safetensors"
    pkl.write_bytes(pickle.dumps({"w": [1, 2, 3]}))  # a pickle renamed .safetensors is refused unread
    with pytest.raises(Unsupported, match="not a safetensors file"):
        read_safetensors_header(pkl)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((40).to_bytes(8, "little") + b'{"w": {"dtype": "F32", "shape": [9], "data_offsets": [0, 36]}}')
    with pytest.raises((Invalid, Unsupported)):
        read_safetensors_header(bad)


def _zip_with(info: zipfile.ZipInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok/a.png", png_bytes((1, 2, 3)))
        zf.writestr(info, data)
    return buf.getvalue()


@pytest.mark.parametrize("name, error", [
    ("../evil.png", "path traversal"),
    ("a/../../evil.png", "path traversal"),
    ("/etc/evil.png", "absolute"),
    ("C:/evil.png", "absolute"),
    ("notes.txt", "not a PNG or JPEG"),
    ("a/b/c/d/e.png", "nested too deep"),
])
def test_zip_rejections(tmp_path, name, error):
    src = tmp_path / "d.zip"
    src.write_bytes(_zip_with(zipfile.ZipInfo(name)))
    with pytest.raises(Invalid, match=error):
        extract_dataset(src, tmp_path / "out", **LIMITS)
    assert not (tmp_path / "out").exists()


def test_zip_symlink_bomb_and_limits(tmp_path):
    link = zipfile.ZipInfo("link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    src = tmp_path / "d.zip"
    src.write_bytes(_zip_with(link, b"/etc/passwd"))
    with pytest.raises(Invalid, match="symbolic link"):
        extract_dataset(src, tmp_path / "out", **LIMITS)
    src.write_bytes(make_zip({f"{i}.png": png_bytes((1, 1, 1)) for i in range(5)}))
    with pytest.raises(TooLarge, match="entries"):
        extract_dataset(src, tmp_path / "out", **{**LIMITS, "max_entries": 4})
    with pytest.raises(TooLarge, match="expands"):
        extract_dataset(src, tmp_path / "out", **{**LIMITS, "max_bytes": 100})
    src.write_bytes(make_zip({"fake.png": b"not an image"}))
    with pytest.raises(Invalid, match="fake.png cannot be decoded"):
        extract_dataset(src, tmp_path / "out", **LIMITS)
    src.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(Invalid, match="not a valid zip"):
        extract_dataset(src, tmp_path / "out", **LIMITS)


def test_zip_layouts(tmp_path):
    src = tmp_path / "d.zip"
    src.write_bytes(make_zip({f"wrapped/{k}": v for k, v in dataset_entries(2).items()} | {"__MACOSX/._x": b"",
                                                                                          "wrapped/.DS_Store": b""}))
    info = extract_dataset(src, tmp_path / "out", **LIMITS)
    assert (info.n_images, info.classes) == (6, ["blue", "green", "red"])
    assert (tmp_path / "out/images/red/0.png").is_file()
    src.write_bytes(make_zip({"a.png": png_bytes((0, 0, 0)), "b.jpg": _jpeg()}))
    info = extract_dataset(src, tmp_path / "flat", **LIMITS)
    assert (info.n_images, info.classes) == (2, [])


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    return buf.getvalue()


def test_decode_image_limits():
    assert decode_image(png_bytes((5, 5, 5)), 10_000).size == (40, 40)
    with pytest.raises(TooLarge, match="pixels"):
        decode_image(png_bytes((5, 5, 5)), 100)
    with pytest.raises(Invalid, match="cannot be decoded"):
        decode_image(b"GIF89a....", 10_000)
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "BMP")
    with pytest.raises(Invalid, match="PNG and JPEG"):
        decode_image(buf.getvalue(), 10_000)


@pytest.mark.parametrize("url", ["local", "memory://nf-test-store"])
def test_artifact_store(tmp_path, url):
    store = ArtifactStore(str(tmp_path / "art") if url == "local" else url, cache_dir=tmp_path / "cache")
    store.put_bytes("a/b/c.txt", b"hello")
    assert store.get_bytes("a/b/c.txt") == b"hello" and store.exists("a/b/c.txt")
    (tmp_path / "dir/sub").mkdir(parents=True)
    (tmp_path / "dir/sub/x.bin").write_bytes(b"xyz")
    store.put_dir("folder", tmp_path / "dir")
    assert store.get_bytes("folder/sub/x.bin") == b"xyz"
    assert store.local_path("folder/sub/x.bin").read_bytes() == b"xyz"
    assert (store.local_path("folder") / "sub/x.bin").read_bytes() == b"xyz"
    for bad in ("../x", "/abs", "a/../../b", ""):
        with pytest.raises(ValueError):
            store.path(bad)
    store.delete("folder")
    assert not store.exists("folder/sub/x.bin")
    with pytest.raises(KeyError):
        store.get_bytes("folder/sub/x.bin")
    assert store.ping()


def test_job_state_machine_and_recovery(tmp_path):
    db = Database(tmp_path / "j.db")
    jobs = JobStore(db)
    a = jobs.create("job-a", "o1", run_job(), max_attempts=2)
    jobs.create("job-b", "o1", debug_job(), max_attempts=1)
    assert a["state"] == "queued" and jobs.next_queued()["id"] == "job-b"  # interactive kinds first
    assert jobs.claim("job-a", "w0") and not jobs.claim("job-a", "w1")
    jobs.progress("job-a", "ig", 3, 4)
    assert jobs.get("o1", "job-a")["progress"] == 0.75
    with pytest.raises(Exception, match="no job"):
        jobs.get("o2", "job-a")  # another owner sees nothing
    # the server stops: a running job is requeued once, then failed
    assert jobs.recover() == ["job-a"]
    assert jobs.get("o1", "job-a")["state"] == "queued"
    jobs.claim("job-a", "w0")
    jobs.recover()
    failed = jobs.get("o1", "job-a")
    assert failed["state"] == "failed" and "attempt 2 of 2" in failed["error"]
    with pytest.raises(Conflict, match="already ended"):
        jobs.request_cancel("o1", "job-a")
    assert jobs.request_cancel("o1", "job-b")["state"] == "cancelled"
    # a second connection (another thread or process) sees the same durable state
    assert JobStore(Database(tmp_path / "j.db")).get("o1", "job-b")["state"] == "cancelled"
    assert db.one("PRAGMA journal_mode")[0] == "wal"


def test_graceful_release_keeps_the_attempt(tmp_path):
    jobs = JobStore(Database(tmp_path / "j.db"))
    jobs.create("job-a", "o1", run_job(), max_attempts=1)
    jobs.claim("job-a", "w0")
    jobs.release("job-a", "the server stopped; requeued")
    job = jobs.get("o1", "job-a")
    assert job["state"] == "queued" and job["attempt"] == 0
    assert jobs.claim("job-a", "w0") and jobs.get("o1", "job-a")["attempt"] == 1


def test_keys_cli(tmp_path, capsys):
    from neurflow.cli import main

    assert main(["keys", "create", "alice", "--data-dir", str(tmp_path)]) == 0
    key = capsys.readouterr().out.strip()
    from neurflow.service.catalog import Catalog

    catalog = Catalog(Database(tmp_path / "neurflow.db"))
    owner = catalog.owner_for_key(key)
    assert owner and owner.startswith("k-")
    assert all(key.encode() not in p.read_bytes() for p in tmp_path.glob("neurflow.db*"))  # only the hash is stored
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    assert "alice" in capsys.readouterr().out
    assert main(["keys", "revoke", owner, "--data-dir", str(tmp_path)]) == 0
    assert catalog.owner_for_key(key) is None
    assert main(["keys", "revoke", "k-nope", "--data-dir", str(tmp_path)]) == 2


def test_client_sse_parsing_skips_keepalives():
    import httpx

    from neurflow.service.client import Client

    stream = (b": keep-alive\r\ndata: \r\n\r\n"
              b'id: 1\r\nevent: progress\r\ndata: {"state": "running", "done": 1}\r\n\r\n'
              b": keep-alive\r\ndata: \r\n\r\n"
              b'id: 2\r\nevent: end\r\ndata: {"state": "succeeded"}\r\n\r\n')
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=stream,
                                                                   headers={"content-type": "text/event-stream"}))
    client = Client("http://test")
    client.http = httpx.Client(base_url="http://test", transport=transport)
    assert list(client.events("job-x")) == [("progress", {"state": "running", "done": 1}),
                                            ("end", {"state": "succeeded"})]


def test_one_server_per_data_dir(tmp_path):
    import asyncio

    from neurflow.service.app import build_services
    from neurflow.service.settings import Settings

    settings = Settings(data_dir=str(tmp_path), workers=0)
    first, second = build_services(settings), build_services(settings)

    async def scenario() -> None:
        await first.manager.start()
        try:
            with pytest.raises(RuntimeError, match="another NeurFlow server is using the data dir"):
                await second.manager.start()
        finally:
            await first.manager.stop()
        await second.manager.start()  # free again once the first one stopped
        await second.manager.stop()

    asyncio.run(scenario())


def test_html_report_is_self_contained(tmp_path):
    from neurflow.core.circuit import SCHEMA_VERSION, Circuit, Exemplar, Group, GroupEdge, Label, Layer, Member, ModelInfo, Target
    from neurflow.viewer.report import ReportEntry, write_report

    ex = [Exemplar(image=0, box=[0, 0, 8, 8], activation=1.0)]
    layers = [Layer(name="fc", shape=[3], neurons=[], groups=[Group(id="l0g0", members=[Member(0, 0)], exemplars=ex,
                                                                       labels=[Label("red <circle>", 0.9, "clip")],
                                                                       confidence=0.8)]),
              Layer(name="layer4", shape=[8, 1, 1], neurons=[], groups=[Group(id="l1g0", members=[], exemplars=ex)])]
    circuit = Circuit(schema=SCHEMA_VERSION, model=ModelInfo("resnet18", None, 3, 32, [0.5] * 3, [0.5] * 3),
                      target=Target(0, "red"), params={}, images=[], layers=layers,
                      group_edges=[GroupEdge("l0g0", "l1g0", 0.7)], timings={})
    path = write_report([ReportEntry(circuit, "red", mosaics={"l0g0": png_bytes((200, 0, 0))},
                                     scores={"l0g0": {"majority_part": "red circle", "purity": 1.0}})],
                        tmp_path / "r.html")
    text = path.read_text()
    assert text.count("<svg") == 1 and "<line" in text and "data:image/png;base64," in text
    assert "red &lt;circle&gt;" in text and "<circle>" not in text.replace("<circle cx", "")  # escaped
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # no external assets


def test_progress_from_events_keeps_one_stage_per_engine_step():
    from neurflow.service.client import progress_from_events

    got = []
    feed = progress_from_events(lambda stage, done, total: got.append((stage, done, total)))
    feed({"state": "queued"})
    feed({"state": "running", "stage": "ig layer4.1 65/300 | class 0, 0 of 2 done", "done": 0, "total": 2})
    feed({"state": "running", "stage": "ig layer4.1 118/300 | class 0, 0 of 2 done", "done": 0, "total": 2})
    feed({"state": "succeeded", "done": 2, "total": 2})
    assert got == [("queued", 0, 1), ("ig layer4.1", 0, 2), ("ig layer4.1", 0, 2), ("succeeded", 2, 2)]
