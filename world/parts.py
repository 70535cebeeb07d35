"""The part vocabulary of the synthetic world and how one part is drawn.

A part is a shape, a colour or a texture that a network can learn as a unit and that CLIP can name
("red circle", "striped patch"). Each part is defined in *local coordinates* ``(u, v)`` in
``[-1, 1]``: the part fits inside the unit disc, so it can be rotated without leaving its placement
disc and two placements whose discs do not overlap never overlap as drawn.

Drawing is anti-aliased by supersampling: each pixel of the part's bounding square is evaluated at
``SUPERSAMPLE**2`` sub-pixel points. The coverage (fraction of sub-points inside the part) is the
alpha used to composite the part onto the image; the part-id mask takes the part where coverage is
at least one half, so the mask is exactly the set of pixels that look like the part.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SUPERSAMPLE = 4

# Grey levels of the black-and-white textures.
_DARK = np.array([25.0, 25.0, 25.0])
_LIGHT = np.array([235.0, 235.0, 235.0])


@dataclass(frozen=True)
class Part:
    """One entry of the vocabulary.

    ``id`` is the value written in the mask (0 is background). ``period`` is the pattern period of a
    texture in source pixels (so textures keep their look at every part size); 0 for plain shapes.
    """

    id: int
    name: str
    kind: str  # "shape" or "texture"
    color: tuple[int, int, int]  # base colour; for textures the foreground colour
    max_rotation: float  # degrees; symmetric shapes get 0 to keep them canonical
    period: float = 0.0

    @property
    def slug(self) -> str:
        """The name without spaces, for class and folder names ("red circle" -> "redcircle")."""
        return self.name.replace(" ", "")


def _polygon_inside(u: np.ndarray, v: np.ndarray, vertices: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over points."""
    inside = np.zeros(u.shape, dtype=bool)
    n = len(vertices)
    for i in range(n):
        xa, ya = vertices[i]
        xb, yb = vertices[(i + 1) % n]
        crosses = (ya > v) != (yb > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = xa + (v - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (u < x_cross)
    return inside


def _regular(n: int, radius: float, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


_TRIANGLE = _regular(3, 1.0)
_STAR = [p for k in range(5) for p in (_regular(5, 1.0)[k], _regular(5, 0.42, -math.pi / 2 + math.pi / 5)[k])]
_TEXTURE_HALF_SIDE = 0.72  # a square of half-side 0.72 has its corners just inside the unit disc


def _circle(u, v):
    return u * u + v * v <= 1.0


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.7


def _triangle(u, v):
    # The triangle's centroid sits at the origin, so it is shifted down a little to fill the disc.
    return _polygon_inside(u, v - 0.15, _TRIANGLE)


def _star(u, v):
    return _polygon_inside(u, v, _STAR)


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.55**2)


def _diamond(u, v):
    return np.abs(u) + np.abs(v) <= 1.0


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.28) & (av <= 0.95)) | ((av <= 0.28) & (au <= 0.95))


def _heart(u, v):
    # The classic implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, y up, scaled into the unit disc.
    x, y = u * 1.25, -v * 1.25 + 0.15
    return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0


def _crescent(u, v):
    return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + (v + 0.2) ** 2 > 0.78**2)


def _ellipse(u, v):
    return (u / 0.95) ** 2 + (v / 0.5) ** 2 <= 1.0


def _patch(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= _TEXTURE_HALF_SIDE


# Textures: functions of local coordinates in *pixels* (px, py) -> True where dark.
def _stripes(px, py, period):
    return np.mod((px + py) / math.sqrt(2.0), period) < period / 2


def _checks(px, py, period):
    return (np.floor(px / (period / 2)) + np.floor(py / (period / 2))).astype(np.int64) % 2 == 0


def _dots(px, py, period):
    fx = np.mod(px, period) - period / 2
    fy = np.mod(py, period) - period / 2
    return fx * fx + fy * fy <= (0.3 * period) ** 2


#: The standard vocabulary. Ids are mask values; names are CLIP-ready labels. The last part is the
#: distractor: it belongs to no class and is drawn into some images of every class. Other part
#: sets (:data:`PART_SETS`) follow the same rules; names are unique across sets, ids only within one.
PARTS: tuple[Part, ...] = (
    Part(1, "red circle", "shape", (220, 30, 30), 0.0),
    Part(2, "blue square", "shape", (30, 70, 225), 15.0),
    Part(3, "green triangle", "shape", (30, 175, 50), 15.0),
    Part(4, "yellow star", "shape", (245, 220, 30), 20.0),
    Part(5, "orange ring", "shape", (250, 140, 20), 0.0),
    Part(6, "purple diamond", "shape", (135, 40, 180), 10.0),
    Part(7, "cyan cross", "shape", (30, 205, 225), 15.0),
    Part(8, "pink heart", "shape", (250, 120, 185), 15.0),
    Part(9, "striped patch", "texture", (25, 25, 25), 15.0, period=5.0),
    Part(10, "checkered patch", "texture", (25, 25, 25), 15.0, period=7.0),
    Part(11, "dotted patch", "texture", (25, 25, 25), 15.0, period=5.5),
    Part(12, "white crescent", "shape", (240, 240, 240), 25.0),
    Part(13, "brown ellipse", "shape", (125, 80, 35), 90.0),
)

DISTRACTOR = "brown ellipse"

_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "red circle": _circle,
    "blue square": _square,
    "green triangle": _triangle,
    "yellow star": _star,
    "orange ring": _ring,
    "purple diamond": _diamond,
    "cyan cross": _cross,
    "pink heart": _heart,
    "striped patch": _patch,
    "checkered patch": _patch,
    "dotted patch": _patch,
    "white crescent": _crescent,
    "brown ellipse": _ellipse,
}
_TEXTURES = {"striped patch": _stripes, "checkered patch": _checks, "dotted patch": _dots}


# -- the second part set ("shapes2"): other outlines, other colours, coloured textures ------------
_HEXAGON = _regular(6, 1.0, 0.0)
_PENTAGON = _regular(5, 1.0)
_ARROW = [(-0.9, -0.25), (0.1, -0.25), (0.1, -0.65), (0.9, 0.0), (0.1, 0.65), (0.1, 0.25), (-0.9, 0.25)]
_TRAPEZOID = [(-0.85, 0.45), (0.85, 0.45), (0.45, -0.55), (-0.45, -0.55)]
_BOWTIE = [(-0.75, -0.6), (0.0, -0.12), (0.75, -0.6), (0.75, 0.6), (0.0, 0.12), (-0.75, 0.6)]
_CHEVRON = [(-0.8, -0.5), (0.0, 0.2), (0.8, -0.5), (0.8, 0.05), (0.0, 0.75), (-0.8, 0.05)]
_DROP_TIP = [(-0.56, 0.08), (0.56, 0.08), (0.0, -0.95)]


def _disc(u, v, cx, cy, r):
    return (u - cx) ** 2 + (v - cy) ** 2 <= r * r


def _semicircle(u, v):
    return (u * u + v * v <= 1.0) & (v >= -0.1)


def _teardrop(u, v):
    return _disc(u, v, 0.0, 0.3, 0.6) | _polygon_inside(u, v, _DROP_TIP)


def _trefoil(u, v):
    centres = [(0.5 * math.cos(a), 0.5 * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    return np.logical_or.reduce([_disc(u, v, cx, cy, 0.45) for cx, cy in centres])


def _bar(u, v):
    return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.2)


def _zigzag(px, py, period):
    offset = period * 0.6 * np.abs(np.mod(px / period, 2.0) - 1.0)
    return np.mod(py + offset, period) < period / 2


def _grid(px, py, period):
    return (np.mod(px, period) < period * 0.3) | (np.mod(py, period) < period * 0.3)


def _waves(px, py, period):
    return np.mod(py + 0.35 * period * np.sin(2 * math.pi * px / (1.5 * period)), period) < period / 2


PARTS_SHAPES2: tuple[Part, ...] = (
    Part(1, "magenta hexagon", "shape", (225, 40, 200), 30.0),
    Part(2, "lime arrow", "shape", (160, 230, 40), 20.0),
    Part(3, "navy pentagon", "shape", (25, 35, 130), 15.0),
    Part(4, "teal semicircle", "shape", (0, 140, 140), 20.0),
    Part(5, "maroon trapezoid", "shape", (130, 20, 45), 15.0),
    Part(6, "gold bowtie", "shape", (215, 170, 40), 15.0),
    Part(7, "olive chevron", "shape", (120, 125, 30), 15.0),
    Part(8, "salmon teardrop", "shape", (245, 140, 115), 20.0),
    Part(9, "zigzag patch", "texture", (150, 20, 20), 15.0, period=5.5),
    Part(10, "grid patch", "texture", (20, 40, 140), 15.0, period=6.0),
    Part(11, "wavy patch", "texture", (20, 110, 40), 15.0, period=5.0),
    Part(12, "ivory trefoil", "shape", (245, 240, 215), 30.0),
    Part(13, "black bar", "shape", (30, 30, 30), 90.0),
)
_SHAPES.update({
    "magenta hexagon": lambda u, v: _polygon_inside(u, v, _HEXAGON),
    "lime arrow": lambda u, v: _polygon_inside(u, v, _ARROW),
    "navy pentagon": lambda u, v: _polygon_inside(u, v, _PENTAGON),
    "teal semicircle": _semicircle,
    "maroon trapezoid": lambda u, v: _polygon_inside(u, v, _TRAPEZOID),
    "gold bowtie": lambda u, v: _polygon_inside(u, v, _BOWTIE),
    "olive chevron": lambda u, v: _polygon_inside(u, v, _CHEVRON),
    "salmon teardrop": _teardrop,
    "zigzag patch": _patch,
    "grid patch": _patch,
    "wavy patch": _patch,
    "ivory trefoil": _trefoil,
    "black bar": _bar,
})
_TEXTURES.update({"zigzag patch": _zigzag, "grid patch": _grid, "wavy patch": _waves})


# -- the third part set ("shapes3"): a held-out vocabulary, added after the labeling method was chosen
_OCTAGON = _regular(8, 1.0, math.pi / 8)
_KITE = [(0.0, -1.0), (0.62, -0.2), (0.0, 0.95), (-0.62, -0.2)]
_BOLT = [(-0.18, -0.85), (0.4, -0.85), (0.09, -0.14), (0.5, -0.14), (-0.32, 0.85), (-0.05, 0.09), (-0.45, 0.09)]
_CORNER = [(-0.6, -0.68), (-0.17, -0.68), (-0.17, 0.26), (0.64, 0.26), (0.64, 0.68), (-0.6, 0.68)]
_PARALLELOGRAM = [(-0.4, -0.5), (0.82, -0.5), (0.4, 0.5), (-0.82, 0.5)]
_HOURGLASS = [(-0.58, -0.76), (0.58, -0.76), (0.1, 0.0), (0.58, 0.76), (-0.58, 0.76), (-0.1, 0.0)]


def _arch(u, v):
    r = u * u + v * v
    return (r <= 0.8 ** 2) & (r >= 0.4 ** 2) & (v <= 0.2) | ((np.abs(np.abs(u) - 0.6) <= 0.2) & (v > 0.2) & (v <= 0.55))


def _pill(u, v):
    body = (np.abs(u) <= 0.55) & (np.abs(v) <= 0.35)
    return body | _disc(u, v, -0.55, 0.0, 0.35) | _disc(u, v, 0.55, 0.0, 0.35)


def _cluster(u, v):
    centres = [(0.0, 0.0), (0.55, 0.0), (-0.55, 0.0), (0.27, 0.48), (-0.27, -0.48), (0.27, -0.48), (-0.27, 0.48)]
    return np.logical_or.reduce([_disc(u, v, cx, cy, 0.22) for cx, cy in centres])


def _blob(u, v):
    return _disc(u, v, -0.25, 0.1, 0.55) | _disc(u, v, 0.3, -0.15, 0.5) | _disc(u, v, 0.15, 0.4, 0.4)


def _bricks(px, py, period):
    row = np.floor(py / (period / 2))
    shift = np.mod(row, 2) * period / 2
    return ~((np.mod(py, period / 2) < 0.15 * period) | (np.mod(px + shift, period) < 0.15 * period))


def _hatch(px, py, period):
    return (np.mod(px + py, period) < 0.28 * period) | (np.mod(px - py, period) < 0.28 * period)


def _bubbles(px, py, period):
    fx = np.mod(px, period) - period / 2
    fy = np.mod(py, period) - period / 2
    r2 = fx * fx + fy * fy
    return (r2 <= (0.42 * period) ** 2) & (r2 >= (0.22 * period) ** 2)


PARTS_SHAPES3: tuple[Part, ...] = (
    Part(1, "coral octagon", "shape", (250, 110, 80), 20.0),
    Part(2, "indigo kite", "shape", (75, 20, 140), 15.0),
    Part(3, "mint bolt", "shape", (110, 230, 170), 15.0),
    Part(4, "crimson corner", "shape", (200, 20, 60), 15.0),
    Part(5, "azure arch", "shape", (40, 150, 240), 10.0),
    Part(6, "lavender pill", "shape", (190, 160, 235), 30.0),
    Part(7, "amber parallelogram", "shape", (250, 185, 0), 15.0),
    Part(8, "jade cluster", "shape", (0, 165, 110), 30.0),
    Part(9, "brick patch", "texture", (170, 60, 40), 15.0, period=7.0),
    Part(10, "hatched patch", "texture", (90, 40, 120), 15.0, period=6.0),
    Part(11, "bubble patch", "texture", (0, 120, 150), 15.0, period=6.5),
    Part(12, "silver hourglass", "shape", (195, 200, 210), 15.0),
    Part(13, "grey blob", "shape", (120, 120, 120), 90.0),
)
_SHAPES.update({
    "coral octagon": lambda u, v: _polygon_inside(u, v, _OCTAGON),
    "indigo kite": lambda u, v: _polygon_inside(u, v, _KITE),
    "mint bolt": lambda u, v: _polygon_inside(u, v, _BOLT),
    "crimson corner": lambda u, v: _polygon_inside(u, v, _CORNER),
    "azure arch": _arch,
    "lavender pill": _pill,
    "amber parallelogram": lambda u, v: _polygon_inside(u, v, _PARALLELOGRAM),
    "jade cluster": _cluster,
    "brick patch": _patch,
    "hatched patch": _patch,
    "bubble patch": _patch,
    "silver hourglass": lambda u, v: _polygon_inside(u, v, _HOURGLASS),
    "grey blob": _blob,
})
_TEXTURES.update({"brick patch": _bricks, "hatched patch": _hatch, "bubble patch": _bubbles})


# -- object-like composite parts ("objects"): several coloured pieces drawn as one part -----------
# A painter lists (inside, colour) layers, later layers on top; the part is the union of the layers,
# so its mask covers the whole object while its look is made of pieces a network (and CLIP) can
# also find in other objects (a black wheel, a red cap, a white face).
Painter = Callable[[np.ndarray, np.ndarray], list[tuple[np.ndarray, tuple[int, int, int]]]]


def _box_in(u, v, u0, u1, v0, v1):
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _house(u, v):  # v grows downwards (image rows)
    return [(_box_in(u, v, -0.55, 0.55, -0.05, 0.7), (200, 60, 50)),
            (_polygon_inside(u, v, [(-0.75, -0.02), (0.75, -0.02), (0.0, -0.72)]), (90, 50, 30)),
            (_box_in(u, v, -0.15, 0.15, 0.35, 0.7), (60, 40, 20)),
            (_box_in(u, v, 0.22, 0.42, 0.1, 0.3), (250, 230, 120))]


def _tree(u, v):
    return [(_box_in(u, v, -0.18, 0.18, 0.2, 0.95), (110, 70, 30)), (_disc(u, v, 0.0, -0.25, 0.65), (40, 150, 50))]


def _car(u, v):
    return [(_polygon_inside(u, v, [(-0.45, -0.08), (0.45, -0.08), (0.3, -0.45), (-0.3, -0.45)]), (150, 200, 240)),
            (_box_in(u, v, -0.85, 0.85, -0.1, 0.35), (40, 90, 210)),
            (_disc(u, v, -0.5, 0.4, 0.2) | _disc(u, v, 0.5, 0.4, 0.2), (25, 25, 25))]


def _boat(u, v):
    return [(_polygon_inside(u, v, [(-0.9, 0.3), (0.9, 0.3), (0.55, 0.7), (-0.55, 0.7)]), (120, 70, 35)),
            (_box_in(u, v, -0.05, 0.05, -0.85, 0.3), (50, 40, 30)),
            (_polygon_inside(u, v, [(0.08, -0.8), (0.08, 0.2), (0.7, 0.2)]), (245, 245, 240))]


def _flower(u, v):
    petals = np.logical_or.reduce([_disc(u, v, 0.6 * math.cos(a), 0.6 * math.sin(a), 0.32)
                                   for a in np.linspace(0, 2 * math.pi, 5, endpoint=False) - math.pi / 2])
    return [(petals, (240, 110, 170)), (_disc(u, v, 0.0, 0.0, 0.3), (250, 210, 40))]


def _fish(u, v):
    return [(_polygon_inside(u, v, [(-0.35, 0.0), (-0.9, -0.4), (-0.9, 0.4)]), (60, 110, 200)),
            (((u - 0.15) / 0.6) ** 2 + (v / 0.4) ** 2 <= 1.0, (245, 140, 30)),
            (_disc(u, v, 0.45, -0.1, 0.08), (20, 20, 20))]


def _umbrella(u, v):
    hook = _disc(u, v, -0.2, 0.66, 0.3) & ~_disc(u, v, -0.2, 0.66, 0.07) & (v >= 0.66)
    return [((u * u + v * v <= 0.85**2) & (v <= 0.0), (130, 50, 180)), (_box_in(u, v, -0.13, 0.13, 0.0, 0.7) | hook, (20, 20, 20))]


def _rocket(u, v):
    fins = (_polygon_inside(u, v, [(-0.25, 0.2), (-0.25, 0.6), (-0.55, 0.75)])
            | _polygon_inside(u, v, [(0.25, 0.2), (0.25, 0.6), (0.55, 0.75)]))
    return [(_box_in(u, v, -0.25, 0.25, -0.45, 0.6), (190, 190, 200)),
            (_polygon_inside(u, v, [(-0.25, -0.45), (0.25, -0.45), (0.0, -0.95)]) | fins, (210, 40, 40)),
            (_disc(u, v, 0.0, -0.1, 0.11), (60, 200, 230))]


def _mushroom(u, v):
    dots = _disc(u, v, -0.4, -0.25, 0.1) | _disc(u, v, 0.1, -0.45, 0.1) | _disc(u, v, 0.45, -0.2, 0.1)
    return [(_box_in(u, v, -0.22, 0.22, -0.05, 0.8), (235, 225, 200)),
            (((u / 0.85) ** 2 + ((v + 0.05) / 0.7) ** 2 <= 1.0) & (v <= 0.0), (210, 40, 40)),
            (dots & (v <= 0.0), (250, 250, 250))]


def _sun(u, v):
    r = np.sqrt(u * u + v * v)
    angle = np.mod(np.arctan2(v, u), math.pi / 4)
    rays = (r >= 0.55) & (r <= 0.95) & (np.minimum(angle, math.pi / 4 - angle) * r <= 0.09)
    return [(rays, (245, 150, 30)), (r <= 0.45, (250, 215, 40))]


def _key(u, v):
    ring = _disc(u, v, -0.5, 0.0, 0.42) & ~_disc(u, v, -0.5, 0.0, 0.2)
    shaft = _box_in(u, v, -0.1, 0.9, -0.09, 0.09)
    teeth = _box_in(u, v, 0.5, 0.62, 0.0, 0.3) | _box_in(u, v, 0.72, 0.84, 0.0, 0.3)
    return [(shaft | teeth, (220, 180, 40)), (ring, (140, 85, 30))]


def _clock(u, v):
    hands = _box_in(u, v, -0.05, 0.05, -0.55, 0.0) | _box_in(u, v, 0.0, 0.45, -0.05, 0.05)
    return [(_disc(u, v, 0.0, 0.0, 0.95), (40, 40, 40)), (_disc(u, v, 0.0, 0.0, 0.8), (245, 245, 245)), (hands, (20, 20, 20))]


def _cloud(u, v):
    puffs = _disc(u, v, -0.4, 0.1, 0.4) | _disc(u, v, 0.1, -0.1, 0.5) | _disc(u, v, 0.5, 0.15, 0.38)
    return [(puffs, (235, 240, 245)), (puffs & (v >= 0.25), (150, 160, 180))]


_PAINTERS: dict[str, Painter] = {
    "house": _house, "tree": _tree, "car": _car, "boat": _boat, "flower": _flower, "fish": _fish, "umbrella": _umbrella,
    "rocket": _rocket, "mushroom": _mushroom, "sun": _sun, "key": _key, "clock": _clock, "cloud": _cloud,
}
PARTS_OBJECTS: tuple[Part, ...] = tuple(
    Part(i + 1, name, "object", colour, rot)
    for i, (name, colour, rot) in enumerate((
        ("house", (200, 60, 50), 10.0), ("tree", (40, 150, 50), 10.0), ("car", (40, 90, 210), 10.0), ("boat", (120, 70, 35), 10.0),
        ("flower", (240, 110, 170), 30.0), ("fish", (245, 140, 30), 15.0), ("umbrella", (130, 50, 180), 15.0),
        ("rocket", (190, 190, 200), 15.0), ("mushroom", (210, 40, 40), 10.0), ("sun", (250, 215, 40), 20.0),
        ("key", (220, 180, 40), 30.0), ("clock", (245, 245, 245), 20.0), ("cloud", (235, 240, 245), 10.0),
    ))
)

#: Every part set by name, distractor last in each.
PART_SETS: dict[str, tuple[Part, ...]] = {"standard": PARTS, "shapes2": PARTS_SHAPES2, "objects": PARTS_OBJECTS,
                                          "shapes3": PARTS_SHAPES3}
_ALL_PARTS: dict[str, Part] = {}
for _set in PART_SETS.values():
    for _part in _set:
        assert _ALL_PARTS.setdefault(_part.name, _part) is _part, f"part name {_part.name!r} is used by two part sets"


def part_by_name(name: str) -> Part:
    """The part of that name, in any part set."""
    part = _ALL_PARTS.get(name)
    if part is None:
        raise KeyError(f"no part {name!r}; parts are {list(_ALL_PARTS)}")
    return part


@dataclass(frozen=True)
class Placement:
    """Where and how one part is drawn, in source-image pixels."""

    part: str
    cx: float
    cy: float
    size: float  # diameter of the placement disc
    angle: float  # degrees
    color: tuple[int, int, int]  # jittered colour actually used
    phase: tuple[float, float] = (0.0, 0.0)  # texture offset in pixels
    texture_scale: float = 1.0  # texture period multiplier, so small worlds look like big ones

    @property
    def box(self) -> list[int]:
        """The half-open pixel box [x0, y0, x1, y1] that contains the placement disc."""
        r = self.size / 2
        return [math.floor(self.cx - r), math.floor(self.cy - r), math.ceil(self.cx + r), math.ceil(self.cy + r)]


def draw_part(image: np.ndarray, mask: np.ndarray, placement: Placement) -> None:
    """Composite one part onto ``image`` (H, W, 3 float) and write its id into ``mask`` (H, W)."""
    part = part_by_name(placement.part)
    height, width = mask.shape
    x0, y0, x1, y1 = placement.box
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x0 >= x1 or y0 >= y1:
        return
    ss = SUPERSAMPLE
    # Sub-pixel sample points of every pixel in the box: pixel (x, y) covers [x, x+1) x [y, y+1).
    offsets = (np.arange(ss) + 0.5) / ss
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).reshape(-1)
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).reshape(-1)
    gx, gy = np.meshgrid(xs, ys)  # (H*ss, W*ss), pixel units
    dx, dy = gx - placement.cx, gy - placement.cy
    theta = math.radians(placement.angle)
    c, s = math.cos(theta), math.sin(theta)
    px, py = c * dx + s * dy, -s * dx + c * dy  # rotated, still in pixels
    radius = placement.size / 2
    if part.name in _PAINTERS:
        inside, colour = _paint(_PAINTERS[part.name](px / radius, py / radius), part, placement)
    elif part.name in _TEXTURES:
        inside = _SHAPES[part.name](px / radius, py / radius)
        colour = np.empty(inside.shape + (3,), dtype=np.float64)
        period = part.period * placement.texture_scale
        dark = _TEXTURES[part.name](px + placement.phase[0], py + placement.phase[1], period)
        colour[:] = _LIGHT
        colour[dark] = np.asarray(placement.color, dtype=np.float64)
    else:
        inside = _SHAPES[part.name](px / radius, py / radius)
        colour = np.empty(inside.shape + (3,), dtype=np.float64)
        colour[:] = np.asarray(placement.color, dtype=np.float64)

    h, w = y1 - y0, x1 - x0
    weight = inside.astype(np.float64)
    alpha = weight.reshape(h, ss, w, ss).mean(axis=(1, 3))
    premultiplied = (colour * weight[..., None]).reshape(h, ss, w, ss, 3).mean(axis=(1, 3))
    region = image[y0:y1, x0:x1]
    region *= 1.0 - alpha[..., None]
    region += premultiplied
    mask[y0:y1, x0:x1][alpha >= 0.5] = part.id


def _paint(layers, part: Part, placement: Placement) -> tuple[np.ndarray, np.ndarray]:
    """Union and colours of a composite part's layers; the placement's colour jitter shifts every piece alike."""
    shift = np.asarray(placement.color, dtype=np.float64) - np.asarray(part.color, dtype=np.float64)
    inside = np.zeros(layers[0][0].shape, dtype=bool)
    colour = np.zeros(inside.shape + (3,), dtype=np.float64)
    for layer, rgb in layers:
        colour[layer] = np.clip(np.asarray(rgb, dtype=np.float64) + shift, 0, 255)
        inside |= layer
    return inside, colour
