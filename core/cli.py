"""Engine subcommands of ``neurflow``: ``layers`` (what can be addressed in a model)."""

from __future__ import annotations

import argparse

from .model_intake import list_layers, load_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="list a model's addressable layer names with their output shapes")
    p.add_argument("arch", help="torchvision:<name>, timm:<name> or a bare torchvision name")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--weights", default=None, help="optional .safetensors state_dict (checked strictly)")
    p.set_defaults(func=cmd_layers)


def cmd_layers(args: argparse.Namespace) -> int:
    model = load_model(args.arch, args.weights, args.num_classes)
    rows = list_layers(model, args.input_size)
    width = max(len(name) for name, _ in rows)
    for name, shape in rows:
        print(f"{name:<{width}}  {'x'.join(str(d) for d in shape)}")
    return 0
