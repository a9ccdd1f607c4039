"""spikezip flow: a QANN with LSQ quantizers -> ST-BIF spiking network, exact (SpikeZIP-TF).

Every :class:`~spikeforge.sw.quant.Quantizer` of the source model becomes a layer of ST-BIF neurons
whose threshold is the quantizer step in integer units: a neuron fed by a linear layer gets
``theta`` and integer weights ``round(W s_in / s_out * theta)`` (``theta`` as large as
``weight_bits`` allows), bias ``round(b / s_out * theta)`` added once at step 0; after quiescence its
tracer equals ``clip(floor((W_int n + b_int + theta//2) / theta), n_min, n_max)`` -- the *integer QANN*,
which is what "bit-exact" is measured against (its agreement with the float QANN is reported).

What the flow converts (source pattern -> IR):

* ``Linear [+ constant] [ReLU] Quantizer`` -> ``linear`` + ``neuron`` (ST-BIF; ReLU needs an unsigned quantizer)
* ``a @ b`` of two quantized values (SESA, count traces) -> ``matmul``; ``[* c] softmax Quantizer`` ->
  ``softmax`` unit + ``neuron`` (theta 1); ``Quantizer`` right after ``@`` -> ``matmul`` with an integer gain
* ``LayerNorm Quantizer`` -> ``layernorm`` unit + ``neuron`` (theta 1)
* ``q1 + q2`` of values with the same quantizer step (share the Quantizer) -> ``add``
* ``mean``/``sum`` over an axis -> ``sum``; the last ``Linear`` without a quantizer -> readout ``linear``
* any reshape/permute/transpose/slice -> gather maps
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from ..fixed import signed_width_for
from ..ir import Network, Port
from ..neurons import StBif
from ..quant import Quantizer
from .frontend import TracedModel, trace
from .lowering import check_input_encoding, LoweringInterpreter, Poison, Sym, flat_index, identity_index, is_number, require_quantizers

__all__ = ["convert_spikezip", "SpikezipOptions"]


@dataclass
class SpikezipOptions:
    """Conversion options.

    Parameters
    ----------
    input_scale : float
        Value of one input count: inputs must be integer multiples of it (digits: ``1/16``).
    input_range : (int, int)
        Range of the input counts (digits: ``(0, 16)``).
    weight_bits : int
        Signed width of every integer weight and gain; thresholds are chosen per layer to use it.
    """

    input_scale: float
    input_range: tuple[int, int]
    weight_bits: int = 8

    def __post_init__(self):
        check_input_encoding(self.input_scale, self.input_range)
        if not (isinstance(self.weight_bits, int) and 2 <= self.weight_bits <= 24):
            raise ValueError(f"weight_bits={self.weight_bits!r} must be an integer in 2..24")


# -- symbolic values ----------------------------------------------------------------------------------------
@dataclass
class Counts(Sym):
    """Integer counts held by IR node ``node``: value = ``scale * count``, count in ``[low, high]``."""
    node: str = ""
    scale: float = 1.0
    low: int = 0
    high: int = 0

    @property
    def bound(self) -> int:
        return max(abs(self.low), abs(self.high))


@dataclass
class PendingLinear(Sym):
    """``W x + b`` over gathered counts, waiting for its quantizer (or for the network output)."""
    src: Counts = None
    gather: np.ndarray = None          # [R, K]
    weight: np.ndarray = None          # float64 [M, K]
    bias: np.ndarray = None            # float64 [R * M]
    relu: bool = False
    origin: str = ""


@dataclass
class PendingProduct(Sym):
    """SESA product of two count tensors per group, value = ``scale * (A @ B)``."""
    a: Counts = None
    b: Counts = None
    ga: np.ndarray = None              # [G, R, K]
    gb: np.ndarray = None              # [G, K, C]
    scale: float = 1.0
    relu: bool = False
    origin: str = ""


@dataclass
class PendingUnit(Sym):
    """A softmax / LayerNorm unit over rows of ``source``, waiting for its quantizer."""
    kind: str = ""
    source: str = ""
    gather: np.ndarray = None          # [R, C]
    in_scale: float = 1.0
    extra: dict = field(default_factory=dict)
    relu: bool = False
    origin: str = ""


def _theta_for(coef_max: float, lim: int) -> int:
    return max(1, int(math.floor(lim / coef_max))) if coef_max > 0 else lim


def _stbif(theta: int, n_min: int, n_max: int, x_bound: int) -> StBif:
    """An ST-BIF model wide enough that no accumulation can saturate (``x_bound`` = max |sum of input|)."""
    x_bound = max(int(x_bound), 1)
    v_bound = theta // 2 + x_bound + theta * max(abs(n_min), abs(n_max)) + theta
    return StBif(theta, n_min, n_max, current_width=signed_width_for(-x_bound, x_bound),
                 v_width=signed_width_for(-v_bound, v_bound))


_REFUSED = {
    "batchnorm": ("spikezip converts LayerNorm transformers (SpikeZIP-TF); BatchNorm models are the "
                  "spikedattention flow's input", "use nn.LayerNorm, or convert with the spikedattention flow"),
    "conv2d": ("the spikezip flow converts transformers", "use the crnn flow for convolutional networks"),
    "qrnn": ("recurrent layers are converted by the crnn flow (RBIF neurons)", "convert with the crnn flow"),
    "sub": ("subtraction of activations is not converted", "add a negated weight instead"),
    "neg": ("negation of activations is not converted", "fold the sign into the preceding linear layer"),
}


class _Spikezip(LoweringInterpreter):
    def __init__(self, tm: TracedModel, example_shape, opts: SpikezipOptions):
        super().__init__(tm, example_shape, refused=_REFUSED)
        self.opts = opts
        self.lim = (1 << (opts.weight_bits - 1)) - 1
        calls = Counter(m.target for m in tm.graph.graph.nodes if m.op == "call_module")
        self.shared = {t for t, k in calls.items() if k > 1}

    def _linear_node(self, n, x: PendingLinear, unit: float):
        """Emit ``x`` as an integer ``linear`` node whose output unit is ``unit / theta``, with ``theta`` as
        large as ``weight_bits`` allows; returns ``(node, weight, bias, theta)`` or a :class:`Poison`."""
        coef = x.weight / unit
        theta = _theta_for(float(np.abs(coef).max(initial=0)), self.lim)
        w = np.round(coef * theta).astype(np.int64)
        if np.abs(w).max(initial=0) > self.lim:
            top = int(np.abs(w).max())
            return self.fail(n, f"weights need {signed_width_for(-top, top)} bits at threshold 1, more than "
                             f"weight_bits={self.opts.weight_bits}", "raise weight_bits")
        r, m = x.gather.shape[0], w.shape[0]
        bias = np.round(x.bias / unit * theta).astype(np.int64).reshape(r, m)
        node = self.add_node(x.origin.split(" ")[0], "linear", [Port(x.src.node, x.gather)], (r, m), x.origin,
                             {"weight_bits": self.opts.weight_bits}, {"weight": w, "bias": bias})
        return node, w, bias, theta

    # -- sources ----------------------------------------------------------------------------------------
    def lower_input(self, n, args, kwargs):
        shape = self.example_shape[1:]
        lo, hi = self.opts.input_range
        node = self.add_node("input", "input", [], shape, self.origin(n),
                             {"scale": self.opts.input_scale, "encoding": "analog", "low": lo, "high": hi})
        return Counts(identity_index(shape), node.name, self.opts.input_scale, lo, hi)

    def lower_linear(self, n, args, kwargs):
        x, mod = args[0], self.modules[n.target]
        if not isinstance(x, Counts):
            return self.fail(n, "a linear layer must read a quantized value (spikes)",
                             "put a Quantizer between the previous layer and this one")
        rows = x.rows()
        w = mod.weight.detach().double().numpy()
        b = (mod.bias.detach().double().numpy() if mod.bias is not None else np.zeros(w.shape[0]))
        out_shape = (*x.shape[:-1], w.shape[0])
        return PendingLinear(identity_index(out_shape), src=x, gather=rows, weight=w * x.scale,
                             bias=np.tile(b, rows.shape[0]), origin=self.origin(n))

    def lower_add(self, n, args, kwargs):
        a, b = args[0], args[1]
        if isinstance(b, PendingLinear) and not isinstance(a, Sym):
            a, b = b, a
        if isinstance(a, PendingLinear) and (isinstance(b, torch.Tensor) or is_number(b)):
            const = torch.broadcast_to(torch.as_tensor(b, dtype=torch.float64), a.shape)
            bias = a.bias.copy()
            np.add.at(bias, flat_index(a.idx), const.reshape(-1).numpy())
            return replace(a, bias=bias)
        if isinstance(a, Counts) and isinstance(b, Counts):
            if a.shape != b.shape:
                return self.fail(n, f"residual add of shapes {a.shape} and {b.shape} (broadcasting is not "
                                 "converted)", "add tensors of the same shape")
            if not math.isclose(a.scale, b.scale, rel_tol=1e-9):
                return self.fail(n, f"residual add of values with different quantizer steps ({a.scale:.6g} and "
                                 f"{b.scale:.6g}): the sum of their spike counts is not an integer in one unit",
                                 "quantize both branches with the same Quantizer instance (shared step)")
            node = self.add_node(n.name, "add", [Port(a.node, a.idx.reshape(-1).numpy().copy()),
                                                 Port(b.node, b.idx.reshape(-1).numpy().copy())],
                                 (int(np.prod(a.shape)),), self.origin(n))
            return Counts(identity_index(a.shape), node.name, a.scale, a.low + b.low, a.high + b.high)
        return self.fail(n, "only a residual add of two quantized values or a constant added to a linear "
                         "layer's output is converted", "add constants before the quantizer, spikes after it")

    def _scaled(self, n, x, c):
        if not is_number(c) or c <= 0:
            return self.fail(n, f"scaling by {c!r}: only positive constant factors are converted",
                             "scale by a positive Python number")
        if isinstance(x, PendingLinear):
            return replace(x, weight=x.weight * c, bias=x.bias * c)
        if isinstance(x, (Counts, PendingProduct)):
            return replace(x, scale=x.scale * c)
        return self.fail(n, "scaling is converted only on spikes, products and linear outputs",
                         "move the factor into the preceding linear layer")

    def lower_matmul(self, n, args, kwargs):
        a, b = args[0], args[1]
        if not (isinstance(a, Counts) and isinstance(b, Counts)):
            return self.fail(n, "@ is converted between two quantized values (SESA with count traces)",
                             "quantize both operands (q/k/v, softmax and attn·V quantizers)")
        if len(a.shape) < 2 or len(b.shape) < 2 or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
            return self.fail(n, f"operand shapes {a.shape} @ {b.shape} are not batched matrices with equal "
                             "leading dimensions", "reshape both operands to [..., R, K] and [..., K, C]")
        *lead, r, k = a.shape
        c = b.shape[-1]
        g = int(np.prod(lead, dtype=np.int64)) if lead else 1
        return PendingProduct(identity_index((*lead, r, c)), a=a, b=b, ga=a.idx.reshape(g, r, k).numpy().copy(),
                              gb=b.idx.reshape(g, k, c).numpy().copy(), scale=a.scale * b.scale, origin=self.origin(n))

    def _matmul_node(self, n, p: PendingProduct, gain: int):
        g, r, _ = p.ga.shape
        return self.add_node(p.origin.split(" ")[0] + ".matmul", "matmul",
                             [Port(p.a.node, p.ga), Port(p.b.node, p.gb)], (g, r, p.gb.shape[2]), p.origin,
                             {"gain": gain})

    def lower_softmax(self, n, args, kwargs):
        x = args[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if dim not in (-1, len(x.shape) - 1):
            return self.fail(n, f"softmax over dim={dim}: the softmax unit normalises the last axis",
                             "apply softmax with dim=-1")
        if isinstance(x, PendingProduct):
            src = self._matmul_node(n, x, 1).name
        elif isinstance(x, Counts):
            src = x.node
        else:
            return self.fail(n, "softmax is converted on attention scores (q @ k^T) or quantized values",
                             "compute scores with @ between quantized q and k")
        return PendingUnit(identity_index(x.shape), kind="softmax", source=src, gather=x.rows(), in_scale=x.scale,
                           origin=self.origin(n))

    def lower_layernorm(self, n, args, kwargs):
        x, mod = args[0], self.modules[n.target]
        if not isinstance(x, Counts):
            return self.fail(n, "LayerNorm must read a quantized value (the residual stream)",
                             "quantize its input")
        if tuple(mod.normalized_shape) != (x.shape[-1],):
            return self.fail(n, f"LayerNorm over {tuple(mod.normalized_shape)}: the unit normalises the last axis",
                             "normalise the last axis only")
        c = x.shape[-1]
        gamma = mod.weight.detach().double().numpy() if mod.weight is not None else np.ones(c)
        beta = mod.bias.detach().double().numpy() if mod.bias is not None else np.zeros(c)
        return PendingUnit(identity_index(x.shape), kind="layernorm", source=x.node, gather=x.rows(),
                           in_scale=x.scale, extra={"gamma": gamma, "beta": beta, "eps": float(mod.eps)},
                           origin=self.origin(n))

    def lower_relu(self, n, args, kwargs):
        x = args[0]
        if isinstance(x, (PendingLinear, PendingProduct, PendingUnit)):
            return replace(x, relu=True)
        return self.fail(n, "a ReLU must sit between a layer and its quantizer (it becomes the unsigned neuron)",
                         "order the layers as Linear -> ReLU -> Quantizer(levels, signed=False)")

    def _reduce(self, n, args, kwargs, mean: bool):
        x = args[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        if not isinstance(x, Counts) or not isinstance(dim, int):
            return self.fail(n, "mean/sum is converted over one axis of a quantized value",
                             "pool quantized tokens with x.mean(dim=<int>)")
        d = dim if dim >= 0 else dim + x.idx.dim()
        if d == 0:
            return self.fail(n, "mean over the batch axis", "reduce over a feature or token axis")
        moved = x.idx.movedim(d, -1)
        k = moved.shape[-1]
        out_shape = tuple(moved.shape[1:-1])
        node = self.add_node(n.name, "sum", [Port(x.node, moved.reshape(-1, k).numpy().copy())],
                             (int(np.prod(out_shape, dtype=np.int64)),), self.origin(n))
        idx = identity_index(out_shape)
        if keep:
            idx = idx.unsqueeze(d)
        return Counts(idx, node.name, x.scale / k if mean else x.scale, k * x.low, k * x.high)

    def lower_mean(self, n, args, kwargs):
        return self._reduce(n, args, kwargs, True)

    def lower_sum(self, n, args, kwargs):
        return self._reduce(n, args, kwargs, False)

    # -- quantizer: where neurons are made ------------------------------------------------------------
    def lower_quantizer(self, n, args, kwargs):
        x, q = args[0], self.modules[n.target]
        s = float(q.step.detach())
        if not s > 0:
            return self.fail(n, f"quantizer step {s} is not positive (untrained quantizer?)",
                             "train the QANN (LSQ initialises the step on the first batch)")
        origin = self.origin(n)
        name = (getattr(x, "origin", "").split(" ")[0] + "_quant") if n.target in self.shared else str(n.target)
        if isinstance(x, Counts):     # requantizing spikes / the input: a one-weight linear layer per neuron
            rows = x.idx.reshape(-1, 1).numpy().copy()
            x = PendingLinear(identity_index(x.shape), src=x, gather=rows, weight=np.array([[x.scale]]),
                              bias=np.zeros(rows.shape[0]), origin=origin)
        if getattr(x, "relu", False) and q.signed:
            return self.fail(n, "a ReLU followed by a signed quantizer", "use Quantizer(levels, signed=False)")
        if isinstance(x, PendingLinear):
            emitted = self._linear_node(n, x, s)
            if isinstance(emitted, Poison):
                return emitted
            lin, w, bias, theta = emitted
            x_bound = int((np.abs(w).sum(1)[None, :] * x.src.bound + np.abs(bias)).max())
            model = _stbif(theta, q.n_min, q.n_max, x_bound)
            inputs, size = [Port(lin.name)], lin.size
        elif isinstance(x, PendingProduct):
            coef = x.scale / s
            theta = _theta_for(coef, self.lim)
            gain = int(round(coef * theta))
            if gain < 1 or gain > self.lim:
                return self.fail(n, f"attention product scale {coef:.3g} cannot be an integer gain in "
                                 f"weight_bits={self.opts.weight_bits}", "raise weight_bits")
            mm = self._matmul_node(n, x, gain)
            x_bound = gain * x.ga.shape[2] * x.a.bound * x.b.bound
            model = _stbif(theta, q.n_min, q.n_max, x_bound)
            inputs, size = [Port(mm.name)], mm.size
        elif isinstance(x, PendingUnit):
            r, c = x.gather.shape
            params = {"in_scale": x.in_scale, "out_step": s, "n_min": q.n_min, "n_max": q.n_max}
            arrays = {}
            if x.kind == "layernorm":
                params["eps"] = x.extra["eps"]
                arrays = {"gamma": x.extra["gamma"], "beta": x.extra["beta"]}
            unit_name = x.origin.split(" ")[0] + ("" if x.kind == "layernorm" else ".softmax")
            unit = self.add_node(unit_name, x.kind, [Port(x.source, x.gather)], (r, c), x.origin, params, arrays)
            model = _stbif(1, q.n_min, q.n_max, q.n_max - q.n_min)
            inputs, size = [Port(unit.name)], r * c
        else:
            return self.fail(n, "a quantizer must follow a linear layer, an @ product, softmax, LayerNorm or "
                             "another quantized value", "remove the extra quantizer")
        neuron = self.add_node(name, "neuron", inputs, (size,), origin, {"model": model.to_dict(), "step": s,
                               "signed": q.signed, "levels": q.levels})
        return Counts(x.idx, neuron.name, s, q.n_min, q.n_max)

    # -- the network output ------------------------------------------------------------------------------
    def readout(self, n, out) -> tuple[str, float, tuple]:
        """The output node, the value of one output unit and the output shape (``""`` if not convertible)."""
        if isinstance(out, PendingLinear):
            emitted = self._linear_node(n, out, 1.0)
            if isinstance(emitted, Poison):
                return "", 1.0, ()
            node, _, _, theta = emitted
            return node.name, 1.0 / theta, out.shape
        if isinstance(out, Counts) and torch.equal(out.idx.reshape(-1), torch.arange(out.idx.numel())):
            return out.node, out.scale, out.shape
        return "", 1.0, ()


def convert_spikezip(model: nn.Module, example: torch.Tensor, opts: SpikezipOptions) -> Network:
    """Convert a QANN with LSQ :class:`~spikeforge.sw.quant.Quantizer` s to an ST-BIF network.

    ``example`` is one input batch (its shape fixes the per-sample shape). Raises
    :class:`~spikeforge.sw.convert.frontend.UnsupportedModelError` listing every unsupported
    operation of the model, with location, reason and alternative.
    """
    model = model.eval()
    tm = trace(model)
    require_quantizers(tm, "spikezip", _REFUSED, "a QANN", "insert LSQ quantizers (spikeforge.sw.quant) and "
                       "fine-tune, or use the spikedattention flow for a float model")
    low = _Spikezip(tm, tuple(example.shape), opts)
    out_node, out_scale, out_shape = low.lower_model("spikezip", _REFUSED)
    net = Network("spikezip", low.nodes, out_node, out_scale,
                  {"source": type(model).__name__, "output_shape": list(out_shape),
                   "weight_bits": opts.weight_bits,
                   "levels": sorted({q.levels for q in model.modules() if isinstance(q, Quantizer)})})
    return net.validate()
