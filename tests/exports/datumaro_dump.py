"""Run inside the datumaro venv: ``python datumaro_dump.py FOLDER FORMAT`` imports the folder with the
real ``datumaro`` package and prints what it found as JSON (items, their media and annotations with
label names resolved), so the tests in the project venv can compare it with the circuit."""

import json
import sys

from datumaro.components.annotation import AnnotationType
from datumaro.components.dataset import Dataset


def main(folder: str, fmt: str) -> None:
    dataset = Dataset.import_from(folder, fmt)
    names = [c.name for c in dataset.categories()[AnnotationType.label]]
    items = []
    for item in dataset:
        anns = []
        for ann in item.annotations:
            entry = {"type": ann.type.name, "label": names[ann.label],
                     "attributes": {k: v for k, v in ann.attributes.items() if k != "occluded"}}
            if ann.type == AnnotationType.bbox:
                entry["bbox"] = [ann.x, ann.y, ann.w, ann.h]
            anns.append(entry)
        media = item.media
        items.append({"id": item.id, "subset": item.subset, "path": media.path if media else None,
                      "size": list(media.size) if media is not None and media.has_size else None,
                      "has_data": bool(media is not None and media.has_data and media.data is not None),
                      "annotations": anns})
    print(json.dumps({"labels": names, "items": items}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
