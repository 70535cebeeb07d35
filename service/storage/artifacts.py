"""The artifact store: every artifact (weights, datasets, circuits, patches) lives under one root.

The root is a local folder by default or any fsspec URL (``s3://bucket/prefix``, ``memory://x``).
Keys are ``/``-separated paths relative to the root. Workers need local files for the engine:
:meth:`ArtifactStore.local_path` returns the file itself for a local root and a cached download
otherwise.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path, PurePosixPath

import fsspec


def _check_key(key: str) -> str:
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(p in ("..", "") for p in parts):
        raise ValueError(f"invalid artifact key {key!r}")
    return "/".join(parts)


class ArtifactStore:
    def __init__(self, root_url: str, cache_dir: str | Path | None = None) -> None:
        self.url = root_url
        self.fs, root = fsspec.core.url_to_fs(root_url)
        self.root = root.rstrip("/")
        self.is_local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.fs.makedirs(self.root, exist_ok=True)

    def path(self, key: str) -> str:
        return f"{self.root}/{_check_key(key)}"

    # -- files -----------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        path = self.path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:12]}.part"  # writers of one key never share a temporary file
        try:
            with self.fs.open(tmp, "wb") as fh:
                fh.write(data)
            self.fs.mv(tmp, path)
        except BaseException:
            self._discard(tmp)  # a full store keeps no half-written file
            raise

    def put_file(self, key: str, local: str | Path) -> None:
        path = self.path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        if self.is_local:
            tmp = f"{path}.{uuid.uuid4().hex[:12]}.part"
            try:
                shutil.copyfile(local, tmp)
                Path(tmp).replace(path)
            except BaseException:
                self._discard(tmp)
                raise
        else:
            self.fs.put_file(str(local), path)

    def move(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (a rename on a local root: cheap inside a database transaction)."""
        dst_path = self.path(dst)
        self.fs.makedirs(dst_path.rsplit("/", 1)[0], exist_ok=True)
        if self.is_local:
            Path(self.path(src)).replace(dst_path)
        else:
            self.fs.mv(self.path(src), dst_path)

    def put_dir(self, key: str, local: str | Path) -> None:
        local = Path(local)
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            self.put_file(f"{key}/{file.relative_to(local).as_posix()}", file)

    def _discard(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm(path)
        except Exception:  # noqa: BLE001 - best effort; the original error is what matters
            pass

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def delete(self, key: str) -> None:
        path = self.path(key)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def listdir(self, key: str) -> list[str]:
        path = self.path(key)
        if not self.fs.exists(path):
            return []
        return sorted(PurePosixPath(p).name for p in self.fs.ls(path, detail=False))

    def ping(self) -> bool:
        """Readiness: a write and a read-back round trip. Each probe uses its own key, so concurrent
        probes (a load balancer's) never race on one file."""
        probe = f".health/{uuid.uuid4().hex}"
        token = uuid.uuid4().bytes
        try:
            self.put_bytes(probe, token)
            return self.get_bytes(probe) == token
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False
        finally:
            try:
                self.delete(probe)
            except Exception:  # noqa: BLE001 - a full or read-only store: the probe already said so
                pass

    # -- local access for workers -----------------------------------------------------------------
    def local_path(self, key: str) -> Path:
        """A local path holding the artifact (a file or a folder)."""
        if self.is_local:
            return Path(self.path(key))
        if self.cache_dir is None:
            raise RuntimeError("a remote artifact store needs a local cache_dir")
        target = self.cache_dir / hashlib.sha256(f"{self.url}|{key}".encode()).hexdigest()[:24] / PurePosixPath(key).name
        if not target.exists():
            tmp = target.with_name(target.name + ".part")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get(self.path(key), str(tmp), recursive=self.fs.isdir(self.path(key)))
            tmp.replace(target)
        return target
