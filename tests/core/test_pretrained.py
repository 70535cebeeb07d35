"""Published weights by name, offline for real (this machine has no network): cached files load,
missing ones fail at once with what to download and where; class names and short error messages."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from neurflow.core.class_names import builtin_class_names, resolve_class_names
from neurflow.core.model_intake import load_model
from neurflow.core.pretrained import is_pretrained_tag, pretrained_meta, reachable


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_names_and_paths_are_told_apart():
    assert is_pretrained_tag("IMAGENET1K_V2") and is_pretrained_tag("a1_in1k") and is_pretrained_tag("pretrained")
    assert not is_pretrained_tag("weights.safetensors") and not is_pretrained_tag("models/w")
    assert not is_pretrained_tag(None)


def test_missing_torchvision_weights_fail_at_once_offline(torch_home):
    assert not reachable("download.pytorch.org")  # the premise: no network here
    start = time.perf_counter()
    with pytest.raises(ValueError) as err:
        load_model("torchvision:resnet50", "IMAGENET1K_V2", 1000)
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "download https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in message
    assert f"put it at {torch_home / 'hub' / 'checkpoints' / 'resnet50-11ad3fa6.pth'}" in message


def test_missing_timm_weights_name_the_hub_file():
    with pytest.raises(ValueError, match=r"download https://huggingface.co/timm/resnet18.a1_in1k/resolve/main/"
                                         r"model.safetensors and give its path as the model weights"):
        load_model("timm:resnet18", "a1_in1k", 1000)


def test_cli_reports_missing_weights_in_one_line_without_traceback(torch_home, tmp_path):
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "neurflow.cli", "layers", "torchvision:resnet18", "--weights",
                             "IMAGENET1K_V1"], capture_output=True, text=True, timeout=120,
                            env={"TORCH_HOME": str(torch_home), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "resnet18-f37072fd.pth" in result.stderr and time.perf_counter() - start < 60


def test_cached_torchvision_weights_load_offline_with_their_class_names(torch_home):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=1000)
    target = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)  # tensors only: read back with weights_only=True
    model = load_model("torchvision:resnet18", "IMAGENET1K_V1", 1000)
    assert not model.training
    torch.testing.assert_close(model.fc.weight, reference.fc.weight)
    meta = pretrained_meta("torchvision:resnet18", "IMAGENET1K_V1")
    assert meta.class_names[:2] == ["tench", "goldfish"] and len(meta.class_names) == 1000
    assert meta.mean == pytest.approx([0.485, 0.456, 0.406])
    assert resolve_class_names(None, 1000, "torchvision:resnet18", "IMAGENET1K_V1")[1] == "goldfish"
    with pytest.raises(ValueError, match="have 1000 classes; set num_classes to 1000"):
        load_model("torchvision:resnet18", "IMAGENET1K_V1", 10)


def test_cached_timm_weights_load_offline(tmp_path, monkeypatch):
    import timm
    from huggingface_hub import constants

    torch.manual_seed(0)
    reference = timm.create_model("resnet18", num_classes=1000)
    snapshot = tmp_path / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    save_file(reference.state_dict(), str(snapshot / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = load_model("timm:resnet18", "a1_in1k", 1000)
    torch.testing.assert_close(model.fc.weight, reference.fc.weight)
    assert pretrained_meta("timm:resnet18", "a1_in1k").class_names[0] == "tench"


def test_misspelled_names_get_suggestions_not_lists():
    with pytest.raises(ValueError, match=r"did you mean 'IMAGENET1K_V2', 'IMAGENET1K_V1'"):
        load_model("torchvision:resnet50", "IMAGENET1K_V3", 1000)
    with pytest.raises(ValueError, match=r"unknown timm architecture name 'resnet5O'; did you mean 'resnet50'"):
        load_model("timm:resnet5O", None, 10)
    with pytest.raises(ValueError, match=r"pretrained tag for timm:resnet50 'a1_in1'; did you mean 'a1_in1k'"):
        load_model("timm:resnet50", "a1_in1", 1000)


def test_builtin_imagenet_class_names():
    names = builtin_class_names("builtin:imagenet1k")
    assert len(names) == 1000 and names[0] == "tench"
    assert resolve_class_names("builtin:imagenet1k", 1000)[-1] == names[-1]
    with pytest.raises(ValueError, match="class_names has 1000 names but the model has 10 classes"):
        resolve_class_names("builtin:imagenet1k", 10)
    with pytest.raises(ValueError, match="unknown built-in class list 'builtin:imagenet21k'"):
        resolve_class_names("builtin:imagenet21k", 10)


def test_dataparallel_state_dict_gets_a_hint(tmp_path):
    state = {f"module.{k}": v for k, v in torchvision.models.resnet18(num_classes=3).state_dict().items()}
    path = tmp_path / "dp.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"every key starts with 'module.' .*save model.module.state_dict\(\)"):
        load_model("resnet18", path, 3)
