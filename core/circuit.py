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

Versions: ``neurflow.circuit/3`` types ``params`` as the engine's own
:class:`~neurflow.core.params.EngineParams` (as resolved for the fit) and records the rest of the fit
in ``fit`` (:class:`FitRecord`); ``/2`` typed the ``labeling`` record (:class:`Labeling`); ``/1`` kept
both as free dicts. Older documents still load: :func:`Circuit.from_json` converts them
(:func:`params_from_v2`, :func:`labeling_from_v1`).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from .documents import Document
from .params import EngineParams, ImageSelection

SCHEMA_VERSION = "neurflow.circuit/3"
READABLE_VERSIONS = ("neurflow.circuit/1", "neurflow.circuit/2", SCHEMA_VERSION)


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
    confidence: float | None = None  # how sure the model was of its answer (back ends that say; else None)


class LabelVote(msgspec.Struct, forbid_unknown_fields=True):
    """One piece of evidence for a group's label: what one voter (a CLIP, the caption, a prototype
    made from corrections) ranked first, and how strongly."""

    voter: str  # e.g. "clip:RN50@sha256_16", "caption", "prototype"
    text: str  # the vocabulary concept this voter ranks first
    score: float  # the voter's own score of that concept (not comparable across voters)
    margin: float | None = None  # its score minus the voter's second-best score


class LabelEvidence(msgspec.Struct, forbid_unknown_fields=True):
    """What a group's label rests on: every vote and the features the combination read."""

    votes: list[LabelVote] = []
    features: dict[str, float] = {}  # name -> value, as fed to the combination
    method: str = ""  # the combination that turned them into Group.confidence


class Correction(msgspec.Struct, forbid_unknown_fields=True):
    """A label a person set; it wins over every automatic label and survives relabeling."""

    text: str
    by: Literal["human"] = "human"
    key: str | None = None  # the API key's id (never the secret) or the Label Studio user
    at: str = ""  # ISO 8601 time, UTC
    via: str = "api"  # "api", "labelstudio", "python"
    previous: str | None = None  # the automatic label it replaced


#: ``unlabeled``: no labeler ran; ``labeled``: labels[0] is the answer; ``uncertain``: the evidence
#: disagrees and ``candidates`` holds the two best; ``corrected``: a person set ``correction``.
GroupStatus = Literal["unlabeled", "labeled", "uncertain", "corrected"]


class Group(msgspec.Struct, forbid_unknown_fields=True):
    """A neuron group: concepts of one layer whose concept vectors cluster together."""

    id: str
    members: list[Member]  # ordered by distance to the group centroid, nearest first
    exemplars: list[Exemplar]
    labels: list[Label] = []
    confidence: float | None = None  # calibrated probability that labels[0] is right, filled by the labeler
    caption: Caption | None = None
    status: GroupStatus = "unlabeled"
    candidates: list[Label] = []  # the two best labels when status is "uncertain"
    evidence: LabelEvidence | None = None
    correction: Correction | None = None

    def __post_init__(self) -> None:
        # documents labeled before ``status`` existed carry labels but no status
        if self.status == "unlabeled" and self.labels:
            self.status = "labeled"


class IGAccuracy(msgspec.Struct, forbid_unknown_fields=True):
    """What the Integrated Gradients of a layer's core neurons used and reached (see core/ig_accuracy.py)."""

    steps: int  # Gauss-Legendre steps of the layer's last IG chunk (the adaptive ladder only goes up)
    residual: float | None  # None when not measured (ig_tolerance "off"); else the completeness residual over every (patch, neuron) pair: sum |sum(IG) - (F(z) - F(0))| / sum |F(z) - F(0)|
    pairs: int  # (patch, neuron) pairs of IG computed
    resampled: int = 0  # neurons whose top-tau was unstable on their patch sample and got IG on every top patch


class Layer(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    shape: list[int]  # output shape of one sample, e.g. [C, H, W], [C] or [T, C]
    neurons: list[Neuron]
    groups: list[Group]
    ig: IGAccuracy | None = None  # of the IG from this layer's core neurons to the layer below; None on the last layer


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
    # "unknown": fit on a bare tensor without mean/std; mean/std are then 0 and 1 (the pixels as fed),
    # and tools that normalise new images themselves (debug_image) refuse the circuit
    normalisation: Literal["recorded", "unknown"] = "recorded"


class Target(msgspec.Struct, forbid_unknown_fields=True):
    class_index: int
    name: str | None = None


class ImageRef(msgspec.Struct, forbid_unknown_fields=True):
    id: int
    path: str  # relative to the data root
    width: int
    height: int


# -- how the labels were made ---------------------------------------------------------------------
# The labeler's settings are defined here, not in the labeler: they are part of the document (the
# engine layer may not import the labeler), and ``labeler.config`` adds their validation and loading.


class ClipSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Which open_clip model scores the patches.

    ``model`` is an open_clip architecture name (``open_clip.list_models()``), a name defined by
    ``model_config``, or ``local-dir:FOLDER`` (an open_clip bundle: ``open_clip_config.json`` +
    weights). ``pretrained`` is a pretrained tag of that architecture (downloaded or read from the
    open_clip cache) or a checkpoint file (.safetensors, or .pt/.bin read with ``weights_only``).
    """

    model: str
    pretrained: str | None = None
    model_config: str | None = None  # open_clip model-config JSON registered under ``model`` at load
    device: str = "cpu"


class CaptionerSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A vision-language model that captions groups (optional).

    ``backend="transformers"``: ``model`` is a local folder saved with ``save_pretrained`` (model +
    processor), loaded offline with ``AutoModelForImageTextToText``. ``backend="openai"``: ``model``
    is the served model name and ``base_url`` the OpenAI-compatible root (``.../v1``); the API key is
    read from the environment variable ``api_key_env`` (never from the spec, never logged).
    """

    backend: Literal["transformers", "openai"]
    model: str
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: Annotated[float, Meta(gt=0)] = 60.0
    max_retries: Annotated[int, Meta(ge=0, le=10)] = 3
    max_images: Annotated[int, Meta(ge=1, le=32)] = 5  # exemplar patches sent per group
    max_new_tokens: Annotated[int, Meta(ge=1, le=2048)] = 160
    image_size: Annotated[int, Meta(ge=16, le=1024)] = 224  # side of each patch sent
    prompt: str = "group_caption"  # prompt id in prompts/, single-group captioning
    circuit_prompt: str | None = "circuit_caption"  # multi-level prompt for groups with lower groups
    lower_groups: Annotated[int, Meta(ge=1, le=5)] = 2  # strongest lower groups per circuit prompt
    summarize: bool = True  # also store a short label derived from the caption (Caption.label)
    vote: bool = True  # the caption's words are one more vote on the label (mosaic score; labeler.evidence)


class LabelingSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The ``labeling`` section of a job spec: everything labeling needs besides the circuit and images."""

    clip: ClipSettings
    vocabulary: list[str] | str = "builtin:general"  # inline list, a text file, or "builtin:NAME"
    templates: list[str] | str = "builtin:default"  # prompt ensemble, each with one "{}"
    top_k: Annotated[int, Meta(ge=1, le=100)] = 5
    score: Literal["mosaic", "contrastive", "mean_cosine"] = "mosaic"  # see labeler/scoring.py, docs/label-quality.md
    contrast: Annotated[float, Meta(ge=0, le=2)] = 1.0  # lambda of the reference term
    patches: Literal["all", "exemplars"] = "all"  # all member concepts' top patches, or the display exemplars only
    max_patches: Annotated[int, Meta(ge=1, le=2000)] = 64  # patches embedded per group
    reference_size: Annotated[int, Meta(ge=8, le=20000)] = 256  # reference pool of the run
    holdout: Annotated[float, Meta(ge=0, lt=1)] = 0.2  # share of top patches kept for evaluation
    batch_size: Annotated[int, Meta(ge=1)] = 64
    seed: int = 0
    captioner: CaptionerSettings | None = None
    # More CLIPs, each one more vote (a spec may give "clip" as a list: its first entry is ``clip``)
    extra_clips: list[ClipSettings] = []


class ClipProvenance(msgspec.Struct, forbid_unknown_fields=True):
    """The CLIP model that was loaded (``settings.clip`` says what was asked for)."""

    model: str
    pretrained: str | None
    model_config: str | None
    weights_sha256: str | None
    embed_dim: int


class VocabularyProvenance(msgspec.Struct, forbid_unknown_fields=True):
    name: str  # "inline", a builtin name, or the file's name
    size: int
    sha256_16: str  # first 16 hex digits of the SHA-256 of the concept list


class CaptionerProvenance(msgspec.Struct, forbid_unknown_fields=True):
    model: str  # the captioner's name, e.g. "openai:MODEL@BASE_URL"
    prompt: str
    circuit_prompt: str | None


#: A held-out patch: ``[image, x0, y0, x1, y1]`` (image index, box in source-image pixels).
HeldOutPatch = Annotated[list[int], Meta(min_length=5, max_length=5)]


class Labeling(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How the labels of a circuit were made, and what ``neurflow evaluate`` needs to test them."""

    settings: LabelingSettings  # as validated, relative paths resolved
    clip: ClipProvenance
    vocabulary: VocabularyProvenance
    templates: list[str]  # the prompt ensemble as used
    confidence_method: str  # how Group.confidence is computed
    reference_patches: int  # patches in the run's reference pool (at most settings.reference_size)
    holdout: dict[str, list[HeldOutPatch]]  # group id -> its patches held out of labeling
    patches_source: str | None = None  # the data root the crops were read from
    seconds: float | None = None
    captioner: CaptionerProvenance | None = None
    caption_errors: dict[str, str] = {}  # group id -> why it has no caption
    captioner_error: str | None = None  # the captioner could not be built at all
    unconverted: dict[str, Any] = {}  # keys of a /1 record that /2 has no field for, as they were
    extra_clips: list[ClipProvenance] = []  # the CLIPs of ``settings.extra_clips``, as loaded
    prototypes: dict[str, int] = {}  # concept -> corrected groups whose patches joined its embedding


def labeling_from_v1(record: dict[str, Any]) -> Labeling:
    """A ``neurflow.circuit/1`` labeling dict as the labeler wrote it, typed; ``ValueError`` otherwise."""
    if not isinstance(record, dict):
        raise ValueError(f"the neurflow.circuit/1 labeling record is a {type(record).__name__}, not an object")
    old = dict(record)
    config = dict(old.pop("config", None) or {})
    known = set(LabelingSettings.__struct_fields__)
    unconverted = {f"config.{k}": config.pop(k) for k in list(config) if k not in known}
    renamed = {"confidence": "confidence_method", "reference_size": "reference_patches"}
    # repeated from settings in /1 (and dropped settings such as a confidence temperature)
    repeats = {"score", "contrast", "top_k", "patches", "max_patches", "holdout_fraction", "seed",
               "confidence_temperature"}
    fields = set(Labeling.__struct_fields__)
    doc: dict[str, Any] = {"settings": config}
    for key, value in old.items():
        key = renamed.get(key, key)
        if key in fields and key not in ("settings", "unconverted"):
            doc[key] = value
        elif key not in repeats:
            unconverted[key] = value
    doc["unconverted"] = unconverted
    try:
        return msgspec.convert(doc, Labeling)
    except msgspec.ValidationError as exc:
        raise ValueError(f"the neurflow.circuit/1 labeling record is not one the labeler wrote: {exc}") from None


class FitRecord(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What the engine's fit used besides its parameters (``Circuit.params``)."""

    n_patches: int  # patches cut from the selected images (Circuit.images)
    selection: ImageSelection = msgspec.field(default_factory=ImageSelection)
    ig_method: str = "gausslegendre"  # the Integrated-Gradients quadrature
    ig_baseline: str = "zero"
    autocast: Literal["off", "bf16", "fp16"] = "off"  # the service worker's autocast of the fit's passes
    unconverted: dict[str, Any] = {}  # keys of a /1 or /2 params dict that /3 has no field for, as they were


def _derived_v2(params: EngineParams, n_images: int) -> dict[str, Any]:
    """Keys of a /1 or /2 ``params`` dict that /3 derives from the document itself: dropped when they
    agree with it, kept in ``FitRecord.unconverted`` otherwise."""
    return {"edge_normalisation": "reference" if params.reference_compat else "l1", "n_images": n_images}


def params_from_v2(record: dict[str, Any], layer_names: list[str], n_images: int) -> tuple[EngineParams, FitRecord | None]:
    """A ``neurflow.circuit/1`` or ``/2`` params dict as the engine wrote it, typed; ``ValueError`` otherwise.

    A document made by hand (not by a fit) may lack ``layers`` (the circuit's layer names are used) and
    every fit key (no :class:`FitRecord` then)."""
    if not isinstance(record, dict):
        raise ValueError(f"the params record is a {type(record).__name__}, not an object")
    engine_keys, selection_keys = set(EngineParams.__struct_fields__), set(ImageSelection.__struct_fields__)
    fit_keys = set(FitRecord.__struct_fields__) - {"selection", "unconverted"}
    engine = {k: v for k, v in record.items() if k in engine_keys}
    engine.setdefault("layers", layer_names)
    try:
        params = msgspec.convert(engine, EngineParams)
    except msgspec.ValidationError as exc:
        raise ValueError(f"the params record is not one the engine wrote: {exc}") from None
    rest = {k: v for k, v in record.items() if k not in engine_keys}
    if not rest:
        return params, None
    derived = _derived_v2(params, n_images)
    fit: dict[str, Any] = {k: rest.pop(k) for k in list(rest) if k in fit_keys}
    fit["selection"] = {k: rest.pop(k) for k in list(rest) if k in selection_keys}
    fit["unconverted"] = {k: v for k, v in rest.items() if k not in derived or derived[k] != v}
    try:
        return params, msgspec.convert(fit, FitRecord)
    except msgspec.ValidationError as exc:
        raise ValueError(f"the params record is not one the engine wrote: {exc}") from None


class CircuitArrays(msgspec.Struct, forbid_unknown_fields=True):
    """Where a compact document keeps its bulky arrays (see :mod:`neurflow.core.circuit_arrays`)."""

    file: str  # the safetensors sidecar's file name, in the document's folder
    sha256: str  # of the sidecar's bytes
    bytes: int
    fields: list[str]  # what it holds: "concept.vector", "concept.patches"


class Circuit(Document, forbid_unknown_fields=True):
    schema: str
    model: ModelInfo
    target: Target
    params: EngineParams  # the engine's parameters as the fit used them (the preset resolved)
    images: list[ImageRef]
    layers: list[Layer]
    group_edges: list[GroupEdge]
    timings: dict[str, float]
    labeling: Labeling | None = None  # how labels were made, when the circuit is labeled
    metrics: dict[str, Any] | None = None  # faithfulness / evaluation results, when computed
    fit: FitRecord | None = None  # what else the fit used; None for a circuit not made by the engine
    arrays: CircuitArrays | None = None  # set in a compact document: its concept vectors and patches are there

    SCHEMA: ClassVar[str] = SCHEMA_VERSION
    OLDER: ClassVar[tuple[str, ...]] = READABLE_VERSIONS[:-1]
    KIND: ClassVar[str] = "circuit"

    @classmethod
    def from_json(cls, text: str | bytes, without_arrays: bool = False) -> Circuit:
        """Parse and validate a circuit document; raise ``ValueError`` naming what is wrong.

        A compact document keeps its concept vectors and patches in a sidecar (``arrays``); it is
        refused here, since it would read as concepts without them, unless ``without_arrays``:
        :func:`neurflow.core.circuit_arrays.read_circuit` reads it with its sidecar."""
        circuit = super().from_json(text)
        if circuit.arrays is not None and not without_arrays:
            raise ValueError(f"this circuit document keeps its concept vectors and patches in {circuit.arrays.file}; "
                             "read it with neurflow.core.circuit_arrays.read_circuit(path), which reads that file "
                             "from the document's folder")
        return circuit

    @classmethod
    def _upgrade(cls, head: dict[str, Any], version: str) -> dict[str, Any]:
        if version == "neurflow.circuit/1" and head.get("labeling") is not None:
            head["labeling"] = msgspec.to_builtins(labeling_from_v1(head["labeling"]))
        names = [layer.get("name") for layer in head.get("layers") or [] if isinstance(layer, dict)]
        try:
            params, fit = params_from_v2(head.get("params"), names, len(head.get("images") or []))
        except ValueError as exc:
            raise ValueError(f"invalid circuit document: {exc}") from None
        return head | {"schema": SCHEMA_VERSION, "params": msgspec.to_builtins(params),
                       "fit": msgspec.to_builtins(fit) if fit is not None else None}

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
    return Circuit.json_schema("NeurFlow circuit document")

