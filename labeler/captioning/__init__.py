"""Captions for neuron groups from a vision-language model (optional per job).

Two back ends behind one interface (:class:`labeler.captioning.base.Captioner`): a local transformers
model (:mod:`.transformers_backend`) and any OpenAI-compatible chat endpoint (:mod:`.openai_backend`).
The prompts are the versioned templates of ``prompts/``; a group with lower groups in the circuit can
be captioned with the multi-level circuit prompt (the upper group and its strongest lower groups).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from neurflow.core.circuit import Group
from neurflow.labeler.captioning.base import (
    Captioner,
    CaptionerError,
    CaptionerUnavailable,
    CaptionRequest,
    parse_caption,
)
from neurflow.labeler.captioning.summarize import summarize_caption
from neurflow.labeler.config import CaptionerSpec
from neurflow.prompts import load_prompt

__all__ = [
    "Captioner", "CaptionerError", "CaptionerUnavailable", "CaptionRequest", "CaptionResult",
    "build_captioner", "caption_group", "group_request",
]


@dataclass
class CaptionResult:
    caption: str
    answer: str  # the model's full answer (feature lists, feature evolution, caption)
    prompt_id: str
    prompt_version: str
    label: str | None  # short label made from the caption, when summarising
    label_method: str | None
    confidence: float | None = None  # how sure the model was of its answer, where the back end says


def build_captioner(spec: CaptionerSpec, device: str = "cpu") -> Captioner:
    if spec.backend == "openai":
        from neurflow.labeler.captioning.openai_backend import OpenAICaptioner

        return OpenAICaptioner(
            spec.base_url or "", spec.model, api_key_env=spec.api_key_env, timeout_s=spec.timeout_s,
            max_retries=spec.max_retries, max_new_tokens=spec.max_new_tokens,
        )
    from neurflow.labeler.captioning.transformers_backend import TransformersCaptioner

    return TransformersCaptioner(spec.model, device=device, max_new_tokens=spec.max_new_tokens)


def _images(loader, group: Group, spec: CaptionerSpec) -> list[Image.Image]:
    size = spec.image_size
    return [loader.crop(ex).resize((size, size), Image.BICUBIC) for ex in group.exemplars[: spec.max_images]]


def group_request(loader, group: Group, lower: list[Group], spec: CaptionerSpec) -> CaptionRequest:
    """The request for one group: the circuit prompt when it has lower groups (and one is configured)."""
    if lower and spec.circuit_prompt:
        prompt = load_prompt(spec.circuit_prompt)
        sets = [_images(loader, group, spec)] + [_images(loader, g, spec) for g in lower]
        system, user = prompt.render(n_groups=len(sets))
    else:
        prompt = load_prompt(spec.prompt)
        sets = [_images(loader, group, spec)]
        system, user = prompt.render(n_images=len(sets[0]))
    if not sets[0]:
        raise CaptionerError(f"group {group.id} has no exemplar patches to caption")
    return CaptionRequest(system=system, user=user, image_sets=sets, prompt_id=prompt.id, prompt_version=prompt.version)


def caption_group(captioner: Captioner, loader, group: Group, lower: list[Group], spec: CaptionerSpec) -> CaptionResult:
    request = group_request(loader, group, lower, spec)
    scored = getattr(captioner, "generate_scored", None)  # back ends that can say how sure they are
    answer, confidence = scored(request) if scored is not None else (captioner.generate(request), None)
    caption = parse_caption(answer)
    label, method = (None, None)
    if spec.summarize:
        label, method = summarize_caption(caption, answer, captioner)
    return CaptionResult(caption, answer, request.prompt_id, request.prompt_version, label, method, confidence)
