"""A static PNG of a circuit graph (matplotlib, Agg backend), drawn from the same layout as the HTML
viewer: layers as bands from the output down, groups as circles with their top label and confidence
(uncertain labels dashed, with a "?"), edges with a width proportional to |weight| (blue positive, red
negative).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neurflow.core.circuit import Circuit
from neurflow.core.group_label import display_text, is_uncertain
from neurflow.viewer.layout import LEFT, NODE_R, layout_circuit

DPI = 100


def render_circuit_png(circuit: Circuit, path: str | Path, title: str | None = None) -> dict[str, Any]:
    """Write the graph to ``path``; return what was drawn: ``{"path", "nodes", "edges", "width", "height"}``
    (``nodes``: group ids in drawing order, ``edges``: (source, target) pairs; size in pixels)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle, Rectangle

    lay = layout_circuit(circuit)
    fig = Figure(figsize=(lay.width / DPI, lay.height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)  # the Agg canvas explicitly: no global backend switch, no display needed
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, lay.width)
    ax.set_ylim(lay.height, 0)  # SVG coordinates: y grows downwards
    ax.set_axis_off()
    if title is None:
        title = f"class {circuit.target.class_index}" + (f": {circuit.target.name}" if circuit.target.name else "")
    ax.text(8, lay.height - 12, title, ha="left", va="center", fontsize=8, color="#4a5568")
    for k, band in enumerate(lay.bands):
        if k % 2:
            ax.add_patch(Rectangle((0, band.top), lay.width, band.bottom - band.top, facecolor="#f7fafc",
                                   edgecolor="none", zorder=0))
        if band.n_groups == 0:
            ax.text(LEFT, (band.top + band.bottom) / 2, f"{band.n_neurons} core neurons, not grouped",
                    ha="left", va="center", fontsize=8, style="italic", color="#718096")
    for name, y in lay.rows:
        ax.text(8, y, name, ha="left", va="center", fontsize=9, fontweight="bold", color="#2d3748")
    # line widths are in points: the layout's pixel widths at DPI 100 are 0.72 pt per px
    drawn_edges = []
    for e in lay.edges:
        a, b = lay.nodes[e.source], lay.nodes[e.target]
        ax.plot([a.x, b.x], [a.y + NODE_R, b.y - NODE_R], color="#2b6cb0" if e.weight >= 0 else "#c53030",
                linewidth=e.width * 72 / DPI, alpha=0.6, solid_capstyle="round", zorder=1)
        drawn_edges.append((e.source, e.target))
    drawn_nodes = []
    for _, layer, group in circuit.iter_groups():
        p = lay.nodes[group.id]
        conf = group.confidence
        fill = "#edf2f7" if conf is None else matplotlib.colormaps["BuGn"](0.15 + 0.6 * max(0.0, min(1.0, conf)))
        unsure = is_uncertain(group)
        ax.add_patch(Circle((p.x, p.y), NODE_R, facecolor=fill, edgecolor="#c05621" if unsure else "#2d3748",
                            linewidth=1.8 if unsure else 1.2, linestyle=(0, (4, 2)) if unsure else "solid", zorder=2))
        if unsure:
            ax.text(p.x + NODE_R - 2, p.y - NODE_R + 2, "?", ha="center", va="center", fontsize=10,
                    fontweight="bold", color="#c05621", zorder=3)
        ax.text(p.x, p.y, group.id, ha="center", va="center", fontsize=7, family="monospace", zorder=3)
        label = display_text(group) or "—"
        ax.text(p.x, p.y + NODE_R + 11, label if len(label) <= 20 else label[:19] + "…", ha="center", va="center",
                fontsize=8, fontweight="bold", zorder=3)
        if conf is not None:
            ax.text(p.x, p.y + NODE_R + 23, f"{conf:.2f}", ha="center", va="center", fontsize=7, color="#718096",
                    zorder=3)
        drawn_nodes.append(group.id)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, facecolor="white")
    width, height = fig.canvas.get_width_height()
    return {"path": path, "nodes": drawn_nodes, "edges": drawn_edges, "width": width, "height": height}
