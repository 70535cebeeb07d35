"""The atlas document (``neurflow.atlas/1``): a model-level view of a set of circuits of one model.

One circuit explains one class. An atlas reads the circuits of many classes of the same model and
answers, per layer, what recurs across them:

* ``layers[].concepts``: *shared concepts*, groups of different classes whose member-neuron sets
  overlap (Jaccard at or above ``settings.jaccard``, clustered with average linkage), each with the
  classes that use it and its most common label;
* ``layers[].labels``: top-label texts that recur in groups of several classes;
* ``layers[].neurons``: core neurons that serve several classes;
* ``subcircuits``: pairs of classes that share a sub-circuit (the same two shared concepts on two
  connected layers, linked by a positive group edge in both circuits), scored;
* ``matrix``: one cell per (class, shared concept) it uses: the class-by-concept matrix the viewer draws;
* ``classes[].groups``: every group of every class with its labels, neurons and shared concept (the
  search index: :func:`neurflow.atlas.query.search`).

Ids: a shared concept is ``"{layer index}c{k}"``, numbered per layer from the concept used by the most
classes; a group is named by its class and its id in that class's circuit (``class_index``, ``group``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from neurflow.core.circuit import ClipSettings, ModelInfo
from neurflow.core.documents import Document

SCHEMA_VERSION = "neurflow.atlas/1"


class AtlasSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How the atlas was built; every threshold the document's lists depend on."""

    #: two groups are the same concept when |A ∩ B| / |A ∪ B| of their member-neuron sets is at least this
    jaccard: Annotated[float, Meta(gt=0, le=1)] = 0.5
    #: a concept, a label or a neuron is listed when this many classes use it
    min_classes: Annotated[int, Meta(ge=2)] = 2
    #: the strongest class pairs kept in ``subcircuits`` (the rest are counted in ``subcircuits_omitted``)
    max_pairs: Annotated[int, Meta(ge=1, le=100_000)] = 500
    #: the neurons kept per layer in ``layers[].neurons`` (most classes first; the rest are counted)
    max_neurons: Annotated[int, Meta(ge=1, le=100_000)] = 200


class AtlasGroup(msgspec.Struct, forbid_unknown_fields=True):
    """One group of one class's circuit, as the atlas sees it."""

    id: str  # the group id in its circuit
    layer: str
    labels: list[str]  # label texts, best first (may be empty: unlabeled)
    confidence: float | None
    neurons: list[int]  # distinct member neurons, ascending
    importance: float  # mean importance of its member neurons, relative to the layer's most important (0..1)
    concept: str | None = None  # the shared concept it belongs to, if any


class AtlasClass(msgspec.Struct, forbid_unknown_fields=True):
    class_index: int
    name: str | None
    circuit_id: str | None  # the circuit's id in the service (or the file it was read from)
    n_groups: int
    groups: list[AtlasGroup]


class GroupRef(msgspec.Struct, forbid_unknown_fields=True):
    class_index: int
    group: str


class LabelCount(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    count: int  # groups of the concept whose top label this is


class SharedConcept(msgspec.Struct, forbid_unknown_fields=True):
    """Groups of several classes in one layer with overlapping member neurons."""

    id: str
    layer: str
    label: str | None  # the most common top label of its groups (None when none is labeled)
    labels: list[LabelCount]  # every top label of its groups, most common first
    classes: list[int]  # ascending
    groups: list[GroupRef]
    neurons: list[int]  # union of the groups' member neurons
    core: list[int]  # neurons in at least half of its groups
    cohesion: float  # mean pairwise Jaccard of its groups' neuron sets


class RecurringLabel(msgspec.Struct, forbid_unknown_fields=True):
    """A top-label text (case-folded) found in groups of several classes of one layer."""

    text: str
    classes: list[int]
    groups: list[GroupRef]
    concepts: list[str]  # shared concepts those groups belong to (empty: the label recurs, the neurons do not)


class NeuronUse(msgspec.Struct, forbid_unknown_fields=True):
    """A core neuron of several classes' circuits in one layer."""

    neuron: int
    classes: list[int]  # ascending
    importance: list[float]  # its importance in each of those circuits, in the order of ``classes``
    concepts: list[str]  # shared concepts whose groups contain it


class AtlasLayer(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    index: int  # position from the output down, as in the circuits
    n_groups: int  # groups of all classes in this layer
    n_grouped: int  # of those, groups that belong to a shared concept
    concepts: list[SharedConcept]
    labels: list[RecurringLabel]
    neurons: list[NeuronUse]
    neurons_omitted: int = 0  # neurons of several classes beyond ``settings.max_neurons``


class Cell(msgspec.Struct, forbid_unknown_fields=True):
    """A class uses a shared concept. ``strength``: the best Jaccard of its groups there with the
    concept's core neurons (0..1); ``importance``: those groups' best relative importance (0..1)."""

    class_index: int
    concept: str
    groups: list[str]
    strength: float
    importance: float


class SubcircuitLink(msgspec.Struct, forbid_unknown_fields=True):
    """Two shared concepts on connected layers, linked in both circuits of a pair."""

    upper: str  # shared concept id (upper layer)
    lower: str  # shared concept id (next layer down)
    groups_a: list[str]  # [upper group, lower group] in class a's circuit (its strongest such edge)
    groups_b: list[str]
    strength: float  # min over the two circuits of the edge weight relative to that circuit's strongest edge there


class SharedSubcircuit(msgspec.Struct, forbid_unknown_fields=True):
    """Two classes whose circuits share linked concepts on at least two connected layers."""

    a: int  # class index (a < b)
    b: int
    score: float  # sum of the links' strengths
    layers: list[str]  # layers the links touch, from the output down
    depth: int  # layers spanned by the longest chain of links
    links: list[SubcircuitLink]
    shared_concepts: list[str]  # every shared concept both classes use (linked or not)


class AtlasSource(msgspec.Struct, forbid_unknown_fields=True):
    """Where the atlas's circuits came from, and how they were labeled (what semantic search needs)."""

    circuits: int
    labeled: int  # circuits with a labeling record
    job: str | None = None
    clip: ClipSettings | None = None  # the CLIP that labeled them, when every labeled circuit used the same one
    templates: list[str] = []  # that labeling's prompt ensemble


class Atlas(Document, forbid_unknown_fields=True):
    schema: str
    model: ModelInfo
    settings: AtlasSettings
    source: AtlasSource
    classes: list[AtlasClass]  # ascending class index
    layers: list[AtlasLayer]  # from the output down
    matrix: list[Cell]  # by class, then by concept order
    subcircuits: list[SharedSubcircuit]  # highest score first
    subcircuits_omitted: int = 0
    warnings: list[str] = []

    SCHEMA: ClassVar[str] = SCHEMA_VERSION
    KIND: ClassVar[str] = "atlas"

    # -- navigation ------------------------------------------------------------------------------
    def concept(self, concept_id: str) -> SharedConcept:
        for layer in self.layers:
            for concept in layer.concepts:
                if concept.id == concept_id:
                    return concept
        raise KeyError(f"no shared concept {concept_id!r} in this atlas")

    def concepts(self) -> list[SharedConcept]:
        return [c for layer in self.layers for c in layer.concepts]

    def klass(self, class_index: int) -> AtlasClass:
        for entry in self.classes:
            if entry.class_index == class_index:
                return entry
        raise KeyError(f"no class {class_index} in this atlas; it holds {[c.class_index for c in self.classes]}")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the atlas document, generated from the Structs above."""
    return Atlas.json_schema("NeurFlow concept atlas")
