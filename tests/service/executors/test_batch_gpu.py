"""The GPU path of the batch units: device checks, out-of-memory halving, autocast, determinism.

Runs on CPU with the tiny model; the out-of-memory case uses a model that raises torch's real
``OutOfMemoryError`` above a batch size, as a GPU would. Tests that need CUDA are marked ``gpu`` and
skipped without it.
"""

from __future__ import annotations

import msgspec
import pytest
import torch
import torchvision
from safetensors.torch import load_file

from neurflow.core.jobspec import JobSpec
from neurflow.core.pipeline import prepare_fit
from neurflow.service.executors import gpu
from neurflow.service.executors.context import TaskContext
from neurflow.service.executors.units import fit_one
from neurflow.service.settings import Settings

from ..helpers import job_spec

CUDA = torch.cuda.is_available()


class _Fussy(torchvision.models.ResNet):
    """A ResNet that runs out of memory on batches above ``limit`` (as a small GPU would)."""

    limit = 10**9
    calls: list[int] = []

    def forward(self, x):
        self.calls.append(int(x.shape[0]))
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate a batch of {x.shape[0]}")
        return super().forward(x)


def _model(assets, limit: int | None = None):
    model = torchvision.models.resnet18(num_classes=3)
    model.load_state_dict(load_file(str(assets["weights"])))
    if limit is not None:
        model.__class__ = _Fussy
        model.limit, model.calls = limit, []
    return model.eval()


def _setup(assets, engine: dict, limit: int | None = None, device: str | None = None):
    spec = msgspec.convert(job_spec("unused.safetensors", "unused", target=[0, 1], engine=engine), JobSpec)
    spec = msgspec.structs.replace(spec, model=msgspec.structs.replace(spec.model, class_names=["r", "g", "b"]),
                                   data=msgspec.structs.replace(spec.data, max_images=6))  # small: the shared CPU
    return prepare_fit(spec, assets["root"], model=_model(assets, limit), images_dir=assets["images"],
                       weights_path=assets["weights"], device=device)


def _neurons(circuit) -> list[set[int]]:
    return [{n.id for n in layer.neurons} for layer in circuit.layers if layer.neurons]


def _plain(circuit) -> dict:
    doc = msgspec.to_builtins(circuit)
    doc.pop("timings")
    doc["params"] = {k: v for k, v in doc["params"].items() if k not in ("batch_size", "forward_batch_size")}
    return doc


ENGINE = {"layers": ["layer4", "layer3"], "tau": 3, "top_n": 6, "granularities": [1.0, 0.5], "ig_steps": 4,
          "n_exemplars": 3, "batch_size": 16, "forward_batch_size": 16}


@pytest.mark.slow
def test_out_of_memory_halves_the_batches_and_remembers(assets, tmp_path):
    ctx = TaskContext(Settings(data_dir=str(tmp_path)), "cpu")
    setup = _setup(assets, ENGINE, limit=20)  # IG chunks are batch_size x ig_steps = 64 samples: too many
    first = fit_one(setup, 0, ctx)
    assert ctx.memory.halvings == 2  # 16 -> 8 -> 4 patches per IG chunk (4 x 4 = 16 samples fit)
    assert list(ctx.memory.limits.values()) == [{"batch_size": 4, "forward_batch_size": 4}]
    assert first.params.batch_size == 4  # the circuit records the sizes it was fitted with
    before = len(setup.model.calls)
    fit_one(setup, 1, ctx)  # the next class starts with the learned sizes: no new out-of-memory
    assert ctx.memory.halvings == 2
    assert len(setup.model.calls) > before and max(setup.model.calls[before:]) <= 20
    # the same circuit as a fit that used the small batches from the start
    reference = fit_one(_setup(assets, {**ENGINE, "batch_size": 4, "forward_batch_size": 4}), 0,
                        TaskContext(Settings(data_dir=str(tmp_path / "ref")), "cpu"))
    assert _plain(first) == _plain(reference)


def test_other_errors_are_not_retried(assets, tmp_path):
    ctx = TaskContext(Settings(data_dir=str(tmp_path)), "cpu")
    setup = _setup(assets, ENGINE)
    with pytest.raises(ValueError, match="out of range"):
        fit_one(setup, 7, ctx)
    assert ctx.memory.halvings == 0


@pytest.mark.slow
def test_autocast_bf16_keeps_the_core_neurons(assets, tmp_path):
    exact = fit_one(_setup(assets, ENGINE), 0, TaskContext(Settings(data_dir=str(tmp_path / "a")), "cpu"))
    ctx = TaskContext(Settings(data_dir=str(tmp_path / "b"), autocast="bf16"), "cpu")
    cast = fit_one(_setup(assets, ENGINE), 0, ctx)
    assert cast.fit.autocast == "bf16" and exact.fit.autocast == "off"
    jaccards = [len(a & b) / len(a | b) for a, b in zip(_neurons(exact), _neurons(cast))]
    assert jaccards and min(jaccards) >= 0.5, jaccards


def test_devices_are_checked():
    assert gpu.resolve_device("cpu") == "cpu"
    for bad, says in (("tpu", "not supported"), ("cuda:x", "not a device name")):
        with pytest.raises(ValueError, match=says):
            gpu.resolve_device(bad)
    if not CUDA:
        with pytest.raises(ValueError, match="0 CUDA device"):
            gpu.resolve_device("cuda:0")
    with pytest.raises(ValueError, match="autocast"):
        gpu.autocast("cpu", "fp8")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_fit_matches_cpu_core_neurons(assets, tmp_path):
    cpu = fit_one(_setup(assets, ENGINE), 0, TaskContext(Settings(data_dir=str(tmp_path / "c")), "cpu"))
    ctx = TaskContext(Settings(data_dir=str(tmp_path / "g")), "cuda")
    on_gpu = fit_one(_setup(assets, ENGINE, device="cuda"), 0, ctx)
    assert [len(a & b) / len(a | b) for a, b in zip(_neurons(cpu), _neurons(on_gpu))] == [1.0] * len(_neurons(cpu))
    for mode in ("bf16", "fp16"):
        cast = fit_one(_setup(assets, ENGINE, device="cuda"), 0,
                       TaskContext(Settings(data_dir=str(tmp_path / mode), autocast=mode), "cuda"))
        assert cast.fit.autocast == mode


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_deterministic_cuda_fits_repeat_exactly(assets, tmp_path):
    gpu.apply_determinism(True)
    try:
        runs = [fit_one(_setup(assets, ENGINE, device="cuda"), 0,
                        TaskContext(Settings(data_dir=str(tmp_path / str(i))), "cuda")) for i in range(2)]
        assert _plain(runs[0]) == _plain(runs[1])
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.slow
def test_classes_of_one_job_share_the_patch_readouts(assets, tmp_path):
    """select="all": every class reads out the same patches; the second class reuses the first's."""
    ctx = TaskContext(Settings(data_dir=str(tmp_path)), "cpu")
    setup = _setup(assets, ENGINE, limit=10**9)
    fit_one(setup, 0, ctx)
    calls = len(setup.model.calls)
    second = fit_one(setup, 1, ctx)
    fresh = _setup(assets, ENGINE, limit=10**9)
    alone = fit_one(fresh, 1, ctx)
    # the same circuit, without the readout pass (fewer forward calls than a fit on its own)
    assert _plain(second) == _plain(alone)
    assert len(setup.model.calls) - calls < len(fresh.model.calls) - 1
    assert second.timings["activations"] < alone.timings["activations"]
