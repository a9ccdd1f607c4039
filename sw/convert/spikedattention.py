"""spikedattention flow: a float transformer -> one-spike phase-coded SNN, training-free (SpikedAttention).

The source is a float ANN with BatchNorm and ReLU (``DigitsViT(norm="batchnorm")``). No retraining:

* **Calibration.** The model runs once on calibration data (an fx interpreter records every value);
  each phase-coded layer gets a per-channel ``scale`` = max |activation| of that channel (channels whose
  maximum is below ``scale_floor`` times the layer's largest are raised to it).
* **Phase coding.** Every value a later layer reads as spikes becomes a layer of
  :class:`~spikeforge.sw.neurons.PhaseNeuron` s: unipolar after a ReLU, bipolar otherwise. The layer
  integrates one window of ``T`` steps and fires one spike in the next window.
* **Weights.** A spike of source channel ``k`` (value ``unit_k * B**-p`` at step ``p``) drives output
  neuron ``m`` with the current ``W[m, k] * unit_k / scale_m`` in units of ``2**-F`` (``F`` = the layer's
  fractional bits); integer weights use ``weight_bits`` with a per-term right shift.
* **Bias rescaling.** Biases are added at every integration step, divided by ``sum_{p<T} B_q**-p`` (the
  weight a current at step ``p`` gets), so the window adds up to the bias exactly.
* **BatchNorm folding.** A BatchNorm on a coded value is a per-channel affine map; the linear layer that
  reads it absorbs it (weights times ``gamma/sigma``, the shift into the bias).
* **Attention.** ``q @ k^T [* c] -> softmax -> @ v`` becomes one ``attention`` node per block (trace-matmul
  QK^T, WOSS softmax, trace-matmul A·V, division; :class:`~spikeforge.sw.attention.SpikedHeadFormat`
  per head); its quotient is phase-coded again (bipolar) before the projection reads it.
* **Residuals.** ``a + b`` sums both currents into one neuron layer; a spike source read later than the
  window it fires in goes through a ``delay`` node (a FIFO) -- inserted by :func:`schedule`.
* **Head.** The last linear layer feeds an ``integrator`` (the analog potential of one window).

The input is analog (integer counts of ``input_scale`` at step 0, multiply-accumulated by the first layer).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from ..attention import SpikedHeadFormat
from ..attention.woss import DEFAULT_INHIBITION, _check_inhibition
from ..fixed import signed_width_for
from ..ir import Network, Node, Port
from ..neurons import PhaseNeuron
from ..phase_coding import check_phase_params
from ..quant import Quantizer
from .frontend import TracedModel, check_supported, trace
from .lowering import check_input_encoding, LoweringInterpreter, Poison, Sym, flat_index, identity_index, is_number

__all__ = ["SpikedAttentionOptions", "convert_spikedattention", "schedule", "bias_divisor"]


@dataclass
class SpikedAttentionOptions:
    """Conversion options.

    Parameters
    ----------
    input_scale, input_range : the analog input: integer counts of ``input_scale`` in ``input_range``.
    T, B : phase window (steps) and base (> 1).
    weight_bits : signed width of every integer weight (default 16).
    inhibition : WOSS inhibition rule: ``"window_max"`` (default, ``sw.attention.DEFAULT_INHIBITION``;
        subtracts the row maximum of the final potentials) or ``"first_step"`` (the paper's reference rule, which loses accuracy when QK^T
        products arrive over the window -- see docs/results/conversion.md).
    out_frac_bits : fractional bits of the attention quotient.
    scale_floor : lowest channel scale, as a fraction of the layer's largest (keeps weights in range).
    """

    input_scale: float
    input_range: tuple[int, int]
    T: int = 16
    B: float = 1.4
    weight_bits: int = 16
    inhibition: str = DEFAULT_INHIBITION
    out_frac_bits: int = 12
    scale_floor: float = 2.0 ** -6

    def __post_init__(self):
        check_input_encoding(self.input_scale, self.input_range)
        check_phase_params(self.T, self.B)
        if not (isinstance(self.weight_bits, int) and 4 <= self.weight_bits <= 24):
            raise ValueError(f"weight_bits={self.weight_bits!r} must be an integer in 4..24")
        _check_inhibition(self.inhibition)
        if not (isinstance(self.out_frac_bits, int) and 4 <= self.out_frac_bits <= 24):
            raise ValueError(f"out_frac_bits={self.out_frac_bits!r} must be an integer in 4..24")
        if not (is_number(self.scale_floor) and 0 < self.scale_floor <= 1):
            raise ValueError(f"scale_floor={self.scale_floor!r} must be in (0, 1]")


def bias_divisor(model: PhaseNeuron) -> float:
    """``sum_{p<T} B_q**-p``: a current added at every integration step adds up to this many times itself."""
    b = float(model.b_q)
    return sum(b ** -p for p in range(model.T))


# -- symbolic values -----------------------------------------------------------------------------------------
@dataclass
class Held(Sym):
    """Values held by IR node ``node``; ``unit[i]`` is the value of 1 at flat position ``i`` of the node."""
    node: str = ""
    unit: np.ndarray = None


@dataclass
class Analog(Held):
    """Integer values delivered at step 0 of a window (the input counts, attention quotients)."""


@dataclass
class Phase(Held):
    """One-spike phase codes of a neuron layer (``unit`` = per-neuron scale)."""


@dataclass
class Affine(Sym):
    """``mul * src + add`` elementwise (a BatchNorm on a held value), waiting to be folded into a linear."""
    carried: ClassVar[tuple[str, ...]] = ("mul", "add")
    src: Held = None
    mul: torch.Tensor = None
    add: torch.Tensor = None


@dataclass
class Term:
    """``sum_k weight[m, k] * value(node[gather[r, k]])`` -- one linear contribution to a neuron layer."""
    node: str
    gather: np.ndarray                  # [R, K] positions in node (-1: zero)
    weight: np.ndarray                  # float64 [M, K], per unit value of the source
    origin: str
    name: str = ""                      # IR name of its linear node (default: from origin)


_keys = itertools.count(1)


@dataclass
class Pending(Sym):
    """A pre-activation ``[R, M]`` (sum of terms + bias) waiting to be coded by a neuron layer or read out.

    ``idx`` are positions ``r * M + m`` of the layer it will become; ``val`` its float ANN values on the
    calibration data in that order (``[N, R * M]``).
    """
    terms: tuple = ()
    bias: np.ndarray = None             # float64 [R, M]
    relu: bool = False
    val: torch.Tensor = None
    key: int = 0
    origin: str = ""


@dataclass
class Pooled(Sym):
    """Mean (or sum) of a held/affine value over one axis, waiting for the linear layer that reads it."""
    src: Sym = None
    axis: int = 0
    factor: float = 1.0


@dataclass
class Scores(Sym):
    """``q @ k^T * temperature`` of two phase-coded values, per group: ``gq [G,R,D]``, ``gk [G,C,D]``."""
    q: Phase = None
    k: Phase = None
    gq: np.ndarray = None
    gk: np.ndarray = None
    temperature: float = 1.0
    origin: str = ""


@dataclass
class Probs(Sym):
    """``softmax(scores)`` over the keys."""
    scores: Scores = None


def _column_constant(a: np.ndarray, gather: np.ndarray) -> np.ndarray | None:
    """``a[gather]`` per column if it is the same on every row (ignoring -1 padding), else ``None``."""
    vals = np.where(gather >= 0, a[np.maximum(gather, 0)], np.nan)
    col = np.nanmax(vals, 0)
    lo = np.nanmin(vals, 0)
    col = np.where(np.isnan(col), 0.0, col)
    lo = np.where(np.isnan(lo), 0.0, lo)
    if not np.allclose(col, lo, rtol=1e-9, atol=0):
        return None
    return col


_REFUSED = {
    "layernorm": ("LayerNorm is not foldable into weights; SpikedAttention converts BatchNorm transformers",
                  "retrain with BatchNorm (DigitsViT(norm='batchnorm')) or use the spikezip flow with a QANN"),
    "quantizer": ("the spikedattention flow converts a float ANN; quantizers belong to the spikezip flow",
                  "remove the quantizers, or convert the QANN with the spikezip flow"),
    "conv2d": ("the spikedattention flow converts transformers", "use the crnn flow for convolutional networks"),
    "qrnn": ("recurrent layers are converted by the crnn flow (RBIF neurons)", "convert with the crnn flow"),
    "sub": ("subtraction of activations is not converted", "add a negated weight instead"),
    "neg": ("negation of activations is not converted", "fold the sign into the preceding linear layer"),
}


class _Calibrator(fx.Interpreter):
    """Runs the float model and keeps every node's output (the calibration activations)."""

    def __init__(self, gm):
        super().__init__(gm)
        self.values = {}

    def run_node(self, n):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.values[n.name] = out.detach().double()
        return out


class _SpikedAttention(LoweringInterpreter):
    def __init__(self, tm: TracedModel, example_shape, opts: SpikedAttentionOptions, calib: dict):
        super().__init__(tm, example_shape, refused=_REFUSED)
        self.opts = opts
        self.calib = calib
        self.lim = (1 << (opts.weight_bits - 1)) - 1
        self.proto = PhaseNeuron(opts.T, opts.B)          # default F and the realised base
        self.coded: dict[tuple[int, bool], Phase] = {}
        self.units: dict[str, np.ndarray] = {}        # per held node: value of 1 at each flat position
        self.bounds: dict[str, int] = {}              # per analog node: largest |value| (spikes: 1)

    # -- helpers ---------------------------------------------------------------------------------------
    def _val(self, n: fx.Node) -> torch.Tensor:
        v = self.calib[n.name]
        return v.reshape(v.shape[0], -1)

    def _arg_val(self, n: fx.Node, i: int = 0) -> torch.Tensor:
        return self._val(n.args[i])

    def held(self, n: fx.Node, x, i: int = 0):
        """``x`` as a held or affine value: a pending pre-activation is coded first."""
        if isinstance(x, Pending):
            return self.code(n, x)
        if isinstance(x, Analog) and self.by_name[x.node].op == "attention":
            return self.code(n, self.as_pending(n, x, self._arg_val(n, i), "recode"))
        return x

    def as_pending(self, n: fx.Node, x, val: torch.Tensor, label: str = "pass") -> Pending | Poison:
        """A held/affine value (or a pending one already coded) as a pending identity term (its linear node
        is named ``<source>.<label>``)."""
        if isinstance(x, Pending):
            coded = self.coded.get((x.key, x.relu))
            if coded is None:
                if torch.equal(x.idx.reshape(-1), torch.arange(x.idx.numel())):
                    return x
                x = self.code(n, x)
            else:
                x = replace(coded, idx=x.idx)
        src, mul, add = (x.src, x.mul, x.add) if isinstance(x, Affine) else (x, None, None)
        if not isinstance(src, Held):
            return self.fail(n, "this value cannot feed a residual sum or a neuron layer",
                             "add/scale layer outputs, not attention scores or pooled values")
        rows = x.rows()
        c = rows.shape[1]
        m = np.ones(c) if mul is None else _column_constant(mul.reshape(-1).numpy(), np.arange(mul.numel()).reshape(
            rows.shape))
        a = np.zeros(c) if add is None else _column_constant(add.reshape(-1).numpy(), np.arange(add.numel()).reshape(
            rows.shape))
        if m is None or a is None:
            return self.fail(n, "a per-channel affine (BatchNorm) whose channel is not the last axis cannot be folded "
                             "here", "normalise the channel (last) axis")
        origin = f"{src.node}.{label}"
        return Pending(identity_index(x.shape), terms=(Term(src.node, rows, np.diag(m), origin, origin),),
                       bias=np.tile(a, (rows.shape[0], 1)), val=val, key=next(_keys), origin=origin)

    # -- coding: where neuron layers are made ------------------------------------------------------------------
    def _scales(self, p: Pending) -> np.ndarray:
        r, m = p.bias.shape
        v = p.val.reshape(-1, r, m)
        v = v.clamp(min=0) if p.relu else v.abs()
        scale = v.amax((0, 1)).numpy().astype(np.float64)
        top = float(scale.max(initial=0.0))
        if not top > 0:
            return None
        return np.maximum(scale, top * self.opts.scale_floor)

    def _emit_currents(self, n: fx.Node, p: Pending, scale_m: np.ndarray, name: str):
        """Linear nodes (+ add) producing the currents of ``p`` in units of ``2**-F`` of ``scale_m``; returns
        ``(source node name, F, current bound)`` or a :class:`Poison`."""
        coefs = []
        for t in p.terms:
            unit = _column_constant(self.units[t.node], t.gather)
            if unit is None:
                return self.fail(n, "the value's scale differs between rows of the same channel",
                                 "keep channels on the last axis")
            coefs.append(t.weight * unit[None, :] / scale_m[:, None])
        F = self.proto.frac_bits
        top = max(float(np.abs(c).max(initial=0.0)) for c in coefs)
        if top > 0 and top * 2 ** F > self.lim:           # weights too large at F: lower the layer's F
            F = int(math.floor(math.log2(self.lim / top)))
            if F < 1:
                return self.fail(n, f"weights need {signed_width_for(-int(top * 2), int(top * 2))} integer bits, "
                                 f"leaving no fractional bits in weight_bits={self.opts.weight_bits}",
                                 "raise weight_bits or scale_floor")
        model = PhaseNeuron(self.opts.T, self.opts.B, frac_bits=F)
        bias = p.bias / scale_m[None, :] * 2 ** F / bias_divisor(model)
        outs, bound = [], 0
        for i, (t, c) in enumerate(zip(p.terms, coefs)):
            cmax = float(np.abs(c).max(initial=0.0))
            shift = 0 if cmax == 0 else max(0, min(48, int(math.floor(math.log2(self.lim / (cmax * 2 ** F))))))
            w = np.round(c * 2 ** (F + shift)).astype(np.int64)
            src_bound = self.bounds.get(t.node, 1)
            arrays = {"weight": w}
            params = {"weight_bits": self.opts.weight_bits, "shift": shift, "bias_at": "every_step"}
            if i == 0:
                arrays["bias"] = np.round(bias).astype(np.int64)
                bound += int(np.abs(arrays["bias"]).max(initial=0))
            bound += int(math.ceil(int(np.abs(w).sum(1).max(initial=0)) * src_bound / 2 ** shift)) + 1
            node = self.add_node(t.name or t.origin.split(" ")[0], "linear", [Port(t.node, t.gather)], p.bias.shape, t.origin,
                                 params, arrays)
            outs.append(node.name)
        src = outs[0]
        if len(outs) > 1:
            src = self.add_node(name + ".sum", "add", [Port(o) for o in outs], (p.bias.size,), p.origin).name
        return src, F, bound

    def _model(self, F: int, bound: int, bipolar: bool, headroom: int = 2) -> PhaseNeuron:
        proto = PhaseNeuron(self.opts.T, self.opts.B, frac_bits=F, bipolar=bipolar)
        cw = signed_width_for(-bound, bound)
        vw = max(proto.v_width, cw) + headroom
        return PhaseNeuron(self.opts.T, self.opts.B, frac_bits=F, bipolar=bipolar, current_width=cw, v_width=vw)

    def code(self, n: fx.Node, p: Pending):
        """The neuron layer that phase-codes ``p`` (one per pending value and ReLU flag)."""
        key = (p.key, p.relu)
        if key in self.coded:
            return replace(self.coded[key], idx=p.idx)
        scale_m = self._scales(p)
        if scale_m is None:
            return self.fail(n, "this value is 0 on all calibration data, so it has no scale to code it with",
                             "check the calibration data (or remove the dead layer)")
        base = p.origin.split(" ")[0]
        name = base.removesuffix(".recode") + ".out" if base.endswith(".recode") else base + ".spikes"
        emitted = self._emit_currents(n, p, scale_m, name)
        if isinstance(emitted, Poison):
            return emitted
        src, F, bound = emitted
        model = self._model(F, bound, bipolar=not p.relu)
        r = p.bias.shape[0]
        unit = np.tile(scale_m, r)
        node = self.add_node(name, "neuron", [Port(src)], (p.bias.size,), p.origin,
                             {"model": model.to_dict(), "window": 0, "relu": p.relu}, {"scale": unit})
        self.units[node.name] = unit
        phase = Phase(identity_index(tuple(p.bias.shape)), node.name, unit)
        self.coded[key] = phase
        return replace(phase, idx=p.idx)

    # -- sources ------------------------------------------------------------------------------------------------
    def lower_input(self, n, args, kwargs):
        shape = self.example_shape[1:]
        lo, hi = self.opts.input_range
        node = self.add_node("input", "input", [], shape, self.origin(n),
                             {"scale": self.opts.input_scale, "encoding": "analog", "low": lo, "high": hi})
        size = int(np.prod(shape))
        self.units[node.name] = np.full(size, self.opts.input_scale)
        self.bounds[node.name] = max(abs(lo), abs(hi))
        return Analog(identity_index(shape), node.name, self.units[node.name])

    def lower_linear(self, n, args, kwargs):
        x, mod = args[0], self.modules[n.target]
        w = mod.weight.detach().double().numpy()
        b = mod.bias.detach().double().numpy() if mod.bias is not None else np.zeros(w.shape[0])
        x = self.held(n, x)
        if isinstance(x, Poison):
            return x
        if isinstance(x, Pooled):
            return self._pooled_linear(n, x, w, b)
        src, mul, add = (x.src, x.mul, x.add) if isinstance(x, Affine) else (x, None, None)
        if not isinstance(src, Held):
            return self.fail(n, "a linear layer reads layer outputs (spikes), not attention scores or probabilities",
                             "apply linear layers to activations")
        rows = x.rows()
        if mul is not None:
            order = np.arange(mul.numel()).reshape(rows.shape)
            m, a = _column_constant(mul.reshape(-1).numpy(), order), _column_constant(add.reshape(-1).numpy(), order)
            if m is None or a is None:
                return self.fail(n, "the BatchNorm before this linear layer does not normalise the axis the layer "
                                 "reads", "normalise the features the linear layer reads (channel = last axis)")
            b = b + w @ a
            w = w * m[None, :]
        out_shape = (*x.shape[:-1], w.shape[0])
        return Pending(identity_index(out_shape), terms=(Term(src.node, rows, w, self.origin(n)),),
                       bias=np.tile(b, (rows.shape[0], 1)), val=self._val(n), key=next(_keys), origin=self.origin(n))

    def _pooled_linear(self, n, x: Pooled, w, b):
        src = x.src
        base, mul, add = (src.src, src.mul, src.add) if isinstance(src, Affine) else (src, None, None)
        moved = src.idx.movedim(x.axis, -2)
        length, c = moved.shape[-2], moved.shape[-1]
        if c != w.shape[1]:
            return self.fail(n, "a linear layer after pooling must read the channel axis", "pool over tokens")
        gather = moved.reshape(-1, length * c).numpy().copy()
        weight = np.tile(w, (1, length)) * x.factor
        if mul is not None:
            mm = mul.movedim(x.axis, -2).reshape(-1, length * c).numpy()
            aa = add.movedim(x.axis, -2).reshape(-1, length * c).numpy()
            if not (np.allclose(mm, mm[:1]) and np.allclose(aa, aa[:1])):
                return self.fail(n, "the BatchNorm before pooling differs between rows", "normalise the last axis")
            b = b + weight @ aa[0]
            weight = weight * mm[0][None, :]
        out_shape = (*moved.shape[1:-2], w.shape[0])
        return Pending(identity_index(out_shape), terms=(Term(base.node, gather, weight, self.origin(n)),),
                       bias=np.tile(b, (gather.shape[0], 1)), val=self._val(n), key=next(_keys), origin=self.origin(n))

    def lower_batchnorm(self, n, args, kwargs):
        mod = self.modules[n.target]
        x = self.held(n, args[0])
        if isinstance(x, Poison):
            return x
        if mod.running_mean is None or mod.running_var is None:
            return self.fail(n, "BatchNorm without running statistics cannot be folded",
                             "use track_running_stats=True (the default)")
        c = mod.num_features
        g = mod.weight.detach().double() if mod.weight is not None else torch.ones(c, dtype=torch.float64)
        beta = mod.bias.detach().double() if mod.bias is not None else torch.zeros(c, dtype=torch.float64)
        a = g / torch.sqrt(mod.running_var.double() + mod.eps)
        shift = beta - mod.running_mean.double() * a
        if len(x.shape) < 1 or x.shape[0] != c:
            return self.fail(n, f"BatchNorm over {c} channels but axis 1 has {x.shape[:1]}", "check the layout")
        view = (1, c) + (1,) * (len(x.shape) - 1)
        mul = a.reshape(view).expand(x.idx.shape).clone()
        add = shift.reshape(view).expand(x.idx.shape).clone()
        if isinstance(x, Affine):
            return replace(x, mul=x.mul * mul, add=x.add * mul + add)
        if not isinstance(x, Held):
            return self.fail(n, "BatchNorm is folded only on layer outputs", "normalise activations")
        return Affine(x.idx, src=x, mul=mul, add=add)

    # -- arithmetic ---------------------------------------------------------------------------------------------
    def lower_add(self, n, args, kwargs):
        a, b = args[0], args[1]
        if not isinstance(a, Sym):
            a, b = b, a
        if isinstance(a, Sym) and (isinstance(b, torch.Tensor) or is_number(b)):
            p = self.as_pending(n, a, self._arg_val(n, 0 if isinstance(args[0], Sym) else 1))
            if isinstance(p, Poison):
                return p
            const = torch.broadcast_to(torch.as_tensor(b, dtype=torch.float64), p.shape)
            bias = p.bias.copy().reshape(-1)
            np.add.at(bias, flat_index(p.idx), const.reshape(-1).numpy())
            return replace(p, bias=bias.reshape(p.bias.shape), val=self._val(n), key=next(_keys))
        if not (isinstance(a, Sym) and isinstance(b, Sym)):
            return self.fail(n, "only sums of layer outputs or a constant are converted", "add activations")
        if a.shape != b.shape:
            return self.fail(n, f"residual add of shapes {a.shape} and {b.shape} (broadcasting is not converted)",
                             "add tensors of the same shape")
        pa = self.as_pending(n, a, self._arg_val(n, 0), "residual")
        pb = self.as_pending(n, b, self._arg_val(n, 1), "residual")
        if isinstance(pa, Poison) or isinstance(pb, Poison):
            return pa if isinstance(pa, Poison) else pb
        if pa.relu or pb.relu:
            pa, pb = (self.as_pending(n, self.code(n, p), p.val) if p.relu else p for p in (pa, pb))
        if pa.bias.shape != pb.bias.shape:
            return self.fail(n, f"the two summands are laid out as {pa.bias.shape} and {pb.bias.shape}",
                             "add values of the same layout")
        return Pending(identity_index(a.shape), terms=pa.terms + pb.terms, bias=pa.bias + pb.bias, val=self._val(n),
                       key=next(_keys), origin=self.origin(n))

    def _scaled(self, n, x, c):
        if not is_number(c) or c <= 0:
            return self.fail(n, f"scaling by {c!r}: only positive constant factors are converted",
                             "scale by a positive Python number")
        if isinstance(x, Scores):
            return replace(x, temperature=x.temperature * c)
        if isinstance(x, Pooled):
            return replace(x, factor=x.factor * c)
        p = self.as_pending(n, x, self._arg_val(n, 0 if isinstance(n.args[0], fx.Node) else 1))
        if isinstance(p, Poison):
            return p
        if p.relu:
            p = self.as_pending(n, self.code(n, p), p.val)
        return replace(p, terms=tuple(replace(t, weight=t.weight * c) for t in p.terms), bias=p.bias * c,
                       val=self._val(n), key=next(_keys))

    def lower_relu(self, n, args, kwargs):
        x = args[0]
        p = self.as_pending(n, x, self._arg_val(n))
        if isinstance(p, Poison):
            return p
        return replace(p, relu=True, val=p.val.clamp(min=0))

    def _reduce(self, n, args, kwargs, mean: bool):
        x = self.held(n, args[0])
        if isinstance(x, Poison):
            return x
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        if not isinstance(x, (Held, Affine)) or not isinstance(dim, int) or keep:
            return self.fail(n, "mean/sum is converted over one axis of a layer output, followed by a linear layer",
                             "pool with x.mean(dim=<int>) before the classifier")
        d = dim if dim >= 0 else dim + x.idx.dim()
        if d in (0, x.idx.dim() - 1):
            return self.fail(n, "pooling over the batch or channel (last) axis", "pool over tokens")
        length = x.idx.shape[d]
        out_shape = tuple(s for i, s in enumerate(x.idx.shape[1:], 1) if i != d)
        return Pooled(identity_index(out_shape), src=x, axis=d, factor=1.0 / length if mean else 1.0)

    def lower_mean(self, n, args, kwargs):
        return self._reduce(n, args, kwargs, True)

    def lower_sum(self, n, args, kwargs):
        return self._reduce(n, args, kwargs, False)

    # -- attention ----------------------------------------------------------------------------------------------
    def lower_matmul(self, n, args, kwargs):
        a, b = self.held(n, args[0], 0), self.held(n, args[1], 1)
        if isinstance(a, Poison) or isinstance(b, Poison):
            return a if isinstance(a, Poison) else b
        if isinstance(a, Probs) and isinstance(b, Phase):
            return self._attention(n, a.scores, b)
        if not (isinstance(a, Phase) and isinstance(b, Phase)):
            return self.fail(n, "@ is converted as q @ k^T of two layer outputs (trace matmul) followed by softmax "
                             "and @ v", "compute attention as softmax(q @ k.transpose(-2, -1) * c) @ v")
        if len(a.shape) < 2 or len(b.shape) < 2 or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
            return self.fail(n, f"operand shapes {a.shape} @ {b.shape} are not batched matrices with equal leading "
                             "dimensions", "reshape both operands to [..., R, D] and [..., D, C]")
        *lead, r, d = a.shape
        c = b.shape[-1]
        g = int(np.prod(lead, dtype=np.int64)) if lead else 1
        gq = a.idx.reshape(g, r, d).numpy().copy()
        gk = b.idx.reshape(g, d, c).transpose(1, 2).numpy().copy()
        return Scores(identity_index((*lead, r, c)), q=a, k=b, gq=gq, gk=gk, origin=self.origin(n))

    def lower_softmax(self, n, args, kwargs):
        x = args[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if not isinstance(x, Scores) or dim not in (-1, len(x.shape) - 1):
            return self.fail(n, "softmax is converted as WOSS on attention scores q @ k^T over the last axis",
                             "apply softmax(dim=-1) to q @ k^T")
        return Probs(x.idx, scores=x)

    def _attention(self, n, s: Scores, v: Phase):
        g, r, d = s.gq.shape
        c = s.gk.shape[1]
        if v.shape[:-2] != s.shape[:-2] or v.shape[-2] != c:
            return self.fail(n, f"attention weights {s.shape} @ values {v.shape}: keys do not match",
                             "use v with as many tokens as k")
        e = v.shape[-1]
        gv = v.idx.reshape(g, c, e).numpy().copy()
        units = []
        for sym, gather in ((s.q, s.gq), (s.k, s.gk), (v, gv)):
            scale = self.units[sym.node]
            per_group = [_column_constant(scale, gather[i]) for i in range(g)]
            if any(u is None for u in per_group):
                return self.fail(n, "q, k or v scales differ between tokens of one channel", "keep channels last")
            units.append(np.stack(per_group))
        uq, uk, uv = units
        heads = []
        for i in range(g):
            try:
                fmt = SpikedHeadFormat(self.opts.T, self.opts.B, rows=r, keys=c, dim=d, dim_v=e,
                                       weights=uq[i] * uk[i] * s.temperature, inhibition=self.opts.inhibition,
                                       out_frac_bits=self.opts.out_frac_bits)
            except ValueError as err:
                return self.fail(n, f"attention head {i} does not fit the fixed-point formats: {err}",
                                 "lower T or B, or out_frac_bits")
            heads.append(fmt.params())
        node = self.add_node(s.origin.split(" ")[0] + ".attention", "attention",
                             [Port(s.q.node, s.gq), Port(s.k.node, s.gk), Port(v.node, gv)], (g, r, e),
                             self.origin(n), {"heads": heads, "window": 0})
        unit = np.broadcast_to((uv / 2 ** self.opts.out_frac_bits)[:, None, :], (g, r, e)).reshape(-1).copy()
        self.units[node.name] = unit
        self.bounds[node.name] = 2 ** (self.opts.out_frac_bits + 1)
        return Analog(identity_index(v.shape[:-2] + (r, e)), node.name, unit)

    # -- the network output ---------------------------------------------------------------------------------------
    def readout(self, n, out) -> tuple[str, float, tuple]:
        if not isinstance(out, Pending) or out.relu:
            return "", 1.0, ()
        scale = float(out.val.abs().max())
        if not scale > 0:
            return "", 1.0, ()
        emitted = self._emit_currents(n, out, np.full(out.bias.shape[1], scale), "readout")
        if isinstance(emitted, Poison):
            return "", 1.0, ()
        src, F, bound = emitted
        model = self._model(F, bound, bipolar=True, headroom=4)
        node = self.add_node("readout", "integrator", [Port(src)], (out.bias.size,), out.origin,
                             {"model": model.to_dict(), "scale": scale, "window": 0})
        return node.name, scale / (float(model.b_q) ** model.T * 2 ** F), out.shape


# -- scheduling: windows and delays -----------------------------------------------------------------------------------
def schedule(nodes: list[Node], T: int) -> tuple[list[Node], int]:
    """Assign each neuron/attention/integrator node the window it integrates in and insert ``delay`` nodes
    where a spike source is read after the window it fires in. Returns the new node list and the
    latency in steps (end of the integrator's window)."""
    by = {nd.name: nd for nd in nodes}
    avail: dict[str, int] = {}
    out: list[Node] = []
    delays: dict[tuple[str, int], str] = {}
    latency = 0

    def sources(name):                      # spike / analog sources behind a chain of linear and add nodes
        nd = by[name]
        if nd.op in ("linear", "add"):
            return [s for p in nd.inputs for s in sources(p.source)]
        return [name]

    def delayed(src: str, windows: int, before: list[Node]) -> str:
        key = (src, windows)
        if key not in delays:
            d = Node(f"{src}.delay{windows}", "delay", [Port(src)], by[src].shape, {"windows": windows, "T": T},
                     origin=by[src].origin)
            before.append(d)
            delays[key] = d.name
        return delays[key]

    pending: list[Node] = []                # linear/add nodes waiting for their consumer's window
    for nd in nodes:
        if nd.op in ("linear", "add"):
            pending.append(nd)
            continue
        if nd.op == "input":
            avail[nd.name] = 0
            out.append(nd)
            continue
        srcs = sorted({s for p in nd.inputs for s in sources(p.source)})
        w = max(avail[s] for s in srcs)
        nd.params["window"] = w
        extra: list[Node] = []
        chain = [p for p in pending if p.name in _upstream(nd, by)]
        for c in chain + [nd]:
            for i, p in enumerate(c.inputs):
                s = p.source
                if by[s].op in ("linear", "add") or avail[s] >= w:
                    continue
                c.inputs[i] = Port(delayed(s, w - avail[s], extra), p.index)
        out += extra + chain + [nd]
        pending = [p for p in pending if p not in chain]
        if nd.op == "neuron":
            avail[nd.name] = w + 1
        elif nd.op == "attention":
            avail[nd.name] = w + 2
        elif nd.op == "integrator":
            avail[nd.name] = w + 1
            latency = max(latency, (w + 1) * T)
    return out + pending, latency


def _upstream(nd: Node, by: dict[str, Node]) -> set[str]:
    names, stack = set(), [p.source for p in nd.inputs]
    while stack:
        s = stack.pop()
        if by[s].op in ("linear", "add") and s not in names:
            names.add(s)
            stack += [p.source for p in by[s].inputs]
    return names


def convert_spikedattention(model: nn.Module, example: torch.Tensor, calibration: torch.Tensor,
                            opts: SpikedAttentionOptions) -> Network:
    """Convert a float transformer (BatchNorm, ReLU) to a phase-coded SNN, training-free.

    ``example`` is one input batch (its shape fixes the per-sample shape); ``calibration`` a batch of
    inputs for the per-channel scales. Raises
    :class:`~spikeforge.sw.convert.frontend.UnsupportedModelError` listing every unsupported operation.
    """
    model = model.eval()
    tm = trace(model)
    if any(isinstance(m, Quantizer) for m in model.modules()):
        check_supported(tm, "spikedattention", refuse=_REFUSED)
    calib = _Calibrator(tm.graph)
    with torch.no_grad():
        calib.run(calibration)
    low = _SpikedAttention(tm, tuple(example.shape), opts, calib.values)
    out_node, out_scale, out_shape = low.lower_model("spikedattention", _REFUSED)
    nodes, latency = schedule(low.nodes, opts.T)
    net = Network("spikedattention", nodes, out_node, out_scale,
                  {"source": type(model).__name__, "output_shape": list(out_shape), "T": opts.T, "B": opts.B,
                   "weight_bits": opts.weight_bits, "inhibition": opts.inhibition, "latency_steps": latency,
                   "calibration_samples": int(len(calibration))})
    return net.validate()
