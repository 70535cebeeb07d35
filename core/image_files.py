"""Decoding image files, without torch (the service's web process crops exemplars for exports with it)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError


def open_rgb(path: str | Path) -> Image.Image:
    """Decode an image as RGB or raise ``ValueError`` saying which file and why."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"cannot decode image {path}: {exc}; PNG and JPEG files are accepted") from None
