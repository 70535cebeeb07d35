"""``neurflow evaluate``: how good are the labels of a labeled circuit, offline.

Per group and in aggregate:

* **agreement** with reference labels (a synthetic world's part masks or a user CSV): top-1 and top-5
  accuracy, and the cosine similarity of the CLIP text embeddings of the top label and the reference;
* **held-out retrieval** (no ground truth needed; the automated form of the paper's caption test):
  the patches held out of each group at labeling time are ranked, by CLIP similarity to the group's
  label, against random patches of the run: ROC-AUC and AUPRC (chance: 0.5 and the positive share);
* **activation faithfulness** (NeuronEval): over a pool of the layer's patches, the label's presence
  (a CLIP pseudo-label: the label is among the patch's ``presence_top`` best-scoring concepts) against
  the group's activation: Pearson, AUPRC, F1, IoU, with the missing-labels and extra-labels sanity
  checks; the pool is the layer's concept patches, plus random crops of the run when activations
  come from the model;
* **calibration**: ROC-AUC of the top-label confidence against correctness, the expected
  calibration error, and the top-1 accuracy of the labels not marked uncertain (confidence at least
  ``UNCERTAIN_BELOW``) with their share of the groups, where references exist.

Group activations come from an :class:`ActivationSource`: :class:`RecordedActivations` reads what the
circuit recorded (a member neuron's activation on its own top patches, scaled by its maximum, zero on
patches outside its top list: a lower bound that needs no model), :class:`ModelActivations` runs the
model on the patches (exact; ``--weights`` on the command line).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np
import torch

from neurflow.core.circuit import Circuit, Exemplar, Group
from neurflow.labeler.clip_model import ClipModel, load_clip
from neurflow.labeler.evaluation import metrics as M
from neurflow.labeler.evaluation.reference import References, matches
from neurflow.labeler.evidence import UNCERTAIN_BELOW
from neurflow.labeler.labeling import PatchEmbedder
from neurflow.labeler.patches import PatchLoader, all_concept_patches, patch_key, random_boxes, reference_pool
from neurflow.labeler.scoring import concept_votes
from neurflow.labeler.vocabulary import load_templates, load_vocabulary
from neurflow.progress import Meter, Progress


@dataclass(frozen=True)
class EvaluationOptions:
    source: str = "clip"  # which labels to evaluate: "clip" or "caption"
    negatives: int = 200  # random run patches ranked against each group's held-out patches
    faithfulness_pool: int = 400  # random run patches added to the layer's concept patches
    presence_top: int = 1  # a concept is present in a patch when it ranks in the patch's top-m
    activation_top_fraction: float = 0.2  # a group is "on" for its top 20 % of the pool (F1, IoU)
    seed: int = 0


class ActivationSource(Protocol):
    name: str
    knows_any_patch: bool  # False: only the circuit's own top patches have a known activation

    def group_activation(self, circuit: Circuit, layer_index: int, group: Group, patches: list[Exemplar]) -> np.ndarray: ...


class RecordedActivations:
    """Activations the circuit recorded for its top patches; zero elsewhere (no model needed)."""

    name = "recorded"
    knows_any_patch = False

    def group_activation(self, circuit, layer_index, group, patches):
        layer = circuit.layers[layer_index]
        neurons = {n.id: n for n in layer.neurons}
        members = list(dict.fromkeys(m.neuron for m in group.members if m.neuron in neurons))
        out = np.zeros(len(patches))
        for nid in members:
            recorded = {}
            for concept in neurons[nid].concepts:
                for ex in concept.patches or concept.exemplars:
                    recorded[patch_key(ex)] = max(recorded.get(patch_key(ex), 0.0), ex.activation)
            peak = max(recorded.values(), default=0.0)
            if peak > 0:
                out += np.array([recorded.get(patch_key(p), 0.0) / peak for p in patches])
        return out / max(len(members), 1)


class ModelActivations:
    """Runs the model on each patch (resized to the model input, as the engine does) and reads the
    group's member neurons at its layer: mean over members of activation / member's pool maximum."""

    name = "model"
    knows_any_patch = True

    def __init__(self, model: torch.nn.Module, loader: PatchLoader, input_size: int, mean, std, batch_size: int = 64):
        from neurflow.core.images import Preprocess

        self.model = model.eval()
        self.loader = loader
        self.preprocess = Preprocess(input_size, mean, std)
        self.input_size = input_size
        self.batch_size = batch_size
        self._cache: dict[tuple, np.ndarray] = {}

    def _layer_readouts(self, layer_name: str, patches: list[Exemplar]) -> np.ndarray:
        from neurflow.core.layer_access import LayerAccess

        key = (layer_name, tuple(patch_key(p) for p in patches))
        if key not in self._cache:
            access = LayerAccess(self.model, [layer_name])
            rows = []
            with torch.inference_mode():
                for start in range(0, len(patches), self.batch_size):
                    crops = [self.loader.crop(p).resize((self.input_size, self.input_size)) for p in patches[start : start + self.batch_size]]
                    x = torch.stack([self.preprocess.normalise(self.preprocess.pixels(c)) for c in crops])
                    rows.append(access.readouts(x, [layer_name])[layer_name].float().cpu().numpy())
            self._cache = {key: np.concatenate(rows)}  # one layer pool at a time is enough
        return self._cache[key]

    def group_activation(self, circuit, layer_index, group, patches):
        acts = self._layer_readouts(circuit.layers[layer_index].name, patches)
        members = list(dict.fromkeys(m.neuron for m in group.members))
        cols = acts[:, members]
        peak = np.maximum(cols.max(axis=0), 1e-12)
        return (np.maximum(cols, 0) / peak).mean(axis=1)


def _labels_of(group: Group, source: str) -> list[str]:
    return [lab.text for lab in group.labels if lab.source == source]


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def evaluate_circuit(
    circuit: Circuit,
    patches_source: str | Path,
    references: References | None = None,
    *,
    clip: ClipModel | None = None,
    activations: ActivationSource | None = None,
    options: EvaluationOptions = EvaluationOptions(),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The evaluation report of a labeled circuit (see module docstring)."""
    labeling = circuit.labeling
    if not any(g.labels for _, _, g in circuit.iter_groups()):
        raise ValueError("the circuit has no labels; label it first (neurflow label CIRCUIT --clip-model ...)")
    if clip is None:
        if labeling is None:
            raise ValueError("the circuit does not record which CLIP model labeled it; pass one explicitly")
        clip = load_clip(labeling.settings.clip)
    templates = load_templates(labeling.templates if labeling else "builtin:default")
    vocabulary = load_vocabulary(labeling.settings.vocabulary if labeling else "builtin:general")
    report = Meter(progress)
    loader = PatchLoader(circuit, Path(patches_source))
    embed = PatchEmbedder(clip, loader)
    activations = activations or RecordedActivations()

    reference_emb = embed(reference_pool(circuit, labeling.reference_patches if labeling else 256,
                                         labeling.settings.seed if labeling else 0))
    negatives = random_boxes(circuit, options.negatives, options.seed + 17)
    negative_emb = embed(negatives)
    holdout = labeling.holdout if labeling else {}

    # The faithfulness pool of each layer: its concepts' top patches and random patches of the run.
    concept_patches = all_concept_patches(circuit)
    random_pool = random_boxes(circuit, options.faithfulness_pool, options.seed + 29)
    pools: dict[int, tuple[list[Exemplar], np.ndarray]] = {}

    groups_out = []
    all_groups = list(circuit.iter_groups())
    for done, (layer_index, layer, group) in enumerate(all_groups):
        texts = _labels_of(group, options.source)
        row: dict[str, Any] = {"id": group.id, "layer": layer.name, "label": texts[0] if texts else None}
        if options.source == "clip":
            row["confidence"] = group.confidence
        if not texts:
            groups_out.append(row)
            continue
        label_emb = clip.embed_concepts([texts[0]], templates)[0]

        # -- agreement with references ---------------------------------------------------------
        refs = references.labels.get(group.id, []) if references else []
        if refs:
            row["reference"] = refs
            row["top1"] = matches(texts[0], refs)
            row["top5"] = any(matches(t, refs) for t in texts[:5])
            ref_emb = clip.embed_concepts(refs, templates)
            row["text_similarity"] = float((ref_emb @ label_emb).max())

        # -- held-out retrieval ----------------------------------------------------------------
        held = [Exemplar(image=b[0], box=list(b[1:5]), activation=0.0) for b in holdout.get(group.id, [])]
        if held:
            pos = embed(held) @ label_emb
            neg = negative_emb @ label_emb
            y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
            s = np.r_[pos, neg]
            row["retrieval"] = {"auc": M.roc_auc(y, s), "auprc": M.average_precision(y, s), "n_heldout": len(held), "n_random": len(neg),
                                "chance_auprc": len(pos) / len(y)}

        # -- activation faithfulness -----------------------------------------------------------
        if layer_index not in pools:
            layer_keys = {patch_key(p) for n in layer.neurons for c in n.concepts for p in (c.patches or c.exemplars)}
            pool = [p for p in concept_patches if patch_key(p) in layer_keys]
            # Random crops only where their activation is known: a crop outside every top list may
            # still fire a neuron, so recorded activations cannot rate it.
            pool += random_pool if activations.knows_any_patch else []
            pools[layer_index] = (pool, embed(pool))
        pool, pool_emb = pools[layer_index]
        if len(pool) >= 8:
            presence = _presence(pool_emb, reference_emb, vocabulary_matrix(clip, vocabulary, templates), label_emb, clip.logit_scale, options.presence_top)
            act = activations.group_activation(circuit, layer_index, group, pool)
            checks = M.sanity_checks(act, presence, M.faithfulness_metrics(options.activation_top_fraction), seed=options.seed)
            row["faithfulness"] = {"source": activations.name, "n_pool": len(pool), "n_present": int(presence.sum()), "metrics": checks}
        groups_out.append(row)
        report("evaluate", done + 1, len(all_groups), "groups")

    return {
        "circuit": {"target": circuit.target.class_index, "name": circuit.target.name, "n_groups": len(all_groups)},
        "labeling": {"clip": msgspec.to_builtins(labeling.clip), "vocabulary": msgspec.to_builtins(labeling.vocabulary),
                     "score": labeling.settings.score, "top_k": labeling.settings.top_k} if labeling else {},
        "source": options.source,
        "references": references.source if references else None,
        "options": asdict(options),
        "aggregate": aggregate(groups_out),
        "groups": groups_out,
    }


def vocabulary_matrix(clip: ClipModel, vocabulary, templates) -> np.ndarray:
    return clip.vocabulary_matrix(vocabulary, templates)


def _presence(pool_emb, reference_emb, concepts, label_emb, logit_scale, top: int) -> np.ndarray:
    """True where the label is among a patch's ``top`` concepts by per-patch PMI against the run."""
    matrix = np.concatenate([concepts, label_emb[None]])  # the label last (it may not be in the vocabulary)
    duplicate = np.flatnonzero(np.isclose(concepts @ label_emb, 1.0, atol=1e-5))
    votes = concept_votes(pool_emb, matrix, logit_scale)
    prior = concept_votes(reference_emb, matrix, logit_scale).mean(axis=0)
    eps = 1.0 / len(matrix)
    pmi = np.log(votes + eps) - np.log(prior + eps)
    if len(duplicate):  # the label is a vocabulary entry: do not let its twin push it down a rank
        pmi[:, duplicate] = -np.inf
    label_score = pmi[:, -1]
    rank = (pmi[:, :-1] > label_score[:, None]).sum(axis=1)
    return rank < top


def aggregate(groups: list[dict[str, Any]]) -> dict[str, Any]:
    with_ref = [g for g in groups if "top1" in g]
    out: dict[str, Any] = {"n_groups": len(groups), "n_labeled": sum(1 for g in groups if g.get("label"))}
    out["n_with_reference"] = len(with_ref)
    out["top1_accuracy"] = _mean([float(g["top1"]) for g in with_ref])
    out["top5_accuracy"] = _mean([float(g["top5"]) for g in with_ref])
    out["text_similarity"] = _mean([g["text_similarity"] for g in with_ref])
    retr = [g["retrieval"] for g in groups if "retrieval" in g]
    out["retrieval_auc"] = _mean([r["auc"] for r in retr])
    out["retrieval_auprc"] = _mean([r["auprc"] for r in retr])
    out["retrieval_chance_auprc"] = _mean([r["chance_auprc"] for r in retr])
    faith = [g["faithfulness"]["metrics"] for g in groups if "faithfulness" in g]
    for name in M.TRUSTED:
        out[f"faithfulness_{name}"] = _mean([f[name]["value"] for f in faith])
        decided = [f[name]["passes"] for f in faith if f[name]["passes"] is not None]
        out[f"sanity_pass_rate_{name}"] = _mean([float(p) for p in decided])
    scored = [g for g in with_ref if g.get("confidence") is not None]
    if scored:
        correct = [bool(g["top1"]) for g in scored]
        conf = [g["confidence"] for g in scored]
        out["calibration_auc"] = M.roc_auc(correct, conf)
        out["calibration_ece"] = M.expected_calibration_error(conf, correct)
        out["mean_confidence"] = _mean(conf)
        # what a user who trusts only the labels not marked uncertain gets, and how many that is
        sure = [c for c, p in zip(correct, conf) if p >= UNCERTAIN_BELOW]
        out["confident_top1_accuracy"] = _mean([float(c) for c in sure])
        out["confident_coverage"] = len(sure) / len(scored)
    return out


# -- tables ------------------------------------------------------------------------------------

AGGREGATE_ROWS = [
    ("groups labeled", "n_labeled", "{:.0f}"),
    ("groups with reference", "n_with_reference", "{:.0f}"),
    ("top-1 accuracy", "top1_accuracy", "{:.3f}"),
    ("top-5 accuracy", "top5_accuracy", "{:.3f}"),
    ("text similarity", "text_similarity", "{:.3f}"),
    ("held-out retrieval AUC", "retrieval_auc", "{:.3f}"),
    ("held-out retrieval AUPRC", "retrieval_auprc", "{:.3f}"),
    ("  (chance AUPRC)", "retrieval_chance_auprc", "{:.3f}"),
    ("faithfulness Pearson", "faithfulness_pearson", "{:.3f}"),
    ("faithfulness AUPRC", "faithfulness_auprc", "{:.3f}"),
    ("faithfulness F1", "faithfulness_f1", "{:.3f}"),
    ("faithfulness IoU", "faithfulness_iou", "{:.3f}"),
    ("sanity checks passed (Pearson)", "sanity_pass_rate_pearson", "{:.2f}"),
    ("sanity checks passed (AUPRC)", "sanity_pass_rate_auprc", "{:.2f}"),
    ("calibration ROC-AUC", "calibration_auc", "{:.3f}"),
    ("calibration ECE", "calibration_ece", "{:.3f}"),
    ("mean confidence", "mean_confidence", "{:.3f}"),
    ("top-1 of confident labels", "confident_top1_accuracy", "{:.3f}"),
    ("  (their share of groups)", "confident_coverage", "{:.3f}"),
]


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def format_report(report: dict[str, Any], title: str | None = None) -> str:
    lines = [title or f"label evaluation ({report['source']} labels, references: {report['references'] or 'none'})"]
    width = max(len(name) for name, _, _ in AGGREGATE_ROWS)
    for name, key, pattern in AGGREGATE_ROWS:
        lines.append(f"  {name:<{width}}  {_fmt(report['aggregate'].get(key), pattern)}")
    lines.append("")
    lines.append(f"  {'group':<8} {'label':<22} {'reference':<18} {'top1':>4} {'conf':>5} {'ret.AUC':>7} {'faith.r':>7}")
    for g in report["groups"]:
        ref = ",".join(g.get("reference", []))[:18]
        top1 = "-" if "top1" not in g else ("yes" if g["top1"] else "no")
        auc = (g.get("retrieval") or {}).get("auc")
        r = ((g.get("faithfulness") or {}).get("metrics") or {}).get("pearson", {}).get("value")
        lines.append(
            f"  {g['id']:<8} {str(g.get('label'))[:22]:<22} {ref:<18} {top1:>4} {_fmt(g.get('confidence'), '{:.2f}'):>5} "
            f"{_fmt(auc, '{:.3f}'):>7} {_fmt(r, '{:.3f}'):>7}"
        )
    return "\n".join(lines)


def format_comparison(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> str:
    width = max(len(name) for name, _, _ in AGGREGATE_ROWS)
    head = f"  {'':<{width}}  {names[0][:24]:>24}  {names[1][:24]:>24}"
    lines = ["label evaluation, side by side", head]
    for name, key, pattern in AGGREGATE_ROWS:
        lines.append(f"  {name:<{width}}  {_fmt(a['aggregate'].get(key), pattern):>24}  {_fmt(b['aggregate'].get(key), pattern):>24}")
    ga = {g["id"]: g for g in a["groups"]}
    gb = {g["id"]: g for g in b["groups"]}
    shared = [gid for gid in ga if gid in gb]
    if shared:
        lines += ["", f"  {'group':<8} {'A label':<24} {'B label':<24} {'reference':<18}"]
        for gid in shared:
            ref = ",".join(ga[gid].get("reference") or gb[gid].get("reference") or [])[:18]
            lines.append(f"  {gid:<8} {str(ga[gid].get('label'))[:24]:<24} {str(gb[gid].get('label'))[:24]:<24} {ref:<18}")
    return "\n".join(lines)
