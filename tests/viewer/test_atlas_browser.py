"""The atlas page in headless Chromium: from a file (``neurflow atlas``, circuit viewers embedded) and
served by the API (``GET /v1/atlas/report``, classes linked to ``/v1/circuits/{id}/report``).

The matrix shows one row per class and one shaded cell per (class, shared concept) of the document;
the search marks the classes ``neurflow.atlas.search`` finds; a class opens its circuit viewer. Fails
without Chromium or Playwright unless ``NEURFLOW_SKIP_BROWSER=1`` (see test_viewer_browser.py)."""

from __future__ import annotations

import pytest

from neurflow.atlas import Atlas, AtlasInput, build_atlas, search
from neurflow.cli import main as neurflow

from tests.atlas.conftest import engine_circuits  # noqa: F401  (four classes of the world model, engine-made)
from tests.atlas.handmade import circuits
from tests.service.conftest import assets  # noqa: F401
from tests.service.helpers import KEY_A
from tests.service.http.test_atlas_api import atlas_service  # noqa: F401
from tests.viewer.test_viewer_browser import Viewer, browser  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def open_atlas(viewer: Viewer, url: str) -> Viewer:
    response = viewer.page.goto(url)
    assert response is not None and response.ok, response and response.status
    viewer.page.wait_for_selector("table#atlas-matrix tbody tr[data-class]")
    return viewer


def check_matrix(page, atlas: Atlas) -> None:
    rows = page.eval_on_selector_all("table#atlas-matrix tbody tr[data-class]", "rs => rs.map(r => +r.dataset.class)")
    assert rows == [c.class_index for c in atlas.classes]
    heads = page.eval_on_selector_all("table#atlas-matrix th.concept", "hs => hs.map(h => h.dataset.concept)")
    assert heads == [c.id for c in atlas.concepts()]
    on = page.eval_on_selector_all("td.cell.on", "cs => cs.map(c => [+c.parentNode.dataset.class, c.dataset.concept, "
                                                 "+c.dataset.strength])")
    assert [(k, cid) for k, cid, _ in on] == [(c.class_index, c.concept) for c in atlas.matrix]
    assert [s for _, _, s in on] == pytest.approx([c.strength for c in atlas.matrix], abs=1e-3)


def check_search(page, atlas: Atlas, query: str) -> None:
    expected = sorted(h.class_index for h in search(atlas, query).classes)
    assert expected
    page.fill("#atlas-search", query.upper())
    matched = page.eval_on_selector_all("tr.match[data-class]", "rs => rs.map(r => +r.dataset.class)")
    assert sorted(matched) == expected
    assert page.get_attribute("#atlas-match-count", "data-matches") == str(len(expected))
    page.fill("#atlas-search", "")
    assert page.locator("tr.dimmed").count() == 0


def test_atlas_page_from_hand_made_circuits(browser, tmp_path):  # noqa: F811
    cs = circuits()
    paths = []
    for c in cs:
        paths.append(tmp_path / f"class{c.target.class_index}.json")
        paths[-1].write_text(c.to_json())
    assert neurflow(["atlas", *map(str, paths), "--out", str(tmp_path / "out")]) == 0
    atlas = Atlas.from_json((tmp_path / "out" / "atlas.json").read_bytes())
    viewer = open_atlas(Viewer(browser), (tmp_path / "out" / "atlas.html").resolve().as_uri())
    page = viewer.page
    try:
        check_matrix(page, atlas)
        check_search(page, atlas, "fur")
        # fur is the cat's and dog's shared concept: both cells marked, the bus's own fur group marks its row only
        page.fill("#atlas-search", "fur")
        assert page.eval_on_selector_all("td.cell.hit", "cs => cs.map(c => +c.parentNode.dataset.class)") == [0, 1]
        page.fill("#atlas-search", "")
        # a cell opens its concept
        page.click('tr[data-class="3"] td.cell[data-concept="2c0"]')
        assert page.get_attribute("#atlas-detail", "data-concept") == "2c0"
        assert page.eval_on_selector_all("#atlas-detail ul.concept-classes li", "ls => ls.map(l => +l.dataset.class)") == [0, 1, 3]
        # the pairs table: cat & dog, car & bus
        assert page.eval_on_selector_all("#atlas-pairs tbody tr", "rs => rs.map(r => [+r.dataset.a, +r.dataset.b])") == [[0, 1], [2, 3]]
        assert viewer.errors == []
    finally:
        viewer.close()


def test_atlas_file_with_embedded_viewers(browser, engine_circuits, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    assert neurflow(["atlas", *map(str, engine_circuits.paths), "--out", str(out), "--images",
                     str(engine_circuits.images)]) == 0
    atlas = Atlas.from_json((out / "atlas.json").read_bytes())
    assert atlas == build_atlas([AtlasInput(c, p.as_posix()) for c, p in zip(engine_circuits.circuits, engine_circuits.paths)])
    viewer = open_atlas(Viewer(browser), (out / "atlas.html").resolve().as_uri())
    page = viewer.page
    try:
        check_matrix(page, atlas)
        check_search(page, atlas, atlas.concepts()[0].label)
        # drill down: class 2's circuit viewer opens in the page, one node per group, mosaics shown on click
        page.click('tr[data-class="2"] button.class-name')
        assert page.get_attribute("#atlas-detail", "data-class") == "2"
        klass = atlas.klass(2)
        assert page.locator("#atlas-detail ul.class-groups li").count() == klass.n_groups
        frame = page.frame_locator("iframe.circuit-viewer")
        frame.locator("g.node[data-group-id]").first.wait_for()
        assert frame.locator("g.node[data-group-id]").count() == klass.n_groups
        shared = next(g for g in klass.groups if g.concept)
        frame.locator(f'g.node[data-group-id="{shared.id}"]').click()
        assert frame.locator("#detail img.mosaic").get_attribute("src").startswith("data:image/png;base64,")
        # another class replaces it
        page.click('tr[data-class="0"] button.class-name')
        assert page.locator("iframe.circuit-viewer").count() == 1
        assert "Class 0" in page.frame_locator("iframe.circuit-viewer").locator("h2").first.inner_text()
        viewer.screenshot(tmp_path / "atlas-file.png")
        assert viewer.errors == []
    finally:
        viewer.close()


def test_atlas_page_served_by_the_api(browser, atlas_service, tmp_path):  # noqa: F811
    svc = atlas_service
    url = f"{svc['server'].url}/v1/atlas/report?job={svc['job']}"
    viewer = open_atlas(Viewer(browser, headers={"X-API-Key": KEY_A}), url)
    page = viewer.page
    try:
        import httpx

        atlas = Atlas.from_json(httpx.get(f"{svc['server'].url}/v1/atlas", params={"job": svc["job"]},
                                          headers={"X-API-Key": KEY_A}, timeout=60).content)
        check_matrix(page, atlas)
        label = next(g.labels[0] for c in atlas.classes for g in c.groups if g.labels)
        check_search(page, atlas, label)
        cid = svc["circuits"][1]
        page.click('tr[data-class="1"] button.class-name')
        assert page.get_attribute("#atlas-detail a.report-link", "href") == f"/v1/circuits/{cid}/report"
        frame = page.frame_locator("iframe.circuit-viewer")
        frame.locator("g.node[data-group-id]").first.wait_for()
        assert frame.locator("g.node[data-group-id]").count() == atlas.klass(1).n_groups
        viewer.screenshot(tmp_path / "atlas-api.png")
        assert viewer.errors == []
    finally:
        viewer.close()
