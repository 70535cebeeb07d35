"""The concept atlas: a model-level view of the circuits of many classes of one model.

``document`` defines the ``neurflow.atlas/1`` document, ``concepts`` clusters groups of one layer by
their member neurons, ``build`` makes the atlas from circuits, ``query`` answers "which classes use a
concept like X". The atlas consumes circuits: it imports the engine's document and, for the optional
CLIP search, the labeler. ``build`` and ``query`` (scipy, numpy) load on first use, so importing the
document stays light (the CLI's ``--help``).
"""

from __future__ import annotations

from typing import Any

from neurflow.atlas.document import SCHEMA_VERSION, Atlas, AtlasSettings

_LAZY = {"AtlasInput": "build", "build_atlas": "build", "SearchResult": "query", "search": "query"}

__all__ = ["SCHEMA_VERSION", "Atlas", "AtlasSettings", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"neurflow.atlas.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'neurflow.atlas' has no attribute {name!r}")
