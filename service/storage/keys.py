"""Where each artifact lives in the store: the one definition of the key layout.

=====================================  =========================================================
``models/<model id>.safetensors``      uploaded weights (the id is their sha256; shared by owners)
``staging/<random>``                   a weights file on its way to ``models/`` (see ``storage.weights``)
``datasets/<dataset id>/``             an uploaded dataset; its images under ``images/``
``jobs/<job id>/input.png``            the image of a debug job
``jobs/<job id>/attempt-<n>/``         what attempt ``n`` of a job wrote
``jobs/<job id>/stages/class-<c>/``    a run's finished stages of class ``c`` (``core.stages``, one
                                       folder per fit key), kept across attempts until the job ends
``jobs/<job id>/stages/layers.json``   the list ``layers: "auto"`` became at the job's first attempt
``<circuit>/circuit.json``             a circuit folder (``class-<c>`` or ``relabeled`` of an
``<circuit>/circuit.arrays.safetensors``  attempt): the document, its arrays' sidecar (documents
``<circuit>/patches/<group>/``         written before it have none), each group's ``mosaic.png`` and
                                       exemplars ``<k>.png`` (written by ``labeler.patches``)
=====================================  =========================================================

Keys are ``/``-separated paths relative to the store's root (:mod:`neurflow.service.storage.artifacts`). The
catalog keeps a circuit's folder key; everything inside it is derived here.
"""

from __future__ import annotations


def weights(model_id: str) -> str:
    return f"models/{model_id}.safetensors"


def staging(name: str) -> str:
    return f"staging/{name}"


def dataset(dataset_id: str) -> str:
    return f"datasets/{dataset_id}"


def images(dataset_id: str) -> str:
    return f"{dataset(dataset_id)}/images"


def debug_input(job_id: str) -> str:
    return f"jobs/{job_id}/input.png"


def attempt(job_id: str, attempt_no: int) -> str:
    return f"jobs/{job_id}/attempt-{attempt_no}"


def stages(job_id: str) -> str:
    """Every finished stage of a job's classes (removed when the job ends)."""
    return f"jobs/{job_id}/stages"


def class_stages(job_id: str, class_index: int) -> str:
    """The finished stages of one class of a run, across its attempts."""
    return f"{stages(job_id)}/class-{class_index}"


def chosen_layers(job_id: str) -> str:
    """The list a run's ``layers: "auto"`` became (``core.stages.LayerChoice``), for its later attempts."""
    return f"{stages(job_id)}/layers.json"


def class_circuit(attempt_key: str, class_index: int) -> str:
    """The circuit folder of one target class of a run."""
    return f"{attempt_key}/class-{class_index}"


def relabeled_circuit(attempt_key: str) -> str:
    return f"{attempt_key}/relabeled"


DOCUMENT = "circuit.json"  # a circuit folder's document (the folder mirrors it locally in a worker)


def document(circuit_key: str) -> str:
    return f"{circuit_key}/{DOCUMENT}"


SIDECAR = "circuit.arrays.safetensors"  # the document's arrays (core.circuit_arrays.sidecar_name of DOCUMENT)


def sidecar(circuit_key: str, name: str = SIDECAR) -> str:
    """A file next to the circuit's document that it names as its arrays' sidecar."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"a circuit's sidecar is a file next to its document, not {name!r}")
    return f"{circuit_key}/{name}"


PATCHES = "patches"  # the folder of a circuit that ``labeler.patches.render_patches`` fills


def mosaic(circuit_key: str, group_id: str) -> str:
    return f"{circuit_key}/{PATCHES}/{group_id}/mosaic.png"


def exemplar(circuit_key: str, group_id: str, k: int) -> str:
    return f"{circuit_key}/{PATCHES}/{group_id}/{k}.png"
