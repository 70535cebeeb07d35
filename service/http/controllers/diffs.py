"""``/v1/diffs``: what changed between two checkpoints' circuits (``neurflow.diff/3``).

``POST /v1/diffs`` with ``{"before": SIDE, "after": SIDE}``, each side ``{"job": ID}`` (the circuits of a
job) or ``{"circuits": [ID, ...]}``, and optional ``min_similarity`` and ``min_delta``, answers the
document ``neurflow diff`` writes (:func:`neurflow.atlas.diff.diff_circuits`): each class's groups
matched across the two sides, and what appeared, vanished, grew or shrank, ordered by the importance
gained. That is built from the circuits alone, in the web process, which loads no models.

With ``"reliance": true`` (optional ``related``, ``max_images``) each change also gets its off-class
reliance, and the order follows it: that runs both checkpoints' networks (each side's circuits are of
one registered model) on the second side's dataset, so it is a job of kind ``diff`` in a worker, as
``POST /v1/circuits/{id}/evaluate`` is: everything the web process can check is checked first (a 4xx
naming it), then it waits up to ``wait`` seconds and answers 200 with the document, or 202 with the job.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import msgspec
from litestar import Controller, Response, post
from litestar.params import Parameter

from neurflow.atlas.diff import MAX_IMAGES, MIN_DELTA, MIN_SIMILARITY, diff_circuits
from neurflow.core.class_names import class_folder_names
from neurflow.service.errors import ApiError, Invalid
from neurflow.service.http.answers import submitted
from neurflow.service.http.controllers.atlas import MAX_CIRCUITS, circuit_rows, read_inputs
from neurflow.service.http.controllers.audits import class_map
from neurflow.service.http.controllers.circuits import dataset_present, model_present
from neurflow.service.http.deps import CatalogDep, ExecutorDep, JobsDep, Owner, SettingsDep, StoreDep, provides
from neurflow.service.jobs.policy import circuit_ref
from neurflow.service.jobs.types import DiffJob
from neurflow.service.storage.catalog import Catalog, new_id


class DiffSide(msgspec.Struct, forbid_unknown_fields=True):
    job: str | None = None
    circuits: Annotated[list[str], msgspec.Meta(max_length=MAX_CIRCUITS)] | None = None


class DiffRequest(msgspec.Struct, forbid_unknown_fields=True):
    before: DiffSide
    after: DiffSide
    # bounds checked by diff_circuits, the one place of these rules (a bad value is a 422 naming them)
    min_similarity: float = MIN_SIMILARITY  # Jaccard of member neurons (or an equal label) that pairs two groups
    min_delta: float = MIN_DELTA  # importance change that counts as grew or shrank
    reliance: bool = False  # measure each change's off-class reliance in a worker (both networks, the images)
    related: dict[str, list[int]] = {}  # class index -> classes that share its content legitimately
    max_images: int = MAX_IMAGES  # off-class images per class for the reliance


def _one(rows: list[dict], column: str, side: str, what: str) -> dict:
    if len({row[column] for row in rows}) > 1:
        raise Invalid(f"{side}: the circuits are of several {what}s; the off-class reliance runs one {what} per "
                      "side: give the circuits of one job")
    return rows[0]


def _class_names(catalog: Catalog, owner: str, model_id: str, circuits) -> list[str | None]:
    """By class index, the folder names of the classes: the registered model's class names (registration
    checked that there is one per class), else the circuits'."""
    names = catalog.get_model(owner, model_id)["descriptor"].get("class_names")
    return class_folder_names(names if isinstance(names, list) else None, circuits[0].model.num_classes, circuits)


class DiffController(Controller):
    path = "/diffs"
    tags = ["audits"]
    dependencies = provides("catalog", "jobs", "store", "executor")

    @post("/", summary="What changed between two checkpoints' circuits (neurflow.diff/3)",
          media_type="application/json", status_code=200)
    async def diff(self, catalog: CatalogDep, jobs: JobsDep, store: StoreDep, executor: ExecutorDep,
                   settings: SettingsDep, owner: Owner, data: DiffRequest,
                   wait: float | None = Parameter(default=None, ge=0, le=600,
                                                  description="with reliance: seconds to wait; default: the "
                                                              "server's sync_wait_s")) -> Response:
        def work() -> bytes | dict[str, Any]:
            rows, sides = [], []
            for name, side in (("before", data.before), ("after", data.after)):
                if (side.job is None) == (side.circuits is None):
                    raise ApiError(f"{name}: give either job (the circuits of a job) or circuits (a list of "
                                   f"circuit ids), not {'both' if side.job is not None else 'neither'}")
                ids = ",".join(side.circuits) if side.circuits is not None else None
                rows.append(circuit_rows(catalog, jobs, owner, side.job, ids))
                sides.append([entry.circuit for entry in read_inputs(store, rows[-1])])
            related = class_map(data.related, "related")
            try:
                diff = diff_circuits(sides[0], sides[1], min_similarity=data.min_similarity, min_delta=data.min_delta,
                                     max_images=data.max_images)
            except ValueError as exc:
                raise Invalid(str(exc)) from None
            if not data.reliance:
                if related:
                    raise Invalid("related is for the off-class reliance; send \"reliance\": true with it")
                return msgspec.json.encode(diff)
            if not diff.same_architecture:
                raise Invalid("the off-class reliance zeroes the same neurons in both networks, so it needs two "
                              "checkpoints of one architecture; these circuits' architectures differ: diff them "
                              "without reliance")
            first, second = (_one(r, "model_id", side, "model") for r, side in zip(rows, ("before", "after")))
            _one(rows[1], "dataset_id", "after", "dataset")
            hint = "the off-class reliance runs it"
            job = DiffJob(before=[circuit_ref(r) for r in rows[0]], after=[circuit_ref(r) for r in rows[1]],
                          before_model=model_present(catalog, owner, first, hint),
                          model=model_present(catalog, owner, second, hint),
                          dataset=dataset_present(catalog, owner, second),
                          class_names=_class_names(catalog, owner, second["model_id"], sides[1]),
                          min_similarity=data.min_similarity, min_delta=data.min_delta, max_images=data.max_images,
                          related=related)
            return jobs.create(new_id("job"), owner, job, 1, settings.max_jobs_per_key)

        done = await anyio.to_thread.run_sync(work)
        if isinstance(done, bytes):
            return Response(done, media_type="application/json")
        return await submitted(jobs, executor, owner, done, settings.sync_wait_s if wait is None else wait)
