"""Labeler commands: ``neurflow label`` and ``neurflow evaluate``.

* ``neurflow label CIRCUIT.json --images DIR [...]`` relabels an existing circuit without rerunning
  the engine (the labeling settings come from ``--labeling``, from the flags, or from the circuit's
  previous labeling).
* ``neurflow evaluate CIRCUIT.json [--world ROOT | --references CSV] [--compare OTHER.json]`` prints
  the label-quality table and writes the JSON report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from neurflow.core.circuit import Circuit
from neurflow.core.circuit_arrays import read_circuit, write_circuit
from neurflow.progress import ProgressBars


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help="label (or relabel) the groups of a circuit with CLIP and an optional captioner")
    p.add_argument("circuit", help="circuit.json written by `neurflow run`")
    p.add_argument("--images", help="data root the circuit's image paths are relative to (the job's data.images)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="where to write the labeled circuit (a new file: CIRCUIT itself is never overwritten)")
    p.add_argument("--labeling", help="a labeling section: JSON file or inline JSON (see docs/labeling.md)")
    p.add_argument("--world-clip", metavar="BUNDLE", help="use a world-CLIP bundle folder (model, vocabulary, templates)")
    p.add_argument("--clip-model", help="open_clip model name, or local-dir:FOLDER")
    p.add_argument("--clip-pretrained", help="pretrained tag or checkpoint file")
    p.add_argument("--clip-config", help="custom open_clip model-config JSON, registered under --clip-model")
    p.add_argument("--vocabulary", help="builtin:general, builtin:imagenet1k, a text file, or comma-separated concepts")
    p.add_argument("--templates", help="builtin:default, builtin:imagenet, builtin:plain, or a text file")
    p.add_argument("--top-k", type=int, metavar="K", help="labels kept per group, best first (1..100; default 5)")
    p.add_argument("--score", choices=["mosaic", "contrastive", "mean_cosine"],
                   help="how a group's patches score a concept (default mosaic; see docs/label-quality.md)")
    p.add_argument("--holdout", type=float, help="share of each group's top patches held out for evaluation")
    p.add_argument("--captioner-backend", choices=["openai", "transformers"],
                   help="caption groups with an OpenAI-compatible endpoint or a local transformers model folder")
    p.add_argument("--captioner-model", help="served model name (openai) or local model folder (transformers)")
    p.add_argument("--captioner-url", help="OpenAI-compatible API root, e.g. http://localhost:11434/v1")
    p.add_argument("--no-captioner", action="store_true", help="drop a captioner configured in --labeling or earlier")
    p.add_argument("--caption-vote", action=argparse.BooleanOptionalAction, default=None,
                   help="whether the caption's words vote on the label (default: they do; docs/labeling.md)")
    p.set_defaults(func=cmd_label)

    b = sub.add_parser("clip-bundle", help="write an open_clip model with its pretrained weights as a bundle folder",
                       description="Write an open_clip model and its pretrained weights (from this machine's "
                                   "open_clip/Hugging Face cache, fetched when the hub is reachable, or a checkpoint "
                                   "file) as a bundle folder that `--clip-model local-dir:DIR` and the service's "
                                   "assets load with no network. Prints the folder's absolute path.")
    b.add_argument("model", metavar="MODEL", help="open_clip model name, e.g. ViT-B-32 (see open_clip.list_models())")
    b.add_argument("--pretrained", required=True, metavar="TAG_OR_FILE",
                   help="pretrained tag, e.g. openai or laion2b_s34b_b79k, or a checkpoint file (.safetensors, .pt, .bin)")
    b.add_argument("--out", required=True, metavar="DIR", help="the bundle folder to write (must not exist, or be empty)")
    b.add_argument("--model-config", metavar="JSON", help="open_clip model-config JSON defining a custom MODEL")
    b.set_defaults(func=cmd_clip_bundle)

    e = sub.add_parser("evaluate", help="offline label-quality report of a labeled circuit (optionally two, side by side)")
    e.add_argument("circuit", help="labeled circuit.json")
    e.add_argument("--images", help="data root of the circuit's images (default: where it was labeled from)")
    e.add_argument("--compare", metavar="OTHER", help="a second labeled circuit of the same run, evaluated alongside")
    e.add_argument("--world", help="synthetic world root: reference labels from its part masks")
    e.add_argument("--references", help="CSV of reference labels: columns group,label or class,label")
    e.add_argument("--source", choices=["clip", "caption"], default="clip", help="which labels to evaluate")
    e.add_argument("--weights", help="the model's .safetensors: exact group activations for faithfulness (default: recorded ones)")
    e.add_argument("--json", dest="json_out", help="write the JSON report here")
    e.set_defaults(func=cmd_evaluate)



def _read_circuit(path: str) -> Circuit:
    try:
        return read_circuit(path)
    except FileNotFoundError:
        raise ValueError(f"circuit file {path} does not exist") from None


def _json_arg(value: str, what: str) -> dict[str, Any]:
    text = value if value.lstrip().startswith("{") else None
    if text is None:
        try:
            text = Path(value).read_text()
        except OSError as exc:
            raise ValueError(f"cannot read {what} {value}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and "labeling" in data and "clip" not in data:  # a whole job spec
        data = data["labeling"]
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object")
    return data


def labeling_from_args(args: argparse.Namespace, previous: dict[str, Any] | None) -> tuple[dict[str, Any], Path | None]:
    """The labeling section for ``neurflow label``: file/inline section < previous labeling < flags."""
    base_dir = None
    if args.labeling:
        section = _json_arg(args.labeling, "--labeling")
        if not args.labeling.lstrip().startswith("{"):
            base_dir = Path(args.labeling).resolve().parent
    else:
        section = dict(previous or {})
    if args.world_clip:
        from neurflow.world.clip import labeling_section

        section.update(labeling_section(Path(args.world_clip).resolve()))
    clip = dict(section.get("clip") or {})
    for flag, key in (("clip_model", "model"), ("clip_pretrained", "pretrained"), ("clip_config", "model_config")):
        if getattr(args, flag):
            clip[key] = getattr(args, flag)
    if args.clip_model and not args.clip_config and args.clip_model != (section.get("clip") or {}).get("model"):
        clip.pop("model_config", None)  # a different model: the old custom config does not apply
    if clip:
        section["clip"] = clip
    if args.vocabulary:
        v = args.vocabulary
        section["vocabulary"] = [c.strip() for c in v.split(",")] if "," in v and not Path(v).exists() else v
    for flag, key in (("templates", "templates"), ("top_k", "top_k"), ("score", "score"), ("holdout", "holdout")):
        if getattr(args, flag) is not None:
            section[key] = getattr(args, flag)
    if args.no_captioner:
        section["captioner"] = None
    elif args.captioner_backend or args.captioner_model or args.captioner_url:
        cap = dict(section.get("captioner") or {})
        for flag, key in (("captioner_backend", "backend"), ("captioner_model", "model"), ("captioner_url", "base_url")):
            if getattr(args, flag):
                cap[key] = getattr(args, flag)
        section["captioner"] = cap
    if args.caption_vote is not None:
        if not section.get("captioner"):
            raise ValueError("--caption-vote/--no-caption-vote needs a captioner: pass --captioner-backend and "
                             "--captioner-model, or a --labeling spec with a captioner")
        section["captioner"] = {**section["captioner"], "vote": args.caption_vote}
    if "clip" not in section:
        raise ValueError("no CLIP model given: pass --clip-model/--clip-pretrained, --world-clip BUNDLE or --labeling SPEC")
    return section, base_dir


def _images_dir(args: argparse.Namespace, circuit: Circuit) -> Path:
    if args.images:
        return Path(args.images)
    recorded = circuit.labeling.patches_source if circuit.labeling else None
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    raise ValueError("pass --images DIR: the data root the circuit's image paths are relative to (the job's data.images)")


def cmd_label(args: argparse.Namespace) -> int:
    from neurflow.labeler.config import LabelerConfig
    from neurflow.labeler.labeling import label_circuit

    circuit = _read_circuit(args.circuit)
    previous = msgspec.to_builtins(circuit.labeling.settings) if circuit.labeling else None
    section, base_dir = labeling_from_args(args, previous)
    config = LabelerConfig.from_spec(section, base_dir=base_dir)
    images = _images_dir(args, circuit)
    with ProgressBars() as bars:
        labeled = label_circuit(circuit, images, config, progress=bars)
    out = Path(args.out)
    if out.resolve() == Path(args.circuit).resolve():
        raise ValueError(f"--out {args.out} is the circuit being labeled; write the labeled circuit to a new file")
    write_circuit(labeled, out)
    for _, layer, group in labeled.iter_groups():
        top = group.labels[0] if group.labels else None
        cap = f'  caption: "{group.caption.text[:70]}"' if group.caption else ""
        conf = f"{group.confidence:.2f}" if group.confidence is not None else "-"
        print(f"{group.id:<8} {layer.name:<12} {top.text if top else '-':<28} conf {conf}{cap}")
    errors = labeled.labeling.caption_errors if labeled.labeling else {}
    if errors:
        first = next(iter(errors.values()))
        print(f"neurflow label: warning: captioning failed for {len(errors)} group(s), CLIP labels kept: {first}", file=sys.stderr)
    print(f"wrote {out}")
    return 0


def _evaluate_one(path: str, args: argparse.Namespace) -> dict[str, Any]:
    from neurflow.labeler.evaluation import EvaluationOptions, evaluate_circuit, from_csv
    from neurflow.world.references import from_world
    from neurflow.labeler.patches import PatchLoader

    circuit = _read_circuit(path)
    images = _images_dir(args, circuit)
    references = None
    if args.world:
        references = from_world(circuit, args.world, images_root=images)
    elif args.references:
        references = from_csv(circuit, args.references)
    activations = None
    if args.weights:
        from neurflow.core.model_intake import load_model
        from neurflow.labeler.evaluation.evaluate import ModelActivations

        m = circuit.model
        model = load_model(m.arch, args.weights, m.num_classes)
        activations = ModelActivations(model, PatchLoader(circuit, images), m.input_size, m.mean, m.std)
    return evaluate_circuit(circuit, images, references, activations=activations, options=EvaluationOptions(source=args.source))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from neurflow.labeler.evaluation import format_comparison, format_report

    report = _evaluate_one(args.circuit, args)
    if args.compare:
        other = _evaluate_one(args.compare, args)
        print(format_comparison(report, other, (Path(args.circuit).name, Path(args.compare).name)))
        payload: dict[str, Any] = {"a": {"circuit": args.circuit, **report}, "b": {"circuit": args.compare, **other}}
    else:
        print(format_report(report))
        payload = report
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json_out}")
    return 0


def cmd_clip_bundle(args: argparse.Namespace) -> int:
    from neurflow.labeler.clip_model import write_bundle

    out = write_bundle(args.model, args.pretrained, args.out, model_config=args.model_config)
    print(out.resolve())
    return 0
