"""label_circuit on circuits whose groups are cut around the world's planted parts."""

from __future__ import annotations

import shutil

import pytest

from neurflow.core.circuit import Circuit
from neurflow.labeler.evidence import RERANK_CANDIDATES
from neurflow.labeler.labeling import label_circuit
from neurflow.labeler.patches import group_patches, patch_key

from neurflow.world.circuits import world_circuit

CLASSES = (0, 3, 5, 6)  # together they hold 11 of the 12 class parts


@pytest.fixture(scope="module")
def labeled(world_clip):
    out = {}
    for c in CLASSES:
        circuit, expected = world_circuit(world_clip.world, c, n_images=6, split="heldout")
        out[c] = (circuit, expected, label_circuit(circuit, world_clip.heldout_images, world_clip.labeling()))
    return out


def test_group_labels_match_the_planted_parts(labeled, world_clip):
    hits = total = 0
    for _, expected, circuit in labeled.values():
        for _, _, group in circuit.iter_groups():
            if expected[group.id] is not None:
                total += 1
                hits += group.labels[0].text == expected[group.id]
    print(f"group top-1 accuracy on {len(CLASSES)} classes: {hits}/{total}")
    assert total >= 18 and hits / total >= 0.85


def test_background_groups_are_not_named_after_a_part(labeled):
    for _, expected, circuit in labeled.values():
        for _, _, group in circuit.iter_groups():
            if expected[group.id] is None:
                assert group.labels[0].text == "plain background"


def test_labels_are_sorted_top_k_clip_labels_with_confidence(labeled):
    for _, _, circuit in labeled.values():
        for _, _, group in circuit.iter_groups():
            assert len(group.labels) == 5 and {lab.source for lab in group.labels} == {"clip"}
            # the combination may move one of the mosaic score's RERANK_CANDIDATES best first; the rest
            # keep the score's order
            scores = [lab.score for lab in group.labels]
            assert scores[1:] == sorted(scores[1:], reverse=True) and len({lab.text for lab in group.labels}) == 5
            assert scores[0] >= sorted(scores, reverse=True)[RERANK_CANDIDATES - 1]
            assert 0.0 < group.confidence < 1.0


def test_confidence_is_lower_for_mixed_groups(world_clip):
    """A group whose patches show two different parts has less patch agreement in its evidence and no
    more confidence than before, while its mosaic's part stays the label; every group's status
    follows its confidence."""
    circuit, expected = world_circuit(world_clip.world, 0, n_images=6, split="heldout")
    before = label_circuit(circuit, world_clip.heldout_images, world_clip.labeling()).layers[1].groups[0]
    layer = circuit.layers[1]
    a, b = layer.groups[0], layer.groups[1]
    a.members = a.members + b.members  # the first group now holds two parts' patches
    labeled = label_circuit(circuit, world_clip.heldout_images, world_clip.labeling())
    assert labeled.labeling.settings.score == "mosaic"
    groups = labeled.layers[1].groups
    # the same mosaic with disagreeing patches: less agreement, and never more confidence
    assert groups[0].evidence.features["patches"] < min(before.evidence.features["patches"],
                                                        *(g.evidence.features["patches"] for g in groups[1:3]))
    assert groups[0].confidence <= before.confidence
    assert groups[0].labels[0].text == expected[a.id]  # its five exemplars are still the first part's
    _assert_status_follows_confidence(labeled)
    # The contrastive score's confidence (patch agreement) ranks it below the pure groups too.
    contrastive = label_circuit(circuit, world_clip.heldout_images, world_clip.labeling(score="contrastive")).layers[1].groups
    assert contrastive[0].confidence < min(contrastive[1].confidence, contrastive[2].confidence)


def _assert_status_follows_confidence(circuit):
    from neurflow.labeler.evidence import UNCERTAIN_BELOW

    for _, _, g in circuit.iter_groups():
        if g.confidence < UNCERTAIN_BELOW:
            assert g.status == "uncertain" and [c.text for c in g.candidates] == [lab.text for lab in g.labels[:2]]
        else:
            assert g.status == "labeled" and g.candidates == []


def test_every_label_carries_its_evidence(labeled):
    from neurflow.labeler.evidence import CLIP_FEATURES

    for _, _, circuit in labeled.values():
        assert circuit.labeling.confidence_method.startswith("logistic: sigmoid(")
        for _, _, g in circuit.iter_groups():
            assert set(g.evidence.features) == set(CLIP_FEATURES)
            assert g.evidence.method == circuit.labeling.confidence_method
            assert [v.voter.split(" ")[-1] for v in g.evidence.votes] == ["mosaic", "patches"]
            # one CLIP: its mosaic vote is the label, or one the combination preferred among the three best
            assert g.evidence.votes[0].text in [lab.text for lab in g.labels[:3]]
        _assert_status_follows_confidence(circuit)


def test_several_clips_each_vote(world_clip, tmp_path):
    """``clip`` as a list: every CLIP votes, each is recorded; two copies of one CLIP agree with one."""
    circuit, _ = world_circuit(world_clip.world, 3, n_images=4, split="heldout")
    section = world_clip.labeling()
    one = label_circuit(circuit, world_clip.heldout_images, section)
    two = label_circuit(circuit, world_clip.heldout_images, {**section, "clip": [section["clip"], section["clip"]]})
    assert len(two.labeling.extra_clips) == 1 and two.labeling.extra_clips[0] == two.labeling.clip
    assert len(two.labeling.settings.extra_clips) == 1
    for (_, _, g1), (_, _, g2) in zip(one.iter_groups(), two.iter_groups()):
        assert [lab.text for lab in g1.labels] == [lab.text for lab in g2.labels]
        assert len(g2.evidence.votes) == 4 and g2.evidence.features["clips"] == 1.0
    again = Circuit.from_json(two.to_json())
    assert again.labeling.extra_clips == two.labeling.extra_clips


def test_provenance_and_holdout_are_recorded(labeled, world_clip):
    original, _, circuit = labeled[0]
    info = circuit.labeling
    assert info.clip.model == world_clip.labeling()["clip"]["model"] and len(info.clip.weights_sha256) == 64
    assert info.clip.model.startswith("neurflow-world-clip")
    assert info.vocabulary.size == 14 and info.templates and info.settings.score == "mosaic"
    for layer_index, _, group in original.iter_groups():
        held = {tuple(b) for b in info.holdout[group.id]}
        all_patches = {patch_key(p) for p in group_patches(original, layer_index, group)}
        assert held and held < all_patches  # some patches held out, not all
        assert not held & {patch_key(e) for e in group.exemplars}  # display exemplars are always used
    # the input circuit is untouched; the output round-trips through the circuit document
    assert all(not g.labels for _, _, g in original.iter_groups())
    again = Circuit.from_json(circuit.to_json())
    assert again.layers[1].groups[0].labels == circuit.layers[1].groups[0].labels


def test_progress_reports_every_group(world_clip):
    circuit, _ = world_circuit(world_clip.world, 1, n_images=4, split="heldout")
    seen = []
    label_circuit(circuit, world_clip.heldout_images, world_clip.labeling(top_k=2), progress=seen.append)
    clip_steps = [(e.stage, e.done, e.total, e.unit) for e in seen if e.stage == "labeling: clip"]
    n_groups = sum(1 for _ in circuit.iter_groups())
    assert clip_steps[-1] == ("labeling: clip", n_groups, n_groups, "groups")  # throttled: the last step always
    assert [e.done for e in seen if e.stage == "labeling: clip"] == sorted(e.done for e in seen
                                                                            if e.stage == "labeling: clip")


def test_undecodable_image_is_a_clear_error(world_clip, tmp_path):
    circuit, _ = world_circuit(world_clip.world, 2, n_images=4, split="heldout")
    root = tmp_path / "images"
    shutil.copytree(world_clip.heldout_images, root)
    broken = root / circuit.images[0].path
    broken.write_bytes(b"\x89PNG but not really")
    with pytest.raises(ValueError) as info:
        label_circuit(circuit, root, world_clip.labeling())
    assert "cannot decode image" in str(info.value) and circuit.images[0].path.split("/")[-1] in str(info.value)


def test_wrong_data_root_is_a_clear_error(world_clip, tmp_path):
    circuit, _ = world_circuit(world_clip.world, 2, n_images=4, split="heldout")
    with pytest.raises(ValueError, match="is missing; is .* the data root"):
        label_circuit(circuit, tmp_path, world_clip.labeling())
    with pytest.raises(ValueError, match="is not a folder"):
        label_circuit(circuit, tmp_path / "nope", world_clip.labeling())


def test_duplicate_ridden_vocabulary_is_rejected_before_any_work(world_clip):
    circuit, _ = world_circuit(world_clip.world, 2, n_images=4, split="heldout")
    with pytest.raises(ValueError, match="duplicate concept"):
        label_circuit(circuit, world_clip.heldout_images, world_clip.labeling(vocabulary=["red circle", "Red Circle", "blue square"]))


def _drifting_circuit(world_clip):
    """Class 0's first part group keeps its five exemplars (part A) while every other top patch is
    replaced by the second group's patches (part B): the mosaic shows A, most patches show B."""
    circuit, expected = world_circuit(world_clip.world, 0, n_images=6, split="heldout")
    layer = circuit.layers[1]
    a, b = layer.groups[0], layer.groups[1]
    concept_a = next(n for n in layer.neurons if n.id == a.members[0].neuron).concepts[0]
    concept_b = next(n for n in layer.neurons if n.id == b.members[0].neuron).concepts[0]
    concept_a.patches = list(a.exemplars) + list(concept_b.patches)
    return circuit, expected[a.id], expected[b.id]


def test_mosaic_score_names_what_the_mosaic_shows_and_doubts_it(world_clip):
    """The mosaic score names the exemplars' part even when most top patches show another; the
    patches' disagreement is in the evidence, and it never raises the confidence."""
    circuit, shown, behind = _drifting_circuit(world_clip)
    undrifted, _ = world_circuit(world_clip.world, 0, n_images=6, split="heldout")
    before = label_circuit(undrifted, world_clip.heldout_images, world_clip.labeling(score="mosaic")).layers[1].groups[0]
    mosaic = label_circuit(circuit, world_clip.heldout_images, world_clip.labeling(score="mosaic"))
    drifted = mosaic.layers[1].groups[0]
    assert drifted.labels[0].text == shown
    assert drifted.confidence <= before.confidence and drifted.evidence.features["patches"] < 0.5
    assert drifted.evidence.votes[1].text == behind  # its patches' own vote says what they show
    assert mosaic.labeling.settings.score == "mosaic" and "logistic" in mosaic.labeling.confidence_method
    contrastive = label_circuit(circuit, world_clip.heldout_images, world_clip.labeling(score="contrastive"))
    assert contrastive.layers[1].groups[0].labels[0].text == behind  # the contrastive score follows the drift
