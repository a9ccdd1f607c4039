"""Fixed-point helpers shared by the bit-exact models and the RTL generators.

Every width in spikeforge is derived from parameters through these functions, so the software model
and the hardware agree on ranges, saturation and rounding by construction.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "signed_range", "unsigned_range", "signed_width_for", "unsigned_width_for",
    "saturate", "check_int", "check_width", "csd_digits",
]


def signed_range(width: int) -> tuple[int, int]:
    """Inclusive ``(min, max)`` of a two's-complement number of ``width`` bits."""
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


def unsigned_range(width: int) -> tuple[int, int]:
    """Inclusive ``(min, max)`` of an unsigned number of ``width`` bits."""
    return 0, (1 << width) - 1


def signed_width_for(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every integer in ``[lo, hi]`` (at least 1)."""
    width = 1
    while True:
        mn, mx = signed_range(width)
        if mn <= lo and hi <= mx:
            return width
        width += 1


def unsigned_width_for(hi: int) -> int:
    """Smallest unsigned width holding ``hi`` (at least 1)."""
    return max(1, int(hi).bit_length())


def saturate(x: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clamp integer tensor ``x`` to the signed range of ``width`` bits.

    Returns ``(clamped, overflowed)`` where ``overflowed`` is a bool tensor marking the elements that
    were clamped — exactly what the hardware's saturation logic and overflow counter see.
    """
    lo, hi = signed_range(width)
    overflowed = (x < lo) | (x > hi)
    return x.clamp(lo, hi), overflowed


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None,
              hint: str = "") -> int:
    """Validate an integer parameter; raise a ``TypeError``/``ValueError`` naming it and its limit."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value} is too small: it must be >= {minimum}" + (f"; {hint}" if hint else ""))
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value} is too large: it must be <= {maximum}" + (f"; {hint}" if hint else ""))
    return value


def check_width(name: str, width: int, lo: int, hi: int, what: str) -> None:
    """Raise ``ValueError`` unless a signed ``width``-bit field holds ``[lo, hi]`` (naming ``what``)."""
    need = signed_width_for(lo, hi)
    if width < need:
        raise ValueError(
            f"{name}={width} is too small to hold {what} (range [{lo}, {hi}]): raise {name} to at least {need}")


def csd_digits(constant: int) -> list[tuple[int, int]]:
    """Canonical signed-digit form of a non-negative integer: ``[(shift, +1|-1), ...]``.

    ``sum(sign << shift) == constant`` with no two adjacent non-zero digits, i.e. the fewest
    additions/subtractions for a shift-add constant multiplier.
    """
    if constant < 0:
        raise ValueError(f"csd_digits takes a non-negative constant, not {constant}")
    digits = []
    shift = 0
    c = constant
    while c:
        if c & 1:
            d = 2 - (c & 3)  # +1 if c % 4 == 1, -1 if c % 4 == 3
            digits.append((shift, d))
            c -= d
        c >>= 1
        shift += 1
    return digits


def ceil_log2(x: float) -> int:
    """``ceil(log2(x))`` for ``x > 0`` computed without float surprises at exact powers of two."""
    if x <= 1:
        return 0
    n = math.ceil(math.log2(x))
    while (1 << (n - 1)) >= x:
        n -= 1
    while (1 << n) < x:
        n += 1
    return n


def mul_shift_floor(x: torch.Tensor, constant: int, shift: int) -> torch.Tensor:
    """``floor(x * constant / 2**shift)`` for int64 ``x``, exact even when ``x * constant`` itself
    would overflow 64 bits (only the result must fit): ``x`` is split at bit 32 and the high part's
    product is shifted before it is added. This is what a shift-add constant multiplier followed by
    an arithmetic right shift computes in hardware.
    """
    if not 0 <= shift <= 32:
        raise ValueError(f"shift={shift} must lie in [0, 32]")
    if constant < 0 or constant.bit_length() > 30:
        raise ValueError(f"constant={constant} must be a non-negative integer of at most 30 bits")
    x = x.to(torch.int64)
    lo = x & 0xFFFFFFFF
    hi = x >> 32
    return ((hi * constant) << (32 - shift)) + ((lo * constant) >> shift)
