"""``GET /health``: liveness and readiness (database, artifact store, workers). 503 when not ready."""

from __future__ import annotations

import anyio
from litestar import Response, get

from neurflow import __version__
from neurflow.service.http.deps import DatabaseDep, ExecutorDep, JobsDep, StoreDep, provides
from neurflow.service.http.schemas import HealthOut


@get("/health", tags=["health"], summary="Liveness and readiness", opt={"exclude_from_auth": True},
     dependencies=provides("db", "jobs", "store", "executor"))
async def health(db: DatabaseDep, jobs: JobsDep, store: StoreDep, executor: ExecutorDep) -> Response[HealthOut]:
    def probe() -> tuple[bool, bool, dict[str, int]]:
        db_ok = db.ping()
        return db_ok, store.ping(), jobs.live_counts() if db_ok else {}

    db_ok, store_ok, counts = await anyio.to_thread.run_sync(probe)
    workers = executor.status()
    workers_ok = not workers or any(w["alive"] and w["state"] in ("idle", "busy") for w in workers)
    ready = db_ok and store_ok and workers_ok

    body = HealthOut(status="ok" if ready else "degraded", live=True, ready=ready, database=db_ok, storage=store_ok,
                     workers=workers, queued=counts.get("queued", 0), running=counts.get("running", 0),
                     version=__version__)
    return Response(body, status_code=200 if ready else 503)
