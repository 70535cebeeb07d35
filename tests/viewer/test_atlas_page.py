"""The atlas page as HTML (no browser): what it embeds, and that labels cannot break out of it."""

from __future__ import annotations

import json
import re

from neurflow.atlas import AtlasInput, build_atlas
from neurflow.core.circuit import Label
from neurflow.viewer.atlas_page import render_atlas_page, write_atlas_page
from neurflow.viewer.data import ReportEntry

from tests.atlas.handmade import circuits


def block(page: str, name: str):
    return json.loads(re.search(rf"<script type='application/json' id='{name}'>(.*?)</script>", page, re.S).group(1))


def test_page_carries_the_atlas_and_the_embedded_viewers(tmp_path):
    cs = circuits()
    atlas = build_atlas([AtlasInput(c, f"c{c.target.class_index}") for c in cs])
    path = write_atlas_page(atlas, tmp_path / "a" / "atlas.html", entries=[ReportEntry(circuit=c) for c in cs[:2]])
    page = path.read_text()
    data = block(page, "atlas-data")
    assert data["atlas"]["schema"] == "neurflow.atlas/1" and data["report_url"] is None
    assert [c["class_index"] for c in data["atlas"]["classes"]] == [0, 1, 2, 3]
    embedded = block(page, "atlas-circuits")
    assert sorted(embedded) == ["0", "1"] and "Class 0: cat" in embedded["0"]
    assert "4 classes, 5 shared concepts over 3 layers, 2 class pairs sharing a sub-circuit" in page
    served = render_atlas_page(atlas, report_url="/v1/circuits/{circuit_id}/report", title="T")
    assert block(served, "atlas-circuits") == {} and block(served, "atlas-data")["report_url"].endswith("/report")


def test_hostile_labels_stay_data():
    cs = circuits()
    evil = "</script><script>alert(1)</script>"
    cs[0].layers[1].groups[0].labels = [Label(text=evil, score=1.0, source="user")]
    atlas = build_atlas([AtlasInput(c) for c in cs])
    page = render_atlas_page(atlas, entries=[ReportEntry(circuit=cs[0])], title="<b>x</b>")
    assert evil not in page and "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert block(page, "atlas-data")["atlas"]["classes"][0]["groups"][1]["labels"] == [evil]
    assert page.count("<script") == 3  # two data blocks and the page's script, nothing injected
