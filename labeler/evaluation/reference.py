"""Reference (ground-truth) labels of groups, for the agreement metrics of ``neurflow evaluate``.

A user gives them as a CSV with a header row and the columns ``label`` and either ``group`` (a group id of the
  circuit) or ``class`` (a class index or name: the reference of every group of circuits of that
  class). Several rows per key are allowed: any of the labels counts as correct. The synthetic
  world builds them from its part masks (``neurflow.world.references``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from neurflow.core.circuit import Circuit


@dataclass
class References:
    source: str
    labels: dict[str, list[str]]  # group id -> acceptable reference labels (may be empty: no reference)
    details: dict[str, dict] = field(default_factory=dict)  # per group: how the reference was found


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def matches(label: str, references: list[str]) -> bool:
    return _norm(label) in {_norm(r) for r in references}


def from_csv(circuit: Circuit, path: str | Path) -> References:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise ValueError(f"reference label file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read reference label CSV {path}: {exc}") from None
    if not rows:
        raise ValueError(f"reference label CSV {path} has no rows; expected a header 'group,label' or 'class,label' and rows")
    columns = set(rows[0])
    if "label" not in columns or not ({"group", "class"} & columns):
        raise ValueError(f"reference label CSV {path} has columns {sorted(columns)}; expected 'label' and 'group' or 'class'")
    group_ids = {g.id for _, _, g in circuit.iter_groups()}
    by_group: dict[str, list[str]] = {}
    class_labels: list[str] = []
    class_keys = {str(circuit.target.class_index)} | ({circuit.target.name} if circuit.target.name else set())
    unknown = []
    for row in rows:
        label = (row.get("label") or "").strip()
        if not label:
            continue
        if row.get("group"):
            gid = row["group"].strip()
            if gid not in group_ids:
                unknown.append(gid)
                continue
            by_group.setdefault(gid, []).append(label)
        elif row.get("class") and row["class"].strip() in class_keys:
            class_labels.append(label)
    if unknown and not by_group and not class_labels:
        raise ValueError(f"reference label CSV {path} names groups {unknown[:5]} that are not in this circuit")
    labels = {gid: by_group.get(gid, []) + class_labels for gid in sorted(group_ids)}
    return References(f"csv:{path}", labels)
