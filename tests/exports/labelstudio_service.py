"""A NeurFlow service on loopback with one finished, CLIP-labeled circuit (tiny model, tiny CLIP).

Shared by the Label Studio export tests and the live Label Studio integration test; it reuses the
service tests' server, model/dataset assets and job spec helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neurflow.client.api import Client
from tests.service.helpers import KEY_A, LiveServer, job_spec, labeling_section, write_tiny_clip


@dataclass
class LabeledService:
    server: LiveServer
    circuit_id: str
    key: str = KEY_A


def start_labeled_service(data_dir: Path, assets: dict) -> LabeledService:
    write_tiny_clip(data_dir / "assets")
    server = LiveServer(data_dir, workers=1).start()
    try:
        with Client(server.url, KEY_A) as c:
            model = c.upload_model(assets["weights"], assets["descriptor"])
            dataset = c.upload_dataset(assets["images"])
            job = c.follow(c.submit(job_spec(model["id"], dataset["id"], target=0, labeling=labeling_section()))["id"])
        assert job["state"] == "succeeded", job
        return LabeledService(server=server, circuit_id=job["result"]["circuits"][0]["id"])
    except BaseException:
        server.stop()
        raise
