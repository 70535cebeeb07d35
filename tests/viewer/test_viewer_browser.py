"""The circuit viewer in headless Chromium (Playwright driving Debian's ``/usr/bin/chromium``).

Opened from a file (``neurflow report``) and served by the real API on loopback
(``GET /v1/circuits/{id}/report``): no console errors, one node per group, a click shows that group's
mosaic, the label search filters nodes, a debug job is highlighted. These tests FAIL when Chromium or
Playwright is missing; set ``NEURFLOW_SKIP_BROWSER=1`` to skip them instead. Screenshots are saved in
pytest's tmp dir and copied to ``.cache/test-artifacts/``.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import httpx
import pytest

from neurflow.cli import main as neurflow
from neurflow.client.api import Client
from neurflow.exports.source import ExportSource

from tests.exports.conftest import labeled  # noqa: F401  (the shared labeled-circuit fixture)
from tests.service.conftest import assets, live_server  # noqa: F401  (the service tests' real server on loopback)
from tests.service.helpers import KEY_A, KEY_B, REPO, job_spec, labeling_section, write_tiny_clip

CHROMIUM = os.environ.get("NEURFLOW_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / ".cache" / "test-artifacts"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def browser():
    if os.environ.get("NEURFLOW_SKIP_BROWSER") == "1":
        pytest.skip("NEURFLOW_SKIP_BROWSER=1")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"playwright is not installed ({exc}); pip install -e '.[dev]', or set NEURFLOW_SKIP_BROWSER=1")
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install chromium), or set NEURFLOW_SKIP_BROWSER=1")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Viewer:
    """A page of the viewer with its console errors recorded."""

    def __init__(self, browser, headers: dict | None = None) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, extra_http_headers=headers)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, url: str) -> Viewer:
        response = self.page.goto(url)
        assert response is not None and response.ok, response and response.status
        self.page.wait_for_selector("g.node[data-group-id]")
        return self

    def nodes(self):
        return self.page.locator('section[data-graph="0"] g.node[data-group-id]')

    def node(self, group_id: str):
        return self.page.locator(f'section[data-graph="0"] g.node[data-group-id="{group_id}"]')

    def undimmed_ids(self) -> list[str]:
        return self.page.eval_on_selector_all(
            'section[data-graph="0"] g.node[data-group-id]:not(.dimmed)', "els => els.map(e => e.dataset.groupId)")

    def visible_ids(self) -> list[str]:
        nodes = self.nodes()
        return [nodes.nth(i).get_attribute("data-group-id") for i in range(nodes.count()) if nodes.nth(i).is_visible()]

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, ARTIFACTS / path.name)

    def close(self) -> None:
        self.context.close()


def check_click_and_search(viewer: Viewer, groups: list[dict], mosaic_of) -> None:
    """Click every group with a mosaic: its detail shows exactly that mosaic; then search the first
    group's top label: the non-dimmed (and, with 'hide', the visible) nodes are the groups with it."""
    page = viewer.page
    assert viewer.nodes().count() == len(groups)
    clicked = 0
    for group in groups:
        expected = mosaic_of(group["id"])
        if expected is None:
            continue
        viewer.node(group["id"]).click()
        assert page.get_attribute("#detail", "data-group-id") == group["id"]
        src = page.get_attribute("#detail img.mosaic", "src")
        assert src == "data:image/png;base64," + base64.b64encode(expected).decode()
        texts = page.locator("#detail ol.labels li .text").all_inner_texts()
        assert texts == [lab["text"] for lab in group["labels"]]
        assert page.locator("#detail ul.members li").count() == len(group["members"])
        assert "selected" in (viewer.node(group["id"]).get_attribute("class") or "")
        clicked += 1
    assert clicked >= 2
    labeled_groups = [g for g in groups if g["labels"]]
    assert labeled_groups, "the circuit has no labels to search"
    query = labeled_groups[0]["labels"][0]["text"]
    expected = sorted(g["id"] for g in groups if any(query.lower() in lab["text"].lower() for lab in g["labels"]))
    assert 0 < len(expected)
    page.fill("#search", query.upper())  # case-insensitive
    assert sorted(viewer.undimmed_ids()) == expected
    assert page.get_attribute("#match-count", "data-matches") == str(len(expected))
    assert page.inner_text("#match-count").startswith(f"{len(expected)} of {len(groups)}")
    page.check("#hide-nonmatching")
    assert sorted(viewer.visible_ids()) == expected
    page.fill("#search", "no label is like this one")
    assert viewer.visible_ids() == [] and page.get_attribute("#match-count", "data-matches") == "0"
    page.fill("#search", "")
    assert len(viewer.visible_ids()) == len(groups)
    page.uncheck("#hide-nonmatching")


def test_viewer_from_a_file(browser, labeled, tmp_path):  # noqa: F811
    out = tmp_path / "report.html"
    assert neurflow(["report", str(labeled.circuit_path), "--images", str(labeled.images), "--out", str(out)]) == 0
    source = ExportSource.from_files(labeled.circuit_path, labeled.images)
    circuit = source.circuit
    groups = [{"id": g.id, "labels": [{"text": lab.text} for lab in g.labels], "members": g.members}
              for _, _, g in circuit.iter_groups()]
    viewer = Viewer(browser).open(out.resolve().as_uri())
    try:
        check_click_and_search(viewer, groups, lambda gid: source.mosaic(circuit.group(gid)[1]))
        # the caption of the first group (the fixture captions it) shows in its detail
        first = next(g for _, _, g in circuit.iter_groups())
        viewer.node(first.id).click()
        assert viewer.page.inner_text("#detail .caption").startswith("\u201c" + first.caption.text)
        assert viewer.page.locator("#debug").count() == 0  # no debug result given
        viewer.screenshot(tmp_path / "viewer-file.png")
        assert viewer.errors == []
    finally:
        viewer.close()


@pytest.fixture
def served(live_server, assets, tmp_path):  # noqa: F811
    """A labeled circuit and a finished debug job on a real server."""
    data = tmp_path / "data"
    write_tiny_clip(data / "assets")
    server = live_server(data)
    with Client(server.url, KEY_A, timeout=300) as c:
        model = c.upload_model(assets["weights"], assets["descriptor"])
        dataset = c.upload_dataset(assets["images"])
        final = c.follow(c.submit(job_spec(model["id"], dataset["id"], target=0, labeling=labeling_section()))["id"])
        assert final["state"] == "succeeded", final
        cid = final["result"]["circuits"][0]["id"]
        result = c.debug(cid, assets["image"])
        debug_job = next(j for j in c.json("GET", "/v1/jobs")["jobs"] if j["kind"] == "debug")
        assert debug_job["result"] == result
        return {"server": server, "circuit_id": cid, "doc": c.circuit(cid), "debug": result,
                "debug_job": debug_job["id"], "run_job": final["id"],
                "mosaics": {g["id"]: c.mosaic(cid, g["id"]) for layer in c.circuit(cid)["layers"]
                            for g in layer["groups"] if g["exemplars"]}}


def test_viewer_served_by_the_api(browser, served, assets, tmp_path):  # noqa: F811
    url = f"{served['server'].url}/v1/circuits/{served['circuit_id']}/report"
    # plain HTTP first: the route's answers and errors
    r = httpx.get(url, headers={"X-API-Key": KEY_A}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"X-API-Key": KEY_B}, timeout=30).status_code == 404  # another owner's circuit
    wrong = httpx.get(url, params={"debug_job": served["run_job"]}, headers={"X-API-Key": KEY_A}, timeout=30)
    assert wrong.status_code == 422 and "not a debug job" in wrong.json()["detail"]
    missing = httpx.get(url, params={"debug_job": "job-nope"}, headers={"X-API-Key": KEY_A}, timeout=30)
    assert missing.status_code == 404

    groups = [g for layer in served["doc"]["layers"] for g in layer["groups"]]
    viewer = Viewer(browser, headers={"X-API-Key": KEY_A}).open(f"{url}?debug_job={served['debug_job']}")
    try:
        check_click_and_search(viewer, groups, served["mosaics"].get)
        # the debug view: the input image, and the groups that fired highlighted on the graph
        page = viewer.page
        debug = served["debug"]
        assert page.locator("#debug").is_visible()
        src = page.get_attribute("#debug img.debug-input", "src")
        assert src.startswith("data:image/png;base64,")
        from PIL import Image
        import io

        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im, \
                Image.open(io.BytesIO(assets["image"])) as original:
            assert im.size == original.size
        fired = sorted(g["id"] for g in debug["groups"] if g["fires"])
        shown = page.eval_on_selector_all('section[data-graph="0"] g.node.fired', "els => els.map(e => e.dataset.groupId)")
        assert sorted(shown) == fired
        scored = page.eval_on_selector_all('section[data-graph="0"] g.node[data-debug-score]',
                                           "els => els.map(e => e.dataset.groupId)")
        assert sorted(scored) == sorted(g["id"] for g in debug["groups"])
        assert page.locator("#debug table.debug-groups tbody tr").count() == len(debug["groups"])
        viewer.screenshot(tmp_path / "viewer-api.png")
        assert viewer.errors == []
    finally:
        viewer.close()


def test_viewer_at_real_size(browser, tmp_path):
    """66 groups over three layers and an ungrouped IG-input layer: the graph opens fitted to the page,
    zooms in and out, keeps the layer names in view while scrolled sideways, shows uncertain groups
    as "A or B?" with both candidates and corrected groups with their provenance."""
    from neurflow.core.corrections import correct_group
    from neurflow.core.group_label import is_uncertain
    from neurflow.viewer.report import ReportEntry, write_report

    from tests.viewer.big_circuit import big_circuit

    circuit = big_circuit()
    correct_group(circuit, "l1g1", "hubcap", key="k-42", via="api")
    out = write_report([ReportEntry(circuit=circuit)], tmp_path / "big.html")
    viewer = Viewer(browser).open(out.resolve().as_uri())
    page = viewer.page
    try:
        assert viewer.nodes().count() == 66
        svg_width = lambda: page.eval_on_selector("svg.circuit", "s => s.getBoundingClientRect().width")  # noqa: E731
        room = page.eval_on_selector("section[data-graph='0'] .graph", "e => e.clientWidth")
        assert svg_width() <= room + 1  # opened fitted: nothing hides to the right
        fitted = svg_width()
        page.click("#zoom-in")
        page.click("#zoom-in")
        assert svg_width() > fitted * 1.5 and svg_width() > room
        assert page.inner_text("#zoom-level").endswith("%")
        # scrolled sideways, the layer names move with the view (their group is translated back)
        page.eval_on_selector("section[data-graph='0'] .graph", "e => { e.scrollLeft = 300; e.dispatchEvent(new Event('scroll')); }")
        names_left = page.eval_on_selector("svg.circuit g.layer-names", "g => g.getBoundingClientRect().left")
        box_left = page.eval_on_selector("section[data-graph='0'] .graph", "e => e.getBoundingClientRect().left")
        assert abs(names_left - box_left) < 2
        page.click("#zoom-fit")
        assert abs(svg_width() - fitted) < 2
        unsure = sorted(g.id for _, _, g in circuit.iter_groups() if is_uncertain(g))
        marked = sorted(page.eval_on_selector_all('g.node[data-uncertain="true"]', "els => els.map(e => e.dataset.groupId)"))
        assert marked == unsure
        viewer.node(unsure[0]).click()
        assert "Uncertain:" in page.inner_text("#detail .uncertain-note")
        _, group = circuit.group(unsure[0])
        assert page.inner_text("#detail .top-label b") == f"{group.labels[0].text} or {group.labels[1].text}?"
        shown = page.eval_on_selector_all("#detail ul.candidates li", "els => els.map(e => e.dataset.candidate)")
        assert shown == [group.labels[0].text, group.labels[1].text]
        viewer.node("l1g1").click()
        assert page.inner_text("#detail .top-label b") == "hubcap"
        assert "Corrected by a person (k-42) via api" in page.inner_text("#detail .correction")
        assert page.locator('g.node[data-group-id="l1g1"] text.ncorrected').count() == 1
        assert page.locator("svg.circuit text.band-note").text_content().startswith("30 core neurons")
        viewer.screenshot(tmp_path / "viewer-real-size.png")
        assert viewer.errors == []
    finally:
        viewer.close()
