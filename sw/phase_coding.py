"""One-spike phase coding (SpikedAttention, algorithms.md section 3): float reference.

A value is one spike at step ``j`` of a window of ``T`` steps and means ``sign * scale * B**-j``; no
spike means 0. Encoding fires at the first ``j`` with ``|x/scale| >= B**-j * (1 + 1/B) / 2``, so values
above ``scale`` clip to ``scale`` and values below about ``scale * B**-(T-1)`` become 0. Inside that
range the worst relative error is ``(B - 1)/(B + 1)``.
"""

from __future__ import annotations

import math

from fractions import Fraction

import torch

__all__ = ["phase_encode", "phase_decode", "phase_error_bound", "check_phase_params", "quantize_base",
           "default_b_frac_bits", "MAX_T"]


MAX_T = 4096   # longest phase window accepted (exact rational arithmetic on B**T stays cheap)


def check_phase_params(T, B) -> None:
    """Raise ``ValueError`` naming the parameter unless ``1 <= T <= MAX_T`` (integer) and ``B > 1``."""
    if isinstance(T, bool) or not isinstance(T, int):
        raise TypeError(f"T must be an integer number of timesteps, not {T!r}")
    if T < 1:
        raise ValueError(f"T={T} is too small: the phase window needs T >= 1 timesteps")
    if T > MAX_T:
        raise ValueError(f"T={T} is too large: the phase window is at most {MAX_T} timesteps")
    if not isinstance(B, (int, float)) or isinstance(B, bool) or not math.isfinite(B):
        raise TypeError(f"B must be a finite real number, not {B!r}")
    if B <= 1:
        raise ValueError(f"B={B} is out of range: the phase-coding base must be > 1 (e.g. 1.15, 1.4, 2.0)")


def phase_encode(x: torch.Tensor, T: int, B: float, scale: float | torch.Tensor = 1.0, *,
                 bipolar: bool = True) -> torch.Tensor:
    """Encode ``x`` as one spike per element in a window of ``T`` steps.

    Returns an int8 tensor ``[T, *x.shape]`` holding ``+1``/``-1`` at the spike step, 0 elsewhere.
    ``scale`` broadcasts against ``x`` (per-channel scales). With ``bipolar=False`` negative values
    encode as no spike (0).
    """
    check_phase_params(T, B)
    y = x.double() / torch.as_tensor(scale, dtype=torch.float64)
    mag = y.abs() if bipolar else y.clamp(min=0)
    # thresholds c * B**-j decrease with j, so "mag >= threshold" is monotone in j and the first
    # step that satisfies it is T minus the number of steps that do.
    thresholds = (1 + 1 / B) / 2 * torch.pow(torch.tensor(float(B), dtype=torch.float64),
                                             -torch.arange(T, dtype=torch.float64))
    ge = mag.unsqueeze(0) >= thresholds.reshape((T,) + (1,) * mag.dim())
    j = T - ge.sum(0)
    fires = (mag > 0) & (j < T)
    spikes = torch.zeros((T, *x.shape), dtype=torch.int8)
    sign = torch.where(y < 0, -1, 1).to(torch.int8)
    idx = j.clamp(max=T - 1).long()
    spikes.scatter_(0, idx.unsqueeze(0), (sign * fires.to(torch.int8)).unsqueeze(0))
    return spikes


def phase_decode(spikes: torch.Tensor, B: float, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Decode a window of one-spike codes ``[T, ...]``: ``sum_j spikes[j] * scale * B**-j``."""
    T = spikes.shape[0]
    check_phase_params(T, B)
    weights = torch.pow(torch.tensor(float(B), dtype=torch.float64), -torch.arange(T, dtype=torch.float64))
    weights = weights.reshape((T,) + (1,) * (spikes.dim() - 1))
    return (spikes.double() * weights).sum(0) * torch.as_tensor(scale, dtype=torch.float64)


def phase_error_bound(B: float) -> float:
    """Worst relative error of the one-spike code inside its range: ``(B - 1)/(B + 1)``."""
    return (B - 1) / (B + 1)


def default_b_frac_bits(T: int) -> int:
    """Fractional bits of the constant multiplier ``B_fx``: ``ceil(log2 T) + 10``, so the realised
    base compounds to a relative error below about ``2**-10`` over a window of ``T`` steps."""
    return math.ceil(math.log2(T)) + 10 if T > 1 else 10


def quantize_base(B: float, b_frac_bits: int) -> tuple[int, Fraction]:
    """The hardware's base: ``B_fx = round(B * 2**b_frac_bits)`` and the realised ``B_q = B_fx / 2**bf``.

    Raises ``ValueError`` when ``B`` rounds to 1 (the multiplier would not grow the potential).
    """
    b_fx = int(math.floor(float(B) * (1 << b_frac_bits) + 0.5))
    if b_fx <= (1 << b_frac_bits):
        raise ValueError(f"B={B} rounds to 1 with b_frac_bits={b_frac_bits}: raise b_frac_bits so that "
                         f"round(B * 2**b_frac_bits) > 2**b_frac_bits")
    return b_fx, Fraction(b_fx, 1 << b_frac_bits)
