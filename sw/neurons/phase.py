"""One-spike phase-coded neuron (SpikedAttention): bit-exact fixed-point model and float reference.

Timing: the neuron works in periods of ``2T`` steps. Steps ``p = 0 .. T-1`` of a period integrate
the input, steps ``p = T .. 2T-1`` are the fire window (``j = p - T``); the state clears after the
last step of the period. The rule (no leak, no reset, one spike)::

    accumulate (any step):    v = sat(v + x)                  x: input current, F fractional bits
    update, p < T:            v = sat(floor(v * B_fx / 2**bf))
    update, p >= T, unfired:  fire +1 if v >= theta_fx ; fire -1 if bipolar and v <= -theta_fx
                              if still unfired: v = sat(floor(v * B_fx / 2**bf))
    update, p == 2T - 1:      v = 0 ; fired = 0

Fixed-point contract
--------------------
* ``v`` is signed, ``v_width`` bits, ``frac_bits`` (F) fractional bits: the integer ``c`` means ``c / 2**F``
  in units of the layer's ``scale``.
* The base is the constant ``B_fx = round(B * 2**bf)`` (``bf = b_frac_bits``); the model uses the
  realised base ``B_q = B_fx / 2**bf`` everywhere, including the threshold and the decoder. The
  multiplication rounds toward minus infinity (arithmetic shift), so the fixed-point potential is
  never above the exact one: after ``k`` multiplications it is at most ``(B_q**k - 1)/(B_q - 1)`` LSB
  below it (:meth:`PhaseNeuron.error_lsb`).
* ``theta_fx = round(B_q**W * (1 + 1/B_q) / 2 * 2**F)`` (exact rational arithmetic, half up).
* A spike at fire step ``j`` decodes to ``sign * B_q**(W - T - j)`` (``B_q**-j`` for ``W = T``).
* ``v_width`` must hold ``ceil(theta_fx * B_q)``, the largest value an unfired neuron reaches;
  above-range inputs saturate (counted as overflows) and then fire at ``j = 0``, i.e. clip.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..fixed import check_int, saturate, signed_range, signed_width_for
from ..phase_coding import check_phase_params, default_b_frac_bits, quantize_base
from .base import NeuronModel, StepResult, register_model

__all__ = ["PhaseNeuron", "phase_neuron_reference", "MODEL_BITS", "MAX_FRAC_BITS"]

MODEL_BITS = 63        # the bit-exact model computes v * B_fx in int64: v_width + bits(B_fx) <= 63
MAX_FRAC_BITS = 56


def phase_neuron_reference(x: torch.Tensor, T: int, B: float, *, W: int | None = None,
                           bipolar: bool = True) -> torch.Tensor:
    """Float reference of one period: ``x[i, ...]`` (i < T, in units of ``scale``) integrated with
    ``v = B*v + x_i``, then fired once in the window. Returns int8 spikes ``[2T, ...]``."""
    check_phase_params(T, B)
    W = T if W is None else W
    if x.shape[0] > T:
        raise ValueError(f"x has {x.shape[0]} steps but the integration window is T={T}")
    theta = B ** W * (1 + 1 / B) / 2
    v = torch.zeros(x.shape[1:], dtype=torch.float64)
    fired = torch.zeros(x.shape[1:], dtype=torch.bool)
    out = torch.zeros((2 * T, *x.shape[1:]), dtype=torch.int8)
    for p in range(2 * T):
        if p < x.shape[0]:
            v = v + x[p].double()
        if p >= T:
            up = ~fired & (v >= theta)
            down = ~fired & ~up & (v <= -theta) if bipolar else torch.zeros_like(up)
            out[p] = up.to(torch.int8) - down.to(torch.int8)
            fired |= up | down
        v = torch.where(fired, v, v * B)
    return out


@register_model
class PhaseNeuron(NeuronModel):
    """One-spike phase-coded neuron, unipolar or bipolar (bit-exact fixed-point model).

    Parameters
    ----------
    T : int
        Window length in steps (>= 1); a period is ``2T`` steps (integrate, then fire).
    B : float
        Phase-coding base (> 1).
    W : int, optional
        Wait of the threshold ``B**W (1 + 1/B)/2``; default ``T``.
    bipolar : bool
        Also fire ``-1`` when ``v <= -theta``.
    frac_bits : int, optional
        Fractional bits F of the potential and of the input currents. Default
        ``ceil((T-1) log2 B - log2(B-1)) + 6``: the gap between the two smallest thresholds of the
        code, about ``(B-1) B**-(T-1)``, is then resolved to 6 bits (fewer bits make input
        quantisation dominate the error; see docs/results/phase_neuron_error.md) -- lowered to the
        largest F that fits the model's arithmetic (``v_width + bits(B_fx) <= 63``, the potential
        holding ``theta_fx * B_q`` with ``theta_fx ~ B**W (1 + 1/B)/2 * 2**F``). So every (T, B, W)
        for which some F fits works with the default (large ``B**T``, e.g. T=40, B=2.0, then gets few
        fractional bits: codes below about ``2**-F`` of the scale are lost to input quantisation);
        when none fits, the error names T, B and the 63-bit limit. An explicit ``v_width`` does not
        lower the default: a too-small one is refused with the F that would fit it.
    b_frac_bits : int, optional
        Fractional bits of the constant multiplier ``B_fx``; default ``ceil(log2 T) + 10`` so the
        realised base compounds to a relative error below about ``2**-10`` over a window.
    current_width, v_width : int, optional
        Signed widths; defaults: currents hold ``[-2, 2)`` (in units of scale), ``v`` the minimum
        that holds ``theta_fx * B_q``.
    """

    kind = "phase"

    def __init__(self, T: int, B: float, *, W: int | None = None, bipolar: bool = True,
                 frac_bits: int | None = None, b_frac_bits: int | None = None, current_width: int | None = None,
                 v_width: int | None = None):
        check_phase_params(T, B)
        self.T, self.B = T, float(B)
        if b_frac_bits is None:
            b_frac_bits = default_b_frac_bits(T)
        self.W = T if W is None else check_int("W", W, minimum=0)
        self.bipolar = bool(bipolar)
        self.b_frac_bits = check_int("b_frac_bits", b_frac_bits, minimum=1, maximum=30)
        self.b_fx, self.b_q = quantize_base(self.B, self.b_frac_bits)
        if frac_bits is None:
            frac_bits = self._default_frac_bits()
        self.frac_bits = check_int("frac_bits", frac_bits, minimum=0, maximum=MAX_FRAC_BITS)
        self.theta_fx, self.v_max_needed, need_v = self._widths(self.frac_bits)
        if self.theta_fx < 1:
            raise ValueError(f"the threshold rounds to 0 with frac_bits={frac_bits}: raise frac_bits")
        if v_width is None:
            self.v_width = need_v
        else:
            self.v_width = check_int("v_width", v_width, minimum=2, maximum=62)
            if self.v_width < need_v:
                fits = [f for f in range(self.frac_bits) if self._widths(f)[2] <= self.v_width]
                alt = f"frac_bits={fits[-1]}" if fits else "W"
                raise ValueError(
                    f"v_width={v_width} is too small for T={T}, B={B}, W={self.W}, frac_bits={self.frac_bits}: "
                    f"an unfired neuron reaches theta*B = {self.v_max_needed} LSB; raise v_width to at "
                    f"least {need_v} (or lower frac_bits / W: {alt} fits v_width={v_width})")
        if self.v_width + self.b_fx.bit_length() > MODEL_BITS:
            raise ValueError(
                f"T={T}, B={B}, frac_bits={self.frac_bits}, b_frac_bits={self.b_frac_bits} need a "
                f"{self.v_width}-bit potential times a {self.b_fx.bit_length()}-bit constant, over the {MODEL_BITS} "
                f"bits the bit-exact model computes in (B**(W+1) * 2**frac_bits grows too fast): lower T, W, B or "
                f"frac_bits")
        default_cw = min(self.v_width, self.frac_bits + 2)
        self.current_width = default_cw if current_width is None else check_int(
            "current_width", current_width, minimum=2, maximum=self.v_width,
            hint=f"currents cannot be wider than v_width={self.v_width}")

    def _widths(self, frac_bits: int) -> tuple[int, int, int]:
        """``(theta_fx, ceil(theta_fx * B_q), v bits needed)`` for ``frac_bits`` (the other parameters set)."""
        if self.W * math.log2(self.b_q) > 2 * MODEL_BITS:    # hopeless: skip the exact (huge) power
            return 1 << (2 * MODEL_BITS), 1 << (2 * MODEL_BITS), 2 * MODEL_BITS + 2
        theta = self.b_q ** self.W * (1 + 1 / self.b_q) / 2 * (1 << frac_bits)
        theta_fx = math.floor(theta + Fraction(1, 2))
        v_max = math.ceil(theta_fx * self.b_q)
        return theta_fx, v_max, signed_width_for(-v_max, v_max)

    def _default_frac_bits(self) -> int:
        """The resolution target ``ceil((T-1) log2 B - log2(B-1)) + 6`` (class docstring), lowered to the
        largest ``F`` whose potential times ``B_fx`` fits the model's 63 bits; ``ValueError`` naming
        ``T``, ``B`` and the limit when even ``F = 0`` does not fit."""
        B, T = self.B, self.T
        target = max(0, min(MAX_FRAC_BITS, math.ceil((T - 1) * math.log2(B) - math.log2(B - 1)) + 6))
        b_bits = self.b_fx.bit_length()
        for f in range(target, -1, -1):
            if self._widths(f)[2] + b_bits <= MODEL_BITS:
                return f
        need = self._widths(0)[2]
        need = f"a {need}-bit" if need <= 2 * MODEL_BITS else f"a more than {2 * MODEL_BITS}-bit"
        raise ValueError(
            f"T={T}, B={B} (W={self.W}, b_frac_bits={self.b_frac_bits}) do not fit the bit-exact phase neuron with "
            f"any frac_bits: even frac_bits=0 needs {need} potential (theta*B = B**(W+1) (1 + 1/B)/2) times a "
            f"{b_bits}-bit constant, over the {MODEL_BITS} bits the model computes in (W * log2 B = "
            f"{self.W * math.log2(self.b_q):.1f} must stay below about {MODEL_BITS - b_bits - 2}): lower T (or W) or B")

    # -- contract -------------------------------------------------------------------------------
    @property
    def period(self):
        return 2 * self.T

    def params(self):
        return {"T": self.T, "B": self.B, "W": self.W, "bipolar": self.bipolar,
                "frac_bits": self.frac_bits, "b_frac_bits": self.b_frac_bits,
                "current_width": self.current_width, "v_width": self.v_width}

    def state_fields(self):
        return {"v": (self.v_width, True), "fired": (1, False)}

    def initial_state(self):
        return {"v": 0, "fired": 0}

    def multiply(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``sat(floor(v * B_fx / 2**bf))`` and its overflow mask."""
        return saturate((v * self.b_fx) >> self.b_frac_bits, self.v_width)

    def update(self, state, t):
        p = t % self.period
        v, fired = state["v"], state["fired"].bool()
        spikes = torch.zeros(v.shape, dtype=torch.int8)
        if p >= self.T:
            up = ~fired & (v >= self.theta_fx)
            down = ~fired & ~up & (v <= -self.theta_fx) if self.bipolar else torch.zeros_like(up)
            spikes = up.to(torch.int8) - down.to(torch.int8)
            fired = fired | up | down
        mul, ovf = self.multiply(v)
        ovf &= ~fired
        state["v"] = torch.where(fired, v, mul)
        state["fired"] = fired.to(torch.int64)
        if p == self.period - 1:
            self.reset_state(state)
        return StepResult(spikes, ovf, torch.zeros_like(ovf))

    # -- decoding and error bounds ----------------------------------------------------------------
    def decode(self, spikes: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Decode output spikes ``[n * 2T, ...]`` into ``[n, ...]`` values (one per period)."""
        if spikes.shape[0] % self.period:
            raise ValueError(f"spikes cover {spikes.shape[0]} steps, not a whole number of {self.period}-step periods")
        s = spikes.reshape(-1, self.period, *spikes.shape[1:])[:, self.T:].double()
        j = torch.arange(self.T, dtype=torch.float64)
        w = float(self.b_q) ** (self.W - self.T - j)
        return (s * w.reshape((1, self.T) + (1,) * (s.dim() - 2))).sum(1) * torch.as_tensor(scale, dtype=torch.float64)

    def error_lsb(self, k: int) -> float:
        """Bound on how far (in LSB) the fixed-point potential can lie below the exact one after
        ``k`` multiplications by ``B_q``: ``sum_{i<k} B_q**i``."""
        b = float(self.b_q)
        return (b ** k - 1) / (b - 1)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Convert real inputs (units of ``scale``) to saturated integer currents with F fractional bits."""
        lo, hi = signed_range(self.current_width)
        return torch.round(x.double() * (1 << self.frac_bits)).clamp(lo, hi).to(torch.int64)
