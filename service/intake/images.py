"""Uploaded images: PNG or JPEG that decode fully, with a pixel cap against decompression bombs and a
pixel budget for a whole dataset."""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from neurflow.service.errors import Invalid, TooLarge

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class PixelBudget:
    """The pixels a whole dataset may decode: images that are cheap to send and expensive to decode
    (a tiny PNG of a 6000x6000 plain colour) add up, even under the per-image cap."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.total = total

    def take(self, pixels: int, name: str) -> None:
        self.left -= pixels
        if self.left < 0:
            raise TooLarge(f"the images up to {name} hold more than {self.total} pixels together; at most "
                           f"{self.total} pixels are decoded per dataset (max_dataset_pixels)")


def decode_image(data: bytes | Path, max_pixels: int, name: str = "the image",
                 budget: PixelBudget | None = None) -> Image.Image:
    """Decode PNG/JPEG fully; ``Invalid`` for anything else, ``TooLarge`` past ``max_pixels`` (or past
    the dataset's ``budget``). Errors never name the file's server path."""
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                if im.format not in ("PNG", "JPEG"):
                    raise Invalid(f"{name} is {im.format or 'an unknown format'}; PNG and JPEG images are accepted")
                w, h = im.size
                if w * h > max_pixels:
                    raise TooLarge(f"{name} has {w}x{h} pixels; at most {max_pixels} pixels are accepted")
                if w < 1 or h < 1:
                    raise Invalid(f"{name} is empty")
                if budget is not None:
                    budget.take(w * h, name)
                im.load()
                return im.convert("RGB")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise TooLarge(f"{name} is too large to decode safely") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError,
            TypeError, KeyError, ZeroDivisionError, MemoryError) as exc:
        # Pillow's messages are about the bytes; the type is enough and names no path
        raise Invalid(f"{name} cannot be decoded as an image ({type(exc).__name__}); PNG and JPEG are accepted") from None
