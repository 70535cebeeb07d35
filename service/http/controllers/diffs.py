"""``/v1/diffs``: what changed between two checkpoints' circuits (``neurflow.diff/1``).

``POST /v1/diffs`` with ``{"before": SIDE, "after": SIDE}``, each side ``{"job": ID}`` (the circuits of a
job) or ``{"circuits": [ID, ...]}``, and optional ``min_similarity`` and ``min_delta``, answers the
document ``neurflow diff`` writes (:func:`neurflow.atlas.diff.diff_circuits`): each class's groups
matched across the two sides, and what appeared, vanished, grew or shrank. It is built from the
circuits alone, in the web process.
"""

from __future__ import annotations

from typing import Annotated

import anyio
import msgspec
from litestar import Controller, Response, post

from neurflow.atlas.diff import MIN_DELTA, MIN_SIMILARITY, diff_circuits
from neurflow.service.errors import ApiError, Invalid
from neurflow.service.http.controllers.atlas import MAX_CIRCUITS, circuit_rows, read_inputs
from neurflow.service.http.deps import CatalogDep, JobsDep, Owner, StoreDep, provides


class DiffSide(msgspec.Struct, forbid_unknown_fields=True):
    job: str | None = None
    circuits: Annotated[list[str], msgspec.Meta(max_length=MAX_CIRCUITS)] | None = None


class DiffRequest(msgspec.Struct, forbid_unknown_fields=True):
    before: DiffSide
    after: DiffSide
    # bounds checked by diff_circuits, the one place of these rules (a bad value is a 422 naming them)
    min_similarity: float = MIN_SIMILARITY  # Jaccard of member neurons (or an equal label) that pairs two groups
    min_delta: float = MIN_DELTA  # importance change that counts as grew or shrank


class DiffController(Controller):
    path = "/diffs"
    tags = ["audits"]
    dependencies = provides("catalog", "jobs", "store")

    @post("/", summary="What changed between two checkpoints' circuits (neurflow.diff/1)",
          media_type="application/json", status_code=200)
    async def diff(self, catalog: CatalogDep, jobs: JobsDep, store: StoreDep, owner: Owner,
                   data: DiffRequest) -> Response[bytes]:
        def work() -> bytes:
            sides = []
            for name, side in (("before", data.before), ("after", data.after)):
                if (side.job is None) == (side.circuits is None):
                    raise ApiError(f"{name}: give either job (the circuits of a job) or circuits (a list of "
                                   f"circuit ids), not {'both' if side.job is not None else 'neither'}")
                ids = ",".join(side.circuits) if side.circuits is not None else None
                rows = circuit_rows(catalog, jobs, owner, side.job, ids)
                sides.append([entry.circuit for entry in read_inputs(store, rows)])
            try:
                diff = diff_circuits(sides[0], sides[1], min_similarity=data.min_similarity, min_delta=data.min_delta)
            except ValueError as exc:
                raise Invalid(str(exc)) from None
            return msgspec.json.encode(diff)

        return Response(await anyio.to_thread.run_sync(work), media_type="application/json")
