"""A whole spiking attention head: QK^T (trace matmul) -> WOSS softmax -> A·V (trace matmul) -> normalise.

Timing (two windows of ``T`` steps): ``q``, ``k`` and ``v`` are one-spike phase codes produced in
window 0. QK^T accumulates in the WOSS neurons during window 0; WOSS fires in window 1, where the A·V
engine pairs its spikes with ``v``'s (``v`` delayed by ``T`` steps, as the reference delays it with
FIFOs). The A·V accumulators integrate ``v = B*v + x`` over window 1, and so does a normaliser column
fed with the constant trace ``G_0`` on every WOSS spike; at the end each output potential is divided by
its row's normaliser. The head returns the analog quotient, ``sum_k p_k v_k / sum_k p_k`` with
``p_k = B**-m_k``.

Scaling: ``q[..., d]`` and ``k[..., d]`` are coded with per-channel scales, and the QK^T trace table
folds ``B * scale_q[d] * scale_k[d] * temperature`` into its entries, so the WOSS potential is
``B**(T-1)`` times the score in natural units. ``v``'s per-channel scale multiplies the quotient (a
consumer folds it into its weights).

Bit-exact model (:class:`SpikedHeadFormat`, what :class:`spikeforge.hw.spiked_head.SpikedHead` computes)
----------------------------------------------------------------------------------------------------
* QK^T: :class:`~.trace.TraceFormat` ``qk`` (phase, ``channels = D``); per-step sums go to WOSS.
* WOSS: :class:`~.woss.WossFormat` with the same ``F``; ``score_bound`` covers every step sum.
* A·V: :class:`~.trace.TraceFormat` ``av`` (phase, ``channels = keys``, weights 1, ``F_av``);
  accumulator ``acc`` of ``av_width`` bits per (row, column), plus column ``E`` (normaliser)::

      ADD at step p:   acc = sat(acc + value)
      STEP p < T-1:    acc = sat(mulB(acc))

* output: ``out = trunc(acc[i, e] * 2**O / acc[i, E])`` (toward zero), saturated to ``out_width``;
  rows whose normaliser is 0 (no key fired) output 0 and are counted as ``empty_rows``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..fixed import check_int, mul_shift_floor, saturate, signed_width_for
from ..phase_coding import check_phase_params, default_b_frac_bits, phase_decode, phase_encode, quantize_base
from .trace import TraceFormat, spike_steps
from .woss import (DEFAULT_INHIBITION, MAX_MODEL_WIDTH, WossFormat, _check_inhibition, woss_fire_steps,
                   woss_probabilities)

__all__ = ["spiked_attention", "spiked_attention_codes", "spiked_attention_fixed", "HeadResult", "SpikedHeadFormat", "FixedHeadResult",
           "channel_scales", "pair_increments"]


def channel_scales(x: torch.Tensor) -> torch.Tensor:
    """Per-channel scale for phase coding: ``max |x|`` over every dim but the last (floor 1e-12)."""
    return x.detach().abs().reshape(-1, x.shape[-1]).amax(0).double().clamp(min=1e-12)


def pair_increments(a_step, a_sign, b_step, b_sign, T: int, value_of) -> torch.Tensor:
    """Per-step sums of a trace matmul: ``x[t, ..., i, j] = sum_d a_sign * b_sign * value_of(d, min)``
    over the pairs ``(a[..., i, d], b[..., j, d])`` whose later spike is at step ``t``.

    ``a_step [..., rows, D]``, ``b_step [..., cols, D]`` (``T`` = no spike); ``value_of(t_early)``
    returns the pair value tensor ``[..., rows, cols, D]`` for the early step tensor of that shape.
    """
    ta = a_step.unsqueeze(-2)          # [..., rows, 1, D]
    tb = b_step.unsqueeze(-3)          # [..., 1, cols, D]
    late = torch.maximum(ta, tb)
    early = torch.minimum(ta, tb)
    sign = a_sign.unsqueeze(-2) * b_sign.unsqueeze(-3)
    val = value_of(early.clamp(max=T - 1)) * sign * (late < T)
    xs = [torch.where(late == t, val, torch.zeros_like(val)).sum(-1) for t in range(T)]
    return torch.stack(xs)


@dataclass
class HeadResult:
    """Float reference outcome: ``out [..., rows, E]`` (units of ``v``), scores (phase-coded QK^T in
    natural units), WOSS fire steps ``[..., rows, keys]`` and probabilities."""

    out: torch.Tensor
    scores: torch.Tensor
    steps: torch.Tensor
    probs: torch.Tensor


def _prepare(q, k, v, T, B, scale_q, scale_k, scale_v, temperature):
    check_phase_params(T, B)
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: q and k must share the head "
                         f"dim and k and v the number of keys")
    D = q.shape[-1]
    scale_q = channel_scales(q) if scale_q is None else torch.as_tensor(scale_q, dtype=torch.float64)
    scale_k = channel_scales(k) if scale_k is None else torch.as_tensor(scale_k, dtype=torch.float64)
    scale_v = channel_scales(v) if scale_v is None else torch.as_tensor(scale_v, dtype=torch.float64)
    temperature = 1 / math.sqrt(D) if temperature is None else float(temperature)
    qs = phase_encode(q, T, B, scale_q)
    ks = phase_encode(k, T, B, scale_k)
    vs = phase_encode(v, T, B, scale_v)
    w = (scale_q * scale_k * temperature).expand(D)
    return qs, ks, vs, w, scale_v


def spiked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, T: int, B: float, *,
                     scale_q=None, scale_k=None, scale_v=None, temperature: float | None = None,
                     inhibition: str = DEFAULT_INHIBITION) -> HeadResult:
    """Float reference of a spiking attention head (SpikedAttention rules).

    ``q [..., rows, D]``, ``k [..., keys, D]``, ``v [..., keys, E]``; scales per channel (default:
    ``max |x|`` of the given data), ``temperature`` default ``1/sqrt(D)``, ``inhibition`` the WOSS
    rule (:mod:`.woss`; default :data:`~.woss.DEFAULT_INHIBITION` = ``"window_max"``). Compare ``out``
    with ``softmax(q k^T * temperature) v``.
    """
    qs, ks, vs, w, scale_v = _prepare(q, k, v, T, B, scale_q, scale_k, scale_v, temperature)
    return spiked_attention_codes(qs, ks, vs, T, B, w, scale_v, inhibition=inhibition)


def spiked_attention_codes(qs: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor, T: int, B: float, weights,
                           scale_v=1.0, *, inhibition: str = DEFAULT_INHIBITION) -> HeadResult:
    """Float reference of a head on one-spike codes ``qs [T, ..., rows, D]``, ``ks [T, ..., keys, D]``,
    ``vs [T, ..., keys, E]`` (one window): ``weights [D]`` = ``scale_q * scale_k * temperature`` per
    channel, ``scale_v`` the per-channel value of ``v``'s spike at step 0."""
    check_phase_params(T, B)
    w = torch.as_tensor(weights, dtype=torch.float64)
    tq, sq = spike_steps(qs)
    tk, sk = spike_steps(ks)
    bt = torch.tensor(float(B), dtype=torch.float64)
    x = pair_increments(tq, sq, tk, sk, T, lambda early: w * torch.pow(bt, -early.double()))
    scores = (x * torch.pow(bt, -torch.arange(T, dtype=torch.float64)).reshape((T,) + (1,) * (x.dim() - 1))).sum(0)
    steps = woss_fire_steps(x, T, B, inhibition=inhibition)
    probs = woss_probabilities(steps, B)
    vhat = phase_decode(vs, B, scale_v)
    return HeadResult(out=probs @ vhat, scores=scores, steps=steps, probs=probs)


class SpikedHeadFormat:
    """Fixed-point formats of every stage of a spiked head (see the module docstring).

    Parameters
    ----------
    T, B : window and base.
    rows, keys, dim, dim_v : tokens of ``q``, tokens of ``k``/``v``, head dims of ``q``/``k`` and ``v``.
    weights : per-channel QK^T weights ``scale_q[d] * scale_k[d] * temperature`` (natural units).
    frac_bits : int, optional
        ``F`` of the QK^T traces and the WOSS potentials; default the trace table's default, lowered
        to the largest with which the WOSS potential fits 62 bits (and some trace is non-zero); when
        none fits, the error names T, B and the limit.
    av_frac_bits : int, optional
        ``F_av`` of the A·V traces; default ``ceil(T log2 B) + 8``, lowered until ``av_width + O <= 62``.
    out_frac_bits : int
        ``O``, fractional bits of the quotient (default 12).
    inhibition : WOSS inhibition rule, ``"window_max"`` (default, :data:`~.woss.DEFAULT_INHIBITION`) or
        ``"first_step"`` (the paper's).
    """

    def __init__(self, T: int, B: float, *, rows: int, keys: int, dim: int, dim_v: int, weights,
                 frac_bits: int | None = None, av_frac_bits: int | None = None, b_frac_bits: int | None = None,
                 out_frac_bits: int = 12, inhibition: str = DEFAULT_INHIBITION):
        check_phase_params(T, B)
        self.inhibition = _check_inhibition(inhibition)
        self.T, self.B = T, float(B)
        self.rows = check_int("rows", rows, minimum=1, maximum=4096)
        self.keys = check_int("keys", keys, minimum=1, maximum=4096)
        self.dim = check_int("dim", dim, minimum=1, maximum=4096)
        self.dim_v = check_int("dim_v", dim_v, minimum=1, maximum=4096)
        self.out_frac_bits = check_int("out_frac_bits", out_frac_bits, minimum=0, maximum=30)
        weights = [float(x) for x in torch.as_tensor(weights, dtype=torch.float64).expand(dim).tolist()]
        b_frac_bits = check_int("b_frac_bits", default_b_frac_bits(T) if b_frac_bits is None else b_frac_bits,
                                minimum=1, maximum=29)
        self.b_frac_bits = b_frac_bits
        self.b_fx, self.b_q = quantize_base(self.B, b_frac_bits)
        bq = float(self.b_q)
        qk_weights = [wd * bq for wd in weights]
        if frac_bits is None:
            frac_bits = self._default_frac_bits(qk_weights, weights, b_frac_bits)
        self.qk = TraceFormat("phase", T=T, B=B, channels=dim, weights=qk_weights, frac_bits=frac_bits,
                              b_frac_bits=b_frac_bits)
        self.woss = self._woss(frac_bits, weights, b_frac_bits, check=True)
        av_default = av_frac_bits is None
        if av_default:    # the largest F_av <= ceil(T log2 B) + 8 that fits (G_0 = B**-1 must not round to 0)
            av_frac_bits = math.ceil(T * math.log2(bq)) + 8
            while av_frac_bits > 0 and self._av_need(av_frac_bits) + self.out_frac_bits > MAX_MODEL_WIDTH:
                av_frac_bits -= 1
            if math.floor((1 << av_frac_bits) / bq + 0.5) == 0:
                raise ValueError(
                    f"T={T}, B={B}, keys={keys}: no av_frac_bits fits the A·V accumulator: with out_frac_bits="
                    f"{self.out_frac_bits}, {MAX_MODEL_WIDTH} bits leave av_frac_bits={av_frac_bits}, where the A·V "
                    f"trace B**-1 rounds to 0: lower T, B, keys or out_frac_bits")
        self.av = TraceFormat("phase", T=T, B=B, channels=keys, frac_bits=av_frac_bits, b_frac_bits=b_frac_bits)
        self.av_width = self._av_need(self.av.frac_bits)
        if self.av_width + self.out_frac_bits > MAX_MODEL_WIDTH:
            even = " (even with the smallest av_frac_bits, 0)" if av_default else ""
            raise ValueError(
                f"T={T}, B={B}, keys={keys}: the A·V accumulator needs {self.av_width} bits and the quotient "
                f"{self.out_frac_bits} more, over {MAX_MODEL_WIDTH}{even}: lower "
                f"{'' if av_default else 'av_frac_bits, '}out_frac_bits, keys, T or B")
        self.out_width = self.out_frac_bits + 2
        self.weights = weights

    def _default_frac_bits(self, qk_weights, weights, b_frac_bits) -> int:
        """The QK^T trace table's default ``F``, lowered to the largest with which the WOSS potential fits
        62 bits and some trace is non-zero; ``ValueError`` naming T, B and the limit when none does."""
        T, B = self.T, self.B
        start = TraceFormat("phase", T=T, B=B, channels=self.dim, weights=qk_weights, b_frac_bits=b_frac_bits).frac_bits
        for f in range(start, -1, -1):
            if self._woss(f, weights, b_frac_bits, check=False) is None:
                continue
            try:
                TraceFormat("phase", T=T, B=B, channels=self.dim, weights=qk_weights, frac_bits=f,
                            b_frac_bits=b_frac_bits)
            except ValueError:          # every trace rounds to 0: a smaller F only makes it worse
                break
            return f
        try:
            self._woss(0, weights, b_frac_bits, check=True)
            why = "the WOSS potential fits only where every QK^T trace rounds to 0"
        except ValueError as e:
            why = str(e).replace("lower frac_bits, score_bound, T or B", "lower T, B or the QK^T weights")
        raise ValueError(f"T={T}, B={B}: no frac_bits fits the spiked head's fixed-point formats: {why}")

    def _woss(self, frac_bits, weights, b_frac_bits, *, check):
        lut0 = [math.floor(w * (1 << frac_bits) + 0.5) for w in weights]
        bound = (sum(lut0) + 1) / (1 << frac_bits)
        try:
            return WossFormat(self.T, self.B, score_bound=bound, frac_bits=frac_bits, b_frac_bits=b_frac_bits,
                              inhibition=self.inhibition)
        except ValueError:
            if check:
                raise
            return None

    def _av_need(self, av_frac_bits) -> int:
        lut0 = math.floor((1 << av_frac_bits) / self.B + 0.5) + 1
        bound = math.ceil(self.keys * lut0 * float(self.b_q) ** (self.T - 1)) + 1
        return signed_width_for(-bound, bound)

    def params(self) -> dict:
        return {"T": self.T, "B": self.B, "rows": self.rows, "keys": self.keys, "dim": self.dim,
                "dim_v": self.dim_v, "weights": self.weights, "frac_bits": self.qk.frac_bits,
                "av_frac_bits": self.av.frac_bits, "b_frac_bits": self.b_frac_bits,
                "out_frac_bits": self.out_frac_bits, "inhibition": self.inhibition}

    @classmethod
    def from_params(cls, p: dict) -> "SpikedHeadFormat":
        p = dict(p)
        return cls(p.pop("T"), p.pop("B"), **p)

    # -- the bit-exact pipeline -----------------------------------------------------------------
    def qk_increments(self, tq, sq, tk, sk) -> torch.Tensor:
        lut = self.qk.lut_tensor()                       # [D, T]
        d = torch.arange(self.dim)
        return pair_increments(tq, sq, tk, sk, self.T, lambda early: lut[d, early])

    def av_increments(self, steps, tv, sv) -> torch.Tensor:
        """Per-step A·V sums ``[T, ..., rows, E + 1]`` (last column: normaliser)."""
        lut = torch.tensor(self.av.lut[0], dtype=torch.int64)     # identical rows (weights 1)
        ta = torch.where(steps >= 0, steps, self.T)               # [..., rows, keys]
        sa = (steps >= 0).to(torch.int64)
        # contraction over keys: a = (rows, channel=key), b = (E, channel=key)
        x = pair_increments(ta, sa, tv.transpose(-1, -2), sv.transpose(-1, -2), self.T, lambda early: lut[early])
        norm = torch.stack([((ta == t) * lut[0]).sum(-1) for t in range(self.T)])
        return torch.cat([x, norm.unsqueeze(-1)], -1)

    def accumulate_av(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        acc = torch.zeros(x.shape[1:], dtype=torch.int64)
        overflows = 0
        for t in range(self.T):
            acc, o = saturate(acc + x[t], self.av_width)
            overflows += int(o.sum())
            if t < self.T - 1:
                acc, o = saturate(mul_shift_floor(acc, self.b_fx, self.b_frac_bits), self.av_width)
                overflows += int(o.sum())
        return acc, overflows

    def divide(self, acc: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Quotients ``[..., rows, E]``, the number of empty rows and of saturated quotients."""
        norm = acc[..., -1:]
        num = acc[..., :-1]
        empty = norm <= 0
        mag = (num.abs() << self.out_frac_bits) // torch.where(empty, 1, norm)
        q = torch.where(empty, 0, torch.where(num < 0, -mag, mag))
        q, o = saturate(q, self.out_width)
        return q, int(empty.sum()), int(o.sum())

    def run(self, q_spikes: torch.Tensor, k_spikes: torch.Tensor, v_spikes: torch.Tensor) -> "FixedHeadResult":
        """Bit-exact head on one-spike codes ``q [T, ..., rows, D]``, ``k [T, ..., keys, D]``,
        ``v [T, ..., keys, E]`` (window-relative steps)."""
        tq, sq = spike_steps(q_spikes)
        tk, sk = spike_steps(k_spikes)
        tv, sv = spike_steps(v_spikes)
        x = self.qk_increments(tq, sq, tk, sk)
        woss = self.woss.run(x)
        xa = self.av_increments(woss.steps, tv, sv)
        acc, av_ovf = self.accumulate_av(xa)
        out, empty, out_ovf = self.divide(acc)
        return FixedHeadResult(out=out, steps=woss.steps, qk_x=x, av_x=xa, acc=acc, empty_rows=empty,
                               overflows=woss.overflows + av_ovf + out_ovf, fmt=self)


@dataclass
class FixedHeadResult:
    """Bit-exact head outcome: integer quotients ``out`` (``O`` fractional bits, units of ``v``'s
    scale), WOSS fire steps, per-step inputs of both accumulators, final A·V accumulators, counters."""

    out: torch.Tensor
    steps: torch.Tensor
    qk_x: torch.Tensor
    av_x: torch.Tensor
    acc: torch.Tensor
    empty_rows: int
    overflows: int
    fmt: SpikedHeadFormat

    def decoded(self, scale_v) -> torch.Tensor:
        return self.out.double() / (1 << self.fmt.out_frac_bits) * torch.as_tensor(scale_v, dtype=torch.float64)


def spiked_attention_fixed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, T: int, B: float, *,
                           scale_q=None, scale_k=None, scale_v=None, temperature: float | None = None,
                           **format_args) -> tuple[torch.Tensor, FixedHeadResult]:
    """Bit-exact counterpart of :func:`spiked_attention`: returns the decoded output ``[..., rows, E]``
    and the full :class:`FixedHeadResult`. ``format_args`` go to :class:`SpikedHeadFormat`."""
    qs, ks, vs, w, scale_v = _prepare(q, k, v, T, B, scale_q, scale_k, scale_v, temperature)
    fmt = SpikedHeadFormat(T, B, rows=q.shape[-2], keys=k.shape[-2], dim=q.shape[-1], dim_v=v.shape[-1],
                           weights=w, **format_args)
    res = fmt.run(qs, ks, vs)
    return res.decoded(scale_v), res

