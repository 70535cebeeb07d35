"""Search over an atlas: the text match exactly, and the optional CLIP similarity with a real (tiny) CLIP."""

from __future__ import annotations

import numpy as np
import pytest

from neurflow.atlas import AtlasInput, build_atlas, search
from neurflow.atlas.query import atlas_embedder, clip_embedder, text_score
from neurflow.core.circuit import ClipProvenance, Labeling, LabelingSettings, VocabularyProvenance

from .handmade import circuits


@pytest.fixture(scope="module")
def atlas():
    return build_atlas([AtlasInput(c, f"c{c.target.class_index}") for c in circuits()])


def test_text_match_rules():
    assert text_score("fur", "Fur") == 1.0
    assert text_score("red circle", "a red circle on top") == 0.75
    assert text_score("circle red", "a red circle") == 0.5
    assert text_score("wheel", "metal") == 0.0


def test_which_classes_use_fur(atlas):
    result = search(atlas, "  FUR ")
    assert result.query == "fur" and result.mode == "text" and result.min_similarity is None
    assert [(h.class_index, h.name, h.circuit_id, h.score) for h in result.classes] == [
        (0, "cat", "c0", 1.0), (1, "dog", "c1", 1.0), (3, "bus", "c3", 1.0)]
    dog = result.classes[1]
    # the dog's eye group has "fur" as its second label: half weight
    assert [(m.group, m.label, m.rank, m.concept, m.score) for m in dog.matches] == [
        ("l1g0", "Fur", 0, "1c0", 1.0), ("l1g1", "fur", 1, None, 0.5)]
    assert [(c.id, c.label, c.classes) for c in result.concepts] == [("1c0", "fur", [0, 1])]


def test_ranked_by_best_match(atlas):
    result = search(atlas, "tyre")  # the bus's wheel group's second label
    assert [(h.class_index, h.score) for h in result.classes] == [(3, 0.5)]
    assert [c.id for c in result.concepts] == ["1c2"]
    assert search(atlas, "unicorn").classes == []
    with pytest.raises(ValueError, match="empty"):
        search(atlas, "   ")
    with pytest.raises(ValueError, match="at most 200"):
        search(atlas, "x" * 201)


def test_semantic_search_with_the_labeling_clip(tmp_path):
    from tests.service.helpers import labeling_section, write_tiny_clip

    write_tiny_clip(tmp_path)
    section = labeling_section()
    clip = LabelingSettings(clip=section["clip"] | {"pretrained": str(tmp_path / "tiny-clip/weights.safetensors"),
                                                    "model_config": str(tmp_path / "tiny-clip/config.json")})
    import msgspec

    settings = msgspec.convert(msgspec.to_builtins(clip), LabelingSettings)
    labeled = []
    for c in circuits():
        c.labeling = Labeling(settings=settings, clip=ClipProvenance(model="tiny", pretrained=None, model_config=None,
                                                                     weights_sha256=None, embed_dim=16),
                              vocabulary=VocabularyProvenance(name="inline", size=1, sha256_16="0" * 16),
                              templates=["a photo of {}."], confidence_method="by hand", reference_patches=0, holdout={})
        labeled.append(AtlasInput(c, f"c{c.target.class_index}"))
    atlas = build_atlas(labeled)
    assert atlas.source.clip == settings.clip and atlas.source.templates == ["a photo of {}."]
    embed = atlas_embedder(atlas)
    result = search(atlas, "stripes", embed=embed, min_similarity=-1.0)  # every label matches by embedding
    assert result.mode == "text+embedding" and {h.class_index for h in result.classes} == {0, 1, 2, 3}
    direct = clip_embedder(settings.clip, ["a photo of {}."])(["stripes", "metal"])
    car = next(h for h in result.classes if h.class_index == 2)
    metal = next(m for m in car.matches if m.label == "metal")
    assert metal.how == "embedding" and metal.score == pytest.approx(float(direct[0] @ direct[1]), abs=1e-5)
    cat = next(h for h in result.classes if h.class_index == 0)
    assert cat.matches[0].label == "stripes" and cat.matches[0].how == "text" and cat.matches[0].score == 1.0
    strict = search(atlas, "stripes", embed=embed, min_similarity=1.01)  # nothing but the text matches
    assert [h.class_index for h in strict.classes] == [0, 1, 3]
    unlabeled = build_atlas([AtlasInput(c) for c in circuits()])
    with pytest.raises(ValueError, match="records none"):
        atlas_embedder(unlabeled)
    assert np.isfinite(direct).all()
