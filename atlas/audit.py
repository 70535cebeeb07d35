"""``audit_circuits``: which groups of a model's circuits a person should look at, with the evidence.

For every class's circuit, each group that matters to the class (importance at least
``settings.min_importance``) is examined three ways:

* **off-class ablation** (needs the model and images): its neurons are zeroed on images that do not
  show the class (other classes, minus the ``related`` ones the caller names) and the drop of the
  class's logit is compared with the drops caused by random neuron sets of the same size in the same
  layer (the control; its mean clipped at 0, :func:`lift_z`). A group that lifts the class on images
  without the class's content detects something the class's images merely tend to carry: a shortcut.
  Its drop is also compared with its drop on the class's own images (``share``), so that a group
  which simply matters a lot everywhere is not mistaken for one that matters *outside* the class,
  and the drop of the class's margin over the class each image shows must hold as well
  (:func:`margin_lift`): a feature many classes read lowers all their logits when switched off.
* **label**: the group's label (when it is labeled confidently) is not among the class's expected
  concepts (a list the caller gives per class).
* **sharing** (the atlas's rule): the same neurons (Jaccard at least ``settings.jaccard``) form a group
  in the circuit of a class the caller did not name as related.
  Where the off-class ablation ran and found that the neurons move other classes' images towards the
  class less than random neurons do, the sharing is a feature the classes read alike and no evidence.

A group with at least one of these is a finding; findings are ranked by the strength of their
evidence (importance is the gate, not the order). Reviews (:class:`neurflow.core.audit.Reviews`)
carry a person's verdicts from one run to the next.

The ablations run from the group's layer up only: the layer's output is computed once per class and
image set, and every ablated copy goes through the rest of the network in batches.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from neurflow.atlas.build import AtlasInput, check_inputs, group_importance
from neurflow.atlas.concepts import jaccard
# folder_labels: re-exported, this module was its documented home before the diff shared it
from neurflow.atlas.offclass import ImageSets, ablation_drops, folder_labels, image_sets, logit_drops  # noqa: F401
from neurflow.core.audit import (SCHEMA_VERSION, Audit, AuditClass, AuditSettings, Finding, FindingEvidence,
                                 OffClassAblation, Reviews)
from neurflow.core.circuit import Circuit, Group, Layer
from neurflow.core.images import ImageSet
from neurflow.core.layer_access import LayerAccess, num_channels
from neurflow.progress import Meter, Progress

#: an own-class drop below this (logit units) is "the group barely matters on the class's images"
_OWN_FLOOR = 0.05
#: a control spread below this (logit units) is taken as this: random sets that all do nothing give no scale
_STD_FLOOR = 1e-3
#: the lift's unit in the score when min_lift is set to 0 (logits)
_LIFT_UNIT_FLOOR = 0.1


def finding_key(class_index: int, layer: str, neurons: Sequence[int]) -> str:
    digest = hashlib.sha256(",".join(str(n) for n in sorted(set(neurons))).encode()).hexdigest()[:12]
    return f"c{class_index}:{layer}:{digest}"


def _off_class(access: LayerAccess, top: str, layer: Layer, groups: list[Group], sets: ImageSets, target: int,
               settings: AuditSettings, rng: np.random.Generator) -> dict[str, OffClassAblation]:
    members = [sorted({m.neuron for m in g.members}) for g in groups]
    channels = num_channels(layer.shape)
    sizes = sorted({len(m) for m in members})
    controls = {s: [sorted(rng.choice(channels, size=min(s, channels), replace=False).tolist())
                    for _ in range(settings.controls)] for s in sizes}
    control_sets = [c for s in sizes for c in controls[s]]
    off = ablation_drops(access, top, layer.name, sets.off, target, members + control_sets, shown=sets.off_labels)
    own = logit_drops(access, top, layer.name, sets.own, target, members)
    by_size, at = {}, len(members)
    for s in sizes:
        by_size[s] = slice(at, at + settings.controls)
        at += settings.controls
    out = {}
    for k, g in enumerate(groups):
        ctrl = by_size[len(members[k])]
        mean, std = float(np.mean(off.target[ctrl])), float(np.std(off.target[ctrl]))
        drop, own_drop = float(off.target[k]), float(own[k])
        share = drop / own_drop if np.isfinite(own_drop) and own_drop > _OWN_FLOOR else None
        out[g.id] = OffClassAblation(
            images=len(sets.off), logit_drop=round(drop, 4), control_mean=round(mean, 4), control_std=round(std, 4),
            z=round((drop - mean) / max(std, _STD_FLOOR), 3), own_images=len(sets.own),
            own_logit_drop=round(own_drop, 4) if np.isfinite(own_drop) else 0.0,
            share=None if share is None else round(share, 3),
            margin_drop=round(float(off.margin[k]), 4), margin_control_mean=round(float(np.mean(off.margin[ctrl])), 4))
    return out


def lift(a: OffClassAblation) -> float:
    """How much more the class's logit falls off-class with the group switched off than with random
    neurons of its size switched off (the control mean clipped at 0, as in :func:`lift_z`), in logits:
    the size of the push towards the class, which orders the findings."""
    return a.logit_drop - max(a.control_mean, 0.0)


def lift_z(a: OffClassAblation) -> float:
    """How far the group's off-class drop lies above what switching neurons off does by itself, in the
    control's spread: the z of the off-class evidence (the rule's test that the lift is not chance).

    The baseline is the control mean clipped at 0. Where random neuron sets of the layer *raise* the
    class's logit off-class when zeroed (a negative control mean: the layer mostly argues against the
    class on those images), a group that merely does not argue against it sits far above that mean
    without lifting the class at all; the clean twins of the planted worlds made findings of such
    groups (docs/audit.md). A lift has to be a positive drop, as in the diff's clipped reliance."""
    return lift(a) / max(a.control_std, _STD_FLOOR)


def margin_lift(a: OffClassAblation) -> float | None:
    """:func:`lift` of the class's margin over the class each off-class image shows (None: not measured).

    Switching off a feature that many classes read (an edge, a blob of colour) lowers all their logits;
    the class's logit falls with them, and by its own measure the group lifts the class off-class. The
    margin only falls when the group pushed the images towards the class rather than towards what they
    show. The clean twin of objects-tint-texture had four findings of the first kind (docs/audit.md)."""
    if a.margin_drop is None or a.margin_control_mean is None:
        return None
    return a.margin_drop - max(a.margin_control_mean, 0.0)


def _off_class_evidence(a: OffClassAblation | None, settings: AuditSettings) -> bool:
    # share None: the group barely moves the class on its own images, so it hardly matters there
    if a is None or a.share is None:
        return False
    margin = margin_lift(a)
    return (lift_z(a) >= settings.min_z and a.share >= settings.min_share and lift(a) >= settings.min_lift
            and (margin is None or margin >= settings.min_margin_lift))


def _sharing_counts(a: OffClassAblation | None) -> bool:
    # Sharing suggests what the ablation measures. Where it ran and the neurons moved other classes' images
    # towards the class less than random sets of their size (a margin lift below 0), they are a feature the
    # classes read alike (the circuits a user gets share mid-level groups between unrelated classes: the
    # clean twins of three planted worlds had 1-2 such findings per class, docs/audit.md).
    margin = None if a is None else margin_lift(a)
    return margin is None or margin >= 0.0


def _image_path(circuit: Circuit, index: int) -> str:
    return circuit.images[index].path if 0 <= index < len(circuit.images) else ""


def _matches(label: str, expected: Sequence[str]) -> bool:
    text = label.strip().casefold()
    return any(text == e.strip().casefold() or e.strip().casefold() in text for e in expected if e.strip())


def _sentence(name: str, layer: str, group: str, ev: FindingEvidence, reasons: list[str]) -> str:
    parts = [f"Group {group} ({layer}) matters to {name} (importance {ev.importance:.2f})"]
    a = ev.ablation
    if "off_class_effect" in reasons and a is not None:
        parts.append(f"and switching it off lowers {name}'s logit by {a.logit_drop:.2f} on {a.images} images of other "
                     f"classes, where random neuron sets of its size lower it by {a.control_mean:.2f} ± {a.control_std:.2f}"
                     + ("" if a.margin_drop is None else
                        f", and {name}'s lead over the class each image shows by {a.margin_drop:.2f}")
                     + f": it pushes images towards {name} without {name}'s own content")
    if "unexpected_label" in reasons:
        said = f" (confidence {ev.confidence:.2f})" if ev.confidence is not None else ""
        parts.append(f"its label {ev.label!r}{said} is not among {name}'s expected concepts")
    if "shared" in reasons:
        parts.append(f"the same neurons serve unrelated classes {', '.join(str(k) for k in ev.shared_with)}")
    return "; ".join(parts) + "."


def _score(ev: FindingEvidence, reasons: list[str], settings: AuditSettings) -> float:
    # The z only tests that the lift is not chance: it grows with how tightly a layer's random sets agree,
    # which favours the top layers, where every route to the class meets. The lift itself (in units of
    # min_lift) says how hard the group pushes other classes' images towards the class. Importance only
    # gates (min_importance): weighted by it, the class's own top-layer groups (importance ~0.7, which
    # carry a little of every shortcut) outranked cue groups further down that push three times harder
    # (bench/results/audit-order-experiment-2026-12-07.md).
    strength = 0.0
    if "off_class_effect" in reasons and ev.ablation is not None:
        strength += lift(ev.ablation) / max(settings.min_lift, _LIFT_UNIT_FLOOR)
    strength += 1.0 if "unexpected_label" in reasons else 0.0
    strength += 0.5 if "shared" in reasons else 0.0
    return round(strength, 4)


def _rank(f: Finding) -> tuple[float, float]:
    return (-f.score, -f.evidence.importance)


def audit_circuits(
    inputs: Sequence[AtlasInput],
    model: nn.Module | None = None,
    images: ImageSet | None = None,
    *,
    labels: Sequence[int | None] | None = None,
    expected: Mapping[int, Sequence[str]] | None = None,
    related: Mapping[int, Sequence[int]] | None = None,
    settings: AuditSettings | None = None,
    reviews: Reviews | None = None,
    images_root: str | None = None,  # the circuits' data root (their images[].path are relative to it)
    progress: Progress | None = None,
) -> Audit:
    """The audit of ``inputs`` (circuits of one model, one per class).

    ``model`` and ``images`` (normalised model inputs, e.g. ``ImageSet.from_folder``) enable the
    off-class ablation; ``labels`` gives each image's class (default ``images.labels``, then the
    model's prediction for images without one). ``expected`` maps a class to its expected concepts
    (label evidence); ``related`` maps a class to classes that legitimately share its content (their
    images are not off-class for it, their circuits do not count as sharing). ``reviews``: verdicts of
    earlier runs, applied to the findings (:func:`apply_reviews`).
    """
    started = time.perf_counter()
    report = Meter(progress)
    settings = settings or AuditSettings()
    inputs = sorted(inputs, key=lambda e: e.circuit.target.class_index)
    check_inputs(inputs)
    if (model is None) != (images is None):
        raise ValueError("the off-class ablation needs both a model and images; pass both or neither")
    expected = {int(k): list(v) for k, v in (expected or {}).items()}
    related_of = {int(k): {int(x) for x in v} for k, v in (related or {}).items()}
    rng = np.random.default_rng(settings.seed)
    warnings: list[str] = []
    pixels, image_labels, access = None, None, None
    if model is not None and images is not None:
        model = model.eval()
        pixels = images.pixels
        given = list(labels) if labels is not None else list(images.labels or [None] * len(images))
        if len(given) != len(images):
            raise ValueError(f"labels has {len(given)} entries for {len(images)} images")
        if any(k is None for k in given):
            with torch.no_grad():
                predicted = torch.cat([model(pixels[i:i + 256]) for i in range(0, len(pixels), 256)]).argmax(1).tolist()
            given = [k if k is not None else p for k, p in zip(given, predicted)]
        image_labels = [int(k) for k in given]
        access = LayerAccess(model, [lay.name for lay in inputs[0].circuit.layers],
                             inputs[0].circuit.params.token_reduce)
    elif model is None:
        warnings.append("no model and images: the off-class ablation was skipped")

    # the atlas's sharing rule: member-neuron sets per (layer, class)
    sets_by_layer: dict[str, list[tuple[int, list[int]]]] = {}
    for entry in inputs:
        for layer in entry.circuit.layers:
            for g in layer.groups:
                sets_by_layer.setdefault(layer.name, []).append(
                    (entry.circuit.target.class_index, sorted({m.neuron for m in g.members})))

    classes = []
    for done, entry in enumerate(inputs):
        report("audit", done, len(inputs), "circuits")
        circuit: Circuit = entry.circuit
        target = circuit.target.class_index
        name = entry.class_name or circuit.target.name or f"class {target}"
        related = related_of.get(target, set())
        class_sets = None
        if pixels is not None:
            class_sets = image_sets(pixels, image_labels, target, related, settings.max_images, rng)
            if len(class_sets.off) == 0:
                warnings.append(f"class {target}: no off-class images; its groups were not ablated")
        top = circuit.layers[0].name
        findings, examined = [], 0
        for index, layer in enumerate(circuit.layers):
            importance = group_importance(layer)
            # two groups of one neuron set (two concepts of the same neurons) are one thing to switch off;
            # the target's own neuron (a group of the top layer) is the class itself, not evidence about it
            seen: set[tuple[int, ...]] = {(target,)} if index == 0 else set()
            groups = []
            for g in sorted(layer.groups, key=lambda g: -importance[g.id]):
                members = tuple(sorted({m.neuron for m in g.members}))
                if importance[g.id] >= settings.min_importance and members not in seen:
                    seen.add(members)
                    groups.append(g)
            if not groups:
                continue
            examined += len(groups)
            ablations = {}
            # the top layer's groups have no layer above them to read the class from: no ablation there
            if index > 0 and class_sets is not None and len(class_sets.off):
                ablations = _off_class(access, top, layer, groups, class_sets, target, settings, rng)
            for g in groups:
                neurons = sorted({m.neuron for m in g.members})
                label = g.labels[0].text if g.labels else None
                if g.correction is not None:
                    label = g.correction.text
                exp = expected.get(target)
                is_expected = None if (label is None or exp is None) else _matches(label, exp)
                shared = sorted({k for k, other in sets_by_layer.get(layer.name, [])
                                 if k != target and k not in related and jaccard(neurons, other) >= settings.jaccard})
                ev = FindingEvidence(importance=round(importance[g.id], 4), label=label, confidence=g.confidence,
                                     expected=is_expected, expected_concepts=list(exp or []), shared_with=shared,
                                     ablation=ablations.get(g.id), exemplars=list(g.exemplars[:5]),
                                     exemplar_paths=[_image_path(circuit, ex.image) for ex in g.exemplars[:5]])
                reasons = []
                if _off_class_evidence(ev.ablation, settings):
                    reasons.append("off_class_effect")
                # a label without a confidence was set by hand or from ground truth: it counts
                confident = g.correction is not None or g.confidence is None or g.confidence >= settings.min_confidence
                if is_expected is False and confident:
                    reasons.append("unexpected_label")
                if shared and _sharing_counts(ev.ablation):
                    reasons.append("shared")
                if reasons:
                    findings.append(Finding(
                        key=finding_key(target, layer.name, neurons), class_index=target, class_name=name,
                        layer=layer.name, group=g.id, neurons=neurons, score=_score(ev, reasons, settings),
                        reasons=reasons, sentence=_sentence(name, layer.name, g.id, ev, reasons), evidence=ev))
        findings.sort(key=_rank)
        classes.append(AuditClass(class_index=target, name=name, circuit_id=entry.circuit_id,
                                  groups_examined=examined, findings=findings[:settings.max_findings]))
    report("audit", len(inputs), len(inputs), "circuits")
    audit = Audit(schema=SCHEMA_VERSION, model=inputs[0].circuit.model, settings=settings, classes=classes,
                  images=images_root, seconds=round(time.perf_counter() - started, 3), warnings=warnings)
    return apply_reviews(audit, reviews) if reviews is not None else audit


def apply_reviews(audit: Audit, reviews: Reviews, overlap: float = 0.5) -> Audit:
    """Set each finding's verdict from ``reviews``: the review of its key, else that of a reviewed
    finding of the same class and layer whose neurons overlap it by Jaccard >= ``overlap`` (the circuit
    was recomputed and its groups moved a little). Dismissed findings stay in the document, marked."""
    for cls in audit.classes:
        for f in cls.findings:
            entry = reviews.find(f.key)
            if entry is None:
                near = [(jaccard(f.neurons, e.neurons), e) for e in reviews.entries
                        if e.class_index == f.class_index and e.layer == f.layer]
                near = [t for t in near if t[0] >= overlap]
                entry = max(near, key=lambda t: t[0])[1] if near else None
            if entry is not None:
                f.verdict, f.review = entry.review.verdict, entry.review
        cls.findings.sort(key=lambda f: (f.verdict == "dismissed", *_rank(f)))
    return audit
