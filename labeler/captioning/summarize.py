"""Short labels from captions, so a caption can be compared with (and evaluated like) CLIP labels.

Two ways, best first:

* ask the captioning model itself with the ``label_summary`` prompt (chat endpoints), keeping the
  answer only when it is a short phrase;
* a rule-based summariser: the first feature of the answer's "Features:" line, else the caption's
  leading noun phrase, with filler ("the images show", articles) removed and at most four words.
"""

from __future__ import annotations

import re

from neurflow.labeler.captioning.base import CaptionerError, parse_features

MAX_WORDS = 4
_FILLER = re.compile(
    r"^(?:(?:the|these|those|all|most|both|each|every)\s+)*"
    r"(?:(?:images?|patches|patch|pictures?|crops?|photos?|groups?|of|them|in|common|set)\s+)*"
    r"(?:(?:all|mostly|each|clearly)\s+)*"
    r"(?:shows?|shares?|share|features?|depicts?|contains?|displays?|has|have|are|is|consist of|consists of|include|includes)\s+",
    re.IGNORECASE,
)
_ARTICLE = re.compile(r"^(?:(?:a|an|the|some|several|many|various|multiple|one|two|three)\s+)+", re.IGNORECASE)
_STOP = re.compile(r"[,.;:!?()\"]|\s(?:with|on|in|at|that|which|against|from|over|under|near|inside|across|set|placed|arranged|located|surrounded)\s", re.IGNORECASE)


def rule_based_label(caption: str, answer: str | None = None) -> str:
    features = parse_features(answer) if answer else []
    text = features[0] if features else caption
    text = " ".join(text.split())
    text = _FILLER.sub("", text)
    text = _ARTICLE.sub("", text)
    text = _STOP.split(" " + text + " ", maxsplit=1)[0]
    words = [w for w in text.strip().split() if w]
    label = " ".join(words[:MAX_WORDS]).lower().strip(" -'")
    if not label:
        words = [w.strip(",.;:") for w in caption.split()][:MAX_WORDS]
        label = " ".join(words).lower()
    return label


def summarize_caption(caption: str, answer: str | None = None, captioner=None) -> tuple[str, str]:
    """(short label, how it was made: "model" or "rules")."""
    if captioner is not None:
        from neurflow.prompts import load_prompt

        prompt = load_prompt("label_summary")
        system, user = prompt.render(caption=caption.replace('"', "'"))
        try:
            reply = captioner.complete_text(system, user)
        except CaptionerError:
            reply = None
        if reply:
            label = " ".join(reply.strip().strip("\"'.").split()).lower()
            if 0 < len(label.split()) <= MAX_WORDS + 2 and "\n" not in reply.strip():
                return label, "model"
    return rule_based_label(caption, answer), "rules"
