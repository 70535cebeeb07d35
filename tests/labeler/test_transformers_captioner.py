"""The local transformers back end with a tiny random LLaVA saved to and loaded from a folder."""

from __future__ import annotations

import pytest
from PIL import Image

from neurflow.labeler.captioning import CaptionRequest, build_captioner
from neurflow.labeler.captioning.transformers_backend import TransformersCaptioner
from neurflow.labeler.config import CaptionerSpec
from neurflow.labeler.labeling import label_circuit

from .tiny_vlm import build_tiny_llava
from neurflow.world.circuits import world_circuit


@pytest.fixture(scope="module")
def vlm_folder(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


def test_folder_round_trip_and_multi_image_generation(vlm_folder, monkeypatch):
    import transformers

    seen = {}
    real = transformers.AutoModelForImageTextToText.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", spy)
    captioner = TransformersCaptioner(vlm_folder, max_new_tokens=6, min_new_tokens=6)
    assert seen["local_files_only"] is True and not seen.get("trust_remote_code")
    assert captioner.has_chat_template and captioner.name == f"transformers:{vlm_folder.name}"
    sets = [[Image.new("RGB", (20, 20), "red"), Image.new("RGB", (20, 20), "blue")], [Image.new("RGB", (20, 20), "green")]]
    request = CaptionRequest(system="be objective", user="what is shared?", image_sets=sets)
    inputs = captioner._inputs(request)
    assert inputs["pixel_values"].shape[0] == 3  # every image of every set goes to the model
    text = captioner.generate(request)
    assert isinstance(text, str) and text.strip()
    assert captioner.complete_text("s", "u") is None


def test_build_captioner_dispatches_on_backend(vlm_folder):
    cap = build_captioner(CaptionerSpec(backend="transformers", model=str(vlm_folder), max_new_tokens=4))
    assert isinstance(cap, TransformersCaptioner)


def test_folder_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="has no config.json"):
        TransformersCaptioner(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ValueError, match="cannot load a vision-language model"):
        TransformersCaptioner(tmp_path)


def test_label_circuit_with_the_local_vlm(world_clip, vlm_folder):
    circuit, _ = world_circuit(world_clip.world, 7, n_images=4, split="heldout")
    section = world_clip.labeling(captioner={"backend": "transformers", "model": str(vlm_folder), "max_new_tokens": 8,
                                             "max_images": 2, "image_size": 32, "summarize": True})
    labeled = label_circuit(circuit, world_clip.heldout_images, section)
    assert labeled.labeling.caption_errors == {}, labeled.labeling.caption_errors
    for _, _, group in labeled.iter_groups():
        assert group.caption is not None and group.caption.model == f"transformers:{vlm_folder.name}"
        assert group.labels[0].source == "clip" and sum(lab.source == "caption" for lab in group.labels) <= 1
