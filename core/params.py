"""The engine's parameters, defined once.

:class:`EngineParams` (the method) and :class:`ImageSelection` (which images a fit uses) are the one
list of the engine's parameters: the :class:`~neurflow.core.engine.NeurFlow` estimator's signature is
generated from them and ``fit`` validates against them, the job spec's ``engine`` section *is*
:class:`EngineParams` (its ``data`` section extends :class:`ImageSelection`), and the committed JSON
Schemas carry their bounds and descriptions.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

PositiveInt = Annotated[int, Meta(ge=1)]
Fraction = Annotated[float, Meta(gt=0, le=1)]

#: What each preset puts where ``ig_steps`` / ``ig_patches`` / ``ig_tolerance`` / ``ig_stability`` /
#: ``batch_size`` / ``channels_last`` / ``map_cache_mb`` / ``fold_batch_norm`` are left unset (``None``).
#: Exact is the method as written and keeps the fit's memory low (no kept maps). Fast spends memory on
#: them, starts from 2 IG steps on a sample of each neuron's patches, and raises both until its own
#: error estimates (core/ig_accuracy.py) are small: its contract is a fidelity (per-layer Jaccard of
#: core-neuron sets against exact), checked by ``python -m bench.run fidelity``; see docs/speed.md.
PRESETS: dict[str, dict[str, int | float | bool | str | None]] = {
    "exact": {"ig_steps": 50, "ig_patches": None, "ig_tolerance": "off", "ig_stability": "off", "batch_size": 8,
              "channels_last": False, "map_cache_mb": 0, "fold_batch_norm": False},
    "fast": {"ig_steps": 2, "ig_patches": 20, "ig_tolerance": 0.005, "ig_stability": 2.0, "batch_size": 16,
             "channels_last": True, "map_cache_mb": 4096, "fold_batch_norm": True},
}
FAST_PRESET = PRESETS["fast"]
#: The time budget of ``layers: "auto"`` (and of ``neurflow layers --suggest`` without ``--budget``): one class
#: of a real-size fit (ResNet-50 at 224 px, 50 images, tau 16, fast) in ten minutes on a 2-core CPU.
DEFAULT_LAYER_BUDGET_S = 600.0


def _doc(text: str, **bounds: Any) -> Meta:
    return Meta(description=text, **bounds)


class EngineParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How NeurFlow finds, clusters and connects the core neurons of one target class."""

    layers: Annotated[Annotated[list[str], Meta(min_length=2)] | Literal["auto"], _doc(
        "Module names ordered from the output down. layers[0] holds the target class neuron (usually the "
        "classifier); the last layer is only the Integrated-Gradients input space of the one above it. "
        "\"auto\": the classifier, the blocks of the last stage, then the last block of each earlier stage, "
        "as deep as an estimated fit per class of these images and parameters fits "
        f"{DEFAULT_LAYER_BUDGET_S / 60:g} minutes on this machine (a short calibration), as "
        "`neurflow layers ARCH --suggest` prints them.")]
    tau: Annotated[int, _doc("Core neurons kept per upper neuron (capped at the lower layer's channel count).",
                             ge=1)] = 16
    top_n: Annotated[int, _doc("Top-activating patches per neuron (the concept support).", ge=1)] = 50
    granularities: Annotated[list[Fraction], _doc(
        "Patch sides as fractions of the input side.", min_length=1,
        extra_json_schema={"default": [1.0, 0.5, 0.25]})] = msgspec.field(
        default_factory=lambda: [1.0, 0.5, 0.25])
    stride_ratio: Annotated[float, _doc("Patch stride as a fraction of the patch side.", gt=0, le=1)] = 0.5
    ig_patches: Annotated[PositiveInt | None, _doc(
        "Integrated Gradients on about this many of each neuron's top_n patches, drawn from each of its "
        "concepts in proportion to the concept's size (at least one each); the core-neuron ranking and "
        "the concept edges are estimated from them (a stratified mean); top_n or more: every top patch, as the "
        "method does. null: the preset's (exact: every top patch; fast: 20).")] = None
    ig_steps: Annotated[PositiveInt | None, _doc(
        "Gauss-Legendre quadrature steps of Integrated Gradients; null: the preset's (50 exact, 2 fast).")] = None
    ig_tolerance: Annotated[Annotated[float, Meta(gt=0)] | Literal["off"] | None, _doc(
        "Adaptive steps: each IG chunk's completeness residual (sum |sum of attributions - (F(z) - F(0))| over "
        "its pairs / sum |F(z) - F(0)|) must be below this; the steps double from ig_steps (up to 64) until it "
        "is, and later chunks of the layer start there. \"off\": ig_steps throughout. null: the preset's "
        "(exact: off, fast: 0.005).")] = None
    ig_stability: Annotated[Annotated[float, Meta(gt=0)] | Literal["off"] | None, _doc(
        "Adaptive sampling (with ig_patches): a neuron whose top-tau channels are not set apart from the others "
        "by this many standard errors of the sampled ranking gets IG on the rest of its top patches. \"off\": "
        "the sample only. null: the preset's (exact: off, fast: 2).")] = None
    seed: Annotated[int, _doc(
        "Recorded with the circuit. The fit draws no random numbers, so the seed does not change its result "
        "today; a randomised option would seed a generator of its own with it (never the global ones).")] = 0
    reference_compat: Annotated[bool, _doc(
        "Reproduce the reference implementation's documented behaviours (its order-dependent edge rescale; "
        "never one concept per neuron) for number-for-number comparison.")] = False
    acceptable_error_range: Annotated[float, _doc(
        "0 or more enables the reference's pruning of each tau list (top-N overlap after cumulative "
        "masking); negative disables it (the reference's run setting).")] = -1.0
    max_concepts: Annotated[int, _doc("Most concepts per neuron (silhouette over 2..max_concepts).", ge=2)] = 5
    allow_single_concept: Annotated[bool, _doc(
        "Let a neuron have one concept when its patches show no cluster structure.")] = False
    n_exemplars: Annotated[int, _doc("Exemplar patches stored per concept and per group.", ge=1)] = 5
    n_groups: Annotated[PositiveInt | dict[str, PositiveInt] | None, _doc(
        "Groups per layer: null (chosen by silhouette), one number for every layer, or {layer name: number}.")] = None
    max_groups: Annotated[int, _doc("Upper bound of the silhouette search for groups.", ge=2)] = 100
    token_reduce: Annotated[Literal["mean", "cls"], _doc(
        "Neuron readout of (batch, tokens, channels) layers: the mean over tokens or the CLS token.")] = "mean"
    batch_size: Annotated[PositiveInt | None, _doc(
        "Patches per Integrated-Gradients chunk (each is expanded ig_steps times); null: the preset's "
        "(8 exact, 16 fast).")] = None
    forward_batch_size: Annotated[int, _doc(
        "Patches per plain forward pass (small batches keep the peak memory of the streamed activation pass "
        "low; larger ones are not faster on CPU).", ge=1)] = 32
    channels_last: Annotated[bool | None, _doc(
        "Run the model with channels-last (NHWC) weights during the fit (restored afterwards): faster "
        "convolutions on CPU; the numbers equal a contiguous run's up to float rounding. A model whose "
        "forward cannot run so (a .view of a feature map) runs contiguous. null: the preset's (exact: "
        "false, fast: true).")] = None
    fold_batch_norm: Annotated[bool | None, _doc(
        "Fold each batch norm into the convolution before it for the readout pass, in a copy of the model (the "
        "model itself is unchanged; IG runs on it as it is): a faster forward pass, numbers equal up to float "
        "rounding. Pairs whose modules are fitted layers are left alone. null: the preset's (exact: false, fast: "
        "true).")] = None
    map_cache_mb: Annotated[Annotated[int, Meta(ge=0)] | None, _doc(
        "Memory (MB) for keeping the complete output maps of the last layer (the IG input space) for every "
        "patch, taken during the readout pass: each IG stage then starts from them instead of re-running the "
        "model from the pixels. 0, or maps larger than this, re-run the model. null: the preset's (exact: 0, "
        "fast: 4096).")] = None
    device: Annotated[str | None, _doc(
        "Torch device of the computation (the model is moved there for the fit and back afterwards); null: "
        "cpu, or the device of the service worker that runs the job.")] = None
    preset: Annotated[Literal["exact", "fast"], _doc(
        "Fills ig_steps, ig_patches, ig_tolerance, ig_stability, batch_size, channels_last, map_cache_mb and "
        "fold_batch_norm where they are null: exact (50, every patch, off, off, 8, false, 0, false) or fast (2 "
        "raised adaptively, 20 grown adaptively, 0.005, 2, 16, true, 4096, true).")] = "exact"
    output: Annotated[str | int | None, _doc(
        "Which of the model's outputs holds the class scores, for a model that returns a dict (its key) or a "
        "tuple (its index); null: the model returns one tensor.")] = None

    def resolved(self) -> EngineParams:
        """A copy with every unset value filled: the preset's values, the CPU."""
        filled = {k: v for k, v in PRESETS[self.preset].items() if getattr(self, k) is None}
        return msgspec.structs.replace(self, **filled, device=self.device or "cpu")


class ImageSelection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Which of the given images a fit uses."""

    select: Annotated[Literal["predicted", "all"], _doc(
        "predicted: the images the model predicts as the target class (the reference's choice); all: every "
        "image.")] = "predicted"
    max_images: Annotated[PositiveInt | None, _doc(
        "Keep at most this many of the selected images (the first in the given order); null: all of them.")] = None


def validated(kind: type[msgspec.Struct], values: dict[str, Any]) -> Any:
    """``values`` as a ``kind`` Struct; a ``ValueError`` naming the parameter, what was wrong and what
    the parameter is."""
    # numpy scalars (a parameter grid built with numpy) are plain numbers here
    values = {k: v.item() if type(v).__module__ == "numpy" and hasattr(v, "item") else v for k, v in values.items()}
    try:
        return msgspec.convert(values, kind)
    except msgspec.ValidationError as exc:
        found = re.search(r"at `\$\.(\w+)", str(exc))
        name = found.group(1) if found else None
        about = msgspec.json.schema(kind)["$defs"][kind.__name__]["properties"].get(name, {}).get("description")
        raise ValueError(f"invalid NeurFlow parameter {name}: {exc}" + (f" ({name}: {about})" if about else "")) from None
