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
