"""What a Ray task tells the service while it runs, and the limits it keeps on itself.

The local executor sees its workers directly: their pipe carries stage progress, ``/proc`` gives
their memory, and its own clock times each class. Ray tasks run on other nodes, so each unit of
work (the ``prepare`` task, one class, one label-and-store call of the CLIP actor, one whole job)
reports to one :class:`ProgressBoard` actor that the service drains every round of its loop:

* :class:`UnitStarted` / :class:`UnitEnded`: the service's clock for ``job_timeout_s`` runs from the
  moment it sees a unit start (not from submission: a task queued behind other jobs for a CPU is not
  running yet), so like the local executor's it bounds one class of a batch, not the whole batch;
* :class:`UnitStage`: the engine's and the labeler's :class:`~neurflow.progress.ProgressEvent`, as
  they made it; the service adds the job's count of classes, as the local worker does, hence the
  same SSE events;
* :class:`UnitOverMemory`: the unit's process grew past ``worker_memory_mb``.

All of them are msgspec Structs sent as JSON bytes: the board never unpickles user data.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Iterator, Union

import msgspec

from neurflow.progress import Progress, ProgressEvent

MB = 1 << 20
WATCH_EVERY_S = 0.1  # the memory watchdog's sampling period
BOARD_CAP = 10_000  # events kept while nobody drains (a service that is gone must not grow the actor forever)


class _UnitEvent(msgspec.Struct, tag_field="ev", forbid_unknown_fields=True):
    """What every event says: which unit of which job attempt it is about."""

    job_id: str
    attempt: int
    unit: str


class UnitStarted(_UnitEvent, tag="start"):
    pass


class UnitEnded(_UnitEvent, tag="end"):
    pass


class UnitStage(_UnitEvent, tag="stage"):
    target: int | None  # the class the unit works on; None for the shared prepare and whole-job units
    event: ProgressEvent


class UnitOverMemory(_UnitEvent, tag="memory"):
    rss_mb: int
    limit_mb: int


UnitEvent = Union[UnitStarted, UnitEnded, UnitStage, UnitOverMemory]
_encode = msgspec.json.Encoder().encode
decode_events = msgspec.json.Decoder(list[UnitEvent]).decode


class ProgressBoard:
    """A Ray actor (0 CPUs) that collects the units' events in order until the service drains them."""

    def __init__(self) -> None:
        self._events: list[bytes] = []

    def report(self, event: bytes) -> None:
        self._events.append(event)
        if len(self._events) > BOARD_CAP:
            del self._events[: len(self._events) - BOARD_CAP]

    def drain(self) -> bytes:
        """Every event since the last drain, as one JSON array."""
        events, self._events = self._events, []
        return b"[" + b",".join(events) + b"]"


def memory_limit_bytes(worker_memory_mb: int, num_cpus: float) -> int:
    """The limit of one task process on this node: ``worker_memory_mb``, or with 0 (the default), as
    the local executor does for its workers, 80 % of the node's memory shared by the tasks of
    ``num_cpus`` CPUs that fit on it."""
    if worker_memory_mb > 0:
        return worker_memory_mb * MB
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    slots = max(1, int((os.cpu_count() or 1) / max(num_cpus, 1e-3)))
    return int(0.8 * total / slots)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class _Watchdog(threading.Thread):
    """Samples this process's resident memory while a unit runs; over the limit it reports to the
    board and kills its own process.

    Why a watchdog and SIGKILL rather than ``resource.setrlimit``: RLIMIT_AS limits address space, not
    memory, and torch (thread arenas, CUDA contexts, mmapped weights) reserves far more address space
    than it touches, so a limit low enough to matter fails healthy fits; RLIMIT_RSS is ignored by
    Linux. An allocation refused by a limit also surfaces as a MemoryError (or a C++ abort) anywhere,
    often inside code that catches it. Resident memory sampled every 0.1 s is what the local
    executor's limit measures, and a killed process frees everything at once. The report goes first
    and is awaited, so the service knows the reason before Ray notices the dead worker; the service
    then fails the job and cancels the retry Ray starts (``max_retries`` counts the kill as a crash).
    Ray's own memory monitor only acts when a whole node is nearly full, so it cannot enforce a
    per-task limit.
    """

    def __init__(self, board: Any, event: UnitStarted, limit: int) -> None:
        super().__init__(daemon=True, name="nf-memory-watchdog")
        self.board, self.event, self.limit = board, event, limit
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(WATCH_EVERY_S):
            rss = _rss_bytes()
            if rss > self.limit:
                e = self.event
                over = UnitOverMemory(job_id=e.job_id, attempt=e.attempt, unit=e.unit, rss_mb=rss // MB,
                                      limit_mb=self.limit // MB)
                try:
                    import ray

                    ray.get(self.board.report.remote(_encode(over)), timeout=5)
                except Exception:  # noqa: BLE001 - the kill below matters more than the report
                    pass
                os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def unit(board: Any, job_id: str, attempt: int, name: str, target: int | None, limit: int) -> Iterator[Progress]:
    """Run one unit of work under the board's eyes: announce it, watch its memory, and yield the
    progress callback its engine and labeler report stages to."""
    import ray

    started = UnitStarted(job_id=job_id, attempt=attempt, unit=name)
    # awaited: the service's clock must start before any work, and the board must exist
    ray.get(board.report.remote(_encode(started)))

    def progress(event: ProgressEvent) -> None:  # throttled where it was made (neurflow.progress.Meter)
        board.report.remote(_encode(UnitStage(job_id=job_id, attempt=attempt, unit=name, target=target,
                                              event=event)))

    watchdog = _Watchdog(board, started, limit)
    watchdog.start()
    try:
        yield progress
    finally:
        watchdog.stopped.set()
        board.report.remote(_encode(UnitEnded(job_id=job_id, attempt=attempt, unit=name)))
