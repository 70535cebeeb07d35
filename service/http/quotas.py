"""Per-key caps on what a key holds open at once in the web process: SSE job streams and uploads in progress
(``max_streams_per_key``, ``max_uploads_per_key``). Past a cap the request is a 429 with ``Retry-After``,
so one key cannot hold every connection or upload slot of the server. (Queued and running jobs are capped
in the job table itself, :meth:`neurflow.service.jobs.store.JobStore.create`.)"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from neurflow.service.errors import TooMany


class KeyGauge:
    """How many of one kind of thing each key holds now; ``acquire`` refuses past ``limit``."""

    def __init__(self, what: str, setting: str, limit: int, retry_after: int) -> None:
        self.what, self.setting, self.limit, self.retry_after = what, setting, limit, retry_after
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, owner: str) -> None:
        with self._lock:
            held = self._held.get(owner, 0)
            if held >= self.limit:
                raise TooMany(f"this key has {held} {self.what} open; at most {self.limit} at once are accepted "
                              f"({self.setting})", retry_after=self.retry_after)
            self._held[owner] = held + 1

    def release(self, owner: str) -> None:
        with self._lock:
            held = self._held.get(owner, 0) - 1
            if held > 0:
                self._held[owner] = held
            else:
                self._held.pop(owner, None)

    def held(self, owner: str) -> int:
        return self._held.get(owner, 0)

    @contextmanager
    def hold(self, owner: str) -> Iterator[None]:
        self.acquire(owner)
        try:
            yield
        finally:
            self.release(owner)


class Quotas:
    def __init__(self, max_streams: int, max_uploads: int) -> None:
        self.streams = KeyGauge("job event streams", "max_streams_per_key", max_streams, retry_after=15)
        self.uploads = KeyGauge("uploads in progress", "max_uploads_per_key", max_uploads, retry_after=5)
