"""Progress as data, shared by every layer: one typed event, the one meter that makes it, and its
rendering for a terminal.

Long work reports :class:`ProgressEvent` values to a :data:`Progress` callback. The event is made once,
where the work happens (the engine, the labeler, a service task), by a :class:`Meter`: it clocks each
stage, measures its rate for the ETA and throttles the reports. From there the same Struct travels
unchanged: to a terminal (:class:`ProgressBars`), through a service worker's pipe, a Ray board, the job
table and the SSE stream to the HTTP client, which renders it (never parses text).

The callback may raise to cancel the work (the service's workers do that when a job is cancelled), so
producers report between units of work, never while holding something they must release.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import msgspec

#: the event's schema; readers also accept rows written before events existed (:meth:`ProgressEvent.legacy`)
SCHEMA_VERSION = "neurflow.progress/1"
READABLE_VERSIONS = (SCHEMA_VERSION,)

#: at most one report every this many seconds within a stage (stage changes and last steps always go)
REPORT_EVERY_S = 0.2


class ProgressEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where one piece of long work stands.

    ``done``/``total`` count the stage's own units (``unit``: images, patches, neuron-patch pairs,
    groups...), never finished classes. In a job of several classes, ``target`` is the class the stage
    works on and ``classes_done``/``classes_total`` say how far the job is.
    """

    stage: str  # what happens now: "logits", "activations", "ig layer4", "labeling: clip"...
    done: int
    total: int
    unit: str = ""  # what done/total count; "" when unknown (a row written before events existed)
    elapsed: float = 0.0  # seconds since the stage started
    eta: float | None = None  # seconds left at the stage's measured rate; None before any unit is done
    target: int | None = None  # the class of a job of several classes this stage works on
    classes_done: int = 0  # classes of the job already finished
    classes_total: int = 0  # classes of the job; 0 when the job is not one of several classes
    schema: str = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema not in READABLE_VERSIONS:
            raise ValueError(f"progress event schema {self.schema!r} is not one this NeurFlow reads "
                             f"({', '.join(READABLE_VERSIONS)})")

    @classmethod
    def legacy(cls, stage: str, done: int, total: int) -> ProgressEvent:
        """A progress row stored before events existed: its stage text (shown as it is), done and total."""
        return cls(stage=stage or "", done=int(done or 0), total=int(total or 0))

    def fraction(self) -> float:
        """How much of the job is done, 0..1: the stage's share within its class when the job has several."""
        within = min(max(self.done / self.total, 0.0), 1.0) if self.total > 0 else 0.0
        if self.classes_total > 1:
            return min((self.classes_done + within) / self.classes_total, 1.0)
        return within

    def in_class(self, target: int, classes_done: int, classes_total: int) -> ProgressEvent:
        """This event as one step of a job of several classes."""
        return msgspec.structs.replace(self, target=target, classes_done=classes_done, classes_total=classes_total)

    def describe(self) -> str:
        """One line for a log: ``ig layer4: 65/300 neuron-patch pairs, 12 s, about 48 s left (class 7, 3 of 10 done)``."""
        unit = f" {self.unit}" if self.unit else ""
        text = f"{self.stage}: {self.done}/{self.total}{unit}, {self.elapsed:.0f} s"
        if self.eta is not None and self.done < self.total:
            text += f", about {self.eta:.0f} s left"
        if self.target is not None:
            text += f" (class {self.target}, {self.classes_done} of {self.classes_total} done)"
        return text


#: ``progress(event)``; may raise to cancel.
Progress = Callable[[ProgressEvent], None]

_decode_event = msgspec.json.Decoder(ProgressEvent).decode
_encode_event = msgspec.json.Encoder().encode


def encode_event(event: ProgressEvent) -> bytes:
    return _encode_event(event)


def decode_event(raw: bytes | str) -> ProgressEvent:
    """A stored or received event; ``ValueError`` (msgspec's) when it is not one."""
    return _decode_event(raw)


def in_class(progress: Progress, target: int, classes_done: int, classes_total: int) -> Progress:
    """``progress`` for the stages of one class of a job of several classes."""

    def report(event: ProgressEvent) -> None:
        progress(event.in_class(target, classes_done, classes_total))

    return report


class Meter:
    """Turns ``(stage, done, total, unit)`` steps of long work into throttled :class:`ProgressEvent` s.

    A stage starts when its name changes, at the moment of the step before it (the previous stage's
    end, or the meter's creation), so the first report of a stage already has a measured rate. The ETA
    is that rate over the stage: ``elapsed / done * (total - done)``. Reports go to ``sink`` on every
    stage change, on a stage's last step and otherwise at most every ``every_s`` seconds: the one
    throttle on every path (a terminal, a worker's pipe, Ray's board all receive what it lets through);
    ``every_s`` defaults to :data:`REPORT_EVERY_S`.
    """

    def __init__(self, sink: Progress | None, every_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink = sink
        self.every_s = REPORT_EVERY_S if every_s is None else every_s
        self.clock = clock
        self._stage: str | None = None
        self._started = self._last_step = clock()
        self._sent = -math.inf

    def __call__(self, stage: str, done: int, total: int, unit: str = "") -> None:
        if self.sink is None:
            return
        now = self.clock()
        new = stage != self._stage
        if new:
            self._stage, self._started, self._sent = stage, self._last_step, -math.inf
        self._last_step = now
        if not (new or done >= total or now - self._sent >= self.every_s):
            return
        self._sent = now
        elapsed = max(now - self._started, 0.0)
        if done >= total:
            eta: float | None = 0.0
        elif done > 0:
            eta = elapsed / done * (total - done)
        else:
            eta = None
        self.sink(ProgressEvent(stage=str(stage), done=int(done), total=int(total), unit=unit,
                                elapsed=round(elapsed, 3), eta=None if eta is None else round(eta, 3)))


class ProgressBars:
    """Renders progress events as one line per stage.

    An event with nothing to count (``total`` 0: a job's state such as ``queued`` or ``succeeded``) is
    one line with its name.

    On a terminal each stage gets a tqdm bar that is redrawn at most every ``min_interval`` seconds
    and stays on screen when the stage ends. Anywhere else (a log file, CI) a bar's carriage returns
    would pile up as noise, so each stage prints one line when it starts, one every ``log_interval``
    seconds while it runs (a long stage is not silent), and one when it ends.
    """

    def __init__(self, stream: IO[str] | None = None, min_interval: float = 0.5, log_interval: float = 30.0) -> None:
        self.stream = stream
        self.min_interval = min_interval
        self.log_interval = log_interval
        self._logged = 0.0
        self._key: tuple[str, int | None] | None = None
        self._bar: Any = None
        self._last: ProgressEvent | None = None

    @property
    def _out(self) -> IO[str]:
        return self.stream or sys.stderr

    def __call__(self, event: ProgressEvent) -> None:
        key = (event.stage, event.target)
        if event.total <= 0 and event.done <= 0:  # a state with nothing to count: queued, starting, succeeded
            if key != self._key:
                self.close()
                print(event.stage, file=self._out, flush=True)
                self._key, self._last = key, None
            return
        if key != self._key:
            self.close()
            self._key = key
            if self._out.isatty():
                from tqdm import tqdm

                desc = event.stage if event.target is None else f"{event.stage} (class {event.target})"
                self._bar = tqdm(total=event.total, desc=desc, file=self._out, mininterval=self.min_interval,
                                 dynamic_ncols=True, unit=f" {event.unit}" if event.unit else "it")
            else:
                unit = f" {event.unit}" if event.unit else ""
                print(f"{event.stage}: started ({event.total}{unit} to do)", file=self._out, flush=True)
            self._logged = time.monotonic()
        self._last = event
        if self._bar is None and time.monotonic() - self._logged >= self.log_interval:
            self._logged = time.monotonic()
            print(event.describe(), file=self._out, flush=True)
        if self._bar is not None:
            self._bar.total = event.total
            if event.eta is not None:
                self._bar.set_postfix_str(f"about {event.eta:.0f} s left", refresh=False)
            self._bar.update(event.done - self._bar.n)  # update() honours mininterval; refresh() would not

    def close(self) -> None:
        """End the current stage's line (call once the work is over, also on failure)."""
        if self._key is None:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._last is not None:
            print(self._last.describe(), file=self._out, flush=True)
        self._key = None

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Meter", "Progress", "ProgressBars", "ProgressEvent", "decode_event", "encode_event", "in_class"]
