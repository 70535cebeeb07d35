"""The weight checker: a child process that builds an architecture on torch's ``meta`` device and
compares it, key by key and shape by shape, with an uploaded header (:func:`check_architecture`); the
addressable layer names come from a forward pass on ``meta`` tensors, so a 1 GB checkpoint is verified
without allocating it.

The web process never imports torch (it would cost it about a gigabyte resident, and a library that
misbehaves on hostile arguments would take the API down with it). It keeps one checker process
(``python -m neurflow.service.intake.weightcheck``, torch imported once) and sends it one
:class:`WeightCheck` per line on stdin, reading one :class:`WeightVerdict` per line from stdout, under
a time limit; a checker that dies or overruns is killed and the next upload starts a fresh one.
"""

from __future__ import annotations

import logging
import os
import selectors
import subprocess
import sys
import threading

import msgspec

from neurflow.service.errors import Invalid
from neurflow.service.intake.weightfile import read_safetensors_header, read_safetensors_index

log = logging.getLogger("neurflow.service")
TIMEOUT_S = 300.0


class WeightCheck(msgspec.Struct, forbid_unknown_fields=True):
    """What the weight checker (a child process: torch stays out of the web process) is asked."""

    path: str
    arch: str
    num_classes: int
    input_size: int


class WeightVerdict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    layers: list[tuple[str, list[int]]] | None = None
    problem: str | None = None  # what the client sent wrong (422)


#: what a float tensor (weights, running statistics) and an integer one (a batch norm's counter) may be stored as
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
INTEGER_DTYPES = ("I64", "I32")


def _dtype_mismatch(model, index: dict) -> str | None:
    """A tensor stored in a dtype its place in the model cannot take (8-bit or unsigned integers, booleans,
    8-bit floats where floats go): refused here rather than failing, or silently casting, in a job."""
    for name, tensor in model.state_dict().items():
        stored = index[name].dtype
        accepted = FLOAT_DTYPES if tensor.is_floating_point() else INTEGER_DTYPES
        if stored not in accepted:
            return f"{name} is stored as {stored}; accepted for it: {', '.join(accepted)}"
    return None


def check_architecture(request: WeightCheck) -> WeightVerdict:
    """The torch half of :func:`~neurflow.service.intake.models.check_weights` (runs in the checker process)."""
    import torch

    from neurflow.core.model_intake import build_architecture, describe_mismatch, list_layers

    shapes = read_safetensors_header(request.path)
    try:
        with torch.device("meta"):
            model = build_architecture(request.arch, request.num_classes)
    except ValueError as exc:
        return WeightVerdict(problem=str(exc))
    except Exception as exc:  # noqa: BLE001 - a library refusing the arguments
        return WeightVerdict(problem=f"cannot build {request.arch} with {request.num_classes} classes: "
                                     f"{type(exc).__name__}")
    fake = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    problem = describe_mismatch(model, fake) or _dtype_mismatch(model, read_safetensors_index(request.path)[0])
    if problem:
        return WeightVerdict(problem=f"the weights do not fit {request.arch} with {request.num_classes} classes: {problem}")
    try:
        with torch.device("meta"):
            layers = list_layers(model, request.input_size)
    except Exception as exc:  # noqa: BLE001
        return WeightVerdict(problem=f"{request.arch} does not run on {request.input_size}x{request.input_size} inputs "
                                     f"({type(exc).__name__})")
    return WeightVerdict(layers=[(name, [int(d) for d in shape]) for name, shape in layers])


class WeightChecker:
    def __init__(self, timeout: float = TIMEOUT_S) -> None:
        self.timeout = timeout
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _process(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            self._proc = subprocess.Popen([sys.executable, "-m", "neurflow.service.intake.weightcheck"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          env=env)
        return self._proc

    def start(self) -> None:
        """Start the checker now (it imports torch: seconds) rather than on the first upload."""
        with self._lock:
            self._process()

    def stop(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None

    def check(self, request: WeightCheck) -> WeightVerdict:
        with self._lock:
            proc = self._process()
            try:
                proc.stdin.write(msgspec.json.encode(request) + b"\n")
                proc.stdin.flush()
                line = _readline(proc, self.timeout)
            except OSError:
                line = None
            if line is None:
                log.error("the weight checker died or overran %.0f s; restarting it", self.timeout)
                proc.kill()
                proc.wait(5)
                self._proc = None
                raise Invalid(f"the weights could not be checked against {request.arch} (the check stopped or took "
                              f"longer than {self.timeout:.0f} s); check arch, num_classes and input_size")
        try:
            return msgspec.json.decode(line, type=WeightVerdict)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise Invalid("the weights could not be checked (the checker gave no answer)") from None


def _readline(proc: subprocess.Popen, timeout: float) -> bytes | None:
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return None
    line = proc.stdout.readline()
    return line or None


_checker = WeightChecker()


def run_checker(request: WeightCheck) -> WeightVerdict:
    return _checker.check(request)


def start_checker() -> None:
    threading.Thread(target=_checker.start, daemon=True, name="nf-weightcheck").start()


def stop_checker() -> None:
    _checker.stop()


def main() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for raw in sys.stdin.buffer:
        try:
            verdict = check_architecture(msgspec.json.decode(raw, type=WeightCheck))
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the checker
            verdict = WeightVerdict(problem=f"the weights could not be checked ({type(exc).__name__})")
        sys.stdout.buffer.write(msgspec.json.encode(verdict) + b"\n")
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
