"""``GET /health``: liveness and readiness (database, artifact store, workers). 503 when not ready."""

from __future__ import annotations

import anyio
from litestar import Response, get

from neurflow import __version__
from neurflow.service.deps import Services
from neurflow.service.schemas import HealthOut


@get("/health", tags=["health"], summary="Liveness and readiness", opt={"exclude_from_auth": True})
async def health(svc: Services) -> Response[HealthOut]:
    def probe() -> tuple[bool, bool, int, int]:
        db_ok = svc.db.ping()
        counts = {"queued": 0, "running": 0}
        if db_ok:
            for row in svc.db.all("SELECT state, COUNT(*) AS n FROM jobs WHERE state IN ('queued','running') GROUP BY state"):
                counts[row["state"]] = row["n"]
        return db_ok, svc.store.ping(), counts["queued"], counts["running"]

    db_ok, store_ok, queued, running = await anyio.to_thread.run_sync(probe)
    workers = svc.manager.status()
    workers_ok = not workers or any(w["alive"] and w["state"] in ("idle", "busy") for w in workers)
    ready = db_ok and store_ok and workers_ok

    body = HealthOut(status="ok" if ready else "degraded", live=True, ready=ready, database=db_ok, storage=store_ok,
                     workers=workers, queued=queued, running=running, version=__version__)
    return Response(body, status_code=200 if ready else 503)
