"""Hostile job specs: names that would become server paths, a client choosing a server secret, unbounded
work, unknown fields and other keys' ids. Every one is a 4xx problem that names what was wrong and
nothing of the server (in-process app, real SQLite file; no worker: accepted jobs wait in the queue)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest
from litestar.testing import TestClient

from neurflow.labeler.vocabulary import load_vocabulary
from neurflow.service.errors import Invalid
from neurflow.service.http.app import create_app
from neurflow.service.jobs.limits import LabelingRequest
from neurflow.service.jobs.policy import check_labeling as check_typed
from neurflow.service.settings import Settings, from_env

from ..helpers import KEY_A, KEY_B, assert_problem, job_spec, labeling_section, make_zip, png_bytes, write_tiny_clip


def check_labeling(section: dict, settings):
    """The policy's check of a labeling section as the API decodes it (msgspec's errors are a 400/422)."""
    try:
        typed = msgspec.convert(section, LabelingRequest)
    except msgspec.ValidationError as exc:
        raise Invalid(str(exc)) from None
    return check_typed(typed, settings)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

A = {"X-API-Key": KEY_A}
B = {"X-API-Key": KEY_B}
SECRET_LINES = ["top-secret-line-one", "top-secret-line-two", "top-secret-line-three"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    data, extra = root / "data", root / "extra-assets"
    extra.mkdir()
    (extra / "extra-vocab.txt").write_text("stripes\ndots\ngrass\n")
    (extra / "sub").mkdir()
    (extra / "sub" / "nested.txt").write_text("sky\nwater\n")
    (root / "secret.txt").write_text("\n".join(SECRET_LINES))
    write_tiny_clip(data / "assets")
    settings = Settings(data_dir=str(data), api_keys=[KEY_A, KEY_B], workers=0, asset_dirs=[str(extra)],
                        captioner_urls=["http://127.0.0.1:9/v1"],
                        captioner_keys={"http://127.0.0.1:9/v1": "NF_TEST_CAPTIONER_KEY"})
    with TestClient(create_app(settings), timeout=120) as client:
        yield {"client": client, "root": root, "settings": settings, "extra": extra}


@pytest.fixture(scope="module")
def ids(env, assets):
    client = env["client"]
    with open(assets["weights"], "rb") as fh:
        r = client.post("/v1/models", headers=A, files={"weights": ("tiny.safetensors", fh)},
                        data={"descriptor": json.dumps(assets["descriptor"])})
    assert r.status_code == 201, r.text
    model = r.json()["id"]
    r = client.post("/v1/datasets", headers=A, files={"file": ("d.zip", assets["zip"].read_bytes(), "application/zip")})
    assert r.status_code == 201, r.text
    return {"model": model, "dataset": r.json()["id"]}


def submit(env, ids, headers=A, **kwargs):
    return env["client"].post("/v1/jobs", headers=headers, json=job_spec(ids["model"], ids["dataset"], **kwargs))


def no_server_paths(env, body: dict, sent: str = "") -> None:
    """Nothing of the server in a problem: no server path, no line of the file; the client's own input
    echoed back is not a leak."""
    text = body["detail"].replace(sent, "").replace(repr(Path(sent).name), "") + json.dumps({k: v for k, v in body.items() if k != "detail"})
    for leak in (str(env["root"]), *SECRET_LINES):
        assert leak not in text, (leak, text)


# -- defect 1: names that become paths resolve only inside their folder ----------------------------
TRAVERSALS = ["builtin:../../../../{root}/secret", "builtin:/{root}/secret", "builtin:..", "builtin:general/../general",
              "builtin:general\\..\\x", "builtin:", "builtin:%2e%2e/secret", "builtin:~/secret", "builtin:general.txt"]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_builtin_vocabulary_names_are_plain_names(env, ids, name):
    name = name.format(root=str(env["root"]).lstrip("/"))
    for field in ("vocabulary", "templates"):
        r = submit(env, ids, labeling={**labeling_section(), field: name})
        body = assert_problem(r, 422, "built-in")
        no_server_paths(env, body, name)
    with pytest.raises(ValueError, match="built-in"):
        load_vocabulary(name)  # the worker's own loader refuses it too (defence in depth)


@pytest.mark.parametrize("field,value", [
    ("vocabulary", "{root}/secret.txt"), ("vocabulary", "../../secret.txt"), ("vocabulary", "../secret.txt"),
    ("templates", "../../secret.txt"), ("vocabulary", "~/.bashrc"), ("vocabulary", "/etc/hostname"),
    ("clip", {"model": "local-dir:..", "pretrained": None}),
    ("clip", {"model": "local-dir:../../", "pretrained": None}),
    ("clip", {"model": "hf-hub:someone/model", "pretrained": None}),
    ("clip", {"model": "../tiny-clip", "pretrained": None}),
    ("clip", {"model": "nf-service-test-clip", "pretrained": "../../secret.txt"}),
    ("clip", {"model": "nf-service-test-clip", "pretrained": "tiny-clip/weights.safetensors",
              "model_config": "../../secret.txt"}),
    ("captioner", {"backend": "transformers", "model": "../.."}),
    ("captioner", {"backend": "transformers", "model": "/"}),
    ("captioner", {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "prompt": "../../secret"}),
    ("captioner", {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                   "circuit_prompt": "group_caption@../../x"}),
])
def test_every_path_name_stays_in_its_folder(env, ids, field, value):
    if isinstance(value, str):
        value = value.format(root=env["root"])
    r = submit(env, ids, labeling={**labeling_section(), field: value})
    body = assert_problem(r, 422)
    assert "asset folders" in body["detail"] or "model name" in body["detail"] or "prompt" in body["detail"], body
    no_server_paths(env, body, json.dumps(value) if not isinstance(value, str) else value)


def test_a_symlink_in_the_asset_folder_does_not_lead_out(env, ids):
    link = env["extra"] / "escape.txt"
    link.unlink(missing_ok=True)
    link.symlink_to(env["root"] / "secret.txt")
    body = assert_problem(submit(env, ids, labeling={**labeling_section(), "vocabulary": "escape.txt"}), 422,
                          "asset folders")
    no_server_paths(env, body)


@pytest.mark.parametrize("name", ["extra-vocab.txt", "sub/nested.txt"])
def test_names_relative_to_a_configured_asset_folder_resolve(env, ids, name):
    r = submit(env, ids, labeling={**labeling_section(), "vocabulary": name})
    assert r.status_code == 202, r.text
    job = env["client"].get(f"/v1/jobs/{r.json()['id']}", headers=A).json()
    assert job["state"] == "queued"
    env["client"].delete(f"/v1/jobs/{job['id']}", headers=A)
    # the data dir's own assets/ still resolves too
    r = submit(env, ids, labeling=labeling_section())
    assert r.status_code == 202, r.text
    env["client"].delete(f"/v1/jobs/{r.json()['id']}", headers=A)


def test_check_labeling_resolves_into_the_asset_folder(env):
    config = check_labeling({**labeling_section(), "vocabulary": "extra-vocab.txt"}, env["settings"])
    assert Path(config.vocabulary) == env["extra"] / "extra-vocab.txt"
    assert load_vocabulary(config.vocabulary).concepts == ("stripes", "dots", "grass")


def test_every_clip_of_a_list_stays_in_the_asset_folders(env):
    """A second CLIP gets the same checks as the first: no path outside the asset folders."""
    good = labeling_section()["clip"]
    config = check_labeling({**labeling_section(), "extra_clips": [good]}, env["settings"])
    assert config.extra_clips == [config.clip]
    for bad in ({"model": "nf-service-test-clip", "pretrained": "../../secret.txt"}, {"model": "local-dir:..", "pretrained": None}):
        with pytest.raises(Invalid, match=r"labeling\.extra_clips\[1\]\.(pretrained|model)"):
            check_labeling({**labeling_section(), "extra_clips": [good, bad]}, env["settings"])


# -- defect 2: the captioner's key is the operator's ------------------------------------------------
CAPTIONER = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}


@pytest.mark.parametrize("chosen", ["NEURFLOW_API_KEYS", "HOME", "NF_TEST_CAPTIONER_KEY", None, ""])
def test_a_job_cannot_choose_the_captioner_key(env, ids, chosen):
    section = {**labeling_section(), "captioner": {**CAPTIONER, "api_key_env": chosen}}
    assert_problem(submit(env, ids, labeling=section), 422, "operator")


def test_the_operator_key_of_the_endpoint_is_used(env):
    config = check_labeling({**labeling_section(), "captioner": CAPTIONER}, env["settings"])
    assert config.captioner.api_key_env == "NF_TEST_CAPTIONER_KEY"
    other = Settings(data_dir=str(env["root"] / "data"), captioner_urls=["http://127.0.0.1:9/v1/"])
    assert check_labeling({**labeling_section(), "captioner": CAPTIONER}, other).captioner.api_key_env is None
    assert from_env({"NEURFLOW_CAPTIONER_KEYS": "http://h:1/v1=K1, https://x/v1=K2"})["captioner_keys"] == {
        "http://h:1/v1": "K1", "https://x/v1": "K2"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        from_env({"NEURFLOW_CAPTIONER_KEYS": "nokey"})


# -- defect 3: bounded work --------------------------------------------------------------------------
@pytest.mark.parametrize("engine,field", [
    ({"ig_steps": 4097}, "ig_steps"), ({"ig_steps": 10**9}, "ig_steps"), ({"tau": 5000}, "tau"),
    ({"top_n": 1001}, "top_n"), ({"batch_size": 1025}, "batch_size"), ({"forward_batch_size": 10**6}, "forward_batch_size"),
    ({"granularities": [0.5] * 9}, "granularities"), ({"max_groups": 10**6}, "max_groups"),
    ({"max_concepts": 51}, "max_concepts"), ({"n_exemplars": 101}, "n_exemplars"), ({"n_groups": 10**6}, "n_groups"),
    ({"n_groups": {"layer4": 10**6}}, "n_groups"), ({"stride_ratio": 0.001}, "stride_ratio"),
    ({"layers": ["layer4"] * 33}, "layers"), ({"ig_steps": 0}, "ig_steps"), ({"tau": -1}, "tau"),
])
def test_engine_parameters_are_bounded(env, ids, engine, field):
    r = submit(env, ids, engine={"layers": ["layer4", "layer3"], **engine})
    body = assert_problem(r, 400, field)
    assert "Traceback" not in body["detail"]


def test_bounds_are_in_the_openapi_document(env):
    doc = env["client"].get("/schema/openapi.json").json()
    schemas = doc["components"]["schemas"]
    engine = next(s for name, s in schemas.items() if "EngineRequest" in name)["properties"]
    assert engine["ig_steps"]["oneOf"][0] == {"type": "integer", "minimum": 1, "maximum": 4096}
    assert {"type": "integer", "minimum": 1, "maximum": 1000} in engine["n_groups"]["oneOf"]
    assert engine["tau"]["maximum"] == 4096 and engine["top_n"]["maximum"] == 1000
    layers = {"array" if o.get("type") == "array" else "auto": o for o in engine["layers"]["oneOf"]}
    assert layers["array"]["maxItems"] == 32 and layers["array"]["minItems"] == 2 and engine["tau"]["description"]
    assert layers["auto"] == {"type": "string", "const": "auto"} or layers["auto"].get("enum") == ["auto"], layers


def test_estimated_cost_is_checked_at_submit(env, ids):
    r = submit(env, ids, target=[0, 1, 2], engine={"layers": ["layer4", "layer3", "layer2", "layer1"],
                                                   "ig_steps": 4096, "granularities": [1, 0.5, 0.25, 0.125],
                                                   "stride_ratio": 0.1})
    assert_problem(r, 422, "at most 200,000,000")
    # a neighbour just under the budget is accepted
    r = submit(env, ids, target=[0], engine={"layers": ["layer4", "layer3"], "ig_steps": 4096,
                                            "granularities": [1, 0.5]})
    assert r.status_code == 202, r.text
    env["client"].delete(f"/v1/jobs/{r.json()['id']}", headers=A)


@pytest.mark.parametrize("section,field", [
    ({"batch_size": 10**6}, "batch_size"), ({"vocabulary": [f"c{i}" for i in range(50_001)]}, "vocabulary"),
    ({"vocabulary": ["x" * 301, "y"]}, "vocabulary"), ({"templates": ["{} " + "x" * 400]}, "templates"),
    ({"captioner": {**CAPTIONER, "timeout_s": 10**6}}, "timeout_s"), ({"top_k": 10**6}, "top_k"),
    ({"max_patches": 10**6}, "max_patches"),
])
def test_labeling_parameters_are_bounded(env, section, field):
    with pytest.raises(Invalid, match=field):
        check_labeling({**labeling_section(), **section}, env["settings"])


# -- specs: unknown fields, other keys' ids ----------------------------------------------------------
def test_unknown_fields_and_other_keys_ids(env, ids):
    spec = job_spec(ids["model"], ids["dataset"])
    for where in ("model", "data", "engine"):
        bad = json.loads(json.dumps(spec))
        bad[where]["surprise"] = 1
        assert_problem(env["client"].post("/v1/jobs", headers=A, json=bad), 400, "surprise")
    assert_problem(submit(env, ids, headers=B), 422, "one of your models")
    # the labeling section is typed like the others: the request's decoding refuses it
    assert_problem(submit(env, ids, labeling={**labeling_section(), "surprise": 1}), 400, "surprise")


# -- defect 7: problems and job errors name nothing of the server ------------------------------------
def test_server_paths_are_redacted_from_problems_and_job_errors(tmp_path):
    import sys

    from neurflow.service import errors
    from neurflow.service.http.app import _private_paths
    from neurflow.service.http.problems import _from_api_error
    from neurflow.service.jobs.store import JobStore
    from neurflow.service.storage.db import Database

    from ..helpers import run_job

    settings = Settings(data_dir=str(tmp_path / "d"), asset_dirs=[str(tmp_path / "a")])
    errors.register_private_paths(_private_paths(settings))
    text = f"cannot open {settings.data_path}/scratch/x.zip, {tmp_path / 'a'}/v.txt or {sys.prefix}/lib/x.py"
    out = errors.redact(text)
    assert "<data>/scratch/x.zip" in out and "<assets>/v.txt" in out and "<python>/lib/x.py" in out, out
    assert str(tmp_path) not in out and sys.prefix not in out
    problem = _from_api_error(Invalid(text))
    assert str(tmp_path) not in problem.detail
    jobs = JobStore(Database(tmp_path / "jobs.db"))
    jobs.create("job-1", "owner", run_job(), 2)
    assert jobs.finish("job-1", "failed", error=text)
    stored = jobs.get("owner", "job-1")["error"]
    assert str(tmp_path) not in stored and "<data>/scratch/x.zip" in stored


# -- Hardening II, 2: the device is the worker's, never the caller's -----------------------------------
@pytest.mark.parametrize("device", ["meta", "cuda:7", "/dev/null", "cpu"])
def test_engine_device_is_not_the_callers(env, ids, device):
    body = assert_problem(submit(env, ids, engine={**json.loads(json.dumps(job_spec("m", "d")["engine"])),
                                                   "device": device}), 422, "engine.device")
    assert "server's setting" in body["detail"]


@pytest.mark.parametrize("device", ["meta", "cuda:7", "/dev/null", "cuda", "cuda:1"])
def test_the_clip_device_is_one_of_the_servers(env, device):
    """A job may put its CLIP on a device the server runs, nothing else (``meta`` would poison the cache)."""
    gpu_server = msgspec.structs.replace(env["settings"], devices=["cuda:0"])
    for settings in (env["settings"], gpu_server):
        with pytest.raises(Invalid, match=rf"labeling\.clip\.device {re.escape(repr(device))} is not one of"):
            check_labeling({**labeling_section(), "clip": {**labeling_section()["clip"], "device": device}}, settings)
    assert check_labeling({**labeling_section(), "clip": {**labeling_section()["clip"], "device": "cuda:0"}},
                          gpu_server).clip.device == "cuda:0"
    assert check_labeling(labeling_section(), env["settings"]).clip.device == "cpu"


# -- Hardening II, 6: nothing of the server in what callers read ---------------------------------------
def test_a_stored_job_shows_no_server_path_or_env_name(env, ids):
    section = {**labeling_section(), "vocabulary": "extra-vocab.txt", "captioner": CAPTIONER}
    r = submit(env, ids, labeling=section)
    assert r.status_code == 202, r.text
    for body in (r.text, env["client"].get(f"/v1/jobs/{r.json()['id']}", headers=A).text,
                 env["client"].get("/v1/jobs", headers=A).text):
        assert str(env["root"]) not in body and "NF_TEST_CAPTIONER_KEY" not in body, body[:2000]
    spec = r.json()["spec"]
    assert spec["labeling"]["vocabulary"] == "<assets>/extra-vocab.txt"  # the name the caller gave, under a label
    env["client"].delete(f"/v1/jobs/{r.json()['id']}", headers=A)


@pytest.mark.parametrize("field", ["vocabulary", "templates"])
def test_one_message_for_every_refused_name(env, ids, field):
    """Whether a file exists outside the asset folders or not, the answer is the same (no existence oracle)."""
    existing, missing = str(env["root"] / "secret.txt"), str(env["root"] / "no-such-file.txt")
    details = []
    for name in (existing, missing, "../secret.txt", "../no-such-file.txt", "no-such-file.txt"):
        body = assert_problem(submit(env, ids, labeling={**labeling_section(), field: name}), 422)
        details.append(body["detail"].replace(repr(Path(name).name), "NAME"))
    assert len(set(details)) == 1, details


def test_an_all_class_job_is_checked_against_the_layer_shapes(env, tmp_path):
    """600 classes traced from layer4 (512 channels) died with an IndexError in the worker; now a 422 at submit."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path / "wide.safetensors"
    save_file(torchvision.models.resnet18(num_classes=600).state_dict(), str(path))
    client = env["client"]
    with open(path, "rb") as fh:
        r = client.post("/v1/models", headers=A, files={"weights": ("wide.safetensors", fh)},
                        data={"descriptor": json.dumps({"arch": "resnet18", "num_classes": 600, "input_size": 32})})
    assert r.status_code == 201, r.text
    dataset = client.post("/v1/datasets", headers=A, files={"file": ("d.zip", make_zip({"a.png": png_bytes((1, 2, 3))}),
                                                                     "application/zip")}).json()["id"]
    ids = {"model": r.json()["id"], "dataset": dataset}

    def spec(target, layers):
        s = job_spec(ids["model"], ids["dataset"], target=target, engine={"layers": layers, "ig_steps": 1})
        s["model"]["num_classes"] = 600
        return s

    body = assert_problem(client.post("/v1/jobs", headers=A, json=spec("all", ["layer4", "layer3"])), 422,
                          "has 512 channels")
    assert "class 512" in body["detail"] and "'fc'" in body["detail"]
    assert_problem(client.post("/v1/jobs", headers=A, json=spec([599], ["layer4", "layer3"])), 422, "class 599")
    r = client.post("/v1/jobs", headers=A, json=spec([511, 599], ["fc", "layer4"]))  # the output layer first
    assert r.status_code == 202, r.text
    client.delete(f"/v1/jobs/{r.json()['id']}", headers=A)


# -- engine.layers: "auto" or explicit names ------------------------------------------------------------
@pytest.mark.parametrize("layers", ["Auto", "all", "", ["layer4"], [], 3, None, {"auto": True}])
def test_layers_are_auto_or_a_list_of_names(env, ids, layers):
    body = assert_problem(submit(env, ids, engine={"layers": layers}), 400, "engine.layers")
    # the refusal names what is accepted, not only what was wrong
    assert 'engine.layers accepts "auto" or a list of 2 to 32 items' in body["detail"], body["detail"]


def test_auto_layers_skip_the_name_check_but_not_the_others(env, ids):
    r = submit(env, ids, engine={"layers": "auto", "ig_steps": 4})
    assert r.status_code == 202, r.text
    env["client"].delete(f"/v1/jobs/{r.json()['id']}", headers=A)
    assert_problem(submit(env, ids, engine={"layers": ["fc", "no_such_layer"]}), 422, 'send "auto"')
    assert_problem(submit(env, ids, engine={"layers": "auto", "device": "meta"}), 422, "engine.device")
    assert_problem(submit(env, ids, target=[7], engine={"layers": "auto"}), 422, "out of range")
    # "auto" counts as the longest list it could become (every addressable layer of the model)
    costly = {"layers": "auto", "ig_steps": 4096, "granularities": [1, 0.5, 0.25]}
    assert_problem(submit(env, ids, target=[0, 1, 2], engine=costly), 422, "at most 200,000,000")
