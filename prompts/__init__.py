"""Versioned prompt templates for captioning neuron groups.

Each prompt is a text file ``<id>.v<version>.txt`` in this folder: a header of ``key: value`` lines
(``id``, ``version``, ``description``, ``images``), then ``=== system`` and ``=== user`` sections.
Placeholders are ``$name`` (``string.Template``), so JSON-like braces in a prompt need no escaping.
A caption records the prompt's id and version, so a caption can always be traced to the exact text.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

PROMPT_DIR = Path(__file__).parent
_FILE = re.compile(r"^(?P<id>[a-z0-9_]+)\.v(?P<version>[0-9][0-9a-z.]*)\.txt$")


@dataclass(frozen=True)
class PromptTemplate:
    id: str
    version: str
    description: str
    system: str
    user: str

    def render(self, **values: object) -> tuple[str, str]:
        """(system, user) with ``$placeholders`` filled; a missing value is a ``ValueError``."""
        try:
            return (string.Template(self.system).substitute(values), string.Template(self.user).substitute(values))
        except KeyError as exc:
            raise ValueError(f"prompt {self.id} v{self.version} needs a value for ${exc.args[0]}") from None


def _parse(path: Path) -> PromptTemplate:
    text = path.read_text(encoding="utf-8")
    head, _, body = text.partition("\n=== ")
    meta = {}
    for line in head.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            meta[key.strip()] = value.strip()
    sections = {}
    for chunk in ("=== " + body).split("\n=== ") if body else []:
        name, _, content = chunk.removeprefix("=== ").partition("\n")
        sections[name.strip()] = content.strip()
    if "id" not in meta or "version" not in meta or "user" not in sections:
        raise ValueError(f"prompt file {path} needs 'id:' and 'version:' header lines and a '=== user' section")
    match = _FILE.match(path.name)
    if not match or match["id"] != meta["id"] or match["version"] != meta["version"]:
        raise ValueError(f"prompt file {path.name} must be named <id>.v<version>.txt after its header ({meta['id']}, {meta['version']})")
    return PromptTemplate(meta["id"], meta["version"], meta.get("description", ""), sections.get("system", ""), sections["user"])


def available() -> dict[str, list[str]]:
    """Prompt id -> versions present, oldest first."""
    out: dict[str, list[str]] = {}
    for path in sorted(PROMPT_DIR.glob("*.txt")):
        match = _FILE.match(path.name)
        if match:
            out.setdefault(match["id"], []).append(match["version"])
    for versions in out.values():
        versions.sort(key=lambda v: [int(p) if p.isdigit() else p for p in re.split(r"[.]", v)])
    return out


def load_prompt(prompt_id: str, version: str | None = None) -> PromptTemplate:
    """A prompt by id (``"group_caption"``) or ``"id@version"``; the newest version when none is given."""
    if "@" in prompt_id and version is None:
        prompt_id, version = prompt_id.split("@", 1)
    versions = available().get(prompt_id)
    if not versions:
        raise ValueError(f"unknown prompt {prompt_id!r}; prompts are {sorted(available())}")
    version = version or versions[-1]
    if version not in versions:
        raise ValueError(f"prompt {prompt_id!r} has no version {version!r}; versions are {versions}")
    return _parse(PROMPT_DIR / f"{prompt_id}.v{version}.txt")
