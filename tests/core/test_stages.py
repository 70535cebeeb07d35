"""Resumable fits (issue 19, item 3): a fit killed after its second layer continues from the
stages it wrote, gives the circuit an uninterrupted fit gives, and recomputes none of them."""

from __future__ import annotations

import msgspec
import pytest

from neurflow.core.engine import NeurFlow
from neurflow.core.stages import StageStore

LAYERS = ["fc", "layer4", "layer3", "layer2"]


class Killed(Exception):
    pass


def engine(progress=None, **kw) -> NeurFlow:
    settings = dict(tau=2, top_n=6, ig_steps=2, select="all", granularities=(1.0, 0.5)) | kw
    return NeurFlow(LAYERS, progress=progress, **settings)


def without_timings(circuit):
    return msgspec.structs.replace(circuit, timings={})


@pytest.mark.parametrize("preset", ["exact", "fast"])  # fast keeps the bottom layer's maps: they are a stage too
def test_a_fit_killed_after_its_second_layer_continues_without_recomputing(tmp_path, tiny_resnet, random_images,
                                                                           preset):
    images = random_images[:3]
    whole = engine(preset=preset).fit(tiny_resnet, images, 1).circuit_

    def kill(event):
        if event.stage == f"ig {LAYERS[2]}":
            raise Killed  # the IG of the third layer pair has started: two layers are finished

    store = StageStore(tmp_path / "stages")
    with pytest.raises(Killed):
        engine(kill, preset=preset).fit(tiny_resnet, images, 1, stages=store)
    assert store.finished() == ["layer-0.json", "layer-1.json", "readouts.safetensors"]

    seen: list[str] = []
    resumed = engine(lambda event: seen.append(event.stage), preset=preset).fit(
        tiny_resnet, images, 1, stages=StageStore(tmp_path / "stages")).circuit_
    assert "activations" not in seen and f"ig {LAYERS[0]}" not in seen and f"ig {LAYERS[1]}" not in seen
    assert f"ig {LAYERS[2]}" in seen
    assert without_timings(resumed) == without_timings(whole)


def test_stages_of_other_parameters_or_images_are_not_reused(tmp_path, tiny_resnet, random_images):
    store = StageStore(tmp_path / "stages")
    engine().fit(tiny_resnet, random_images[:3], 1, stages=store)
    first = store.key
    engine(tau=3).fit(tiny_resnet, random_images[:3], 1, stages=store)
    second = store.key
    engine().fit(tiny_resnet, random_images[1:4], 1, stages=store)
    assert len({first, second, store.key}) == 3
    assert sorted(p.name for p in (tmp_path / "stages").iterdir()) == sorted([first, second, store.key])


def test_auto_layers_are_chosen_once_per_job_and_kept_for_its_later_runs(tmp_path, tiny_resnet, monkeypatch):
    from neurflow.core import pipeline
    from neurflow.core.circuit import ModelInfo
    from neurflow.core.jobspec import JobSpec
    from neurflow.core.layer_budget import suggest
    from neurflow.core.stages import ChosenLayers

    spec = msgspec.convert({"model": {"arch": "resnet18", "weights": "w.safetensors", "num_classes": 3,
                                      "input_size": 32},
                            "data": {"images": "images", "target_class": 1, "select": "all"},
                            "engine": {"layers": "auto", "tau": 2, "top_n": 6, "preset": "fast"}}, JobSpec)
    info = ModelInfo(arch="resnet18", weights_sha256="0" * 64, num_classes=3, input_size=32, mean=[0.5] * 3,
                     std=[0.5] * 3)
    kept = ChosenLayers(tmp_path / ".neurflow-stages" / ChosenLayers.NAME)
    first = pipeline.job_layers(spec, tiny_resnet, 6, info, kept).layers
    # at 32 px every candidate fits the default budget by orders of magnitude, whatever the load
    assert first == suggest(tiny_resnet, 32, spec.engine, 6).layers and len(first) > 2
    # a later run on a machine whose calibration would choose another list: the kept one is used, none is made
    other = first[:2]
    calls = []
    monkeypatch.setattr(pipeline, "resolve_layers",
                        lambda params, *a, **k: calls.append(a) or msgspec.structs.replace(params, layers=other))
    again = ChosenLayers(kept.path)  # another process reading the same folder
    assert pipeline.job_layers(spec, tiny_resnet, 6, info, again).layers == first
    assert calls == []
    # the patched choice is live: without a record, or for another job (spec, weights or images), it is what is used
    assert pipeline.job_layers(spec, tiny_resnet, 6, info, None).layers == other
    changed = msgspec.structs.replace(spec, engine=msgspec.structs.replace(spec.engine, tau=3))
    assert pipeline.job_layers(changed, tiny_resnet, 6, info, again).layers == other
    assert pipeline.job_layers(spec, tiny_resnet, 5, info, ChosenLayers(tmp_path / "other.json")).layers == other
    assert len(calls) == 3
    # explicit layers are never looked up or kept
    explicit = msgspec.structs.replace(spec, engine=msgspec.structs.replace(spec.engine, layers=["fc", "layer4"]))
    assert pipeline.job_layers(explicit, tiny_resnet, 6, info, again).layers == ["fc", "layer4"]
    # a damaged record is chosen again, not misread
    kept.path.write_bytes(b'{"job": ')
    assert pipeline.job_layers(spec, tiny_resnet, 6, info, again).layers == other
