"""The numbers ``neurflow experiments`` writes (``experiments.json``), as msgspec Structs.

Overlap = |top-N patches of a neuron before ∩ after masking| / N, over the class's patches (the
reference's ``accuracy()``). Accuracy = fraction of the class's images still predicted as the class.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from ..documents import Document
from .spec import ExperimentsSpec

SCHEMA_VERSION = "neurflow.experiments/1"


class FidelityPoint(msgspec.Struct, forbid_unknown_fields=True):
    layer: str  # the masking point: this layer alone ("single") or it and every layer above ("multi")
    n_channels: int  # channels masked / retained (summed over the layers of a "multi" point)
    core_accuracy: float
    random_accuracy: float  # mean over random sets
    random_accuracy_std: float
    core_logit: float  # mean target logit
    random_logit: float


class FidelityCurve(msgspec.Struct, forbid_unknown_fields=True):
    class_index: int
    tau: int
    mode: Literal["single", "multi"]
    operation: Literal["mask", "retain"]
    n_images: int  # images whose true label is the class
    base_accuracy: float  # nothing masked
    base_logit: float
    points: list[FidelityPoint]


class FidelityResult(msgspec.Struct, forbid_unknown_fields=True):
    curves: list[FidelityCurve]


class CorrelationRow(msgspec.Struct, forbid_unknown_fields=True):
    """Pearson r between a subset's summed importance and the upper neuron's overlap after masking it."""

    upper: str
    lower: str
    class_index: int
    neuron: int
    method: str
    subset_size: int
    n_subsets: int
    pearson: float | None  # None when either side is constant


class SumMeanRow(msgspec.Struct, forbid_unknown_fields=True):
    """Subsets of mixed sizes: is a group's importance better summarised by the sum or the mean?"""

    upper: str
    lower: str
    class_index: int
    neuron: int
    n_subsets: int
    pearson_sum: float | None
    pearson_mean: float | None


class EdgeFidelityResult(msgspec.Struct, forbid_unknown_fields=True):
    methods: list[str]  # methods that ran
    notes: list[str]  # methods skipped, and why
    rows: list[CorrelationRow]
    sum_vs_mean: list[SumMeanRow]


class OptimalityRow(msgspec.Struct, forbid_unknown_fields=True):
    upper: str
    lower: str
    class_index: int
    neuron: int
    set_size: int
    core_overlap: float  # overlap after masking the neuron's core set (lower = more faithful)
    criteria: dict[str, float]  # overlap after masking the same number of channels ranked by each method
    random_overlap: float  # mean over random sets
    total: float  # mean(random - core): > 0 when the core set is better than chance
    negative: float  # mean over random sets that beat the core set of (random - core); 0 if none did
    core_better_fraction: float  # fraction of random sets whose overlap stays higher than the core set's


class OptimalityResult(msgspec.Struct, forbid_unknown_fields=True):
    rows: list[OptimalityRow]


class ExperimentResults(Document, forbid_unknown_fields=True):
    schema: str
    arch: str
    classes: list[int]
    layers: list[str]
    tau: int  # tau of the circuits used for edge fidelity and optimality
    settings: ExperimentsSpec
    fidelity: FidelityResult | None = None
    edge_fidelity: EdgeFidelityResult | None = None
    optimality: OptimalityResult | None = None
    timings: dict[str, float] = {}

    SCHEMA: ClassVar[str] = SCHEMA_VERSION
    KIND: ClassVar[str] = "experiments"
