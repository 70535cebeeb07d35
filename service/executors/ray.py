"""The Ray executor (``executor = "ray"``, extra ``neurflow[ray]``): a job's units of work as Ray tasks.

The service keeps the job table and the catalog; Ray only runs work. For a run job, one Ray task
computes what the classes share (the forward pass over all images: :func:`units.prepare`, its logits
go through Ray's object store) and one task per class not yet stored fits it (:func:`units.fit_one`)
and stores it (:func:`units.store_class`), so both executors make the same documents. When the job
labels its circuits, the fitted class goes to a ``ClipLabeler`` actor that keeps CLIP (and the
vocabulary's embedding) loaded for the whole job. Relabel, debug and evaluate jobs are one task each.

* Resources: each task asks for ``ray_num_cpus`` CPUs and ``ray_num_gpus`` GPUs (0 allowed).
* Artifacts: written by the tasks to the artifact store (``storage_url``; a local root must be a
  folder every Ray node sees, an ``s3://`` root needs nothing shared).
* Finished classes are registered as their tasks finish; a requeued job skips them.
* Cancel: ``ray.cancel`` of the job's tasks (forced for tasks, polite for the actor's calls).
* A Ray worker that dies mid-task: Ray runs the task again (``max_retries``); the same class folder
  is rewritten and registered once, and the fit continues from the stages the dead task finished
  (kept in the artifact store, which every node sees: :mod:`~neurflow.service.executors.stages`).
* Limits and progress (:mod:`neurflow.service.executors.ray_guard`): every unit of work reports its start, its
  stages and its end to a ``ProgressBoard`` actor that the service drains each round. A unit running
  longer than ``job_timeout_s`` (the service's clock, from its start) or a task process over
  ``worker_memory_mb`` (its own watchdog kills it) fails the job with the local executor's reason and
  cancels the job's tasks; classes already stored stay. Stage reports become the same job stages as
  the local executor's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
import ray

from neurflow.progress import Meter
from neurflow.service.executors.base import Executor, memory_reason, timeout_reason
from neurflow.service.executors.ray_guard import (
    ProgressBoard,
    UnitEnded,
    UnitOverMemory,
    UnitStage,
    UnitStarted,
    decode_events,
    memory_limit_bytes,
    unit,
)
from neurflow.service.jobs.store import JobStore
from neurflow.service.jobs.types import NewCircuit, RunJob, RunTask, TaskOutput, decode_job
from neurflow.service.settings import Settings
from neurflow.service.storage.catalog import Catalog

log = logging.getLogger("neurflow.ray")
_task_encoder = msgspec.json.Encoder()
RETRIES = 3  # runs of a task after its worker process died (Ray's system-failure retries)

# -- what runs inside Ray worker processes ------------------------------------------------------

_contexts: dict[bytes, Any] = {}
_setups: dict[tuple[str, int], Any] = {}


def _context(settings_json: bytes):
    """This process's task context (models stay loaded between tasks), made once per settings."""
    if settings_json not in _contexts:
        import torch

        from neurflow.service.executors.context import TaskContext

        settings = msgspec.json.decode(settings_json, type=Settings)
        if settings.storage_url:  # a remote store: scratch and cache on this node
            node_dir = os.path.join(tempfile.gettempdir(), f"neurflow-ray-{os.getuid()}")
            settings = msgspec.structs.replace(settings, data_dir=node_dir)
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        device = "cuda" if ray.get_gpu_ids() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPUs
        from neurflow.service.executors.gpu import apply_determinism

        apply_determinism(settings.deterministic)
        _contexts[settings_json] = TaskContext(settings, device)
    return _contexts[settings_json]


def _setup(settings_json: bytes, task: RunTask, logits):
    """The job's shared setup, kept while this process works on the same job."""
    import torch

    from neurflow.service.executors.units import prepare

    key = (task.id, task.attempt)
    if key not in _setups:
        _setups.clear()
        _setups[key] = prepare(task.job, _context(settings_json), logits=torch.as_tensor(logits), job_id=task.id)
    return _setups[key]


def _unit(settings_json: bytes, board, task: RunTask, name: str, target: int | None = None):
    """The unit's guard (:func:`ray_guard.unit`) under this server's memory limit per task process."""
    settings = msgspec.json.decode(settings_json, type=Settings)
    limit = memory_limit_bytes(settings.worker_memory_mb, settings.ray_num_cpus)
    return unit(board, task.id, task.attempt, name, target, limit)


def _prepare_task(settings_json: bytes, task_json: bytes, board):
    from neurflow.service.executors.units import prepare

    task = msgspec.json.decode(task_json, type=RunTask)
    with _unit(settings_json, board, task, "prepare") as progress:
        # the first of the job's tasks to prepare it: "auto" layers are chosen here, once, and kept
        return prepare(task.job, _context(settings_json), progress, job_id=task.id).logits.numpy()


def _fit_task(settings_json: bytes, task_json: bytes, target: int, logits, board) -> bytes:
    """Fit one class; return its circuit document (to be labeled and stored by the actor)."""
    from neurflow.service.executors.units import fit_one

    task = msgspec.json.decode(task_json, type=RunTask)
    with _unit(settings_json, board, task, f"class {target}", target) as progress:
        ctx = _context(settings_json)
        return fit_one(_setup(settings_json, task, logits), target, ctx, progress, task.id).to_json().encode()


def _class_task(settings_json: bytes, task_json: bytes, target: int, logits, board) -> bytes:
    """Fit and store one class (a job without labeling)."""
    from neurflow.service.executors.units import run_class

    task = msgspec.json.decode(task_json, type=RunTask)
    with _unit(settings_json, board, task, f"class {target}", target) as progress:
        ctx = _context(settings_json)
        return _task_encoder.encode(run_class(task.job, _setup(settings_json, task, logits), task.id, task.attempt,
                                              target, ctx, progress))


def _whole_task(settings_json: bytes, task_json: bytes, board) -> bytes:
    """A job that is one unit (relabel, debug, evaluate)."""
    from neurflow.service.executors.tasks import run_task

    task = msgspec.json.decode(task_json, type=RunTask)
    with _unit(settings_json, board, task, "the job") as progress:
        return _task_encoder.encode(run_task(task, _context(settings_json), progress))


class ClipLabeler:
    """A Ray actor that labels and stores fitted classes; CLIP stays loaded in it between classes."""

    def __init__(self, settings_json: bytes) -> None:
        self.settings_json = settings_json

    def store(self, task_json: bytes, circuit_json: bytes, board) -> bytes:
        from neurflow.core.circuit import Circuit
        from neurflow.service.executors.units import store_class

        task = msgspec.json.decode(task_json, type=RunTask)
        circuit = Circuit.from_json(circuit_json)
        target = circuit.target.class_index
        with _unit(self.settings_json, board, task, f"labels of class {target}", target) as progress:
            return _task_encoder.encode(store_class(task.job, circuit, task.id, task.attempt,
                                                    _context(self.settings_json), progress))


# -- the executor (in the service process) -------------------------------------------------------


@dataclass
class _RayJob:
    id: str
    job: Any
    total: int
    attempt: int
    pending: dict[Any, int | None] = field(default_factory=dict)  # ref -> class (None: the whole job)
    helpers: list[Any] = field(default_factory=list)  # refs the pending ones depend on
    actor: Any = None
    stored: int = 0
    cancelling: bool = False
    started: dict[str, float] = field(default_factory=dict)  # unit -> when the service saw it start
    classes: Meter | None = None  # the job's count of stored classes, as progress events


class RayExecutor(Executor):
    """Runs jobs on a Ray cluster (``ray_address``) or a local Ray started here."""

    def __init__(self, settings: Settings, jobs: JobStore, catalog: Catalog) -> None:
        super().__init__(settings, jobs, catalog)
        self._running: dict[str, _RayJob] = {}
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._connected = False
        self._jobs_done = 0
        self._settings_json = msgspec.json.encode(msgspec.structs.replace(settings, data_dir=str(settings.data_path)))

    # -- lifecycle -------------------------------------------------------------------------------
    def _connect(self) -> None:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True,
                                   "configure_logging": False}
        if self.settings.ray_address:
            ray.init(address=self.settings.ray_address, **options)
        else:
            ray.init(**options)
        self._remote = {
            "prepare": ray.remote(_prepare_task),
            "fit": ray.remote(_fit_task),
            "class": ray.remote(_class_task),
            "whole": ray.remote(_whole_task),
        }
        self._actor_class = ray.remote(ClipLabeler)
        # 0 CPUs: reporting must never wait for a CPU the job's own tasks hold
        self._board = ray.remote(ProgressBoard).options(num_cpus=0, max_restarts=-1).remote()
        self._connected = True
        log.info("connected to Ray: %s", ray.cluster_resources())

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await anyio.to_thread.run_sync(self._connect)
        recovered = await anyio.to_thread.run_sync(self.jobs.recover)
        if recovered:
            log.warning("recovered %d job(s) left running by a previous server: %s", len(recovered), recovered)
        self._task = asyncio.create_task(self._run(), name="nf-ray")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for rj in list(self._running.values()):
            await anyio.to_thread.run_sync(self._cancel_refs, rj)
            # a graceful stop does not use up an attempt; its stored classes are kept
            await anyio.to_thread.run_sync(self.jobs.release, rj.id, "the server stopped; requeued")
        self._running.clear()
        if self._connected:
            await anyio.to_thread.run_sync(ray.shutdown)

    def status(self) -> list[dict[str, Any]]:
        gpus, cpus = self.settings.ray_num_gpus, self.settings.ray_num_cpus
        return [{"name": "ray", "device": f"ray tasks ({cpus:g} CPU, {gpus:g} GPU each)",
                 "state": ("busy" if self._running else "idle") if self._connected else "starting",
                 "pid": None, "job_id": next(iter(self._running), None), "restarts": 0,
                 "jobs_done": self._jobs_done, "alive": self._connected, "address": self.settings.ray_address,
                 "jobs_running": len(self._running)}]

    # -- the loop --------------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            try:
                await self._claim()
                if self._running:
                    await anyio.to_thread.run_sync(self._poll)
                    await self._check_cancels()
            except Exception:  # noqa: BLE001 - the executor must survive anything
                log.exception("ray executor error")
            try:
                await asyncio.wait_for(self._wake.wait(), 0.05 if self._running else 0.25)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _claim(self) -> None:
        while len(self._running) < max(1, self.settings.ray_max_jobs):
            row = await anyio.to_thread.run_sync(self.jobs.next_queued)
            if row is None or not await anyio.to_thread.run_sync(self.jobs.claim, row["id"], "ray"):
                return
            row = await anyio.to_thread.run_sync(self.jobs.row, row["id"])
            try:
                job = decode_job(row["job"])
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await anyio.to_thread.run_sync(lambda: self.jobs.finish(row["id"], "failed",
                                                                        error=f"the stored job cannot be read: {exc}"))
                self.notify(row["id"])
                continue
            await anyio.to_thread.run_sync(self._submit, row, job)
            self.notify(row["id"])

    def _options(self) -> dict[str, Any]:
        return {"num_cpus": self.settings.ray_num_cpus, "num_gpus": self.settings.ray_num_gpus,
                "max_retries": RETRIES}

    def _submit(self, row, job) -> None:
        job_id = row["id"]
        if not isinstance(job, RunJob):
            task = RunTask(id=job_id, attempt=row["attempt"], job=job)
            rj = _RayJob(id=job_id, job=job, total=1, attempt=row["attempt"])
            rj.pending[self._remote["whole"].options(**self._options()).remote(
                self._settings_json, _task_encoder.encode(task), self._board)] = None
            self._running[job_id] = rj
            return
        skip = self.finished_classes(job_id)
        task = RunTask(id=job_id, attempt=row["attempt"], job=job, skip=skip)
        todo = [c for c in job.spec.target_classes() if c not in set(skip)]
        rj = _RayJob(id=job_id, job=job, total=len(job.spec.target_classes()), attempt=row["attempt"],
                     stored=len(skip))
        self._running[job_id] = rj
        rj.classes = Meter(lambda event: self.jobs.progress(job_id, event))
        rj.classes("classes", rj.stored, rj.total, "classes")
        if not todo:
            return
        task_json = _task_encoder.encode(task)
        logits = self._remote["prepare"].options(**self._options()).remote(self._settings_json, task_json,
                                                                           self._board)
        rj.helpers.append(logits)
        if job.labeling is not None:
            rj.actor = self._actor_class.options(num_cpus=self.settings.ray_num_cpus, num_gpus=0, max_restarts=RETRIES,
                                                 max_task_retries=RETRIES).remote(self._settings_json)
        for target in todo:
            if rj.actor is not None:
                fitted = self._remote["fit"].options(**self._options()).remote(self._settings_json, task_json, target,
                                                                                 logits, self._board)
                rj.helpers.append(fitted)
                ref = rj.actor.store.remote(task_json, fitted, self._board)
            else:
                ref = self._remote["class"].options(**self._options()).remote(self._settings_json, task_json, target,
                                                                              logits, self._board)
            rj.pending[ref] = target

    def _poll(self) -> None:
        """Apply the units' reports and the limits, then collect finished tasks (waits at most 0.2 s).
        Reports go first: a task its watchdog killed must fail the job for being over the memory limit,
        not look like a crash."""
        self._drain()
        self._check_time()
        owners = {ref: rj for rj in self._running.values() for ref in rj.pending}
        if not owners:
            self._finish_idle()
            return
        ready, _ = ray.wait(list(owners), num_returns=len(owners), timeout=0.2, fetch_local=True)
        for ref in ready:
            rj = owners[ref]
            target = rj.pending.pop(ref, None)
            if rj.id not in self._running:
                continue
            try:
                value = ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                self._end(rj, "cancelled", "cancelled on request")
                continue
            except ray.exceptions.RayError as exc:
                self._end(rj, "failed", _describe(exc))
                continue
            if target is None and not isinstance(rj.job, RunJob):
                self.complete(rj.id, msgspec.json.decode(value, type=TaskOutput))
                self._done(rj)
                continue
            if self.register_class(rj.id, msgspec.json.decode(value, type=NewCircuit)):
                rj.stored += 1
                if rj.classes is not None:
                    rj.classes("classes", rj.stored, rj.total, "classes")
            self.notify_threadsafe(rj.id)
        self._finish_idle()

    def _drain(self) -> None:
        try:
            events = decode_events(ray.get(self._board.drain.remote(), timeout=10))
        except (ray.exceptions.RayError, msgspec.DecodeError) as exc:  # the board restarts; try next round
            log.warning("cannot read the Ray tasks' progress: %s", exc)
            return
        stages: dict[str, UnitStage] = {}
        for ev in events:
            rj = self._running.get(ev.job_id)
            if rj is None or ev.attempt != rj.attempt or rj.cancelling:
                continue  # a job that ended (or a stale attempt): nothing to report or to limit
            if isinstance(ev, UnitStarted):
                rj.started[ev.unit] = time.monotonic()
            elif isinstance(ev, UnitEnded):
                rj.started.pop(ev.unit, None)
            elif isinstance(ev, UnitStage):
                stages[rj.id] = ev  # only the newest reaches the table, as the local worker's throttle does
            elif isinstance(ev, UnitOverMemory):
                log.error("job %s: %s used %d MB (limit %d MB)", rj.id, ev.unit, ev.rss_mb, ev.limit_mb)
                self._end(rj, "failed", memory_reason(ev.rss_mb, ev.limit_mb,
                                                      f"the Ray task of {ev.unit} was killed and the job's "
                                                      "other tasks cancelled"))
        for job_id, ev in stages.items():
            rj = self._running.get(job_id)
            if rj is None or rj.cancelling:
                continue
            event = ev.event.in_class(ev.target, rj.stored, rj.total) if ev.target is not None and rj.total > 1 \
                else ev.event
            self.jobs.progress(job_id, event)
            self.notify_threadsafe(job_id)

    def _check_time(self) -> None:
        """``job_timeout_s`` per unit of work, from the moment it started, as the local executor's clock
        restarts at every stored class."""
        limit, now = self.settings.job_timeout_s, time.monotonic()
        for rj in list(self._running.values()):
            over = [name for name, since in rj.started.items() if now - since > limit]
            if over and not rj.cancelling:
                log.error("job %s: %s ran longer than %.0f s", rj.id, over[0], limit)
                self._end(rj, "failed", timeout_reason(limit, f"{over[0]} was still running; the job's Ray "
                                                              "tasks were cancelled"))

    def _finish_idle(self) -> None:
        for rj in list(self._running.values()):
            if not rj.pending and isinstance(rj.job, RunJob) and not rj.cancelling:
                self.complete(rj.id, TaskOutput(circuits=[]))
                self._done(rj)

    def _done(self, rj: _RayJob) -> None:
        self._running.pop(rj.id, None)
        self._jobs_done += 1
        if rj.actor is not None:
            ray.kill(rj.actor)
        self.notify_threadsafe(rj.id)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.wake)

    def _end(self, rj: _RayJob, state: str, error: str) -> None:
        self._cancel_refs(rj)
        self.jobs.finish(rj.id, state, error=error)
        self._done(rj)

    def _cancel_refs(self, rj: _RayJob) -> None:
        rj.cancelling = True
        for ref in list(rj.pending) + rj.helpers:
            try:
                ray.cancel(ref, force=rj.actor is None or ref in rj.helpers, recursive=True)
            except Exception:  # noqa: BLE001 - already finished, or an actor call (not forcible)
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001
                    pass

    async def _check_cancels(self) -> None:
        for rj in list(self._running.values()):
            row = await anyio.to_thread.run_sync(self.jobs.row, rj.id)
            if row is not None and row["cancel_requested"] and not rj.cancelling:
                await anyio.to_thread.run_sync(self._end, rj, "cancelled", "cancelled on request")
                self.notify(rj.id)


def _describe(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        text = str(cause) or type(cause).__name__
        return text if isinstance(cause, ValueError) else f"{type(cause).__name__}: {text}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
