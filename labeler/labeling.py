"""``label_circuit``: CLIP labels (and optional captions) for every group of a circuit.

Steps: load the CLIP model (cached), embed the vocabulary with the template ensemble (cached), embed a
reference pool of the run's patches, caption every group when a captioner is configured, then for
each group embed its patches (all member concepts' top patches, minus a held-out share), score the
vocabulary (:mod:`labeler.scoring`; with the mosaic score, the caption's words are one more vote:
:func:`labeler.evidence.caption_vote`) and keep the top-k. Captioning is per group: a failing group
gets no caption and no caption vote, and every group keeps its CLIP labels; failures are listed in
``circuit.labeling.caption_errors``.

What is written:

* ``group.labels``: the CLIP top-k, best first, ``{text, score, source: "clip"}`` (score in nats, see
  :mod:`labeler.scoring`), then, when a caption was summarised, one ``source: "caption"`` label whose
  score is the configured score of the summary text (so the two kinds are comparable);
* ``group.confidence``: the calibrated confidence of ``labels[0]``;
* ``group.caption``: ``{text, model, prompt_id, prompt_version}`` when a captioner is configured;
* ``circuit.labeling``: a :class:`~neurflow.core.circuit.Labeling` record: the settings, provenance
  (CLIP model and weights hash, vocabulary, templates) and, per group, the held-out patches that
  ``neurflow evaluate`` tests labels on.
"""

from __future__ import annotations

import copy
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from neurflow.core.circuit import (Caption, CaptionerProvenance, Circuit, ClipProvenance, Exemplar, Group, Label,
                                   LabelEvidence, Labeling, LabelVote, VocabularyProvenance)
from neurflow.core.corrections import reapply as reapply_corrections
from neurflow.labeler.clip_model import ClipModel, load_clip
from neurflow.labeler.config import LabelerConfig
from neurflow.labeler.evidence import (CaptionVote, ClipView, caption_vote, captioned_combination, combination_for,
                                       default_combination, is_uncertain_probability, judge)
from neurflow.labeler.patches import (PatchKey, PatchLoader, activation_weights, group_patches, patch_key, reference_pool,
                                      split_holdout)
from neurflow.labeler.scoring import (
    confidence_method, contrastive_scores, mean_cosine_scores, mixture, mosaic_scores, patch_agreement,
    per_patch_contrastive, top_indices,
)

#: Display exemplars per group; the labeling patches list them first (see ``patches.group_patches``).
DISPLAY_EXEMPLARS = 5
from neurflow.labeler.vocabulary import load_templates, load_vocabulary
from neurflow.progress import Meter, Progress

if TYPE_CHECKING:
    from neurflow.labeler.captioning import CaptionResult

log = logging.getLogger(__name__)


class PatchEmbedder:
    """CLIP embeddings of exemplar patches, computed once per patch per run."""

    def __init__(self, clip: ClipModel, loader: PatchLoader, batch_size: int = 64):
        self.clip = clip
        self.loader = loader
        self.batch_size = batch_size
        self._cache: dict[PatchKey, np.ndarray] = {}

    def __call__(self, patches: list[Exemplar]) -> np.ndarray:
        missing = list({patch_key(p): p for p in patches if patch_key(p) not in self._cache}.values())
        if missing:
            emb = self.clip.encode_images(self.loader.crops(missing), batch_size=self.batch_size)
            for p, e in zip(missing, emb):
                self._cache[patch_key(p)] = e
        if not patches:
            return np.zeros((0, self.clip.embed_dim), dtype=np.float32)
        return np.stack([self._cache[patch_key(p)] for p in patches])


class GroupScorer:
    """Scores texts for a group's patches with the configured score against one run's reference pool."""

    def __init__(self, clip: ClipModel, config: LabelerConfig, concepts: np.ndarray, reference: np.ndarray):
        self.clip = clip
        self.config = config
        self.concepts = concepts
        self.reference = reference
        self.reference_mixture = mixture(reference, concepts, clip.logit_scale)

    def scores(self, group: np.ndarray, concepts: np.ndarray | None = None, n_exemplars: int = DISPLAY_EXEMPLARS) -> np.ndarray:
        """Scores of ``concepts`` (default: the vocabulary) for a group's labeling patches, whose first
        ``n_exemplars`` rows are its display exemplars."""
        if concepts is None:
            concepts, ref_mix = self.concepts, self.reference_mixture
        else:
            ref_mix = mixture(self.reference, concepts, self.clip.logit_scale)
        if self.config.score == "mean_cosine":
            return mean_cosine_scores(group, concepts)
        if self.config.score == "mosaic":
            return mosaic_scores(group[:n_exemplars], group, ref_mix, concepts, self.clip.logit_scale)
        return contrastive_scores(group, ref_mix, concepts, self.clip.logit_scale, self.config.contrast)

    def confidence(self, group: np.ndarray, top: int) -> float:
        """Patch agreement of the top concept (the single-CLIP scores; the mosaic score's confidence is
        :mod:`labeler.evidence`'s combination)."""
        if self.config.score == "mean_cosine":
            per_patch = group @ self.concepts.T
        else:
            per_patch = per_patch_contrastive(group, self.reference_mixture, self.concepts, self.clip.logit_scale, self.config.contrast)
        return patch_agreement(per_patch, top)


class _Voter:
    """One CLIP of a labeling run: its vocabulary matrices, patch embeddings and reference pool."""

    def __init__(self, clip: ClipModel, vocabulary, templates: tuple[str, ...], loader: PatchLoader, config: LabelerConfig):
        self.clip = clip
        self.concepts = clip.vocabulary_matrix(vocabulary, templates)
        # each prompt alone, so that the combination can see whether the prompts agree
        self.prompts = np.stack([clip.vocabulary_matrix(vocabulary, [t]) for t in templates]) if len(templates) > 1 else None
        self.embed = PatchEmbedder(clip, loader, config.batch_size)
        self.scorer = GroupScorer(clip, config, self.concepts, self.embed(reference_pool(loader.circuit, config.reference_size, config.seed)))
        described = clip.describe()
        self.name = f"clip:{described['model']}@{(described['weights_sha256'] or described['pretrained'] or '')[:16]}"

    def view(self, embeddings: np.ndarray, shown: int, weights: np.ndarray) -> ClipView:
        return ClipView(self.name, self.concepts, self.clip.logit_scale, embeddings[:shown], embeddings, weights, self.prompts)


def _caption_vote(caption: CaptionResult | None, captioner_name: str, voters: list[_Voter], views: list[ClipView],
                  templates: tuple[str, ...]) -> CaptionVote | None:
    """The caption's words as a vote (its short label when there is one: the caption without filler)."""
    text = (caption.label or caption.caption).strip() if caption is not None else ""
    if not text:
        return None
    embeddings = [v.clip.embed_concepts([text], templates)[0] for v in voters]
    return caption_vote(f"caption:{captioner_name}", text, embeddings, views, caption.confidence)


def _set_status(group: Group) -> None:
    """``uncertain`` with the two best candidates when the label is more likely wrong than right; a
    person's correction keeps its status whatever the labeler says."""
    if group.correction is not None:
        group.status = "corrected"
    elif is_uncertain_probability(group.confidence):
        group.status = "uncertain"
        group.candidates = [msgspec.structs.replace(label) for label in group.labels[:2]]
    else:
        group.status = "labeled"
        group.candidates = []


def _group_seed(seed: int, group_id: str) -> int:
    return (seed * 1_000_003) ^ zlib.crc32(group_id.encode())


def _box(ex: Exemplar) -> list[int]:
    return [ex.image, *ex.box]


def label_circuit(
    circuit: Circuit,
    patches_source: str | Path,
    config: LabelerConfig | dict,
    progress: Progress | None = None,
    *,
    clip: ClipModel | None = None,
    captioner: Any = None,
) -> Circuit:
    """Return a copy of ``circuit`` with labels (and captions) on every group.

    ``patches_source`` is the data root the circuit's image paths are relative to (the job's
    ``data.images`` folder). ``clip`` and ``captioner`` may be passed in to reuse loaded models;
    otherwise they are loaded from ``config`` (CLIP through the process-wide cache).
    """
    config = config if isinstance(config, LabelerConfig) else LabelerConfig.from_spec(config)
    started = time.time()
    report = Meter(progress)
    circuit = copy.deepcopy(circuit)
    vocabulary = load_vocabulary(config.vocabulary)
    templates = load_templates(config.templates)
    groups = [(i, g) for i, _, g in circuit.iter_groups()]
    report("labeling: loading clip", 0, len(config.clips), "models")
    clips = [clip or load_clip(config.clip)] + [load_clip(spec) for spec in config.extra_clips]
    report("labeling: loading clip", len(clips), len(clips), "models")
    loader = PatchLoader(circuit, Path(patches_source))
    voters = [_Voter(c, vocabulary, templates, loader, config) for c in clips]
    scorer = voters[0].scorer
    for _, group in groups:
        group.caption = None
    captions = _caption_groups(circuit, loader, config, captioner, report) if config.captioner is not None else None
    votes_from_captions = captions is not None and config.captioner.vote and config.score == "mosaic"

    voted = False  # whether any group's caption voted (a captioner may fail on every group)
    holdout: dict[str, list[list[int]]] = {}
    group_embeddings: dict[str, np.ndarray] = {}
    for done, (layer_index, group) in enumerate(groups):
        patches = group_patches(circuit, layer_index, group) if config.patches == "all" else list(group.exemplars)
        exemplar_keys = {patch_key(e) for e in group.exemplars}
        used, held = split_holdout(patches, config.holdout, _group_seed(config.seed, group.id), keep=exemplar_keys)
        used = used[: config.max_patches]
        shown = sum(1 for p in used if patch_key(p) in exemplar_keys)  # the exemplars lead ``used``
        embeddings = [v.embed(used) for v in voters]
        if config.score == "mosaic":
            weights = np.asarray(activation_weights(circuit, layer_index, group, used))
            views = [v.view(emb, shown, weights) for v, emb in zip(voters, embeddings)]
            vote = (_caption_vote(captions.results.get(group.id), captions.model, voters, views, templates)
                    if votes_from_captions else None)
            voted = voted or vote is not None
            verdict = judge(views, vocabulary.concepts, caption=vote)
            scores, top, confidence = verdict.scores, verdict.order[: config.top_k], verdict.confidence
            evidence = LabelEvidence(votes=[msgspec.convert(vote, LabelVote) for vote in verdict.votes],
                                     features=verdict.features, method=combination_for(vote).describe())
        else:  # the single-CLIP scores kept for comparison: the first CLIP alone, patch agreement
            scores = scorer.scores(embeddings[0], n_exemplars=shown)
            top = top_indices(scores, config.top_k)
            confidence = round(scorer.confidence(embeddings[0], int(top[0])), 5)
            evidence = LabelEvidence(features={"patch_agreement": confidence}, method=confidence_method(config.score))
        group.labels = [Label(text=vocabulary.concepts[k], score=round(float(scores[k]), 5), source="clip") for k in top]
        group.confidence = confidence
        group.evidence = evidence
        _set_status(group)
        holdout[group.id] = [_box(p) for p in held]
        group_embeddings[group.id] = embeddings[0]
        report("labeling: clip", done + 1, len(groups), "groups")

    method = confidence_method(config.score)
    if config.score == "mosaic":
        method = default_combination().describe()
        if voted:
            method = f"captioned groups: {captioned_combination().describe()}; the others: {method}"
    circuit.labeling = Labeling(
        settings=config,
        clip=msgspec.convert(clips[0].describe(), ClipProvenance),
        extra_clips=[msgspec.convert(c.describe(), ClipProvenance) for c in clips[1:]],
        vocabulary=VocabularyProvenance(name=vocabulary.name, size=len(vocabulary), sha256_16=vocabulary.digest),
        templates=list(templates),
        confidence_method=method,
        reference_patches=len(scorer.reference),
        holdout=holdout,
        patches_source=str(Path(patches_source).resolve()),
    )
    if captions is not None:
        _record_captions(circuit, captions, scorer, group_embeddings)
    reapply_corrections(circuit)  # a person's label outlives every relabel
    circuit.labeling.seconds = round(time.time() - started, 2)
    return circuit


# -- captions ----------------------------------------------------------------------------------


def build_captioner(config: LabelerConfig):
    from neurflow.labeler.captioning import build_captioner as build

    return build(config.captioner, device=config.clip.device)


def _lower_groups(circuit: Circuit, group: Group, k: int) -> list[Group]:
    edges = sorted((e for e in circuit.group_edges if e.source == group.id), key=lambda e: -abs(e.weight))
    out = []
    for edge in edges[:k]:
        try:
            out.append(circuit.group(edge.target)[1])
        except KeyError:
            continue
    return out


@dataclass
class _Captions:
    """What captioning a circuit's groups gave: each group's result, or why it has none."""

    model: str
    results: dict[str, CaptionResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    provenance: CaptionerProvenance | None = None
    unbuilt: str | None = None  # the captioner could not be built at all


def _caption_groups(circuit: Circuit, loader: PatchLoader, config: LabelerConfig, captioner, report) -> _Captions:
    """Caption every group (before the CLIP labels, whose judge reads the captions' words)."""
    from neurflow.labeler.captioning import caption_group

    spec = config.captioner
    groups = [g for _, _, g in circuit.iter_groups()]
    try:
        captioner = captioner or build_captioner(config)
    except ValueError as exc:  # a captioner that cannot even be built fails every group the same way
        log.error("captioning disabled: %s", exc)
        return _Captions(spec.model, errors={g.id: str(exc) for g in groups}, unbuilt=str(exc))
    out = _Captions(captioner.name)
    unavailable = None
    for done, group in enumerate(groups):
        if unavailable is not None:
            out.errors[group.id] = unavailable
            continue
        lower = _lower_groups(circuit, group, spec.lower_groups) if spec.circuit_prompt else []
        try:
            result = caption_group(captioner, loader, group, lower, spec)
        except Exception as exc:  # noqa: BLE001 - one group's failure must not cost the others their labels
            from neurflow.labeler.captioning.base import CaptionerUnavailable

            out.errors[group.id] = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, CaptionerUnavailable):
                unavailable = f"not attempted: {exc}"  # the endpoint is down: do not wait out retries N times
            log.warning("caption of group %s failed: %s", group.id, exc)
            continue
        out.results[group.id] = result
        group.caption = Caption(text=result.caption, model=captioner.name, prompt_id=result.prompt_id,
                                prompt_version=result.prompt_version, confidence=result.confidence)
        report("labeling: captions", done + 1, len(groups), "groups")
    out.provenance = CaptionerProvenance(model=captioner.name, prompt=spec.prompt, circuit_prompt=spec.circuit_prompt)
    return out


def _record_captions(circuit: Circuit, captions: _Captions, scorer: GroupScorer,
                     group_embeddings: dict[str, np.ndarray]) -> None:
    """The captions' short labels as ``source: "caption"`` labels (scored like CLIP labels), and the
    captioning record."""
    for _, _, group in circuit.iter_groups():
        result = captions.results.get(group.id)
        if result is None or not result.label:
            continue
        text_emb = scorer.clip.embed_concepts([result.label], circuit.labeling.templates)
        with_label = np.concatenate([scorer.concepts, text_emb])
        score = float(scorer.scores(group_embeddings[group.id], with_label)[-1])
        group.labels = [lab for lab in group.labels if lab.source != "caption"] + [
            Label(text=result.label, score=round(score, 5), source="caption")
        ]
    circuit.labeling.captioner = captions.provenance
    if captions.unbuilt is not None:
        circuit.labeling.captioner_error = captions.unbuilt
    if captions.errors:
        circuit.labeling.caption_errors = captions.errors
