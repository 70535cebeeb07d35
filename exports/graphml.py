"""GraphML of the circuit (``circuit.graphml``), written by networkx, for Gephi, Cytoscape, yEd or
``networkx.read_graphml``.

A directed graph: one node per group (id = group id) with ``layer``, ``layer_index``, ``label`` (top
label, empty if unlabeled), ``score`` (of the top label), ``confidence`` (left out when the labeler
computed none), ``caption`` (empty if none), ``members`` and ``exemplars`` (counts) and ``labels``
(all labels, best first, joined with ``"; "``), ``status`` (unlabeled, labeled, uncertain,
corrected) and ``candidates`` (an uncertain group's two best labels joined with ``"; "``, else empty);
one edge per ``group_edges`` entry (upper group ->
lower group) with ``weight``. Graph attributes: ``class_index``, ``class_name``, ``model_arch``,
``model_version``, ``schema``. The API answers the document itself (``application/graphml+xml``).
"""

from __future__ import annotations

import io

import networkx as nx

from neurflow.core.group_label import candidate_texts, top_text
from neurflow.exports.source import Exported, ExportSource

MEDIA_TYPE = "application/graphml+xml"


def build_graph(source: ExportSource) -> nx.DiGraph:
    circuit = source.circuit
    graph = nx.DiGraph(class_index=circuit.target.class_index, class_name=circuit.target.name or "",
                       model_arch=circuit.model.arch, model_version=source.model_version, schema=circuit.schema)
    for layer_index, layer, group in circuit.iter_groups():
        attrs = {"layer": layer.name, "layer_index": layer_index,
                 "label": top_text(group) or "", "status": group.status,
                 "candidates": "; ".join(candidate_texts(group)),
                 "caption": group.caption.text if group.caption else "",
                 "members": len(group.members), "exemplars": len(group.exemplars),
                 "labels": "; ".join(lab.text for lab in group.labels)}
        if group.labels:
            attrs["score"] = float(group.labels[0].score)
        if group.confidence is not None:
            attrs["confidence"] = float(group.confidence)
        if group.id in graph:
            raise ValueError(f"group id {group.id!r} appears twice in the circuit")
        graph.add_node(group.id, **attrs)
    for edge in circuit.group_edges:
        for end in (edge.source, edge.target):
            if end not in graph:
                raise ValueError(f"group edge {edge.source} -> {edge.target} names group {end!r}, "
                                 f"which is not in the circuit")
        graph.add_edge(edge.source, edge.target, weight=float(edge.weight))
    return graph


def export(source: ExportSource, options: dict) -> Exported:
    buf = io.BytesIO()
    nx.write_graphml(build_graph(source), buf, encoding="utf-8")
    data = buf.getvalue()
    return Exported(files={"circuit.graphml": data}, document=data, media_type=MEDIA_TYPE)
