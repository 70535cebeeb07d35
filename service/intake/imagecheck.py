"""Image checks of uploads in a child process: a dataset zip's extraction with every image decoded, and a
debug image decoded and re-encoded as PNG.

Decoding is where hostile uploads cost memory (a small zip of large PNGs: the web process grew from 0.8 to
2.3 GB and never gave it back). So each check runs in its own short-lived process
(``python -m neurflow.service.intake.imagecheck``) under an address-space cap (``image_check_memory_mb``),
at most ``max_image_checks`` at once; what it decoded is returned to the system when it exits, and a
check that needs more than the cap fails alone, as a 413. Its answer is one :class:`Outcome` on stdout:
the dataset's summary, or the problem (an :class:`~neurflow.service.errors.ApiError` kind and detail), or
an ``OSError`` of the disk (its errno, so a full disk stays a 507).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import msgspec

from neurflow.service.errors import ApiError, Invalid, TooLarge, Unsupported
from neurflow.service.intake.archives import DatasetInfo

TIMEOUT_S = 600.0
_KINDS: dict[str, type[ApiError]] = {kind.__name__: kind for kind in (Invalid, TooLarge, Unsupported)}


class ExtractZip(msgspec.Struct, tag="zip", forbid_unknown_fields=True):
    zip_path: str
    dest: str
    max_entries: int
    max_bytes: int
    max_pixels: int
    max_total_pixels: int | None


class ReencodeImage(msgspec.Struct, tag="image", forbid_unknown_fields=True):
    src: str  # the uploaded bytes, in scratch
    dest: str  # the PNG to write
    max_pixels: int
    name: str


class Outcome(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    info: DatasetInfo | None = None
    kind: str | None = None  # an ApiError class name
    detail: str | None = None
    errno: int | None = None  # an OSError of the disk


_slots_lock = threading.Lock()
_slots: dict[int, threading.BoundedSemaphore] = {}


def _slot(n: int) -> threading.BoundedSemaphore:
    with _slots_lock:
        return _slots.setdefault(n, threading.BoundedSemaphore(max(1, n)))


def run_check(request: ExtractZip | ReencodeImage, memory_mb: int, concurrent: int) -> DatasetInfo | None:
    """Run one check in a child process; raise what it found, as the web process would have."""
    cap = memory_mb * 1024 * 1024

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with _slot(concurrent):
        try:
            done = subprocess.run([sys.executable, "-m", "neurflow.service.intake.imagecheck"],
                                  input=msgspec.json.encode(request), capture_output=True, timeout=TIMEOUT_S,
                                  preexec_fn=limit, env=env)
        except subprocess.TimeoutExpired:
            raise TooLarge(f"checking the images took longer than {TIMEOUT_S:.0f} s") from None
    try:
        outcome = msgspec.json.decode(done.stdout.strip().splitlines()[-1], type=Outcome)
    except (IndexError, msgspec.DecodeError):
        raise TooLarge(f"checking the images needed more than {memory_mb} MB (image_check_memory_mb); send "
                       "smaller images") from None
    if outcome.errno is not None:
        raise OSError(outcome.errno, os.strerror(outcome.errno))
    if outcome.kind is not None:
        raise _KINDS.get(outcome.kind, Invalid)(outcome.detail or "the upload was refused")
    return outcome.info


def _check(request: ExtractZip | ReencodeImage) -> Outcome:
    if isinstance(request, ExtractZip):
        from neurflow.service.intake.archives import extract_dataset

        return Outcome(info=extract_dataset(request.zip_path, Path(request.dest), max_entries=request.max_entries,
                                            max_bytes=request.max_bytes, max_pixels=request.max_pixels,
                                            max_total_pixels=request.max_total_pixels))
    from neurflow.service.intake.images import decode_image

    image = decode_image(Path(request.src), request.max_pixels, name=request.name)
    image.save(request.dest, format="PNG")
    return Outcome()


def main() -> None:
    try:
        request = msgspec.json.decode(sys.stdin.buffer.read(), type=ExtractZip | ReencodeImage)
        outcome = _check(request)
    except ApiError as exc:
        outcome = Outcome(kind=type(exc).__name__, detail=exc.detail)
    except MemoryError:
        outcome = Outcome(kind="TooLarge", detail="checking the images needed more memory than this server allows "
                                                  "(image_check_memory_mb); send smaller images")
    except OSError as exc:
        outcome = Outcome(errno=exc.errno or 5)
    except Exception as exc:  # noqa: BLE001 - a library failing on hostile bytes: the upload's fault
        outcome = Outcome(kind="Invalid", detail=f"the upload could not be checked ({type(exc).__name__})")
    sys.stdout.buffer.write(msgspec.json.encode(outcome) + b"\n")
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
