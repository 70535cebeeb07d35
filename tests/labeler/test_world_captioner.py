"""The captioning path end to end with a captioner that has learned something: a tiny
VisionEncoderDecoder model trained on the test world's train split (neurflow.world.captioner),
saved with save_pretrained, loaded by the labeler's transformers back end, captioning engine-like
groups of the world's *held-out* images, its captions summarised into labels and checked against
the parts the groups were built around."""

from __future__ import annotations

import json

import pytest

from neurflow.labeler.labeling import label_circuit
from neurflow.world.circuits import world_circuit

# Small enough to train in ~15 s on one shared core; the bench trains the full config.
QUICK = dict(steps=100, pool=500)


@pytest.fixture(scope="module")
def captioner_folder(world_clip):
    from neurflow.world.captioner import CaptionerTrainConfig, ensure_world_captioner

    return ensure_world_captioner([world_clip.world], CaptionerTrainConfig(**QUICK), log=None)


def test_trained_folder_is_safetensors_and_loads_offline(captioner_folder):
    files = {p.name for p in captioner_folder.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    metrics = json.loads((captioner_folder / "metrics.json").read_text())
    assert metrics["fresh_mosaic_top1"] > 0.5  # 14 concepts: chance is 0.07


def test_caption_labels_name_the_parts_of_held_out_groups(world_clip, captioner_folder):
    """Labels made from the captions of unseen images name the group's part far above chance; the
    same architecture untrained (its weights scrambled) does not, so the score is the training's."""
    section = world_clip.labeling(captioner={"backend": "transformers", "model": str(captioner_folder), "max_new_tokens": 6,
                                             "max_images": 5, "image_size": 64, "circuit_prompt": None})
    right = total = 0
    for class_index in (0, 3):
        circuit, expected = world_circuit(world_clip.world, class_index, n_images=6, split="heldout")
        labeled = label_circuit(circuit, world_clip.heldout_images, section)
        assert labeled.labeling.caption_errors == {}, labeled.labeling.caption_errors
        for _, _, group in labeled.iter_groups():
            assert group.caption is not None and group.caption.model == f"transformers:{captioner_folder.name}"
            assert 0.0 < group.caption.confidence <= 1.0  # the model's smallest token probability of its answer
            caption_labels = [lab.text for lab in group.labels if lab.source == "caption"]
            assert len(caption_labels) == 1 and group.labels[0].source == "clip"
            # the caption's words voted: read onto the vocabulary, judged by the captioned combination
            words = [v for v in group.evidence.votes if v.voter.startswith("caption:")]
            assert [v.voter for v in words] == [f"caption:transformers:{captioner_folder.name} words"]
            assert 0.0 <= group.evidence.features["caption"] <= 1.0
            assert group.evidence.method.startswith("logistic") and "caption" in group.evidence.method
            if expected.get(group.id) is not None:
                total += 1
                right += caption_labels[0] == expected[group.id]
    assert total >= 4 and right / total >= 0.6, (right, total)


def test_an_untrained_captioner_of_the_same_shape_does_not_name_the_parts(world_clip, captioner_folder, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    scrambled = tmp_path / "scrambled"
    scrambled.mkdir()
    for f in captioner_folder.iterdir():
        if f.name != "model.safetensors":
            (scrambled / f.name).write_bytes(f.read_bytes())
    gen = torch.Generator().manual_seed(0)
    weights = {k: torch.randn(v.shape, generator=gen) * 0.02 for k, v in load_file(captioner_folder / "model.safetensors").items()}
    save_file(weights, scrambled / "model.safetensors")
    section = world_clip.labeling(captioner={"backend": "transformers", "model": str(scrambled), "max_new_tokens": 6,
                                             "max_images": 5, "image_size": 64, "circuit_prompt": None})
    circuit, expected = world_circuit(world_clip.world, 0, n_images=6, split="heldout")
    labeled = label_circuit(circuit, world_clip.heldout_images, section)
    named = [next((lab.text for lab in g.labels if lab.source == "caption"), None) == expected.get(g.id)
             for _, _, g in labeled.iter_groups() if expected.get(g.id) is not None]
    assert named and sum(named) / len(named) < 0.5


def test_a_caption_that_does_not_vote_leaves_the_clip_labels_as_they_were(world_clip, captioner_folder):
    captioner = {"backend": "transformers", "model": str(captioner_folder), "max_new_tokens": 6, "max_images": 5,
                 "image_size": 64, "circuit_prompt": None}
    circuit, _ = world_circuit(world_clip.world, 0, n_images=6, split="heldout")
    plain = label_circuit(circuit, world_clip.heldout_images, world_clip.labeling())
    silent_section = world_clip.labeling(captioner={**captioner, "vote": False})
    silent = label_circuit(circuit, world_clip.heldout_images, silent_section)
    voting = label_circuit(circuit, world_clip.heldout_images, world_clip.labeling(captioner=captioner))
    for (_, _, a), (_, _, b), (_, _, c) in zip(plain.iter_groups(), silent.iter_groups(), voting.iter_groups()):
        assert b.caption is not None and "caption" not in b.evidence.features
        assert [lab.text for lab in b.labels if lab.source == "clip"] == [lab.text for lab in a.labels]
        assert b.confidence == a.confidence
        assert "caption" in c.evidence.features
    assert "captioned groups" in voting.labeling.confidence_method
    assert "captioned groups" not in silent.labeling.confidence_method
