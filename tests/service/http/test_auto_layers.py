"""``engine.layers: "auto"`` over the API: a real server on loopback accepts it, its worker chooses the list
``neurflow layers --suggest`` would (:func:`neurflow.core.layer_budget.suggest`) for the job's images and
parameters, and the job's circuit records that list; a value that is neither "auto" nor a list of names is a
400 that says what is accepted. The worker's second attempt fits the list its first attempt kept, not a new
choice."""

from __future__ import annotations

import json
import os
import signal

import msgspec
import pytest

from neurflow.client.api import ApiError, Client
from neurflow.core.circuit import Circuit
from neurflow.core.layer_budget import suggest
from neurflow.core.model_intake import load_model
from neurflow.core.params import EngineParams

from neurflow.service.storage import keys

from ..helpers import ENGINE, KEY_A, job_spec, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

AUTO = {**ENGINE, "layers": "auto"}


@pytest.fixture(scope="module")
def model(assets):
    return load_model("resnet18", assets["weights"], 3)


def circuit_of(c: Client, job: dict) -> Circuit:
    (ref,) = job["result"]["circuits"]
    return Circuit.from_json(c.request("GET", f"/v1/circuits/{ref['id']}", params={"arrays": "inline"}).content)


def test_an_auto_job_fits_the_suggested_layers(live_server, assets, model):
    server = live_server()
    with Client(server.url, KEY_A, timeout=300) as c:
        mid = c.upload_model(assets["weights"], assets["descriptor"])["id"]
        did = c.upload_dataset(assets["images"])["id"]
        for bad in ("Auto", "all", ["fc"]):
            with pytest.raises(ApiError) as refused:
                c.submit(job_spec(mid, did, target=1, engine={**ENGINE, "layers": bad}))
            assert refused.value.status == 400 and 'engine.layers accepts "auto" or a list of 2 to 32' in str(
                refused.value), str(refused.value)
        job = c.follow(c.submit(job_spec(mid, did, target=1, engine=AUTO))["id"])
        assert job["state"] == "succeeded", job
        circuit = circuit_of(c, job)
    # select "all": the dataset's 18 images; at 32 px every candidate fits the default budget by orders of
    # magnitude, on the server's machine as on this one
    expected = suggest(model, 32, msgspec.convert(AUTO, EngineParams), n_images=18)
    assert expected.layers == expected.candidates and len(expected.layers) > 2
    assert [layer.name for layer in circuit.layers] == expected.layers
    assert circuit.params.layers == expected.layers  # the list, not "auto"


def test_a_later_attempt_fits_the_list_the_first_one_kept(live_server, assets, model):
    """The first attempt's choice is kept in the job's artifact folder; the worker is killed, and the second
    attempt fits the kept list. The kept list is replaced, before the kill, by one the calibration never picks
    here (it picks every candidate at 32 px), so the circuit shows which one the second attempt used."""
    server = live_server(env={"NEURFLOW_MAX_ATTEMPTS": "2", "NEURFLOW_RATE_LIMIT_PER_MINUTE": "1000000"})
    slow = {**AUTO, "ig_steps": 150}  # seconds of IG per layer pair: the kill lands inside the first attempt
    with Client(server.url, KEY_A, timeout=300) as c:
        mid = c.upload_model(assets["weights"], assets["descriptor"])["id"]
        did = c.upload_dataset(assets["images"])["id"]
        job_id = c.submit(job_spec(mid, did, target=1, engine=slow))["id"]
        kept = server.data_dir / "artifacts" / keys.chosen_layers(job_id)
        wait_for(kept.is_file, 300, interval=0.02, what="the first attempt's choice")
        first = json.loads(kept.read_text())
        assert first["layers"] == suggest(model, 32, msgspec.convert(slow, EngineParams), n_images=18).layers
        # replaced before the kill (the first attempt holds its list already): no later attempt can read the old one
        kept.write_text(json.dumps({**first, "layers": ["fc", "layer4"]}))
        os.kill(server.health()["workers"][0]["pid"], signal.SIGKILL)
        assert c.job(job_id)["state"] != "succeeded", "the first attempt ended before the kill"
        job = c.follow(job_id)
        assert job["state"] == "succeeded" and job["attempt"] == 2, job
        assert [layer.name for layer in circuit_of(c, job).layers] == ["fc", "layer4"]
    assert not kept.exists()  # the choice ends with the job, like its stages
