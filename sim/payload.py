"""Pack and unpack stream payloads to and from raw bits, driven by the Amaranth layouts.

A struct payload becomes one packed port in the generated Verilog; testbenches (cocotb and the
Amaranth simulator alike) talk to it through these two functions, so the layout defined in the
component is the only description of the bits.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["pack", "unpack", "width_of"]


def width_of(shape) -> int:
    """Width in bits of a shape-castable (layout, enum, ``signed(n)``, ...)."""
    return Shape.cast(shape).width


def pack(shape, value) -> int:
    """Raw bits (non-negative int) of ``value`` under ``shape``.

    Struct layouts take a dict (missing fields are 0), array layouts a sequence, enums a member
    or int, plain shapes an int (range-checked).
    """
    if isinstance(shape, data.StructLayout):
        value = value or {}
        unknown = set(value) - {name for name, _ in shape}
        if unknown:
            raise KeyError(f"fields {sorted(unknown)} are not in the layout")
        return sum(pack(f.shape, value.get(name, 0)) << f.offset for name, f in shape)
    if isinstance(shape, data.ArrayLayout):
        value = list(value) if value else []
        if len(value) > shape.length:
            raise ValueError(f"{len(value)} elements do not fit an array of {shape.length}")
        w = width_of(shape.elem_shape)
        return sum(pack(shape.elem_shape, v) << (i * w) for i, v in enumerate(value))
    if isinstance(shape, type) and issubclass(shape, enum.Enum):
        value = value.value if isinstance(value, enum.Enum) else int(value)
    s = Shape.cast(shape)
    value = int(value)
    lo, hi = (-(1 << (s.width - 1)), (1 << (s.width - 1)) - 1) if s.signed else (0, (1 << s.width) - 1)
    if not lo <= value <= hi:
        raise ValueError(f"{value} does not fit {s}")
    return value & ((1 << s.width) - 1)


def unpack(shape, bits: int):
    """Inverse of :func:`pack`: dicts for structs, lists for arrays, ints for the rest (enums: int)."""
    if isinstance(shape, data.StructLayout):
        return {name: unpack(f.shape, (bits >> f.offset) & ((1 << width_of(f.shape)) - 1)) for name, f in shape}
    if isinstance(shape, data.ArrayLayout):
        w = width_of(shape.elem_shape)
        return [unpack(shape.elem_shape, (bits >> (i * w)) & ((1 << w) - 1)) for i in range(shape.length)]
    s = Shape.cast(shape)
    bits &= (1 << s.width) - 1
    if s.signed and s.width and bits >> (s.width - 1):
        bits -= 1 << s.width
    return bits
