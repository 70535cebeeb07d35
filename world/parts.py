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


#: The vocabulary. Ids are mask values; names are CLIP-ready labels. The last part is the
#: distractor: it belongs to no class and is drawn into some images of every class.
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


def part_by_name(name: str) -> Part:
    for part in PARTS:
        if part.name == name:
            return part
    raise KeyError(f"no part {name!r}; parts are {[p.name for p in PARTS]}")


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
    inside = _SHAPES[part.name](px / radius, py / radius)

    colour = np.empty(inside.shape + (3,), dtype=np.float64)
    if part.name in _TEXTURES:
        period = part.period * placement.texture_scale
        dark = _TEXTURES[part.name](px + placement.phase[0], py + placement.phase[1], period)
        colour[:] = _LIGHT
        colour[dark] = np.asarray(placement.color, dtype=np.float64)
    else:
        colour[:] = np.asarray(placement.color, dtype=np.float64)

    h, w = y1 - y0, x1 - x0
    weight = inside.astype(np.float64)
    alpha = weight.reshape(h, ss, w, ss).mean(axis=(1, 3))
    premultiplied = (colour * weight[..., None]).reshape(h, ss, w, ss, 3).mean(axis=(1, 3))
    region = image[y0:y1, x0:x1]
    region *= 1.0 - alpha[..., None]
    region += premultiplied
    mask[y0:y1, x0:x1][alpha >= 0.5] = part.id
