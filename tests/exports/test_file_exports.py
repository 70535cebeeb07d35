"""CVAT, Datumaro, FiftyOne and GraphML exports of a real labeled circuit.

The CVAT XML and the Datumaro JSON are read back by the real ``datumaro`` package (CVAT's format
engine). datumaro pins older pandas and Pillow than this project, so it lives in its own venv under
``.cache/datumaro-venv`` (made on first use, reused after); the import runs there as a subprocess
that prints JSON. If that venv cannot be made, these tests fail: they do not skip.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import pytest
from PIL import Image

from neurflow.core.circuit import Circuit
from neurflow.cli import main as cli_main
from neurflow.exports import ExportSource, run_export
from tests.tool_venvs import install_steps

ROOT = Path(__file__).resolve().parents[2]
DATUMARO_VENV = ROOT / ".cache" / "datumaro-venv"
DATUMARO_REQUIREMENT = "datumaro>=1.13,<1.14"
DATUMARO_CONSTRAINTS = Path(__file__).with_name("datumaro-constraints.txt")  # its dependencies, pinned
DUMP_SCRIPT = Path(__file__).with_name("datumaro_dump.py")


# -- helpers ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def datumaro_python() -> Path:
    """Python of a venv with datumaro; made once (about a minute), reused when its marker is there."""
    python = DATUMARO_VENV / "bin" / "python"
    marker = DATUMARO_VENV / ".neurflow-installed"
    wanted = DATUMARO_REQUIREMENT + "\n" + DATUMARO_CONSTRAINTS.read_text()
    if marker.is_file() and marker.read_text() == wanted and python.exists():
        return python
    shutil.rmtree(DATUMARO_VENV, ignore_errors=True)
    DATUMARO_VENV.parent.mkdir(parents=True, exist_ok=True)
    steps = install_steps(DATUMARO_VENV, sys.executable, DATUMARO_REQUIREMENT, DATUMARO_CONSTRAINTS)
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            pytest.fail(f"could not set up datumaro for the export tests ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    marker.write_text(wanted)
    return python


def datumaro_import(python: Path, folder: Path, fmt: str) -> dict:
    proc = subprocess.run([str(python), str(DUMP_SCRIPT), str(folder), fmt], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"datumaro could not import the {fmt} export:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


def write(files: dict[str, bytes], out: Path) -> Path:
    for name, data in files.items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return out


def expected(circuit: Circuit):
    """What the circuit says: per patch (group id, k) -> (top label, layer, score, confidence), per
    source image path -> sorted boxes (label, group, layer, [x, y, w, h])."""
    patches, boxes = {}, {}
    for _, layer, group in circuit.iter_groups():
        for k, ex in enumerate(group.exemplars):
            patches[(group.id, k)] = (group.labels[0].text, layer.name, group.labels[0].score, group.confidence)
            x0, y0, x1, y1 = ex.box
            boxes.setdefault(circuit.images[ex.image].path, []).append(
                (group.labels[0].text, group.id, layer.name, [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]))
    return patches, {path: sorted(b) for path, b in boxes.items()}


def top_labels(circuit: Circuit) -> list[str]:
    names = []
    for _, _, group in circuit.iter_groups():
        if group.labels[0].text not in names:
            names.append(group.labels[0].text)
    return names


def check_imported(dump: dict, circuit: Circuit, images: Path, *, source_id) -> None:
    patches, boxes = expected(circuit)
    assert dump["labels"] == top_labels(circuit)
    assert len(patches) > 0 and len(boxes) > 0
    by_id = {item["id"]: item for item in dump["items"]}
    assert len(by_id) == len(dump["items"]) == len(patches) + len(boxes)

    for (gid, k), (label, layer, score, confidence) in patches.items():
        item = by_id[f"patches/{gid}/{k}"]
        assert item["has_data"], item
        [ann] = item["annotations"]
        assert ann["type"] == "label" and ann["label"] == label
        attrs = ann["attributes"]
        assert attrs["group"] == gid and attrs["layer"] == layer
        assert float(attrs["score"]) == pytest.approx(score)
        assert float(attrs["confidence"]) == pytest.approx(confidence)
        _, group = circuit.group(gid)
        x0, y0, x1, y1 = group.exemplars[k].box
        assert item["size"] == [y1 - y0, x1 - x0]

    for path, want in boxes.items():
        item = by_id[source_id(path)]
        assert item["has_data"]
        with Image.open(images / path) as im:
            assert item["size"] == [im.height, im.width]
        got = sorted((a["label"], a["attributes"]["group"], a["attributes"]["layer"], a["bbox"])
                     for a in item["annotations"])
        assert all(a["type"] == "bbox" for a in item["annotations"])
        assert got == want


# -- CVAT ------------------------------------------------------------------------------------------
def test_cvat_export_reads_back_in_datumaro(labeled, tmp_path, datumaro_python):
    exported = run_export("cvat", ExportSource.from_files(labeled.circuit_path, labeled.images), {})
    assert exported.warnings == []
    out = write(exported.files, tmp_path / "cvat")

    root = ET.parse(out / "annotations.xml").getroot()
    assert root.findtext("version") == "1.1"
    meta_labels = [el.findtext("name") for el in root.iter("label")]
    used = {el.get("label") for el in root.iter("tag")} | {el.get("label") for el in root.iter("box")}
    assert meta_labels == top_labels(labeled.circuit) and used == set(meta_labels)
    assert {el.get("source") for el in root.iter("tag")} | {el.get("source") for el in root.iter("box")} == {"auto"}
    # every <image> entry has its picture, at the size the XML says
    for image in root.iter("image"):
        with Image.open(out / "images" / image.get("name")) as im:
            assert [im.width, im.height] == [int(image.get("width")), int(image.get("height"))]

    dump = datumaro_import(datumaro_python, out, "cvat")
    check_imported(dump, labeled.circuit, labeled.images, source_id=lambda p: str(Path(p).with_suffix("")))


def test_cvat_patch_is_the_exemplar_crop(labeled):
    exported = run_export("cvat", ExportSource.from_files(labeled.circuit_path, labeled.images), {})
    _, layer, group = next(labeled.circuit.iter_groups())
    ex = group.exemplars[0]
    with Image.open(labeled.images / labeled.circuit.images[ex.image].path) as src:
        want = src.convert("RGB").crop(tuple(ex.box))
    with Image.open(io.BytesIO(exported.files[f"images/patches/{group.id}/0.png"])) as got:
        assert got.convert("RGB").tobytes() == want.tobytes()
    # source images travel byte for byte
    path = labeled.circuit.images[ex.image].path
    assert exported.files[f"images/{path}"] == (labeled.images / path).read_bytes()


# -- Datumaro --------------------------------------------------------------------------------------
def test_datumaro_export_reads_back_in_datumaro(labeled, tmp_path, datumaro_python):
    exported = run_export("datumaro", ExportSource.from_files(labeled.circuit_path, labeled.images), {})
    assert exported.warnings == []
    out = write(exported.files, tmp_path / "datumaro")
    doc = json.loads((out / "annotations" / "default.json").read_text())
    assert doc["dm_format_version"] == "1.0"
    assert [lab["name"] for lab in doc["categories"]["label"]["labels"]] == top_labels(labeled.circuit)
    assert all((out / "images" / "default" / item["image"]["path"]).is_file() for item in doc["items"])
    assert doc["infos"]["neurflow"]["class_index"] == labeled.circuit.target.class_index

    dump = datumaro_import(datumaro_python, out, "datumaro")
    assert {item["subset"] for item in dump["items"]} == {"default"}
    check_imported(dump, labeled.circuit, labeled.images, source_id=lambda p: str(Path(p).with_suffix("")))


# -- FiftyOne --------------------------------------------------------------------------------------
def test_fiftyone_classification_dataset_layout(labeled):
    circuit = labeled.circuit
    exported = run_export("fiftyone", ExportSource.from_files(labeled.circuit_path, labeled.images), {})
    assert exported.warnings == []
    labels = json.loads(exported.files["labels.json"])
    assert set(labels) == {"classes", "labels"}
    assert labels["classes"] == top_labels(circuit)

    data = {name[len("data/"):-len(".png")]: blob for name, blob in exported.files.items() if name.startswith("data/")}
    assert set(data) == set(labels["labels"])  # every label has its file and every file its label
    assert set(exported.files) == {f"data/{u}.png" for u in data} | {"labels.json", "neurflow.json"}

    patches, _ = expected(circuit)
    assert len(labels["labels"]) == len(patches)
    sidecar = json.loads(exported.files["neurflow.json"])["samples"]
    for (gid, k), (label, layer, _, confidence) in patches.items():
        target = labels["labels"][f"{gid}-{k}"]
        assert isinstance(target["label"], int) and 0 <= target["label"] < len(labels["classes"])
        assert labels["classes"][target["label"]] == label
        assert target["confidence"] == pytest.approx(confidence)
        assert sidecar[f"{gid}-{k}"]["group"] == gid and sidecar[f"{gid}-{k}"]["layer"] == layer
        _, group = circuit.group(gid)
        assert sidecar[f"{gid}-{k}"]["box"] == group.exemplars[k].box
        with Image.open(io.BytesIO(data[f"{gid}-{k}"])) as im:
            x0, y0, x1, y1 = group.exemplars[k].box
            assert im.format == "PNG" and im.size == (x1 - x0, y1 - y0)


# -- GraphML ---------------------------------------------------------------------------------------
def test_graphml_round_trip(labeled, tmp_path):
    circuit = labeled.circuit
    source = ExportSource.from_files(labeled.circuit_path, labeled.images)
    exported = run_export("graphml", source, {})
    assert exported.media_type == "application/graphml+xml"
    assert exported.document == exported.files["circuit.graphml"]
    (tmp_path / "circuit.graphml").write_bytes(exported.document)
    graph = nx.read_graphml(tmp_path / "circuit.graphml")

    assert graph.is_directed()
    assert graph.graph["class_index"] == circuit.target.class_index
    assert graph.graph["class_name"] == "red things"
    assert graph.graph["model_arch"] == circuit.model.arch
    assert graph.graph["model_version"] == source.model_version == \
        "neurflow-0.1.0+clip-ViT-B-32@laion2b_s34b_b79k+vocab-test-vocab"
    groups = list(circuit.iter_groups())
    assert set(graph.nodes) == {g.id for _, _, g in groups}
    for index, layer, group in groups:
        node = graph.nodes[group.id]
        assert node["layer"] == layer.name and node["layer_index"] == index
        assert node["label"] == group.labels[0].text
        assert node["labels"] == "; ".join(lab.text for lab in group.labels)
        assert node["confidence"] == pytest.approx(group.confidence)
        assert node["members"] == len(group.members)
        assert node["caption"] == (group.caption.text if group.caption else "")
    assert any(graph.nodes[g.id]["caption"] for _, _, g in groups)  # the fixture captions one group
    assert len(circuit.group_edges) > 0
    assert graph.number_of_edges() == len(circuit.group_edges)
    for edge in circuit.group_edges:
        assert graph.edges[edge.source, edge.target]["weight"] == pytest.approx(edge.weight)


def test_graphml_rejects_an_edge_to_an_unknown_group(labeled):
    circuit = Circuit.from_json(labeled.circuit_path.read_bytes())
    circuit.group_edges[0].target = "l9g99"
    with pytest.raises(ValueError, match="l9g99"):
        run_export("graphml", ExportSource(circuit=circuit), {})


# -- CLI and bad input -----------------------------------------------------------------------------
def test_cli_writes_the_cvat_files(labeled, tmp_path, capsys):
    out = tmp_path / "cli-cvat"
    rc = cli_main(["export", "cvat", str(labeled.circuit_path), "--images", str(labeled.images), "--out", str(out)])
    assert rc == 0
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    patches, boxes = expected(labeled.circuit)
    assert written == ({"annotations.xml"} | {f"images/patches/{g}/{k}.png" for g, k in patches}
                       | {f"images/{p}" for p in boxes})
    assert f"cvat: {len(written)} file(s) in {out}" in capsys.readouterr().out


def test_bad_format_name_is_a_clear_error(labeled, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["export", "cvatt", str(labeled.circuit_path), "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "invalid choice: 'cvatt'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"unknown export format 'cvatt'; accepted: .*cvat, datumaro, fiftyone, graphml"):
        run_export("cvatt", ExportSource.from_files(labeled.circuit_path, labeled.images), {})
    with pytest.raises(ValueError, match="unknown option"):
        run_export("cvat", ExportSource.from_files(labeled.circuit_path, labeled.images), {"regions": "yes"})


def test_bad_exemplar_image_index_is_a_clear_error(labeled):
    circuit = Circuit.from_json(labeled.circuit_path.read_bytes())
    _, _, group = next(circuit.iter_groups())
    group.exemplars[0].image = len(circuit.images) + 5
    for fmt in ("cvat", "datumaro", "fiftyone"):
        with pytest.raises(ValueError, match=f"group {group.id} exemplar 0 refers to image"):
            run_export(fmt, ExportSource(circuit=circuit, images_root=labeled.images), {})


def test_without_source_images_warns_and_stays_valid(labeled, tmp_path, datumaro_python, capsys):
    circuit = labeled.circuit
    # the CLI: no --images, and the folder the circuit was labeled from is not recorded
    out = tmp_path / "no-images-cvat"
    assert cli_main(["export", "cvat", str(labeled.circuit_path), "--out", str(out)]) == 0
    assert "warning: source images are not available" in capsys.readouterr().err
    root = ET.parse(out / "annotations.xml").getroot()
    assert root.findtext("version") == "1.1" and list(root.iter("image")) == []
    assert [el.findtext("name") for el in root.iter("label")] == top_labels(circuit)
    dump = datumaro_import(datumaro_python, out, "cvat")
    assert dump["labels"] == top_labels(circuit) and dump["items"] == []

    for fmt in ("datumaro", "fiftyone"):
        exported = run_export(fmt, ExportSource(circuit=circuit), {})
        assert any("source images are not available" in w for w in exported.warnings)
    doc = json.loads(run_export("datumaro", ExportSource(circuit=circuit), {}).files["annotations/default.json"])
    assert doc["items"] == [] and [lab["name"] for lab in doc["categories"]["label"]["labels"]] == top_labels(circuit)
    fo_labels = json.loads(run_export("fiftyone", ExportSource(circuit=circuit), {}).files["labels.json"])
    assert fo_labels == {"classes": top_labels(circuit), "labels": {}}


def test_without_source_images_uses_rendered_mosaics(labeled, tmp_path, datumaro_python):
    """The service keeps group mosaics after the dataset is gone: one tagged mosaic per group."""
    circuit = labeled.circuit
    full = ExportSource(circuit=circuit, images_root=labeled.images)
    rendered = {g.id: full.mosaic(g) for _, _, g in circuit.iter_groups()}
    source = ExportSource(circuit=circuit, mosaics=rendered.get)
    exported = run_export("cvat", source, {})
    assert any("group mosaic(s) exported instead" in w for w in exported.warnings)
    out = write(exported.files, tmp_path / "mosaic-cvat")
    dump = datumaro_import(datumaro_python, out, "cvat")
    got = {item["id"]: [(a["type"], a["label"], a["attributes"]["group"]) for a in item["annotations"]]
           for item in dump["items"]}
    assert got == {f"mosaics/{g.id}": [("label", g.labels[0].text, g.id)] for _, _, g in circuit.iter_groups()}
