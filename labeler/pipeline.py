"""``neurflow run``: the engine plus optional labeling, from one job spec."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

from core.jobspec import JobSpec, load_jobspec
from core.pipeline import fit_spec, resolve, write_circuits

Progress = Callable[[str, int, int], None]


def run_job(spec: JobSpec, base_dir: Path, out_dir: Path, progress: Progress | None = None,
            model: nn.Module | None = None) -> dict[int, Path]:
    """Fit (and label, when ``spec.labeling`` is set) one circuit per target class; return their paths.

    The progress callback may raise to cancel the job.
    """
    labeler_config = None
    if spec.labeling is not None:
        from .config import LabelerConfig  # imported lazily: engine-only runs need no CLIP

        # Validate before hours of engine work; relative paths resolve against the spec's folder.
        labeler_config = LabelerConfig.from_spec(spec.labeling, base_dir=Path(base_dir))
    circuits = fit_spec(spec, Path(base_dir), progress=progress, model=model)
    if labeler_config is not None:
        from .labeling import label_circuit

        images_dir = resolve(Path(base_dir), spec.data.images)
        circuits = {t: label_circuit(c, images_dir, labeler_config, progress=progress) for t, c in circuits.items()}
    return write_circuits(spec, circuits, Path(out_dir))


class TqdmProgress:
    """Renders ``(stage, done, total)`` callbacks as one tqdm bar per stage."""

    def __init__(self):
        self.stage = None
        self.bar = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, file=sys.stderr, leave=False, dynamic_ncols=True)
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the engine (and labeling) on a job spec, writing circuit.json")
    p.add_argument("spec", help="job spec JSON (see core/schemas/jobspec.schema.json)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    spec, base_dir = load_jobspec(args.spec)
    bar = TqdmProgress()
    try:
        written = run_job(spec, base_dir, Path(args.out), progress=bar)
    finally:
        bar.close()
    for target, path in written.items():
        print(f"class {target}: {path}")
    return 0
