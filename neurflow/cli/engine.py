"""Engine commands: ``neurflow layers`` (what a model exposes) and ``neurflow run`` (a job spec, end to end)."""

from __future__ import annotations

import argparse

from pathlib import Path

from neurflow.progress import ProgressBars


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="list a model's readable layer names with their output shapes "
                                      "(channels first), or propose a default layer list")
    p.add_argument("arch", help="torchvision:<name>, timm:<name> or a bare torchvision name")
    p.add_argument("--num-classes", type=int, default=1000, metavar="N",
                   help="classes of the model's classifier (default 1000)")
    p.add_argument("--input-size", type=int, default=224, metavar="PIXELS",
                   help="side of the square input the shapes are probed with (default 224)")
    p.add_argument("--weights", default=None, help="optional .safetensors state_dict (checked strictly), or a "
                                                   "pretrained tag (torchvision weights enum, timm tag)")
    p.add_argument("--suggest", action="store_true",
                   help="print the suggested layer list (the job spec's \"layers\": \"auto\"): the classifier, the "
                        "blocks of the last stage, then the last block of each earlier stage, from the output down, as "
                        "deep as an estimated fit per class fits the budget; each candidate's channels, estimated "
                        "neurons and seconds go to stderr (from a short calibration of the model on this machine), "
                        "the list to stdout as JSON")
    p.add_argument("--budget", default=None,
                   help="with or instead of --suggest: the time budget of a fit per class, e.g. 10m, 600s, 1.5h "
                        "(default: the one \"layers\": \"auto\" uses)")
    p.add_argument("--images", type=int, default=50, help="images per class the estimate assumes (default 50)")
    p.add_argument("--tau", type=int, default=16, help="tau the estimate assumes (default 16)")
    p.add_argument("--preset", choices=("fast", "exact"), default="fast",
                   help="preset the estimate assumes (default fast)")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("run", help="run the engine (and labeling) on a job spec, writing circuit.json")
    p.add_argument("spec", help="job spec JSON (schema: neurflow/core/schemas/jobspec.schema.json)")
    p.add_argument("--out", required=True, metavar="FOLDER",
                   help="output folder: FOLDER/circuit.json for one class, FOLDER/class-<c>/circuit.json for a "
                        "list or \"all\"")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("schema", help="print the JSON Schema of the circuit document or of the job spec "
                                      "(generated from the Structs; core/schemas/ holds the committed copies)")
    p.add_argument("document", choices=("circuit", "jobspec"), help="which document's schema to print")
    p.set_defaults(func=cmd_schema)


def cmd_layers(args: argparse.Namespace) -> int:
    from neurflow.core.layer_catalog import probe_model, readable_layers
    from neurflow.core.model_intake import load_model

    model = load_model(args.arch, args.weights, args.num_classes)
    probes = probe_model(model, args.input_size)
    if args.suggest or args.budget is not None:
        return _suggest(model, probes, args)
    rows = readable_layers(probes)
    width = max(len(row.name) for row in rows)
    for row in rows:
        note = {"HWC": "  (channels-last output, read as channels first)",
                "CL": "  (B,C,L output, read as C x L x 1)"}.get(row.layout, "")
        print(f"{row.name:<{width}}  {'x'.join(str(d) for d in row.shape)}{note}")
    return 0


def _suggest(model, probes, args: argparse.Namespace) -> int:
    import json
    import sys

    from neurflow.core.layer_budget import parse_budget, suggest
    from neurflow.core.params import DEFAULT_LAYER_BUDGET_S, EngineParams

    budget = DEFAULT_LAYER_BUDGET_S if args.budget is None else parse_budget(args.budget)
    if args.images < 1 or args.tau < 1:
        raise ValueError(f"--images and --tau must be at least 1, got {args.images} and {args.tau}")
    print("calibrating on noise images (one forward pass, then per candidate layer the IG steps the preset reaches and "
          "one IG chunk at them, until the budget is passed) ...", file=sys.stderr)
    found = suggest(model, args.input_size, EngineParams(layers="auto", tau=args.tau, preset=args.preset),
                    args.images, budget, probes=probes)
    print(f"estimated seconds of a fit per class of a list ending at each layer ({found.images} images, tau "
          f"{found.tau}, {found.preset} preset, this machine now; an estimate, see docs/architectures.md), "
          f"budget {found.budget_s:.0f} s:", file=sys.stderr)
    rows = found.estimates
    width = max(len(row.name) for row in rows)
    for row in rows:
        over = row.seconds > found.budget_s
        mark = ("  <- the list ends here" + (" (the shortest list, over the budget)" if over else "")
                if row.name == found.layers[-1] else "  (over the budget)" if over else "")
        print(f"  {row.name:<{width}}  {row.channels:>5} channels  ~{row.neurons:>5} neurons  {row.steps:>3} IG steps above"
              f"  ~{row.seconds:>8.0f} s{mark}", file=sys.stderr)
    untimed = found.candidates[len(rows) + 1:]
    if untimed:
        print(f"  not timed (deeper than the budget): {', '.join(untimed)}", file=sys.stderr)
    print(json.dumps(found.layers))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from neurflow.core.jobspec import load_jobspec
    from neurflow.core.memory import malloc_for_fit
    from neurflow.labeler.pipeline import run_job

    spec, base_dir = load_jobspec(args.spec)
    # this process only fits: the preset's trade of peak memory against page faults (core/memory.py)
    malloc_for_fit(spec.engine.preset)
    with ProgressBars() as bars:
        written = run_job(spec, base_dir, Path(args.out), progress=bars)
    for target, path in written.items():
        print(f"class {target}: {path}")
    return 0


def schema_text(document: str) -> str:
    """The committed form of a schema: sorted keys, two-space indent, final newline."""
    import json

    from neurflow.core import circuit, jobspec

    schema = (circuit if document == "circuit" else jobspec).json_schema()
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def cmd_schema(args: argparse.Namespace) -> int:
    print(schema_text(args.document), end="")
    return 0
