"""An open_clip pretrained tag that is not cached fails at once on a machine without network (this
one), with a message naming the file to download and where to put it."""

from __future__ import annotations

import time

import pytest

from neurflow.labeler.clip_model import load_clip


def test_uncached_open_clip_tag_fails_fast_with_what_to_download():
    import open_clip  # noqa: F401 - imported first: the timing below is the load's alone

    start = time.perf_counter()
    with pytest.raises(ValueError) as err:
        load_clip({"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"})
    assert time.perf_counter() - start < 10  # open_clip alone spends about a minute in hub retries
    message = str(err.value)
    assert "download https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/" \
           "open_clip_model.safetensors" in message
    assert "--clip-pretrained FILE with --clip-model ViT-B-32" in message and "Hugging Face cache" in message
