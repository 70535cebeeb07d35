"""A debug result (``core.debug.DebugResult``, or the result of a finished ``debug`` job) and the
image it was computed on, in the form the viewer shows: which groups fired, how strongly, where
(crop boxes on the input image) and how much ablating each group changes the target logit.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import msgspec


@dataclass
class DebugView:
    result: dict[str, Any]  # DebugResult as builtins: layer, target, predicted, logit, probability, threshold, groups
    image: bytes | None = None  # the input image (PNG/JPEG bytes), shown with the firing crops
    job_id: str | None = None

    @classmethod
    def of(cls, result: Any, image: bytes | None = None, job_id: str | None = None) -> DebugView:
        data = result if isinstance(result, dict) else msgspec.to_builtins(result)
        missing = {"layer", "groups"} - set(data)
        if missing:
            raise ValueError(f"not a debug result: missing {sorted(missing)}")
        return cls(result=data, image=image, job_id=job_id)

    def image_size(self) -> tuple[int, int] | None:
        if not self.image:
            return None
        from PIL import Image

        with Image.open(io.BytesIO(self.image)) as im:
            return im.size

    def to_data(self) -> dict[str, Any]:
        r = self.result
        size = self.image_size()
        mime = "image/jpeg" if self.image and self.image[:3] == b"\xff\xd8\xff" else "image/png"
        groups = [{"id": g["id"], "score": float(g.get("score", 0.0)), "fires": bool(g.get("fires")),
                   "label": g.get("label"), "ablated_logit": g.get("ablated_logit"),
                   "logit_change": g.get("logit_change"),
                   "crops": [{"box": list(c["box"]), "score": c.get("score")} for c in g.get("crops", [])]}
                  for g in r.get("groups", [])]
        return {
            "job_id": self.job_id, "layer": r.get("layer"), "target": r.get("target"),
            "predicted": r.get("predicted"), "logit": r.get("logit"), "probability": r.get("probability"),
            "threshold": r.get("threshold"), "groups": groups,
            "image": base64.b64encode(self.image).decode("ascii") if self.image else None,
            "image_mime": mime, "image_size": list(size) if size else None,
        }
