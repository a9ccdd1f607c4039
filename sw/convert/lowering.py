"""Shared machinery of the flows' lowerings: an fx interpreter over symbolic values with index maps.

A flow lowers a traced model by interpreting its fx graph on :class:`Sym` values instead of tensors.
Each symbolic value carries ``idx``, an int64 tensor ``[1, *shape]`` (batch of one) whose entries
are flat positions in the output of the IR node that will hold the value. Layout operations are run
*on ``idx`` itself*, so any reshape/permute/slice of the source model becomes a gather map without
the flow knowing about it. Problems are collected (with the node's location), not raised one by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
import torch.fx as fx

from ..ir import Node, Port
from .frontend import TracedModel, Unsupported, UnsupportedModelError, check_supported

__all__ = ["Sym", "Poison", "LoweringInterpreter", "identity_index", "flat_index", "require_quantizers",
           "check_input_encoding"]


@dataclass
class Sym:
    """A symbolic value: ``idx[0, ...]`` = flat output position of the value's elements."""

    idx: torch.Tensor
    carried: ClassVar[tuple[str, ...]] = ()     # other per-element tensors ([1, *shape]) layout ops move along

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.idx.shape[1:])

    def with_idx(self, idx: torch.Tensor) -> "Sym":
        return replace(self, idx=idx)

    def rows(self) -> np.ndarray:
        """The index as a ``[rows, last]`` matrix (the gather map of a last-axis operator)."""
        return self.idx.reshape(-1, self.idx.shape[-1]).numpy().copy()


@dataclass
class Poison(Sym):
    """The value of a node that could not be lowered (its problem is already recorded)."""


def identity_index(shape) -> torch.Tensor:
    return torch.arange(int(np.prod(shape, dtype=np.int64)), dtype=torch.int64).reshape(1, *shape)


def flat_index(idx: torch.Tensor) -> np.ndarray:
    return idx.reshape(-1).numpy().copy()


class LoweringInterpreter(fx.Interpreter):
    """Runs a traced model on symbolic values; subclasses implement ``lower_<kind>(node, args, kwargs)``.

    Layout and shape nodes are handled here by executing them on the values' index tensors.
    """

    def __init__(self, tm: TracedModel, example_shape: tuple[int, ...], refused=()):
        super().__init__(tm.graph)
        self.tm = tm
        self.refused = set(refused)                        # kinds the flow reports through check_supported
        self.example_shape = tuple(example_shape)
        self.nodes: list[Node] = []
        self.by_name: dict[str, Node] = {}
        self.problems: list[Unsupported] = []
        self.modules = dict(tm.graph.named_modules())

    # -- bookkeeping --------------------------------------------------------------------------------
    def add_node(self, name: str, op: str, inputs: list[Port], shape, origin: str, params=None, arrays=None) -> Node:
        base, k = name.replace(".", "_"), 1
        name = base
        while name in self.by_name:
            k += 1
            name = f"{base}_{k}"
        node = Node(name, op, inputs, tuple(shape), dict(params or {}), dict(arrays or {}), origin)
        self.by_name[name] = node
        self.nodes.append(node)
        return node

    def fail(self, node: fx.Node, reason: str, alternative: str, shape=None) -> Poison:
        self.problems.append(self.tm.problem(node, reason, alternative))
        return Poison(identity_index(shape if shape is not None else (1,)))

    def origin(self, node: fx.Node) -> str:
        return self.tm.locations.get(node.name, node.name)

    # -- shared operators and the driver --------------------------------------------------------------
    def lower_mul(self, n, args, kwargs):
        a, b = args[0], args[1]
        if isinstance(b, Sym):
            a, b = b, a
        if isinstance(b, Sym):
            return self.fail(n, "the elementwise product of two activations has no spiking equivalent here",
                             "multiply activations only through @ (attention)")
        return self._scaled(n, a, b)

    def lower_div(self, n, args, kwargs):
        if isinstance(args[1], Sym) or not is_number(args[1]) or args[1] == 0:
            return self.fail(n, "division by an activation or by zero", "divide by a non-zero Python number")
        return self._scaled(n, args[0], 1.0 / args[1])

    def lower_model(self, flow: str, refuse: dict) -> tuple[str, float, tuple]:
        """Lower the whole graph and its readout (``self.readout(node, value)``); raise one
        :class:`UnsupportedModelError` with the front end's and the lowering's problems. Returns the output
        node, the value of one output unit and the output shape."""
        with torch.no_grad():
            out = self.run(torch.zeros(1))
        last = list(self.tm.graph.graph.nodes)[-1]
        out_node, out_scale, out_shape = ("", 1.0, ()) if isinstance(out, Poison) else self.readout(last, out)
        if not out_node and not isinstance(out, Poison) and not self.problems:
            self.problems.append(self.tm.problem(last, "the model's output is not a linear readout or a quantized "
                                                 "value", "end the model with nn.Linear"))
        check_supported(self.tm, flow, refuse=refuse, extra=self.problems)
        return out_node, out_scale, out_shape

    # -- fx hooks -----------------------------------------------------------------------------------
    def run_node(self, n: fx.Node):
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        kind = self.tm.kinds.get(n.name)
        if kind is None or kind in self.refused:           # listed by the front end / check_supported
            return Poison(identity_index((1,)))
        if any(isinstance(a, Poison) for a in _flat(args, kwargs)):
            return Poison(identity_index((1,)))
        if kind == "constant":
            return super().run_node(n)
        if kind in ("layout", "shape"):
            return self._layout(n, args, kwargs)
        if kind == "identity":
            return args[0]
        if kind == "output":
            return args[0]
        handler = getattr(self, f"lower_{kind}", None)
        if handler is None:
            return self.fail(n, f"the {type(self).__name__} flow does not convert {self.tm.operations[n.name]}",
                             "see docs/conversion.md for what each flow converts")
        return handler(n, args, kwargs)

    def _layout(self, n: fx.Node, args, kwargs):
        syms = [a for a in _flat(args, kwargs) if isinstance(a, Sym)]
        proto = syms[0] if syms else None

        def apply(field):
            def unwrap(a):
                return getattr(a, field) if isinstance(a, Sym) else a
            a2, k2 = _map(args, unwrap), _map(kwargs, unwrap)
            if n.op == "call_method":
                return getattr(a2[0], n.target)(*a2[1:], **k2)
            if n.op == "call_module":
                return self.modules[n.target](*a2, **k2)
            return n.target(*a2, **k2)
        try:
            out = apply("idx")
            extra = {f: apply(f) for f in (proto.carried if proto is not None else ())}
        except Exception as e:    # a layout op the index tensor cannot take (e.g. a float-only method)
            return self.fail(n, f"layout operation failed on the index map ({type(e).__name__}: {e})",
                             "use reshape/permute/transpose/flatten/slicing")
        if proto is None:
            return out
        # the carried fields' outputs come in the same structure, in the same order as the index outputs
        moved = {f: iter([t for t in _flat((o,), {}) if isinstance(t, torch.Tensor)]) for f, o in extra.items()}

        def wrap(t):
            if isinstance(t, torch.Tensor) and t.dtype == torch.int64:
                return replace(proto, idx=t, **{f: next(m) for f, m in moved.items()})
            return t
        return _map(out, wrap)


def _flat(args, kwargs):
    out = []

    def walk(a):
        if isinstance(a, (list, tuple)):
            for b in a:
                walk(b)
        elif isinstance(a, dict):
            for b in a.values():
                walk(b)
        else:
            out.append(a)
    walk(args)
    walk(kwargs)
    return out


def _map(a, fn):
    if isinstance(a, tuple):
        return tuple(_map(b, fn) for b in a)
    if isinstance(a, list):
        return [_map(b, fn) for b in a]
    if isinstance(a, dict):
        return {k: _map(v, fn) for k, v in a.items()}
    return fn(a)


def check_input_encoding(input_scale, input_range) -> None:
    """Raise ``ValueError`` unless ``input_scale > 0`` and ``input_range`` is two integers ``low <= high``."""
    if not (is_number(input_scale) and input_scale > 0):
        raise ValueError(f"input_scale={input_scale!r} must be a positive number")
    lo, hi = input_range
    if not (isinstance(lo, int) and isinstance(hi, int) and lo <= hi):
        raise ValueError(f"input_range={input_range!r} must be two integers low <= high")


def require_quantizers(tm: TracedModel, flow: str, refuse: dict, what: str, alternative: str) -> None:
    """Raise one report (front-end problems + "no Quantizer") unless the model has LSQ quantizers."""
    from ..quant import Quantizer
    if any(isinstance(m, Quantizer) for m in tm.module.modules()):
        return
    check_supported(tm, flow, refuse=refuse)       # what the float model must change first
    raise UnsupportedModelError(flow, [tm.problem(next(iter(tm.graph.graph.nodes)),
                                f"the model has no Quantizer: {flow} converts {what}", alternative)],
                                type(tm.module).__name__)


def is_number(a) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)
