"""Published weights by name: torchvision's weights enums and timm's pretrained tags.

``load_model("torchvision:resnet50", "IMAGENET1K_V2", 1000)`` and ``load_model("timm:resnet50",
"a1_in1k", 1000)`` (or ``"pretrained"``: timm's default tag) load the published weights, and
:func:`pretrained_meta` gives their class names and normalisation without loading anything.

Files come from the local caches first (torch hub's ``checkpoints/`` folder for torchvision and for
timm weights hosted by URL; the Hugging Face cache for timm weights on the hub), so a machine without
network works once the file is there. Without the file and without network the load fails at once
(no download attempt and no retries) with a message that says which file to fetch and where to put
it. Downloaded torchvision/URL checkpoints are read with ``weights_only=True``: tensors only, no code.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import msgspec
import torch
from torch import nn

from .arch_names import split_arch
from .layer_access import did_you_mean

#: timm's default pretrained tag of an architecture.
TIMM_DEFAULT = "pretrained"
_ONLINE: dict[str, bool] = {}


class PretrainedMeta(msgspec.Struct, frozen=True):
    """What published weights say about themselves."""

    arch: str
    tag: str
    num_classes: int
    class_names: list[str] | None
    mean: list[float]
    std: list[float]
    source: str  # the URL (or Hugging Face repo) the file comes from
    cached_file: str  # where the file is (or must be put) on this machine


def is_pretrained_tag(weights: str | Path | None) -> bool:
    """A name such as ``IMAGENET1K_V2`` or ``a1_in1k`` rather than a file path (no folder, no suffix)."""
    if weights is None or isinstance(weights, Path):
        return False
    return bool(weights) and "/" not in weights and os.sep not in weights and "." not in weights


def offline() -> bool:
    """True when downloads are switched off (``HF_HUB_OFFLINE`` / ``NEURFLOW_OFFLINE``)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("NEURFLOW_OFFLINE", "HF_HUB_OFFLINE"))


def reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether ``host:443`` accepts a connection (cached per process); never more than ``timeout``."""
    if offline():
        return False
    if host not in _ONLINE:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _ONLINE[host] = True
        except OSError:
            _ONLINE[host] = False
    return _ONLINE[host]


def _hub_checkpoint(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def _first_name(description: str) -> str:
    return description.split(",")[0].strip()


# -- torchvision ---------------------------------------------------------------------------------
def _torchvision_weights(name: str, tag: str):
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (KeyError, ValueError):
        raise ValueError(f"torchvision has no published weights for {name!r}") from None
    tags = list(enum.__members__)
    if tag not in tags:
        raise ValueError(did_you_mean(tag, tags, f"weights name for torchvision:{name}") + f" (known: {', '.join(tags)})")
    return enum[tag]


def _torchvision_meta(arch: str, name: str, tag: str) -> PretrainedMeta:
    w = _torchvision_weights(name, tag)
    categories = list(w.meta.get("categories") or [])
    transform = w.transforms()
    return PretrainedMeta(arch=arch, tag=tag, num_classes=len(categories), class_names=categories or None,
                          mean=[float(v) for v in transform.mean], std=[float(v) for v in transform.std],
                          source=w.url, cached_file=str(_hub_checkpoint(w.url)))


# -- timm --------------------------------------------------------------------------------------------
def _timm_cfg(name: str, tag: str):
    import timm

    full = name if tag == TIMM_DEFAULT else f"{name}.{tag}"
    try:
        cfg = timm.models.get_pretrained_cfg(full)
    except RuntimeError:  # timm: "Invalid pretrained tag"
        cfg = None
    if cfg is None or (not cfg.hf_hub_id and not cfg.url):
        known = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{name}.*")]
        if not known:
            raise ValueError(f"timm has no pretrained weights for {name!r}")
        raise ValueError(did_you_mean(tag, known, f"pretrained tag for timm:{name}")
                         + f" (known: {', '.join(known[:10])}{' ...' if len(known) > 10 else ''}; or 'pretrained')")
    return cfg


def _timm_file(cfg) -> tuple[str, str, str | None]:
    """(source, where the file is or must go, the cached file if present)."""
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        filename = cfg.hf_hub_filename or "model.safetensors"
        cached = try_to_load_from_cache(repo, filename)
        source = f"https://huggingface.co/{repo}/resolve/main/{filename}"
        return source, f"the Hugging Face cache ({constants.HF_HUB_CACHE})", cached if isinstance(cached, str) else None
    path = _hub_checkpoint(cfg.url)
    return cfg.url, str(path), str(path) if path.is_file() else None


def _timm_meta(arch: str, name: str, tag: str) -> PretrainedMeta:
    cfg = _timm_cfg(name, tag)
    names = None
    if cfg.num_classes == 1000:
        from timm.data import ImageNetInfo

        names = [_first_name(d) for d in ImageNetInfo("imagenet-1k").label_descriptions()]
    source, where, cached = _timm_file(cfg)
    return PretrainedMeta(arch=arch, tag=tag, num_classes=int(cfg.num_classes), class_names=names,
                          mean=[float(v) for v in cfg.mean], std=[float(v) for v in cfg.std], source=source,
                          cached_file=cached or where)


# -- public ------------------------------------------------------------------------------------------
def pretrained_meta(arch: str, tag: str) -> PretrainedMeta:
    """Class names, normalisation and file location of published weights (nothing is loaded)."""
    family, name = split_arch(arch)
    return _torchvision_meta(arch, name, tag) if family == "torchvision" else _timm_meta(arch, name, tag)


def _missing(meta: PretrainedMeta, family: str, name: str) -> ValueError:
    if family == "torchvision" or not meta.source.startswith("https://huggingface.co/"):
        where = f"put it at {meta.cached_file} (torch hub's cache: torch.hub.get_dir(), moved by TORCH_HOME)"
    else:
        where = (f"give its path as the model weights (a safetensors state dict of timm:{name}), or fill "
                 f"{meta.cached_file} with `huggingface-cli download "
                 f"{meta.source.split('/')[3]}/{meta.source.split('/')[4]}`")
    return ValueError(f"the weights {meta.tag!r} of {meta.arch} are not on this machine and there is no network "
                      f"to fetch them: download {meta.source} and {where}")


def load_pretrained(arch: str, tag: str, num_classes: int) -> tuple[nn.Module, PretrainedMeta]:
    """The architecture with its published weights (eval mode), and their metadata."""
    family, name = split_arch(arch)
    meta = pretrained_meta(arch, tag)
    if num_classes != meta.num_classes:
        raise ValueError(f"the weights {tag!r} of {arch} have {meta.num_classes} classes; set num_classes to "
                         f"{meta.num_classes} (got {num_classes})")
    if family == "torchvision":
        import torchvision

        if not Path(meta.cached_file).is_file() and not reachable("download.pytorch.org"):
            raise _missing(meta, family, name)
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        state = torch.hub.load_state_dict_from_url(meta.source, progress=False, check_hash=True, weights_only=True)
        model.load_state_dict(state, strict=True)
        return model.eval(), meta
    import timm

    cfg = _timm_cfg(name, tag)
    _, _, cached = _timm_file(cfg)
    full = name if tag == TIMM_DEFAULT else f"{name}.{tag}"
    if cached:  # a file on disk: timm reads it, no network involved
        model = timm.create_model(full, pretrained=True, pretrained_cfg_overlay={"file": cached})
    elif reachable("huggingface.co" if cfg.hf_hub_id else "github.com"):
        model = timm.create_model(full, pretrained=True)
    else:
        raise _missing(meta, family, name)
    return model.eval(), meta
