"""``engine.layers: "auto"`` over the API: a real server on loopback accepts it, its worker chooses the list
``neurflow layers --suggest`` would (:func:`neurflow.core.layer_budget.suggest`) for the job's images and
parameters, and the job's circuit records that list; a value that is neither "auto" nor a list of names is a
400 that says what is accepted. That a later attempt fits the list the first one kept, not a new choice, is
tested where the choice is kept (tests/service/executors/test_stages.py, two workers on one artifact store):
killing a live worker for it here cost 75 s of the suite."""

from __future__ import annotations

import msgspec
import pytest

from neurflow.client.api import ApiError, Client
from neurflow.core.circuit import Circuit
from neurflow.core.layer_budget import suggest
from neurflow.core.model_intake import load_model
from neurflow.core.params import EngineParams

from ..helpers import ENGINE, KEY_A, job_spec

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
