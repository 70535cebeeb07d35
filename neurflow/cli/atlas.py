"""``neurflow atlas CIRCUIT.json... --out DIR``: the concept atlas of several classes' circuits (atlas.json +
atlas.html), and ``neurflow atlas-search ATLAS.json QUERY``: which classes use a concept like QUERY."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from neurflow.atlas.document import AtlasSettings

    d = AtlasSettings()
    p = sub.add_parser("atlas", help="the concept atlas of a model from its classes' circuits (atlas.json + atlas.html)",
                       description="Reads the circuits of several classes of one model and writes the concept atlas: "
                                   "per layer, the shared concepts (groups of several classes with overlapping member "
                                   "neurons), recurring labels and neurons that serve many classes; the class pairs "
                                   "that share a sub-circuit; and a page with the class-by-concept matrix, a label "
                                   "search and each class's circuit viewer. See docs/atlas.md.")
    p.add_argument("circuits", nargs="+", help="circuit.json files, one per class, all of one model")
    p.add_argument("--out", required=True, help="folder for atlas.json and atlas.html")
    p.add_argument("--images", help="data root of the circuits' images, for the exemplar mosaics of the embedded "
                                    "circuit viewers (default: where each was labeled from, when that folder exists)")
    p.add_argument("--jaccard", type=float, default=d.jaccard,
                   help=f"member-neuron Jaccard at which two groups are one concept, in (0, 1] (default {d.jaccard})")
    p.add_argument("--min-classes", type=int, default=d.min_classes,
                   help=f"classes a concept, label or neuron needs to be listed, at least 2 (default {d.min_classes})")
    p.add_argument("--max-pairs", type=int, default=d.max_pairs,
                   help=f"class pairs kept in the shared sub-circuits (default {d.max_pairs})")
    p.add_argument("--no-embed", action="store_true",
                   help="do not embed each class's circuit viewer in atlas.html (a smaller page)")
    p.add_argument("--title", help="page title")
    p.set_defaults(func=cmd_atlas)

    s = sub.add_parser("atlas-search", help="which classes of an atlas use a concept like QUERY",
                       description="Searches the group labels of an atlas.json: a text match always, and with "
                                   "--semantic also the similarity of the query to the labels under the CLIP that "
                                   "labeled the circuits (it must be loadable here).")
    s.add_argument("atlas", help="atlas.json (neurflow atlas)")
    s.add_argument("query", help="a concept, e.g. 'wheel'")
    s.add_argument("--semantic", action="store_true", help="also match labels by CLIP text similarity")
    s.add_argument("--min-similarity", type=float, default=0.8,
                   help="cosine a label needs with the query to match semantically (default 0.8)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(func=cmd_search)


def _settings(args: argparse.Namespace):
    import msgspec

    from neurflow.atlas.document import AtlasSettings

    try:
        return msgspec.convert({"jaccard": args.jaccard, "min_classes": args.min_classes, "max_pairs": args.max_pairs},
                               AtlasSettings)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{exc} (accepted: --jaccard in (0, 1], --min-classes at least 2, --max-pairs 1..100000)") \
            from None


def cmd_atlas(args: argparse.Namespace) -> int:
    from neurflow.atlas import AtlasInput, build_atlas
    from neurflow.exports.source import ExportSource
    from neurflow.viewer.atlas_page import write_atlas_page
    from neurflow.viewer.data import ReportEntry

    settings = _settings(args)
    sources = []
    for path in args.circuits:
        try:
            sources.append((path, ExportSource.from_files(path, args.images)))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    atlas = build_atlas([AtlasInput(circuit=s.circuit, circuit_id=Path(path).as_posix()) for path, s in sources],
                        settings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "atlas.json").write_text(atlas.to_json(), encoding="utf-8")
    entries = None if args.no_embed else [ReportEntry(circuit=s.circuit, mosaics=s.all_mosaics(), circuit_id=path)
                                          for path, s in sources]
    write_atlas_page(atlas, out / "atlas.html", entries=entries, title=args.title)
    n_concepts = sum(len(layer.concepts) for layer in atlas.layers)
    print(f"atlas: {out / 'atlas.json'} and {out / 'atlas.html'}: {len(atlas.classes)} classes, {n_concepts} shared "
          f"concepts, {len(atlas.subcircuits) + atlas.subcircuits_omitted} class pairs sharing a sub-circuit")
    for layer in atlas.layers:
        if layer.concepts:
            top = ", ".join(f"{c.label or c.id} ({len(c.classes)})" for c in layer.concepts[:5])
            print(f"  {layer.name}: {len(layer.concepts)} concepts: {top}")
    for warning in atlas.warnings:
        print(f"note: {warning}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    import msgspec

    from neurflow.atlas.document import Atlas
    from neurflow.atlas.query import atlas_embedder, search

    path = Path(args.atlas)
    if not path.is_file():
        raise FileNotFoundError(f"no atlas file {path}")
    atlas = Atlas.from_json(path.read_bytes())
    embed = atlas_embedder(atlas) if args.semantic else None
    result = search(atlas, args.query, embed=embed, min_similarity=args.min_similarity)
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(result), indent=1).decode())
        return 0
    if not result.classes:
        print(f"no class uses a concept like {result.query!r} ({result.mode} search)")
        return 0
    print(f"{len(result.classes)} classes use a concept like {result.query!r} ({result.mode} search):")
    for hit in result.classes:
        best = hit.matches[0]
        print(f"  class {hit.class_index} {hit.name or ''}: {best.label!r} in {best.layer} {best.group}"
              f"{f' (concept {best.concept})' if best.concept else ''}, score {hit.score:.2f}"
              f"{f', +{len(hit.matches) - 1} more' if len(hit.matches) > 1 else ''}")
    return 0
