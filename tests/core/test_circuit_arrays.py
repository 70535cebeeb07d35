"""Compact circuit documents (issue 19, item 4): concept vectors and patches in a safetensors
sidecar named by hash; read back they give the circuit that was written, and documents without a
sidecar (every circuit written before) read as before."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from neurflow.core.circuit import Circuit
from neurflow.core.circuit_arrays import read_circuit, write_circuit
from neurflow.core.engine import NeurFlow


@pytest.fixture
def circuit(planted, colour_images) -> Circuit:
    return NeurFlow(["fc", "up", "low"], tau=2, top_n=8, ig_steps=4, select="all", granularities=(1.0, 0.5)).fit(
        planted, colour_images, 0, mean=[0.0] * 3, std=[1.0] * 3).circuit_


def test_a_compact_document_reads_back_as_the_circuit_written(tmp_path, circuit):
    side, doc = write_circuit(circuit, tmp_path / "circuit.json")
    assert side.name == "circuit.arrays.safetensors" and doc.name == "circuit.json"
    raw = json.loads(doc.read_text())
    concepts = [c for layer in raw["layers"] for n in layer["neurons"] for c in n["concepts"]]
    assert concepts and all(c["vector"] == [] and c["patches"] == [] and c["exemplars"] for c in concepts)
    assert raw["arrays"]["file"] == side.name and raw["arrays"]["bytes"] == side.stat().st_size
    back = read_circuit(doc)
    assert back == circuit and back.arrays is None
    assert any(c.patches for layer in back.layers for n in layer.neurons for c in n.concepts)


def test_the_document_alone_is_refused_rather_than_read_without_its_arrays(tmp_path, circuit):
    _, doc = write_circuit(circuit, tmp_path / "circuit.json")
    with pytest.raises(ValueError, match="keeps its concept vectors and patches in circuit.arrays.safetensors; read it "
                                         "with neurflow.core.circuit_arrays.read_circuit"):
        Circuit.from_json(doc.read_bytes())


def test_a_sidecar_of_another_circuit_or_a_missing_one_is_refused(tmp_path, circuit):
    _, doc = write_circuit(circuit, tmp_path / "a" / "circuit.json")
    other = msgspec.convert(msgspec.to_builtins(circuit), Circuit)
    other.layers[0].neurons[0].concepts[0].vector = [v + 1.0 for v in other.layers[0].neurons[0].concepts[0].vector]
    side, _ = write_circuit(other, tmp_path / "b" / "circuit.json")
    (tmp_path / "a" / "circuit.arrays.safetensors").write_bytes(side.read_bytes())
    with pytest.raises(ValueError, match="does not belong to this circuit"):
        read_circuit(doc)
    (tmp_path / "a" / "circuit.arrays.safetensors").unlink()
    with pytest.raises(ValueError, match="which is not next to it"):
        read_circuit(doc)


def test_documents_without_a_sidecar_still_read(tmp_path, circuit):
    (full,) = write_circuit(circuit, tmp_path / "circuit.json", compact=False)
    assert "arrays" not in json.loads(full.read_text()) or json.loads(full.read_text())["arrays"] is None
    assert read_circuit(full) == circuit == Circuit.from_json(full.read_bytes())
    old = read_circuit(Path(__file__).parent / "data" / "circuit-v1-labeled.json")
    assert old.layers and old.arrays is None
