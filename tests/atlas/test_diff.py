"""The circuit diff on the hand-made circuits (tests/atlas/handmade.py), changed by hand."""

from __future__ import annotations

import json

import msgspec
import pytest
import torch

from neurflow.atlas.diff import diff_circuits
from neurflow.core.circuit import Concept, Group, Member, Neuron
from neurflow.core.diff import CircuitDiff, OffClassReliance
from tests.atlas import handmade


def _after():
    """Class 0 after a fine-tune: a new important group {60, 61} ("logo") in mid, "eye" {10, 11} gone,
    "fur" {1, 2, 3, 4} now {1, 2, 3} and less important (neuron 1 lost its top importance)."""
    c = handmade.circuit(0)
    mid = c.layers[1]
    concept = Concept(id=0, activation=1.0, size=1, exemplars=[], patches=[], edges=[], vector=[])
    mid.neurons = [n for n in mid.neurons if n.id not in (4, 10, 11)]
    for n in mid.neurons:
        n.importance = 0.3
    mid.neurons += [Neuron(id=60, importance=1.0, concepts=[concept]), Neuron(id=61, importance=1.0, concepts=[concept])]
    mid.groups = [mid.groups[0], Group(id="l1g1", members=[Member(neuron=60, concept=0), Member(neuron=61, concept=0)],
                                       exemplars=[])]
    mid.groups[0].members = [m for m in mid.groups[0].members if m.neuron != 4]
    return [c, handmade.circuit(1)]


def test_what_appeared_vanished_and_shrank():
    diff = diff_circuits([handmade.circuit(0), handmade.circuit(1)], _after())
    assert diff.same_architecture
    changes = diff.classes[0].changes
    first = changes[0]
    assert (first.change, first.layer, first.after.neurons, first.before) == ("appeared", "mid", [60, 61], None)
    assert first.delta == pytest.approx(1.0)
    by = {(c.change, tuple((c.before or c.after).neurons)) for c in changes}
    assert ("vanished", (10, 11)) in by
    fur = next(c for c in changes if c.before and c.before.neurons == [1, 2, 3, 4])
    # before: (1.0 + 3 x 0.5) / 4 / 1.0 = 0.625; after: 0.3 / 1.0 (60 and 61 lead the layer) = 0.3
    assert fur.change == "shrank" and fur.after.neurons == [1, 2, 3] and fur.similarity == pytest.approx(0.75)
    assert fur.delta == pytest.approx(0.3 - 0.625)
    # class 1 did not change at all
    assert {c.change for c in diff.classes[1].changes} == {"kept"}
    assert CircuitDiff.from_json(diff.to_json()) == diff


def test_other_architectures_match_by_label():
    other = msgspec.structs.replace(handmade.MODEL, arch="other", weights_sha256="ef" * 32)
    diff = diff_circuits([handmade.circuit(0)], [handmade.circuit(0, other)])
    assert not diff.same_architecture
    assert all(c.change == "kept" and c.matched_by == "label" for c in diff.classes[0].changes)


def test_bad_input():
    with pytest.raises(ValueError, match="same classes"):
        diff_circuits([handmade.circuit(0)], [handmade.circuit(1)])
    with pytest.raises(ValueError, match=r"min_delta must lie in \[0, 1\]"):
        diff_circuits([handmade.circuit(0)], [handmade.circuit(0)], min_delta=-0.1)
    with pytest.raises(ValueError, match="appears twice"):
        diff_circuits([handmade.circuit(0), handmade.circuit(0)], [handmade.circuit(0)])
    with pytest.raises(ValueError, match="unsupported circuit diff schema"):
        CircuitDiff.from_json(json.dumps(msgspec.to_builtins(diff_circuits([handmade.circuit(0)], [handmade.circuit(0)]))
                                         | {"schema": "neurflow.diff/0"}))


def test_cli_diff_writes_the_document_and_the_side_by_side_page(tmp_path, capsys):
    from neurflow.cli import main

    paths = {}
    for side, circuits in (("before", [handmade.circuit(0)]), ("after", _after()[:1])):
        paths[side] = tmp_path / f"{side}.json"
        paths[side].write_text(circuits[0].to_json())
    assert main(["diff", "--before", str(paths["before"]), "--after", str(paths["after"]), "--out", str(tmp_path / "d")]) == 0
    diff = CircuitDiff.from_json((tmp_path / "d" / "diff.json").read_bytes())
    assert diff.classes[0].changes[0].change == "appeared"
    page = (tmp_path / "d" / "diff.html").read_text()
    assert "Biggest gain: l1g1 in mid appeared (+1.00)" in page and page.count("<table>") == 2
    assert "class 0: 3 changes: appeared l1g1 in mid (+1.00)" in capsys.readouterr().out
    assert main(["diff", "--before", str(paths["before"]), "--after", str(tmp_path / "none.json"), "--out",
                 str(tmp_path / "d")]) == 2


def test_a_regrouped_group_gained_only_what_its_neurons_gained():
    """The engine may regroup the same important neurons differently (a split, below min_similarity of
    any earlier group): that group is new as a group but gained little, while a group of neurons
    the first circuit did not use gained all its importance and comes first."""
    before = handmade.circuit(0)
    after = _after()[0]
    mid = after.layers[1]
    fur = mid.groups[0]  # {1, 2, 3}, regrouped as {1} alone
    mid.groups = [Group(id="l1g5", members=[m for m in fur.members if m.neuron == 1], exemplars=[]), mid.groups[1]]
    for n in mid.neurons:
        if n.id == 1:
            n.importance = 1.0
    diff = diff_circuits([before], [after], min_similarity=0.3)
    changes = diff.classes[0].changes
    split = next(c for c in changes if c.after and c.after.neurons == [1])
    assert split.change == "appeared"  # {1} vs {1, 2, 3, 4}: Jaccard 0.25
    # neuron 1 led its layer before (1.0) and does after (1.0): nothing gained
    assert split.delta == pytest.approx(0.0)
    assert changes[0].after.neurons == [60, 61] and changes[0].delta == pytest.approx(1.0)


# -- the off-class reliance: two small real networks with hand-set weights ------------------------------------------


class _Tiny(torch.nn.Module):
    """The hand-made circuits' layers ("low", "mid", "fc") as a network: 1x1 convolutions, then the
    spatial mean. Low channel j copies the input's blue for j < 32, its red from 32 on; mid copies low."""

    def __init__(self, readout: dict[int, float], channels: int = 64):
        super().__init__()
        self.low = torch.nn.Conv2d(3, channels, 1, bias=False)
        self.mid = torch.nn.Conv2d(channels, channels, 1, bias=False)
        self.fc = torch.nn.Linear(channels, 4, bias=False)
        with torch.no_grad():
            self.low.weight.zero_()
            self.low.weight[:32, 2] = 1.0
            self.low.weight[32:, 0] = 1.0
            self.mid.weight.copy_(torch.eye(channels)[:, :, None, None])
            self.fc.weight.fill_(0.1)
            for neuron, w in readout.items():
                self.fc.weight[0, neuron] = w

    def forward(self, x):
        return self.fc(torch.relu(self.mid(torch.relu(self.low(x)))).mean((2, 3)))


def _images(red: int = 4, blue: int = 6):
    """Class 0's images are red, class 1's blue (off-class for class 0)."""
    from neurflow.core.images import ImageSet

    pixels = torch.zeros(red + blue, 3, 4, 4)
    pixels[:red, 0] = 1.0
    pixels[red:, 2] = 1.0
    images = ImageSet.from_tensor(pixels)
    images.labels = [0] * red + [1] * blue
    return images


#: the first network reads every channel a little; the second leans on "fur" {1, 2, 3} (blue here: on
#: images of other classes) and on the new "logo" {60, 61} (red: the class's own images)
_MODELS = (_Tiny({}), _Tiny({1: 2.0, 2: 2.0, 3: 2.0, 60: 1.0, 61: 1.0}))


def test_a_group_the_second_network_relies_on_off_class_comes_first_though_it_gained_less():
    before, after = [handmade.circuit(0)], _after()[:1]
    by_importance = diff_circuits(before, after)
    assert by_importance.order == "importance" and by_importance.classes[0].changes[0].after.neurons == [60, 61]
    assert all(c.reliance is None for c in by_importance.classes[0].changes) and by_importance.warnings

    diff = diff_circuits(before, after, models=_MODELS, images=_images())
    assert diff.order == "off_class_reliance" and diff.max_images == 96 and not diff.warnings
    changes = diff.classes[0].changes
    fur, logo = changes[0], next(c for c in changes if c.after and c.after.neurons == [60, 61])
    # fur shrank (importance 0.625 -> 0.3) while the logo appeared (+1.0), yet the second network leans on
    # fur's neurons on the blue images: 3 x 2.0 against 3 x 0.1 in the first
    assert (fur.change, fur.after.neurons) == ("shrank", [1, 2, 3]) and fur.delta < logo.delta
    assert fur.reliance == OffClassReliance(images=6, drop_before=pytest.approx(0.3), drop_after=pytest.approx(6.0),
                                            increase=pytest.approx(5.7))
    # the logo's neurons see red only: nothing to zero on the blue images
    assert logo.reliance.drop_after == pytest.approx(0.0) and logo.reliance.increase == pytest.approx(0.0)
    # a vanished group is measured on its first-side neurons ("eye" {10, 11}: 2 x 0.1 in both)
    eye = next(c for c in changes if c.change == "vanished" and c.before.neurons == [10, 11])
    assert eye.reliance.drop_before == pytest.approx(0.2) and eye.reliance.increase == pytest.approx(0.0)
    # the second circuit's groups by increase, then the vanished ones (no group of the second network)
    kept = [c.reliance.increase for c in changes if c.after is not None]
    assert kept == sorted(kept, reverse=True) and changes[-1].change == "vanished"
    assert [c.change for c in changes].index("vanished") == len(kept)
    assert CircuitDiff.from_json(diff.to_json()) == diff


def test_a_lost_inhibition_does_not_outrank_a_new_reliance():
    """The first network's "stripes" {20, 21, 22} inhibited class 0 on other classes' images (zeroing them
    raises its logit by 3 x 1.0); the second ignores them and leans a little on "dots" {30} instead. The
    stripes' drop rose by 3.0, the dots' by 1.4, but only the dots are a reliance of the second network."""
    first = _Tiny({20: -1.0, 21: -1.0, 22: -1.0})
    second = _Tiny({20: 0.0, 21: 0.0, 22: 0.0, 30: 1.5})
    diff = diff_circuits([handmade.circuit(0)], _after()[:1], models=(first, second), images=_images())
    changes = diff.classes[0].changes
    stripes = next(c for c in changes if c.after and c.after.neurons == [20, 21, 22])
    dots = next(c for c in changes if c.after and c.after.neurons == [30])
    assert changes[0] is dots and changes.index(stripes) > changes.index(dots)
    # the raw drops stay in the document; the increase counts a negative drop as no reliance
    assert (stripes.reliance.drop_before, stripes.reliance.drop_after) == (pytest.approx(-3.0), pytest.approx(0.0))
    assert stripes.reliance.increase == pytest.approx(0.0)
    assert dots.reliance.increase == pytest.approx(1.5 - 0.1)


def test_the_reliance_uses_at_most_max_images_off_class_images_and_leaves_out_related_classes():
    from neurflow.core.images import ImageSet

    images = _images(red=4, blue=6)
    # class 2 is green here and related to class 0: its images must not count
    pixels = torch.cat([images.pixels, torch.zeros(3, 3, 4, 4)])
    pixels[-3:, 1] = 1.0
    more = ImageSet.from_tensor(pixels)
    labels = images.labels + [2] * 3

    def measured(**kw) -> set[int]:
        diff = diff_circuits([handmade.circuit(0)], _after()[:1], models=_MODELS, images=more, labels=labels, **kw)
        return {c.reliance.images for c in diff.classes[0].changes}

    assert measured() == {9}  # 6 blue + 3 green: every other class
    assert measured(related={0: [2]}) == {6}  # green shares class 0's content: not off-class
    assert measured(related={0: [2]}, max_images=4) == {4}


def test_the_reliance_refuses_what_it_cannot_measure():
    before, after = [handmade.circuit(0)], _after()[:1]
    with pytest.raises(ValueError, match="needs both models .* and images; pass both or neither"):
        diff_circuits(before, after, models=_MODELS)
    with pytest.raises(ValueError, match=r"models must be a pair"):
        diff_circuits(before, after, models=_MODELS[0], images=_images())
    with pytest.raises(ValueError, match=r"not one architecture .*mid\.weight"):
        diff_circuits(before, after, models=(_MODELS[0], _Tiny({}, channels=62)), images=_images())
    with pytest.raises(ValueError, match=r"layer 'mid' of this model has 40 channels; neurons \[60, 61\]"):
        diff_circuits(before, after, models=(_Tiny({}, 40), _Tiny({}, 40)), images=_images())
    with pytest.raises(ValueError, match=r"class 0 has no off-class images among the 4 images"):
        diff_circuits(before, after, models=_MODELS, images=_images(red=4, blue=0))
    unlabeled = _images()
    unlabeled.labels = None
    with pytest.raises(ValueError, match=r"10 of 10 images have no class"):
        diff_circuits(before, after, models=_MODELS, images=unlabeled)
    with pytest.raises(ValueError, match=r"image classes \[7\] are not classes of this 4-class model"):
        diff_circuits(before, after, models=_MODELS, images=_images(), labels=[7] * 10)
    with pytest.raises(ValueError, match=r"max_images must be a whole number in \[4, 10000\], got 0"):
        diff_circuits(before, after, models=_MODELS, images=_images(), max_images=0)
    headless = [msgspec.structs.replace(c, layers=c.layers[1:]) for c in (before[0], after[0])]
    with pytest.raises(ValueError, match=r"layer 'mid' is not the model's class output .*classifier down"):
        diff_circuits(headless[:1], headless[1:], models=_MODELS, images=_images())
    other = msgspec.structs.replace(handmade.MODEL, arch="other", weights_sha256="ef" * 32)
    with pytest.raises(ValueError, match="needs two checkpoints of one architecture"):
        diff_circuits(before, [handmade.circuit(0, other)], models=_MODELS, images=_images())


def test_a_diff_1_document_still_reads():
    """Written before the reliance: no reliance, no order (it was always by importance)."""
    old = msgspec.to_builtins(diff_circuits([handmade.circuit(0)], _after()[:1]))
    for key in ("order", "max_images", "warnings"):
        old.pop(key)
    for cls in old["classes"]:
        for change in cls["changes"]:
            change.pop("reliance", None)
    old["schema"] = "neurflow.diff/1"
    diff = CircuitDiff.from_json(json.dumps(old))
    assert diff.schema == "neurflow.diff/3" and diff.order == "importance"
    assert diff.classes[0].changes[0].after.neurons == [60, 61] and diff.classes[0].changes[0].reliance is None


def test_a_version_2_document_reads_with_its_increase_clipped_and_reordered():
    """Version 2 stored increase = drop_after - drop_before and ordered by it: a lost inhibition led."""
    first = _Tiny({20: -1.0, 21: -1.0, 22: -1.0})
    second = _Tiny({20: 0.0, 21: 0.0, 22: 0.0, 30: 1.5})
    now = diff_circuits([handmade.circuit(0)], _after()[:1], models=(first, second), images=_images())
    old = msgspec.to_builtins(now)
    old["schema"] = "neurflow.diff/2"
    changes = old["classes"][0]["changes"]
    for change in changes:
        r = change["reliance"]
        r["increase"] = round(r["drop_after"] - r["drop_before"], 4)
    changes.sort(key=lambda c: (c["after"] is None, -c["reliance"]["increase"]))
    assert changes[0]["after"]["neurons"] == [20, 21, 22] and changes[0]["reliance"]["increase"] == pytest.approx(3.0)
    read = CircuitDiff.from_json(json.dumps(old))
    assert read.schema == "neurflow.diff/3" and read.order == "off_class_reliance"
    assert read == now


def test_cli_diff_with_both_specs_orders_by_the_off_class_reliance(engine_circuits, tmp_path, capsys):
    """A second checkpoint whose class-0 readout leans more on one layer4.1 group's neurons."""
    from safetensors.torch import load_file, save_file

    from neurflow.cli import main
    from neurflow.core.circuit import Circuit
    from neurflow.core.hashing import sha256_file

    first = Circuit.from_json(engine_circuits.paths[0].read_bytes())
    boosted = sorted({m.neuron for m in first.layer("layer4.1").groups[0].members})
    weights = load_file(engine_circuits.model_spec["weights"])
    weights["fc.weight"][0, boosted] += 1.0
    second = tmp_path / "second.safetensors"
    save_file(weights, str(second))
    # the second checkpoint's circuit: the first one's groups, recorded as made with the second weights
    after = tmp_path / "after.json"
    after.write_text(msgspec.structs.replace(first, model=msgspec.structs.replace(
        first.model, weights_sha256=sha256_file(second))).to_json())
    specs = {}
    for side, path in (("before", engine_circuits.model_spec["weights"]), ("after", str(second))):
        specs[side] = tmp_path / f"{side}-spec.json"
        specs[side].write_text(json.dumps({"model": engine_circuits.model_spec | {"weights": path},
                                           "data": {"images": str(engine_circuits.images), "target_class": 0},
                                           "engine": {"layers": ["fc", "layer4.1"]}}))
    out = tmp_path / "d"
    args = ["diff", "--before", str(engine_circuits.paths[0]), "--after", str(after), "--out", str(out)]
    assert main(args + ["--before-spec", str(specs["before"]), "--after-spec", str(specs["after"]),
                        "--max-images", "16"]) == 0
    diff = CircuitDiff.from_json((out / "diff.json").read_bytes())
    assert diff.order == "off_class_reliance" and diff.max_images == 16
    changes = diff.classes[0].changes
    assert all(c.change == "kept" and c.reliance.images == 16 for c in changes)  # the same groups on both sides
    top = next(c for c in changes if c.layer == "layer4.1" and c.after.neurons == boosted)
    assert top.reliance.increase > 0 and top.reliance.increase == changes[0].reliance.increase
    assert top.reliance.increase == pytest.approx(top.reliance.drop_after - top.reliance.drop_before, abs=1e-3)
    printed = capsys.readouterr().out
    assert "ordered by off class reliance" in printed and f"off-class reliance {changes[0].reliance.increase:+.2f}" in printed
    assert "Off-class reliance" in (out / "diff.html").read_text()
    # refused with one line: one spec only, a spec of other weights than the circuits', images without classes
    assert main(args + ["--before-spec", str(specs["before"])]) == 2
    assert "give --before-spec and --after-spec, or neither" in capsys.readouterr().err
    assert main(args + ["--before-spec", str(specs["after"]), "--after-spec", str(specs["after"])]) == 2
    assert "give a model's circuits with that model's spec" in capsys.readouterr().err
    flat = tmp_path / "flat"
    flat.mkdir()
    for k, png in enumerate(sorted(engine_circuits.images.rglob("*.png"))[:6]):
        (flat / f"{k}.png").write_bytes(png.read_bytes())
    assert main(args + ["--before-spec", str(specs["before"]), "--after-spec", str(specs["after"]),
                        "--images", str(flat)]) == 2
    assert "6 of 6 images have no class" in capsys.readouterr().err
    assert main(args + ["--related", str(flat / "0.png")]) == 2
    assert "--images and --related are for the off-class reliance" in capsys.readouterr().err
