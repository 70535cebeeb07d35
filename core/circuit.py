"""The circuit document: the one versioned contract between the engine, the labeler and the service.

Everything the engine produces is described by the msgspec Structs below and serialised through
:func:`Circuit.to_json` / :func:`Circuit.from_json`. The JSON Schema committed in
``schemas/circuit.schema.json`` is generated from these Structs (``neurflow schema circuit``) and a
test keeps the two in sync, so there is exactly one definition of the format.

Conventions
-----------
* ``layers`` is ordered from the output down. ``layers[0]`` holds the target class neuron; the last
  layer has no core neurons: it is only the input space of the Integrated Gradients of the layer above,
  and the ``edges`` of the second-to-last layer point at its channels.
* Neuron ids are channel indices of their layer. Concept ids are per neuron, numbered in the order in
  which their best patch appears in the neuron's top-N list (concept 0 holds the top patch).
* Group ids are unique in the whole circuit and URL-safe: ``"l{layer index}g{k}"``.
* An exemplar box is ``[x0, y0, x1, y1]`` in pixels of the *source* image (before resizing and
  cropping), half-open, so a crop is ``image.crop(box)``.
"""

from __future__ import annotations

from typing import Any

import msgspec

SCHEMA_VERSION = "neurflow.circuit/1"


class Exemplar(msgspec.Struct, forbid_unknown_fields=True):
    """A patch of a source image and the activation it produced."""

    image: int  # index into Circuit.images
    box: list[int]  # [x0, y0, x1, y1] in source-image pixels
    activation: float
    granularity: float = 1.0  # crop side as a fraction of the model input side


class Edge(msgspec.Struct, forbid_unknown_fields=True):
    """Signed, normalised contribution of a lower-layer core neuron to a concept."""

    neuron: int  # channel index in the next lower layer
    weight: float


class Concept(msgspec.Struct, forbid_unknown_fields=True):
    """One cluster of a neuron's top-activating patches."""

    id: int
    activation: float  # mean activation of the neuron over the cluster's patches
    size: int  # number of top patches in the cluster
    exemplars: list[Exemplar]  # patches nearest the cluster centroid, in activation order
    patches: list[Exemplar]  # every top patch of the cluster, in activation order
    edges: list[Edge]  # to lower core neurons, ordered by decreasing importance
    vector: list[float]  # mean lower-layer activation vector (the point clustered into groups)


class Neuron(msgspec.Struct, forbid_unknown_fields=True):
    id: int
    importance: float  # max over upper neurons of the mean |IG| that selected it (1.0 for the target)
    concepts: list[Concept]


class Member(msgspec.Struct, forbid_unknown_fields=True):
    neuron: int
    concept: int


class Label(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    score: float
    source: str  # "clip", "caption", "user", ...


class Caption(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    model: str
    prompt_id: str
    prompt_version: str


class Group(msgspec.Struct, forbid_unknown_fields=True):
    """A neuron group: concepts of one layer whose concept vectors cluster together."""

    id: str
    members: list[Member]  # ordered by distance to the group centroid, nearest first
    exemplars: list[Exemplar]
    labels: list[Label] = []
    confidence: float | None = None  # calibrated confidence of labels[0], filled by the labeler
    caption: Caption | None = None


class Layer(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    shape: list[int]  # output shape of one sample, e.g. [C, H, W], [C] or [T, C]
    neurons: list[Neuron]
    groups: list[Group]


class GroupEdge(msgspec.Struct, forbid_unknown_fields=True):
    source: str  # upper group id
    target: str  # lower group id (next layer down)
    weight: float


class ModelInfo(msgspec.Struct, forbid_unknown_fields=True):
    arch: str
    weights_sha256: str | None
    num_classes: int
    input_size: int
    mean: list[float]
    std: list[float]


class Target(msgspec.Struct, forbid_unknown_fields=True):
    class_index: int
    name: str | None = None


class ImageRef(msgspec.Struct, forbid_unknown_fields=True):
    id: int
    path: str  # relative to the data root
    width: int
    height: int


class Circuit(msgspec.Struct, forbid_unknown_fields=True):
    schema: str
    model: ModelInfo
    target: Target
    params: dict[str, Any]
    images: list[ImageRef]
    layers: list[Layer]
    group_edges: list[GroupEdge]
    timings: dict[str, float]
    labeling: dict[str, Any] | None = None  # how labels were made (CLIP model, vocabulary, ...)
    metrics: dict[str, Any] | None = None  # faithfulness / evaluation results, when computed

    def to_json(self, indent: int = 1) -> str:
        raw = msgspec.json.encode(self)
        return msgspec.json.format(raw, indent=indent).decode() if indent else raw.decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> Circuit:
        """Parse and validate a circuit document; raise ``ValueError`` naming what is wrong."""
        try:
            head = msgspec.json.decode(text, type=dict)
        except msgspec.DecodeError as exc:
            raise ValueError(f"circuit document is not valid JSON: {exc}") from None
        version = head.get("schema")
        if version != SCHEMA_VERSION:
            raise ValueError(f"unsupported circuit schema {version!r}; this version reads {SCHEMA_VERSION!r}")
        try:
            return msgspec.json.decode(text, type=cls)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid circuit document: {exc}") from None

    # -- navigation helpers used by every consumer ---------------------------------------------
    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r}; layers are {[lay.name for lay in self.layers]}")

    def group(self, group_id: str) -> tuple[int, Group]:
        """Return (layer index, group) for a group id."""
        for index, layer in enumerate(self.layers):
            for group in layer.groups:
                if group.id == group_id:
                    return index, group
        raise KeyError(f"no group {group_id!r} in this circuit")

    def iter_groups(self):
        for index, layer in enumerate(self.layers):
            for group in layer.groups:
                yield index, layer, group


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the circuit document, generated from the Structs above."""
    schema = msgspec.json.schema(Circuit)
    schema["$id"] = f"https://neurflow.dev/schemas/{SCHEMA_VERSION.replace('/', '-')}.json"
    schema["title"] = f"NeurFlow circuit document ({SCHEMA_VERSION})"
    return schema

