"""A small synchronous client of the service's REST API; error answers (problem+json) raise :class:`ApiError`."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from neurflow.core.hashing import sha256_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ApiError(RuntimeError):
    """An error answer (problem+json) from the service."""

    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
        self.body = body


def zip_folder(folder: str | Path) -> bytes:
    """The PNG/JPEG files under ``folder`` as a zip (relative paths kept: flat or one folder per class)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise ValueError(f"no PNG or JPEG images under {folder}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in files:
            zf.write(path, path.relative_to(folder).as_posix())
    return buf.getvalue()


class Client:
    def __init__(self, server: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        self.server = server.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------
    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                body = r.json()
                detail = body.get("detail") or body.get("title") or r.text
            except ValueError:
                body, detail = None, r.text[:500]
            raise ApiError(r.status_code, detail, body)
        return r

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._check(self.http.request(method, path, **kwargs))

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # -- resources -------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        r = self.http.get("/health")
        return r.json()

    def upload_model(self, weights: str | Path, descriptor: dict[str, Any]) -> dict[str, Any]:
        """Upload weights + descriptor; skipped when the server already has these weights."""
        model_id = sha256_file(weights)
        r = self.http.get(f"/v1/models/{model_id}")
        if r.status_code == 200:
            return r.json()
        with open(weights, "rb") as fh:
            return self.json("POST", "/v1/models", data={"descriptor": json.dumps(descriptor)},
                             files={"weights": (Path(weights).name, fh, "application/octet-stream")})

    def upload_dataset(self, source: str | Path, name: str | None = None) -> dict[str, Any]:
        """Upload a folder of images (zipped here) or a ready zip file."""
        source = Path(source)
        payload = source.read_bytes() if source.is_file() else zip_folder(source)
        return self.json("POST", "/v1/datasets", data={"name": name or source.name},
                         files={"file": (source.stem + ".zip", payload, "application/zip")})

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.json("POST", "/v1/jobs", json=spec)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.json("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.json("DELETE", f"/v1/jobs/{job_id}")

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event, data) pairs of the job's SSE stream until it ends."""
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=httpx.Timeout(30.0, read=None)) as r:
            if r.status_code >= 400:
                r.read()
                self._check(r)
            event, data = "message", []
            for line in r.iter_lines():
                if line == "":
                    text = "\n".join(data)
                    if text.strip():  # comments (keep-alives) carry an empty data field: not an event
                        yield event, json.loads(text)
                    event, data = "message", []
                elif line.startswith(":"):
                    continue
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())

    def follow(self, job_id: str, on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Follow the SSE stream (falling back to polling if it breaks) and return the final job."""
        try:
            for event, data in self.events(job_id):
                if on_progress is not None:
                    on_progress(data)
                if event == "end":
                    break
        except httpx.HTTPError:
            import time

            while (job := self.job(job_id))["state"] in ("queued", "running"):
                if on_progress is not None:
                    on_progress(job)
                time.sleep(1.0)
        return self.job(job_id)

    def circuits(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Every circuit (of one job), following the list's pages."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1000, **({"job_id": job_id} if job_id else {})}
        while True:
            page = self.json("GET", "/v1/circuits", params=params)
            out += page["circuits"]
            if not page.get("next"):
                return out
            params["cursor"] = page["next"]

    def circuit(self, circuit_id: str, inline: bool = False) -> dict[str, Any]:
        """The circuit's document as stored: a compact one names its arrays file (``arrays``), which
        :meth:`circuit_arrays` downloads; ``inline``: the whole document, arrays put back by the server."""
        return self.json("GET", f"/v1/circuits/{circuit_id}", params={"arrays": "inline"} if inline else None)

    def circuit_arrays(self, circuit_id: str, to: str | Path, sha256: str | None = None) -> Path:
        """Stream the circuit's arrays file (``GET /v1/circuits/{id}/arrays``) to ``to``; its sha256 is
        checked against ``sha256`` (default: the one the server announces, which is its document's).
        The file appears only once complete and checked."""
        import hashlib

        to = Path(to)
        part = to.with_name(to.name + ".part")
        digest = hashlib.sha256()
        with self.http.stream("GET", f"/v1/circuits/{circuit_id}/arrays") as r:
            if r.status_code >= 400:
                r.read()
                self._check(r)
            expected = sha256 or r.headers.get("X-Content-SHA256")
            to.parent.mkdir(parents=True, exist_ok=True)
            with open(part, "wb") as fh:
                for piece in r.iter_bytes(1 << 20):
                    digest.update(piece)
                    fh.write(piece)
        if expected is None or digest.hexdigest() != expected:
            part.unlink(missing_ok=True)
            raise ValueError(f"the arrays file of circuit {circuit_id} does not match its document's sha256 "
                             f"({digest.hexdigest()[:16]}... received, {str(expected)[:16]}... expected)")
        part.replace(to)
        return to

    def download_circuit(self, circuit_id: str, folder: str | Path, name: str = "circuit.json") -> Path:
        """Write the circuit's document to ``folder/name`` and, for a compact one, its arrays file beside
        it under the name the document gives; ``neurflow.core.circuit_arrays.read_circuit`` reads the
        pair (as every command that takes a circuit file does). The arrays come first: a document never
        names a missing file."""
        folder = Path(folder)
        doc = self.request("GET", f"/v1/circuits/{circuit_id}").content
        arrays = json.loads(doc).get("arrays")
        if arrays is not None:
            self.circuit_arrays(circuit_id, folder / arrays["file"], arrays["sha256"])
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(doc)
        return path

    def mosaic(self, circuit_id: str, group_id: str) -> bytes:
        return self.request("GET", f"/v1/circuits/{circuit_id}/groups/{group_id}/mosaic.png").content

    def exemplar(self, circuit_id: str, group_id: str, k: int) -> bytes:
        return self.request("GET", f"/v1/circuits/{circuit_id}/groups/{group_id}/exemplars/{k}.png").content

    def export(self, circuit_id: str, fmt: str, **options: Any) -> bytes:
        """``GET /v1/circuits/{id}/exports/{fmt}``: the document, or a zip of the export's files."""
        return self.request("GET", f"/v1/circuits/{circuit_id}/exports/{fmt}", params=options).content

    def relabel(self, circuit_id: str, labeling: dict[str, Any]) -> dict[str, Any]:
        return self.json("POST", f"/v1/circuits/{circuit_id}/labels", json={"labeling": labeling})

    def correct_label(self, circuit_id: str, group_id: str, label: str) -> dict[str, Any]:
        """``PUT /v1/circuits/{id}/groups/{group_id}/label``: store a person's label for a group (kept
        through relabels); answers the group's label, status and the stored correction."""
        return self.json("PUT", f"/v1/circuits/{circuit_id}/groups/{group_id}/label", json={"label": label})

    def debug(self, circuit_id: str, image: str | Path | bytes, layer: str | None = None,
              threshold: float | None = None, wait: float = 120.0) -> dict[str, Any]:
        payload = image if isinstance(image, bytes) else Path(image).read_bytes()
        data = {k: str(v) for k, v in (("layer", layer), ("threshold", threshold)) if v is not None}
        return self.json("POST", f"/v1/circuits/{circuit_id}/debug", params={"wait": wait}, data=data,
                         files={"image": ("image.png", payload, "application/octet-stream")},
                         timeout=wait + 30)

    def evaluate(self, circuit_id: str, options: dict[str, Any] | None = None, wait: float = 300.0) -> dict[str, Any]:
        return self.json("POST", f"/v1/circuits/{circuit_id}/evaluate", params={"wait": wait},
                         json={"options": options or {}}, timeout=wait + 30)


def default_api_key() -> str | None:
    return os.environ.get("NEURFLOW_API_KEY")
