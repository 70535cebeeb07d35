"""The GPU path of a worker (local or Ray): device checks, memory-adaptive batches, autocast, determinism.

* :func:`resolve_device`: ``cpu``, ``cuda`` or ``cuda:N``, checked against this machine at worker start.
* :class:`BatchMemory`: when a class's fit runs out of device memory, its batch sizes (``batch_size``
  for the IG chunks, ``forward_batch_size`` for plain forward passes) are halved and the class is
  fitted again; the sizes that fit are remembered per (model, input size, device) for every later
  class and job of the worker. Batch sizes only chunk the work: the circuit is the same up to float
  rounding, and it records the sizes it was fitted with.
* :func:`autocast`: optional bf16/fp16 autocast of the engine's forward and backward passes
  (setting ``autocast``); the circuit records it in ``fit.autocast``. docs/scaling.md has the
  measured Jaccard of core-neuron sets against float32.
* :func:`apply_determinism`: ``torch.use_deterministic_algorithms`` on request (setting
  ``deterministic``); set before the first CUDA call, as cuBLAS needs its workspace config then.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
AUTOCAST = ("off", "bf16", "fp16")


def resolve_device(name: str) -> str:
    """``name`` if this machine has it; a ValueError saying what exists otherwise."""
    import torch

    if name == "cpu":
        return name
    if name == "cuda" or name.startswith("cuda:"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if name == "cuda" else name.split(":", 1)[1]
        if not str(index).isdigit():
            raise ValueError(f"device {name!r} is not a device name; use cpu, cuda or cuda:N")
        if int(index) >= count:
            raise ValueError(f"device {name!r} is not available: this machine has {count} CUDA device(s)"
                             + (f" (cuda:0..cuda:{count - 1})" if count else "; use cpu"))
        return name
    raise ValueError(f"device {name!r} is not supported; use cpu, cuda or cuda:N")


def apply_determinism(enabled: bool) -> None:
    """Deterministic algorithms for this process (call before any CUDA work)."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def autocast(device: str, mode: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``mode`` (``off``: none) on ``device``'s type."""
    if mode == "off":
        return contextlib.nullcontext()
    import torch

    if mode not in AUTOCAST:
        raise ValueError(f"autocast {mode!r} is not one of {', '.join(AUTOCAST)}")
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":", 1)[0], dtype=dtype)


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class BatchMemory:
    """Batch sizes that fit, learned from out-of-memory errors and kept for the worker's lifetime."""

    def __init__(self) -> None:
        self.limits: dict[tuple, dict[str, int]] = {}
        self.halvings = 0

    def apply(self, key: tuple, engine: Any) -> None:
        """Cap an engine's batch sizes at what was learned for ``key``."""
        learned = self.limits.get(key)
        if learned:
            sizes = _sizes(engine)
            engine.set_params(**{k: min(sizes[k], v) for k, v in learned.items()})

    def run(self, key: tuple, engine: Any, fn: Callable[[], T]) -> T:
        """``fn()``; on out-of-memory, halve the engine's batch sizes, remember them and run it again."""
        while True:
            self.apply(key, engine)
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are retried
                if not is_out_of_memory(exc):
                    raise
                sizes = _sizes(engine)
                if all(v <= 1 for v in sizes.values()):
                    raise
                self.limits[key] = {k: max(1, v // 2) for k, v in sizes.items()}
                self.halvings += 1
                _empty_cache()


def _sizes(engine: Any) -> dict[str, int]:
    """The engine's batch sizes as its fit resolves them (the preset's where unset)."""
    params = engine.resolved_params()
    return {"batch_size": params.batch_size, "forward_batch_size": params.forward_batch_size}


def _empty_cache() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
