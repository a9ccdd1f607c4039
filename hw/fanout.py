"""A tile's routing table: each output spike becomes one event per destination ``(tile, axon)``.

The compiler's tables (:mod:`spikeforge.sw.compile.images`): ``pointer[neuron] = (start, count)`` and
``route[start .. start + count)`` = the destinations of that source neuron. An input ``EVENT axon=neuron
value`` is sent on as ``EVENT tile=route.tile axon=route.axon value`` for each of its destinations, in
table order; ``STEP`` markers are consumed (the accelerator's step barrier does not need them); a neuron
beyond the pointer table is malformed: dropped and counted in ``rejected``. Both tables are loaded by
configuration writes (``TileMemory.POINTER`` / ``ROUTE``) on ``writes``. Throughput: one routed event
per cycle after two cycles per source event (take it, read its pointer); the next destination is read
as one leaves. The output may stall, nothing is dropped.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.accelerator import pointer_widths
from ..sw.events import EventFormat
from ..sw.fixed import check_int
from ..sw.program import ConfigFormat, TileMemory
from .arith import index_width, saturating_increment
from .events import EventOp, event_signature
from .neuron_tile import config_layout

__all__ = ["FanOut", "pointer_layout", "route_layout"]


def pointer_layout(route_words: int, max_fanout: int) -> data.StructLayout:
    """``{start, count}`` of one source neuron's destination list (widths: :func:`pointer_widths`)."""
    start, count = pointer_widths(route_words, max_fanout)
    return data.StructLayout({"start": start, "count": count})


def route_layout(fmt: EventFormat) -> data.StructLayout:
    """``{tile, axon}`` of one destination."""
    return data.StructLayout({"tile": fmt.tile_bits, "axon": fmt.axon_bits})


class FanOut(wiring.Component):
    """Routing table of one tile: ``neurons`` sources, ``route_words`` destinations, at most
    ``max_fanout`` per source; ``source`` is the tile's output event format, ``dest`` the network's.

    Members
    -------
    i : ``In(event_signature(source))`` — the tile's output events
    o : ``Out(event_signature(dest))`` — routed events
    writes : ``In(stream.Signature(config_layout(config_format)))``
    rejected : ``Out(counter_width)``
    idle : ``Out(1)`` — no event held or offered
    """

    def __init__(self, source: EventFormat, dest: EventFormat, *, neurons: int, route_words: int, max_fanout: int,
                 config_format: ConfigFormat, counter_width: int = 32):
        try:
            check_int("neurons", neurons, minimum=1)
            check_int("route_words", route_words, minimum=1)
            check_int("max_fanout", max_fanout, minimum=1, maximum=route_words)
            need = max(index_width(neurons), index_width(route_words))
            width = max(pointer_layout(route_words, max_fanout).size, route_layout(dest).size)
            if config_format.addr_bits < need or config_format.data_bits < width:
                raise ValueError(f"config_format={config_format} cannot address the routing tables "
                                 f"({need} address bits, {width} data bits)")
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self.source, self.dest = source, dest
        self.neurons, self.route_words, self.max_fanout = neurons, route_words, max_fanout
        self.config_format, self.counter_width = config_format, counter_width
        super().__init__({"i": In(event_signature(source)), "o": Out(event_signature(dest)),
                          "writes": In(stream.Signature(config_layout(config_format))),
                          "rejected": Out(counter_width), "idle": Out(1)})

    def elaborate(self, platform):
        m = Module()
        playout, rlayout = pointer_layout(self.route_words, self.max_fanout), route_layout(self.dest)
        m.submodules.pointer = pmem = memory.Memory(shape=playout, depth=max(self.neurons, 2), init=[])
        m.submodules.route = rmem = memory.Memory(shape=rlayout, depth=max(self.route_words, 2), init=[])
        prd, rrd = pmem.read_port(), rmem.read_port()
        pwr, rwr = pmem.write_port(), rmem.write_port()

        w = self.writes.payload
        m.d.comb += self.writes.ready.eq(1)
        with m.If(self.writes.valid & (w.mem == TileMemory.POINTER)):
            m.d.comb += [pwr.en.eq(1), pwr.addr.eq(w.addr), pwr.data.eq(w.data[:len(pwr.data.as_value())])]
        with m.If(self.writes.valid & (w.mem == TileMemory.ROUTE)):
            m.d.comb += [rwr.en.eq(1), rwr.addr.eq(w.addr), rwr.data.eq(w.data[:len(rwr.data.as_value())])]

        ev = self.i.payload
        value = Signal.like(ev.value)
        idx = Signal(range(max(self.route_words, 2)))
        left = Signal(range(self.max_fanout + 1))
        m.d.comb += [prd.addr.eq(ev.axon), rrd.addr.eq(idx)]
        with m.FSM(name="fanout") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid & (ev.op == EventOp.EVENT)):
                    with m.If(ev.axon < self.neurons):
                        m.d.sync += value.eq(ev.value)
                        m.next = "POINTER"
                    with m.Else():
                        m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
            with m.State("POINTER"):               # pointer[neuron] is on the read port's data now
                m.d.sync += [idx.eq(prd.data.start), left.eq(prd.data.count)]
                m.d.comb += rrd.addr.eq(prd.data.start)          # the first destination, read at once
                with m.If(prd.data.count == 0):
                    m.next = "IDLE"
                with m.Else():
                    m.next = "SEND"
            with m.State("SEND"):                  # one destination per cycle: the next is read as one leaves
                m.d.comb += [self.o.valid.eq(1), self.o.payload.op.eq(EventOp.EVENT),
                             self.o.payload.tile.eq(rrd.data.tile), self.o.payload.axon.eq(rrd.data.axon),
                             self.o.payload.value.eq(value)]
                with m.If(self.o.ready):
                    m.d.comb += rrd.addr.eq(idx + 1)
                    m.d.sync += [idx.eq(idx + 1), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.next = "IDLE"
        m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & ~self.i.valid)
        return m
