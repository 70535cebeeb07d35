"""Reading and rewiring named layers of any ``nn.Module``.

Layers are addressed by module name (``model.named_modules()``). Three things are needed:

* **readouts**: the scalar activation of every neuron (= channel) of several layers in one forward
  pass, via forward hooks: spatial mean for (B, C, H, W), mean over tokens or the CLS token for
  (B, T, C) ViT tokens, identity for (B, C);
* **full maps** of one layer for a batch of inputs (hook + early stop, nothing above is computed);
* a **block**: the function from one layer's output to a higher layer's output, the space in which
  Integrated Gradients is computed. It is cut out of the model's FX graph (the named layers are kept
  as leaf calls), so it is exact for any architecture FX can trace, including residual models and
  ViTs. When the graph cannot be traced, or the upper layer also reads the input through a path that
  bypasses the lower layer, the block falls back to re-running the model with the lower output
  replaced by a hook (exact as well, but it needs the input image and costs a full forward).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.fx
from torch import nn

TokenReduce = Literal["mean", "cls"]


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the wanted layer has been computed."""


def readout(out: torch.Tensor, token_reduce: TokenReduce = "mean") -> torch.Tensor:
    """Neuron activations (B, C) of a layer output."""
    if out.dim() == 4:
        return out.mean(dim=(2, 3))
    if out.dim() == 3:
        return out[:, 0] if token_reduce == "cls" else out.mean(dim=1)
    if out.dim() == 2:
        return out
    raise ValueError(f"layer output of shape {tuple(out.shape)} is not supported; expected (B,C,H,W), (B,T,C) or (B,C)")


def channel_mean(attr: torch.Tensor) -> torch.Tensor:
    """Per-channel mean of an attribution map over its positions: (B, C)."""
    if attr.dim() == 4:
        return attr.mean(dim=(2, 3))
    if attr.dim() == 3:
        return attr.mean(dim=1)
    return attr


def zero_channels(out: torch.Tensor, channels: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """A copy of ``out`` with whole channels set to zero (all positions)."""
    out = out.clone()
    idx = torch.as_tensor(channels, dtype=torch.long, device=out.device)
    if out.dim() == 3:
        out[:, :, idx] = 0
    else:
        out[:, idx] = 0
    return out


def num_channels(out_shape: Sequence[int]) -> int:
    """Channel count from one sample's output shape ([C,H,W], [T,C] or [C])."""
    return int(out_shape[-1] if len(out_shape) == 2 else out_shape[0])


class _LeafTracer(torch.fx.Tracer):
    def __init__(self, leaves: set[str]):
        super().__init__(autowrap_functions=(torch._assert,))
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or super().is_leaf_module(m, qualname)


class Block(nn.Module):
    """upper_output = block(lower_output[, input]); ``needs_input`` tells whether the input is used."""

    def __init__(self, fn: Callable, needs_input: bool, kind: str):
        super().__init__()
        self.fn = fn
        self.needs_input = needs_input
        self.kind = kind  # "fx" or "hook"

    def forward(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(z, x)


class LayerAccess:
    """Hooks and blocks for a fixed list of named layers of ``model``."""

    def __init__(self, model: nn.Module, layers: Sequence[str], token_reduce: TokenReduce = "mean"):
        modules = dict(model.named_modules())
        unknown = [name for name in layers if name not in modules or not name]
        if unknown:
            valid = [n for n in modules if n]
            raise ValueError(f"unknown layer name(s) {unknown}; valid names are: {', '.join(valid)}")
        for a in layers:
            for b in layers:
                if a != b and b.startswith(a + "."):
                    raise ValueError(f"layer {b!r} is inside layer {a!r}; pick layers that do not contain each other")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layer names must be distinct, got {list(layers)}")
        self.model = model
        self.layers = list(layers)
        self.modules = {name: modules[name] for name in layers}
        self.token_reduce = token_reduce
        self._graph: torch.fx.GraphModule | None | bool = None  # False once tracing failed
        self._blocks: dict[tuple[str, str], Block] = {}

    # -- forward passes with hooks -----------------------------------------------------------
    def readouts(self, x: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Neuron activations (B, C) of ``names`` (default: all layers) in one forward pass."""
        names = list(names or self.layers)
        found: dict[str, torch.Tensor] = {}
        handles = []
        for name in names:

            def hook(_m, _i, out, name=name):
                found[name] = readout(_first_tensor(out, name), self.token_reduce)
                if len(found) == len(names):
                    raise _StopForward

            handles.append(self.modules[name].register_forward_hook(hook))
        try:
            self.model(x)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [n for n in names if n not in found]
        if missing:
            raise ValueError(f"layer(s) {missing} were not called during the forward pass; they cannot be read")
        return found

    def full_output(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """The complete output tensor of layer ``name`` (the forward stops right after it)."""
        found: dict[str, torch.Tensor] = {}

        def hook(_m, _i, out):
            found["out"] = _first_tensor(out, name)
            raise _StopForward

        handle = self.modules[name].register_forward_hook(hook)
        try:
            self.model(x)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if "out" not in found:
            raise ValueError(f"layer {name!r} was not called during the forward pass")
        return found["out"]

    def call_order(self, x: torch.Tensor) -> tuple[list[str], dict[str, tuple[int, ...]]]:
        """The order in which the layers run on ``x`` and each one's output shape (one sample)."""
        order: list[str] = []
        shapes: dict[str, tuple[int, ...]] = {}
        handles = []
        for name in self.layers:

            def hook(_m, _i, out, name=name):
                if name not in shapes:
                    order.append(name)
                    shapes[name] = tuple(_first_tensor(out, name).shape[1:])

            handles.append(self.modules[name].register_forward_hook(hook))
        try:
            self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        return order, shapes

    # -- blocks ------------------------------------------------------------------------------
    def block(self, lower: str, upper: str) -> Block:
        key = (lower, upper)
        if key not in self._blocks:
            self._blocks[key] = self._fx_block(lower, upper) or self._hook_block(lower, upper)
        return self._blocks[key]

    def _traced(self) -> torch.fx.GraphModule | None:
        if self._graph is None:
            try:
                tracer = _LeafTracer(set(self.layers))
                graph = tracer.trace(self.model)
                self._graph = torch.fx.GraphModule(tracer.root, graph)
            except Exception:  # noqa: BLE001 - any tracing failure means "use hooks instead"
                self._graph = False
        return self._graph or None

    def _fx_block(self, lower: str, upper: str) -> Block | None:
        traced = self._traced()
        if traced is None:
            return None
        calls = {}
        for node in traced.graph.nodes:
            if node.op == "call_module" and node.target in (lower, upper):
                if node.target in calls:
                    return None  # a module called twice has no single output to rewire
                calls[node.target] = node
        if len(calls) != 2:
            return None
        lower_node, upper_node = calls[lower], calls[upper]
        needed: set[torch.fx.Node] = set()
        stack = [upper_node]
        while stack:
            node = stack.pop()
            if node in needed or node is lower_node:
                continue
            if node.op == "placeholder":
                return None  # the upper layer also sees the input directly
            needed.add(node)
            stack.extend(node.all_input_nodes)
        graph = torch.fx.Graph()
        env = {lower_node: graph.placeholder("z")}
        for node in traced.graph.nodes:
            if node in needed:
                env[node] = graph.node_copy(node, lambda n: env[n])
        graph.output(env[upper_node])
        module = torch.fx.GraphModule(traced, graph)
        return Block(lambda z, x=None: module(z), needs_input=False, kind="fx")

    def _hook_block(self, lower: str, upper: str) -> Block:
        def run(z: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
            if x is None:
                raise ValueError("this block re-runs the model and needs the input images")
            found: dict[str, torch.Tensor] = {}

            def replace(_m, _i, _out):
                return z

            def grab(_m, _i, out):
                found["out"] = _first_tensor(out, upper)
                raise _StopForward

            h1 = self.modules[lower].register_forward_hook(replace)
            h2 = self.modules[upper].register_forward_hook(grab)
            try:
                self.model(x)
            except _StopForward:
                pass
            finally:
                h1.remove()
                h2.remove()
            return found["out"]

        return Block(run, needs_input=True, kind="hook")


def _first_tensor(out, name: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ValueError(f"layer {name!r} does not output a tensor; pick a module that does")
