"""One job spec, end to end: fit the engine, then label the circuits when the spec asks for it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from neurflow.core.jobspec import JobSpec, load_jobspec
from neurflow.core.pipeline import fit_spec, resolve, write_circuits
from neurflow.progress import Progress

#: the folder of finished stages inside a run's output folder (removed once the circuits are written)
STAGES_FOLDER = ".neurflow-stages"

if TYPE_CHECKING:
    from neurflow.labeler.config import LabelerConfig



def run_job(spec: JobSpec, base_dir: Path, out_dir: Path, progress: Progress | None = None,
            model: nn.Module | None = None, *, images_dir: Path | None = None, weights_path: Path | None = None,
            device: str | None = None, labeling: LabelerConfig | None = None) -> dict[int, Path]:
    """Fit (and label, when ``spec.labeling`` is set) one circuit per target class; return their paths.

    The progress callback may raise to cancel the job. The keyword overrides are
    :func:`core.pipeline.fit_spec`'s, plus ``labeling``: an already validated labeling section used
    instead of ``spec.labeling`` (the service validates it at submit, against its asset folders).
    """
    labeler_config = labeling
    if labeler_config is None and spec.labeling is not None:
        from .config import LabelerConfig  # imported lazily: engine-only runs need no CLIP

        # Validate before hours of engine work; relative paths resolve against the spec's folder.
        labeler_config = LabelerConfig.from_spec(spec.labeling, base_dir=Path(base_dir))
    # finished stages go to the output folder: the same command after a crash or a kill continues
    stages = Path(out_dir) / STAGES_FOLDER
    circuits = fit_spec(spec, Path(base_dir), progress=progress, model=model, images_dir=images_dir,
                        weights_path=weights_path, device=device, stages=stages)
    if labeler_config is not None:
        from .labeling import label_circuit

        images_dir = images_dir or resolve(Path(base_dir), spec.data.images)
        circuits = {t: label_circuit(c, images_dir, labeler_config, progress=progress) for t, c in circuits.items()}
    written = write_circuits(spec, circuits, Path(out_dir))
    shutil.rmtree(stages, ignore_errors=True)
    return written
