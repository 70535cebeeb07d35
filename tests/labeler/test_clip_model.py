import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neurflow.labeler.clip_model import load_clip
from neurflow.labeler.config import ClipSpec
from neurflow.labeler.vocabulary import load_vocabulary


def _spec(files, **kw) -> ClipSpec:
    base = {"model": "neurflow-tiny-a", "pretrained": str(files["weights"]), "model_config": str(files["config"])}
    base.update(kw)
    return ClipSpec(**base)


def test_custom_config_and_checkpoint_load_and_embed(tiny_clip_files):
    clip = load_clip(_spec(tiny_clip_files))
    images = [Image.new("RGB", (40, 30), c) for c in ("red", "blue", "green")]
    emb = clip.encode_images(images)
    assert emb.shape == (3, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    text = clip.encode_texts(["a red thing", "a blue thing"])
    assert text.shape == (2, 32) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-4)
    assert clip.describe()["weights_sha256"] and clip.logit_scale > 1


def test_models_are_loaded_once_and_reused(tiny_clip_files):
    assert load_clip(_spec(tiny_clip_files)) is load_clip(_spec(tiny_clip_files))
    assert load_clip(_spec(tiny_clip_files)) is load_clip({"model": "neurflow-tiny-a", "pretrained": str(tiny_clip_files["weights"]),
                                                            "model_config": str(tiny_clip_files["config"])})


def test_local_dir_bundle_loads(tiny_clip_files):
    clip = load_clip(ClipSpec(model=f"local-dir:{tiny_clip_files['bundle']}"))
    assert clip.encode_texts(["x"]).shape == (1, 32)


def test_text_embeddings_are_cached_per_vocabulary_and_templates(tiny_clip_files, monkeypatch):
    clip = load_clip(_spec(tiny_clip_files))
    vocab = load_vocabulary(["cat", "dog", "zebra crossing"])
    calls = []
    real = clip.encode_texts
    monkeypatch.setattr(clip, "encode_texts", lambda texts, **kw: calls.append(len(texts)) or real(texts, **kw))
    first = clip.vocabulary_matrix(vocab, ("a photo of {}.", "{}"))
    second = clip.vocabulary_matrix(vocab, ("a photo of {}.", "{}"))
    assert calls == [6] and first is second  # 3 concepts x 2 templates, once
    other = clip.vocabulary_matrix(vocab, ("{}",))
    assert calls == [6, 3] and not np.allclose(other, first)
    assert np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)


def test_unknown_open_clip_name_is_a_clear_error():
    with pytest.raises(ValueError) as info:
        load_clip(ClipSpec(model="ViT-B-33", pretrained="openai"))
    assert "unknown open_clip model 'ViT-B-33'" in str(info.value) and "ViT-B-32" in str(info.value)


def test_unknown_pretrained_tag_names_the_known_tags():
    with pytest.raises(ValueError) as info:
        load_clip(ClipSpec(model="ViT-B-32", pretrained="not-a-tag"))
    assert "unknown pretrained tag 'not-a-tag'" in str(info.value) and "openai" in str(info.value)


def test_missing_checkpoint_file_is_a_clear_error(tiny_clip_files, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_clip(_spec(tiny_clip_files, pretrained=str(tmp_path / "nope.safetensors")))


def test_checkpoint_that_does_not_match_its_config(tiny_clip_files, tmp_path: Path):
    wider = json.loads(Path(tiny_clip_files["config"]).read_text())
    wider["vision_cfg"]["width"] = 64
    cfg = tmp_path / "wider.json"
    cfg.write_text(json.dumps(wider))
    with pytest.raises(ValueError) as info:
        load_clip(ClipSpec(model="neurflow-tiny-wider", pretrained=str(tiny_clip_files["weights"]), model_config=str(cfg)))
    assert "does not match the architecture" in str(info.value) and "size mismatch" in str(info.value)


def test_corrupt_checkpoint_and_bad_config_are_clear_errors(tiny_clip_files, tmp_path: Path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"definitely not tensors")
    with pytest.raises(ValueError, match="cannot load open_clip model"):
        load_clip(_spec(tiny_clip_files, pretrained=str(junk)))
    bad = tmp_path / "bad.json"
    bad.write_text('{"layers": 3}')
    with pytest.raises(ValueError, match="not an open_clip model config"):
        load_clip(_spec(tiny_clip_files, model="neurflow-tiny-b", model_config=str(bad)))


def test_custom_config_may_not_redefine_a_builtin_architecture(tiny_clip_files):
    with pytest.raises(ValueError, match="built-in open_clip architecture"):
        load_clip(_spec(tiny_clip_files, model="RN50"))
