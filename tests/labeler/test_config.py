from pathlib import Path

import pytest

from neurflow.labeler.config import LabelerConfig

CLIP = {"model": "ViT-B-32", "pretrained": "openai"}


def test_minimal_section_gets_defaults():
    cfg = LabelerConfig.from_spec({"clip": CLIP})
    assert cfg.clip.model == "ViT-B-32" and cfg.clip.model_config is None
    assert cfg.vocabulary == "builtin:general" and cfg.top_k == 5 and cfg.captioner is None
    assert cfg.score == "mosaic"


def test_issue_example_section_validates():
    section = {"clip": {"model": "ViT-B-32", "pretrained": "openai", "model_config": None}, "vocabulary": ["a", "b"],
               "top_k": 3, "captioner": {"backend": "openai", "model": "gpt-4o", "base_url": "http://127.0.0.1:9/v1"}}
    cfg = LabelerConfig.from_spec(section)
    assert cfg.captioner.backend == "openai" and cfg.captioner.timeout_s > 0 and cfg.vocabulary == ["a", "b"]


@pytest.mark.parametrize(
    "section, message",
    [
        ({"vocabulary": ["a", "b"]}, 'needs a "clip" object'),
        ({"clip": CLIP, "colour": 1}, "unknown field `colour`"),
        ({"clip": {**CLIP, "weights": "x"}}, "unknown field `weights`"),
        ({"clip": CLIP, "top_k": 0}, "top_k"),
        ({"clip": CLIP, "templates": ["a photo"]}, "exactly one '{}'"),
        ({"clip": CLIP, "templates": []}, "empty list"),
        ({"clip": CLIP, "vocabulary": []}, "empty list"),
        ({"clip": CLIP, "holdout": 1.5}, "holdout"),
        ({"clip": CLIP, "score": "magic"}, "score"),
        ({"clip": CLIP, "captioner": {"backend": "openai", "model": "m"}}, "base_url is required"),
        ({"clip": CLIP, "captioner": {"backend": "carrier-pigeon", "model": "m"}}, "backend"),
        ("not a dict", "must be a JSON object"),
        ({"clip": []}, "labeling.clip is an empty list"),
        ({"clip": [CLIP, CLIP], "extra_clips": [CLIP]}, "give every CLIP in one of them"),
        ({"clip": [CLIP, {"model": "RN50", "weights": "x"}]}, "unknown field `weights`"),
    ],
)
def test_bad_sections_are_clear_value_errors(section, message):
    with pytest.raises(ValueError, match=None) as info:
        LabelerConfig.from_spec(section)
    assert message in str(info.value)


def test_relative_paths_resolve_against_base_dir(tmp_path: Path):
    (tmp_path / "w.safetensors").write_bytes(b"x")
    (tmp_path / "cfg.json").write_text("{}")
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    cfg = LabelerConfig.from_spec(
        {"clip": {"model": "m", "pretrained": "w.safetensors", "model_config": "cfg.json"}, "vocabulary": "vocab.txt"}, base_dir=tmp_path
    )
    assert cfg.clip.pretrained == str(tmp_path / "w.safetensors")
    assert cfg.clip.model_config == str(tmp_path / "cfg.json")
    assert cfg.vocabulary == str(tmp_path / "vocab.txt")
    # a pretrained *tag* is not a path and stays as it is
    assert LabelerConfig.from_spec({"clip": CLIP}, base_dir=tmp_path).clip.pretrained == "openai"


def test_a_list_of_clips_is_the_first_and_the_others(tmp_path: Path):
    (tmp_path / "rn.safetensors").write_bytes(b"x")
    rn = {"model": "RN50", "pretrained": "rn.safetensors"}
    cfg = LabelerConfig.from_spec({"clip": [CLIP, rn]}, base_dir=tmp_path)
    assert cfg.clip.model == "ViT-B-32" and [c.model for c in cfg.extra_clips] == ["RN50"]
    assert [c.model for c in cfg.clips] == ["ViT-B-32", "RN50"]
    assert cfg.extra_clips[0].pretrained == str(tmp_path / "rn.safetensors")  # every CLIP's paths resolve
    assert LabelerConfig.from_spec({"clip": [CLIP]}).extra_clips == []
    assert LabelerConfig.from_spec(cfg.to_dict()) == cfg  # the recorded settings read back as they were
