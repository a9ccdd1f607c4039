"""Front end: trace a ``torch.nn.Module`` with torch.fx and classify every operation for a flow.

:func:`trace` returns a :class:`TracedModel`: the fx graph and, per node, its *kind* (``linear``,
``quantizer``, ``layout`` ...). Anything a flow cannot convert becomes an :class:`Unsupported` entry
(node, operation, location in the model and the source, reason, supported alternative) and
:func:`check_supported` raises one :class:`UnsupportedModelError` listing *all* of them.

Layout operations (reshape, permute, transpose, flatten, slicing, ...) are supported whatever they do:
the flows evaluate them on index tensors, so they become gather maps in the IR (see ``sw/ir.py``).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn
from torch.nn import functional as F

from ..models.rnn import QuantRNN
from ..quant import Quantizer

__all__ = ["Unsupported", "UnsupportedModelError", "TracedModel", "trace", "check_supported", "KINDS"]


@dataclass(frozen=True)
class Unsupported:
    """One thing the flow cannot convert."""

    node: str
    operation: str
    location: str
    reason: str
    alternative: str

    def __str__(self):
        return (f"{self.operation} at {self.location} (fx node {self.node}): {self.reason}. "
                f"Instead: {self.alternative}")


class UnsupportedModelError(ValueError):
    """The model cannot be converted; ``problems`` lists every reason, each with its location."""

    def __init__(self, flow: str, problems: list[Unsupported], model: str = "model"):
        self.flow, self.problems = flow, list(problems)
        lines = "\n".join(f"  {i + 1}. {p}" for i, p in enumerate(self.problems))
        super().__init__(f"{model} cannot be converted by the {flow} flow: {len(self.problems)} "
                         f"unsupported operation{'s' if len(self.problems) != 1 else ''}:\n{lines}")


# -- classification ------------------------------------------------------------------------------------
_LAYOUT_METHODS = {"reshape", "view", "permute", "transpose", "flatten", "unflatten", "squeeze", "unsqueeze",
                   "contiguous", "chunk", "split", "unbind", "movedim", "swapaxes", "expand", "repeat", "t"}
_LAYOUT_FUNCTIONS = {torch.reshape, torch.permute, torch.transpose, torch.flatten, torch.squeeze, torch.unsqueeze,
                     torch.chunk, torch.split, torch.unbind, torch.movedim, torch.swapaxes, torch.t}
_ADD = {operator.add, operator.iadd, torch.add}
_SUB = {operator.sub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}
_DIV = {operator.truediv, torch.div}
_MATMUL = {operator.matmul, torch.matmul, torch.bmm}
_SOFTMAX = {torch.softmax, F.softmax}
_RELU = {torch.relu, F.relu}
_MEAN = {torch.mean}
_SUM = {torch.sum}

_RELU_ALT = "fine-tune the model with nn.ReLU (a ReLU becomes an unsigned neuron layer)"
_NONLINEAR = {nn.GELU: "GELU", nn.SiLU: "SiLU", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh", nn.ELU: "ELU",
              nn.LeakyReLU: "LeakyReLU", nn.Hardswish: "Hardswish", nn.Mish: "Mish", nn.Softplus: "Softplus"}
_NONLINEAR_FUNCTIONS = {F.gelu: "gelu", torch.sigmoid: "sigmoid", torch.tanh: "tanh", F.silu: "silu",
                        torch.exp: "exp", torch.log: "log", torch.sqrt: "sqrt", torch.pow: "pow",
                        operator.pow: "**", F.elu: "elu", F.leaky_relu: "leaky_relu"}

KINDS = ("input", "output", "constant", "shape", "layout", "identity", "linear", "conv2d", "layernorm", "batchnorm",
         "relu", "quantizer", "qrnn", "add", "sub", "mul", "div", "matmul", "softmax", "mean", "sum", "neg")


def _fn_name(target) -> str:
    if isinstance(target, str):
        return f"Tensor.{target}"
    mod = getattr(target, "__module__", "") or ""
    name = getattr(target, "__name__", repr(target))
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    return f"{mod.replace('torch.nn.functional', 'F')}.{name}" if mod else name


def _kind_of(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str | None, str, tuple[str, str] | None]:
    """``(kind, operation, unsupported)`` for one node; ``unsupported`` is ``(reason, alternative)``."""
    if node.op == "placeholder":
        return "input", "input", None
    if node.op == "output":
        return "output", "output", None
    if node.op == "get_attr":
        return "constant", f"parameter {node.target}", None
    if node.op == "call_module":
        m = modules[node.target]
        what = f"nn.{type(m).__name__}" if type(m).__module__.startswith("torch.nn") else type(m).__name__
        if isinstance(m, Quantizer):
            return "quantizer", what, None
        if isinstance(m, QuantRNN):
            return "qrnn", what, None
        if isinstance(m, nn.Linear):
            return "linear", what, None
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
                return None, what, ("only groups=1, zero padding given as numbers is converted",
                                    "use a plain nn.Conv2d(groups=1, padding=<int or tuple>)")
            return "conv2d", what, None
        if isinstance(m, nn.LayerNorm):
            return "layernorm", what, None
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return "batchnorm", what, None
        if isinstance(m, nn.ReLU):
            return "relu", what, None
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return "identity", what, None
        if isinstance(m, nn.Flatten):
            return "layout", what, None
        if isinstance(m, nn.Softmax):
            return "softmax", what, None
        for cls, name in _NONLINEAR.items():
            if isinstance(m, cls):
                return None, what, (f"{name} has no exact spiking equivalent", _RELU_ALT)
        if isinstance(m, nn.MultiheadAttention):
            return None, what, ("a fused attention module hides its q/k/v projections and softmax from the converter",
                                "write attention with nn.Linear, @ and softmax "
                                "(see spikeforge.sw.models.vit.Attention)")
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
            return None, what, ("max pooling is not converted (a spike count has no exact running maximum)",
                                "use a strided nn.Conv2d or mean pooling (x.mean(dim))")
        if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            return None, what, ("pooling modules are not converted", "use x.mean(dim) or a strided nn.Conv2d")
        if isinstance(m, (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell)):
            return None, what, ("recurrent modules are converted only by the crnn flow, from a quantized RNN",
                                "use spikeforge.sw.models.rnn.QuantRNN (the QRNN cell) and the crnn flow")
        if isinstance(m, nn.Embedding):
            return None, what, ("token embeddings (table lookups) are not converted",
                                "feed embedded vectors as the model input")
        return None, what, ("this module type is not in the converter's supported set",
                            "build the model from nn.Linear, nn.Conv2d, norms, nn.ReLU, attention written with @ "
                            "and softmax, residual +, reshapes and mean pooling")
    target = node.target
    what = _fn_name(target)
    if node.op == "call_method":
        if target in _LAYOUT_METHODS:
            return "layout", what, None
        if target == "size":
            return "shape", what, None
        simple = {"add": "add", "__add__": "add", "sub": "sub", "mul": "mul", "div": "div", "matmul": "matmul",
                  "softmax": "softmax", "relu": "relu", "mean": "mean", "sum": "sum", "neg": "neg"}
        if target in simple:
            return simple[target], what, None
        if target in ("gelu", "sigmoid", "tanh", "exp", "log", "sqrt", "pow"):
            return None, what, (f"{target} has no exact spiking equivalent", _RELU_ALT)
        return None, what, ("this tensor method is not in the converter's supported set",
                            "use layout methods (reshape/permute/transpose/flatten), +, @, softmax, relu or mean")
    # call_function
    if target is getattr:
        return "shape", what, None
    if target is operator.getitem:
        return "layout", "indexing", None
    for kind, fns in (("layout", _LAYOUT_FUNCTIONS), ("add", _ADD), ("sub", _SUB), ("mul", _MUL), ("div", _DIV),
                      ("matmul", _MATMUL), ("softmax", _SOFTMAX), ("relu", _RELU), ("mean", _MEAN), ("sum", _SUM)):
        if target in fns:
            return kind, what, None
    if target is operator.neg or target is torch.neg:
        return "neg", what, None
    if target in _NONLINEAR_FUNCTIONS:
        return None, what, (f"{_NONLINEAR_FUNCTIONS[target]} has no exact spiking equivalent", _RELU_ALT)
    if target in (torch.cat, torch.stack, torch.concat):
        return None, what, ("concatenating tensors (e.g. a class token) is not converted",
                            "pool over tokens with x.mean(dim) instead of a class token")
    if target in (F.layer_norm, F.batch_norm, F.linear, F.conv2d):
        return None, what, ("functional layers are not converted: their parameters are not modules",
                            f"use the module form (nn.{_fn_name(target).split('.')[-1]})")
    return None, what, ("this function is not in the converter's supported set",
                        "use nn.Linear, nn.Conv2d, norms, nn.ReLU, +, @, softmax, layout ops and mean")


def _location(node: fx.Node) -> str:
    """``module.path (file.py:line)`` of the node, from fx's module stack and recorded stack trace."""
    path = ""
    stack = node.meta.get("nn_module_stack")
    if node.op == "call_module":
        path = str(node.target)
    elif stack:
        path = str(list(stack.values())[-1][0] if isinstance(list(stack.values())[-1], tuple) else list(stack)[-1])
    src = ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', node.stack_trace or "")
    for file, line, _fn in reversed(frames):
        if "/torch/" not in file and "/spikeforge/sw/convert/" not in file and "/sw/convert/" not in file:
            src = f"{file.rsplit('/', 1)[-1]}:{line}"
            break
    path = path or "<top level>"
    return f"{path} ({src})" if src else path


@dataclass
class TracedModel:
    """An fx-traced model with one kind (or an :class:`Unsupported`) per node."""

    module: nn.Module
    graph: fx.GraphModule
    kinds: dict[str, str] = field(default_factory=dict)
    operations: dict[str, str] = field(default_factory=dict)
    locations: dict[str, str] = field(default_factory=dict)
    unsupported: list[Unsupported] = field(default_factory=list)

    def problem(self, node: fx.Node, reason: str, alternative: str) -> Unsupported:
        """An :class:`Unsupported` for ``node`` (used by flows for context-dependent problems)."""
        return Unsupported(node.name, self.operations.get(node.name, node.name), self.locations.get(node.name, "?"),
                           reason, alternative)


class _Tracer(fx.Tracer):
    def __init__(self):
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m, qualname):
        return isinstance(m, (Quantizer, QuantRNN)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> TracedModel:
    """Trace ``model`` with torch.fx and classify every node (no data needed)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    name = type(model).__name__
    try:
        graph = _Tracer().trace(model)
    except Exception as e:   # fx raises many types; the user needs the reason, not the type
        raise UnsupportedModelError("any", [Unsupported(
            "-", name, "forward()", f"torch.fx cannot trace it ({type(e).__name__}: {e})",
            "avoid data-dependent Python control flow in forward() (loops over fixed ranges are fine)")],
            name) from e
    gm = fx.GraphModule(model, graph)
    modules = dict(gm.named_modules())
    tm = TracedModel(model, gm)
    for node in gm.graph.nodes:
        kind, what, bad = _kind_of(node, modules)
        tm.operations[node.name] = what
        tm.locations[node.name] = _location(node)
        if bad is not None:
            tm.unsupported.append(tm.problem(node, *bad))
        else:
            tm.kinds[node.name] = kind
    return tm


def check_supported(tm: TracedModel, flow: str, refuse: dict[str, tuple[str, str]] | None = None,
                    extra: list[Unsupported] = ()) -> None:
    """Raise :class:`UnsupportedModelError` with every unsupported node of ``tm`` for ``flow``.

    ``refuse`` maps node kinds the flow cannot take to ``(reason, alternative)``; ``extra`` adds
    problems the flow found itself.
    """
    problems = list(tm.unsupported)
    for node in tm.graph.graph.nodes:
        kind = tm.kinds.get(node.name)
        if refuse and kind in refuse:
            problems.append(tm.problem(node, *refuse[kind]))
    problems += list(extra)
    if problems:
        order = {n.name: i for i, n in enumerate(tm.graph.graph.nodes)}
        problems.sort(key=lambda p: order.get(p.node, -1))
        raise UnsupportedModelError(flow, problems, type(tm.module).__name__)
