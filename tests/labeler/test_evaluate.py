"""The evaluation report on labeled world circuits: right labels score well, wrong ones do not."""

from __future__ import annotations

import copy
import json

import pytest

from neurflow.core.circuit import Label
from neurflow.labeler.evaluation import EvaluationOptions, evaluate_circuit, format_comparison, format_report, from_csv
from neurflow.world.references import from_world
from neurflow.labeler.evaluation.evaluate import aggregate
from neurflow.labeler.labeling import label_circuit

from neurflow.world.circuits import world_circuit


@pytest.fixture(scope="module")
def labeled(world_clip):
    circuit, expected = world_circuit(world_clip.world, 1, n_images=6, split="heldout")
    return label_circuit(circuit, world_clip.heldout_images, world_clip.labeling()), expected


@pytest.fixture(scope="module")
def report(labeled, world_clip):
    circuit, _ = labeled
    refs = from_world(circuit, world_clip.world, images_root=world_clip.heldout_images)
    return evaluate_circuit(circuit, world_clip.heldout_images, refs)


def test_world_references_are_the_planted_parts(labeled, world_clip):
    circuit, expected = labeled
    refs = from_world(circuit, world_clip.world, images_root=world_clip.heldout_images)
    for gid, part in expected.items():
        assert refs.labels[gid] == ([part] if part else [])


def test_right_labels_score_well(report):
    agg = report["aggregate"]
    assert agg["n_with_reference"] == 6 and agg["top1_accuracy"] >= 5 / 6 and agg["top5_accuracy"] == 1.0
    assert agg["text_similarity"] > 0.9
    assert agg["retrieval_auc"] > 0.75 and agg["retrieval_auprc"] > agg["retrieval_chance_auprc"]
    assert agg["faithfulness_pearson"] > 0.5 and agg["sanity_pass_rate_pearson"] == 1.0
    for g in report["groups"]:
        assert g["retrieval"]["n_heldout"] >= 1
        assert set(g["faithfulness"]["metrics"]) >= {"pearson", "auprc", "f1", "iou"}


def test_wrong_labels_are_caught(labeled, world_clip, report):
    """Rotate the labels of the part groups within each layer: every metric must drop."""
    circuit, expected = labeled
    wrong = copy.deepcopy(circuit)
    for layer in wrong.layers:
        parts = [g for g in layer.groups if expected.get(g.id)]
        texts = [g.labels[0].text for g in parts]
        for g, text in zip(parts, texts[1:] + texts[:1]):
            g.labels = [Label(text=text, score=1.0, source="clip")]
    refs = from_world(wrong, world_clip.world, images_root=world_clip.heldout_images)
    bad = evaluate_circuit(wrong, world_clip.heldout_images, refs)["aggregate"]
    good = report["aggregate"]
    assert bad["top1_accuracy"] == 0.0
    assert bad["text_similarity"] < good["text_similarity"]
    assert bad["retrieval_auc"] < good["retrieval_auc"] - 0.2
    assert bad["faithfulness_pearson"] < good["faithfulness_pearson"] - 0.3


def test_csv_references_by_group_and_by_class(labeled, tmp_path, world_clip):
    circuit, expected = labeled
    by_group = tmp_path / "groups.csv"
    by_group.write_text("group,label\n" + "".join(f"{gid},{part}\n" for gid, part in expected.items() if part) + "l1g0,something else\n")
    refs = from_csv(circuit, by_group)
    assert refs.labels["l1g0"] == [expected["l1g0"], "something else"]
    rep = evaluate_circuit(circuit, world_clip.heldout_images, refs)
    assert rep["aggregate"]["n_with_reference"] == 6 and rep["aggregate"]["top1_accuracy"] >= 5 / 6
    by_class = tmp_path / "classes.csv"
    by_class.write_text(f"class,label\n{circuit.target.class_index},{expected['l1g0']}\n99,red circle\n")
    refs = from_csv(circuit, by_class)
    assert all(v == [expected["l1g0"]] for v in refs.labels.values())


@pytest.mark.parametrize(
    "content, message",
    [("", "has no rows"), ("name,text\na,b\n", "expected 'label'"), ("group,label\nl9g9,red\n", "not in this circuit")],
)
def test_bad_reference_csv(labeled, tmp_path, content, message):
    path = tmp_path / "refs.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        from_csv(labeled[0], path)


def test_unlabeled_circuit_is_refused(world_clip):
    circuit, _ = world_circuit(world_clip.world, 1, n_images=3, split="heldout")
    with pytest.raises(ValueError, match="has no labels"):
        evaluate_circuit(circuit, world_clip.heldout_images)


def test_calibration_auc_in_the_aggregate():
    groups = [{"id": f"g{i}", "label": "x", "top1": c, "top5": True, "text_similarity": 1.0, "confidence": p}
              for i, (c, p) in enumerate([(True, 0.9), (True, 0.7), (False, 0.6), (False, 0.2)])]
    agg = aggregate(groups)
    assert agg["calibration_auc"] == 1.0 and agg["top1_accuracy"] == 0.5
    assert agg["confident_coverage"] == 0.75 and agg["confident_top1_accuracy"] == 2 / 3  # 0.9, 0.7, 0.6 are >= 0.5
    groups[0]["confidence"], groups[3]["confidence"] = 0.2, 0.9  # a confident wrong label
    assert aggregate(groups)["calibration_auc"] == 0.25  # 1 of the 4 (correct, wrong) pairs ordered right


def test_tables(report):
    text = format_report(report)
    assert "top-1 accuracy" in text and "held-out retrieval AUC" in text and "l1g0" in text
    side = format_comparison(report, report, ("a.json", "b.json"))
    assert "a.json" in side and "b.json" in side and side.count("top-1 accuracy") == 1
    json.dumps(report)  # the report is plain JSON


def test_caption_labels_can_be_evaluated(labeled, world_clip):
    circuit, expected = labeled
    with_captions = copy.deepcopy(circuit)
    for _, _, g in with_captions.iter_groups():
        g.labels = g.labels + [Label(text=expected.get(g.id) or "plain background", score=0.0, source="caption")]
    refs = from_world(with_captions, world_clip.world, images_root=world_clip.heldout_images)
    rep = evaluate_circuit(with_captions, world_clip.heldout_images, refs, options=EvaluationOptions(source="caption"))
    assert rep["source"] == "caption" and rep["aggregate"]["top1_accuracy"] == 1.0


def test_model_activations_rate_random_crops_too(labeled, world_clip):
    """Faithfulness from the model itself: the pool then includes random crops of the run."""
    import torch
    import torchvision

    from neurflow.labeler.evaluation.evaluate import ModelActivations
    from neurflow.labeler.patches import PatchLoader

    circuit, _ = labeled
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=8)
    layer = circuit.layers[1]
    layer.name = "layer4"  # a real module name of resnet18; the test circuit's neuron ids are < 512
    source = ModelActivations(model, PatchLoader(circuit, world_clip.heldout_images), 64, [0.5] * 3, [0.25] * 3)
    group = layer.groups[0]
    pool = group.exemplars + layer.groups[1].exemplars
    act = source.group_activation(circuit, 1, group, pool)
    assert act.shape == (len(pool),) and (act >= 0).all() and act.max() <= 1.0 + 1e-6
    rep = evaluate_circuit(circuit, world_clip.heldout_images, activations=source, options=EvaluationOptions(faithfulness_pool=40))
    f = rep["groups"][0]["faithfulness"]
    recorded = evaluate_circuit(circuit, world_clip.heldout_images, options=EvaluationOptions(faithfulness_pool=40))
    assert f["source"] == "model" and f["n_pool"] == recorded["groups"][0]["faithfulness"]["n_pool"] + 40
