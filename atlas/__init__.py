"""The concept atlas: a model-level view of the circuits of many classes of one model.

``document`` defines the ``neurflow.atlas/1`` document, ``concepts`` clusters groups of one layer by
their member neurons, ``build`` makes the atlas from circuits, ``search`` answers "which classes use a
concept like X", ``files`` reads circuits from disk and writes atlas.json + atlas.html.
The atlas consumes circuits: it imports the engine's document and the labeler (optional CLIP search) only.
"""

from neurflow.atlas.build import AtlasInput, build_atlas
from neurflow.atlas.document import SCHEMA_VERSION, Atlas, AtlasSettings
from neurflow.atlas.search import SearchResult, search

__all__ = ["SCHEMA_VERSION", "Atlas", "AtlasInput", "AtlasSettings", "SearchResult", "build_atlas", "search"]
