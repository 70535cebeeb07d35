"""Helpers of the service tests: tiny datasets, job specs, a real server on loopback, problem checks."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import msgspec
from PIL import Image

from neurflow.client.process import NotReady, free_loopback_port, stop_process, wait_healthy
from neurflow.core.jobspec import JobSpec
from neurflow.service.jobs.types import CircuitRef, DatasetRef, DebugJob, ModelRef, RunJob

KEY_A = "test-key-alpha"
KEY_B = "test-key-beta"
DESCRIPTOR = {"arch": "resnet18", "num_classes": 3, "input_size": 32, "class_names": ["red", "green", "blue"]}
ENGINE = {"layers": ["layer4", "layer3"], "tau": 2, "top_n": 6, "granularities": [1.0, 0.5], "ig_steps": 4,
          "n_exemplars": 3}
#: a job that runs for a while (cancel and kill tests stop it long before it ends)
SLOW_ENGINE = {**ENGINE, "ig_steps": 4000, "tau": 8, "top_n": 40}
REPO = Path(__file__).resolve().parents[2]


def png_bytes(color: tuple[int, int, int], size: int = 40, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    im = Image.new("RGB", (size, size), color)
    for _ in range(40):
        im.putpixel((rng.randrange(size), rng.randrange(size)), tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def dataset_entries(per_class: int = 6) -> dict[str, bytes]:
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    return {f"{name}/{i}.png": png_bytes(colors[c], seed=10 * c + i)
            for c, name in enumerate(("red", "green", "blue")) for i in range(per_class)}


def job_spec(model_id: str, dataset_id: str, target=(0, 1), engine=None, labeling=None) -> dict:
    spec = {"model": {"arch": "resnet18", "weights": model_id, "num_classes": 3, "input_size": 32},
            "data": {"images": dataset_id, "target_class": list(target) if isinstance(target, (list, tuple)) else target,
                     "select": "all"},
            "engine": dict(engine or ENGINE)}
    if labeling is not None:
        spec["labeling"] = labeling
    return spec


MODEL = ModelRef(id="m" * 64, arch="resnet18", num_classes=3)
CIRCUIT = CircuitRef(id="c-1", key="jobs/job-0/attempt-1/class-0", model_id=MODEL.id)


def run_job(model: ModelRef = MODEL, dataset_id: str = "ds-1") -> RunJob:
    """A typed run job as the API stores it (no catalog behind it: for the job table and the pipe)."""
    spec = msgspec.convert(job_spec(model.id, dataset_id), JobSpec)
    return RunJob(spec=spec, model=model, dataset=DatasetRef(id=dataset_id))


def debug_job(circuit: CircuitRef = CIRCUIT, model: ModelRef = MODEL) -> DebugJob:
    return DebugJob(circuit=circuit, model=model, image_key="jobs/job-1/input.png", threshold=0.5)




class LiveServer:
    """``neurflow serve`` in a subprocess on a random loopback port."""

    def __init__(self, data_dir: Path, workers: int = 1, env: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.workers = workers
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 120.0) -> LiveServer:
        port = free_loopback_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "NEURFLOW_API_KEYS": f"{KEY_A},{KEY_B}", "PYTHONPATH": str(REPO), **self.extra_env}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "neurflow.cli", "serve", "--port", str(port), "--data-dir", str(self.data_dir),
             "--workers", str(self.workers), "--log-level", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            wait_healthy(self.url, self.proc, timeout, interval=0.2)
        except NotReady as exc:
            self.stop()
            raise RuntimeError(f"{exc}:\n{self.read_log()}") from None
        return self

    def read_log(self) -> str:
        return (self.data_dir / "server.log").read_text(errors="replace")[-4000:]

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=5).json()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=20)
            self.log.close()
        self.proc = None


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def identity(folder: Path) -> dict[str, tuple[int, int]]:
    """Each finished stage file's (inode, mtime) in a fit's stage folder: the engine writes a stage aside
    and renames it, so a stage computed again gets a new inode; one loaded keeps its own."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir() if not p.name.endswith(".part")}


def stage_folder(root: Path, name: str) -> Path | None:
    """The stage folder of a fit under ``root`` (a class's stages) once it holds ``name``."""
    found = sorted(root.glob(f"*/{name}"))
    return found[0].parent if found else None


def assert_problem(response: httpx.Response, status: int, contains: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"], body
    if contains:
        assert contains.lower() in body["detail"].lower(), body["detail"]
    return body



TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_clip(assets_dir: Path) -> dict:
    """A random tiny open_clip model in a server's asset folder; returns a labeling section naming it."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from neurflow.labeler.clip_model import register_model_config

    folder = Path(assets_dir) / "tiny-clip"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    register_model_config("nf-service-test-clip", TINY_CLIP_CONFIG)
    torch.manual_seed(0)
    model = open_clip.create_model("nf-service-test-clip", pretrained=None)
    save_file(model.state_dict(), str(folder / "weights.safetensors"))
    return labeling_section()


def labeling_section(vocabulary=("red", "green", "blue", "dots", "stripes")) -> dict:
    return {"clip": {"model": "nf-service-test-clip", "pretrained": "tiny-clip/weights.safetensors",
                     "model_config": "tiny-clip/config.json"},
            "vocabulary": list(vocabulary), "templates": ["a photo of {}."], "reference_size": 8, "top_k": 3}


def fill(folder: Path) -> Path:
    """Fill a file system to the last byte; return the filler file (delete it to give the space back)."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler
