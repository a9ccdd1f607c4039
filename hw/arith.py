"""Arithmetic building blocks shared by the RTL generators: saturation and shift-add constants.

Each function adds combinational logic to a module and returns fresh, named signals so the
generated Verilog stays readable and testbenches can probe intermediate values.
"""

from __future__ import annotations

from amaranth.hdl import Mux, Signal, Value, signed

from ..sw.fixed import csd_digits, signed_range

__all__ = ["saturate", "const_mul", "popcount", "saturating_increment", "count_later", "index_width"]


def index_width(n: int) -> int:
    """Bits of an unsigned field that indexes ``0 .. n-1`` (at least 1)."""
    return max(1, (n - 1).bit_length())


def saturate(m, value: Value, width: int, *, name: str) -> tuple[Signal, Signal]:
    """Clamp signed ``value`` to ``signed(width)``. Returns ``(result, overflowed)``.

    Overflow is detected from the bits above the result's sign bit (they must all equal it), a
    LUT-level reduction rather than two magnitude comparators on the carry chain.
    """
    lo, hi = signed_range(width)
    full = Signal(signed(max(width, Value.cast(value).shape().width) + 1), name=f"{name}_full")
    result = Signal(signed(width), name=name)
    overflow = Signal(name=f"{name}_ovf")
    top = full[width - 1:]
    m.d.comb += [
        full.eq(value),
        overflow.eq(~((top == 0) | (top == (1 << len(top)) - 1))),
        result.eq(Mux(overflow, Mux(full[-1], lo, hi), full[:width])),
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
    total = (counter + amount).as_unsigned()
    return Mux(total[len(counter):].any(), top, total[:len(counter)])


def count_later(m, counter: Signal, amount: Value, *, name: str) -> None:
    """Add ``amount`` to the saturating ``counter`` one cycle later: ``amount`` is registered first, so
    the path from the logic that produces it (e.g. a saturation check behind a memory read) does not
    run through the counter's carry chain. The counter lags its events by one cycle."""
    amount = Value.cast(amount)
    pending = Signal(amount.shape(), name=name)
    m.d.sync += pending.eq(amount)
    with m.If(pending != 0):
        m.d.sync += counter.eq(saturating_increment(counter, pending))
