"""The accelerator's event (AER packet), defined once for software and hardware.

An event travels from a tile to a destination ``(tile, axon)`` and carries a signed ``value``: ``+1`` /
``-1`` for a spike, a small signed integer for a graded event (an analog input count, a function unit's
difference). Markers share the stream: ``STEP`` (a timestep ends), ``CLEAR`` (restore the initial
state) and ``READ`` (send a lane group's state back to the host). :class:`EventOp` is the one definition of these op codes; :mod:`spikeforge.hw.events`
builds its ``data.Struct`` layout and stream ``Signature`` from the same :class:`EventFormat`, and
traces store events as the :attr:`EventFormat.dtype` structured arrays.

Bit layout (LSB first, as Amaranth packs a ``StructLayout``): ``op`` (2 bits), ``tile``, ``axon``,
``value`` (two's complement).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from .fixed import check_int, signed_range

__all__ = ["EventOp", "EventFormat", "OP_BITS"]

OP_BITS = 2


class EventOp(enum.IntEnum):
    """What one event beat is."""
    EVENT = 0      #: a spike or graded value for ``(tile, axon)``
    STEP = 1       #: end of the current timestep
    CLEAR = 2      #: restore the initial state, restart the step count
    READ = 3       #: a tile sends the state of lane group ``axon`` on its readback stream


@dataclass(frozen=True)
class EventFormat:
    """Field widths of an event: ``tile_bits`` (destination tile), ``axon_bits`` (input line of that
    tile), ``value_bits`` (signed payload; 2 is enough for spikes)."""
    tile_bits: int
    axon_bits: int
    value_bits: int = 2

    def __post_init__(self):
        check_int("tile_bits", self.tile_bits, minimum=1, maximum=16)
        check_int("axon_bits", self.axon_bits, minimum=1, maximum=32)
        check_int("value_bits", self.value_bits, minimum=2, maximum=32)

    @classmethod
    def for_sizes(cls, tiles: int, axons: int, value_range: tuple[int, int] = (-1, 1)) -> "EventFormat":
        """The narrowest format addressing ``tiles`` tiles of ``axons`` axons with values in
        ``value_range`` (inclusive)."""
        check_int("tiles", tiles, minimum=1)
        check_int("axons", axons, minimum=1)
        lo, hi = value_range
        if lo > hi:
            raise ValueError(f"value_range={value_range} is empty")
        bits = 2
        while not (signed_range(bits)[0] <= lo and hi <= signed_range(bits)[1]):
            bits += 1
        return cls(max(1, (tiles - 1).bit_length()), max(1, (axons - 1).bit_length()), bits)

    @property
    def width(self) -> int:
        """Bits of one packed event."""
        return OP_BITS + self.tile_bits + self.axon_bits + self.value_bits

    @property
    def fields(self) -> dict[str, tuple[int, int]]:
        """``name -> (offset, width)`` of the packed event."""
        out, offset = {}, 0
        for name, w in (("op", OP_BITS), ("tile", self.tile_bits), ("axon", self.axon_bits),
                        ("value", self.value_bits)):
            out[name] = (offset, w)
            offset += w
        return out

    #: numpy structured dtype of an event array (traces, the compiler's tables)
    dtype = np.dtype([("op", np.uint8), ("tile", np.uint32), ("axon", np.uint32), ("value", np.int32)])

    def events(self, op, tile, axon, value) -> np.ndarray:
        """An event array from columns (broadcast), checked against the field widths."""
        op, tile, axon, value = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, dtype=np.int64))
                                                      for a in (op, tile, axon, value)))
        self.check({"op": op, "tile": tile, "axon": axon, "value": value})
        out = np.empty(op.shape, self.dtype)
        out["op"], out["tile"], out["axon"], out["value"] = op, tile, axon, value
        return out

    def check(self, events):
        """Raise ``ValueError`` naming the first event whose field does not fit this format
        (``events``: an event array or a mapping of field name -> column)."""
        lo, hi = signed_range(self.value_bits)
        limits = {"op": (0, max(EventOp)), "tile": (0, (1 << self.tile_bits) - 1),
                  "axon": (0, (1 << self.axon_bits) - 1), "value": (lo, hi)}
        for name, (a, b) in limits.items():
            col = np.atleast_1d(np.asarray(events[name])).astype(np.int64)
            bad = np.nonzero((col < a) | (col > b))[0]
            if len(bad):
                i = int(bad[0])
                raise ValueError(f"event {i}: {name}={int(col[i])} does not fit the event format "
                                 f"({name} in [{a}, {b}]: {self})")

    def pack(self, events: np.ndarray) -> np.ndarray:
        """Packed bits of every event (Python ints in an object array: events can exceed 64 bits)."""
        self.check(events)
        f = self.fields
        vmask = (1 << self.value_bits) - 1
        cols = [(events["op"].astype(object), f["op"][0]), (events["tile"].astype(object), f["tile"][0]),
                (events["axon"].astype(object), f["axon"][0]),
                (events["value"].astype(np.int64).astype(object) & vmask, f["value"][0])]
        out = np.zeros(len(events), dtype=object)
        for col, offset in cols:
            out = out + (col << offset)
        return out

    def unpack(self, bits) -> np.ndarray:
        """Inverse of :meth:`pack`."""
        bits = [int(b) for b in np.atleast_1d(np.asarray(bits, dtype=object))]
        f = self.fields
        get = lambda b, name: (b >> f[name][0]) & ((1 << f[name][1]) - 1)      # noqa: E731
        out = np.empty(len(bits), self.dtype)
        sign = 1 << (self.value_bits - 1)
        out["op"] = [get(b, "op") for b in bits]
        out["tile"] = [get(b, "tile") for b in bits]
        out["axon"] = [get(b, "axon") for b in bits]
        out["value"] = [(get(b, "value") ^ sign) - sign for b in bits]
        return out
