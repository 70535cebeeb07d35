"""Loading open_clip models and embedding patches and concepts with them.

Three ways to name a model (``ClipSpec``):

* a registered open_clip architecture + a pretrained tag, e.g. ``("ViT-B-32", "laion2b_s34b_b79k")``:
  the real download path, used when the machine has network or a filled open_clip / HF cache;
* an architecture + a checkpoint file (``.safetensors``; ``.pt``/``.bin`` are read with
  ``weights_only=True``), optionally with a custom model-config JSON that is registered under the
  given name at load time (how a locally trained model such as the world CLIP is loaded offline);
* ``local-dir:FOLDER``: an open_clip bundle (``open_clip_config.json`` + ``open_clip_model.safetensors``).

Loaded models are kept in a process-wide LRU cache (:func:`load_clip`) keyed by the spec and the
checkpoint file's size and modification time, so a service can keep one model warm between jobs and
a retrained checkpoint is picked up. Concept (text) embeddings are cached per model instance and
(vocabulary, templates).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from neurflow.core.hashing import sha256_file
from neurflow.labeler.config import ClipSpec, local_dir
from neurflow.labeler.vocabulary import Vocabulary

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
MODEL_CACHE_SIZE = int(os.environ.get("NEURFLOW_CLIP_CACHE", "2"))

_load_lock = threading.Lock()
_models: OrderedDict[tuple, ClipModel] = OrderedDict()


class ClipModel:
    """One loaded open_clip model with its preprocessing and tokenizer."""

    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, spec: ClipSpec, weights_sha256: str | None = None):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.spec = spec
        self.weights_sha256 = weights_sha256
        self.device = torch.device(spec.device)
        self._concepts: dict[tuple[tuple[str, ...], str], np.ndarray] = {}
        self._matrices: OrderedDict[tuple[str, tuple[str, ...]], np.ndarray] = OrderedDict()
        self._text_lock = threading.Lock()
        self._embed_dim: int | None = None

    # -- identity ---------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Provenance written into ``Circuit.labeling``."""
        return {
            "model": self.spec.model,
            "pretrained": self.spec.pretrained,
            "model_config": self.spec.model_config,
            "weights_sha256": self.weights_sha256,
            "embed_dim": self.embed_dim,
        }

    @property
    def embed_dim(self) -> int:
        if self._embed_dim is None:  # architectures differ in where they keep it: ask the text tower
            self._embed_dim = int(self.encode_texts(["x"]).shape[1])
        return self._embed_dim

    @property
    def logit_scale(self) -> float:
        """exp of the learned temperature: the factor CLIP multiplies cosines by before a softmax."""
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.exp().item()) if scale is not None else 100.0

    # -- embeddings -------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """L2-normalised image embeddings, shape (n, d), float32."""
        if not images:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        out = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images[start : start + batch_size]])
            emb = self.model.encode_image(batch.to(self.device), normalize=True)
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """L2-normalised text embeddings, shape (n, d), float32."""
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start : start + batch_size])).to(self.device)
            out.append(self.model.encode_text(tokens, normalize=True).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def embed_concepts(self, concepts: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """Prompt-ensemble embedding of each concept: mean of its normalised template embeddings, renormalised."""
        templates = tuple(templates)
        with self._text_lock:
            missing = [c for c in dict.fromkeys(concepts) if (templates, c) not in self._concepts]
            if missing:
                prompts = [t.format(c) for c in missing for t in templates]
                emb = self.encode_texts(prompts).reshape(len(missing), len(templates), -1).mean(axis=1)
                emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
                for concept, vector in zip(missing, emb):
                    self._concepts[(templates, concept)] = vector
            return np.stack([self._concepts[(templates, c)] for c in concepts]).astype(np.float32)

    def vocabulary_matrix(self, vocabulary: Vocabulary, templates: Sequence[str]) -> np.ndarray:
        """(n_concepts, d) concept embeddings of a vocabulary, cached per (vocabulary, templates)."""
        key = (vocabulary.digest, tuple(templates))
        if key in self._matrices:
            self._matrices.move_to_end(key)
            return self._matrices[key]
        matrix = self.embed_concepts(vocabulary.concepts, templates)
        self._matrices[key] = matrix
        while len(self._matrices) > 8:
            self._matrices.popitem(last=False)
        return matrix


# -- loading -----------------------------------------------------------------------------------


def _file_fingerprint(path: str | None) -> tuple:
    if path and os.path.isfile(path):
        st = os.stat(path)
        return (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    return (path,)


def _cache_key(spec: ClipSpec) -> tuple:
    local = local_dir(spec.model)
    bundle = tuple(_file_fingerprint(str(p)) for p in sorted(Path(local).glob("*"))) if local and os.path.isdir(local) else ()
    return (spec.model, _file_fingerprint(spec.pretrained), _file_fingerprint(spec.model_config), spec.device, bundle)


def load_clip(spec: ClipSpec | dict) -> ClipModel:
    """Load (or reuse) the open_clip model a spec names. Raises ``ValueError`` for bad input."""
    if isinstance(spec, dict):
        import msgspec

        try:
            spec = msgspec.convert(spec, ClipSpec)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid clip spec: {exc}") from None
    key = _cache_key(spec)
    with _load_lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        model = _load_uncached(spec)
        _models[key] = model
        while len(_models) > max(MODEL_CACHE_SIZE, 1):
            _models.popitem(last=False)
        return model


def clear_clip_cache() -> None:
    with _load_lock:
        _models.clear()


def _read_model_config(path: str) -> dict:
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"clip.model_config file {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"clip.model_config {path} is not a readable JSON file: {exc}") from None
    if isinstance(cfg, dict) and "model_cfg" in cfg:  # an open_clip bundle's open_clip_config.json
        cfg = cfg["model_cfg"]
    if not isinstance(cfg, dict) or not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ValueError(
            f"clip.model_config {path} is not an open_clip model config; it needs the keys "
            '"embed_dim", "vision_cfg" and "text_cfg" (see open_clip/model_configs/*.json)'
        )
    return cfg


def register_model_config(name: str, cfg: dict) -> None:
    """Make ``name`` an open_clip architecture defined by ``cfg`` (process-wide, idempotent)."""
    import open_clip

    existing = open_clip.get_model_config(name)
    builtin = Path(open_clip.__file__).parent / "model_configs" / f"{name}.json"
    if builtin.is_file() and existing != cfg:
        raise ValueError(
            f"clip.model {name!r} is a built-in open_clip architecture but clip.model_config defines a different "
            "one; give the custom config its own name"
        )
    if existing == cfg:
        return
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "neurflow-open-clip-configs" / digest
    folder.mkdir(parents=True, exist_ok=True)
    # open_clip names a config after its file stem, so the file carries the requested name.
    target = folder / f"{name}.json"
    target.write_text(json.dumps(cfg))
    open_clip.add_model_config(target)


def _resolve_pretrained(name: str, pretrained: str | None) -> str:
    import open_clip

    if pretrained is None:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ValueError(
            f"clip.pretrained is missing for model {name!r}: give a pretrained tag ({tags[:8] or 'none registered'}) "
            "or a checkpoint file (.safetensors, .pt, .bin)"
        )
    if os.path.isfile(pretrained):
        return pretrained
    if pretrained in open_clip.list_pretrained_tags_by_model(name):
        return pretrained
    if pretrained.endswith(CHECKPOINT_SUFFIXES) or os.sep in pretrained or "/" in pretrained:
        raise ValueError(f"clip.pretrained checkpoint file {pretrained} does not exist")
    tags = open_clip.list_pretrained_tags_by_model(name)
    raise ValueError(
        f"unknown pretrained tag {pretrained!r} for open_clip model {name!r}; known tags: {tags or 'none'}; "
        "or give a checkpoint file path"
    )


def _cached_or_fail(name: str, tag: str) -> str:
    """A pretrained tag's file from the local caches (then loading needs no network), the tag itself
    when the hub is reachable (open_clip downloads it), else a ValueError at once: without network,
    open_clip would spend about a minute in hub retries before failing with a traceback."""
    import open_clip
    from huggingface_hub import constants, try_to_load_from_cache

    from neurflow.core.pretrained import reachable

    cfg = open_clip.get_pretrained_cfg(name, tag)
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        candidates = [filename.replace("pytorch_model.bin", "model.safetensors")] * filename.endswith(".bin") + [filename]
        for candidate in candidates:
            cached = try_to_load_from_cache(repo, candidate)
            if isinstance(cached, str):
                return cached
        host, source = "huggingface.co", f"https://huggingface.co/{repo}/resolve/main/{candidates[0]}"
        cache = f"or fill the Hugging Face cache ({constants.HF_HUB_CACHE}) with `huggingface-cli download {repo} {candidates[0]}`"
    else:
        url = cfg.get("url", "")
        target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if target.is_file():
            return str(target)
        host, source, cache = url.split("/")[2], url, f"or put it at {target}"
    if reachable(host):
        return tag
    constants.HF_HUB_OFFLINE = True  # no network: later hub look-ups (tokenizers) fail at once too
    raise ValueError(
        f"the pretrained weights {tag!r} of open_clip model {name!r} are not on this machine and there is no "
        f"network to fetch them: download {source} and pass its path as clip.pretrained (--clip-pretrained FILE "
        f"with --clip-model {name}), {cache}"
    )


def _mismatch_message(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    shown = "; ".join(lines[1:6] if len(lines) > 1 else lines)
    return shown[:800]


def _load_uncached(spec: ClipSpec) -> ClipModel:
    import open_clip

    name, pretrained, sha = spec.model, spec.pretrained, None
    bundle = local_dir(name)
    if bundle is not None:
        folder = Path(bundle)
        if not folder.is_dir():
            raise ValueError(f"clip.model {name!r}: no such folder {folder.resolve()}; make an open_clip bundle there "
                             f"with `neurflow clip-bundle MODEL --pretrained TAG --out {bundle}` (a CLIP from this "
                             f"machine's open_clip cache) or `neurflow world-clip --out {bundle}` (the synthetic world's)")
        if not (folder / "open_clip_config.json").is_file():
            raise ValueError(f"clip.model {name!r}: {folder} is not an open_clip bundle folder (open_clip_config.json missing)")
        pretrained = None
        weights = sorted(folder.glob("*.safetensors"))
        sha = sha256_file(str(weights[0])) if weights else None
    else:
        if spec.model_config:
            register_model_config(name, _read_model_config(spec.model_config))
        elif name not in open_clip.list_models():
            close = difflib.get_close_matches(name, open_clip.list_models(), n=5, cutoff=0.5)
            raise ValueError(
                f"unknown open_clip model {name!r}; similar registered names: {close or open_clip.list_models()[:8]} "
                "(see open_clip.list_models()), or pass clip.model_config to define a custom architecture"
            )
        pretrained = _resolve_pretrained(name, pretrained)
        if not os.path.isfile(pretrained):
            pretrained = _cached_or_fail(name, pretrained)
        if os.path.isfile(pretrained):
            sha = sha256_file(pretrained)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=spec.device, weights_only=True
        )
    except RuntimeError as exc:
        text = str(exc)
        if "state_dict" in text or "size mismatch" in text or "Missing key" in text or "Unexpected key" in text:
            raise ValueError(
                f"checkpoint {pretrained or name} does not match the architecture of clip.model {name!r}: {_mismatch_message(exc)}"
            ) from None
        if "download" in text.lower():
            raise ValueError(
                f"could not fetch pretrained weights {pretrained!r} for {name!r} ({text[:200]}); without network, "
                "put them in the open_clip/HF cache or pass a checkpoint file"
            ) from None
        raise ValueError(f"cannot load open_clip model {name!r} with pretrained={pretrained!r}: {text[:400]}") from None
    except Exception as exc:  # safetensors / torch.load errors on a corrupt file
        raise ValueError(f"cannot load open_clip model {name!r} from {pretrained or name}: {type(exc).__name__}: {str(exc)[:300]}") from None
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except OSError as exc:
        raise ValueError(
            f"the tokenizer of {name!r} needs files from the Hugging Face hub that are not cached ({exc}); "
            "use a local-dir: bundle that includes them"
        ) from None
    return ClipModel(model, preprocess, tokenizer, spec, weights_sha256=sha)


#: the files of an open_clip bundle folder (``local-dir:FOLDER``)
BUNDLE_CONFIG = "open_clip_config.json"
BUNDLE_WEIGHTS = "open_clip_model.safetensors"


def write_bundle(name: str, pretrained: str | None, out: str | Path, model_config: str | None = None) -> Path:
    """Write the open_clip model ``name`` with its ``pretrained`` weights (a tag found in this machine's
    open_clip/HF caches, fetched when the hub is reachable, or a checkpoint file) as a bundle folder
    ``out`` (:data:`BUNDLE_CONFIG` + :data:`BUNDLE_WEIGHTS`), which ``local-dir:OUT`` loads with no
    network; return ``out``. ``model_config``: a JSON file defining a custom architecture ``name``.
    ``out`` must not exist or be empty: a bundle is never written over."""
    import open_clip
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists; a CLIP bundle is written to a new folder (choose another --out)")
    if model_config:
        register_model_config(name, _read_model_config(model_config))
    elif name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5, cutoff=0.5)
        raise ValueError(f"unknown open_clip model {name!r}; similar registered names: {close or open_clip.list_models()[:8]}"
                         " (see open_clip.list_models()), or pass --model-config to define a custom architecture")
    weights = _resolve_pretrained(name, pretrained)
    if not os.path.isfile(weights):
        weights = _cached_or_fail(name, weights)
    try:
        model = open_clip.create_model(name, pretrained=weights, weights_only=True)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {weights} does not match the architecture of open_clip model {name!r}: "
                         f"{_mismatch_message(exc)}") from None
    config = {"model_cfg": open_clip.get_model_config(name), "preprocess_cfg": open_clip.get_model_preprocess_cfg(model)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    (tmp / BUNDLE_CONFIG).write_text(json.dumps(config, indent=1))
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(tmp / BUNDLE_WEIGHTS))
    if out.exists():
        out.rmdir()  # empty, checked above
    os.replace(tmp, out)  # the folder appears whole or not at all
    return out
