"""``neurflow world generate ROOT`` and ``neurflow world train``."""

from __future__ import annotations

import argparse
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
    from core.world.generate import generate_world

    config = generate_world(args.root, n_per_class=args.per_class, seed=args.seed, image_size=args.image_size,
                            splits=args.splits, overwrite=args.overwrite, progress=not args.quiet)
    total = sum(config.splits.values()) * len(config.classes)
    print(f"world: {total} images of {len(config.classes)} classes in {Path(args.root) / 'images'} "
          f"(splits {', '.join(config.splits)}); ground truth in {Path(args.root) / 'world.json'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from core.world.train import ensure_world_model, train_world_model

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
    gen.add_argument("--seed", type=int, default=0)
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
