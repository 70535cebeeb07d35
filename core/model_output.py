"""The class scores among a model's outputs.

Most classifiers return a (batch, classes) tensor. Some return a dict (``{"logits": ..., "aux": ...}``)
or a tuple (Inception's ``(logits, aux_logits)``, models that also return features). The engine
parameter ``output`` names which entry holds the class scores: a key for a dict, an index for a
tuple or list. It is recorded in the circuit, so the tools that run the model again (debugging,
faithfulness checks) pick the same entry.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

OutputSelector = str | int | None


def _describe(out: object) -> str:
    if isinstance(out, Mapping):
        return f"a dict with keys {list(out)}"
    if isinstance(out, (tuple, list)):
        kinds = ", ".join(f"{k}: {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}"
                          for k, v in enumerate(out))
        return f"a {type(out).__name__} of {len(out)} ({kinds})"
    return f"a {type(out).__name__}"


def class_scores(out: object, output: OutputSelector = None) -> torch.Tensor:
    """The class-score tensor of a model output, picked by ``output`` (see the module docstring)."""
    if output is None:
        if isinstance(out, torch.Tensor):
            return out
        hint = "a key" if isinstance(out, Mapping) else "an index"
        raise ValueError(f"the model returns {_describe(out)}, not one tensor; set the engine parameter output to "
                         f"{hint} of the class scores")
    if isinstance(out, Mapping):
        if output not in out:
            raise ValueError(f"output {output!r} is not among the model's outputs: it returns {_describe(out)}")
        picked = out[output]
    elif isinstance(out, (tuple, list)):
        if not isinstance(output, int) or not -len(out) <= output < len(out):
            raise ValueError(f"output {output!r} is not an index of the model's outputs: it returns {_describe(out)}")
        picked = out[output]
    elif isinstance(out, torch.Tensor):
        raise ValueError(f"output {output!r} is set but the model returns one tensor; leave output unset (null)")
    else:
        raise ValueError(f"the model returns {_describe(out)}; expected a tensor, a dict or a tuple of tensors")
    if not isinstance(picked, torch.Tensor):
        raise ValueError(f"output {output!r} of the model is a {type(picked).__name__}, not a tensor of class scores")
    return picked
