"""Progress reporting shared by every layer: one callback type, and its rendering for a terminal.

Long stages report ``progress(stage, done, total)``. The callback may raise to cancel the work (the
service's workers do that when a job is cancelled), so callers call it between units of work, never
while holding something they must release.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO

#: ``progress(stage, done, total)``; may raise to cancel.
Progress = Callable[[str, int, int], None]


class ProgressBars:
    """Renders progress callbacks as one line per stage.

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
        self._stage: str | None = None
        self._bar = None
        self._started = 0.0
        self._done = 0
        self._total = 0

    @property
    def _out(self) -> IO[str]:
        return self.stream or sys.stderr

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.close()
            self._stage, self._started = stage, time.monotonic()
            if self._out.isatty():
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=stage, file=self._out, mininterval=self.min_interval,
                                 dynamic_ncols=True)
            else:
                print(f"{stage}: started ({total} to do)", file=self._out, flush=True)
            self._logged = self._started
        self._done, self._total = done, total
        if self._bar is None and time.monotonic() - self._logged >= self.log_interval:
            self._logged = time.monotonic()
            print(f"{stage}: {done}/{total} after {self._logged - self._started:.0f} s", file=self._out, flush=True)
        if self._bar is not None:
            self._bar.total = total
            self._bar.update(done - self._bar.n)  # update() honours mininterval; refresh() would not

    def close(self) -> None:
        """End the current stage's line (call once the work is over, also on failure)."""
        if self._stage is None:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        else:
            print(f"{self._stage}: {self._done}/{self._total} in {time.monotonic() - self._started:.1f} s",
                  file=self._out, flush=True)
        self._stage = None

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Progress", "ProgressBars"]
