"""What ``neurflow submit`` does with a :class:`~neurflow.client.api.Client`: upload the job spec's
weights and images, run the job, follow its progress and download its circuits."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable

import msgspec

from neurflow.client.api import Client
from neurflow.core.jobspec import JobSpec, NormalisationWarning
from neurflow.progress import Progress, ProgressEvent


def event_of_job(job: dict[str, Any]) -> ProgressEvent:
    """The :class:`ProgressEvent` of a job snapshot (an SSE event's data or ``GET /v1/jobs/{id}``).

    A queued job shows as the stage ``queued`` and an ended one as its state, with nothing to count;
    a server from before progress events sends only ``stage``/``done``/``total``, shown as they are
    (never parsed).
    """
    raw = job.get("progress_event")
    event = msgspec.convert(raw, ProgressEvent) if raw else \
        ProgressEvent.legacy(job.get("stage") or "", job.get("done") or 0, job.get("total") or 0)
    state = job.get("state")
    if state not in (None, "running"):  # queued, or the state it ended in
        event = ProgressEvent(stage=state, done=0, total=0)
    return event


def progress_from_events(progress: Progress) -> Callable[[dict[str, Any]], None]:
    """Feed a job's SSE events (and its final state) to a progress callback (e.g.
    :class:`~neurflow.progress.ProgressBars`), as the :class:`ProgressEvent` s the worker made.

    The events are samples of the job's row: a short stage can end between two of them, so that the
    last one seen of it stops short of its total (``loading model: 0/1``). A class's stages run one
    after another, so the next stage of the same class, or the job's success, shows that the stage
    before it finished: it is handed on once more, finished, first. Stages of different classes (Ray
    runs classes side by side) and a job that failed or was cancelled prove nothing of the kind.
    """
    last: dict[int | None, ProgressEvent] = {}  # each class's last event with something to count

    def on_event(job: dict[str, Any]) -> None:
        event = event_of_job(job)
        state = job.get("state")
        if state == "succeeded":
            ended = list(last.values())
        else:
            before = last.get(event.target)
            ended = [before] if state == "running" and before is not None and before.stage != event.stage else []
        for before in ended:
            if before.done < before.total:
                progress(msgspec.structs.replace(before, done=before.total, eta=0.0))
        if event.total > 0:
            last[event.target] = event
        progress(event)

    return on_event


def submit_spec(spec_path: str | Path, client: Client, out_dir: str | Path,
                on_progress: Callable[[dict[str, Any]], None] | None = None,
                mosaics: bool = False) -> dict[int, Path]:
    """What ``neurflow submit`` does: upload, run, follow, download. Returns class -> circuit.json."""
    from neurflow.core.jobspec import load_jobspec

    spec, base_dir = load_jobspec(spec_path)
    doc = json.loads(Path(spec_path).read_bytes())
    # refused before any upload: a circuit already there (a labeled one, say) is never replaced
    taken = [spec.class_folder(out_dir, c) / "circuit.json" for c in spec.target_classes()]
    taken = [path for path in taken if path.exists()]
    if taken:
        raise ValueError(f"{taken[0]} exists{f' (and {len(taken) - 1} more)' if len(taken) > 1 else ''}; "
                         "neurflow submit never replaces a circuit: choose another --out or move it away")

    def resolve(p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else base_dir / path

    weights = resolve(spec.model.weights)
    if not weights.is_file():
        raise ValueError(f"model weights {weights} do not exist")
    descriptor = {k: v for k, v in doc["model"].items() if k != "weights"}
    model = client.upload_model(weights, descriptor)
    for message in model.get("warnings", []):  # what the server filled in (ImageNet's normalisation)
        warnings.warn(message, NormalisationWarning, stacklevel=2)
    dataset = client.upload_dataset(resolve(spec.data.images))
    doc["model"]["weights"] = model["id"]
    doc["data"]["images"] = dataset["id"]
    job = client.submit(doc)
    final = client.follow(job["id"], on_progress)
    if final["state"] != "succeeded":
        raise RuntimeError(f"job {final['id']} {final['state']}: {final.get('error')}")
    return download(client, final, out_dir, spec, mosaics=mosaics)


def download(client: Client, job: dict[str, Any], out_dir: str | Path, spec: JobSpec | None = None,
             mosaics: bool = False) -> dict[int, Path]:
    """Download a finished job's circuits into the folders :meth:`JobSpec.class_folder` names (those of
    ``neurflow run``: ``out_dir`` for one class, ``class-<c>`` each for a list or ``"all"``); without
    the spec, a ``class-<c>`` folder each."""
    out_dir = Path(out_dir)
    written: dict[int, Path] = {}
    for entry in job["result"]["circuits"]:
        c = entry["class_index"]
        folder = spec.class_folder(out_dir, c) if spec is not None else out_dir / f"class-{c}"
        path = client.download_circuit(entry["id"], folder)  # the document and its arrays file
        if mosaics:
            (folder / "mosaics").mkdir(exist_ok=True)
            for layer in json.loads(path.read_bytes())["layers"]:
                for group in layer["groups"]:
                    if group["exemplars"]:
                        (folder / "mosaics" / f"{group['id']}.png").write_bytes(client.mosaic(entry["id"], group["id"]))
        written[entry["class_index"]] = path
    return written
