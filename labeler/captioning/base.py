"""The captioner interface shared by every vision-language back end, and what they have in common.

A back end turns a :class:`CaptionRequest` (a system text, a user text and one or more numbered sets
of images) into the model's raw answer. Everything else (which prompt, which patches, parsing the
answer, making a short label of it) is back-end independent and lives outside the back ends.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image


class CaptionerError(ValueError):
    """A captioning request failed (bad answer, server error, model cannot run)."""


class CaptionerUnavailable(CaptionerError):
    """The captioning back end cannot be reached at all (further requests would fail the same way)."""


@dataclass
class CaptionRequest:
    system: str
    user: str
    image_sets: list[list[Image.Image]]  # set k is introduced as "Group k" when there are several
    prompt_id: str = ""
    prompt_version: str = ""
    set_titles: list[str] = field(default_factory=list)

    def titles(self) -> list[str]:
        if self.set_titles:
            return self.set_titles
        return [f"Group {k + 1}:" for k in range(len(self.image_sets))] if len(self.image_sets) > 1 else ["Images:"]


class Captioner(Protocol):
    #: What ``Caption.model`` records, e.g. "openai:gpt-4o@http://host/v1" or "transformers:/models/smolvlm".
    name: str

    def generate(self, request: CaptionRequest) -> str:
        """The model's raw answer; raises :class:`CaptionerError` (or its subclass ``CaptionerUnavailable``).

        A back end that can say how sure the model was also has ``generate_scored(request) -> (answer,
        probability)``; the caption's vote on the label is then weighed by it (``labeler.evidence``)."""

    def complete_text(self, system: str, user: str) -> str | None:
        """A text-only answer (used to summarise captions), or None when the back end cannot do it."""


def png_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def mosaic(image_sets: list[list[Image.Image]], tile: int = 112, gap: int = 6) -> Image.Image:
    """All images on one canvas, one row per set: for models (and servers) that take a single image."""
    cols = max(len(s) for s in image_sets)
    rows = len(image_sets)
    canvas = Image.new("RGB", (cols * tile + (cols - 1) * gap, rows * tile + (rows - 1) * gap), (255, 255, 255))
    for r, images in enumerate(image_sets):
        for c, im in enumerate(images):
            canvas.paste(im.convert("RGB").resize((tile, tile), Image.BICUBIC), (c * (tile + gap), r * (tile + gap)))
    return canvas


_CAPTION_LINE = re.compile(r"^\s*\**\s*caption\s*\**\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_FEATURES_LINE = re.compile(r"^\s*\**\s*(?:group 1 )?features\s*\**\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


def parse_caption(answer: str) -> str:
    """The caption of an answer in the prompts' format ("Caption: ..."), else the whole answer, tidied."""
    text = (answer or "").strip()
    matches = _CAPTION_LINE.findall(text)
    caption = matches[-1] if matches else text
    caption = " ".join(caption.split()).strip(' "*')
    if not caption:
        raise CaptionerError("the captioning model returned an empty answer")
    return caption[:600]


def parse_features(answer: str) -> list[str]:
    """The feature list of an answer ("Features: a, b, c" or "Group 1 features: ..."), possibly empty."""
    match = _FEATURES_LINE.search(answer or "")
    if not match:
        return []
    return [f.strip(" .*\"'") for f in re.split(r"[,;]", match.group(1)) if f.strip(" .*\"'")]
