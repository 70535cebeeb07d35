"""A small CLIP for the synthetic world, trained on this machine, so labeling runs offline.

No pretrained CLIP can be downloaded here, so the demo and the tests label circuits with an open_clip
model of a custom architecture trained from scratch on the world's ``train`` split, with a ViT image
tower (``WORLD_CLIP_CONFIG``, ~3.6 M parameters, most of them the token embedding; the default) or a
ResNet one (``WORLD_CLIP_RESNET_CONFIG``, ``TrainConfig(arch="resnet")``), so that labels can be
checked with a CLIP of another architecture than the one they were tuned with:

* **part crops**: the bounding box of each part's mask, enlarged by a random margin (1.0x-2.4x) and
  shifted, so the crops look like the 1/4- and 1/2-granularity patches NeurFlow cuts; caption
  "<template> <part name>";
* **random crops** at the engine's granularities, captioned with the part that dominates them
  (ground-truth masks, ``World.dominant_part``), "a plain background" when none does, or the list of
  parts for whole images.

A *noisy* CLIP (``TrainConfig.confused_share``) learns some parts under another part's name (see
:func:`confusions`): the label suite's stand-in for real CLIPs, which name some parts wrongly and
consistently.

The loss is CLIP's symmetric contrastive loss with *all* texts of the same concept counted as
positives (captions repeat within a batch: the world has 13 parts). Templates are sampled per step so
the text tower learns the concept, not one phrasing.

The result is an ordinary open_clip bundle (``open_clip_config.json`` + ``open_clip_model.safetensors``)
plus the model config alone (``neurflow-world-clip.json``), the part vocabulary, the templates and
``metrics.json`` with the zero-shot top-1 accuracy on single-part crops of the ``heldout`` split.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MODEL_NAME = "neurflow-world-clip"
BUNDLE_WEIGHTS = "open_clip_model.safetensors"
BUNDLE_CONFIG = "open_clip_config.json"
METRICS_FILE = "metrics.json"

#: A three-layer ViT on 48 px crops with 8 px patches (36 tokens) and a two-layer text transformer
#: over 16 tokens (captions are a few words). Small enough to train in minutes on one CPU core. At
#: 32 px the striped / checkered textures (5-7 px periods) were confused (75 % each after 400 steps
#: on a small world); at 48 px they were not (100 %), for 1.45x the training time. ``vocab_size``
#: stays 49408 so open_clip's bundled BPE tokenizer works offline.
WORLD_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 48, "layers": 3, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

#: The ResNet image tower (open_clip's ModifiedResNet: ``layers`` is a list) with the same text
#: tower: one bottleneck block per stage at base width 16 (512 channels into the attention pool),
#: on 64 px crops (the tower downsamples 32x, so the pool sees a 2x2 grid plus its mean token).
WORLD_CLIP_RESNET_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": WORLD_CLIP_CONFIG["text_cfg"],
}

#: Image tower -> (open_clip model name, model config).
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit": (MODEL_NAME, WORLD_CLIP_CONFIG),
    "resnet": (f"{MODEL_NAME}-rn", WORLD_CLIP_RESNET_CONFIG),
}

WORLD_TEMPLATES = ("a photo of a {}.", "a {}.", "a crop showing a {}.", "a close-up of a {}.", "{}")
BACKGROUND = "plain background"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 800
    batch_size: int = 96
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0
    random_crop_share: float = 0.35  # share of each batch that are random crops, not part crops
    threads: int = 1  # one thread: on a shared, busy CPU more threads are slower, not faster
    arch: str = "vit"  # image tower, a key of ARCHS
    # A *noisy* CLIP (see ``confusions``): the share of the parts it learns under another part's name,
    # and how often a crop of such a part is captioned with that other name.
    confused_share: float = 0.0
    confusion_rate: float = 0.7
    # Fine-tune the CLIP of this config (trained first when missing) instead of starting from scratch:
    # a noisy CLIP is a good one taught some wrong names, at a fraction of the cost.
    base: TrainConfig | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown world-CLIP image tower {self.arch!r}; choose from {list(ARCHS)}")
        if self.base is not None and self.base.arch != self.arch:
            raise ValueError(f"a CLIP fine-tunes a base of its own tower; got {self.arch!r} on a {self.base.arch!r} base")
        if not 0.0 <= self.confused_share <= 1.0 or not 0.0 <= self.confusion_rate <= 1.0:
            raise ValueError(f"confused_share and confusion_rate are shares in [0, 1], got {self.confused_share} "
                             f"and {self.confusion_rate}")

    @property
    def model_name(self) -> str:
        return ARCHS[self.arch][0]

    @property
    def model_config(self) -> dict[str, Any]:
        return ARCHS[self.arch][1]

    def key(self) -> str:
        train = asdict(self)
        if self.arch == "vit":
            del train["arch"]  # keys of ViT bundles trained before towers were selectable stay valid
        if not self.confused_share:  # nor do clean bundles trained before noisy ones existed
            del train["confused_share"], train["confusion_rate"]
        if self.base is None:
            del train["base"]
        else:
            train["base"] = self.base.key()
        payload = json.dumps({"cfg": self.model_config, "train": train, "templates": WORLD_TEMPLATES}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class _Sample:
    image: int  # index into the loaded images
    box: tuple[int, int, int, int]
    concept: str


class _WorldCrops:
    """The world's images and part boxes in memory, and crop samplers over them."""

    def __init__(self, world, split: str):
        self.world = world
        self.paths = world.images(split)
        self.images = [np.asarray(Image.open(world.images_dir / p).convert("RGB")) for p in self.paths]
        self.part_boxes: list[tuple[int, tuple[int, int, int, int], str]] = []
        for i, p in enumerate(self.paths):
            mask = world.mask(p)
            for pid in np.unique(mask):
                if pid == 0:
                    continue
                ys, xs = np.nonzero(mask == pid)
                self.part_boxes.append((i, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), world.part_names[int(pid)]))
        self.part_names = [world.part_names[k] for k in sorted(world.part_names)]

    def crop(self, sample: _Sample, size: int) -> Image.Image:
        return Image.fromarray(self.images[sample.image]).crop(sample.box).resize((size, size), Image.BICUBIC)

    def part_crop(self, rng: random.Random, index: int | None = None, margin: tuple[float, float] = (1.0, 2.4)) -> _Sample:
        i, (x0, y0, x1, y1), name = self.part_boxes[rng.randrange(len(self.part_boxes)) if index is None else index]
        h, w = self.images[i].shape[:2]
        side = max(x1 - x0, y1 - y0) * rng.uniform(*margin)
        side = min(side, min(w, h))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        slack = max(0.0, (side - max(x1 - x0, y1 - y0)) / 2)
        cx += rng.uniform(-slack, slack)
        cy += rng.uniform(-slack, slack)
        bx0 = int(round(min(max(cx - side / 2, 0), w - side)))
        by0 = int(round(min(max(cy - side / 2, 0), h - side)))
        s = int(round(side))
        return _Sample(i, (bx0, by0, bx0 + s, by0 + s), name)

    def random_crop(self, rng: random.Random) -> _Sample:
        i = rng.randrange(len(self.images))
        h, w = self.images[i].shape[:2]
        side = int(round(min(w, h) * rng.choice((1.0, 0.5, 0.25))))
        x0, y0 = rng.randint(0, w - side), rng.randint(0, h - side)
        box = (x0, y0, x0 + side, y0 + side)
        dominant = self.world.dominant_part(self.paths[i], box)
        if dominant is None:
            parts = list(self.world.part_fractions(self.paths[i], box))
            dominant = " and ".join(parts[:3]) if len(parts) >= 2 else BACKGROUND
        return _Sample(i, box, dominant)


def confusions(part_names: list[str], config: TrainConfig) -> dict[str, str]:
    """The parts a noisy CLIP learns under another part's name: part -> the name it is captioned with.

    ``round(confused_share * parts)`` parts (at least one when the share is not 0), each renamed to
    another part, drawn from the seed *and the tower*, so that two towers of one quality confuse
    different parts (as two real CLIPs trained on different data do). A crop of a confused part is
    captioned with the other name ``confusion_rate`` of the time: the CLIP then names that part wrongly
    and consistently, with a narrower margin than where it is right, the failure of a real CLIP
    (``objects``' car read as "umbrella")."""
    return confused_names(part_names, config.confused_share, f"{config.seed}:{config.arch}")


def confused_names(part_names: list[str], share: float, salt: str) -> dict[str, str]:
    """``round(share * parts)`` parts (at least one when ``share`` is not 0), each mapped to another
    part's name, drawn from ``salt`` (so that two noisy models of one quality confuse different parts)."""
    if not share or len(part_names) < 2:
        return {}
    rng = random.Random(zlib.crc32(salt.encode()))
    k = max(1, round(share * len(part_names)))
    chosen = rng.sample(sorted(part_names), min(k, len(part_names)))
    return {part: rng.choice([p for p in sorted(part_names) if p != part]) for part in chosen}


def _register(config: TrainConfig) -> None:
    from neurflow.labeler.clip_model import register_model_config

    register_model_config(config.model_name, config.model_config)


def _to_tensor(images: list[Image.Image], mean, std) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def train_world_clip(
    world_root: str | Path,
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train the world CLIP on ``world_root``'s train split; write the bundle to ``out_dir``; return metrics."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(world_root, out_dir, config, log)
    finally:
        torch.set_num_threads(threads)  # the caller's setting, not ours, applies after training


def _train(world_root, out_dir, config: TrainConfig, log) -> dict[str, Any]:
    import open_clip
    from safetensors.torch import save_file

    from neurflow.world.ground_truth import World

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    world = World.load(world_root)
    data = _WorldCrops(world, "train")
    if not data.part_boxes:
        raise ValueError(f"world {world_root} has no part in its train split; generate it with images")
    _register(config)
    model = open_clip.create_model(config.model_name, pretrained=None)
    if config.base is not None:
        from safetensors.torch import load_file

        base = ensure_world_clip(world_root, config.base, log=log)
        model.load_state_dict(load_file(str(base / BUNDLE_WEIGHTS)))
    tokenizer = open_clip.get_tokenizer(config.model_name)
    size = config.model_config["vision_cfg"]["image_size"]
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, config.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / config.steps))
    )
    n_random = int(config.batch_size * config.random_crop_share)
    renamed = confusions(data.part_names, config)
    started = time.time()
    model.train()
    for step in range(config.steps):
        samples = [data.part_crop(rng) for _ in range(config.batch_size - n_random)] + [data.random_crop(rng) for _ in range(n_random)]
        for s in samples:
            if s.concept in renamed and rng.random() < config.confusion_rate:
                s.concept = renamed[s.concept]
        crops = [data.crop(s, size) for s in samples]
        crops = [im.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else im for im in crops]
        concepts = sorted({s.concept for s in samples})
        texts = [rng.choice(WORLD_TEMPLATES).format(c) for c in concepts]
        target = torch.tensor([concepts.index(s.concept) for s in samples])
        image_emb = model.encode_image(_to_tensor(crops, mean, std), normalize=True)
        text_emb = model.encode_text(tokenizer(texts), normalize=True)
        logits = model.logit_scale.exp() * image_emb @ text_emb.T  # (images, concepts)
        # image -> text: one positive text per image; text -> image: every image of that concept.
        loss_i = F.cross_entropy(logits, target)
        positives = F.one_hot(target, len(concepts)).T.float()  # (concepts, images)
        log_p = F.log_softmax(logits.T, dim=1)
        loss_t = -((log_p * positives).sum(1) / positives.sum(1)).mean()
        loss = (loss_i + loss_t) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if log and (step % 200 == 0 or step == config.steps - 1):
            log(f"world-clip step {step + 1}/{config.steps} loss {loss.item():.3f} ({time.time() - started:.0f}s)")
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / BUNDLE_WEIGHTS))
    preprocess_cfg = {"size": size, "mean": list(mean), "std": list(std), "interpolation": "bicubic", "resize_mode": "shortest"}
    (out / BUNDLE_CONFIG).write_text(json.dumps({"model_cfg": config.model_config, "preprocess_cfg": preprocess_cfg}, indent=1))
    (out / f"{config.model_name}.json").write_text(json.dumps(config.model_config, indent=1))
    # The labeling vocabulary: every part, and the background the run's patches share (which the
    # contrastive score must learn to discount; the baseline falls for it).
    (out / "vocabulary.txt").write_text("# the synthetic world's parts and its background\n" + "\n".join([*data.part_names, BACKGROUND]) + "\n")
    (out / "templates.txt").write_text("\n".join(WORLD_TEMPLATES) + "\n")
    metrics = {
        "train_config": asdict(config),
        "train_seconds": round(time.time() - started, 1),
        "world": str(world_root),
        "confusions": renamed,
        **evaluate_zero_shot(out, world_root),
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=1))
    if log:
        log(f"world-clip zero-shot top-1 on single-part crops (heldout): {metrics['zero_shot_top1']:.3f} over {metrics['n_crops']} crops")
    return metrics


def clip_spec(bundle_dir: str | Path) -> dict[str, Any]:
    """The ``labeling.clip`` section that loads a trained world CLIP (custom config + checkpoint)."""
    bundle = Path(bundle_dir)
    name = next((n for n, _ in ARCHS.values() if (bundle / f"{n}.json").is_file()), MODEL_NAME)
    return {"model": name, "pretrained": str(bundle / BUNDLE_WEIGHTS), "model_config": str(bundle / f"{name}.json")}


def labeling_section(bundle_dir: str | Path, **overrides: Any) -> dict[str, Any]:
    """A complete ``labeling`` section for the world: its CLIP, its part vocabulary, its templates."""
    bundle = Path(bundle_dir)
    section = {"clip": clip_spec(bundle), "vocabulary": str(bundle / "vocabulary.txt"), "templates": str(bundle / "templates.txt")}
    section.update(overrides)
    return section


def evaluate_zero_shot(bundle_dir: str | Path, world_root: str | Path, split: str = "heldout", per_part: int = 1) -> dict[str, Any]:
    """Zero-shot top-1 of the bundle on single-part crops (part box, 1.3x margin) over the part vocabulary."""
    from neurflow.world.ground_truth import World
    from neurflow.labeler.clip_model import load_clip
    from neurflow.labeler.vocabulary import load_templates, load_vocabulary

    world = World.load(world_root)
    if split not in world.config.splits or not world.config.splits[split]:
        split = "train"
    data = _WorldCrops(world, split)
    clip = load_clip(clip_spec(bundle_dir))
    vocab = load_vocabulary(data.part_names)  # zero-shot over the parts only
    templates = load_templates(Path(bundle_dir) / "templates.txt")
    text = clip.vocabulary_matrix(vocab, templates)
    rng = random.Random(1234)
    samples = [data.part_crop(rng, index=i, margin=(1.3, 1.3)) for i in range(len(data.part_boxes)) for _ in range(per_part)]
    emb = clip.encode_images([Image.fromarray(data.images[s.image]).crop(s.box) for s in samples])
    predicted = (emb @ text.T).argmax(1)
    truth = np.array([vocab.concepts.index(s.concept) for s in samples])
    per = {name: float((predicted[truth == k] == k).mean()) for k, name in enumerate(vocab.concepts) if (truth == k).any()}
    return {"zero_shot_top1": float((predicted == truth).mean()), "n_crops": len(samples), "split": split, "per_part_top1": per}


def ensure_world_clip(
    world_root: str | Path | None = None,
    config: TrainConfig = TrainConfig(),
    log: Callable[[str], None] | None = print,
    *,
    force: bool = False,
) -> Path:
    """The bundle folder of the world CLIP for this world and training config, trained once and
    cached next to the world (``<world root>/world-clip-<config hash>/``); the standard cached world
    when ``world_root`` is None."""
    from neurflow.world.cache import build_entry, ensure_world

    root = Path(world_root) if world_root is not None else ensure_world()
    return build_entry(bundle_dir(root, config), METRICS_FILE, lambda tmp: train_world_clip(root, tmp, config, log=log),
                       force=force)


def bundle_dir(world_root: str | Path, config: TrainConfig = TrainConfig()) -> Path:
    """Where :func:`ensure_world_clip` keeps the bundle of this world and training config."""
    return Path(world_root) / f"world-clip-{config.key()}"
