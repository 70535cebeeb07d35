"""``GET /v1/circuits/{id}/exports/{format}``: a labeled circuit in an annotation tool's format.

Single-document formats (Label Studio's config + tasks) answer with the document; the others, or any
format with ``?archive=zip``, answer with a zip of the export's files. Format options are query
parameters (e.g. ``?regions=false``).
"""

from __future__ import annotations

import io
import zipfile

import anyio
from litestar import Controller, Request, Response, get

from neurflow.exports import FORMATS, ExportSource, run_export
from neurflow.service.errors import Invalid, NotFound
from neurflow.service.http.deps import CatalogDep, Owner, StoreDep, provides
from neurflow.service.storage import keys
from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.catalog import Catalog
from neurflow.service.storage.circuits import load_circuit

RESERVED = {"archive"}


def service_source(catalog: Catalog, store: ArtifactStore, owner: str, circuit_id: str) -> ExportSource:
    """The circuit as an :class:`ExportSource`: rendered mosaics from the store, source images while
    the dataset exists."""
    row = catalog.get_circuit(owner, circuit_id)
    circuit = load_circuit(store, row["key"], public=True)
    images_root = None
    try:
        catalog.get_dataset(owner, row["dataset_id"])
        if store.exists(keys.images(row["dataset_id"])):
            images_root = store.local_path(keys.images(row["dataset_id"]))
    except NotFound:
        pass

    def mosaics(group_id: str) -> bytes | None:
        try:
            return store.get_bytes(keys.mosaic(row["key"], group_id))
        except (KeyError, ValueError):
            return None

    return ExportSource(circuit=circuit, circuit_id=circuit_id, images_root=images_root, mosaics=mosaics)


def zip_files(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(files.items()):
            zf.writestr(name, data)
    return buf.getvalue()


class ExportController(Controller):
    path = "/circuits"
    tags = ["exports"]
    dependencies = provides("catalog", "store")

    @get("/{circuit_id:str}/exports/{fmt:str}",
         summary="Export a labeled circuit (labelstudio, cvat, datumaro, fiftyone, graphml)")
    async def export(self, request: Request, catalog: CatalogDep, store: StoreDep, owner: Owner, circuit_id: str,
                     fmt: str) -> Response[bytes]:
        if fmt not in FORMATS:
            raise Invalid(f"unknown export format {fmt!r}; accepted: {', '.join(FORMATS)}")
        query = {k: v for k, v in request.query_params.items()}
        archive = query.pop("archive", None)
        if archive not in (None, "zip"):
            raise Invalid(f"archive={archive!r} is not accepted; use archive=zip or leave it out")

        def work() -> Response:
            source = service_source(catalog, store, owner, circuit_id)
            try:
                exported = run_export(fmt, source, query)
            except ValueError as exc:
                raise Invalid(str(exc)) from None
            headers = {"X-Export-Warnings": str(len(exported.warnings))}
            if exported.document is not None and archive is None:
                return Response(exported.document, media_type=exported.media_type, headers=headers)
            name = f"{circuit_id}-{fmt}.zip"
            return Response(zip_files(exported.files), media_type="application/zip",
                            headers=headers | {"Content-Disposition": f'attachment; filename="{name}"'})

        return await anyio.to_thread.run_sync(work)
