"""The hardware spec: one frozen, validated description of an accelerator's tiles that the compiler
and the RTL generator both read.

Every tile has a neuron core of ``neurons`` virtual neurons on ``lanes`` lanes; its front end depends on
its kind: a **neuron tile** holds a synapse (weight) memory of ``synapse_words`` words of ``lanes``
weights, a **matmul tile** the two count-trace memories of a SESA product (``trace_words`` counts in
all), a **unit tile** the accumulators of a softmax/LayerNorm unit (``unit_words`` values). Every tile
routes its output events through a routing table of ``route_words`` entries (source neuron ->
destination tile and axon, at most ``max_fanout`` per neuron) and accepts ``axons`` input lines. A
neuron tile with an input buffer of ``buffer_words`` values (0: none; ``api.fit_spec`` keeps it only for a
network with a recurrent layer) also runs recurrent layers (crnn ``rnn``: the buffer holds each
sequence element's inputs and the previous element's spike counts).
A unit tile's rows are at most ``unit_width`` values, its input totals ``total_bits`` wide, its exp table
``exp_words`` entries, its integer constants ``scale_bits`` and its output levels ``level_bits`` wide; a
matmul tile's traces are ``trace_bits`` and its gain ``gain_bits`` wide (signed).
Neuron tiles run ST-BIF neurons with ``current_width``-bit currents, ``v_width``-bit potentials and a
``tracer_bits``-bit tracer; each tile's input FIFO holds ``fifo_depth`` events.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from ..fixed import check_int

__all__ = ["HardwareSpec", "TILE_KINDS"]

TILE_KINDS = ("neuron", "matmul", "unit")


@dataclass(frozen=True)
class HardwareSpec:
    """Tile counts and sizes of one accelerator (see the module docstring). Validated on creation."""

    neuron_tiles: int = 16
    matmul_tiles: int = 8
    unit_tiles: int = 8
    neurons: int = 1024
    lanes: int = 4
    synapse_words: int = 4096
    trace_words: int = 2048
    unit_words: int = 2048
    axons: int = 4096
    route_words: int = 8192
    weight_bits: int = 8
    value_bits: int = 8
    current_width: int = 18
    v_width: int = 20
    tracer_bits: int = 5
    max_fanout: int = 64
    fifo_depth: int = 16
    unit_width: int = 1024
    exp_words: int = 1024
    total_bits: int = 16
    scale_bits: int = 24
    level_bits: int = 6
    trace_bits: int = 8
    gain_bits: int = 9
    buffer_words: int = 1024

    def __post_init__(self):
        for name in ("neuron_tiles", "matmul_tiles", "unit_tiles"):
            check_int(name, getattr(self, name), minimum=0, maximum=4096)
        check_int("lanes", self.lanes, minimum=1, maximum=64)
        check_int("neurons", self.neurons, minimum=self.lanes, maximum=1 << 20)
        if self.neurons % self.lanes:
            raise ValueError(f"neurons={self.neurons} is not a multiple of lanes={self.lanes}")
        for name in ("synapse_words", "trace_words", "unit_words", "axons", "route_words"):
            check_int(name, getattr(self, name), minimum=1, maximum=1 << 24)
        check_int("buffer_words", self.buffer_words, minimum=0, maximum=1 << 24)
        check_int("weight_bits", self.weight_bits, minimum=2, maximum=16)
        check_int("value_bits", self.value_bits, minimum=2, maximum=32)
        check_int("current_width", self.current_width, minimum=2, maximum=32)
        check_int("v_width", self.v_width, minimum=self.current_width, maximum=48)
        check_int("tracer_bits", self.tracer_bits, minimum=2, maximum=16)
        check_int("max_fanout", self.max_fanout, minimum=1, maximum=self.route_words)
        check_int("fifo_depth", self.fifo_depth, minimum=2, maximum=1 << 16)
        check_int("unit_width", self.unit_width, minimum=1, maximum=1 << 12)
        check_int("exp_words", self.exp_words, minimum=2, maximum=1 << 16)
        check_int("total_bits", self.total_bits, minimum=2, maximum=32)
        check_int("scale_bits", self.scale_bits, minimum=2, maximum=40)
        check_int("level_bits", self.level_bits, minimum=2, maximum=min(16, self.current_width - 1))
        check_int("trace_bits", self.trace_bits, minimum=2, maximum=24)
        check_int("gain_bits", self.gain_bits, minimum=2, maximum=24)
        if self.neuron_tiles + self.matmul_tiles + self.unit_tiles == 0:
            raise ValueError("a spec needs at least one tile")

    def tiles(self, kind: str) -> int:
        """Number of tiles of ``kind`` (one of :data:`TILE_KINDS`)."""
        if kind not in TILE_KINDS:
            raise ValueError(f"tile kind {kind!r} is unknown; kinds: {TILE_KINDS}")
        return getattr(self, f"{kind}_tiles")

    @property
    def total_tiles(self) -> int:
        return sum(self.tiles(k) for k in TILE_KINDS)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HardwareSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown hardware spec fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)
