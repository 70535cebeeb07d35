"""The atlas of circuits the engine made for four classes of the world model, built through the CLI.

The numbers here are recomputed from the circuits independently of the atlas code (neuron -> classes,
matrix cells, search hits), and the clustering's guarantee is checked on every concept."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest

from neurflow.atlas import Atlas, AtlasInput, AtlasSettings, build_atlas, search
from neurflow.atlas.concepts import jaccard
from neurflow.cli import main as neurflow

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def made(engine_circuits, tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas-out")
    args = ["atlas", *map(str, engine_circuits.paths), "--out", str(out), "--images", str(engine_circuits.images)]
    assert neurflow(args) == 0
    return out, Atlas.from_json((out / "atlas.json").read_bytes())


def test_cli_writes_the_atlas_and_its_page(made, engine_circuits, capsys):
    out, atlas = made
    assert [c.class_index for c in atlas.classes] == [0, 1, 2, 3]
    assert [c.circuit_id for c in atlas.classes] == [p.as_posix() for p in engine_circuits.paths]
    assert [c.name for c in atlas.classes] == [c.target.name for c in engine_circuits.circuits]
    page = (out / "atlas.html").read_text()
    assert "id='atlas-data'" in page and "id='atlas-circuits'" in page
    embedded = json.loads(re.search(r"id='atlas-circuits'>(.*?)</script>", page).group(1))
    assert sorted(embedded) == ["0", "1", "2", "3"]  # one embedded circuit viewer per class, with its mosaics
    assert all("id='viewer-data'" in html and '"mosaic":"iVBOR' in html for html in embedded.values())
    assert atlas.model == engine_circuits.circuits[0].model
    # the same circuits through the Python API: the same document
    again = build_atlas([AtlasInput(c, p.as_posix()) for c, p in zip(engine_circuits.circuits, engine_circuits.paths)])
    assert again == atlas


def test_the_lower_layers_share_concepts(made):
    _, atlas = made
    concepts = atlas.concepts()
    assert concepts, "four classes of one model on the same images share no concept at all"
    by_layer = {layer.name: layer for layer in atlas.layers}
    assert by_layer["layer2.1"].concepts  # low-level features are shared (measured on this model)
    groups = {(c.class_index, g.id): g for c in atlas.classes for g in c.groups}
    for concept in concepts:
        members = [groups[(r.class_index, r.group)] for r in concept.groups]
        assert len(set(concept.classes)) >= 2 and {r.class_index for r in concept.groups} == set(concept.classes)
        assert all(g.concept == concept.id and g.layer == concept.layer for g in members)
        # average linkage at distance 1 - J: a cluster's mean pairwise Jaccard is at least the threshold
        pairs = [jaccard(a.neurons, b.neurons) for i, a in enumerate(members) for b in members[i + 1:]]
        assert sum(pairs) / len(pairs) >= atlas.settings.jaccard - 1e-9 and concept.cohesion >= atlas.settings.jaccard - 1e-6


def test_shared_neurons_match_the_circuits(made, engine_circuits):
    _, atlas = made
    for layer in atlas.layers:
        uses = defaultdict(list)
        for c in engine_circuits.circuits:
            for lay in c.layers:
                for n in lay.neurons if lay.name == layer.name else ():
                    uses[n.id].append(c.target.class_index)
        expected = sorted((n, sorted(ks)) for n, ks in uses.items() if len(ks) >= 2)
        assert sorted((n.neuron, n.classes) for n in layer.neurons) == expected, layer.name


def test_matrix_and_search_match_the_groups(made):
    _, atlas = made
    expected = sorted({(c.class_index, g.concept) for c in atlas.classes for g in c.groups if g.concept})
    assert sorted((cell.class_index, cell.concept) for cell in atlas.matrix) == expected
    for cell in atlas.matrix:
        assert 0 < cell.strength <= 1 and 0 <= cell.importance <= 1
    # each part label: the classes with a group labeled with it
    labels = {g.labels[0] for c in atlas.classes for g in c.groups if g.labels}
    assert labels
    for text in labels:
        hits = search(atlas, text)
        assert [h.class_index for h in hits.classes] == sorted(
            {c.class_index for c in atlas.classes if any(text.casefold() in t.casefold() for g in c.groups for t in g.labels)},
            key=lambda k: (-max(m.score for m in next(h for h in hits.classes if h.class_index == k).matches), k))


def test_a_looser_threshold_links_classes_across_layers(engine_circuits):
    atlas = build_atlas([AtlasInput(c) for c in engine_circuits.circuits], AtlasSettings(jaccard=0.3))
    assert len(atlas.concepts()) >= len(build_atlas([AtlasInput(c) for c in engine_circuits.circuits]).concepts())
    for pair in atlas.subcircuits:
        assert pair.a < pair.b and pair.depth >= 2 and pair.score == pytest.approx(sum(x.strength for x in pair.links), abs=1e-5)
        for link in pair.links:
            upper, lower = atlas.concept(link.upper), atlas.concept(link.lower)
            assert [lay.name for lay in atlas.layers].index(lower.layer) == [lay.name for lay in atlas.layers].index(upper.layer) + 1
            assert {pair.a, pair.b} <= set(upper.classes) & set(lower.classes)


def test_cli_errors_are_one_line(engine_circuits, tmp_path, capsys):
    assert neurflow(["atlas", str(engine_circuits.paths[0]), str(engine_circuits.paths[0]), "--out", str(tmp_path)]) == 2
    assert "appears twice" in capsys.readouterr().err
    assert neurflow(["atlas", str(engine_circuits.paths[0]), "--out", str(tmp_path), "--jaccard", "0"]) == 2
    assert "--jaccard in (0, 1]" in capsys.readouterr().err
    assert neurflow(["atlas", str(tmp_path / "nope.json"), "--out", str(tmp_path)]) == 2
    assert "no circuit file" in capsys.readouterr().err
    assert neurflow(["atlas-search", str(engine_circuits.paths[0]), "wheel"]) == 2
    assert "unsupported atlas schema" in capsys.readouterr().err
