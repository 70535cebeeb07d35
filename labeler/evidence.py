"""A group's evidence from one or several CLIPs, and the fitted combination that turns it into a
label, the probability that the label is right, and a status.

Each CLIP gives a :class:`ClipView` of a group: its embeddings of the display exemplars and of all
labeling patches (each patch weighted by how strongly the group's member neuron fires on it), its
vocabulary under the prompt ensemble and under each prompt alone. The label is the mosaic score
(:mod:`labeler.scoring`) of the CLIPs read as one (:func:`pooled_distribution`: each crop's
logits summed over the CLIPs), ``P(d) = w P_E(d) + (1 - w) P_G(d)``, with ``P_G`` the
activation-weighted mixture of the patches' zero-shot votes; with one CLIP this is exactly the
single-CLIP mosaic score.

Then :func:`features` reads how far the evidence agrees with that label, each in [0, 1]:

* ``exemplars``: share of the exemplars' votes (every CLIP's) for it (Laplace);
* ``patches``: activation-weighted share of the labeling patches' votes for it (Laplace);
* ``margin``: its share of the pooled soft mixture (the exemplars' votes counted soft) minus the runner-up's;
* ``clips``: share of the CLIPs whose own mosaic score ranks it first;
* ``prompts``: share of (CLIP, single prompt) pairs under which the exemplars' mean cosine ranks it first;
* ``split``: votes of the most frequent other concept over its votes (exemplars or patches, the larger);
* ``top``: its share of the pooled soft mixture (the margin's first term alone);
* ``entropy``: entropy of the pooled soft mixture over ``log(c)`` (1: the evidence names nothing);
* ``cosine``: mean over CLIPs of the exemplars' mean cosine with its text embedding, clipped to
  [0, 1] (a CLIP taught a wrong name for a part puts that part's crops between the two names: the
  label's cosine falls short of what the CLIP gives a part it names cleanly);
* ``single``: 1 when one CLIP labels the group (``clips`` is then 1 by construction), else 0;
* ``caption``: when a captioner described the group, the label's share of the caption's vote
  (:func:`caption_vote`: the caption's words read onto the vocabulary by the CLIPs' text towers).

Features were added over time; a combination names the ones it uses, so older combination files
(fewer features) still read.

A captioned group is judged by its own combination (:data:`CAPTIONED_COMBINATION_FILE`, fitted on
the dev worlds' captioned groups), which reads the caption feature too and chooses between the mosaic
score's first concept and the caption's (:func:`rerank`): a captioner is evidence that does not come
from the CLIPs, so it can outvote a CLIP that misnames a part consistently. Without a caption nothing
changes.

:class:`Combination` is a logistic regression over these features, fitted on the dev worlds of the
label suite only (``python -m bench.run labels``) and shipped as package data (``combination.json``,
with what it was fitted on). Its output is ``Group.confidence``, a probability, without caps; a
label whose probability is below :data:`UNCERTAIN_BELOW` has status ``uncertain`` and carries its two
best candidates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from neurflow.labeler.scoring import (MOSAIC_EXEMPLAR_VOTES, MOSAIC_EXEMPLAR_WEIGHT, mixture, softmax,
                                      split_ratio, vote_mixture)

COMBINATION_FILE = Path(__file__).with_name("combination.json")
CAPTIONED_COMBINATION_FILE = Path(__file__).with_name("combination-captioned.json")
#: What the CLIPs' evidence says of a label; the combination of groups without a caption reads these.
CLIP_FEATURES = ("exemplars", "patches", "margin", "clips", "prompts", "split", "top", "entropy", "cosine", "single")
FEATURES = (*CLIP_FEATURES, "caption")
#: A label whose probability of being right is below this is ``uncertain``: more likely wrong than
#: right. A rule, not a fit; the bench reports on the dev worlds what other thresholds would do.
UNCERTAIN_BELOW = 0.5


def is_uncertain_probability(confidence: float | None) -> bool:
    """The one uncertainty rule: a calibrated probability that the label is right below
    :data:`UNCERTAIN_BELOW` (``None``, never labeled, is not uncertain)."""
    return confidence is not None and confidence < UNCERTAIN_BELOW


@dataclass(frozen=True)
class ClipView:
    """What one CLIP sees of one group."""

    voter: str  # "clip:MODEL@HASH", as recorded in the group's votes
    concepts: np.ndarray  # (c, d) the vocabulary under the prompt ensemble
    logit_scale: float
    exemplars: np.ndarray  # (k, d) the display exemplars
    patches: np.ndarray  # (n, d) the labeling patches, exemplars first
    weights: np.ndarray | None = None  # (n,) activation weights of the patches; None: all equal
    prompts: np.ndarray | None = None  # (t, c, d) the vocabulary under each prompt alone

    def patch_weights(self) -> np.ndarray:
        """The patches' weights scaled to mean 1 (so that Laplace counts stay in patches)."""
        n = len(self.patches)
        w = np.ones(n) if self.weights is None or len(self.weights) != n else np.clip(np.asarray(self.weights, float), 0, None)
        return w * (n / w.sum()) if w.sum() > 0 else np.ones(n)


@dataclass(frozen=True)
class CaptionVote:
    """A captioner's words read onto the vocabulary (:func:`caption_vote`)."""

    voter: str  # "caption:MODEL"
    text: str  # the words that were read: the caption's short label, else the caption
    distribution: np.ndarray  # (c,) over the vocabulary

    @property
    def first(self) -> int:
        return int(np.argmax(self.distribution))


def caption_vote(voter: str, text: str, text_embeddings: list[np.ndarray], views: list[ClipView],
                 confidence: float | None = None) -> CaptionVote:
    """The vote of a caption's words: ``text_embeddings[k]`` is the caption embedded by CLIP k's text
    tower (with the vocabulary's templates); its logits against each CLIP's vocabulary are summed over
    the CLIPs, as a crop's are (:func:`pooled_distribution`), then softmaxed. A caption in other words
    than the vocabulary's lands on the concepts whose text is nearest. ``confidence``, the captioner's
    own probability of its answer where its back end gives one, spreads the rest of the vote evenly
    (``confidence * words + (1 - confidence) / c``): a hesitant captioner votes less."""
    if len(text_embeddings) != len(views) or not views:
        raise ValueError(f"a caption vote needs one text embedding per CLIP view, got {len(text_embeddings)} for "
                         f"{len(views)} views")
    if confidence is not None and not 0.0 <= confidence <= 1.0:
        raise ValueError(f"a caption's confidence is a probability in [0, 1], got {confidence}")
    logits = sum(v.logit_scale * (v.concepts @ np.asarray(e, dtype=v.concepts.dtype).reshape(-1))
                 for e, v in zip(text_embeddings, views))
    words = softmax(np.asarray(logits, dtype=np.float64))
    sure = 1.0 if confidence is None else float(confidence)
    return CaptionVote(voter, text, sure * words + (1.0 - sure) / len(words))


def weighted_mixture(view: ClipView) -> np.ndarray:
    """Activation-weighted mean of the patches' zero-shot distributions, shape (c,)."""
    if len(view.patches) == 0:
        return mixture(view.exemplars, view.concepts, view.logit_scale)
    return _patch_mixture([view])


def view_distribution(view: ClipView, exemplar_weight: float = MOSAIC_EXEMPLAR_WEIGHT,
                      votes: str = MOSAIC_EXEMPLAR_VOTES) -> np.ndarray:
    """One CLIP's mosaic mixture ``w P_E + (1 - w) P_G``, shape (c,)."""
    return pooled_distribution([view], exemplar_weight, votes)


def _summed_logits(views: list[ClipView], rows: str) -> np.ndarray:
    """The zero-shot logits ``s * cos`` of the views' ``rows`` (exemplars or patches), summed over the
    views, shape (n, c): the same crops read by every CLIP at once."""
    shapes = {(len(getattr(v, rows)), len(v.concepts)) for v in views}
    if len(shapes) != 1:
        raise ValueError(f"the CLIP views of a group must show the same {rows} and vocabulary, got (crops, concepts) "
                         f"{sorted(shapes)}")
    return sum(v.logit_scale * (getattr(v, rows) @ v.concepts.T) for v in views)


def pooled_distribution(views: list[ClipView], exemplar_weight: float = MOSAIC_EXEMPLAR_WEIGHT,
                        votes: str = MOSAIC_EXEMPLAR_VOTES) -> np.ndarray:
    """The mosaic mixture of several CLIPs read as one, shape (c,).

    Each crop's logits are summed over the CLIPs, so its zero-shot distribution is the product of the
    CLIPs' (a product of experts), and the mosaic's votes are then counted as for one CLIP. A CLIP
    taught a wrong name for a part reads that part's crops between two names, so its logits move
    the sum less than those of a CLIP that reads the part cleanly. Averaging the CLIPs' own vote
    mixtures instead gives each CLIP's misreading a full vote, and on the dev worlds that lost even to
    the mean cosine summed over the CLIPs (docs/label-quality.md). With one CLIP this is the
    single-CLIP mosaic score."""
    if not views:
        raise ValueError("a group needs at least one CLIP view to be labeled")
    p_e = vote_mixture(_summed_logits(views, "exemplars"), votes)
    if exemplar_weight >= 1.0 or len(views[0].patches) == 0:
        return p_e
    return exemplar_weight * p_e + (1 - exemplar_weight) * _patch_mixture(views)


def _patch_mixture(views: list[ClipView]) -> np.ndarray:
    """``P_G``, shape (c,): the activation-weighted mean of the patches' zero-shot distributions, the
    views read as one (their patches and weights are the same crops)."""
    w = views[0].patch_weights()
    return (w[:, None] * softmax(_summed_logits(views, "patches"), axis=1)).sum(0) / w.sum()


def combined_scores(views: list[ClipView], exemplar_weight: float = MOSAIC_EXEMPLAR_WEIGHT,
                    votes: str = MOSAIC_EXEMPLAR_VOTES) -> np.ndarray:
    """The pooled mosaic score of every concept, shape (c,), in nats: ``log(P + 1/c)``."""
    p = pooled_distribution(views, exemplar_weight, votes)
    return np.log(p + 1.0 / len(p))


def features(views: list[ClipView], top: int, exemplar_weight: float = MOSAIC_EXEMPLAR_WEIGHT,
             votes: str = MOSAIC_EXEMPLAR_VOTES, caption: CaptionVote | None = None) -> dict[str, float]:
    """How far each piece of evidence agrees with concept ``top`` (see the module docstring); the
    ``caption`` feature only when a caption vote is given."""
    best_e = np.concatenate([(v.exemplars @ v.concepts.T).argmax(1) for v in views if len(v.exemplars)] or [np.zeros(0, int)])
    best_p, weights = [], []
    for v in views:
        if len(v.patches):
            best_p.append((v.patches @ v.concepts.T).argmax(1))
            weights.append(v.patch_weights())
    best_p_all = np.concatenate(best_p) if best_p else best_e
    w_all = np.concatenate(weights) if weights else np.ones(len(best_e))
    soft = pooled_distribution(views, exemplar_weight, "soft")
    others = np.delete(soft, top)
    own_tops = [int(np.argmax(view_distribution(v, exemplar_weight, votes))) for v in views]
    prompt_tops = [int(np.argmax((v.exemplars @ m.T).mean(0))) for v in views if v.prompts is not None and len(v.exemplars)
                   for m in v.prompts]
    cosines = [float((v.exemplars @ v.concepts[top]).mean()) for v in views if len(v.exemplars)]
    entropy = float(-(soft * np.log(np.clip(soft, 1e-12, None))).sum() / np.log(len(soft))) if len(soft) > 1 else 0.0
    return {
        "exemplars": (int((best_e == top).sum()) + 1) / (len(best_e) + 2),
        "patches": (float(w_all[best_p_all == top].sum()) + 1) / (float(w_all.sum()) + 2),
        "margin": max(float(soft[top] - (others.max() if len(others) else 0.0)), 0.0),
        "clips": sum(t == top for t in own_tops) / len(own_tops),
        "prompts": sum(t == top for t in prompt_tops) / len(prompt_tops) if prompt_tops else 1.0,
        "split": max(split_ratio(best_e, top), split_ratio(best_p_all, top)),
        "top": float(soft[top]),
        "entropy": min(max(entropy, 0.0), 1.0),
        "cosine": float(np.clip(np.mean(cosines), 0.0, 1.0)) if cosines else 0.0,
        "single": 1.0 if len(views) == 1 else 0.0,
    } | ({"caption": float(caption.distribution[top])} if caption is not None else {})


def view_votes(views: list[ClipView], names: list[str] | tuple[str, ...],
               exemplar_weight: float = MOSAIC_EXEMPLAR_WEIGHT, votes: str = MOSAIC_EXEMPLAR_VOTES,
               caption: CaptionVote | None = None) -> list[dict[str, Any]]:
    """Each CLIP's own first choice, twice: from its mosaic (the label's rule) and from all its
    activation-weighted patches, then the caption's words. ``score`` is the concept's share of that
    voter's distribution."""
    kinds = [(f"{v.voter} {kind}", p) for v in views for kind, p in
             (("mosaic", view_distribution(v, exemplar_weight, votes)), ("patches", weighted_mixture(v)))]
    if caption is not None:
        kinds.append((f"{caption.voter} words", caption.distribution))
    out = []
    for voter, p in kinds:
        order = np.argsort(-p, kind="stable")
        second = float(p[order[1]]) if len(order) > 1 else 0.0
        out.append({"voter": voter, "text": names[int(order[0])], "score": round(float(p[order[0]]), 5),
                    "margin": round(float(p[order[0]]) - second, 5)})
    return out


@dataclass(frozen=True)
class Combination:
    """``confidence = sigmoid(b0 + sum_i b_i * feature_i)`` over :data:`FEATURES`."""

    coefficients: tuple[float, ...]
    features: tuple[str, ...] = CLIP_FEATURES
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.coefficients) != len(self.features) + 1:
            raise ValueError(f"the combination needs {len(self.features) + 1} coefficients (intercept + "
                             f"{', '.join(self.features)}), got {len(self.coefficients)}")
        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown combination features {sorted(unknown)}; known: {list(FEATURES)}")

    def probability(self, values: dict[str, float]) -> float:
        missing = [name for name in self.features if name not in values]
        if missing:
            raise ValueError(f"the combination reads {missing}, which the evidence lacks (a combination that reads "
                             "the caption judges captioned groups only: see combination_for)")
        z = self.coefficients[0] + sum(b * values[name] for b, name in zip(self.coefficients[1:], self.features))
        return float(1.0 / (1.0 + np.exp(-z)))

    def describe(self) -> str:
        terms = " + ".join(f"{b:g}*{name}" for b, name in zip(self.coefficients[1:], self.features))
        where = ", ".join(self.fitted_on.get("worlds", [])) or "?"
        return (f"logistic: sigmoid({self.coefficients[0]:g} + {terms}), fitted on the dev worlds {where}; "
                f"uncertain below {UNCERTAIN_BELOW:g}")

    def to_json(self) -> str:
        return json.dumps({"features": list(self.features), "coefficients": [round(float(b), 4) for b in self.coefficients],
                           "fitted_on": self.fitted_on}, indent=1) + "\n"

    @classmethod
    def from_file(cls, path: str | Path = COMBINATION_FILE) -> Combination:
        try:
            raw = json.loads(Path(path).read_text())
            return cls(tuple(float(b) for b in raw["coefficients"]), tuple(raw["features"]), dict(raw.get("fitted_on", {})))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read the label combination {path}: {exc}; expected JSON with 'features', "
                             "'coefficients' (intercept first) and 'fitted_on'") from None


@lru_cache(maxsize=1)
def default_combination() -> Combination:
    """The combination shipped with the labeler (``labeler/combination.json``)."""
    return Combination.from_file(COMBINATION_FILE)


@lru_cache(maxsize=1)
def captioned_combination() -> Combination:
    """The combination of captioned groups (``labeler/combination-captioned.json``): it reads the
    caption feature too."""
    return Combination.from_file(CAPTIONED_COMBINATION_FILE)


def combination_for(caption: CaptionVote | None) -> Combination:
    """The shipped combination that judges a group with (or without) a caption vote."""
    return default_combination() if caption is None else captioned_combination()


@dataclass(frozen=True)
class Verdict:
    """A group's label ranking, the probability that the first is right, and what it rests on."""

    scores: np.ndarray  # (c,) pooled mosaic score
    order: np.ndarray  # concept indices, best first
    confidence: float
    features: dict[str, float]
    votes: list[dict[str, Any]]

    @property
    def uncertain(self) -> bool:
        return is_uncertain_probability(self.confidence)


#: How many of the pooled mosaic score's best concepts the combination may choose between: the label
#: is the one of them whose evidence the combination finds likeliest right (1: the mosaic score's
#: first, unchanged). Chosen on the dev worlds by ``python -m bench.run labels`` (docs/label-quality.md):
#: once several CLIPs were read as one (``pooled_distribution``), choosing among 2 or 3 lost top-1 there.
RERANK_CANDIDATES = 1


#: Whether the caption's first concept joins the candidates the combination chooses between (the
#: captioned combination then picks the likelier right of the mosaic score's first and the caption's).
#: Chosen on the dev worlds by ``python -m bench.run captions`` (docs/label-quality.md).
CAPTION_CANDIDATE = True


def rerank(views: list[ClipView], order: np.ndarray, combination: Combination, candidates: int = RERANK_CANDIDATES,
           exemplar_weight: float = MOSAIC_EXEMPLAR_WEIGHT, votes: str = MOSAIC_EXEMPLAR_VOTES,
           caption: CaptionVote | None = None, caption_candidate: bool = CAPTION_CANDIDATE
           ) -> tuple[np.ndarray, dict[str, float], float]:
    """``order`` with the likeliest-right of its first ``candidates`` concepts (and the caption's first,
    with ``caption_candidate``) moved first (ties keep the mosaic order), that concept's features and
    probability."""
    pool = [int(k) for k in order[: max(candidates, 1)]]
    if caption is not None and caption_candidate and caption.first not in pool:
        pool.append(caption.first)
    best, best_values, best_p = int(order[0]), None, -1.0
    for k in pool:
        values = features(views, k, exemplar_weight, votes, caption)
        p = combination.probability(values)
        if p > best_p:
            best, best_values, best_p = k, values, p
    order = np.r_[best, order[order != best]] if best != int(order[0]) else order
    return order, best_values, best_p


def judge(views: list[ClipView], names: list[str] | tuple[str, ...], combination: Combination | None = None,
          exemplar_weight: float = MOSAIC_EXEMPLAR_WEIGHT, votes: str = MOSAIC_EXEMPLAR_VOTES,
          candidates: int = RERANK_CANDIDATES, caption: CaptionVote | None = None) -> Verdict:
    """Label one group from its CLIP views (and its caption's vote): ranking, calibrated confidence,
    features and votes."""
    combination = combination or combination_for(caption)
    scores = combined_scores(views, exemplar_weight, votes)
    order, values, p = rerank(views, np.argsort(-scores, kind="stable"), combination, candidates, exemplar_weight,
                              votes, caption)
    return Verdict(scores, order, round(p, 5), {k: round(v, 5) for k, v in values.items()},
                   view_votes(views, names, exemplar_weight, votes, caption))
