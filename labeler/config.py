"""The ``labeling`` section of a job spec, validated.

One msgspec Struct tree: unknown keys are errors, and every error is a ``ValueError`` that says which
key was wrong and what is accepted. Relative paths (checkpoint, model config, vocabulary file, captioner
model folder) are resolved against ``base_dir`` when one is given (the spec file's folder), else
against the working directory at load time.

Example::

    {"clip": {"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "model_config": null},
     "vocabulary": "builtin:general", "top_k": 5,
     "captioner": {"backend": "openai", "model": "gpt-4o", "base_url": "https://api.openai.com/v1"}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]

LOCAL_DIR = "local-dir:"


def local_dir(model: str) -> str | None:
    """The folder of a ``local-dir:FOLDER`` CLIP model name, ``None`` for any other name."""
    return model[len(LOCAL_DIR):] if model.startswith(LOCAL_DIR) else None


class ClipSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Which open_clip model scores the patches.

    ``model`` is an open_clip architecture name (``open_clip.list_models()``), a name defined by
    ``model_config``, or ``local-dir:FOLDER`` (an open_clip bundle: ``open_clip_config.json`` +
    weights). ``pretrained`` is a pretrained tag of that architecture (downloaded or read from the
    open_clip cache) or a checkpoint file (.safetensors, or .pt/.bin read with ``weights_only``).
    """

    model: str
    pretrained: str | None = None
    model_config: str | None = None  # open_clip model-config JSON registered under ``model`` at load
    device: str = "cpu"


class CaptionerSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A vision-language model that captions groups (optional).

    ``backend="transformers"``: ``model`` is a local folder saved with ``save_pretrained`` (model +
    processor), loaded offline with ``AutoModelForImageTextToText``. ``backend="openai"``: ``model``
    is the served model name and ``base_url`` the OpenAI-compatible root (``.../v1``); the API key is
    read from the environment variable ``api_key_env`` (never from the spec, never logged).
    """

    backend: Literal["transformers", "openai"]
    model: str
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    max_images: Annotated[int, msgspec.Meta(ge=1, le=32)] = 5  # exemplar patches sent per group
    max_new_tokens: Annotated[int, msgspec.Meta(ge=1, le=2048)] = 160
    image_size: Annotated[int, msgspec.Meta(ge=16, le=1024)] = 224  # side of each patch sent
    prompt: str = "group_caption"  # prompt id in prompts/, single-group captioning
    circuit_prompt: str | None = "circuit_caption"  # multi-level prompt for groups with lower groups
    lower_groups: Annotated[int, msgspec.Meta(ge=1, le=5)] = 2  # strongest lower groups per circuit prompt
    summarize: bool = True  # also store a short label derived from the caption (Caption.label)


class LabelerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Everything :func:`labeler.labeling.label_circuit` needs besides the circuit and the images."""

    clip: ClipSpec
    vocabulary: list[str] | str = "builtin:general"  # inline list, a text file, or "builtin:NAME"
    templates: list[str] | str = "builtin:default"  # prompt ensemble, each with one "{}"
    top_k: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    score: Literal["contrastive", "mean_cosine"] = "contrastive"
    contrast: Annotated[float, msgspec.Meta(ge=0, le=2)] = 1.0  # lambda of the reference term
    patches: Literal["all", "exemplars"] = "all"  # all member concepts' top patches, or the display exemplars only
    max_patches: Annotated[int, msgspec.Meta(ge=1, le=2000)] = 64  # patches embedded per group
    reference_size: Annotated[int, msgspec.Meta(ge=8, le=20000)] = 256  # reference pool of the run
    holdout: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.2  # share of top patches kept for evaluation
    batch_size: PositiveInt = 64
    seed: int = 0
    captioner: CaptionerSpec | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | LabelerConfig, base_dir: str | Path | None = None) -> LabelerConfig:
        """Validate a ``labeling`` dict; raise ``ValueError`` naming the bad key and what is accepted."""
        if isinstance(spec, LabelerConfig):
            config = spec
        else:
            if not isinstance(spec, dict):
                raise ValueError(f"labeling section must be a JSON object, got {type(spec).__name__}")
            if "clip" not in spec:
                raise ValueError(
                    'labeling section needs a "clip" object: {"model": NAME, "pretrained": TAG_OR_PATH, '
                    '"model_config": PATH_OR_NULL}'
                )
            try:
                config = msgspec.convert(spec, cls)
            except msgspec.ValidationError as exc:
                raise ValueError(f"invalid labeling section: {exc}") from None
        config._check()
        return config.resolved(base_dir) if base_dir is not None else config

    def _check(self) -> None:
        templates = self.templates if isinstance(self.templates, list) else None
        if templates is not None:
            if not templates:
                raise ValueError('labeling.templates is an empty list; give at least one template such as "a photo of {}."')
            for template in templates:
                if template.count("{}") != 1:
                    raise ValueError(f"labeling.templates entry {template!r} must contain exactly one '{{}}' for the concept")
        if isinstance(self.vocabulary, list) and not self.vocabulary:
            raise ValueError("labeling.vocabulary is an empty list; give concepts, a text file or 'builtin:general'")
        if self.captioner is not None and self.captioner.backend == "openai" and not self.captioner.base_url:
            raise ValueError('labeling.captioner.base_url is required for backend "openai" (e.g. "http://localhost:8000/v1")')

    def resolved(self, base_dir: str | Path) -> LabelerConfig:
        """A copy whose relative file paths are made absolute against ``base_dir``."""
        base = Path(base_dir)

        def fix(value: str | None) -> str | None:
            if value is None:
                return None
            path = Path(value).expanduser()
            candidate = path if path.is_absolute() else base / path
            # A pretrained tag ("openai") or a model name is not a path: only rewrite what exists there.
            return str(candidate) if candidate.exists() else value

        clip = self.clip
        model = clip.model
        folder = local_dir(model)
        if folder is not None:
            model = LOCAL_DIR + (fix(folder) or "")
        clip = msgspec.structs.replace(clip, model=model, pretrained=fix(clip.pretrained), model_config=fix(clip.model_config))
        vocabulary = self.vocabulary
        if isinstance(vocabulary, str) and not vocabulary.startswith("builtin:"):
            vocabulary = fix(vocabulary) or vocabulary
        templates = self.templates
        if isinstance(templates, str) and not templates.startswith("builtin:"):
            templates = fix(templates) or templates
        captioner = self.captioner
        if captioner is not None and captioner.backend == "transformers":
            captioner = msgspec.structs.replace(captioner, model=fix(captioner.model) or captioner.model)
        return msgspec.structs.replace(self, clip=clip, vocabulary=vocabulary, templates=templates, captioner=captioner)

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)
