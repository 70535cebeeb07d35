"""Every example of README.md and docs/*.md runs as written (see tests/doc_examples.py for how).

The static checks (block languages, directives, JSON and job specs that parse, links that stay in
the repository, the README's length, every setting documented) take a second; the page runs start a
real ``neurflow serve`` on loopback and run the quickstart's jobs, about two minutes on two cores.
"""

from __future__ import annotations

import re

import pytest

from neurflow.client.process import free_loopback_port
from tests.doc_examples import FIRST, REPO, Session, bad_links, check_block, inventory, pages, parse

README_MAX_LINES = 250


def test_every_block_is_known_and_every_skip_says_why(request):
    blocks = [block for path in pages() for block in parse(path)]
    for block in blocks:
        check_block(block)
    runnable = [b for b in blocks if b.lang in {"bash", "sh", "shell", "python"}]
    skipped = [b for b in runnable if b.kind == "skip"]
    assert len(runnable) >= 20 and len(skipped) <= len(runnable) // 3, (len(runnable), len(skipped))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:  # the skipped examples are listed on every run, not only on failure
        reporter.write_line("")
        reporter.write_line(f"doc examples: {len(runnable) - len(skipped)} run, {len(skipped)} skipped")
        for line in inventory():
            reporter.write_line("  " + line)


def test_links_stay_in_the_repository():
    folder_readmes = sorted(p for p in REPO.glob("*/README.md") if not p.parts[-2].startswith("."))
    problems = [problem for path in [*pages(), *folder_readmes] for problem in bad_links(path)]
    assert not problems, "\n".join(problems)


def test_readme_reads_in_five_minutes():
    lines = (REPO / FIRST).read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the limit is {README_MAX_LINES}"
    assert "docs/viewer.png" in (REPO / FIRST).read_text()


def test_readme_layer_table_matches_the_import_check():
    from tests.test_layers import LAYERS

    rows = re.findall(r"^\| `([\w/]+)/` \| `([\w.]+)` \| (\d) \|", (REPO / FIRST).read_text(), flags=re.M)
    shown = {package: (folder, int(rank)) for folder, package, rank in rows}
    assert shown == LAYERS, f"README's 'Where things live' table {shown} differs from tests/test_layers.py {LAYERS}"


def test_configuration_page_documents_every_setting():
    from neurflow.service.settings import Settings

    text = (REPO / "docs" / "configuration.md").read_text()
    missing = [name for name in Settings.__struct_fields__ if not re.search(rf"`{name}`", text)]
    assert not missing, f"docs/configuration.md does not document the settings {missing}"


def test_speed_page_shows_the_last_measured_table():
    import json

    latest = json.loads((REPO / "bench" / "results" / "latest.json").read_text())
    text = (REPO / "docs" / "speed.md").read_text()
    assert latest["table_md"] in text, "docs/speed.md does not show the table of bench/results/latest.json"
    assert f"commit {latest['commit']}" in text


@pytest.fixture(scope="module")
def session(tmp_path_factory, request):
    running = Session(tmp_path_factory.mktemp("docs-session"), free_loopback_port())
    yield running
    running.close()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and running.seconds:  # where the time went, slowest examples first
        reporter.write_line("")
        slowest = sorted(running.seconds.items(), key=lambda item: -item[1])[:12]
        reporter.write_line("doc examples, slowest: " + ", ".join(f"{where} {s:.0f} s" for where, s in slowest))


@pytest.mark.slow
@pytest.mark.parametrize("page", [str(p.relative_to(REPO)) for p in pages()])
def test_examples_run(page, session):
    session.run_page(REPO / page)
