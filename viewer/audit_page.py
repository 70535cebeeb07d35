"""Offline pages for the shortcut audit (``audit.html``) and the circuit diff (``diff.html``).

The audit page lists each class's findings, best first: the plain sentence, the evidence (importance,
the off-class ablation against its control, label, sharing), the exemplar patches (cropped from the
images when they are readable) and the verdict; the key to pass to ``neurflow audit-review``. The
diff page draws each class's two circuits side by side: per layer, the first checkpoint's groups on
the left, the second's on the right, a bar for each group's importance, matched groups on one row;
when the off-class reliance was measured, each row shows it and each class opens with its ranking.
Both are one self-contained HTML file (images embedded as base64 PNGs).
"""

from __future__ import annotations

import io
from pathlib import Path

from neurflow.core.audit import Audit, Finding
from neurflow.core.diff import CircuitDiff, GroupChange, GroupSide
from neurflow.core.images import crop_source
from neurflow.viewer.data import b64
from neurflow.viewer.svg import esc

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1100px}
h2{margin-top:1.6em;border-bottom:1px solid #ccc}
.finding{border:1px solid #ddd;border-radius:6px;padding:.6em .9em;margin:.7em 0}
.dismissed{opacity:.5}.confirmed{border-color:#c33}
.key{font-family:monospace;color:#555}.verdict{float:right;font-weight:600}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;vertical-align:top}
.bar{display:inline-block;height:10px;background:#4a7;vertical-align:middle}
.appeared td.after,.grew td.after{background:#fde8e8}.vanished td.before,.shrank td.before{background:#e8effd}
.crops img{margin:2px;border:1px solid #ccc;image-rendering:pixelated}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{_CSS}</style>"
            f"</head><body><h1>{esc(title)}</h1>{body}</body></html>")


def _crops(finding: Finding, root: Path | None, size: int = 72) -> str:
    if root is None:
        return ""
    tags = []
    for ex, path in zip(finding.evidence.exemplars, finding.evidence.exemplar_paths):
        source = root / path
        if not path or not source.is_file():
            continue
        buf = io.BytesIO()
        crop_source(source, ex.box, size).save(buf, format="PNG")
        tags.append(f"<img alt='exemplar' width='{size}' height='{size}' src='data:image/png;base64,{b64(buf.getvalue())}'>")
    return f"<div class='crops'>{''.join(tags)}</div>" if tags else ""


def _evidence(f: Finding) -> str:
    ev = f.evidence
    rows = [("importance", f"{ev.importance:.2f}")]
    a = ev.ablation
    if a is not None:
        share = "n/a" if a.share is None else f"{a.share:.2f}"
        rows.append(("off-class ablation", f"logit drop {a.logit_drop:.3f} on {a.images} images; random sets of its size "
                                           f"{a.control_mean:.3f} ± {a.control_std:.3f} (z {a.z:.1f}); own images "
                                           f"{a.own_logit_drop:.3f} (share {share})"
                                           + ("" if a.margin_drop is None else
                                              f"; lead over the shown class {a.margin_drop:.3f}, random sets "
                                              f"{a.margin_control_mean:.3f}")))
    if ev.label:
        conf = "" if ev.confidence is None else f" (confidence {ev.confidence:.2f})"
        expected = {True: "expected", False: "not expected", None: "no expected list"}[ev.expected]
        rows.append(("label", f"{ev.label}{conf}: {expected}"))
    if ev.shared_with:
        rows.append(("shared with classes", ", ".join(str(k) for k in ev.shared_with)))
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"


def render_audit_page(audit: Audit, images_root: str | Path | None = None, title: str = "NeurFlow shortcut audit") -> str:
    """The audit as one HTML page; exemplar crops from ``images_root`` (default: ``audit.images``)."""
    root = Path(images_root or audit.images or "")
    root = root if (images_root or audit.images) and root.is_dir() else None
    open_count = len(audit.findings())
    parts = [f"<p>{open_count} open findings in {len(audit.classes)} classes. Confirm or dismiss one with "
             f"<code>neurflow audit-review OUT KEY --dismiss</code>; verdicts survive a rerun.</p>"]
    for w in audit.warnings:
        parts.append(f"<p><em>note: {esc(w)}</em></p>")
    for cls in audit.classes:
        parts.append(f"<h2>Class {cls.class_index}: {esc(cls.name or '')}</h2><p>{cls.groups_examined} groups examined, "
                     f"{len(cls.findings)} findings.</p>")
        for f in cls.findings:
            parts.append(f"<div class='finding {f.verdict}'><span class='verdict'>{esc(f.verdict)}</span>"
                         f"<div class='key'>{esc(f.key)} · {esc(f.layer)} {esc(f.group)} · score {f.score:.2f} · "
                         f"{esc(', '.join(f.reasons))}</div><p>{esc(f.sentence)}</p>{_evidence(f)}{_crops(f, root)}"
                         + (f"<p><em>{esc(f.review.by)}: {esc(f.review.note)}</em></p>" if f.review and f.review.note else "")
                         + "</div>")
    return _page(title, "".join(parts))


def _cell(side: GroupSide | None, css: str) -> str:
    if side is None:
        return f"<td class='{css}'></td>"
    label = f" {esc(side.label)}" if side.label else ""
    return (f"<td class='{css}'><span class='bar' style='width:{80 * side.importance:.0f}px'></span> "
            f"{esc(side.group)}{label} <small>{len(side.neurons)} neurons, {side.importance:.2f}</small></td>")


def _reliance(c: GroupChange) -> str:
    r = c.reliance
    if r is None:
        return "<td></td>"
    return (f"<td>{r.drop_before:.2f} &rarr; {r.drop_after:.2f} <b>{r.increase:+.2f}</b> "
            f"<small>({r.images} images)</small></td>")


def _row(c: GroupChange, with_reliance: bool) -> str:
    return (f"<tr class='{c.change}'>{_cell(c.before, 'before')}<td>{esc(c.change)} {c.delta:+.2f}</td>"
            f"{_reliance(c) if with_reliance else ''}{_cell(c.after, 'after')}</tr>")


def _ranking(changes: list[GroupChange], shown: int = 5) -> str:
    items = "".join(f"<li>{esc((c.after or c.before).group)} in {esc(c.layer)} ({esc(c.change)}): off-class reliance "
                    f"{c.reliance.increase:+.2f} (logit drop {c.reliance.drop_before:.2f} in the first network, "
                    f"{c.reliance.drop_after:.2f} in the second); importance {c.delta:+.2f}</li>"
                    for c in changes[:shown] if c.reliance is not None)
    return f"<ol class='ranking'>{items}</ol>" if items else ""


def render_diff_page(diff: CircuitDiff, title: str = "NeurFlow circuit diff") -> str:
    """Each class's two circuits side by side, layer by layer, in the diff's order within a layer; with
    the off-class reliance, each class's first changes by it, and the drops in each row."""
    how = "member neurons" if diff.same_architecture else "labels"
    by_reliance = diff.order == "off_class_reliance"
    if by_reliance:
        order = (f"Changes are ordered by their off-class reliance: each group's neurons zeroed in both networks "
                 f"on up to {diff.max_images} images of other classes (related classes left out); the drop of the "
                 f"class's logit in the second network minus that in the first, biggest first.")
    else:
        order = "Changes are ordered by the importance they gained (the off-class reliance was not measured)."
    parts = [f"<p>First checkpoint {esc(diff.before[:16])}, second {esc(diff.after[:16])}; groups matched by {how} "
             f"(similarity at least {diff.min_similarity}); grew/shrank: importance changed by at least {diff.min_delta}. "
             f"{order}</p>"]
    for w in diff.warnings:
        parts.append(f"<p><em>note: {esc(w)}</em></p>")
    head = "<th>off-class logit drop, first &rarr; second (increase)</th>" if by_reliance else ""
    for cls in diff.classes:
        parts.append(f"<h2>Class {cls.class_index}: {esc(cls.name or '')}</h2>")
        top = cls.changes[0] if cls.changes else None
        if by_reliance and top is not None:
            parts.append(f"<p>Off-class reliance, biggest increase first:</p>{_ranking(cls.changes)}")
        elif top is not None and top.change in ("appeared", "grew"):
            side = top.after
            parts.append(f"<p>Biggest gain: {esc(side.group)} in {esc(top.layer)} {esc(top.change)} "
                         f"({top.delta:+.2f}).</p>")
        layers = list(dict.fromkeys(c.layer for c in cls.changes))
        for layer in layers:
            rows = "".join(_row(c, by_reliance) for c in cls.changes if c.layer == layer)
            parts.append(f"<h3>{esc(layer)}</h3><table><tr><th>first</th><th>change</th>{head}<th>second</th></tr>"
                         f"{rows}</table>")
    return _page(title, "".join(parts))


def write_page(html: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
