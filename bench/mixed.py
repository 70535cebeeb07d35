"""Constructed mixed groups: two real groups of different parts merged into one.

The engine's groups on the suite worlds are nearly pure, so every method labels them right and a
confidence has nothing to be right or wrong about. Merging groups makes labels *able* to be wrong
without inventing patches: every exemplar and patch of a constructed group is a real top patch of an
engine group of the same world, embedded by that world's CLIP.

Only *pure* groups are merged (all five exemplars show the group's part, and most of its patches), so
the part each exemplar shows is known. Group ``A`` takes a partner ``B`` of another part (the choice is
a hash of ``A``'s id, so it is fixed) and gives four groups, each with ``A``'s part as the truth:

* ``split 3+2``: a mosaic of 3 exemplars of ``A`` and 2 of ``B``, other patches 1:1;
* ``split 3+2, B patches``: the same mosaic, other patches 1 of ``A`` for 2 of ``B``;
* ``split 4+1``: 4 exemplars of ``A`` and 1 of ``B``, other patches 1:1;
* ``drift``: all 5 exemplars of ``A``, other patches 1 of ``A`` for 2 of ``B`` (the mosaic is clean,
  the group's patches are not: the labeler's test of a merged group, made harder);
* ``split 3+2, sure B``: a mosaic of the 3 exemplars of ``A`` that the world's CLIP is least sure of
  (lowest zero-shot probability of ``A``'s part) and the 2 of ``B`` it is surest of, other patches
  1:1: the minority of the mosaic is the more confident, as in a group of a weak CLIP whose two
  clearest exemplars show a second part.

The truth is what the majority of the mosaic shows, as for real groups (docs/label-quality.md).
"""

from __future__ import annotations

import zlib

import numpy as np

#: kind -> (exemplars of A out of 5, A patches, B patches per round of the interleave)
KINDS = {"split 3+2": (3, 1, 1), "split 3+2, B patches": (3, 1, 2), "split 4+1": (4, 1, 1), "drift": (5, 1, 2),
         "split 3+2, sure B": (3, 1, 1)}
#: Kinds whose mosaic takes ``A``'s least sure and ``B``'s surest exemplars (else the first ones).
BY_CERTAINTY = {"split 3+2, sure B"}
MAX_PATCHES = 64  # as the labeler embeds per group


def interleave(a: np.ndarray, b: np.ndarray, ka: int, kb: int) -> np.ndarray:
    """``ka`` rows of ``a``, then ``kb`` of ``b``, until both run out (the rest of the longer one last)."""
    out, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        out.extend(a[i:i + ka])
        out.extend(b[j:j + kb])
        i, j = i + ka, j + kb
    return np.asarray(out).reshape(-1, a.shape[1])


def partner(group, candidates):
    """A fixed partner of another part for ``group``, or None."""
    others = [h for h in candidates if h.reference != group.reference]
    return others[zlib.crc32(group.gid.encode()) % len(others)] if others else None


def constructed_mixed(world, order_by=None) -> list:
    """The constructed mixed groups of a world (``bench.labels.GroupData``, ``mixed`` set).

    ``order_by``: the same world embedded by another CLIP, whose certainty orders the exemplars of the
    ``BY_CERTAINTY`` kinds, so that every CLIP of a set sees the same patches (default: ``world``)."""
    from bench.labels import GroupData

    from neurflow.labeler.scoring import concept_votes

    judge = order_by if order_by is not None else world
    judged = {g.gid: g for g in judge.groups}

    def by_certainty(group) -> np.ndarray:
        """The group's exemplars, the one ``judge``'s CLIP gives the highest probability of its part first."""
        seen = judged[group.gid].exemplars
        sure = concept_votes(seen, judge.concepts, judge.logit_scale)[:, judge.names.index(group.reference)]
        return np.argsort(-sure, kind="stable")

    def weights(group) -> np.ndarray:
        return group.weights if group.weights is not None else np.ones(len(group.patches))

    pure = [g for g in world.groups if g.reference is not None and not g.mixed and len(g.exemplars) == 5]
    out = []
    for a in pure:
        b = partner(a, pure)
        if b is None:
            continue
        for kind, (n_a, ka, kb) in KINDS.items():
            if kind in BY_CERTAINTY:
                ia, ib = by_certainty(a)[::-1][:n_a], by_certainty(b)[:5 - n_a]
            else:
                ia, ib = np.arange(n_a), np.arange(5 - n_a)
            exemplars = np.concatenate([a.exemplars[ia], b.exemplars[ib]])
            rest = interleave(a.patches[5:], b.patches[5:], ka, kb)
            patches = np.concatenate([exemplars, rest])[:MAX_PATCHES]
            shown_w = np.concatenate([weights(a)[:5][ia], weights(b)[:5][ib]])
            rest_w = interleave(weights(a)[5:, None], weights(b)[5:, None], ka, kb)[:, 0]
            out.append(GroupData(world.name, f"{a.gid}+{b.gid} {kind}", exemplars, patches,
                                 np.concatenate([a.held, b.held]), a.reference, True, a.ref_mixture, a.negatives,
                                 np.concatenate([shown_w, rest_w])[:MAX_PATCHES]))
    return out
