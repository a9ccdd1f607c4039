"""The accelerator's event (AER packet) in hardware: the ``data.Struct`` layout and stream signature
built from :class:`spikeforge.sw.events.EventFormat`, so software and RTL share one definition.

>>> from spikeforge.sw.events import EventFormat
>>> sig = event_signature(EventFormat(tile_bits=4, axon_bits=10))
>>> sig == event_signature(EventFormat(4, 10))               # comparable
True
>>> port = sig.create()                                      # a stream interface with a struct payload
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum, stream

from ..sw.events import OP_BITS, EventFormat
from ..sw.events import EventOp as _SwEventOp

__all__ = ["EventOp", "event_layout", "event_signature"]

class EventOp(enum.Enum, shape=OP_BITS):
    """The event ops as an Amaranth enum: the names and codes of :class:`spikeforge.sw.events.EventOp`
    (checked at import)."""
    EVENT = _SwEventOp.EVENT.value
    STEP = _SwEventOp.STEP.value
    CLEAR = _SwEventOp.CLEAR.value
    READ = _SwEventOp.READ.value


if {op.name: op.value for op in EventOp} != {op.name: op.value for op in _SwEventOp}:
    raise ImportError("hw.events.EventOp and sw.events.EventOp disagree; keep them equal")


def event_layout(fmt: EventFormat) -> data.StructLayout:
    """``{op, tile, axon, value}`` with the widths of ``fmt`` (field order = bit order, LSB first)."""
    if not isinstance(fmt, EventFormat):
        raise TypeError(f"fmt must be a spikeforge.sw.events.EventFormat, not {type(fmt).__name__}")
    return data.StructLayout({"op": EventOp, "tile": unsigned(fmt.tile_bits), "axon": unsigned(fmt.axon_bits),
                              "value": signed(fmt.value_bits)})


def event_signature(fmt: EventFormat) -> stream.Signature:
    """The ``lib.stream`` signature of an event stream of format ``fmt`` (payload :func:`event_layout`).
    Two such signatures compare equal exactly when their layouts do, so ``wiring.connect`` refuses to
    join event streams of different formats."""
    return stream.Signature(event_layout(fmt))
