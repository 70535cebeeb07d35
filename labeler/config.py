"""The ``labeling`` section of a job spec, validated.

One msgspec Struct tree: unknown keys are errors, and every error is a ``ValueError`` that says which
key was wrong and what is accepted. Relative paths (checkpoint, model config, vocabulary file, captioner
model folder) are resolved against ``base_dir`` when one is given (the spec file's folder, or the
service's asset folders in order: the first folder holding the name wins), else against the working
directory at load time.

Example (``clip`` may also be a list of such objects: several CLIPs, each one vote)::

    {"clip": {"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "model_config": null},
     "vocabulary": "builtin:general", "top_k": 5,
     "captioner": {"backend": "openai", "model": "gpt-4o", "base_url": "https://api.openai.com/v1"}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import msgspec

from neurflow.core.circuit import CaptionerSettings, ClipSettings, LabelingSettings

LOCAL_DIR = "local-dir:"


def local_dir(model: str) -> str | None:
    """The folder of a ``local-dir:FOLDER`` CLIP model name, ``None`` for any other name."""
    return model[len(LOCAL_DIR):] if model.startswith(LOCAL_DIR) else None


#: The settings' Structs live with the circuit document, which records them (``core.circuit``).
ClipSpec = ClipSettings
CaptionerSpec = CaptionerSettings


class LabelerConfig(LabelingSettings, frozen=True):
    """Everything :func:`labeler.labeling.label_circuit` needs besides the circuit and the images: the
    settings of :class:`~neurflow.core.circuit.LabelingSettings`, validated and with paths resolved."""

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | LabelingSettings,
                  base_dir: str | Path | Sequence[str | Path] | None = None) -> LabelerConfig:
        """Validate a ``labeling`` dict; raise ``ValueError`` naming the bad key and what is accepted."""
        if isinstance(spec, LabelerConfig):
            config = spec
        elif isinstance(spec, LabelingSettings):  # e.g. the settings recorded in a labeled circuit
            config = msgspec.convert(msgspec.to_builtins(spec), cls)
        else:
            if not isinstance(spec, dict):
                raise ValueError(f"labeling section must be a JSON object, got {type(spec).__name__}")
            if "clip" not in spec:
                raise ValueError(
                    'labeling section needs a "clip" object: {"model": NAME, "pretrained": TAG_OR_PATH, '
                    '"model_config": PATH_OR_NULL}'
                )
            spec = _clip_list(spec)
            try:
                config = msgspec.convert(spec, cls)
            except msgspec.ValidationError as exc:
                raise ValueError(f"invalid labeling section: {exc}") from None
        config._check()
        return config.resolved(base_dir) if base_dir is not None else config

    @property
    def clips(self) -> list[ClipSettings]:
        """Every CLIP that votes, the first one (``clip``) first."""
        return [self.clip, *self.extra_clips]

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

    def resolved(self, base_dir: str | Path | Sequence[str | Path]) -> LabelerConfig:
        """A copy whose relative file paths are made absolute against ``base_dir`` (the first of several
        folders that holds the name)."""
        bases = [Path(base_dir)] if isinstance(base_dir, (str, Path)) else [Path(b) for b in base_dir]

        def fix(value: str | None) -> str | None:
            if value is None:
                return None
            path = Path(value).expanduser()
            candidates = [path] if path.is_absolute() else [base / path for base in bases]
            # A pretrained tag ("openai") or a model name is not a path: only rewrite what exists there.
            return next((str(c) for c in candidates if c.exists()), value)

        def fix_clip(clip: ClipSettings) -> ClipSettings:
            model = clip.model
            folder = local_dir(model)
            if folder is not None:
                model = LOCAL_DIR + (fix(folder) or "")
            return msgspec.structs.replace(clip, model=model, pretrained=fix(clip.pretrained), model_config=fix(clip.model_config))

        clip, extra_clips = fix_clip(self.clip), [fix_clip(c) for c in self.extra_clips]
        vocabulary = self.vocabulary
        if isinstance(vocabulary, str) and not vocabulary.startswith("builtin:"):
            vocabulary = fix(vocabulary) or vocabulary
        templates = self.templates
        if isinstance(templates, str) and not templates.startswith("builtin:"):
            templates = fix(templates) or templates
        captioner = self.captioner
        if captioner is not None and captioner.backend == "transformers":
            captioner = msgspec.structs.replace(captioner, model=fix(captioner.model) or captioner.model)
        return msgspec.structs.replace(self, clip=clip, extra_clips=extra_clips, vocabulary=vocabulary, templates=templates,
                                       captioner=captioner)

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


def _clip_list(spec: dict[str, Any]) -> dict[str, Any]:
    """``"clip": [A, B, ...]`` (several CLIPs, each a vote) as ``clip: A, extra_clips: [B, ...]``."""
    clips = spec["clip"]
    if not isinstance(clips, list):
        return spec
    if not clips:
        raise ValueError('labeling.clip is an empty list; give one CLIP object or a list of them: '
                         '[{"model": NAME, "pretrained": TAG_OR_PATH}, ...]')
    if spec.get("extra_clips"):
        raise ValueError("labeling.clip is a list and labeling.extra_clips is set too; give every CLIP in one of them")
    return {**spec, "clip": clips[0], "extra_clips": clips[1:]}
