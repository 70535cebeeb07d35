"""Train the world's reference model: a plain ``torchvision.models.resnet18(num_classes=8)``.

The model sees images exactly as the engine will: :class:`core.images.Preprocess` (shorter side to
``input_size``, centre crop, normalise), so nothing is lost between training and explanation.
``mean``/``std`` are the per-channel statistics of the training split after that preprocessing,
rounded to 4 decimals (the world's colours are far from ImageNet's). The only augmentation is a
horizontal flip: the world itself supplies the variety.

Training is deterministic for a given config on a given machine and thread count: the global
torch RNG is seeded inside :func:`torch.random.fork_rng` (the caller's RNG state is untouched) and
batches come from a seeded ``torch.Generator``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file, save_file

from neurflow.progress import Meter, ProgressBars
from neurflow.core.hashing import sha256_file
from neurflow.core.images import Preprocess, open_rgb
from neurflow.world.cache import build_entry, ensure_world
from neurflow.world.ground_truth import World
from neurflow.world.spec import WORLD_VERSION, WorldConfig

MODEL_SCHEMA = "neurflow.world-model/1"
ARCH = "torchvision:resnet18"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (together with the world)."""

    input_size: int = 64
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3  # peak of the one-cycle schedule (AdamW)
    weight_decay: float = 5e-4
    seed: int = 0
    hflip: bool = True
    max_steps: int | None = None  # stop early (smoke tests); None trains all epochs
    # a fine-tune: the weights (``model.safetensors`` of a world model) to start from, whose
    # ``model.json`` beside them also gives the input normalisation; None trains from scratch
    init: str | None = None

    def key(self) -> str:
        fields = asdict(self)
        init = fields.pop("init")
        if init is not None:  # the starting weights' content, not where they lie, identify the fine-tune
            fields["init_sha256"] = sha256_file(Path(init))
        payload = json.dumps({"arch": ARCH, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class WorldModel:
    """A trained world model in the cache: where its files are and what ``model.json`` says."""

    directory: Path
    world_root: Path
    meta: dict[str, Any] = field(repr=False)

    @property
    def weights(self) -> Path:
        return self.directory / WEIGHTS_FILE

    @property
    def meta_path(self) -> Path:
        return self.directory / META_FILE

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def heldout_accuracy(self) -> float | None:
        return self.meta["heldout_accuracy"]

    @property
    def weights_sha256(self) -> str:
        return self.meta["weights_sha256"]

    def images(self, split: str = "train") -> Path:
        """The folder to hand the engine: the images of one split."""
        return self.world_root / "images" / split

    def model_spec(self) -> dict[str, Any]:
        """The ``model`` section of a job spec (see :class:`core.jobspec.ModelSpec`)."""
        m = self.meta
        return {"arch": m["arch"], "weights": str(self.weights), "num_classes": m["num_classes"],
                "input_size": m["input_size"], "mean": m["mean"], "std": m["std"], "class_names": m["class_names"]}

    def load_model(self) -> torch.nn.Module:
        """The network with its weights, in eval mode."""
        model = torchvision.models.resnet18(num_classes=self.meta["num_classes"])
        model.load_state_dict(load_file(str(self.weights)))
        return model.eval()

    @classmethod
    def load(cls, directory: str | Path, world_root: str | Path | None = None) -> WorldModel:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("schema") != MODEL_SCHEMA:
            raise ValueError(f"{directory / META_FILE}: unsupported schema {meta.get('schema')!r}")
        return cls(directory=directory, world_root=Path(world_root) if world_root else directory.parent, meta=meta)


def model_dir(world_root: Path, train: TrainConfig) -> Path:
    return world_root / f"model-resnet18-{train.key()}"


def load_split(world: World, split: str, input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels in [0, 1] (N, 3, S, S) as the engine sees them, and class indices (N,)."""
    to_pixels = Preprocess(input_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).pixels
    index = {name: i for i, name in enumerate(world.class_names)}
    paths = world.images(split)
    if not paths:
        return torch.empty(0, 3, input_size, input_size), torch.empty(0, dtype=torch.long)
    pixels = torch.stack([to_pixels(open_rgb(world.images_dir / p)) for p in paths])
    labels = torch.tensor([index[p.split("/")[1]] for p in paths], dtype=torch.long)
    return pixels, labels


def channel_stats(pixels: torch.Tensor) -> tuple[list[float], list[float]]:
    mean = pixels.mean(dim=(0, 2, 3))
    std = pixels.std(dim=(0, 2, 3))
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


@torch.no_grad()
def accuracy(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float | None:
    if len(labels) == 0:
        return None
    model.eval()
    correct = sum(int((model(inputs[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(labels), batch_size))
    return correct / len(labels)


def _fit(inputs: torch.Tensor, labels: torch.Tensor, num_classes: int, train: TrainConfig, progress: bool,
         threads_now: Callable[[], int] | None = None) -> tuple[torch.nn.Module, list[float]]:
    """The training loop proper; returns the model and the loss of every step."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        model = torchvision.models.resnet18(num_classes=num_classes)
    if train.init is not None:
        model.load_state_dict(load_file(train.init))
    generator = torch.Generator().manual_seed(train.seed)
    steps_per_epoch = math.ceil(len(labels) / train.batch_size)
    total = train.epochs * steps_per_epoch
    if train.max_steps is not None:
        total = min(total, train.max_steps)
    optimiser = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=train.lr, total_steps=max(total, 1), pct_start=0.25)
    losses: list[float] = []
    bars = ProgressBars() if progress else None
    report = Meter(bars)
    model.train()
    while len(losses) < total:
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), train.batch_size):
            if len(losses) >= total:
                break
            batch = order[start:start + train.batch_size]
            if len(batch) < 2:  # BatchNorm cannot train on a single image
                continue
            if threads_now is not None and (wanted := threads_now()) != torch.get_num_threads():
                torch.set_num_threads(wanted)
            x, y = inputs[batch], labels[batch]
            if train.hflip:
                flip = torch.rand(len(batch), generator=generator) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = F.cross_entropy(model(x), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            report("train resnet18", len(losses), total, "steps")
    if bars is not None:
        bars.close()
    return model.eval(), losses


#: intra-op threads for training: a count, None (torch's setting), or a callable asked before every
#: step, for a caller that frees cores while the training runs (``world/setups.py``)
Threads = int | Callable[[], int] | None


@contextlib.contextmanager
def torch_threads(threads: Threads) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (None: leave torch's setting), restoring it after.

    On a loaded machine two threads per process can be many times slower than one (the threads
    spin waiting for each other), so busy callers such as the test suite ask for one.
    """
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads() if callable(threads) else threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_into(directory: Path, world_root: Path, train: TrainConfig, progress: bool = True,
               threads: Threads = None) -> dict[str, Any]:
    """Train on ``world_root``'s train split, evaluate on its heldout split (if any) and write
    ``model.safetensors`` and ``model.json`` into ``directory``; return the metadata."""
    with torch_threads(threads):
        return _train_into(directory, world_root, train, progress, threads if callable(threads) else None)


def _train_into(directory: Path, world_root: Path, train: TrainConfig, progress: bool,
                threads_now: Callable[[], int] | None = None) -> dict[str, Any]:
    world = World.load(world_root)
    started = time.perf_counter()
    pixels, labels = load_split(world, "train", train.input_size)
    if len(labels) < 2:
        raise ValueError(f"world {world_root} has {len(labels)} training images; training needs at least 2")
    mean, std = channel_stats(pixels)
    if train.init is not None:  # a fine-tune sees its inputs as the network it starts from did
        base = json.loads((Path(train.init).parent / META_FILE).read_text())
        mean, std = base["mean"], base["std"]
    normalise = Preprocess(train.input_size, mean, std).normalise
    model, losses = _fit(normalise(pixels), labels, len(world.classes), train, progress, threads_now)
    train_seconds = time.perf_counter() - started
    heldout = None
    if "heldout" in world.config.splits:
        hx, hy = load_split(world, "heldout", train.input_size)
        heldout = accuracy(model, normalise(hx), hy)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    weights.chmod(0o644)  # safetensors writes it owner-only; the cache is shared like any build output
    meta = {
        "schema": MODEL_SCHEMA,
        "arch": ARCH,
        "num_classes": len(world.classes),
        "input_size": train.input_size,
        "mean": mean,
        "std": std,
        "class_names": world.class_names,
        "heldout_accuracy": heldout,
        "train_seconds": round(train_seconds, 2),
        "weights_sha256": sha256_file(weights),
        "steps": len(losses),
        "losses": [round(v, 5) for v in losses],
        "world_version": WORLD_VERSION,
        "world": world.config.to_json(),
        "train": asdict(train),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),  # at the end: a callable ``threads`` may have changed it
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def train_world_model(
    cache_dir: str | Path | None = None,
    world: WorldConfig | None = None,
    train: TrainConfig | None = None,
    *,
    progress: bool = True,
    threads: Threads = None,
) -> WorldModel:
    """Generate the world if missing and train a model on it, replacing any cached model of the
    same config. Use :func:`ensure_world_model` to reuse the cached one."""
    return ensure_world_model(cache_dir, world, train, progress=progress, threads=threads, force=True)


def ensure_world_model(
    cache_dir: str | Path | None = None,
    world: WorldConfig | None = None,
    train: TrainConfig | None = None,
    *,
    progress: bool = True,
    threads: Threads = None,
    force: bool = False,
) -> WorldModel:
    """The cached model of this world and training config, trained on first use (a few minutes on
    two CPU cores with the defaults); later calls return at once (``force``: retrain anyway).
    ``threads`` only applies when training (see :func:`torch_threads`); it is not part of the cache key."""
    world, train = world or WorldConfig(), train or TrainConfig()
    root = ensure_world(world, cache_dir, progress=progress)
    final = build_entry(model_dir(root, train), META_FILE, lambda tmp: train_into(tmp, root, train, progress, threads),
                        force=force)
    return WorldModel.load(final, root)
