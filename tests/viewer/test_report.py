"""The HTML report of circuits: one self-contained page."""

from __future__ import annotations

from neurflow.core.circuit import (
    SCHEMA_VERSION,
    Circuit,
    Exemplar,
    Group,
    GroupEdge,
    Label,
    Layer,
    Member,
    ModelInfo,
    Target,
)
from neurflow.core.params import EngineParams
from neurflow.viewer.report import ReportEntry, write_report
from tests.service.helpers import png_bytes


def test_html_report_is_self_contained(tmp_path):
    ex = [Exemplar(image=0, box=[0, 0, 8, 8], activation=1.0)]
    layers = [Layer(name="fc", shape=[3], neurons=[], groups=[Group(id="l0g0", members=[Member(0, 0)], exemplars=ex,
                                                                       labels=[Label("red <circle>", 0.9, "clip")],
                                                                       confidence=0.8)]),
              Layer(name="layer4", shape=[8, 1, 1], neurons=[], groups=[Group(id="l1g0", members=[], exemplars=ex)])]
    circuit = Circuit(schema=SCHEMA_VERSION, model=ModelInfo("resnet18", None, 3, 32, [0.5] * 3, [0.5] * 3),
                      target=Target(0, "red"), params=EngineParams(layers=[lay.name for lay in layers]), images=[], layers=layers,
                      group_edges=[GroupEdge("l0g0", "l1g0", 0.7)], timings={})
    path = write_report([ReportEntry(circuit, "red", mosaics={"l0g0": png_bytes((200, 0, 0))},
                                     scores={"l0g0": {"majority_part": "red circle", "purity": 1.0}})],
                        tmp_path / "r.html")
    text = path.read_text()
    assert text.count("<svg") == 1 and "<line" in text and "data:image/png;base64," in text
    assert "red &lt;circle&gt;" in text and "<circle>" not in text.replace("<circle cx", "")  # escaped
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # no external assets
