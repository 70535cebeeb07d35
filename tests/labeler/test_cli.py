"""`neurflow label`, `neurflow evaluate` (with --compare) and `neurflow world-clip` end to end."""

from __future__ import annotations

import json

import pytest

from neurflow.cli import main

from neurflow.world.circuits import world_circuit


def test_label_then_evaluate_and_compare(world_clip, tmp_path, capsys):
    circuit, _ = world_circuit(world_clip.world, 6, n_images=5, split="heldout")
    raw = tmp_path / "circuit.json"
    raw.write_text(circuit.to_json())
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["label", str(raw), "--images", str(world_clip.heldout_images), "--world-clip", str(world_clip.bundle),
                 "--out", str(a), "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "l1g0" in out and f"wrote {a}" in out
    labeled = json.loads(a.read_text())
    assert len(labeled["layers"][1]["groups"][0]["labels"]) == 3
    # relabel without the engine: settings come from the previous labeling, flags override them
    assert main(["label", str(a), "--score", "mean_cosine", "--out", str(b)]) == 0
    relabeled = json.loads(b.read_text())
    settings = relabeled["labeling"]["settings"]
    assert settings["score"] == "mean_cosine" and settings["top_k"] == 3
    capsys.readouterr()

    report = tmp_path / "report.json"
    assert main(["evaluate", str(a), "--world", str(world_clip.world), "--json", str(report)]) == 0
    table = capsys.readouterr().out
    assert "top-1 accuracy" in table and "held-out retrieval AUC" in table
    data = json.loads(report.read_text())
    assert data["aggregate"]["n_with_reference"] == 6 and data["aggregate"]["top1_accuracy"] >= 5 / 6

    assert main(["evaluate", str(a), "--compare", str(b), "--world", str(world_clip.world), "--json", str(report)]) == 0
    side = capsys.readouterr().out
    assert "a.json" in side and "b.json" in side
    both = json.loads(report.read_text())
    assert set(both) == {"a", "b"} and both["b"]["labeling"]["score"] == "mean_cosine"


def test_bad_input_is_one_clear_line(tmp_path, capsys, world_clip):
    assert main(["label", str(tmp_path / "missing.json"), "--images", str(tmp_path), "--out", str(tmp_path / "l.json")]) == 2
    assert "circuit file" in capsys.readouterr().err
    circuit, _ = world_circuit(world_clip.world, 6, n_images=3, split="heldout")
    raw = tmp_path / "c.json"
    raw.write_text(circuit.to_json())
    assert main(["label", str(raw), "--images", str(world_clip.heldout_images), "--clip-model", "ViT-Nope", "--clip-pretrained", "x",
                 "--out", str(tmp_path / "l.json")]) == 2
    assert "unknown open_clip model 'ViT-Nope'" in capsys.readouterr().err
    assert main(["label", str(raw), "--images", str(world_clip.heldout_images), "--out", str(tmp_path / "l.json")]) == 2
    assert "no CLIP model given" in capsys.readouterr().err
    assert main(["label", str(raw), "--images", str(world_clip.heldout_images), "--world-clip", str(world_clip.bundle),
                 "--out", str(raw)]) == 2
    assert "is the circuit being labeled" in capsys.readouterr().err
    assert main(["evaluate", str(raw), "--images", str(world_clip.heldout_images)]) == 2
    assert "has no labels" in capsys.readouterr().err


def _same_config(world_clip) -> list[str]:
    """The command's options that name the fixture's training config (so that it finds the bundle)."""
    config = world_clip.metrics["train_config"]
    return ["--steps", str(config["steps"]), "--batch-size", str(config["batch_size"]),
            "--tower", config.get("arch", "vit")]


def test_world_clip_command_reports_zero_shot_accuracy(world_clip, capsys):
    """The fixture's bundle was built by ensure_world_clip, so the command finds it in the cache."""
    assert main(["world-clip", "--world", str(world_clip.world), *_same_config(world_clip)]) == 0
    out = capsys.readouterr().out
    assert str(world_clip.bundle) in out and "zero-shot top-1 on single-part crops" in out
    section = json.loads(out[out.index("{"):])
    from neurflow.world.clip import ARCHS

    assert section["clip"]["model"] == ARCHS[world_clip.metrics["train_config"].get("arch", "vit")][0]
    assert section["vocabulary"].endswith("vocabulary.txt")
    metrics = world_clip.metrics
    assert metrics["zero_shot_top1"] >= 0.85 and metrics["n_crops"] >= 100
    assert set(metrics["per_part_top1"]) >= {"red circle", "striped patch"}


def test_world_clip_copies_its_bundle_to_out_and_prints_that_path(world_clip, tmp_path, capsys):
    out = tmp_path / "my-clip"
    assert main(["world-clip", "--world", str(world_clip.world), *_same_config(world_clip), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"world CLIP: {out.resolve()}\n" in printed
    assert (out / "open_clip_config.json").is_file() and (out / "open_clip_model.safetensors").is_file()
    assert main(["world-clip", "--world", str(world_clip.world), *_same_config(world_clip), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err  # never written over


def test_clip_bundle_writes_a_local_dir_bundle_that_loads(tiny_clip_files, tmp_path, capsys):
    import torch

    from neurflow.labeler.clip_model import load_clip

    out = tmp_path / "bundles" / "my-clip"
    assert main(["clip-bundle", tiny_clip_files["name"], "--pretrained", str(tiny_clip_files["weights"]),
                 "--model-config", str(tiny_clip_files["config"]), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    bundled = load_clip({"model": f"local-dir:{out}"})
    direct = load_clip({"model": tiny_clip_files["name"], "pretrained": str(tiny_clip_files["weights"]),
                        "model_config": str(tiny_clip_files["config"])})
    words = ["red", "stripes"]
    assert torch.allclose(torch.as_tensor(bundled.embed_concepts(words, ["a photo of {}"])),
                          torch.as_tensor(direct.embed_concepts(words, ["a photo of {}"])), atol=1e-5)
    assert main(["clip-bundle", tiny_clip_files["name"], "--pretrained", str(tiny_clip_files["weights"]),
                 "--model-config", str(tiny_clip_files["config"]), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_clip_bundle_and_label_say_what_is_missing(tmp_path, capsys):
    assert main(["clip-bundle", "ViT-B-32", "--pretrained", str(tmp_path / "nope.safetensors"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["clip-bundle", "ViT-B-33", "--pretrained", "openai", "--out", str(tmp_path / "x")]) == 2
    assert "unknown open_clip model 'ViT-B-33'" in capsys.readouterr().err
    from neurflow.labeler.clip_model import load_clip

    with pytest.raises(ValueError) as missing:
        load_clip({"model": f"local-dir:{tmp_path / 'my-clip'}"})
    text = str(missing.value)
    assert "no such folder" in text and "neurflow clip-bundle" in text and "not an open_clip bundle" not in text


def test_caption_vote_flag_sets_the_captioner_and_needs_one(tmp_path, capsys, world_clip):
    import argparse

    from neurflow.cli.labels import labeling_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    folder = str(tmp_path / "captioner")
    base = ["label", "c.json", "--world-clip", str(world_clip.bundle), "--captioner-backend", "transformers",
            "--captioner-model", folder, "--out", str(tmp_path / "l.json")]
    section, _ = labeling_from_args(parser.parse_args(base + ["--no-caption-vote"]), None)
    assert section["captioner"] == {"backend": "transformers", "model": folder, "vote": False}
    section, _ = labeling_from_args(parser.parse_args(base), None)
    assert "vote" not in section["captioner"]  # the setting's default: the caption votes
    circuit, _ = world_circuit(world_clip.world, 6, n_images=3, split="heldout")
    raw = tmp_path / "c.json"
    raw.write_text(circuit.to_json())
    assert main(["label", str(raw), "--images", str(world_clip.heldout_images), "--world-clip", str(world_clip.bundle),
                 "--caption-vote", "--out", str(tmp_path / "l.json")]) == 2
    assert "--caption-vote/--no-caption-vote needs a captioner" in capsys.readouterr().err
