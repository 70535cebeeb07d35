"""A tiny image captioner for the synthetic worlds, trained on this machine, so the labeler's
captioning path (backend ``transformers``) can be measured, not only wired.

No pretrained vision-language model can be downloaded here, and a random-weight one captions
gibberish, so the captions of such a model say nothing about the path. This trains a
transformers ``VisionEncoderDecoderModel`` from scratch (a 2-layer ViT encoder, a 2-layer GPT-2
decoder with cross-attention, a word-level tokenizer over the world's part names; ~0.2 M
parameters) on the *train* split of one or more worlds: each sample is the labeler's own mosaic
(:func:`neurflow.labeler.captioning.base.mosaic`, the single image a plain captioner receives) of
1-5 crops that one part dominates, captioned with that part's name ("red circle", or "plain
background"). The crops are the world CLIP's (part boxes with a random margin, and random crops
at the engine's granularities labeled with ``World.dominant_part``, the function that defines a
group's truth).

A *noisy* captioner (``CaptionerTrainConfig.confused_share``) learns some parts under another
part's name, as the noisy world CLIPs do; ``metrics.json`` records which (``renamed``).

It is a captioner of the worlds it was trained on: its words are their part names. Trained on the
dev worlds (whose parts ``uneven`` shares), it cannot name a part of ``shapes2`` or ``objects``;
the bench reports that as it is.

The folder is what ``save_pretrained`` writes (``model.safetensors``, configs, a ``TrOCRProcessor``:
image processor + tokenizer), loaded by the labeler's ``TransformersCaptioner`` with
``AutoModelForImageTextToText`` and ``local_files_only=True``; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

#: The labeler's default and the mosaic's width: a plain captioner sees one row of this many tiles.
MAX_IMAGES = 5
#: How a captioner words a part: as the vocabulary does, or with the words reversed.
WORDINGS = {"vocabulary": lambda name: name, "reversed": lambda name: " ".join(reversed(name.split()))}


@dataclass(frozen=True)
class CaptionerTrainConfig:
    steps: int = 500
    batch: int = 32
    pool: int = 2000  # mosaics made once and sampled from (making them dominates a step's cost)
    tile: int = 24  # input pixels per mosaic tile (height); the mosaic is MAX_IMAGES tiles wide
    patch: int = 8
    width: int = 64
    layers: int = 2
    lr: float = 3e-3
    image_size: int = 64  # side the labeler resizes each exemplar to (CaptionerSettings.image_size)
    seed: int = 0
    threads: int = 1
    # A *noisy* captioner: this share of each world's parts is captioned with another part's name
    # ``confusion_rate`` of the time (``neurflow.world.clip.confused_names``, drawn apart from the
    # CLIPs' confusions), so that it names them wrongly and consistently, as the noisy CLIPs do.
    confused_share: float = 0.0
    confusion_rate: float = 0.7
    # "reversed": captions say a part's words in reverse order ("circle red" for "red circle"), so that
    # they are not the vocabulary's text and the labeler must read them by their words.
    wording: str = "vocabulary"

    def __post_init__(self) -> None:
        if not 0.0 <= self.confused_share <= 1.0 or not 0.0 <= self.confusion_rate <= 1.0:
            raise ValueError(f"confused_share and confusion_rate are shares in [0, 1], got {self.confused_share} "
                             f"and {self.confusion_rate}")
        if self.wording not in WORDINGS:
            raise ValueError(f"unknown captioner wording {self.wording!r}; choose from {list(WORDINGS)}")

    def key(self, world_roots: list[Path]) -> str:
        cfg = asdict(self)
        if not self.confused_share:  # clean captioners keep the keys they had before noisy ones existed
            del cfg["confused_share"], cfg["confusion_rate"]
        if self.wording == "vocabulary":
            del cfg["wording"]
        payload = json.dumps({"cfg": cfg, "worlds": sorted(Path(r).name for r in world_roots)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _tokenizer(words: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(words)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def _model(config: CaptionerTrainConfig, tok):
    from transformers import GPT2Config, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    encoder = ViTConfig(image_size=[config.tile, config.tile * MAX_IMAGES], patch_size=config.patch, hidden_size=config.width,
                        num_hidden_layers=config.layers, num_attention_heads=4, intermediate_size=2 * config.width)
    decoder = GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=config.width, n_layer=config.layers, n_head=4,
                         add_cross_attention=True, is_decoder=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    cfg.decoder_start_token_id = tok.bos_token_id
    cfg.pad_token_id = tok.pad_token_id
    cfg.eos_token_id = tok.eos_token_id
    model = VisionEncoderDecoderModel(config=cfg)
    model.generation_config.decoder_start_token_id = tok.bos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.max_new_tokens = 6  # a part name is 1-2 words
    return model


class _Crops:
    """Crops of each part (and of plain background) over the train splits of the given worlds."""

    def __init__(self, world_roots: list[Path], rng: random.Random, per_world: int = 3000, confused_share: float = 0.0,
                 seed: int = 0):
        from neurflow.world.clip import BACKGROUND, _WorldCrops, confused_names
        from neurflow.world.ground_truth import World

        self.by_name: dict[str, list[tuple[_WorldCrops, Any]]] = {}
        self.renamed: dict[str, str] = {}  # part -> the name a noisy captioner learns it under
        for root in world_roots:
            data = _WorldCrops(World.load(root), "train")
            self.renamed |= confused_names(data.part_names, confused_share, f"captioner:{seed}:{root.name}")
            for index in range(len(data.part_boxes)):
                sample = data.part_crop(rng, index, margin=(1.0, 2.4))
                self.by_name.setdefault(sample.concept, []).append((data, sample))
            for _ in range(per_world):
                sample = data.random_crop(rng)
                # Crops that no single part dominates have no truth a one-part caption could match.
                if sample.concept == BACKGROUND or sample.concept in data.part_names:
                    self.by_name.setdefault(sample.concept, []).append((data, sample))
        self.names = sorted(self.by_name)

    def images(self, name: str, k: int, size: int, rng: random.Random) -> list[Image.Image]:
        return [data.crop(sample, size) for data, sample in rng.sample(self.by_name[name], min(k, len(self.by_name[name])))]


def train_world_captioner(world_roots: list[str | Path], out_dir: str | Path, config: CaptionerTrainConfig = CaptionerTrainConfig(),
                          log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train on the worlds' train splits, write the model folder to ``out_dir``, return its metrics."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train([Path(r) for r in world_roots], Path(out_dir), config, log or (lambda _: None))
    finally:
        torch.set_num_threads(threads)  # the caller's setting applies after training


def _train(world_roots: list[Path], out: Path, config: CaptionerTrainConfig, log) -> dict[str, Any]:
    from transformers import TrOCRProcessor, ViTImageProcessor

    from neurflow.labeler.captioning.base import mosaic

    started = time.time()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    crops = _Crops(world_roots, rng, confused_share=config.confused_share, seed=config.seed)
    tok = _tokenizer([w for name in crops.names for w in name.split()])
    processor = TrOCRProcessor(
        image_processor=ViTImageProcessor(size={"height": config.tile, "width": config.tile * MAX_IMAGES},
                                          image_mean=[0.5] * 3, image_std=[0.5] * 3),
        tokenizer=tok,
    )
    model = _model(config, tok)

    def batch_of(n: int):
        names = [rng.choice(crops.names) for _ in range(n)]
        # Mostly full mosaics (groups have five exemplars), some shorter ones (smaller groups).
        ks = [MAX_IMAGES if rng.random() < 0.7 else rng.randint(1, MAX_IMAGES - 1) for _ in range(n)]
        images = [mosaic([crops.images(name, k, config.image_size, rng)]) for name, k in zip(names, ks)]
        pixels = processor(images=images, return_tensors="pt").pixel_values
        said = [crops.renamed[n] if n in crops.renamed and rng.random() < config.confusion_rate else n for n in names]
        said = [WORDINGS[config.wording](n) for n in said]
        ids = tok(said, padding="max_length", max_length=6, return_tensors="pt").input_ids
        ids = torch.cat([ids, torch.full((n, 1), tok.pad_token_id)], 1)
        # </s> after the name, then padding ignored by the loss.
        lengths = (ids != tok.pad_token_id).sum(1)
        ids[torch.arange(n), lengths] = tok.eos_token_id
        labels = ids.masked_fill(ids == tok.pad_token_id, -100)
        return pixels, labels, names

    pool_pixels, pool_labels, _ = batch_of(config.pool)
    log(f"captioner: {config.pool} training mosaics of {len(crops.names)} concepts in {time.time() - started:.0f} s")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps, pct_start=0.1)
    model.train()
    for step in range(config.steps):
        pick = torch.randint(0, config.pool, (config.batch,))
        loss = model(pixel_values=pool_pixels[pick], labels=pool_labels[pick]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % max(1, config.steps // 5) == 0:
            log(f"captioner: step {step + 1}/{config.steps} loss {loss.item():.3f} ({time.time() - started:.0f} s)")
    model.eval()
    # Fresh mosaics, never trained on, from the same train splits: a check that training converged,
    # not a measure of labels (the bench measures those on engine groups of held-out images).
    pixels, _, names = batch_of(200)
    with torch.inference_mode():
        generated = model.generate(pixel_values=pixels, max_new_tokens=6, do_sample=False)
    said = [" ".join(t.split()) for t in tok.batch_decode(generated, skip_special_tokens=True)]
    right = [s == WORDINGS[config.wording](n) for s, n in zip(said, names)]
    metrics = {"fresh_mosaic_top1": float(np.mean(right)), "concepts": crops.names,
               "worlds": [r.name for r in world_roots], "renamed": crops.renamed,
               "train_seconds": round(time.time() - started, 1),
               "parameters": sum(p.numel() for p in model.parameters()), "config": asdict(config)}
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # safetensors
    processor.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log(f"captioner: fresh-mosaic top-1 {metrics['fresh_mosaic_top1']:.3f}, {metrics['train_seconds']} s")
    return metrics


def ensure_world_captioner(world_roots: list[str | Path], config: CaptionerTrainConfig = CaptionerTrainConfig(),
                           cache_dir: str | Path | None = None, log: Callable[[str], None] | None = print) -> Path:
    """The captioner trained on ``world_roots`` (cached under the cache root by config and worlds)."""
    from neurflow.world.cache import build_entry, cache_root

    roots = [Path(r) for r in world_roots]
    final = cache_root(cache_dir) / f"world-captioner-{config.key(roots)}"
    return build_entry(final, "metrics.json", lambda tmp: train_world_captioner(roots, tmp, config, log))
