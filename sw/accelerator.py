"""The generated accelerator's host protocol and geometry, shared by the RTL generator
(:mod:`spikeforge.hw.accelerator`), the compiler's program and the host driver (:mod:`spikeforge.sim.network`).

:class:`AcceleratorFormat` is derived from a :class:`~spikeforge.sw.compile.HardwareSpec`: the neuron
tile hardware (:class:`~spikeforge.sw.neuron_tile.NeuronTileFormat`, ST-BIF core of the spec's widths),
the network event format, the configuration write format and the command / response field widths.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

from .events import EventFormat
from .fixed import unsigned_width_for
from .neuron_tile import MAX_WINDOW, NeuronTileFormat
from .neurons import StBif
from .program import ConfigFormat, TILE_REGISTERS

__all__ = ["AcceleratorFormat", "pointer_widths", "CmdOp", "RespKind", "TILE_COUNTERS", "NETWORK_COUNTERS",
           "ACTIVITY_COUNTERS"]

#: The counters a ``COUNTERS tile`` command returns, in order, for a tile and (``tile = tiles``) the network
#: (``run_cycles``: cycles from the last ``RUN`` command to its ``DONE``; ``run_events``: events the bus
#: moved during it; a tile's ``busy_cycles``: cycles of the last run in which it was not idle, i.e. held
#: or was offered work). Every counter but these three is an error counter and must stay 0.
TILE_COUNTERS = ("rejected", "product_overflows", "overflows", "route_rejected", "busy_cycles")
ACTIVITY_COUNTERS = ("run_cycles", "run_events", "busy_cycles")
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
    """Geometry of one generated accelerator (see the module docstring); build it with :meth:`from_spec`.
    Tiles are numbered by kind: neuron tiles ``0 .. neuron_tiles - 1``, then the matmul tiles, then the
    unit tiles; ``tiles`` is their total."""
    neuron_tiles: int
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
    matmul_tiles: int = 0
    unit_tiles: int = 0
    trace_words: int = 2048
    unit_words: int = 2048
    unit_width: int = 1024
    exp_words: int = 1024
    total_bits: int = 16
    scale_bits: int = 24
    level_bits: int = 6
    trace_bits: int = 8
    gain_bits: int = 9
    counter_width: int = 32
    step_bits: int = 16
    buffer_words: int = 0

    @classmethod
    def from_spec(cls, spec) -> "AcceleratorFormat":
        if spec.matmul_tiles and spec.lanes & (spec.lanes - 1):
            raise ValueError(f"matmul tiles need lanes that are a power of two; the spec has lanes={spec.lanes}")
        # every field but the protocol widths has the spec field of the same name
        return cls(**{f.name: getattr(spec, f.name) for f in fields(cls) if hasattr(spec, f.name)})

    @property
    def tiles(self) -> int:
        """All tiles (neuron, matmul, unit)."""
        return self.neuron_tiles + self.matmul_tiles + self.unit_tiles

    def first_tile(self, kind: str) -> int:
        """Index of the first tile of ``kind`` (``"neuron"``, ``"matmul"``, ``"unit"``)."""
        return {"neuron": 0, "matmul": self.neuron_tiles, "unit": self.neuron_tiles + self.matmul_tiles}[kind]

    def kind_of(self, tile: int) -> str:
        return "neuron" if tile < self.neuron_tiles else "matmul" if tile < self.first_tile("unit") else "unit"

    @property
    def matmul_tile(self):
        """The matmul tile hardware: up to N rows / cols, inner dimension up to half the trace memory."""
        from .matmul_tile import MatmulTileFormat
        return MatmulTileFormat(rows=self.neurons, inner=max(1, self.trace_words // 2), cols=self.neurons,
                                lanes=self.lanes, current_width=self.current_width, value_bits=self.value_bits,
                                trace_bits=self.trace_bits, gain_bits=self.gain_bits, trace_words=self.trace_words,
                                core_neurons=self.neurons)

    @property
    def unit_tile(self):
        """The unit tile hardware: rows of up to ``unit_width`` values, ``unit_words`` totals in all."""
        from .unit_tile import UnitTileFormat
        return UnitTileFormat(rows=min(self.neurons, self.unit_words), width=min(self.unit_width, self.unit_words),
                              lanes=self.lanes, current_width=self.current_width, value_bits=self.value_bits,
                              total_bits=self.total_bits, exp_words=self.exp_words, scale_bits=self.scale_bits,
                              level_bits=self.level_bits, core_neurons=self.neurons, total_words=self.unit_words)

    def tile_format(self, kind: str):
        return {"neuron": self.tile, "matmul": self.matmul_tile, "unit": self.unit_tile}[kind]

    def kinds(self) -> list[str]:
        """The tile kinds present."""
        return [k for k in ("neuron", "matmul", "unit") if getattr(self, f"{k}_tiles")]

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
                                synapse_words=self.synapse_words, buffer_words=self.buffer_words)

    @property
    def tile_bits(self) -> int:
        return _bits(self.tiles + 1)             # tile == tiles addresses the network's counters

    @property
    def event_format(self) -> EventFormat:
        axon = max(self.tile_format(k).event_format().axon_bits for k in self.kinds() or ["neuron"])
        return EventFormat(self.tile_bits, axon, self.value_bits)

    @property
    def config_format(self) -> ConfigFormat:
        t = self.tile
        addr = _bits(max(t.words, self.neurons // self.lanes, len(TILE_REGISTERS), self.neurons, self.route_words))
        pointer = sum(self.pointer_widths)
        route = sum(self.route_widths)
        data = max(t.synapse_word_bits, t.bias_word_bits, self.v_width, _bits(self.neurons + 1) + 1, pointer, route,
                   (MAX_WINDOW + 1).bit_length() if self.buffer_words else 1)
        if self.matmul_tiles:
            need = self.matmul_tile.config_format(self.model)
            addr, data = max(addr, need.addr_bits), max(data, need.data_bits)
        if self.unit_tiles:
            need = self.unit_tile.config_format(self.model)
            addr, data = max(addr, need.addr_bits), max(data, need.data_bits)
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
