""""Which classes use a concept like X": search the labels of every group of an atlas.

Text match (always): the query, case-folded, against each label text of each group. A label matches
when it equals the query (1.0), contains it as a phrase (0.75), or contains every word of it (0.5);
the score is that times ``1 / (1 + rank)`` of the label in its group (the top label counts fully).

Embedding match (optional): with an ``embed`` function (texts -> L2-normalised rows, e.g.
:func:`clip_embedder` on the CLIP that labeled the circuits), a label also matches when its cosine
with the query is at least ``min_similarity``; the score is that cosine times the same rank weight.
A label keeps the better of its two scores. Classes are ranked by their best match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Literal

import msgspec
import numpy as np
from msgspec import Meta

from neurflow.atlas.document import Atlas
from neurflow.core.circuit import ClipSettings

Embed = Callable[[Sequence[str]], np.ndarray]
MAX_QUERY = 200


class Match(msgspec.Struct, forbid_unknown_fields=True):
    layer: str
    group: str
    label: str
    rank: int  # 0: the group's top label
    concept: str | None  # the shared concept the group belongs to
    score: float
    how: Literal["text", "embedding"]


class ClassHit(msgspec.Struct, forbid_unknown_fields=True):
    class_index: int
    name: str | None
    circuit_id: str | None
    score: float  # its best match's
    matches: list[Match]  # best first


class ConceptHit(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    layer: str
    label: str | None
    classes: list[int]  # every class that uses the concept
    score: float  # the best match among its groups


class SearchResult(msgspec.Struct, forbid_unknown_fields=True):
    query: str
    mode: Literal["text", "text+embedding"]
    min_similarity: Annotated[float, Meta(ge=-1, le=1)] | None
    classes: list[ClassHit]
    concepts: list[ConceptHit]


def normalise_query(query: str) -> str:
    text = " ".join((query or "").split()).casefold()
    if not text:
        raise ValueError("the search query is empty; give a concept to look for, e.g. 'wheel'")
    if len(text) > MAX_QUERY:
        raise ValueError(f"the search query has {len(text)} characters; at most {MAX_QUERY} are accepted")
    return text


def text_score(query: str, label: str) -> float:
    label = " ".join(label.split()).casefold()
    if label == query:
        return 1.0
    if query in label:
        return 0.75
    if all(word in label for word in query.split()):
        return 0.5
    return 0.0


def search(atlas: Atlas, query: str, *, embed: Embed | None = None, min_similarity: float = 0.8,
           limit: int = 50) -> SearchResult:
    """The classes (and shared concepts) whose group labels match ``query``; ``ValueError`` on an empty query."""
    q = normalise_query(query)
    labels = sorted({text for entry in atlas.classes for g in entry.groups for text in g.labels})
    similarity: dict[str, float] = {}
    if embed is not None and labels:
        vectors = np.asarray(embed([q, *labels]), dtype=np.float64)
        # rounded and clipped: a label equal to the query has cosine 1, not 1 + 1e-7 (the text match keeps it)
        similarity = dict(zip(labels, np.clip(vectors[1:] @ vectors[0], -1.0, 1.0).round(6).tolist()))
    hits = []
    concept_best: dict[str, float] = {}
    for entry in atlas.classes:
        matches = []
        for g in entry.groups:
            for rank, text in enumerate(g.labels):
                weight = 1.0 / (1 + rank)
                by_text = text_score(q, text) * weight
                cos = similarity.get(text)
                by_embedding = cos * weight if cos is not None and cos >= min_similarity else 0.0
                score = max(by_text, by_embedding)
                if score <= 0:
                    continue
                matches.append(Match(layer=g.layer, group=g.id, label=text, rank=rank, concept=g.concept,
                                     score=round(score, 6), how="text" if by_text >= by_embedding else "embedding"))
                if g.concept:
                    concept_best[g.concept] = max(concept_best.get(g.concept, 0.0), score)
        if matches:
            matches.sort(key=lambda m: (-m.score, m.rank, m.layer, m.group))
            hits.append(ClassHit(class_index=entry.class_index, name=entry.name, circuit_id=entry.circuit_id,
                                 score=matches[0].score, matches=matches))
    hits.sort(key=lambda h: (-h.score, h.class_index))
    concepts = []
    for cid, score in concept_best.items():
        c = atlas.concept(cid)
        concepts.append(ConceptHit(id=cid, layer=c.layer, label=c.label, classes=c.classes, score=round(score, 6)))
    concepts.sort(key=lambda c: (-c.score, c.id))
    return SearchResult(query=q, mode="text+embedding" if embed is not None else "text",
                        min_similarity=min_similarity if embed is not None else None,
                        classes=hits[:limit], concepts=concepts[:limit])


def clip_embedder(clip: ClipSettings, templates: Sequence[str] = ("{}",)) -> Embed:
    """Label and query embeddings from the CLIP that labeled the circuits (the labeler's prompt
    ensemble, so a label's vector is the one it was scored with). Loads the model: seconds."""
    from neurflow.labeler.clip_model import load_clip

    model = load_clip(clip)
    ensemble = tuple(templates) or ("{}",)
    return lambda texts: model.embed_concepts(list(texts), ensemble)


def atlas_embedder(atlas: Atlas) -> Embed:
    """:func:`clip_embedder` for the CLIP recorded in the atlas; ``ValueError`` when there is none."""
    if atlas.source.clip is None:
        raise ValueError("semantic search needs the CLIP that labeled the circuits, and this atlas records none "
                         "(unlabeled circuits, or labeled by different CLIP models); text search works without it")
    return clip_embedder(atlas.source.clip, atlas.source.templates)
