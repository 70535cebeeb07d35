"""Concept vocabularies and prompt-template ensembles.

A vocabulary is a list of concept names, given inline, as a UTF-8 text file (one concept a line,
blank lines and ``#`` comments ignored), or as ``builtin:NAME`` for the lists that ship in
``labeler/vocabularies/`` and the class lists of ``core/classes/`` (``builtin:imagenet1k``). Templates work the same way; each template has exactly one ``{}``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from neurflow.core.class_names import CLASS_LIST_DIR

VOCABULARY_DIR = Path(__file__).parent / "vocabularies"
#: Built-in vocabularies: the labeler's own, and the class lists that core ships (builtin:imagenet1k).
_BUILTIN_DIRS = (VOCABULARY_DIR, CLASS_LIST_DIR)

#: Templates for patches of general concepts. Several phrasings average out the wording bias of any
#: single prompt (the "prompt ensemble" of CLIP); they all speak of a crop, since we label patches.
BUILTIN_TEMPLATES: dict[str, list[str]] = {
    "default": [
        "a photo of {}.",
        "a close-up photo of {}.",
        "a cropped photo of {}.",
        "an image patch showing {}.",
        "a picture of {}.",
        "{}",
    ],
    # The seven "simple" ImageNet templates of open_clip's zero-shot evaluation.
    "imagenet": [
        "itap of a {}.",
        "a bad photo of the {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    ],
    "plain": ["{}"],
}


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of unique concept names with a stable identity for caching."""

    name: str  # where it came from: "builtin:general", a file path, or "inline"
    concepts: tuple[str, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.concepts).encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.concepts)


#: A built-in name is a plain file stem: never a path, so ``builtin:../x`` cannot leave the built-in folders.
_BUILTIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def builtin_vocabularies() -> list[str]:
    return sorted({p.stem for d in _BUILTIN_DIRS for p in d.glob("*.txt")})


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{what} file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {what} file {path}: {exc}; a UTF-8 text file with one entry a line is accepted") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _normalise(entries: list[str], source: str) -> tuple[str, ...]:
    if not entries:
        raise ValueError(f"vocabulary {source} is empty; give at least two concepts, one a line")
    cleaned, seen, duplicates = [], set(), []
    for raw in entries:
        if not isinstance(raw, str):
            raise ValueError(f"vocabulary {source} has a non-text entry {raw!r}")
        concept = " ".join(raw.split())
        if not concept:
            raise ValueError(f"vocabulary {source} has a blank entry")
        key = concept.lower()
        if key in seen:
            duplicates.append(concept)
            continue
        seen.add(key)
        cleaned.append(concept)
    if duplicates:
        shown = ", ".join(repr(d) for d in duplicates[:10])
        more = f" (+{len(duplicates) - 10} more)" if len(duplicates) > 10 else ""
        raise ValueError(
            f"vocabulary {source} has {len(duplicates)} duplicate concept(s) (case-insensitive): {shown}{more}; "
            "each concept must appear once"
        )
    if len(cleaned) < 2:
        raise ValueError(f"vocabulary {source} has {len(cleaned)} concept; at least two are needed to rank labels")
    return tuple(cleaned)


def load_vocabulary(spec: list[str] | tuple[str, ...] | str | Path | Vocabulary) -> Vocabulary:
    """Resolve an inline list, a text file or ``builtin:NAME`` into a validated :class:`Vocabulary`."""
    if isinstance(spec, Vocabulary):
        return spec
    if isinstance(spec, (list, tuple)):
        return Vocabulary("inline", _normalise(list(spec), "(inline list)"))
    text = str(spec)
    if text.startswith("builtin:"):
        name = text.split(":", 1)[1]
        if not _BUILTIN_NAME.fullmatch(name):
            raise ValueError(f"built-in vocabulary names are letters, digits, '-' and '_' (got {text!r}); "
                             f"built-ins are {['builtin:' + n for n in builtin_vocabularies()]}")
        path = next((d / f"{name}.txt" for d in _BUILTIN_DIRS if (d / f"{name}.txt").is_file()), VOCABULARY_DIR / "-")
        if not path.is_file():
            raise ValueError(f"unknown built-in vocabulary {text!r}; built-ins are {['builtin:' + n for n in builtin_vocabularies()]}")
        return Vocabulary(text, _normalise(_read_lines(path, "vocabulary"), text))
    path = Path(text).expanduser()
    return Vocabulary(str(path), _normalise(_read_lines(path, "vocabulary"), str(path)))


def load_templates(spec: list[str] | tuple[str, ...] | str | Path) -> tuple[str, ...]:
    """Resolve an inline list, a text file or ``builtin:NAME`` into prompt templates."""
    if isinstance(spec, (list, tuple)):
        templates, source = list(spec), "(inline list)"
    elif str(spec).startswith("builtin:"):
        name = str(spec).split(":", 1)[1]
        if name not in BUILTIN_TEMPLATES:
            raise ValueError(f"unknown built-in templates {spec!r}; built-ins are {['builtin:' + n for n in BUILTIN_TEMPLATES]}")
        templates, source = BUILTIN_TEMPLATES[name], str(spec)
    else:
        templates, source = _read_lines(Path(spec).expanduser(), "templates"), str(spec)
    if not templates:
        raise ValueError(f"templates {source} are empty; give at least one template such as 'a photo of {{}}.'")
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"template {template!r} in {source} must contain exactly one '{{}}' for the concept")
    return tuple(dict.fromkeys(templates))
