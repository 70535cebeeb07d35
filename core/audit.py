"""The audit document (``neurflow.audit/3``): groups of a model's circuits that a person should look at.

A *finding* is a neuron group that matters to a class (importance) and shows evidence that what it
detects is not the class's own: its label is not among the class's expected concepts, the same
neurons serve unrelated classes, or switching it off changes the class's logit on images that do
not show the class at all (measured against random neuron sets of the same size). The audit is
computed by :mod:`neurflow.atlas.audit`; the document lives here, beside the circuit document, so
every layer that shows or exports findings reads one definition.

A reviewer's verdict on a finding (:class:`Review`) is keyed by the finding's :attr:`Finding.key`
(class, layer, member neurons), so it applies again when the audit is rerun on the same circuits, and
to a finding of a recomputed circuit whose neurons overlap it enough (:func:`neurflow.atlas.audit.apply_reviews`).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from .circuit import Exemplar, ModelInfo
from .documents import Document

SCHEMA_VERSION = "neurflow.audit/3"

Verdict = Literal["open", "confirmed", "dismissed"]


class AuditSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Every threshold a finding depends on (chosen on the dev planted worlds, docs/audit.md)."""

    #: groups below this importance (mean member importance over the layer's most important neuron) are not examined
    #: (the circuits a user gets, tau 16 down to the early layers, spread a class over more groups than
    #: tau-8 circuits: cue groups there lift the class by 1-2 logits at importance 0.17-0.19)
    min_importance: Annotated[float, Meta(ge=0, le=1)] = 0.1
    #: random neuron sets of the group's size per layer: the control of the off-class ablation
    controls: Annotated[int, Meta(ge=2, le=200)] = 8
    #: off-class effect counts as evidence at this many control standard deviations above the control mean
    #: clipped at 0 (neurflow.atlas.audit.lift_z) ...
    min_z: Annotated[float, Meta(gt=0)] = 3.0
    #: ... and when it is at least this share of the group's effect on the class's own images ...
    min_share: Annotated[float, Meta(ge=0, le=10)] = 0.25
    #: ... and its lift (drop above the control mean clipped at 0, neurflow.atlas.audit.lift) is at least this
    #: many logits: a sure but tiny push is not a shortcut worth a reviewer's time
    min_lift: Annotated[float, Meta(ge=0, le=100)] = 0.5
    #: ... and its lift of the class's margin over the class each off-class image shows (the same lift, of
    #: logit(class) - logit(shown class), neurflow.atlas.audit.margin_lift) is at least this many logits: a
    #: feature many classes read lowers every logit when switched off, which is no push towards this class
    #: (objects-tint-texture's clean twin had 4 findings of such features; docs/audit.md)
    min_margin_lift: Annotated[float, Meta(ge=0, le=100)] = 0.5
    #: the most off-class (and own-class) images the ablations run on, per class
    max_images: Annotated[int, Meta(ge=4, le=10_000)] = 32
    #: a label counts as evidence when the group's confidence is at least this (unlabeled groups: no label evidence)
    min_confidence: Annotated[float, Meta(ge=0, le=1)] = 0.5
    #: atlas sharing: two groups are one concept at this member-neuron Jaccard
    jaccard: Annotated[float, Meta(gt=0, le=1)] = 0.5
    #: findings kept per class, best first
    max_findings: Annotated[int, Meta(ge=1, le=1000)] = 5
    seed: Annotated[int, Meta(ge=0, le=2**32 - 1)] = 0  # numpy seeds are non-negative


class OffClassAblation(msgspec.Struct, forbid_unknown_fields=True):
    """Switching the group off (zeroing its neurons) on images that do not show the class."""

    images: int  # off-class images measured
    logit_drop: float  # mean drop of the class's logit there (positive: the group pushed those images towards the class)
    control_mean: float  # the same for random neuron sets of the group's size in its layer
    control_std: float
    z: float  # (logit_drop - control_mean) / control_std
    own_images: int  # images of the class itself
    own_logit_drop: float  # mean drop of the class's logit on them
    share: float | None  # logit_drop / own_logit_drop (None when the group barely matters on the class's images)
    #: the mean drop of the class's logit minus that of the class each off-class image shows, and the same for the
    #: control (None: an audit before neurflow.audit/3, which did not measure it)
    margin_drop: float | None = None
    margin_control_mean: float | None = None


class FindingEvidence(msgspec.Struct, forbid_unknown_fields=True):
    importance: float  # 0..1: mean member importance over the layer's most important neuron
    label: str | None = None
    confidence: float | None = None
    expected: bool | None = None  # label among the class's expected concepts (None: unlabeled or no list)
    expected_concepts: list[str] = []
    shared_with: list[int] = []  # unrelated classes whose circuits hold the same neurons in this layer
    ablation: OffClassAblation | None = None
    exemplars: list[Exemplar] = []
    exemplar_paths: list[str] = []  # each exemplar's source image, relative to Audit.images


class Review(msgspec.Struct, forbid_unknown_fields=True):
    verdict: Verdict
    by: str = "human"
    at: str = ""  # ISO 8601, UTC
    note: str = ""


class Finding(msgspec.Struct, forbid_unknown_fields=True):
    key: str  # stable: class, layer and member neurons (reviews attach to it)
    class_index: int
    class_name: str | None
    layer: str
    group: str  # the group id in the class's circuit
    neurons: list[int]
    score: float  # the rank order within the class, higher first
    reasons: list[Literal["off_class_effect", "unexpected_label", "shared"]]
    sentence: str  # what the evidence says, in one plain sentence
    evidence: FindingEvidence
    verdict: Verdict = "open"
    review: Review | None = None


class AuditClass(msgspec.Struct, forbid_unknown_fields=True):
    class_index: int
    name: str | None
    circuit_id: str | None
    groups_examined: int
    findings: list[Finding]  # best first; dismissed ones stay, marked


class Audit(Document, forbid_unknown_fields=True):
    schema: str
    model: ModelInfo
    settings: AuditSettings
    classes: list[AuditClass]
    images: str | None = None  # the data root of the exemplars and of the ablation images
    seconds: float | None = None
    warnings: list[str] = []

    def findings(self, include_dismissed: bool = False) -> list[Finding]:
        return [f for c in self.classes for f in c.findings if include_dismissed or f.verdict != "dismissed"]

    SCHEMA: ClassVar[str] = SCHEMA_VERSION
    #: /1 (before 2026-12-07) had no min_lift and /2 no min_margin_lift: their off-class evidence needed none,
    #: which reads as 0
    OLDER: ClassVar[tuple[str, ...]] = ("neurflow.audit/1", "neurflow.audit/2")
    KIND: ClassVar[str] = "audit"

    @classmethod
    def _upgrade(cls, head: dict[str, Any], version: str) -> dict[str, Any]:
        settings = head.get("settings")
        if isinstance(settings, dict):
            head = {**head, "settings": {"min_lift": 0.0, "min_margin_lift": 0.0, **settings}}
        return {**head, "schema": SCHEMA_VERSION}


REVIEWS_SCHEMA = "neurflow.audit-reviews/1"


class ReviewEntry(msgspec.Struct, forbid_unknown_fields=True):
    key: str
    class_index: int
    layer: str
    neurons: list[int]  # kept so that a recomputed circuit's nearby group inherits the verdict
    review: Review


class Reviews(Document, forbid_unknown_fields=True):
    """A person's verdicts on findings, kept apart from the audit so that a rerun does not lose them."""

    SCHEMA: ClassVar[str] = REVIEWS_SCHEMA
    KIND: ClassVar[str] = "audit reviews"

    schema: str = REVIEWS_SCHEMA
    entries: list[ReviewEntry] = []

    def find(self, key: str) -> ReviewEntry | None:
        return next((e for e in self.entries if e.key == key), None)

    def record(self, finding: Finding, review: Review) -> ReviewEntry:
        """Store ``review`` for ``finding`` (replacing an earlier verdict on the same key) and set it on the finding."""
        entry = ReviewEntry(key=finding.key, class_index=finding.class_index, layer=finding.layer,
                            neurons=list(finding.neurons), review=review)
        self.entries = [e for e in self.entries if e.key != finding.key] + [entry]
        finding.verdict, finding.review = review.verdict, review
        return entry

