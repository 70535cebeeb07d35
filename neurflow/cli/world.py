"""World commands: ``neurflow world generate ROOT``, ``neurflow world train`` and ``neurflow world-clip``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    """"80x72" -> (80, 72); "64" -> (64, 64)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be WIDTHxHEIGHT or SIDE, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"image size must be WIDTHxHEIGHT or SIDE, got {text!r}")
    return parts[0], parts[1]


def _generate(args: argparse.Namespace) -> int:
    from neurflow.world.generate import generate_world

    config = generate_world(args.root, n_per_class=args.per_class, seed=args.seed, image_size=args.image_size,
                            splits=args.splits, overwrite=args.overwrite, progress=not args.quiet)
    total = sum(config.splits.values()) * len(config.classes)
    print(f"world: {total} images of {len(config.classes)} classes in {Path(args.root) / 'images'} "
          f"(splits {', '.join(config.splits)}); ground truth in {Path(args.root) / 'world.json'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from neurflow.world.train import ensure_world_model, train_world_model

    build = train_world_model if args.force else ensure_world_model
    model = build(args.cache_dir, progress=not args.quiet, threads=args.threads)
    accuracy = model.heldout_accuracy
    print(f"held-out accuracy: {accuracy:.4f}" if accuracy is not None else "held-out accuracy: n/a (no heldout split)")
    print(f"trained in {model.meta['train_seconds']:.1f} s; weights {model.weights}")
    print(f"images for the engine: {model.images('train')}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("world", help="the synthetic concept world (demo and test data)",
                                   description="Generate the synthetic concept world or train its reference model.")
    sub = parser.add_subparsers(dest="world_command", required=True, metavar="SUBCOMMAND")

    gen = sub.add_parser("generate", help="write a world (images, masks, world.json) to ROOT")
    gen.add_argument("root", metavar="ROOT", help="output folder (must not already hold a world)")
    gen.add_argument("--per-class", type=int, default=40, help="images per class and split (default 40)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the random scenes (default 0): a seed gives the same world")
    gen.add_argument("--image-size", type=_size, default=(80, 72), help="WIDTHxHEIGHT or SIDE (default 80x72)")
    gen.add_argument("--splits", nargs="+", default=["train", "heldout"], help="split names (default: train heldout)")
    gen.add_argument("--overwrite", action="store_true", help="write over an existing world")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=_generate)

    train = sub.add_parser("train", help="train (or reuse) the world's resnet18 and print its held-out accuracy")
    train.add_argument("--cache-dir", default=None, help="cache folder (default $NEURFLOW_CACHE or .cache/neurflow)")
    train.add_argument("--force", action="store_true", help="retrain even if a cached model exists")
    train.add_argument("--threads", type=int, default=None,
                       help="torch threads while training (default: torch's); 1 is faster on a busy machine")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_train)

    w = subparsers.add_parser("world-clip", help="train (or reuse) the small open_clip model of the synthetic world")
    w.add_argument("--world", help="world root (default: the standard world in the cache, generated if missing)")
    w.add_argument("--steps", type=int, help="training steps (default: the TrainConfig default)")
    w.add_argument("--batch-size", type=int, help="crops per training step (default: the TrainConfig default)")
    w.add_argument("--tower", metavar="NAME",
                   help="image tower: vit (default) or resnet (as accurate on the synthetic worlds at about a "
                        "third of the CPU time: docs/world.md)")
    w.add_argument("--force", action="store_true", help="retrain even if a cached bundle exists")
    w.add_argument("--out", metavar="DIR",
                   help="also copy the bundle to DIR (a new folder), usable as --clip-model local-dir:DIR; its "
                        "absolute path is printed")
    w.set_defaults(func=cmd_world_clip)


def cmd_world_clip(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from neurflow.world.clip import TrainConfig, ensure_world_clip, labeling_section

    chosen = {"steps": args.steps, "batch_size": args.batch_size, "arch": args.tower}
    config = replace(TrainConfig(), **{k: v for k, v in chosen.items() if v is not None})
    if args.out and Path(args.out).exists() and (not Path(args.out).is_dir() or any(Path(args.out).iterdir())):
        raise ValueError(f"{args.out} already exists; the bundle is copied to a new folder (choose another --out)")
    bundle = ensure_world_clip(args.world, config, log=lambda line: print(line, file=sys.stderr), force=args.force)
    if args.out:
        import shutil

        out = Path(args.out)
        if out.exists():
            out.rmdir()  # empty, checked above
        shutil.copytree(bundle, out)
        bundle = out.resolve()
    metrics = json.loads((bundle / "metrics.json").read_text())
    print(f"world CLIP: {bundle}")
    print(f"zero-shot top-1 on single-part crops ({metrics['split']}, {metrics['n_crops']} crops): {metrics['zero_shot_top1']:.3f}")
    print("labeling section:")
    print(json.dumps(labeling_section(bundle), indent=1))
    return 0
