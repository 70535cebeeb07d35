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

Before any of these, one **probe** (:func:`probe_layers`) checks that every layer is readable:

* it runs exactly once per forward pass. A shared module (torchvision ResNets use one ``relu`` per
  block, called two or three times) has no single output: hooks would see the last call, the IG
  input the first. Such a layer is refused with the alternatives named, and not listed;
* its layout is known. Outputs are read in a canonical layout, channels at dim 1 for maps, (B, T, C)
  for tokens: (B, C, H, W) as is, channels-last (B, H, W, C) maps (torchvision Swin, ConvNeXt's
  inner LayerNorm) permuted, (B, C, L) sequences as (B, C, L, 1). The layout is found by running
  the model a second time at twice the input side and seeing which dims grow; for a model that
  accepts one input size only (ViTs), 4-D outputs are taken as (B, C, H, W) and 3-D ones as tokens.
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.fx
from torch import nn

from .layer_shape import num_channels

TokenReduce = Literal["mean", "cls"]
#: Native layout of a layer output (one sample): channels first "CHW", channels last "HWC", tokens
#: "TC" (B, T, C), a channel-first sequence "CL" (B, C, L), a vector "C".
Layout = Literal["CHW", "HWC", "TC", "CL", "C"]

#: Layout found for a module by the last probe; the ablation hooks zero channels in the native layout.
_layouts: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


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


def to_canonical(out: torch.Tensor, layout: str) -> torch.Tensor:
    """Native output -> canonical: (B, C, H, W) for maps, (B, T, C) tokens, (B, C) vectors."""
    if layout == "HWC":
        return out.permute(0, 3, 1, 2)
    if layout == "CL":
        return out.unsqueeze(-1)
    return out


def from_canonical(out: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "HWC":
        return out.permute(0, 2, 3, 1)
    if layout == "CL":
        return out.squeeze(-1)
    return out


def zero_native(module: nn.Module, out: torch.Tensor, channels: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """:func:`zero_channels` on a module's native output, in the layout its last probe found."""
    layout = _layouts.get(module, default_layout(out.dim()))
    return from_canonical(zero_channels(to_canonical(out, layout), channels), layout)


def native_channels(module: nn.Module, out: torch.Tensor) -> int:
    """The channel count of a module's native output, in the layout its last probe found."""
    layout = _layouts.get(module, default_layout(out.dim()))
    return num_channels(to_canonical(out, layout).shape[1:])


def default_layout(dims: int) -> str:
    """The layout assumed when probing cannot tell (batch dim included in ``dims``)."""
    return {4: "CHW", 3: "TC", 2: "C"}.get(dims, "?")


@dataclass
class LayerProbe:
    """What one forward pass (and one at twice the input side) shows about a module's output."""

    name: str
    calls: int = 0
    shape: tuple[int, ...] | None = None  # native, one sample; None when the output is not a tensor
    layout: str = "?"
    layout_measured: bool = False  # False: assumed from the number of dims (second probe failed)
    order: int = -1  # when its first call finished, among the probed modules
    output_id: int | None = None  # identity of its first output: modules sharing it output one tensor

    @property
    def problem(self) -> str | None:
        if self.calls == 0:
            return "it is never called in the forward pass"
        if self.calls > 1:
            return f"it runs {self.calls} times in one forward pass (a shared module), so it has no single output"
        if self.shape is None:
            return "it does not output a tensor"
        if self.layout == "?":
            return f"its output of shape {self.shape} (per sample) is not a map, a token sequence or a vector"
        return None

    @property
    def canonical_shape(self) -> tuple[int, ...]:
        shape = self.shape or ()
        if self.layout == "HWC":
            return (shape[2], shape[0], shape[1])
        if self.layout == "CL":
            return (*shape, 1)
        return shape


def _record(module_names: Sequence[tuple[str, nn.Module]], x: torch.Tensor, model: nn.Module,
            identities: dict[str, tuple[int, int]] | None = None) -> tuple[dict[str, int], dict[str, tuple[int, ...] | None]]:
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    alive: list[torch.Tensor] = []  # held until the pass ends, so that no two outputs share an id
    handles = []
    for name, module in module_names:

        def hook(_m, _i, out, name=name):
            calls[name] = calls.get(name, 0) + 1
            if name not in shapes:
                t = out if isinstance(out, torch.Tensor) else None
                shapes[name] = tuple(t.shape[1:]) if t is not None else None
                if identities is not None and t is not None:
                    alive.append(t)
                    identities[name] = (len(identities), id(t))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls, shapes


def _layout(small: tuple[int, ...], large: tuple[int, ...] | None) -> tuple[str, bool]:
    dims = len(small) + 1
    if large is None or len(large) != len(small):
        return default_layout(dims), False
    grew = tuple(b != a for a, b in zip(small, large))
    if dims == 4:
        if grew == (False, True, True):
            return "CHW", True
        if grew == (True, True, False):
            return "HWC", True
    if dims == 3:
        if grew == (True, False):
            return "TC", True
        if grew == (False, True):
            return "CL", True
    return default_layout(dims), False


def probe_layers(model: nn.Module, x: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, LayerProbe]:
    """Call counts, shapes and layouts of ``names`` (default: every named module) on input ``x``
    (one sample suffices); see the module docstring. Runs two forward passes without gradients."""
    modules = dict(model.named_modules())
    names = [n for n in modules if n] if names is None else list(names)
    pairs = [(n, modules[n]) for n in names]
    x = x[:1]
    identities: dict[str, tuple[int, int]] = {}
    calls, shapes = _record(pairs, x, model, identities)
    big = x.new_zeros((1, x.shape[1], 2 * x.shape[-2], 2 * x.shape[-1])) if x.dim() == 4 else None
    large: dict[str, tuple[int, ...] | None] = {}
    if big is not None:
        try:
            _, large = _record(pairs, big, model)
        except Exception:  # noqa: BLE001 - a model that accepts one input size only
            large = {}
    found = {}
    for name in names:
        order, output_id = identities.get(name, (-1, None))
        p = LayerProbe(name, calls.get(name, 0), shapes.get(name), order=order, output_id=output_id)
        if p.shape is not None:
            p.layout, p.layout_measured = _layout(p.shape, large.get(name))
            if p.calls == 1 and p.layout != "?":
                _layouts[modules[name]] = p.layout
        found[name] = p
    return found


def shared_module_alternatives(model: nn.Module, x: torch.Tensor, name: str) -> list[str]:
    """For a module that runs several times: its nearest enclosing module that runs once, and the
    modules whose outputs its calls read (each runs once). These are what a user can pick instead."""
    modules = dict(model.named_modules())
    producers: dict[int, tuple[str, torch.Tensor]] = {}
    reads: list[str] = []
    handles = []
    for other, module in modules.items():
        if not other or other == name or name.startswith(other + "."):
            continue

        def hook(_m, _i, out, other=other):
            if isinstance(out, torch.Tensor):
                producers.setdefault(id(out), (other, out))  # the innermost module that made it

        handles.append(module.register_forward_hook(hook))

    def pre(_m, args):
        if args and isinstance(args[0], torch.Tensor) and id(args[0]) in producers:
            reads.append(producers[id(args[0])][0])

    handles.append(modules[name].register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    candidates = []
    parts = name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        candidates.append(".".join(parts[:k]))
        break
    candidates += reads
    probes = probe_layers(model, x, list(dict.fromkeys(candidates)))
    return [n for n, p in probes.items() if p.problem is None]


def did_you_mean(name: str, valid: Sequence[str], what: str = "layer name") -> str:
    """``unknown layer 'x'; did you mean ...?`` with at most five close names, never the whole list."""
    close = difflib.get_close_matches(name, list(valid), n=5, cutoff=0.6)
    if close:
        return f"unknown {what} {name!r}; did you mean {', '.join(repr(c) for c in close)}?"
    return f"unknown {what} {name!r}"


class _LeafTracer(torch.fx.Tracer):
    def __init__(self, leaves: set[str]):
        super().__init__(autowrap_functions=(torch._assert,))
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or super().is_leaf_module(m, qualname)


class Block(nn.Module):
    """upper_output = block(lower_output[, input]) in canonical layouts; ``needs_input`` tells whether
    the input is used. ``source`` is the model the block computes with (its train/eval mode matters)."""

    def __init__(self, fn: Callable, needs_input: bool, kind: str, source: nn.Module | None = None):
        super().__init__()
        self.fn = fn
        self.needs_input = needs_input
        self.kind = kind  # "fx" or "hook"
        self._source = [source]  # a list: not registered as a submodule

    @property
    def source(self) -> nn.Module | None:
        return self._source[0]

    def forward(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(z, x)


def check_eval_mode(module: nn.Module | None) -> None:
    """IG treats the rows of a batch as independent inputs: true only in eval mode (batch norm in
    training mode mixes the rows, dropout makes every pass differ)."""
    if module is not None:
        training = [n or type(module).__name__ for n, m in module.named_modules() if m.training]
        if training:
            raise ValueError(f"the model is in training mode ({training[0]!r}{' and others' if len(training) > 1 else ''}); "
                             "call model.eval() before computing Integrated Gradients")


class LayerAccess:
    """Hooks and blocks for a fixed list of named layers of ``model``."""

    def __init__(self, model: nn.Module, layers: Sequence[str], token_reduce: TokenReduce = "mean"):
        if isinstance(layers, str):
            raise ValueError(f"layers must be a list of module names, got {layers!r}; \"auto\" is resolved by the "
                             "job-spec runner, in code use neurflow.core.layer_catalog.suggested_layers(model, "
                             "input_size)")
        modules = dict(model.named_modules())
        for name in layers:
            if name not in modules or not name:
                raise ValueError(did_you_mean(name, [n for n in modules if n]) + " (`neurflow layers ARCH` lists them)")
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
        self.layouts: dict[str, str] = {}  # filled by the first probe

    def probe(self, x: torch.Tensor) -> dict[str, LayerProbe]:
        """Check every layer is readable on input ``x`` (see :func:`probe_layers`); done once."""
        probes = probe_layers(self.model, x, self.layers)
        for name, p in probes.items():
            if p.problem:
                message = f"layer {name!r} cannot be read: {p.problem}"
                if p.calls > 1:
                    alternatives = shared_module_alternatives(self.model, x, name)
                    if alternatives:
                        message += f"; read one of {', '.join(repr(a) for a in alternatives)} instead"
                raise ValueError(message)
        self.layouts = {name: p.layout for name, p in probes.items()}
        return probes

    def _ensure_probed(self, x: torch.Tensor) -> None:
        if not self.layouts:
            self.probe(x)

    # -- forward passes with hooks -----------------------------------------------------------
    def readouts(self, x: torch.Tensor, names: Sequence[str] | None = None,
                 maps: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Neuron activations (B, C) of ``names`` (default: all layers) in one forward pass. ``maps``:
        a dict whose keys name layers whose complete (canonical) outputs are wanted too; their values
        are filled in."""
        names = list(names or self.layers)
        self._ensure_probed(x)
        found: dict[str, torch.Tensor] = {}
        handles = []
        for name in names:

            def hook(_m, _i, out, name=name):
                full = self._canonical(out, name)
                if maps is not None and name in maps:
                    maps[name] = full.clone()  # an in-place op further up (ReLU(inplace=True)) would rewrite it
                found[name] = readout(full, self.token_reduce)
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
        self._ensure_probed(x)
        found: dict[str, torch.Tensor] = {}

        def hook(_m, _i, out):
            found["out"] = self._canonical(out, name)
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
        self._ensure_probed(x)
        order: list[str] = []
        shapes: dict[str, tuple[int, ...]] = {}
        handles = []
        for name in self.layers:

            def hook(_m, _i, out, name=name):
                if name not in shapes:
                    order.append(name)
                    shapes[name] = tuple(self._canonical(out, name).shape[1:])

            handles.append(self.modules[name].register_forward_hook(hook))
        try:
            self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        return order, shapes

    def _canonical(self, out, name: str) -> torch.Tensor:
        return to_canonical(_first_tensor(out, name), self.layouts.get(name, "CHW"))

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
        lo, up = self.layouts.get(lower, "CHW"), self.layouts.get(upper, "CHW")
        return Block(lambda z, x=None: to_canonical(module(from_canonical(z, lo)), up), needs_input=False, kind="fx",
                     source=self.model)

    def _hook_block(self, lower: str, upper: str) -> Block:
        def run(z: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
            if x is None:
                raise ValueError("this block re-runs the model and needs the input images")
            found: dict[str, torch.Tensor] = {}
            native = from_canonical(z, self.layouts.get(lower, "CHW"))

            def replace(_m, _i, _out):
                return native

            def grab(_m, _i, out):
                found["out"] = self._canonical(out, upper)
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

        return Block(run, needs_input=True, kind="hook", source=self.model)


def _first_tensor(out, name: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ValueError(f"layer {name!r} does not output a tensor; pick a module that does")
