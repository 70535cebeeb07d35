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
  for tokens: (B, C, H, W) as is, channels-last (B, H, W, C) maps (torchvision and timm Swin, ConvNeXt's
  inner LayerNorm) permuted, (B, C, L) sequences as (B, C, L, 1). The layout is found by running the
  model a second time at twice the input side and seeing which dims grow. A model that accepts one
  input size only (ViTs, timm's Swin) is measured at its own size instead: a bump in one corner of the
  input, then in the opposite one, moves the output's change along the position axes and not along
  the channel axis. A map whose channel axis cannot be told is refused, naming the axes; 3-D outputs
  of such a model are taken as tokens. The first axis must follow the number of images (attention
  maps of windows, (T, B, C) sequences do not): such outputs are refused too.
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


def has_layout(module: nn.Module) -> bool:
    """Whether a probe has measured ``module``'s output layout (see :func:`probe_layers`)."""
    return module in _layouts


def _measured_layout(module: nn.Module) -> str:
    if module not in _layouts:  # guessing from the dims zeroes image rows of a channels-last map
        raise ValueError(f"the output layout of {type(module).__name__} has not been measured; probe the model first "
                         "(neurflow.core.layer_access.probe_layers)")
    return _layouts[module]


def zero_native(module: nn.Module, out: torch.Tensor, channels: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """:func:`zero_channels` on a module's native output, in the layout its last probe measured."""
    layout = _measured_layout(module)
    return from_canonical(zero_channels(to_canonical(out, layout), channels), layout)


def native_channels(module: nn.Module, out: torch.Tensor) -> int:
    """The channel count of a module's native output, in the layout its last probe measured."""
    return num_channels(to_canonical(out, _measured_layout(module)).shape[1:])


def default_layout(dims: int) -> str:
    """The layout assumed when probing cannot tell (batch dim included in ``dims``)."""
    return {4: "CHW", 3: "TC", 2: "C"}.get(dims, "?")


@dataclass
class LayerProbe:
    """What the probe passes show about a module's output (see :func:`probe_layers`)."""

    name: str
    calls: int = 0
    shape: tuple[int, ...] | None = None  # native, one sample; None when the output is not a tensor
    layout: str = "?"
    layout_measured: bool = False  # False: assumed from the number of dims (3-D outputs of fixed-size models)
    order: int = -1  # when its first call finished, among the probed modules
    output_id: int | None = None  # identity of its first output: modules sharing it output one tensor
    batch_sizes: tuple[int, ...] = ()  # the output's first axis for 1 and 3 input images
    ambiguous: str | None = None  # why a map's channel axis could not be established

    @property
    def problem(self) -> str | None:
        if self.calls == 0:
            return "it is never called in the forward pass"
        if self.calls > 1:
            return f"it runs {self.calls} times in one forward pass (a shared module), so it has no single output"
        if self.shape is None:
            return "it does not output a tensor"
        if self.batch_sizes and self.batch_sizes != (1, 3):
            return (f"its output's first axis is not the batch axis (size {self.batch_sizes[0]} for one image, "
                    f"{self.batch_sizes[1]} for three), so its rows are not images")
        if self.ambiguous:
            return f"the layout of its output {self.shape} (per sample) cannot be established: {self.ambiguous}"
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
            summarise: Callable[[torch.Tensor], object]) -> tuple[dict[str, int], dict[str, object]]:
    """Call counts of the modules and ``summarise(output)`` of each one's first call (None for an
    output that is not a tensor), in the order the first calls finished."""
    calls: dict[str, int] = {}
    found: dict[str, object] = {}
    handles = []
    for name, module in module_names:

        def hook(_m, _i, out, name=name):
            calls[name] = calls.get(name, 0) + 1
            if name not in found:
                found[name] = summarise(out) if isinstance(out, torch.Tensor) else None

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls, found


def _grown_layout(small: tuple[int, ...], large: tuple[int, ...] | None) -> str | None:
    """The layout from which dims grew when the input side doubled (None: the pattern says nothing)."""
    if large is None or len(large) != len(small):
        return None
    grew = tuple(b != a for a, b in zip(small, large))
    return {(False, True, True): "CHW", (True, True, False): "HWC",
            (True, False): "TC", (False, True): "CL"}.get(grew)


#: A map axis is taken as spatial when a bump moved from the input's top-left to its bottom-right
#: corner moves the centre of mass of the output's change along it by more than this share of its
#: length, and by more than _MARGIN times what it moves along the candidate channel axis. Measured on
#: random-weight ResNet, MobileNet, ConvNeXt, torchvision and timm Swin at 32-224 px: spatial axes move
#: 0.10-0.97 (maps down to 2x2), channel axes at most 0.07 (4 channels), mostly under 0.02. Global
#: gating (squeeze-excitation) can hide the movement; then the layer stays ambiguous unless the
#: model also runs at twice the side.
_MOVES, _MARGIN = 0.05, 3.0


def _bump_shifts(out: torch.Tensor) -> tuple[float | None, ...]:
    """For a 4-D output of the three bump images (plain, top-left bump, bottom-right bump): per axis,
    how far the centre of mass of the change moves between the two bumps (share of the axis length;
    None for an axis of size 1, nan when nothing changes)."""
    out = out.detach().double()
    near, far = (out[1] - out[0]).abs(), (out[2] - out[0]).abs()
    shifts: list[float | None] = []
    for axis in range(3):
        size = out.shape[axis + 1]
        if size == 1:
            shifts.append(None)
            continue
        others = tuple(a for a in range(3) if a != axis)
        pos = torch.arange(size, dtype=torch.float64)
        centres = [float((m * pos).sum() / m.sum()) if float(m.sum()) > 0 else float("nan")
                   for m in (near.sum(others), far.sum(others))]
        shifts.append((centres[1] - centres[0]) / (size - 1))
    return tuple(shifts)


def _bumped_layout(shape: tuple[int, ...], shifts: tuple[float | None, ...]) -> tuple[str | None, str | None]:
    """(layout, None) when the bump shifts single out the channel axis of a map, else (None, why)."""
    if all(s is not None and s != s for s in shifts):  # nan: nothing changed
        return None, "it does not change when the input does, so no axis can be seen to follow the image"
    moved = [abs(s) if s is not None and s == s else 0.0 for s in shifts]
    fits = [layout for layout, channel in (("CHW", 0), ("HWC", 2))
            if all(shifts[a] is None or moved[a] > max(_MOVES, _MARGIN * moved[channel]) for a in range(3) if a != channel)]
    if len(fits) == 1 or (fits and shape[0] == shape[2]):  # equal sizes on both ends: (1, H, 1) reads alike
        return fits[0], None
    described = ", ".join(f"axis {a + 1} (size {shape[a]}) by {moved[a]:.2f}" for a in range(3) if shape[a] > 1)
    return None, (f"moving a bump from the input's top-left to its bottom-right corner moves the change along {described} "
                  "of its length, so which axis holds the channels is ambiguous; read a layer whose output is "
                  "(B, C, H, W) or (B, H, W, C) at a size where positions are visible, or run at an input size where "
                  "the model also accepts twice the side")


def probe_layers(model: nn.Module, x: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, LayerProbe]:
    """Call counts, shapes and layouts of ``names`` (default: every named module) on input ``x``
    (one sample suffices); see the module docstring. Runs three forward passes without gradients:

    * one image: the call counts, shapes and output identities;
    * one image at twice the side, where the model accepts it: which dims grow tells the layout;
    * three images at the model's own input size, ``x`` and ``x`` with a bump in its top-left and in its
      bottom-right corner: the batch axis (its size must follow the image count) and, for maps whose
      growth says nothing (a model that accepts one input size), the channel axis: the one along which
      the change does not move with the corner.
    A map whose channel axis neither measurement establishes is refused (:attr:`LayerProbe.ambiguous`);
    3-D outputs of a fixed-size model are taken as tokens (B, T, C).
    """
    modules = dict(model.named_modules())
    names = [n for n in modules if n] if names is None else list(names)
    pairs = [(n, modules[n]) for n in names]
    x = x[:1]
    alive: list[torch.Tensor] = []  # held until the pass ends, so that no two outputs share an id

    def first_pass(out: torch.Tensor) -> tuple:
        alive.append(out)
        return tuple(out.shape), id(out)

    calls, first = _record(pairs, x, model, first_pass)
    ordered = {name: (k, value) for k, (name, value) in enumerate(first.items())}
    del alive[:]
    side = max(1, min(x.shape[-2:]) // 4) if x.dim() == 4 else 0
    bumped = {}
    if side:
        near, far = x.clone(), x.clone()
        near[..., :side, :side] += 1.0
        far[..., -side:, -side:] += 1.0
        _, bumped = _record(pairs, torch.cat([x, near, far]), model,
                            lambda out: (out.shape[0], _bump_shifts(out) if out.dim() == 4 and out.shape[0] == 3
                                         and not out.is_meta else None))
    large: dict[str, object] = {}
    if x.dim() == 4:
        try:
            _, large = _record(pairs, x.new_zeros((1, x.shape[1], 2 * x.shape[-2], 2 * x.shape[-1])), model,
                               lambda out: tuple(out.shape[1:]))
        except Exception:  # noqa: BLE001 - a model that accepts one input size only
            large = {}
    found = {}
    for name in names:
        order, summary = ordered.get(name, (-1, None))
        p = LayerProbe(name, calls.get(name, 0), order=order)
        if summary is not None:
            full_shape, p.output_id = summary
            p.shape = tuple(full_shape[1:])
            batch, shifts = bumped.get(name) or (None, None)
            if batch is not None:
                p.batch_sizes = (full_shape[0], batch)
            grown = _grown_layout(p.shape, large.get(name))
            if len(p.shape) == 3 and grown is None and x.is_meta:  # no values: a listing only, a fit probes again
                p.layout = "CHW"
            elif len(p.shape) == 3 and grown is None:
                layout, p.ambiguous = _bumped_layout(p.shape, shifts) if shifts else (None, "the bump pass did not run")
                p.layout, p.layout_measured = layout or "?", layout is not None
            elif grown is not None:
                p.layout, p.layout_measured = grown, True
            else:
                p.layout = default_layout(len(p.shape) + 1)
            if p.problem is None:
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
    training mode mixes the rows, dropout makes every pass differ) and with batch norms that keep
    running statistics (one built with ``track_running_stats=False`` normalises by the batch's own
    statistics even in eval mode, so a patch's activations would depend on the other patches)."""
    if module is None:
        return
    training = [n or type(module).__name__ for n, m in module.named_modules() if m.training]
    if training:
        raise ValueError(f"the model is in training mode ({training[0]!r}{' and others' if len(training) > 1 else ''}); "
                         "call model.eval() before computing Integrated Gradients")
    batch_stats = [n or type(module).__name__ for n, m in module.named_modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None]
    if batch_stats:
        raise ValueError(f"batch norm {batch_stats[0]!r}{f' (and {len(batch_stats) - 1} more)' if len(batch_stats) > 1 else ''} "
                         "has no running statistics (track_running_stats=False), so even in eval mode it normalises "
                         "each batch by its own statistics and an image's activations depend on the other images; "
                         "NeurFlow reads models whose batch norms keep running statistics (the default)")


class LayerAccess:
    """Hooks and blocks for a fixed list of named layers of ``model``."""

    def __init__(self, model: nn.Module, layers: Sequence[str], token_reduce: TokenReduce = "mean"):
        if isinstance(layers, str):
            raise ValueError(f"layers must be a list of module names, got {layers!r}; \"auto\" is resolved by "
                             "NeurFlow.fit and the job-spec runner, in code use "
                             "neurflow.core.layer_budget.suggest(model, input_size).layers")
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
        if not _depends_on(upper_node, lower_node):
            raise ValueError(parallel_branches(lower, upper))
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
            if torch.is_grad_enabled() and z.requires_grad and not found["out"].requires_grad:
                raise ValueError(parallel_branches(lower, upper))
            return found["out"]

        return Block(run, needs_input=True, kind="hook", source=self.model)


def _depends_on(node: torch.fx.Node, ancestor: torch.fx.Node) -> bool:
    seen: set[torch.fx.Node] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current is ancestor:
            return True
        if current not in seen:
            seen.add(current)
            stack.extend(current.all_input_nodes)
    return False


def parallel_branches(lower: str, upper: str) -> str:
    """Why no block leads from ``lower`` to ``upper``: the message names both branches and where they meet."""
    common = []
    for a, b in zip(lower.split("."), upper.split(".")):
        if a != b:
            break
        common.append(a)
    where = f" of {'.'.join(common)!r}" if common else ""
    instead = (f"read {'.'.join(common)!r}, where they are joined, or layers on one of the branches"
               if common else "read layers on one path from the output down")
    return (f"layer {upper!r} does not read layer {lower!r}: they are parallel branches{where}, each computed without "
            f"the other, so no gradient flows from one to the other; {instead}")


def _first_tensor(out, name: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ValueError(f"layer {name!r} does not output a tensor; pick a module that does")
