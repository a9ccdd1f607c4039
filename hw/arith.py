"""Arithmetic building blocks shared by the RTL generators: saturation and shift-add constants.

Each function adds combinational logic to a module and returns fresh, named signals so the
generated Verilog stays readable and testbenches can probe intermediate values.
"""

from __future__ import annotations

from amaranth.hdl import Mux, Signal, Value, signed

from ..sw.fixed import csd_digits, signed_range

__all__ = ["saturate", "const_mul", "popcount", "saturating_increment"]


def saturate(m, value: Value, width: int, *, name: str) -> tuple[Signal, Signal]:
    """Clamp ``value`` to ``signed(width)``. Returns ``(result, overflowed)``."""
    lo, hi = signed_range(width)
    result = Signal(signed(width), name=name)
    overflow = Signal(name=f"{name}_ovf")
    m.d.comb += [
        overflow.eq((value > hi) | (value < lo)),
        result.eq(Mux(value > hi, hi, Mux(value < lo, lo, value))),
    ]
    return result, overflow


def const_mul(value: Value, constant: int) -> Value:
    """``value * constant`` as a balanced tree of shifted additions/subtractions (canonical signed
    digits) — no multiplier is inferred, whatever the target."""
    terms = [(value << shift) if sign > 0 else -(value << shift) for shift, sign in csd_digits(constant)]
    if not terms:
        return Value.cast(0)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def popcount(bits: Value) -> Value:
    """Number of set bits of ``bits`` (adder tree)."""
    terms = [bits[i] for i in range(len(bits))] or [Value.cast(0)]
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def saturating_increment(counter: Signal, amount: Value) -> Value:
    """``counter + amount`` clamped to the counter's maximum (counters never wrap)."""
    top = (1 << len(counter)) - 1
    total = counter + amount
    return Mux(total > top, top, total)
