"""The weight checker: a child process that builds an architecture on torch's ``meta`` device and
compares it with an uploaded header (:func:`neurflow.service.intake.check_architecture`).

The web process never imports torch (it would cost it about a gigabyte resident, and a library that
misbehaves on hostile arguments would take the API down with it). It keeps one checker process
(``python -m neurflow.service.weightcheck``, torch imported once) and sends it one
:class:`~neurflow.service.intake.WeightCheck` per line on stdin, reading one
:class:`~neurflow.service.intake.WeightVerdict` per line from stdout, under a time limit; a checker
that dies or overruns is killed and the next upload starts a fresh one.
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
from neurflow.service.intake import WeightCheck, WeightVerdict

log = logging.getLogger("neurflow.service")
TIMEOUT_S = 300.0


class WeightChecker:
    def __init__(self, timeout: float = TIMEOUT_S) -> None:
        self.timeout = timeout
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _process(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            self._proc = subprocess.Popen([sys.executable, "-m", "neurflow.service.weightcheck"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
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
    from neurflow.service.intake import check_architecture

    for raw in sys.stdin.buffer:
        try:
            verdict = check_architecture(msgspec.json.decode(raw, type=WeightCheck))
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the checker
            verdict = WeightVerdict(problem=f"the weights could not be checked ({type(exc).__name__})")
        sys.stdout.buffer.write(msgspec.json.encode(verdict) + b"\n")
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
