"""One job spec, fit -> label -> write: the one orchestration of ``neurflow run``, the service's local
worker and its Ray tasks.

A job is prepared once (:func:`~neurflow.core.pipeline.prepare_fit`: the model, the images, one
forward pass that every class shares), then each target class is fitted, labeled when the job asks
(:func:`label`), and written to its own folder (:func:`write`) before the next class starts, so a
long job leaves every finished class on disk. :func:`run_class` is that sequence for one class;
:func:`finish` its second half, for a process that receives a fitted circuit (the service's Ray
labeler). The service adds only what is its own around these steps: the fit on its GPU path
(batch sizes that adapt to memory, autocast), rendering the patches and publishing the folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from neurflow.core.circuit import Circuit
from neurflow.core.circuit_arrays import write_circuit
from neurflow.core.jobspec import JobSpec
from neurflow.core.pipeline import FitSetup, fit_class, prepare_fit
from neurflow.core.stages import ChosenLayers
from neurflow.progress import Progress

if TYPE_CHECKING:
    from neurflow.labeler.config import LabelerConfig

#: The circuit document's file name in a class folder.
DOCUMENT = "circuit.json"
#: the folder of finished stages inside a run's output folder (removed once the circuits are written)
STAGES_FOLDER = ".neurflow-stages"


def label(circuit: Circuit, images_dir: Path, labeling: LabelerConfig | None,
          progress: Progress | None = None) -> Circuit:
    """``circuit`` labeled with ``labeling``; unchanged when the job asks for no labels."""
    if labeling is None:
        return circuit
    from neurflow.labeler.labeling import label_circuit  # imported lazily: engine-only runs need no CLIP

    return label_circuit(circuit, images_dir, labeling, progress=progress)


def write(circuit: Circuit, folder: Path, compact: bool = False) -> Path:
    """Write ``folder/circuit.json`` (the folder is made), its arrays in a sidecar when ``compact``
    (:func:`~neurflow.core.circuit_arrays.write_circuit`); return its path."""
    path = folder / DOCUMENT
    write_circuit(circuit, path, compact=compact)
    return path


def finish(circuit: Circuit, folder: Path, images_dir: Path, labeling: LabelerConfig | None,
           progress: Progress | None = None, compact: bool = False) -> Path:
    """Label a fitted class (when asked) and write it to ``folder``."""
    return write(label(circuit, images_dir, labeling, progress), folder, compact)


def run_class(setup: FitSetup, target: int, folder: Path, labeling: LabelerConfig | None,
              progress: Progress | None = None, fit: Callable[[FitSetup, int], Circuit] = fit_class,
              compact: bool = False) -> Path:
    """Fit, label and write one class of a prepared job; ``fit`` is the engine's fit of one class
    (the service passes its GPU path)."""
    return finish(fit(setup, target), folder, setup.images_dir, labeling, progress, compact)


def run_job(spec: JobSpec, base_dir: Path, out_dir: Path, progress: Progress | None = None,
            model: nn.Module | None = None, *, images_dir: Path | None = None, weights_path: Path | None = None,
            device: str | None = None, labeling: LabelerConfig | None = None) -> dict[int, Path]:
    """Fit (and label, when ``spec.labeling`` is set) one circuit per target class; return their paths
    (:meth:`~neurflow.core.jobspec.JobSpec.class_folder`: ``out_dir/circuit.json`` for one class, a
    ``class-<c>`` folder each for a list or ``"all"``).

    The progress callback may raise to cancel the job. The keyword overrides are
    :func:`~neurflow.core.pipeline.prepare_fit`'s, plus ``labeling``: an already validated labeling
    section used instead of ``spec.labeling``.
    """
    if labeling is None and spec.labeling is not None:
        from neurflow.labeler.config import LabelerConfig

        # validated before hours of engine work; relative paths resolve against the spec's folder
        labeling = LabelerConfig.from_spec(spec.labeling, base_dir=Path(base_dir))
    # finished stages (and the list "auto" became) go to the output folder: the same command after a crash or
    # a kill continues
    stages = Path(out_dir) / STAGES_FOLDER
    setup = prepare_fit(spec, Path(base_dir), progress, model=model, images_dir=images_dir,
                        weights_path=weights_path, device=device, chosen=ChosenLayers(stages / ChosenLayers.NAME))
    setup.stages = stages
    written = {target: run_class(setup, target, spec.class_folder(out_dir, target), labeling, progress, compact=True)
               for target in spec.target_classes()}
    shutil.rmtree(setup.stages, ignore_errors=True)
    return written
