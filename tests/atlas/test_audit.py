"""The audit on a model whose logits are a closed form of its inputs.

``Linear``: a 1x1 convolution ``feat`` (16 channels: channel k < 3 copies input channel k, the others
are 0.01 x the mean of the input channels), global average pooling and a bias-free ``fc``. Class 0
reads channel 0, class 1 reads channels 1 (its own content) and 2 (a shortcut), class 2 reads channel 3.
So zeroing channel k of ``feat`` lowers class c's logit by exactly ``fc[c, k] * mean(channel k)``.

Images: class 1's own images carry channel 1 and channel 2; every off-class image carries channel 2
(the shortcut, decorrelated from the label) and no channel 1.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from neurflow.atlas.audit import (_rank, _score, _sharing_counts, apply_reviews, audit_circuits, finding_key,
                                  folder_labels, lift, lift_z, margin_lift)
from neurflow.atlas.build import AtlasInput
from neurflow.core.audit import Audit, AuditSettings, Finding, FindingEvidence, OffClassAblation, Review, Reviews
from neurflow.core.circuit import (SCHEMA_VERSION, Circuit, Concept, Group, Label, Layer, Member, ModelInfo, Neuron,
                                   Target)
from neurflow.core.images import ImageSet
from neurflow.core.params import EngineParams

C = 16


class Linear(nn.Module):
    def __init__(self, shortcut: float = 3.0, generic: bool = False) -> None:
        super().__init__()
        self.feat = nn.Conv2d(3, C, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(C, 3, bias=False)
        with torch.no_grad():
            self.feat.weight.zero_()
            for k in range(3):
                self.feat.weight[k, k] = 1.0
            self.feat.weight[3:] = 0.01 / 3
            self.fc.weight.zero_()
            self.fc.weight[0, 0] = 2.0
            self.fc.weight[1, 1] = 1.0
            self.fc.weight[1, 2] = shortcut
            if generic:  # every class reads channel 2 alike: a feature, not a push towards class 1
                self.fc.weight[:, 2] = shortcut
            self.fc.weight[2, 3] = 1.0

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.feat(x))))


def _images() -> tuple[ImageSet, list[int]]:
    g = torch.Generator().manual_seed(0)
    pixels, labels = [], []
    for label in (0, 1, 2):
        for _ in range(6):
            x = torch.rand(3, 8, 8, generator=g) * 0.1
            if label == 1:
                x[1] += 1.0
                x[2] += 0.8
            else:
                x[2] += 0.5  # the shortcut shows up on other classes' images too
            if label == 0:
                x[0] += 1.0
            pixels.append(x)
            labels.append(label)
    return ImageSet.from_tensor(torch.stack(pixels)), labels


def _circuit(target: int, groups: list[tuple[list[int], str]], importance: dict[int, float]) -> Circuit:
    concept = Concept(id=0, activation=1.0, size=1, exemplars=[], patches=[], edges=[], vector=[])
    neurons = [Neuron(id=n, importance=importance.get(n, 0.5), concepts=[concept]) for n in sorted(
        {n for ns, _ in groups for n in ns})]
    feat = Layer(name="feat", shape=[C, 8, 8], neurons=neurons, groups=[
        Group(id=f"l1g{k}", members=[Member(neuron=n, concept=0) for n in ns], exemplars=[],
              labels=[Label(text=text, score=0.9, source="user")], confidence=0.9)
        for k, (ns, text) in enumerate(groups)])
    top = Layer(name="fc", shape=[3], neurons=[Neuron(id=target, importance=1.0, concepts=[])], groups=[])
    info = ModelInfo(arch="handmade", weights_sha256="cd" * 32, num_classes=3, input_size=8, mean=[0.0] * 3,
                     std=[1.0] * 3)
    return Circuit(schema=SCHEMA_VERSION, model=info, target=Target(class_index=target, name=f"class{target}"),
                   params=EngineParams(layers=["fc", "feat"]), images=[], layers=[top, feat], group_edges=[], timings={})


def _inputs() -> list[AtlasInput]:
    return [
        AtlasInput(_circuit(0, [([0], "red"), ([5, 6], "grey")], {0: 1.0, 5: 0.6, 6: 0.6})),
        AtlasInput(_circuit(1, [([1], "green"), ([2], "watermark"), ([5, 6, 7], "grey")], {1: 1.0, 2: 0.9})),
        AtlasInput(_circuit(2, [([3], "blue")], {3: 1.0})),
    ]


def test_off_class_drop_is_the_closed_form():
    images, labels = _images()
    model = Linear().eval()
    audit = audit_circuits(_inputs(), model, images, labels=labels, settings=AuditSettings(min_importance=0.0))
    cls1 = next(c for c in audit.classes if c.class_index == 1)
    assert cls1.groups_examined == 3
    off = images.pixels[[i for i, k in enumerate(labels) if k != 1]]
    own = images.pixels[[i for i, k in enumerate(labels) if k == 1]]
    shortcut = next(f for f in cls1.findings if f.group == "l1g1")
    a = shortcut.evidence.ablation
    assert a.images == 12 and a.own_images == 6
    assert a.logit_drop == pytest.approx(3.0 * float(off[:, 2].mean()), abs=1e-3)
    assert a.own_logit_drop == pytest.approx(3.0 * float(own[:, 2].mean()), abs=1e-3)
    # the control: single random channels of 16, of which only channels 1 and 2 move class 1 at all
    possible = [0.0, float(off[:, 1].mean()), 3.0 * float(off[:, 2].mean())]
    assert min(possible) - 1e-3 <= a.control_mean <= max(possible) + 1e-3
    assert a.z >= AuditSettings().min_z
    assert shortcut.reasons == ["off_class_effect"]
    assert "lowers class1's logit" in shortcut.sentence


def test_the_class_own_content_is_not_a_finding_and_the_shortcut_ranks_first():
    images, labels = _images()
    audit = audit_circuits(_inputs(), Linear().eval(), images, labels=labels)
    cls1 = next(c for c in audit.classes if c.class_index == 1)
    assert cls1.findings[0].group == "l1g1"
    # "green" (channel 1) is absent off-class; "grey" is a finding only because class 0 shares it
    assert [f.group for f in cls1.findings if "off_class_effect" in f.reasons] == ["l1g1"]
    assert [f.reasons for f in cls1.findings[1:]] == [["shared"]]
    assert all("off_class_effect" not in f.reasons for c in audit.classes if c.class_index != 1 for f in c.findings)


def test_related_classes_are_not_off_class():
    images, labels = _images()
    audit = audit_circuits(_inputs(), Linear().eval(), images, labels=labels, related={1: [0]})
    a = next(c for c in audit.classes if c.class_index == 1).findings[0].evidence.ablation
    assert a.images == 6  # class 2's images only


def test_unexpected_label_and_sharing_need_no_model():
    audit = audit_circuits(_inputs(), expected={1: ["green", "leaf"], 0: ["red"]})
    assert audit.warnings and "skipped" in audit.warnings[0]
    by_class = {c.class_index: c for c in audit.classes}
    f = next(f for f in by_class[1].findings if f.group == "l1g1")
    assert f.reasons == ["unexpected_label"] and f.evidence.expected is False
    assert "'watermark'" in f.sentence
    # "grey" of class 0 ({5, 6}) and of class 1 ({5, 6, 7}): Jaccard 2/3, shared in both directions
    grey0 = next(f for f in by_class[0].findings if f.group == "l1g1")
    assert grey0.evidence.shared_with == [1] and "shared" in grey0.reasons
    # ... unless the classes are named as related
    related = audit_circuits(_inputs(), related={0: [1], 1: [0]})
    assert all("shared" not in f.reasons for f in related.findings())


def test_reviews_survive_a_rerun_and_a_recomputed_group():
    images, labels = _images()
    first = audit_circuits(_inputs(), Linear().eval(), images, labels=labels)
    finding = next(f for f in first.findings() if f.class_index == 1 and f.group == "l1g1")
    reviews = Reviews()
    reviews.record(finding, Review(verdict="dismissed", note="a known watermark"))
    reviews = Reviews.from_json(reviews.to_json())
    again = audit_circuits(_inputs(), Linear().eval(), images, labels=labels, reviews=reviews)
    same = next(f for f in again.findings(include_dismissed=True) if f.key == finding.key)
    assert same.verdict == "dismissed" and same.review.note == "a known watermark"
    assert finding.key not in [f.key for f in again.findings()]
    # the circuit was recomputed and the group grew by a neuron: Jaccard 1/2 still carries the verdict
    moved = Audit.from_json(again.to_json())
    f = next(f for f in moved.findings(include_dismissed=True) if f.key == finding.key)
    f.neurons, f.key, f.verdict, f.review = [2, 9], finding_key(1, "feat", [2, 9]), "open", None
    apply_reviews(moved, reviews)
    assert f.verdict == "dismissed"


def test_bad_input_is_refused_clearly():
    images, labels = _images()
    with pytest.raises(ValueError, match="both a model and images"):
        audit_circuits(_inputs(), Linear().eval())
    with pytest.raises(ValueError, match="labels has 2 entries"):
        audit_circuits(_inputs(), Linear().eval(), images, labels=[0, 1])
    with pytest.raises(ValueError, match="at least one circuit"):
        audit_circuits([])
    with pytest.raises(ValueError, match="unsupported audit schema"):
        Audit.from_json(b'{"schema": "neurflow.audit/0"}')
    with pytest.raises(ValueError, match="invalid audit reviews document"):
        Reviews.from_json(b'{"schema": "neurflow.audit-reviews/1", "entries": 3}')
    with pytest.raises(ValueError, match="unsupported audit reviews schema None"):
        Reviews.from_json(b'{"entries": []}')


def test_folder_labels():
    images = ImageSet(torch.zeros(3, 3, 4, 4), ["train/cat/1.png", "dog/x/2.png", "3.png"], [(4, 4)] * 3)
    assert folder_labels(images, ["cat", "dog"]) == [0, 1, None]


def test_cli_audit_and_a_dismissal_that_survives_the_rerun(engine_circuits, tmp_path, capsys):
    from neurflow.cli import main

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"model": engine_circuits.model_spec,
                                "data": {"images": str(engine_circuits.images), "target_class": [0, 1, 2, 3]},
                                "engine": {"layers": ["fc", "layer4.1"]}}))
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps({"0": ["nothing this circuit shows"]}))
    out = tmp_path / "audit"
    circuits = [str(p) for p in engine_circuits.paths]
    assert main(["audit", str(spec), *circuits, "--out", str(out), "--expected", str(expected), "--quiet",
                 "--controls", "4", "--labelstudio"]) == 0
    audit = Audit.from_json((out / "audit.json").read_bytes())
    page = (out / "audit.html").read_text()
    assert all(f.key in page for f in audit.findings()) and "data:image/png;base64," in page
    assert [c.class_index for c in audit.classes] == [0, 1, 2, 3]
    assert all(f.evidence.ablation is not None for f in audit.findings())
    assert "lead over the shown class" in page
    # every labeled group of class 0 that matters is unexpected: none of its labels is on the list
    labeled = [f for f in audit.classes[0].findings if f.evidence.label]
    assert labeled and all("unexpected_label" in f.reasons for f in labeled)
    key = labeled[0].key
    # the Label Studio project: its config is valid, one task per open finding, exemplars embedded
    from neurflow.exports.labelstudio import interface_for

    interface_for((out / "labelstudio-config.xml").read_text())
    tasks = json.loads((out / "labelstudio-tasks.json").read_text())
    assert [t["data"]["key"] for t in tasks] == [f.key for f in audit.findings()]
    assert all(t["data"]["image"].startswith("data:image/png;base64,") for t in tasks)
    # a reviewer confirms the second finding in Label Studio; its export comes back as a verdict
    confirmed = dict(tasks[1], id=2, annotations=[{"completed_by": 7, "updated_at": "2026-01-01T00:00:00Z", "result": [
        {"from_name": "verdict", "to_name": "exemplars", "type": "choices", "value": {"choices": ["confirmed"]}},
        {"from_name": "note", "to_name": "exemplars", "type": "textarea", "value": {"text": ["a shortcut"]}}]}])
    export = tmp_path / "ls-export.json"
    export.write_text(json.dumps([dict(tasks[0], id=1, annotations=[]), confirmed]))
    assert main(["audit-review", str(out), "--from-labelstudio", str(export)]) == 0
    reviewed = Audit.from_json((out / "audit.json").read_bytes())
    assert next(f for f in reviewed.findings() if f.key == tasks[1]["data"]["key"]).review.note == "a shortcut"
    assert main(["audit-review", str(out), key, "--dismiss", "--note", "fine"]) == 0
    assert main(["audit", str(spec), *circuits, "--out", str(out), "--expected", str(expected), "--quiet",
                 "--controls", "4"]) == 0
    again = Audit.from_json((out / "audit.json").read_bytes())
    assert next(f for f in again.findings(include_dismissed=True) if f.key == key).verdict == "dismissed"
    assert key in capsys.readouterr().out
    # refused with one line: an unknown key, weights of another model
    assert main(["audit-review", str(out), "c0:nope", "--confirm"]) == 2
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"not these weights")
    spec.write_text(json.dumps({"model": engine_circuits.model_spec | {"weights": str(other)},
                                "data": {"images": str(engine_circuits.images), "target_class": 0},
                                "engine": {"layers": ["fc", "layer4.1"]}}))
    assert main(["audit", str(spec), *circuits, "--out", str(out), "--quiet"]) == 2
    assert "give a model's circuits with that model's spec" in capsys.readouterr().err


W = 64  # wide enough that the controls' random channels are rarely the group's own


class Inhibited(nn.Module):
    """Class 0 reads channel 0 (``weight``) and every other channel of ``W`` against it (-0.5 to -0.56):
    on other classes' images, zeroing almost any channel *raises* class 0's logit."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.feat = nn.Conv2d(W, W, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(W, 3, bias=False)
        with torch.no_grad():
            self.feat.weight.copy_(torch.eye(W)[:, :, None, None])
            self.fc.weight.zero_()
            self.fc.weight[0, 0] = weight
            self.fc.weight[0, 1:] = -0.5 - 0.001 * torch.arange(W - 1)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.feat(x))))


def _inhibited_audit(weight: float):
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(12, W, 8, 8, generator=g) * 0.05 + 0.5
    pixels[:6, 0] += 1.0  # class 0's own images carry more of channel 0
    circuit = _circuit(0, [([0], "red")], {0: 1.0})
    circuit.layers[1].shape = [W, 8, 8]
    # an unexpected label makes the group a finding whatever the ablation says, so its evidence is kept
    audit = audit_circuits([AtlasInput(circuit)], Inhibited(weight).eval(), ImageSet.from_tensor(pixels),
                           labels=[0] * 6 + [1] * 6, expected={0: ["blue"]})
    (finding,) = audit.classes[0].findings
    return finding, float(pixels[6:, 0].mean())


def test_a_group_that_only_does_not_inhibit_is_no_off_class_evidence():
    # zeroing the group lowers class 0's logit off-class by a hair (0.05 x 0.5) while random channels raise
    # it by about 0.25: far above the raw control mean in its spread, yet nothing lifts the class there
    finding, off_mean = _inhibited_audit(0.05)
    a = finding.evidence.ablation
    assert a.logit_drop == pytest.approx(0.05 * off_mean, abs=1e-3)
    assert a.control_mean < -0.2 and a.share >= AuditSettings().min_share
    assert a.z >= AuditSettings().min_z  # the rule before 2026-12-07 made it off-class evidence
    assert lift_z(a) < AuditSettings().min_z
    assert finding.reasons == ["unexpected_label"]


def test_a_real_lift_is_evidence_whatever_the_control_does():
    finding, _ = _inhibited_audit(2.0)
    a = finding.evidence.ablation
    assert a.control_mean < -0.2 and lift_z(a) >= AuditSettings().min_z
    assert finding.reasons == ["off_class_effect", "unexpected_label"]


def test_a_sure_but_tiny_lift_is_no_off_class_evidence():
    # the shortcut channel weighs 0.3 instead of 3: its push off-class (0.3 x 0.55 logits) is far outside the
    # control's spread and a large share of its effect on class 1's own images, but a fraction of a logit
    images, labels = _images()
    audit = audit_circuits(_inputs(), Linear(shortcut=0.3).eval(), images, labels=labels,
                           settings=AuditSettings(min_importance=0.0, min_lift=0.0, min_margin_lift=0.0))
    small = next(f for c in audit.classes if c.class_index == 1 for f in c.findings if f.group == "l1g1")
    a = small.evidence.ablation
    assert lift_z(a) >= AuditSettings().min_z and a.share >= AuditSettings().min_share
    assert lift(a) == pytest.approx(0.3 * float(images.pixels[[i for i, k in enumerate(labels) if k != 1]][:, 2].mean())
                                    - max(a.control_mean, 0.0), abs=1e-3)
    assert small.reasons == ["off_class_effect"]  # with min_lift 0 the rule before 2026-12-07 held
    assert lift(a) < AuditSettings().min_lift
    audit = audit_circuits(_inputs(), Linear(shortcut=0.3).eval(), images, labels=labels,
                           settings=AuditSettings(min_importance=0.0))
    assert all(f.group != "l1g1" or "off_class_effect" not in f.reasons
               for c in audit.classes if c.class_index == 1 for f in c.findings)


def _watermark(model: nn.Module):
    images, labels = _images()
    # its unexpected label makes the group a finding whatever the ablation says, so its evidence is kept
    audit = audit_circuits(_inputs(), model, images, labels=labels, expected={1: ["green", "grey"]},
                           settings=AuditSettings(min_importance=0.0))
    return next(f for c in audit.classes if c.class_index == 1 for f in c.findings if f.group == "l1g1")


def test_the_margin_drop_is_the_closed_form_and_a_class_specific_push_passes():
    # only class 1 reads the watermark channel: switching it off lowers class 1's lead over the shown class by
    # as much as class 1's logit
    finding = _watermark(Linear().eval())
    a = finding.evidence.ablation
    assert a.margin_drop == pytest.approx(a.logit_drop, abs=1e-3) and a.logit_drop > 1
    assert margin_lift(a) >= AuditSettings().min_margin_lift
    assert finding.reasons == ["off_class_effect", "unexpected_label"]
    assert "lead over the class each image shows" in finding.sentence


def test_a_feature_every_class_reads_is_no_off_class_evidence():
    # every class reads channel 2 with class 1's weight: zeroing it lowers class 1's logit off-class by as much
    # as before (lift, z and share pass), but every other logit falls with it, so no image moves towards class 1
    finding = _watermark(Linear(generic=True).eval())
    a = finding.evidence.ablation
    assert a.logit_drop > 1 and lift_z(a) >= AuditSettings().min_z and lift(a) >= AuditSettings().min_lift
    assert a.margin_drop == pytest.approx(0.0, abs=1e-4)
    assert margin_lift(a) < AuditSettings().min_margin_lift
    assert finding.reasons == ["unexpected_label"]


def test_sharing_is_no_evidence_where_the_ablation_shows_no_push():
    def ablation(margin_drop, margin_control_mean):
        return OffClassAblation(images=32, logit_drop=1.0, control_mean=0.2, control_std=0.1, z=8.0, own_images=32,
                                own_logit_drop=2.0, share=0.5, margin_drop=margin_drop,
                                margin_control_mean=margin_control_mean)

    assert _sharing_counts(None)  # no model, or a top-layer group: sharing is all there is
    assert _sharing_counts(ablation(None, None))  # an audit before neurflow.audit/3 did not measure the margin
    assert _sharing_counts(ablation(0.3, 0.2)) and _sharing_counts(ablation(0.3, -1.0))
    # the neurons lower the class's lead over the shown class less than random sets of their size do
    assert not _sharing_counts(ablation(0.1, 0.2)) and not _sharing_counts(ablation(-0.4, -1.0))


def test_an_audit_of_the_second_version_reads_with_no_margin_floor():
    images, labels = _images()
    audit = audit_circuits(_inputs(), Linear().eval(), images, labels=labels)
    old = json.loads(audit.to_json())
    old["schema"] = "neurflow.audit/2"
    del old["settings"]["min_margin_lift"]
    for f in (f for c in old["classes"] for f in c["findings"] if f["evidence"]["ablation"]):
        del f["evidence"]["ablation"]["margin_drop"], f["evidence"]["ablation"]["margin_control_mean"]
    read = Audit.from_json(json.dumps(old))
    assert read.settings.min_margin_lift == 0.0
    assert all(margin_lift(f.evidence.ablation) is None for f in read.findings() if f.evidence.ablation)


def _evidence(importance: float, drop: float, std: float) -> FindingEvidence:
    a = OffClassAblation(images=32, logit_drop=drop, control_mean=0.0, control_std=std, z=drop / std, own_images=32,
                         own_logit_drop=2 * drop, share=0.5)
    return FindingEvidence(importance=importance, ablation=a)


def test_findings_are_ordered_by_their_lift_in_logits_not_by_its_z():
    # a top-layer group: every route to the class meets there, so its random controls agree closely (a large z
    # for a small push); a lower group carrying a cue pushes other classes' images four times harder
    settings = AuditSettings()
    top_layer = _evidence(importance=0.9, drop=0.6, std=0.02)  # z 30
    cue = _evidence(importance=0.4, drop=2.4, std=0.3)  # z 8
    assert top_layer.ablation.z > cue.ablation.z
    reasons = ["off_class_effect"]
    assert _score(cue, reasons, settings) > _score(top_layer, reasons, settings)
    assert _score(cue, reasons, settings) == pytest.approx(2.4 / settings.min_lift, abs=1e-4)


def test_importance_gates_the_findings_but_does_not_order_them():
    # the class's own top-layer group matters most and carries a little of the shortcut; a cue group lower
    # down matters less to the class but pushes other classes' images three times harder
    settings = AuditSettings()
    top_layer = _evidence(importance=0.7, drop=0.8, std=0.1)
    cue = _evidence(importance=0.15, drop=2.3, std=0.3)
    reasons = ["off_class_effect"]
    assert _score(cue, reasons, settings) > _score(top_layer, reasons, settings)
    ranked = sorted([_finding(top_layer, "l1g0"), _finding(cue, "l3g2"), _finding(_evidence(0.3, 2.3, 0.3), "l2g0")],
                    key=_rank)
    assert [f.group for f in ranked] == ["l2g0", "l3g2", "l1g0"]  # equal pushes: the more important first


def _finding(ev: FindingEvidence, group: str) -> Finding:
    return Finding(key=group, class_index=0, class_name="c", layer="layer", group=group, neurons=[0],
                   score=_score(ev, ["off_class_effect"], AuditSettings()), reasons=["off_class_effect"],
                   sentence="", evidence=ev)


def test_an_audit_of_the_first_version_reads_with_no_lift_floor():
    images, labels = _images()
    audit = audit_circuits(_inputs(), Linear().eval(), images, labels=labels)
    old = json.loads(audit.to_json())
    old["schema"] = "neurflow.audit/1"
    del old["settings"]["min_lift"], old["settings"]["min_margin_lift"]
    read = Audit.from_json(json.dumps(old))
    assert read.schema == "neurflow.audit/3" and read.settings.min_lift == 0.0 == read.settings.min_margin_lift
    assert [f.key for f in read.findings()] == [f.key for f in audit.findings()]
