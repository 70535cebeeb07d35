"""Finished stages of a fit, kept on disk so that a fit stopped midway continues where it stopped.

A real-size fit runs for many minutes: the readout pass over every patch, then one Integrated-
Gradients stage per layer pair. :class:`StageStore` keeps each finished stage in a folder:
``readouts.safetensors`` (every layer's neuron readouts, and the kept maps of the last layer when the
fit keeps them) and ``layer-<u>.json`` (the neurons, concepts and edges fitted for layer ``u``, and
the core neurons it hands to the layer below). A fit given a store loads the stages it finds instead
of computing them, so ``neurflow run`` on the same spec and output folder continues.

Stages are filed under a key of everything they depend on: the parameters, the target class, the
selected pixels and the model's weights. A changed spec, image or weight gives another key, and so
a fresh fit; nothing stale is reused. ``neurflow run`` keeps them in ``OUT/.neurflow-stages`` and
removes that folder once the circuits are written.

``layers: "auto"`` is chosen by a calibration on the machine that runs the job
(:func:`~neurflow.core.layer_budget.resolve_layers`), so a run that continues (the same command
again, another attempt on another worker) could choose another list, whose stages have other keys,
and compute everything again or record other layers than the first attempt. :class:`ChosenLayers`
keeps the first choice beside the stages (``layers.json``); every later run of the same job reads it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import msgspec
import torch
from torch import nn

from .circuit import IGAccuracy, Neuron


def fit_key(params: dict[str, Any], target_class: int, pixels: torch.Tensor, model: nn.Module) -> str:
    """A digest of what a fit's stages depend on (``params``: its recorded parameters)."""
    digest = hashlib.sha256()
    # where and in what batches the work ran does not change what it computed: a worker that halved its
    # batches after running out of device memory (service/executors/gpu.py) still finds its stages
    settings = {k: v for k, v in params.items() if k not in ("device", "batch_size", "forward_batch_size")}
    digest.update(msgspec.json.encode({"params": settings, "target": int(target_class)}))
    digest.update(pixels.detach().float().cpu().contiguous().numpy().tobytes())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


class LayerStage(msgspec.Struct):
    """What fitting one upper layer gave: its neurons, and the core neurons handed down."""

    neurons: list[Neuron]
    next_neurons: list[int]
    importance: dict[int, float]
    accuracy: IGAccuracy | None = None  # the steps and residuals its IG reached (Layer.ig)


class StageStore:
    """The finished stages of fits, one folder per fit key under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.key: str | None = None

    def open(self, key: str) -> StageStore:
        self.key = key
        return self

    @property
    def folder(self) -> Path:
        if self.key is None:
            raise RuntimeError("StageStore.open(key) first")
        return self.root / self.key

    def _write(self, name: str, data: bytes) -> None:
        # written aside and renamed: a fit killed while writing leaves no half stage behind
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self.folder / (name + ".part")
        part.write_bytes(data)
        part.replace(self.folder / name)

    def readouts(self) -> tuple[dict[str, torch.Tensor], torch.Tensor | None] | None:
        path = self.folder / "readouts.safetensors"
        if not path.is_file():
            return None
        from safetensors.torch import load

        tensors = load(path.read_bytes())
        acts = {k.removeprefix("acts."): v for k, v in tensors.items() if k.startswith("acts.")}
        return acts, tensors.get("maps")

    def save_readouts(self, acts: dict[str, torch.Tensor], maps: torch.Tensor | None) -> None:
        from safetensors.torch import save

        tensors = {f"acts.{k}": v.contiguous() for k, v in acts.items()}
        if maps is not None:
            tensors["maps"] = maps.detach().cpu().contiguous()
        self._write("readouts.safetensors", save(tensors))

    def layer(self, u: int) -> LayerStage | None:
        path = self.folder / f"layer-{u}.json"
        return msgspec.json.decode(path.read_bytes(), type=LayerStage) if path.is_file() else None

    def save_layer(self, u: int, stage: LayerStage) -> None:
        self._write(f"layer-{u}.json", msgspec.json.encode(stage))

    def finished(self) -> list[str]:
        """The stages on disk, for progress messages and tests."""
        return sorted(p.name for p in self.folder.glob("*") if not p.name.endswith(".part")) if self.key else []


class LayerChoice(msgspec.Struct, frozen=True):
    """The list ``layers: "auto"`` became for one job: ``job`` identifies the job (a digest of its spec and
    weights), so a changed spec in the same folder chooses again."""

    job: str
    layers: list[str]
    version: int = 1


class ChosenLayers:
    """Where the first choice of ``layers: "auto"`` is kept for the later runs of the same job: a file
    (``layers.json`` of a run's stage folder); the service keeps it in its artifact store
    (:class:`neurflow.service.executors.stages.StoredLayerChoice`)."""

    NAME = "layers.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> bytes | None:
        return self.path.read_bytes() if self.path.is_file() else None

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        part = self.path.with_name(self.path.name + ".part")
        part.write_bytes(data)
        part.replace(self.path)

    def load(self, job: str) -> list[str] | None:
        """The layers chosen earlier for ``job``; None when none were (or for another job)."""
        data = self._read()
        if data is None:
            return None
        try:
            kept = msgspec.json.decode(data, type=LayerChoice)
        except (msgspec.DecodeError, msgspec.ValidationError):  # damaged, or another version's: choose again
            return None
        return kept.layers if kept.job == job else None

    def save(self, job: str, layers: list[str]) -> None:
        self._write(msgspec.json.encode(LayerChoice(job=job, layers=list(layers))))
