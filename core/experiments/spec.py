"""What ``neurflow experiments SPEC.json`` accepts: a job spec plus an optional ``experiments`` section.

The job-spec part (model, data, engine) is exactly what ``neurflow run`` takes and says how the
circuits are fitted; ``experiments`` says which faithfulness experiments of the paper to run on them
and on which labelled images. Unknown keys are errors, as in the job spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from ..jobspec import JobSpec, decode_spec, read_spec_file

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]

#: Attribution methods for edge-weight fidelity. ``integrated_gradients`` is the engine's own (the
#: one NeurFlow ranks with); ``activation`` (mean lower activation, no gradient) is a built-in
#: control; the others are captum's and are skipped, with a note, when captum is not installed.
#: ``smoothgrad`` is captum's NoiseTunnel over Integrated Gradients, as in the reference.
NATIVE_METHODS = ("integrated_gradients", "activation")
CAPTUM_METHODS = ("saliency", "input_x_gradient", "guided_backprop", "gradient_shap", "smoothgrad", "lrp")
Method = Literal["integrated_gradients", "activation", "saliency", "input_x_gradient", "guided_backprop",
                 "gradient_shap", "smoothgrad", "lrp"]


class FidelitySpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Masking / retaining each layer's core neurons vs random sets of the same size."""

    enabled: bool = True
    taus: list[PositiveInt] | None = None  # circuits fitted at each tau; default: the engine's tau
    n_random: PositiveInt = 5  # random sets per point (averaged)


class EdgeFidelitySpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Do attribution scores of lower neurons predict the change of an upper neuron's top-N patches
    when random subsets of lower neurons are masked? (the paper's correlation protocol)"""

    enabled: bool = True
    subset_sizes: list[PositiveInt] = msgspec.field(default_factory=lambda: [1, 5, 10, 20])
    n_subsets: PositiveInt = 50  # random subsets per size (size 1: this many single channels)
    n_neurons: PositiveInt = 2  # upper core neurons drawn per layer pair and class
    methods: list[Method] = msgspec.field(default_factory=lambda: ["integrated_gradients", "activation", "saliency",
                                                                   "input_x_gradient", "guided_backprop",
                                                                   "gradient_shap", "smoothgrad"])


class OptimalitySpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Masking a neuron's core set vs same-size sets chosen by other criteria or at random."""

    enabled: bool = True
    n_random: PositiveInt = 50
    n_neurons: PositiveInt = 4  # upper core neurons per layer pair and class


class ExperimentsSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    classes: list[int] | None = None  # default: data.target_class
    # Labelled evaluation images for the fidelity curves (default: data.images). Labels come from a
    # folder per class (``<images>/<class>/...``, the folder named as a class name, ``<index>``, or
    # ``class_<index>[_anything]``) or, when ``labels_csv`` is given, from a CSV of ``path,label``
    # rows (path relative to ``images``; label an index or a class name).
    images: str | None = None
    labels_csv: str | None = None
    max_images_per_class: PositiveInt | None = None
    seed: int = 0
    fidelity: FidelitySpec = msgspec.field(default_factory=FidelitySpec)
    edge_fidelity: EdgeFidelitySpec = msgspec.field(default_factory=EdgeFidelitySpec)
    optimality: OptimalitySpec = msgspec.field(default_factory=OptimalitySpec)


class ExperimentJobSpec(JobSpec, forbid_unknown_fields=True):
    experiments: ExperimentsSpec = msgspec.field(default_factory=ExperimentsSpec)

    def experiment_classes(self) -> list[int]:
        return list(self.experiments.classes) if self.experiments.classes else self.target_classes()


def parse_experiment_spec(raw: bytes | str) -> ExperimentJobSpec:
    return decode_spec(raw, ExperimentJobSpec, "experiment spec")


def load_experiment_spec(path: str | Path) -> tuple[ExperimentJobSpec, Path]:
    """Read and validate a spec file; return it with the folder relative paths resolve against."""
    raw, base = read_spec_file(path, "experiment spec")
    return parse_experiment_spec(raw), base
