"""NeurFlow follows scikit-learn's estimator contract, and a fit changes no global state."""

from __future__ import annotations

import json
import random
from pathlib import Path

import msgspec
import numpy as np
import pytest
import torch
import torchvision
from sklearn.base import clone

from neurflow.core import memory
from neurflow.core.engine import NeurFlow
from neurflow.core.jobspec import JobSpec
from neurflow.core.params import FAST_PRESET, EngineParams, ImageSelection

SCHEMAS = Path(__file__).resolve().parents[2] / "core" / "schemas"
KW = dict(tau=2, top_n=8, granularities=(1.0, 0.5), select="all", ig_steps=4)


def test_parameters_are_the_structs_fields():
    names = set(NeurFlow(["fc", "up"]).get_params())
    assert names == set(EngineParams.__struct_fields__) | set(ImageSelection.__struct_fields__) | {"progress"}
    # the job spec's engine section is the same Struct, and its schema lists the same names
    assert msgspec.structs.fields(JobSpec)[2].type is EngineParams
    spec_schema = json.loads((SCHEMAS / "jobspec.schema.json").read_text())
    assert set(spec_schema["$defs"]["EngineParams"]["properties"]) == set(EngineParams.__struct_fields__)
    assert {"select", "max_images"} <= set(spec_schema["$defs"]["DataSpec"]["properties"])


def test_init_only_stores_and_params_round_trip():
    granularities = (1.0, 0.5)
    engine = NeurFlow(["fc", "up"], tau=0, granularities=granularities, select="nonsense")  # no validation yet
    assert engine.granularities is granularities and engine.tau == 0 and engine.select == "nonsense"
    params = engine.get_params()
    again = NeurFlow(**params)
    assert again.get_params() == params
    assert engine.set_params(tau=3, preset="fast") is engine and engine.get_params()["tau"] == 3
    with pytest.raises(ValueError, match="Invalid parameter 'taux'"):
        engine.set_params(taux=1)


def test_clone_copies_parameters_not_results(planted, colour_images):
    engine = NeurFlow(["fc", "up", "low"], n_groups={"up": 2}, **KW)
    assert engine.fit(planted, colour_images, 0) is engine
    twin = clone(engine)
    assert twin is not engine and twin.get_params() == engine.get_params()
    assert twin.n_groups == {"up": 2} and twin.n_groups is not engine.n_groups
    assert hasattr(engine, "circuit_") and not hasattr(twin, "circuit_")
    twin.fit(planted, colour_images, 0)
    engine.circuit_.timings, twin.circuit_.timings = {}, {}
    assert twin.circuit_ == engine.circuit_


def test_fit_records_the_resolved_parameters(planted, colour_images):
    engine = NeurFlow(["fc", "up", "low"], preset="fast", **{k: v for k, v in KW.items() if k != "ig_steps"})
    engine.fit(planted, colour_images, 0)
    assert engine.ig_steps is None  # the stored parameter is untouched ...
    assert engine.params_.ig_steps == FAST_PRESET["ig_steps"]  # ... the preset resolves it for the fit
    params = engine.circuit_.params
    assert params == engine.params_ and params is not engine.params_
    assert params.ig_steps == FAST_PRESET["ig_steps"] and params.batch_size == FAST_PRESET["batch_size"]
    assert params.preset == "fast" and params.device == "cpu" and params.granularities == [1.0, 0.5]
    assert engine.circuit_.fit.selection == ImageSelection(select="all")
    assert len(engine.circuit_.images) == len(colour_images)


def test_fit_changes_no_global_state(planted, colour_images, monkeypatch):
    mallopt_calls = []

    class Libc:  # records what the engine asks of glibc
        def mallopt(self, *args):
            mallopt_calls.append(args)
            return 1

        def malloc_trim(self, pad):
            return 1

    monkeypatch.setattr(memory, "_libc", lambda: Libc())
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    first = NeurFlow(["fc", "up", "low"], seed=5, **KW).fit(planted, colour_images, 0).circuit_
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    assert mallopt_calls == []
    # other global seeds do not change the result either
    torch.manual_seed(7)
    np.random.seed(7)
    second = NeurFlow(["fc", "up", "low"], seed=5, **KW).fit(planted, colour_images, 0).circuit_
    first.timings, second.timings = {}, {}
    assert first == second


def test_model_keeps_its_modes_and_weights(random_images):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)  # train mode: BatchNorm would use batch statistics
    model.layer1.eval()  # a caller's mixed modes come back as they were, module by module
    modes = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(tau=2, top_n=6, ig_steps=2, select="all")
    fitted = NeurFlow(["fc", "layer4.1", "layer4.0"], **kw).fit(model, random_images, 0).circuit_
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # no running-stat updates
    assert next(model.parameters()).device.type == "cpu"
    # the fit saw the model in eval mode: the same circuit as from an eval-mode copy
    reference = NeurFlow(["fc", "layer4.1", "layer4.0"], **kw).fit(model.eval(), random_images, 0).circuit_
    fitted.timings, reference.timings = {}, {}
    assert fitted == reference
    model.train()
    NeurFlow(["fc", "layer4.1"], **kw).predict_logits(model, random_images)
    assert model.training and model.layer4.training


def test_a_model_across_devices_is_refused_with_its_devices(planted, colour_images):
    planted.fc.to("meta")
    with pytest.raises(ValueError, match=r"several devices \(cpu, meta\)"):
        NeurFlow(["fc", "up", "low"], **KW).fit(planted, colour_images, 0)
