"""The circuit viewer without a browser: the static PNG of the graph, the page's embedded data, the
``neurflow report`` command. (The page's behaviour in Chromium: ``test_viewer_browser.py``.)"""

from __future__ import annotations

import base64
import json
import re

from PIL import Image

from neurflow.core.circuit import Circuit
from neurflow.viewer.circuit_png import render_circuit_png
from neurflow.cli import main as neurflow
from neurflow.exports.source import ExportSource
from neurflow.viewer.report import DebugView, ReportEntry, render_report
from neurflow.viewer.layout import layout_circuit

from tests.exports.conftest import labeled  # noqa: F401  (the shared labeled-circuit fixture)


def embedded_data(page: str) -> dict:
    match = re.search(r'<script type=\'application/json\' id=\'viewer-data\'>(.*?)</script>', page, re.S)
    assert match, "no viewer-data block"
    return json.loads(match.group(1))


def test_png_of_the_graph_draws_every_group(labeled, tmp_path):
    circuit = labeled.circuit
    drawn = render_circuit_png(circuit, tmp_path / "sub" / "graph.png")
    path = tmp_path / "sub" / "graph.png"
    assert drawn["path"] == path and path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size == (drawn["width"], drawn["height"]) and im.size[0] > 100 and im.size[1] > 100
    groups = [g.id for _, _, g in circuit.iter_groups()]
    assert len(groups) >= 4
    assert drawn["nodes"] == groups
    assert len(drawn["edges"]) == len(circuit.group_edges) > 0


def test_layout_rows_and_edge_widths(labeled):
    circuit = labeled.circuit
    lay = layout_circuit(circuit)
    assert [name for name, _ in lay.rows] == [layer.name for layer in circuit.layers]
    for i, layer in enumerate(circuit.layers):
        ys = {lay.nodes[g.id].y for g in layer.groups}
        assert ys <= {lay.rows[i][1]}
    strongest = max(lay.edges, key=lambda e: abs(e.weight))
    weakest = min(lay.edges, key=lambda e: abs(e.weight))
    assert strongest.width >= weakest.width and abs(strongest.width - 7.0) < 1e-9


def test_page_embeds_groups_mosaics_and_debug(labeled):
    source = ExportSource.from_files(labeled.circuit_path, labeled.images)
    circuit = source.circuit
    mosaics = {g.id: source.mosaic(g) for _, _, g in circuit.iter_groups()}
    assert all(mosaics.values())
    layer = next(lay for lay in circuit.layers[1:] if lay.groups)
    debug = {"layer": layer.name, "target": 0, "predicted": 0, "logit": 1.5, "probability": 0.6, "threshold": 0.8,
             "groups": [{"id": g.id, "score": 1.2 - 0.5 * k, "fires": k == 0, "label": None, "ablated_logit": 1.0,
                         "logit_change": -0.5, "crops": [{"box": [0, 0, 20, 20], "score": 1.2}]}
                        for k, g in enumerate(layer.groups)]}
    image = (labeled.images / circuit.images[0].path).read_bytes()
    page = render_report([ReportEntry(circuit, mosaics=mosaics, debug=DebugView.of(debug, image, job_id="job-x"))],
                         title="t <&>")
    assert "<title>t &lt;&amp;&gt;</title>" in page
    assert page.count('class="node"') == sum(1 for _ in circuit.iter_groups())
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # no external assets
    assert not re.search(r"(src|href)=['\"](?!data:|#)", page)  # only data: URIs and in-page anchors
    data = embedded_data(page)
    (graph,) = data["graphs"]
    assert [g["id"] for g in graph["groups"]] == [g.id for _, _, g in circuit.iter_groups()]
    first = graph["groups"][0]
    group = circuit.group(first["id"])[1]
    assert base64.b64decode(first["mosaic"]) == mosaics[group.id]
    assert [lab["text"] for lab in first["labels"]] == [lab.text for lab in group.labels]
    assert first["caption"]["text"] == group.caption.text
    assert len(first["members"]) == len(group.members)
    assert graph["debug"]["job_id"] == "job-x" and base64.b64decode(graph["debug"]["image"]) == image
    assert graph["debug"]["image_size"] == [circuit.images[0].width, circuit.images[0].height]
    assert [g["fires"] for g in graph["debug"]["groups"]][0] is True


def test_json_block_cannot_close_the_script(labeled):
    circuit = Circuit.from_json(labeled.circuit_path.read_bytes())
    circuit.layers[0].groups[0].labels[0].text = "</script><script>alert(1)</script>"
    page = render_report([ReportEntry(circuit)])
    assert page.count("</script>") == 2  # the data block's and the viewer script's
    assert "alert(1)</script>" not in page
    assert embedded_data(page)["graphs"][0]["groups"][0]["labels"][0]["text"].startswith("</script>")


def test_neurflow_report_command(labeled, tmp_path, capsys):
    out, png = tmp_path / "r.html", tmp_path / "g.png"
    assert neurflow(["report", str(labeled.circuit_path), "--images", str(labeled.images), "--out", str(out),
                     "--png", str(png)]) == 0
    n = sum(1 for _ in labeled.circuit.iter_groups())
    printed = capsys.readouterr().out
    assert f"({n} groups, {n} mosaics)" in printed and f"({n} nodes," in printed
    assert png.read_bytes()[:4] == b"\x89PNG"
    data = embedded_data(out.read_text())
    assert all(g["mosaic"] for g in data["graphs"][0]["groups"])
    # a debug result file that is not one is one clear error line
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nothing": 1}))
    assert neurflow(["report", str(labeled.circuit_path), "--out", str(out), "--debug", str(bad)]) == 2
    assert "not a debug result" in capsys.readouterr().err


def test_wide_layers_wrap_and_the_ungrouped_layer_gets_a_band():
    from neurflow.viewer.layout import COL_W, LEFT, MAX_PER_LINE, NODE_R

    from tests.viewer.big_circuit import big_circuit

    circuit = big_circuit()
    lay = layout_circuit(circuit)
    # 40 groups on one layer: the drawing stays as wide as MAX_PER_LINE columns, not 40
    assert lay.width == LEFT + MAX_PER_LINE * COL_W + 20
    assert [b.layer for b in lay.bands] == [layer.name for layer in circuit.layers]
    for band, layer in zip(lay.bands, circuit.layers):
        ys = [lay.nodes[g.id].y for g in layer.groups]
        assert all(band.top < y < band.bottom for y in ys)
        assert len(set(ys)) == -(-len(layer.groups) // MAX_PER_LINE)  # lines of the band
    assert all(a.bottom == b.top for a, b in zip(lay.bands, lay.bands[1:]))
    # no two nodes of the drawing overlap
    points = [(p.x, p.y) for p in lay.nodes.values()]
    assert min((ax - bx) ** 2 + (ay - by) ** 2 for i, (ax, ay) in enumerate(points)
               for bx, by in points[i + 1:]) >= (2 * NODE_R) ** 2
    ig = lay.bands[-1]
    assert ig.n_groups == 0 and ig.n_neurons == 30 and 0 < ig.bottom - ig.top < 60


def test_uncertain_groups_are_marked_in_page_and_png(tmp_path):
    from neurflow.core.group_label import is_uncertain

    from tests.viewer.big_circuit import big_circuit

    circuit = big_circuit()
    unsure = {g.id for _, _, g in circuit.iter_groups() if is_uncertain(g)}
    assert unsure and all(g.status == "uncertain" for _, _, g in circuit.iter_groups() if g.id in unsure)
    page = render_report([ReportEntry(circuit=circuit)])
    marked = set(re.findall(r'data-group-id="([^"]+)"[^>]*data-uncertain="true"', page))
    assert marked == unsure
    data = embedded_data(page)
    assert {g["id"] for g in data["graphs"][0]["groups"] if g["uncertain"]} == unsure
    for g in data["graphs"][0]["groups"]:
        if g["id"] in unsure:  # "A or B?", each candidate with its score
            assert g["display"] == f"part {int(g['id'][3:]) % 7} or other?" and g["status"] == "uncertain"
            assert [(c["text"], c["score"]) for c in g["candidates"]] == [(f"part {int(g['id'][3:]) % 7}", 0.5),
                                                                          ("other", 0.1)]
        else:
            assert g["candidates"] == [] and g["display"] == g["labels"][0]["text"]
    assert re.search(r'data-group-id="l1g0"[^>]*data-label="part 0 or other\?"', page)
    assert "30 core neurons, not grouped" in page
    drawn = render_circuit_png(circuit, tmp_path / "big.png")
    assert len(drawn["nodes"]) == 66 and drawn["width"] < 1800


def test_each_candidate_shows_the_votes_that_name_it():
    from neurflow.core.circuit import LabelEvidence, LabelVote

    from tests.viewer.big_circuit import big_circuit

    circuit = big_circuit((1, 3), 3)
    _, group = circuit.group("l1g0")  # uncertain between "part 0" and "other"
    group.evidence = LabelEvidence(votes=[LabelVote("clip:a", "part 0", 0.31, 0.02), LabelVote("clip:b", "other", 0.29),
                                          LabelVote("caption", "sky", 0.5)], method="test")
    data = embedded_data(render_report([ReportEntry(circuit=circuit)]))
    shown = {g["id"]: g for g in data["graphs"][0]["groups"]}["l1g0"]["candidates"]
    assert shown == [{"text": "part 0", "score": 0.5, "votes": [{"voter": "clip:a", "score": 0.31, "margin": 0.02}]},
                     {"text": "other", "score": 0.1, "votes": [{"voter": "clip:b", "score": 0.29, "margin": None}]}]
