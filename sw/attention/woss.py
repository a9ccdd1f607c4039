"""WOSS softmax (winner-oriented spike shift, SpikedAttention): float reference and bit-exact model.

One neuron per (row, key). A period is ``2T`` steps: ``T`` integration steps, then a ``T``-step fire
window. Per row:

* **global inhibition**, ``inhibition=`` :data:`DEFAULT_INHIBITION` = ``"window_max"`` unless given.
  ``"first_step"`` (the paper's rule): in every integration step up
  to and including the first one whose row maximum is positive, that step's row maximum is subtracted
  from every input of the row (the reference code's rule; for scores given at once it subtracts the
  row maximum once). With time-resolved inputs (QK^T products arriving over the window) the first
  positive step's maximum is not the final row maximum, and keys that end above it by ``ln(B)/2`` or
  more all fire at ``j = 0`` together; ``inhibition="window_max"`` (ours) instead subtracts the row
  maximum of the final potentials, found during the last integration sweep at no extra latency;
* **integration** ``v = B*v + x`` for ``t < T``, so ``V_k = B**(T-1) (a_k - a_max)`` for scores ``a``;
* **fire window** ``j = 0 .. T-1``: threshold ``theta_j = B**(T-1) ln(B) (1/2 - j)``; an unfired neuron
  fires once, at the first ``j`` with ``V >= theta_j``: key ``k`` fires at ``m_k = 1 + round((a_max -
  a_k)/ln B)``, the winner first, and keys with ``m_k > T-1`` never fire;
* **normalisation**: a spike at ``m`` means ``B**-m ~ B**-1 exp(a_k - a_max)``; the probabilities are
  ``B**-m_k / sum_k B**-m_k`` (in hardware the A·V stage's normaliser column computes the sum).

Bit-exact model (:class:`WossFormat`, what :class:`spikeforge.hw.woss_softmax.WossSoftmax` computes)
----------------------------------------------------------------------------------------------------
Integers with ``F`` fractional bits: the input of step ``t`` is ``x`` (``x_width`` bits, accumulated
with saturation), the potential ``v`` and the row's inhibition offset ``u`` are ``v_width`` bits. At the
end of integration step ``t``, for each row (``mulB(z) = floor(z * B_fx / 2**bf)``)::

    m = max_k x[k]
    v[k] = sat(mulB(v[k]) + x[k]) ; x[k] = 0                     for every key k
    u    = sat(mulB(u) + m) if inhibiting else sat(mulB(u))        # "first_step"
    inhibiting = inhibiting and m <= 0
    at t = T-1, "window_max" instead sets u = max_k v[k]          # the new potentials

and at fire step ``j`` an unfired neuron fires if ``v - u >= theta_fx[j]`` where ``theta_fx[j] =
round(B_q**(T-1) ln(B_q) (1/2 - j) 2**F)``. ``v - u`` is the inhibited potential of the reference: the
row's subtraction is kept as one offset per row instead of being applied to every neuron.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from ..fixed import check_int, mul_shift_floor, saturate, signed_range, signed_width_for
from ..phase_coding import check_phase_params, default_b_frac_bits, quantize_base

__all__ = ["woss_softmax", "woss_fire_steps", "woss_probabilities", "WossFormat", "WossResult",
           "woss_softmax_fixed", "MAX_MODEL_WIDTH", "DEFAULT_INHIBITION", "INHIBITIONS"]

MAX_MODEL_WIDTH = 62  # the bit-exact model computes in int64 (with a split multiplier)


def _thresholds(T: int, B: float) -> torch.Tensor:
    j = torch.arange(T, dtype=torch.float64)
    return B ** (T - 1) * math.log(B) * (0.5 - j)


def _first_crossing(v: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """First ``j`` with ``v >= thresholds[j]`` for decreasing thresholds; ``-1`` if none."""
    T = thresholds.numel()
    count = (v.unsqueeze(-1) >= thresholds).sum(-1)
    return torch.where(count > 0, T - count, torch.full_like(count, -1))


INHIBITIONS = ("first_step", "window_max")
#: The WOSS inhibition rule every signature in :mod:`spikeforge.sw.attention` (and the conversion flow)
#: defaults to: the row maximum of the final potentials. The paper's ``first_step`` rule is an option;
#: with QK^T products arriving over the window it gives 2x the mean and 4-5x the max head error at
#: T=24, B=1.4 on random data (docs/attention.md, ``benchmarks/woss_inhibition.py``).
DEFAULT_INHIBITION = "window_max"


def _check_inhibition(inhibition: str) -> str:
    if inhibition not in INHIBITIONS:
        raise ValueError(f"inhibition={inhibition!r} is not a WOSS inhibition rule: use one of {INHIBITIONS}")
    return inhibition


def woss_fire_steps(x: torch.Tensor, T: int, B: float, *, inhibition: str = DEFAULT_INHIBITION) -> torch.Tensor:
    """Float WOSS on time-resolved inputs ``x [S, ..., keys]`` (``S <= T`` integration steps, units such
    that a score ``a`` given at step 0 is ``x[0] = a``). Returns the fire step ``m`` of every key
    ``[..., keys]`` (int64, ``-1`` = no spike). ``inhibition``: :data:`DEFAULT_INHIBITION` (``"window_max"``)
    or the paper's ``"first_step"`` (module docstring)."""
    check_phase_params(T, B)
    _check_inhibition(inhibition)
    if T < 2:
        raise ValueError(f"T={T} is too small for WOSS: the winner fires at fire step 1, so T >= 2")
    if x.shape[0] > T:
        raise ValueError(f"x has {x.shape[0]} steps but the integration window is T={T}")
    x = x.double()
    v = torch.zeros(x.shape[1:], dtype=torch.float64)
    inhibit = torch.ones(x.shape[1:-1], dtype=torch.bool)
    for t in range(T):
        if t < x.shape[0]:
            m = x[t].max(-1).values
            xt = x[t] - torch.where(inhibit, m, 0).unsqueeze(-1)
            inhibit = inhibit & ~(m > 0)
        else:
            xt = torch.zeros_like(v)
        v = B * v + xt
    if inhibition == "window_max":
        v = v - v.max(-1, keepdim=True).values
    return _first_crossing(v, _thresholds(T, B))


def woss_probabilities(steps: torch.Tensor, B: float) -> torch.Tensor:
    """``B**-m / sum B**-m`` over the last dim (0 for keys that did not fire; all 0 if none fired)."""
    w = torch.where(steps >= 0, torch.pow(torch.tensor(float(B), dtype=torch.float64), -steps.double()),
                    torch.zeros((), dtype=torch.float64))
    total = w.sum(-1, keepdim=True)
    return torch.where(total > 0, w / torch.where(total > 0, total, 1.0), 0.0)


def woss_softmax(scores: torch.Tensor, T: int, B: float) -> torch.Tensor:
    """Float reference of WOSS softmax over the last dim of ``scores`` (any leading batch dims):
    scores given at once, spike times ``m_k``, probabilities ``B**-m_k / sum_k B**-m_k``. (Both
    inhibition rules agree when the scores arrive at once.)"""
    return woss_probabilities(woss_fire_steps(scores.unsqueeze(0), T, B), B).to(
        scores.dtype if scores.is_floating_point() else torch.float64)


class WossFormat:
    """Fixed-point format of a WOSS softmax block, shared by the bit-exact model and the RTL.

    Parameters
    ----------
    T, B : window length (>= 2) and base (> 1).
    score_bound : float
        Largest ``|score|`` the block must represent (natural units); sizes ``x_width`` and ``v_width``.
    frac_bits : int, optional
        Fractional bits ``F``. Default: the largest ``F <= 16`` that keeps ``v_width <= 62``; when even
        ``F = 0`` does not fit, the error names T, B, score_bound and the 62-bit limit.
    b_frac_bits : int, optional
        Fractional bits of the constant multiplier (default ``ceil(log2 T) + 10``).
    x_width, v_width : int, optional
        Signed widths of the step input and of the potential; defaults are the minimum that holds
        ``score_bound * 2**F`` and ``2 * score_bound * B**(T-1) * 2**F`` (and every threshold).
    inhibition : ``"window_max"`` (ours, the default :data:`DEFAULT_INHIBITION`) or ``"first_step"`` (the
        paper's), see the module docstring.
    """

    def __init__(self, T: int, B: float, *, score_bound: float = 16.0, frac_bits: int | None = None,
                 b_frac_bits: int | None = None, x_width: int | None = None, v_width: int | None = None,
                 inhibition: str = DEFAULT_INHIBITION):
        check_phase_params(T, B)
        self.inhibition = _check_inhibition(inhibition)
        if T < 2:
            raise ValueError(f"T={T} is too small for WOSS: the winner fires at fire step 1, so T >= 2")
        self.T, self.B = T, float(B)
        if not (isinstance(score_bound, (int, float)) and math.isfinite(score_bound) and score_bound > 0):
            raise ValueError(f"score_bound={score_bound!r} must be a finite number > 0")
        self.score_bound = float(score_bound)
        self.b_frac_bits = check_int("b_frac_bits", default_b_frac_bits(T) if b_frac_bits is None else b_frac_bits,
                                     minimum=1, maximum=29)
        self.b_fx, self.b_q = quantize_base(self.B, self.b_frac_bits)
        growth = self.b_q ** (T - 1)
        self.ln_b = Fraction(math.log(self.b_q))
        defaulted = frac_bits is None
        if defaulted:     # the largest F <= 16 whose potential fits (or 0, refused below with the limit)
            frac_bits = 16
            while frac_bits > 0 and self._v_need(growth, frac_bits) > MAX_MODEL_WIDTH:
                frac_bits -= 1
        self.frac_bits = check_int("frac_bits", frac_bits, minimum=0, maximum=48)
        F = 1 << self.frac_bits
        self.thresholds = [math.floor(growth * self.ln_b * (Fraction(1, 2) - j) * F + Fraction(1, 2)) for j in range(T)]
        x_max = math.ceil(Fraction(self.score_bound) * F)
        need_x = signed_width_for(-x_max, x_max)
        need_v = self._v_need(growth, self.frac_bits)
        self.x_width = need_x if x_width is None else check_int("x_width", x_width, minimum=2, maximum=MAX_MODEL_WIDTH)
        if self.x_width < need_x:
            raise ValueError(f"x_width={x_width} cannot hold score_bound={score_bound} with frac_bits={self.frac_bits}: "
                             f"raise x_width to at least {need_x} (or lower score_bound / frac_bits)")
        if need_v > MAX_MODEL_WIDTH and v_width is None:
            even = " (the default frac_bits is already the smallest, 0)" if defaulted else ""
            fix = "score_bound, T or B" if defaulted else "frac_bits, score_bound, T or B"
            raise ValueError(
                f"T={T}, B={B}, score_bound={score_bound}, frac_bits={self.frac_bits} need a {need_v}-bit potential "
                f"(2 * score_bound * B**(T-1) * 2**frac_bits), over the {MAX_MODEL_WIDTH} bits the bit-exact model "
                f"supports{even}: lower {fix}")
        self.v_width = need_v if v_width is None else check_int("v_width", v_width, minimum=2, maximum=MAX_MODEL_WIDTH)
        if self.v_width < need_v:
            raise ValueError(f"v_width={v_width} is too small for T={T}, B={B}, score_bound={score_bound}, "
                             f"frac_bits={self.frac_bits}: raise v_width to at least {need_v} (or lower frac_bits)")
        self.diff_width = self.v_width + 1

    def _v_need(self, growth: Fraction, frac_bits: int) -> int:
        F = 1 << frac_bits
        top = math.ceil(2 * Fraction(self.score_bound) * growth * F)
        low = math.ceil(growth * self.ln_b * (self.T - Fraction(1, 2)) * F)
        bound = max(top, low) + 1
        return signed_width_for(-bound, bound)

    # -- contract -------------------------------------------------------------------------------
    def params(self) -> dict:
        return {"T": self.T, "B": self.B, "score_bound": self.score_bound, "frac_bits": self.frac_bits,
                "b_frac_bits": self.b_frac_bits, "x_width": self.x_width, "v_width": self.v_width,
                "inhibition": self.inhibition}

    @classmethod
    def from_params(cls, p: dict) -> "WossFormat":
        p = dict(p)
        return cls(p.pop("T"), p.pop("B"), **p)

    def quantize(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (natural units) to saturated ``x`` integers; returns ``(x, overflowed)``."""
        x = torch.round(scores.double() * (1 << self.frac_bits)).to(torch.int64)
        return saturate(x, self.x_width)

    def mul_b(self, z: torch.Tensor) -> torch.Tensor:
        return mul_shift_floor(z, self.b_fx, self.b_frac_bits)

    def run(self, x: torch.Tensor) -> "WossResult":
        """Run one period on per-step integer inputs ``x [S, ..., rows?, keys]`` (``S <= T``; already
        summed per step and inside ``x_width``). Returns fire steps and the overflow count."""
        if x.shape[0] > self.T:
            raise ValueError(f"x has {x.shape[0]} steps but the integration window is T={self.T}")
        lo, hi = signed_range(self.x_width)
        if x.numel() and (int(x.min()) < lo or int(x.max()) > hi):
            raise ValueError(f"step inputs exceed x_width={self.x_width}: saturate them first (hardware does)")
        v = torch.zeros(x.shape[1:], dtype=torch.int64)
        u = torch.zeros(x.shape[1:-1], dtype=torch.int64)
        inhibit = torch.ones(x.shape[1:-1], dtype=torch.bool)
        overflows = 0
        for t in range(self.T):
            xt = x[t] if t < x.shape[0] else torch.zeros_like(v)
            m = xt.max(-1).values
            v, ov = saturate(self.mul_b(v) + xt, self.v_width)
            overflows += int(ov.sum())
            u, ou = saturate(self.mul_b(u) + torch.where(inhibit, m, 0), self.v_width)
            overflows += int(ou.sum())
            inhibit = inhibit & (m <= 0)
        if self.inhibition == "window_max":
            u = v.max(-1).values
        diff = v - u.unsqueeze(-1)
        th = torch.tensor(self.thresholds, dtype=torch.int64)
        steps = _first_crossing(diff, th)
        return WossResult(steps=steps, v=v, u=u, overflows=overflows, fmt=self)


@dataclass
class WossResult:
    """Outcome of a bit-exact WOSS period: fire step per key (``-1``: none), final ``v`` and ``u``, and
    the number of saturations."""

    steps: torch.Tensor
    v: torch.Tensor
    u: torch.Tensor
    overflows: int
    fmt: WossFormat

    def spikes(self) -> torch.Tensor:
        """Output spikes ``[T, ...]`` of the fire window (1 at the fire step)."""
        T = self.fmt.T
        out = torch.zeros((T, *self.steps.shape), dtype=torch.int8)
        fired = self.steps >= 0
        out.scatter_(0, self.steps.clamp(min=0).unsqueeze(0), fired.to(torch.int8).unsqueeze(0))
        return out

    def probabilities(self) -> torch.Tensor:
        """``B_q**-m / sum B_q**-m`` from the hardware's spike times (float64)."""
        return woss_probabilities(self.steps, float(self.fmt.b_q))


def woss_softmax_fixed(scores: torch.Tensor, T: int, B: float, *, fmt: WossFormat | None = None,
                       **format_args) -> WossResult:
    """Bit-exact WOSS over the last dim of ``scores`` given at once (step 0). ``fmt`` (or keyword
    arguments for :class:`WossFormat`, e.g. ``score_bound``) sets the fixed-point format; input
    saturations are added to the result's ``overflows``."""
    fmt = fmt or WossFormat(T, B, **format_args)
    if (fmt.T, fmt.B) != (T, float(B)):
        raise ValueError(f"fmt is for T={fmt.T}, B={fmt.B}, not T={T}, B={B}")
    x, ovf = fmt.quantize(scores)
    res = fmt.run(x.unsqueeze(0))
    res.overflows += int(ovf.sum())
    return res
