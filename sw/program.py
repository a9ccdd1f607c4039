"""The accelerator's program: configuration writes that load a tile's memories and registers.

A program is a sequence of writes ``(tile, memory, address, data)``; the host interface sends each as one
``WRITE`` command and the addressed tile stores ``data`` at ``address`` of ``memory``. The memories and
register addresses are defined here once; the RTL (:mod:`spikeforge.hw.neuron_tile`,
:mod:`spikeforge.hw.fanout`) decodes the same codes. ``data`` is an unsigned integer of at most
:attr:`ConfigFormat.data_bits` bits; memory words pack their fields LSB first (lane 0 lowest), signed
fields in two's complement.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from .fixed import check_int

__all__ = ["TileMemory", "TILE_REGISTERS", "ConfigFormat", "pack_fields", "unpack_fields", "PROGRAM_DTYPE"]


class TileMemory(enum.IntEnum):
    """Which memory of a tile a configuration write addresses."""
    REGISTER = 0     #: the tile's registers, addressed by :data:`TILE_REGISTERS`
    SYNAPSE = 1      #: weight words (``lanes`` weights each)
    BIAS = 2         #: bias words (``lanes`` currents each), added once after ``CLEAR`` (a recurrent
                     #: program: at the start of every window)
    POINTER = 3      #: routing: ``(start, count)`` of each source neuron's destination list
    ROUTE = 4        #: routing: destination ``(tile, axon)`` entries
    TABLE = 5        #: a unit tile's exp table (softmax)
    AFFINE = 6       #: a unit tile's per-column ``(gain, offset)`` (LayerNorm)


#: Register addresses of a neuron tile (``TileMemory.REGISTER``), in order.
TILE_REGISTERS = ("tokens", "groups", "fan_in", "theta", "s_min", "s_max", "readout", "bias", "window", "elements")

MEMORY_BITS = 3

#: numpy dtype of a program (one row per write)
PROGRAM_DTYPE = np.dtype([("tile", np.uint32), ("mem", np.uint8), ("addr", np.uint32), ("data", object)])


@dataclass(frozen=True)
class ConfigFormat:
    """Widths of one configuration write: ``addr_bits`` (the deepest memory), ``data_bits`` (the widest
    word)."""
    addr_bits: int
    data_bits: int

    def __post_init__(self):
        check_int("addr_bits", self.addr_bits, minimum=1, maximum=32)
        check_int("data_bits", self.data_bits, minimum=1, maximum=1024)


def pack_fields(columns, widths) -> np.ndarray:
    """Pack integer ``columns`` (arrays of one shape, signed allowed) of ``widths`` bits into one unsigned
    word per element, first column lowest (Python ints in an object array: words may exceed 64 bits).
    Raises ``ValueError`` if a value does not fit its width (as signed or unsigned)."""
    out = None
    offset = 0
    for col, w in zip(columns, widths):
        col = np.asarray(col, dtype=np.int64)
        if col.size and (col.min() < -(1 << (w - 1)) or col.max() >= (1 << w)):
            raise ValueError(f"a value in [{col.min()}, {col.max()}] does not fit a {w}-bit field")
        bits = (col.astype(object) & ((1 << w) - 1)) << offset
        out = bits if out is None else out + bits
        offset += w
    return out


def unpack_fields(words, widths, signed) -> list[np.ndarray]:
    """Inverse of :func:`pack_fields`: int64 columns, sign-extended where ``signed[i]``."""
    words = np.asarray(words, dtype=object)
    cols, offset = [], 0
    for w, s in zip(widths, signed):
        col = ((words >> offset) & ((1 << w) - 1)).astype(np.int64)
        if s:
            col = np.where(col >= (1 << (w - 1)), col - (1 << w), col)
        cols.append(col)
        offset += w
    return cols
