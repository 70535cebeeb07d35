"""The worker process: started with ``spawn``, one per device, runs one job at a time.

It talks to the local executor over a private pipe carrying msgspec-JSON messages (no pickles), the
typed structs of :mod:`neurflow.service.jobs.types`:

* in:  ``RunTask`` (the job, typed), ``CancelTask``, ``StopWorker``
* out: ``Hello``, ``Progressed`` (a :class:`~neurflow.progress.ProgressEvent`, as its producer made it),
  ``ClassDone`` (one class of a run is stored), ``Finished`` (the
  task's output), ``Failed``, ``Cancelled``

Heavy things (torch, the user's model, CLIP) are imported and loaded here, never in the web process,
and stay loaded between jobs. A reader thread receives cancel requests while the main thread works;
the progress callback raises :class:`~neurflow.service.executors.context.JobCancelled` at the next
progress report.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import traceback
from multiprocessing.connection import Connection

import msgspec

from neurflow.progress import ProgressEvent
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
    ToWorker,
)

log = logging.getLogger("neurflow.worker")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ToWorker).decode


class _Channel:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, msg: FromWorker) -> None:
        with self.lock:
            self.conn.send_bytes(_encode(msg))


def worker_main(conn: Connection, settings_json: bytes, name: str, device: str) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker[{name}] %(levelname)s %(message)s")
    from neurflow.service.settings import Settings

    settings = msgspec.json.decode(settings_json, type=Settings)
    channel = _Channel(conn)
    inbox: queue.Queue[RunTask | None] = queue.Queue()
    cancel = threading.Event()
    current: dict[str, str | None] = {"job": None}

    def reader() -> None:
        while True:
            try:
                msg = _decode(conn.recv_bytes())
            except (EOFError, OSError, msgspec.DecodeError):
                os._exit(0)  # the local executor is gone (or speaks another protocol); its job is requeued
            if isinstance(msg, CancelTask):
                if msg.job_id == current["job"]:
                    cancel.set()
            elif isinstance(msg, StopWorker):
                inbox.put(None)
                return
            else:
                inbox.put(msg)

    threading.Thread(target=reader, daemon=True, name="worker-reader").start()

    from neurflow.service.executors.gpu import apply_determinism, resolve_device

    try:
        device = resolve_device(device)
    except ValueError as exc:
        log.error("worker %s cannot start: %s", name, exc)
        sys.exit(3)
    apply_determinism(settings.deterministic)
    import torch

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    from neurflow.core.memory import malloc_for_fit
    from neurflow.service.executors.context import JobCancelled, TaskContext
    from neurflow.service.executors.tasks import run_task

    ctx = TaskContext(settings, device)
    # run in an empty folder: a bare name in a job (a pretrained tag, say) can never open a server file
    cwd = settings.scratch_path / f"cwd-{name}"
    cwd.mkdir(parents=True, exist_ok=True)
    os.chdir(cwd)
    channel.send(Hello(pid=os.getpid(), device=device))
    while True:
        task = inbox.get()
        if task is None:
            break
        job_id = task.id
        current["job"] = job_id
        cancel.clear()

        def progress(event: ProgressEvent, job_id: str = job_id) -> None:
            if cancel.is_set():
                raise JobCancelled()
            channel.send(Progressed(job_id=job_id, event=event))  # throttled where it was made (neurflow.progress.Meter)

        ctx.emit = lambda circuit, job_id=job_id: channel.send(ClassDone(job_id=job_id, circuit=circuit))
        # a fit job sets its preset's trade of peak memory against page faults (core/memory.py)
        malloc_for_fit(task.job.spec.engine.preset if isinstance(task.job, RunJob) else "exact")
        try:
            output = run_task(task, ctx, progress)
            if cancel.is_set():
                raise JobCancelled()
            channel.send(Finished(job_id=job_id, output=output))
        except JobCancelled:
            channel.send(Cancelled(job_id=job_id))
        except Exception as exc:  # noqa: BLE001 - every failure is reported, the worker lives on
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            channel.send(Failed(job_id=job_id, error=_describe(exc)))
        finally:
            current["job"] = None
    sys.exit(0)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (ValueError, KeyError, FileNotFoundError)):
        return text if not isinstance(exc, KeyError) else f"missing {text}"
    return f"{type(exc).__name__}: {text}"
