"""The generated accelerator's host protocol and geometry, shared by the RTL generator
(:mod:`spikeforge.hw.accelerator`), the compiler's program and the host driver (:mod:`spikeforge.sim.network`).

:class:`AcceleratorFormat` is derived from a :class:`~spikeforge.sw.compile.HardwareSpec`: the neuron
tile hardware (:class:`~spikeforge.sw.neuron_tile.NeuronTileFormat`, ST-BIF core of the spec's widths),
the network event format, the configuration write format and the command / response field widths.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .events import EventFormat
from .fixed import unsigned_width_for
from .neuron_tile import NeuronTileFormat
from .neurons import StBif
from .program import ConfigFormat, TILE_REGISTERS

__all__ = ["AcceleratorFormat", "pointer_widths", "CmdOp", "RespKind", "TILE_COUNTERS", "NETWORK_COUNTERS"]

#: The counters a ``COUNTERS tile`` command returns, in order, for a tile and (``tile = tiles``) the network
#: (``run_cycles``: cycles from the last ``RUN`` command to its ``DONE``; ``run_events``: events the bus
#: moved during it).
TILE_COUNTERS = ("rejected", "product_overflows", "overflows", "route_rejected")
NETWORK_COUNTERS = ("bus_rejected", "rejected_commands", "run_cycles", "run_events")


class CmdOp(enum.IntEnum):
    """Host command ops."""
    WRITE = 0
    EVENT = 1
    CLEAR = 2
    RUN = 3
    READ = 4
    COUNTERS = 5
    LOG = 6


CmdOp.BITS = 4


class RespKind(enum.IntEnum):
    """Response kinds."""
    SPIKE = 0
    STATE = 1
    COUNTER = 2
    DONE = 3


RespKind.BITS = 2


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def pointer_widths(route_words: int, max_fanout: int) -> tuple[int, int]:
    """Widths of a routing-table pointer ``(start, count)``: the one definition the RTL
    (:func:`spikeforge.hw.fanout.pointer_layout`) and the program (``Images.writes``) share."""
    return _bits(route_words), unsigned_width_for(max_fanout)


@dataclass(frozen=True)
class AcceleratorFormat:
    """Geometry of one generated accelerator (see the module docstring); build it with :meth:`from_spec`."""
    tiles: int
    neurons: int
    lanes: int
    synapse_words: int
    route_words: int
    max_fanout: int
    weight_bits: int
    value_bits: int
    current_width: int
    v_width: int
    tracer_bits: int
    fifo_depth: int = 16
    counter_width: int = 32
    step_bits: int = 16

    @classmethod
    def from_spec(cls, spec) -> "AcceleratorFormat":
        if spec.matmul_tiles or spec.unit_tiles:
            raise ValueError(f"the accelerator has neuron tiles only so far; the spec asks for "
                             f"{spec.matmul_tiles} matmul and {spec.unit_tiles} unit tiles: set both to 0")
        return cls(spec.neuron_tiles, spec.neurons, spec.lanes, spec.synapse_words, spec.route_words,
                   spec.max_fanout, spec.weight_bits, spec.value_bits, spec.current_width, spec.v_width,
                   spec.tracer_bits, spec.fifo_depth)

    def to_dict(self) -> dict:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, d: dict) -> "AcceleratorFormat":
        return cls(**d)

    @property
    def model(self) -> StBif:
        """The tiles' neuron kind and widths (theta and the tracer bounds are programmed per tile)."""
        lo, hi = -(1 << (self.tracer_bits - 1)), (1 << (self.tracer_bits - 1)) - 1
        return StBif(1, lo, hi, current_width=self.current_width, v_width=self.v_width)

    @property
    def tile(self) -> NeuronTileFormat:
        """The neuron tile hardware: up to N / P tokens, fan-in up to the synapse memory."""
        return NeuronTileFormat(tokens=self.neurons // self.lanes, cols=self.neurons, fan_in=self.synapse_words,
                                lanes=self.lanes, weight_bits=self.weight_bits, value_bits=self.value_bits,
                                current_width=self.current_width, core_neurons=self.neurons,
                                synapse_words=self.synapse_words)

    @property
    def tile_bits(self) -> int:
        return _bits(self.tiles + 1)             # tile == tiles addresses the network's counters

    @property
    def event_format(self) -> EventFormat:
        return EventFormat(self.tile_bits, self.tile.event_format().axon_bits, self.value_bits)

    @property
    def config_format(self) -> ConfigFormat:
        t = self.tile
        addr = _bits(max(t.words, self.neurons // self.lanes, len(TILE_REGISTERS), self.neurons, self.route_words))
        pointer = sum(self.pointer_widths)
        route = sum(self.route_widths)
        data = max(t.synapse_word_bits, t.bias_word_bits, self.v_width, _bits(self.neurons + 1) + 1, pointer, route)
        return ConfigFormat(addr, data)

    @property
    def pointer_widths(self) -> tuple[int, int]:
        """``(start, count)`` widths of a routing-table pointer."""
        return pointer_widths(self.route_words, self.max_fanout)

    @property
    def route_widths(self) -> tuple[int, int]:
        """``(tile, axon)`` widths of a routing-table entry."""
        return self.tile_bits, self.event_format.axon_bits

    @property
    def addr_bits(self) -> int:
        return max(self.config_format.addr_bits, self.event_format.axon_bits, _bits(self.neurons))

    @property
    def data_bits(self) -> int:
        return max(self.config_format.data_bits, self.value_bits, self.v_width, self.counter_width + 1)
