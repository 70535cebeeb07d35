"""Captioning with a local transformers vision-language model, offline.

The model folder is what ``model.save_pretrained(d); processor.save_pretrained(d)`` writes. It is
loaded with ``AutoModelForImageTextToText`` + ``AutoProcessor`` and ``local_files_only=True``;
``trust_remote_code`` is never set, so only architectures that ship with transformers run (LLaVA,
Qwen2-VL, SmolVLM, Idefics3, PaliGemma, Gemma 3, Florence-2, BLIP, ...).

Models with a chat template get the prompt and every image (one "Group k" marker per set), like the
chat endpoint. Models without one (plain captioners such as BLIP) get a single mosaic of all sets and
no text: their captions are unconditional.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from neurflow.labeler.captioning.base import CaptionerError, CaptionRequest, mosaic


class TransformersCaptioner:
    def __init__(self, folder: str | Path, device: str = "cpu", max_new_tokens: int = 160, min_new_tokens: int = 1):
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ValueError(
                f"captioner model folder {folder} has no config.json; give a folder written by save_pretrained "
                "(model and processor) for backend 'transformers'"
            )
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True).to(device).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"cannot load a vision-language model from {folder}: {str(exc)[:400]}") from None
        self.device = torch.device(device)
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.name = f"transformers:{folder.name}"
        self._lock = threading.Lock()  # generate() is not re-entrant on one model instance

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.processor, "chat_template", None))

    def _inputs(self, request: CaptionRequest):
        if not self.has_chat_template:
            return self.processor(images=mosaic(request.image_sets), return_tensors="pt")
        content: list[dict] = []
        images = []
        for title, image_set in zip(request.titles(), request.image_sets):
            content.append({"type": "text", "text": title})
            for image in image_set:
                content.append({"type": "image"})
                images.append(image.convert("RGB"))
        # The system text goes first in the user turn: not every chat template accepts a system role.
        text = (request.system + "\n\n" if request.system else "") + request.user
        content.append({"type": "text", "text": text})
        prompt = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        return self.processor(images=images, text=prompt, return_tensors="pt")

    def generate(self, request: CaptionRequest) -> str:
        return self.generate_scored(request)[0]

    @torch.inference_mode()
    def generate_scored(self, request: CaptionRequest) -> tuple[str, float]:
        """The answer and how sure the model was of it: the smallest probability it gave one of the
        answer's tokens (greedy decoding), so one hesitant word makes the whole answer unsure."""
        try:
            inputs = self._inputs(request).to(self.device)
            with self._lock:
                out = self.model.generate(
                    **inputs, max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens, do_sample=False,
                    output_scores=True, return_dict_in_generate=True,
                )
                steps = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)[0]
        except (RuntimeError, ValueError, TypeError) as exc:
            raise CaptionerError(f"{self.name} could not caption: {type(exc).__name__}: {str(exc)[:300]}") from None
        sequence = out.sequences
        prompt_ids = inputs.get("input_ids")
        if (prompt_ids is not None and sequence.shape[1] > prompt_ids.shape[1]
                and torch.equal(sequence[0, : prompt_ids.shape[1]], prompt_ids[0])):
            sequence = sequence[:, prompt_ids.shape[1] :]  # decoder-only models echo the prompt
        text = self.processor.batch_decode(sequence, skip_special_tokens=True)[0].strip()
        if not text:
            raise CaptionerError(f"{self.name} returned an empty caption")
        generated = sequence[0, -len(steps):] if len(steps) else sequence[0, :0]
        special = set(getattr(self.processor, "tokenizer", self.processor).all_special_ids or [])
        words = [float(s) for s, t in zip(steps, generated.tolist()) if t not in special and torch.isfinite(s)]
        return text, round(float(np.exp(min(words))), 5) if words else 1.0

    def complete_text(self, system: str, user: str) -> str | None:
        return None  # captions of local models are summarised by the rule-based summariser
