"""``build_atlas``: the atlas document from the circuits of several classes of one model.

Inputs are :class:`AtlasInput` (a circuit with its id and class name), so the same function serves
files on disk (the CLI), a job's stored circuits (the API) and whatever else produces circuits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import msgspec

from neurflow.atlas.concepts import cluster_sets, cohesion, core_neurons, jaccard
from neurflow.atlas.document import (SCHEMA_VERSION, Atlas, AtlasClass, AtlasGroup, AtlasLayer, AtlasSettings,
                                     AtlasSource, Cell, GroupRef, LabelCount, NeuronUse, RecurringLabel, SharedConcept,
                                     SharedSubcircuit, SubcircuitLink)
from neurflow.core.circuit import Circuit, ClipSettings, Layer

#: what has to agree for two circuits to be "of the same model"
MODEL_FIELDS = ("arch", "weights_sha256", "num_classes", "input_size")


@dataclass
class AtlasInput:
    circuit: Circuit
    circuit_id: str | None = None  # the service's circuit id, or the file it came from
    class_name: str | None = None  # overrides circuit.target.name


def check_same_model(inputs: Sequence[AtlasInput]) -> None:
    """``ValueError`` naming the first circuit whose model differs from the first one's."""
    first = inputs[0]
    for other in inputs[1:]:
        diff = [f"{f} {getattr(first.circuit.model, f)!r} vs {getattr(other.circuit.model, f)!r}"
                for f in MODEL_FIELDS if getattr(first.circuit.model, f) != getattr(other.circuit.model, f)]
        if diff:
            raise ValueError(f"an atlas needs circuits of one model; circuit {_name(other)} differs from "
                             f"circuit {_name(first)}: {', '.join(diff)}")


def _name(entry: AtlasInput) -> str:
    return f"{entry.circuit_id or '?'} (class {entry.circuit.target.class_index})"


def check_inputs(inputs: Sequence[AtlasInput]) -> None:
    if not inputs:
        raise ValueError("an atlas needs at least one circuit; none were given")
    check_same_model(inputs)
    seen: dict[int, AtlasInput] = {}
    for entry in inputs:
        k = entry.circuit.target.class_index
        if k in seen:
            raise ValueError(f"class {k} appears twice (circuits {seen[k].circuit_id or '?'} and "
                             f"{entry.circuit_id or '?'}); an atlas holds one circuit per class")
        seen[k] = entry


def group_importance(layer: Layer) -> dict[str, float]:
    """Group id -> the mean importance of its member neurons over the layer's most important neuron (0..1)."""
    importance = {n.id: n.importance for n in layer.neurons}
    top = max(importance.values(), default=0.0)
    out = {}
    for g in layer.groups:
        neurons = {m.neuron for m in g.members}
        mean = sum(importance.get(n, 0.0) for n in neurons) / len(neurons) if neurons else 0.0
        out[g.id] = round(mean / top, 6) if top > 0 else 0.0
    return out


def _group_rows(circuit: Circuit) -> dict[str, list[AtlasGroup]]:
    """Layer name -> the circuit's groups in it, as atlas groups (concepts filled in later)."""
    rows: dict[str, list[AtlasGroup]] = {}
    for layer in circuit.layers:
        importance = group_importance(layer)
        rows[layer.name] = [AtlasGroup(id=g.id, layer=layer.name, labels=[lab.text for lab in g.labels],
                                       confidence=g.confidence, neurons=sorted({m.neuron for m in g.members}),
                                       importance=importance[g.id]) for g in layer.groups]
    return rows


def _layer_order(circuits: Sequence[Circuit]) -> list[str]:
    order: list[str] = []
    for c in circuits:
        order.extend(layer.name for layer in c.layers if layer.name not in order)
    return order


def _top_label(group: AtlasGroup) -> str | None:
    return group.labels[0].strip().casefold() if group.labels and group.labels[0].strip() else None


class _LayerBuilder:
    """Shared concepts, recurring labels and shared neurons of one layer."""

    def __init__(self, name: str, index: int, settings: AtlasSettings) -> None:
        self.name, self.index, self.settings = name, index, settings
        self.groups: list[tuple[int, AtlasGroup]] = []  # (class index, group)
        self.neurons: dict[int, dict[int, float]] = defaultdict(dict)  # neuron -> class -> importance

    def add(self, class_index: int, layer: Layer, groups: list[AtlasGroup]) -> None:
        self.groups.extend((class_index, g) for g in groups)
        for n in layer.neurons:
            self.neurons[n.id][class_index] = n.importance

    def concepts(self) -> list[SharedConcept]:
        sets = [g.neurons for _, g in self.groups]
        found = []
        for cluster in cluster_sets(sets, self.settings.jaccard):
            classes = sorted({self.groups[i][0] for i in cluster})
            if len(classes) >= self.settings.min_classes:
                found.append(cluster)
        found.sort(key=lambda c: (-len({self.groups[i][0] for i in c}), -len(c), c[0]))
        concepts = []
        for k, cluster in enumerate(found):
            concept_id = f"{self.index}c{k}"
            members = [self.groups[i] for i in cluster]
            for _, g in members:
                g.concept = concept_id
            counts: dict[str, int] = defaultdict(int)
            for _, g in members:
                if (text := _top_label(g)) is not None:
                    counts[text] += 1
            labels = [LabelCount(text=t, count=n) for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
            neuron_sets = [g.neurons for _, g in members]
            concepts.append(SharedConcept(
                id=concept_id, layer=self.name, label=labels[0].text if labels else None, labels=labels,
                classes=sorted({c for c, _ in members}), groups=[GroupRef(class_index=c, group=g.id) for c, g in members],
                neurons=sorted({n for s in neuron_sets for n in s}), core=core_neurons(neuron_sets),
                cohesion=round(cohesion(neuron_sets), 6)))
        return concepts

    def recurring_labels(self) -> list[RecurringLabel]:
        by_text: dict[str, list[tuple[int, AtlasGroup]]] = defaultdict(list)
        for c, g in self.groups:
            if (text := _top_label(g)) is not None:
                by_text[text].append((c, g))
        out = []
        for text, members in by_text.items():
            classes = sorted({c for c, _ in members})
            if len(classes) >= self.settings.min_classes:
                out.append(RecurringLabel(text=text, classes=classes,
                                          groups=[GroupRef(class_index=c, group=g.id) for c, g in members],
                                          concepts=sorted({g.concept for _, g in members if g.concept})))
        return sorted(out, key=lambda r: (-len(r.classes), r.text))

    def shared_neurons(self) -> tuple[list[NeuronUse], int]:
        concepts_of: dict[int, set[str]] = defaultdict(set)
        for _, g in self.groups:
            if g.concept:
                for n in g.neurons:
                    concepts_of[n].add(g.concept)
        rows = []
        for neuron, by_class in self.neurons.items():
            if len(by_class) >= self.settings.min_classes:
                classes = sorted(by_class)
                rows.append(NeuronUse(neuron=neuron, classes=classes,
                                      importance=[round(by_class[c], 6) for c in classes],
                                      concepts=sorted(concepts_of.get(neuron, ()))))
        rows.sort(key=lambda r: (-len(r.classes), -sum(r.importance) / len(r.importance), r.neuron))
        keep = self.settings.max_neurons
        return rows[:keep], max(0, len(rows) - keep)


def _cells(classes: list[AtlasClass], concepts: dict[str, SharedConcept]) -> list[Cell]:
    cells = []
    order = {cid: i for i, cid in enumerate(concepts)}
    for entry in classes:
        by_concept: dict[str, list[AtlasGroup]] = defaultdict(list)
        for g in entry.groups:
            if g.concept:
                by_concept[g.concept].append(g)
        for cid in sorted(by_concept, key=order.get):
            core = concepts[cid].core
            groups = by_concept[cid]
            cells.append(Cell(class_index=entry.class_index, concept=cid, groups=[g.id for g in groups],
                              strength=round(max(jaccard(g.neurons, core) for g in groups), 6),
                              importance=round(max(g.importance for g in groups), 6)))
    return cells


def _concept_links(circuit: Circuit, concept_of: dict[str, str]) -> dict[tuple[str, str], tuple[float, list[str]]]:
    """(upper concept, lower concept) -> (relative strength, [upper group, lower group]) of the
    circuit's strongest positive group edge between groups of those two concepts.

    An edge's strength is its weight over the strongest positive edge leaving the same layer of this
    circuit, so circuits of different sizes and scales compare."""
    layer_of = {g.id: i for i, _, g in circuit.iter_groups()}
    top: dict[int, float] = defaultdict(float)
    for e in circuit.group_edges:
        if e.weight > 0 and e.source in layer_of:
            top[layer_of[e.source]] = max(top[layer_of[e.source]], e.weight)
    links: dict[tuple[str, str], tuple[float, list[str]]] = {}
    for e in circuit.group_edges:
        upper, lower = concept_of.get(e.source), concept_of.get(e.target)
        if e.weight <= 0 or upper is None or lower is None:
            continue
        strength = e.weight / top[layer_of[e.source]]
        if (upper, lower) not in links or strength > links[(upper, lower)][0]:
            links[(upper, lower)] = (strength, [e.source, e.target])
    return links


def _depth(links: list[SubcircuitLink], layer_of: dict[str, int]) -> int:
    """Layers spanned by the longest chain of links (a link joins a concept to one a layer down)."""
    longest: dict[str, int] = {}  # concept -> layers in the longest chain ending at it
    for link in sorted(links, key=lambda x: layer_of[x.upper]):
        longest[link.lower] = max(longest.get(link.lower, 0), longest.get(link.upper, 1) + 1)
    return max(longest.values(), default=0)


def _subcircuits(inputs: Sequence[AtlasInput], classes: list[AtlasClass], concepts: dict[str, SharedConcept],
                 layer_names: list[str], settings: AtlasSettings) -> tuple[list[SharedSubcircuit], int]:
    per_class: dict[int, dict[tuple[str, str], tuple[float, list[str]]]] = {}
    for entry, row in zip(inputs, classes):
        concept_of = {g.id: g.concept for g in row.groups if g.concept}
        per_class[row.class_index] = _concept_links(entry.circuit, concept_of)
    users: dict[tuple[str, str], list[int]] = defaultdict(list)
    for k in sorted(per_class):
        for key in per_class[k]:
            users[key].append(k)
    pairs: dict[tuple[int, int], list[SubcircuitLink]] = defaultdict(list)
    for key, ks in users.items():
        for a, b in combinations(ks, 2):
            sa, ga = per_class[a][key]
            sb, gb = per_class[b][key]
            pairs[(a, b)].append(SubcircuitLink(upper=key[0], lower=key[1], groups_a=ga, groups_b=gb,
                                                strength=round(min(sa, sb), 6)))
    layer_index = {name: i for i, name in enumerate(layer_names)}
    concept_layer = {cid: layer_index[c.layer] for cid, c in concepts.items()}
    uses = {row.class_index: {g.concept for g in row.groups if g.concept} for row in classes}
    out = []
    for (a, b), links in pairs.items():
        links.sort(key=lambda x: (concept_layer[x.upper], -x.strength, x.upper, x.lower))
        touched = sorted({concept_layer[x.upper] for x in links} | {concept_layer[x.lower] for x in links})
        out.append(SharedSubcircuit(
            a=a, b=b, score=round(sum(x.strength for x in links), 6), layers=[layer_names[i] for i in touched],
            depth=_depth(links, concept_layer), links=links,
            shared_concepts=sorted(uses[a] & uses[b], key=lambda c: (concept_layer[c], c))))
    out.sort(key=lambda s: (-s.score, -s.depth, s.a, s.b))
    return out[:settings.max_pairs], max(0, len(out) - settings.max_pairs)


def _labeling_source(inputs: Sequence[AtlasInput]) -> tuple[int, ClipSettings | None, list[str], list[str]]:
    labeled = [e.circuit.labeling for e in inputs if e.circuit.labeling is not None]
    warnings = []
    clips = {msgspec.json.encode(lab.settings.clip) for lab in labeled}
    clip, templates = None, []
    if len(clips) == 1:
        clip, templates = labeled[0].settings.clip, list(labeled[0].templates)
    elif len(clips) > 1:
        warnings.append(f"the circuits were labeled by {len(clips)} different CLIP models; their labels may "
                        "not compare, and semantic search is off")
    if labeled and len(labeled) < len(inputs):
        warnings.append(f"{len(inputs) - len(labeled)} of {len(inputs)} circuits are unlabeled: only neuron "
                        "overlap finds their concepts")
    return len(labeled), clip, templates, warnings


def build_atlas(inputs: Sequence[AtlasInput], settings: AtlasSettings | None = None, *, job: str | None = None) -> Atlas:
    """The atlas of ``inputs`` (circuits of one model, one per class); ``ValueError`` when they are
    not of one model, a class repeats, or there are none."""
    settings = settings or AtlasSettings()
    inputs = sorted(inputs, key=lambda e: e.circuit.target.class_index)
    check_inputs(inputs)
    layer_names = _layer_order([e.circuit for e in inputs])
    builders = {name: _LayerBuilder(name, i, settings) for i, name in enumerate(layer_names)}
    classes = []
    warnings = []
    for entry in inputs:
        c = entry.circuit
        rows = _group_rows(c)
        for layer in c.layers:
            builders[layer.name].add(c.target.class_index, layer, rows[layer.name])
        missing = [n for n in layer_names if n not in rows]
        if missing:
            warnings.append(f"circuit {_name(entry)} has no layer {', '.join(missing)}")
        classes.append(AtlasClass(class_index=c.target.class_index, name=entry.class_name or c.target.name,
                                  circuit_id=entry.circuit_id, n_groups=sum(len(v) for v in rows.values()),
                                  groups=[g for name in layer_names for g in rows.get(name, [])]))
    layers, concepts = [], {}
    for name in layer_names:
        b = builders[name]
        layer_concepts = b.concepts()  # first: fills AtlasGroup.concept, which the rest read
        neurons, omitted = b.shared_neurons()
        concepts.update((c.id, c) for c in layer_concepts)
        layers.append(AtlasLayer(name=name, index=b.index, n_groups=len(b.groups),
                                 n_grouped=sum(1 for _, g in b.groups if g.concept), concepts=layer_concepts,
                                 labels=b.recurring_labels(), neurons=neurons, neurons_omitted=omitted))
    subcircuits, pairs_omitted = _subcircuits(inputs, classes, concepts, layer_names, settings)
    n_labeled, clip, templates, label_warnings = _labeling_source(inputs)
    return Atlas(schema=SCHEMA_VERSION, model=inputs[0].circuit.model, settings=settings,
                 source=AtlasSource(circuits=len(inputs), labeled=n_labeled, job=job, clip=clip, templates=templates),
                 classes=classes, layers=layers, matrix=_cells(classes, concepts), subcircuits=subcircuits,
                 subcircuits_omitted=pairs_omitted, warnings=warnings + label_warnings)
