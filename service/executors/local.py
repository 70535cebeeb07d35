"""The local executor: worker subprocesses, dispatch, progress fan-out, cancellation, crash handling.

Lives in the web process's event loop. It is the only component that moves a job out of
``running``. One worker process per device is started with the ``spawn`` context; each has a
private pipe and a reader thread that forwards its messages, in order, to one consumer task.

* Dispatch: an idle worker claims the oldest queued job of the highest priority.
* Cancel: a queued job is cancelled by the API directly; for a running one the worker is told, its
  progress callback stops the job, and if it has not stopped after ``cancel_grace_s`` the worker is
  killed and replaced.
* Crash: when a worker dies its job is requeued while it has attempts left (``max_attempts``,
  default 2: one retry) and failed with the reason otherwise; a new worker is started. The next
  attempt continues from the stages the killed one finished (:mod:`.stages`).
* Restart: a graceful stop gives a running job back to the queue (the attempt does not count); jobs
  still ``running`` in the table at startup (the server was killed) are requeued or failed as above.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import anyio
import msgspec

from neurflow.service.executors.base import Executor, memory_reason, timeout_reason
from neurflow.service.jobs.store import JobStore
from neurflow.service.jobs.types import (
    Cancelled,
    CancelTask,
    ClassDone,
    Failed,
    Finished,
    FromWorker,
    Hello,
    Progressed,
    RunJob,
    RunTask,
    StopWorker,
    decode_job,
)
from neurflow.service.settings import Settings
from neurflow.service.storage.catalog import Catalog

log = logging.getLogger("neurflow.manager")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(FromWorker).decode


class WorkerHandle:
    def __init__(self, name: str, device: str) -> None:
        self.name = name
        self.device = device
        self.process: Any = None
        self.conn: Any = None
        self.state = "stopped"  # starting | idle | busy | dead | stopped
        self.job_id: str | None = None
        self.pid: int | None = None
        self.started_at = 0.0
        self.cancel_sent_at: float | None = None
        self.restarts = 0
        self.jobs_done = 0
        self.busy_since = 0.0

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "state": self.state, "pid": self.pid,
                "job_id": self.job_id, "restarts": self.restarts, "jobs_done": self.jobs_done,
                "alive": bool(self.process is not None and self.process.is_alive())}


def _rss_bytes(pid: int | None) -> int:
    """Resident memory of a process (Linux /proc); 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def describe_exit(code: int | None) -> str:
    if code is None:
        return "the worker process stopped responding"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited with code {code}"


class LocalExecutor(Executor):
    """The local executor: worker subprocesses of this machine."""

    def __init__(self, settings: Settings, jobs: JobStore, catalog: Catalog) -> None:
        super().__init__(settings, jobs, catalog)
        self.workers = [WorkerHandle(f"w{i}", dev) for i, dev in enumerate(settings.device_list())]
        self._ctx = multiprocessing.get_context("spawn")
        self._events: asyncio.Queue[tuple[WorkerHandle, Any, FromWorker | None]] | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self._unrecorded: list[tuple[str, Any]] = []  # (job id, write) kept in order while the database is full
        # workers run in their own folder: hand them absolute paths
        self._settings_json = msgspec.json.encode(msgspec.structs.replace(settings, data_dir=str(settings.data_path)))

    # -- lifecycle -------------------------------------------------------------------------------
    def _lock_data_dir(self) -> None:
        """One local executor per data dir: a second server would requeue the first one's running jobs."""
        import fcntl

        path = self.settings.data_path / "manager.lock"
        self._lock_file = open(path, "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise RuntimeError(f"another NeurFlow server is using the data dir {self.settings.data_path}; "
                               "stop it or choose another --data-dir") from None

    async def start(self) -> None:
        self._lock_data_dir()
        self._loop = asyncio.get_running_loop()
        self._events = asyncio.Queue()
        self._wake = asyncio.Event()
        recovered = await anyio.to_thread.run_sync(self.jobs.recover)
        if recovered:
            log.warning("recovered %d job(s) left running by a previous server: %s", len(recovered), recovered)
        for handle in self.workers:
            self._spawn(handle)
        self._tasks = [asyncio.create_task(self._consume(), name="nf-events"),
                       asyncio.create_task(self._dispatch_loop(), name="nf-dispatch")]

    async def stop(self) -> None:
        self._stopping = True
        for handle in self.workers:
            try:
                if handle.conn is not None:
                    handle.conn.send_bytes(_encode(StopWorker()))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 3.0
        for handle in self.workers:
            proc = handle.process
            if proc is None:
                continue
            while proc.is_alive() and time.monotonic() < deadline and handle.state != "busy":
                await asyncio.sleep(0.05)
            if proc.is_alive():
                proc.kill()
            await anyio.to_thread.run_sync(proc.join, 5.0)
            if handle.state == "busy" and handle.job_id:
                # a graceful stop does not use up an attempt: the job simply waits for the next start
                job_id = handle.job_id
                await anyio.to_thread.run_sync(self.jobs.release, job_id, "the server stopped; requeued")
            handle.state = "stopped"
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        lock = getattr(self, "_lock_file", None)
        if lock is not None:
            lock.close()

    def _spawn(self, handle: WorkerHandle) -> None:
        from neurflow.service.executors.worker import worker_main

        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=worker_main, args=(child, self._settings_json, handle.name, handle.device),
                                 name=f"neurflow-worker-{handle.name}", daemon=True)
        proc.start()
        child.close()
        handle.process, handle.conn, handle.pid = proc, parent, proc.pid
        handle.state, handle.job_id, handle.cancel_sent_at = "starting", None, None
        handle.started_at = time.monotonic()
        loop, events = self._loop, self._events
        assert loop is not None and events is not None

        def reader(conn=parent, proc=proc) -> None:
            while True:
                try:
                    msg = _decode(conn.recv_bytes())
                except (EOFError, OSError, msgspec.DecodeError):  # a malformed message ends the worker too
                    loop.call_soon_threadsafe(events.put_nowait, (handle, proc, None))
                    return
                loop.call_soon_threadsafe(events.put_nowait, (handle, proc, msg))

        threading.Thread(target=reader, daemon=True, name=f"nf-reader-{handle.name}").start()
        log.info("started worker %s (pid %s, device %s)", handle.name, proc.pid, handle.device)

    def status(self) -> list[dict[str, Any]]:
        return [w.view() for w in self.workers]

    # -- event consumer --------------------------------------------------------------------------
    async def _consume(self) -> None:
        assert self._events is not None
        while True:
            handle, proc, msg = await self._events.get()
            try:
                if proc is not handle.process:
                    continue  # a message from a worker that was already replaced
                if msg is None:
                    await self._on_exit(handle)
                else:
                    await self._on_message(handle, msg)
            except Exception:  # noqa: BLE001 - the executor must survive anything
                log.exception("error handling worker event %r", msg)

    async def _on_message(self, handle: WorkerHandle, msg: FromWorker) -> None:
        if isinstance(msg, Hello):
            handle.state = "idle"
            self.wake()
            return
        job_id = msg.job_id
        if job_id != handle.job_id:
            return
        if isinstance(msg, Progressed):
            await anyio.to_thread.run_sync(self.jobs.progress, job_id, msg.event)
        elif isinstance(msg, ClassDone):
            handle.busy_since = time.monotonic()  # job_timeout_s limits each class of a batch, not the batch
            await self._record(job_id, lambda: self.register_class(job_id, msg.circuit))
        elif isinstance(msg, (Finished, Failed, Cancelled)):
            # the worker is free whatever happens to the write: a full disk must not wedge the queue (#13)
            self._release(handle)
            if isinstance(msg, Finished):
                await self._record(job_id, lambda: self.complete(job_id, msg.output))
            elif isinstance(msg, Failed):
                await self._record(job_id, lambda: self.jobs.finish(job_id, "failed", error=msg.error))
            else:
                await self._record(job_id, lambda: self.jobs.finish(job_id, "cancelled", error="cancelled on request"))
        self.notify(job_id)

    async def _record(self, job_id: str, write: Any) -> None:
        """Write a job's circuit or end; when the database cannot be written (disk full) keep the write
        and retry it from the dispatch loop until it goes through, so the server recovers by itself.
        Writes stay in order: while some wait, later ones wait behind them."""
        if self._unrecorded:
            self._unrecorded.append((job_id, write))
            return
        try:
            await anyio.to_thread.run_sync(write)
        except Exception as exc:  # noqa: BLE001 - sqlite3.OperationalError "database or disk is full", ...
            log.error("cannot record job %s (%s); retrying until the database can be written", job_id, exc)
            self._unrecorded.append((job_id, write))

    async def _retry_records(self) -> None:
        while self._unrecorded:
            job_id, write = self._unrecorded[0]
            try:
                await anyio.to_thread.run_sync(write)
            except Exception:  # noqa: BLE001 - still full: try again on the next round
                return
            self._unrecorded.pop(0)
            log.warning("recorded job %s after the database became writable again", job_id)
            self.notify(job_id)

    async def _check_limits(self, handle: WorkerHandle, now: float) -> None:
        """The per-job wall-clock limit and the per-worker memory limit: the job fails with the reason
        and the worker is killed (and replaced by ``_on_exit``)."""
        reason = None
        if now - handle.busy_since > self.settings.job_timeout_s:
            reason = timeout_reason(self.settings.job_timeout_s, "the worker was replaced")
        else:
            rss, limit = _rss_bytes(handle.pid), self.settings.worker_memory_bytes
            if rss > limit:
                reason = memory_reason(rss >> 20, limit >> 20, "the worker was replaced")
        if reason is None:
            return
        job_id, handle.job_id = handle.job_id, None  # nothing else ends this job now
        log.error("job %s: %s", job_id, reason)
        handle.process.kill()
        await self._record(job_id, lambda: self.jobs.finish(job_id, "failed", error=reason))
        self.notify(job_id)

    def _release(self, handle: WorkerHandle) -> None:
        handle.state, handle.job_id, handle.cancel_sent_at = "idle", None, None
        handle.jobs_done += 1
        self.wake()

    async def _on_exit(self, handle: WorkerHandle) -> None:
        if handle.state in ("dead", "stopped") or self._stopping:
            return
        handle.state = "dead"
        proc = handle.process
        await anyio.to_thread.run_sync(proc.join, 2.0)
        if proc.is_alive():
            proc.kill()
            await anyio.to_thread.run_sync(proc.join, 2.0)
        reason = describe_exit(proc.exitcode)
        job_id = handle.job_id
        log.error("worker %s (pid %s) died: %s; job: %s", handle.name, handle.pid, reason, job_id)
        if job_id:
            await anyio.to_thread.run_sync(self._after_crash, job_id, reason)
            self.notify(job_id)
        handle.restarts += 1
        if not self._stopping:
            if handle.restarts > 3:
                await asyncio.sleep(min(30.0, 2.0 ** min(handle.restarts - 3, 5)))
            if not self._stopping:
                self._spawn(handle)

    def _after_crash(self, job_id: str, reason: str) -> None:
        row = self.jobs.row(job_id)
        if row is None or row["state"] != "running":
            return
        if row["cancel_requested"]:
            self.jobs.finish(job_id, "cancelled", error="cancelled on request (the worker was stopped)")
        elif row["attempt"] < row["max_attempts"]:
            self.jobs.requeue(job_id, f"{reason} during attempt {row['attempt']}; requeued for attempt "
                                      f"{row['attempt'] + 1} of {row['max_attempts']}")
        else:
            self.jobs.finish(job_id, "failed", error=f"{reason} during attempt {row['attempt']} of {row['max_attempts']} "
                                                     f"(stage: {row['stage'] or 'unknown'})")

    # -- dispatch --------------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            try:
                await self._dispatch_once()
            except Exception:  # noqa: BLE001
                log.exception("dispatch error")
            try:
                await asyncio.wait_for(self._wake.wait(), 0.25)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _dispatch_once(self) -> None:
        await self._retry_records()
        now = time.monotonic()
        for handle in self.workers:
            proc = handle.process
            if proc is None or handle.state in ("dead", "stopped"):
                continue
            if not proc.is_alive():
                await self._on_exit(handle)
                continue
            if handle.state == "starting" and now - handle.started_at > self.settings.worker_start_timeout_s:
                log.error("worker %s did not start within %.0f s; restarting", handle.name,
                          self.settings.worker_start_timeout_s)
                proc.kill()
                continue
            if handle.state == "busy" and handle.job_id:
                await self._check_cancel(handle, now)
            if handle.state == "busy" and handle.job_id:
                await self._check_limits(handle, now)
            if handle.state == "idle":
                await self._assign(handle)

    async def _check_cancel(self, handle: WorkerHandle, now: float) -> None:
        row = await anyio.to_thread.run_sync(self.jobs.row, handle.job_id)
        if row is None or not row["cancel_requested"]:
            return
        if handle.cancel_sent_at is None:
            handle.cancel_sent_at = now
            try:
                handle.conn.send_bytes(_encode(CancelTask(job_id=handle.job_id)))
            except (OSError, ValueError):
                pass
        elif now - handle.cancel_sent_at > self.settings.cancel_grace_s:
            log.warning("job %s did not stop within %.0f s of its cancel; killing worker %s", handle.job_id,
                        self.settings.cancel_grace_s, handle.name)
            handle.process.kill()

    async def _assign(self, handle: WorkerHandle) -> None:
        row = await anyio.to_thread.run_sync(self.jobs.next_queued)
        if row is None:
            return
        claimed = await anyio.to_thread.run_sync(self.jobs.claim, row["id"], handle.name)
        if not claimed:
            return
        row = await anyio.to_thread.run_sync(self.jobs.row, row["id"])
        try:
            job = decode_job(row["job"])
            skip = await anyio.to_thread.run_sync(self.finished_classes, row["id"]) if isinstance(job, RunJob) else []
            task = RunTask(id=row["id"], attempt=row["attempt"], job=job, skip=skip)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:  # a row this version cannot read
            await anyio.to_thread.run_sync(lambda: self.jobs.finish(row["id"], "failed",
                                                                    error=f"the stored job cannot be read: {exc}"))
            self.notify(row["id"])
            return
        handle.state, handle.job_id, handle.cancel_sent_at = "busy", row["id"], None
        handle.busy_since = time.monotonic()
        try:
            handle.conn.send_bytes(_encode(task))
        except (OSError, ValueError):
            await self._on_exit(handle)
        self.notify(row["id"])
