"""Fixtures of the service tests: a tiny real model, tiny image datasets, real servers on loopback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .helpers import DESCRIPTOR, LiveServer, dataset_entries, make_zip


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> dict:
    import torch
    import torchvision
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    weights = root / "tiny.safetensors"
    save_file(model.state_dict(), str(weights))
    entries = dataset_entries()
    (root / "data.zip").write_bytes(make_zip(entries))
    images = root / "images"
    for name, data in entries.items():
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        (images / name).write_bytes(data)
    return {"root": root, "weights": weights, "zip": root / "data.zip", "images": images,
            "image": entries["red/0.png"], "descriptor": dict(DESCRIPTOR)}


@pytest.fixture
def live_server(tmp_path):
    servers: list[LiveServer] = []

    def start(data_dir: Path | None = None, **kwargs) -> LiveServer:
        server = LiveServer(data_dir or tmp_path / "data", **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def tmpfs(tmp_path):
    """Mount small tmpfs folders (a real full disk); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, size: str, options: str = "") -> Path:
        target = tmp_path / name
        target.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(target)],
                              capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)
