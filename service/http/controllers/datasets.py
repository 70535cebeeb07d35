"""``/v1/datasets``: upload a zip of images (flat or one folder per class), list, show, delete.

The upload's body limit is the app's ``max_dataset_mb`` setting, set on this controller's router
layer by :func:`neurflow.service.http.app.create_app`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Annotated

import anyio
from litestar import Controller, delete, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body

from neurflow.service.errors import Conflict, Invalid
from neurflow.service.http.deps import CatalogDep, JobsDep, Owner, QuotasDep, SettingsDep, StoreDep, provides
from neurflow.service.http.schemas import DEFAULT_PAGE, Cursor, DatasetList, DatasetOut, PageLimit
from neurflow.service.intake.imagecheck import ExtractZip, run_check
from neurflow.service.settings import MB, Settings
from neurflow.service.storage import keys
from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.catalog import Catalog, new_id


@dataclass
class DatasetUpload:
    """``file``: a zip of PNG/JPEG images; ``name``: optional display name."""

    file: UploadFile
    name: str | None = None


class DatasetController(Controller):
    path = "/datasets"
    tags = ["datasets"]
    dependencies = provides("catalog", "jobs", "store", "quotas")

    @post("/", summary="Upload a dataset zip")
    async def upload(self, catalog: CatalogDep, store: StoreDep, quotas: QuotasDep, settings: SettingsDep, owner: Owner,
                     data: Annotated[DatasetUpload, Body(media_type=RequestEncodingType.MULTI_PART)]) -> DatasetOut:
        if not isinstance(data.file, UploadFile):
            raise Invalid("the 'file' part must be a file upload (a .zip of images)")
        name = (data.name or data.file.filename or "dataset")[:200]
        with quotas.uploads.hold(owner):
            record = await anyio.to_thread.run_sync(_ingest, catalog, store, settings, owner, name, data.file)
        return DatasetOut(**record)

    @get("/", summary="List datasets")
    async def list_datasets(self, catalog: CatalogDep, owner: Owner, limit: PageLimit = DEFAULT_PAGE,
                            cursor: Cursor = None) -> DatasetList:
        rows, after = await anyio.to_thread.run_sync(catalog.page, "datasets", owner, limit, cursor)
        return DatasetList(datasets=[DatasetOut(**r) for r in rows], next=after)

    @get("/{dataset_id:str}", summary="Show a dataset")
    async def get_dataset(self, catalog: CatalogDep, owner: Owner, dataset_id: str) -> DatasetOut:
        return DatasetOut(**await anyio.to_thread.run_sync(catalog.get_dataset, owner, dataset_id))

    @delete("/{dataset_id:str}", summary="Delete a dataset (circuits made from it stay)")
    async def delete_dataset(self, catalog: CatalogDep, jobs: JobsDep, store: StoreDep, owner: Owner,
                             dataset_id: str) -> None:
        def work() -> None:
            catalog.get_dataset(owner, dataset_id)
            if jobs.dataset_in_use(owner, dataset_id):
                raise Conflict(f"dataset {dataset_id} is used by a queued or running job; cancel it first")
            catalog.delete_dataset(owner, dataset_id)
            store.delete(keys.dataset(dataset_id))

        await anyio.to_thread.run_sync(work)


def _ingest(catalog: Catalog, store: ArtifactStore, s: Settings, owner: str, name: str, upload: UploadFile) -> dict:
    work = s.scratch_path / "uploads"
    work.mkdir(parents=True, exist_ok=True)
    dataset_id = new_id("ds")
    with tempfile.NamedTemporaryFile(dir=work, suffix=".zip", delete=False) as tmp:
        zip_path = tmp.name
        try:
            upload.file.seek(0)
            shutil.copyfileobj(upload.file, tmp, 1 << 20)
        except BaseException:
            os.unlink(zip_path)  # a full scratch disk keeps no partial upload
            raise
    target = work / dataset_id
    try:
        info = run_check(ExtractZip(zip_path=zip_path, dest=str(target), max_entries=s.max_zip_entries,
                                    max_bytes=s.max_zip_uncompressed_mb * MB, max_pixels=s.max_image_pixels,
                                    max_total_pixels=s.max_dataset_pixels), s.image_check_memory_mb, s.max_image_checks)
        key = keys.dataset(dataset_id)
        if store.is_local:
            dest = store.local_path(key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(target), str(dest))
        else:
            store.put_dir(key, target)
    finally:
        os.unlink(zip_path)
        shutil.rmtree(target, ignore_errors=True)
    return catalog.add_dataset(owner, dataset_id, name, info.n_images, info.classes, info.size)
