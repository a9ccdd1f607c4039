"""The event network between tiles: a shared event bus with per-destination flow control.

``sources`` event streams (the tiles' routing tables and the host) reach ``destinations`` tiles, each
through its own input FIFO. Every cycle one event moves: the arbiter grants, round-robin, a source whose
head event's destination FIFO has room, so an event never waits behind one for a busy tile (no
head-of-line blocking: a tile that stalls its inputs while it sweeps stalls only the events for it,
and since the network's layers form a DAG every sweep finishes and the network cannot deadlock).
An event for a tile ``>= destinations`` is malformed: taken, dropped and counted in ``rejected``.

Throughput is one event per cycle for the whole network (a crossbar moves one per destination per
cycle at ``O(destinations x sources)`` multiplexers); docs/accelerator.md gives the measured figures
that decide between the two.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..sw.events import EventFormat
from ..sw.fixed import check_int
from .arith import saturating_increment
from .events import event_layout, event_signature
from .stream import StreamFIFO

__all__ = ["EventBus"]


class EventBus(wiring.Component):
    """Event bus of ``sources`` inputs and ``destinations`` outputs with FIFOs of ``depth`` events.

    Members
    -------
    i : ``In(event_signature(fmt)).array(sources)``
    o : ``Out(event_signature(fmt)).array(destinations)``
    rejected : ``Out(counter_width)``
    idle : ``Out(1)`` — no source offers an event and every FIFO is empty
    moved : ``Out(1)`` — an event moved this cycle (for utilisation counters)
    """

    def __init__(self, fmt: EventFormat, *, sources: int, destinations: int, depth: int = 16,
                 counter_width: int = 32):
        try:
            check_int("sources", sources, minimum=1, maximum=256)
            check_int("destinations", destinations, minimum=1, maximum=1 << fmt.tile_bits)
            check_int("depth", depth, minimum=2, maximum=1 << 16)
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self.fmt, self.sources, self.destinations, self.depth = fmt, sources, destinations, depth
        self.counter_width = counter_width
        sig = event_signature(fmt)
        super().__init__({"i": In(sig).array(sources), "o": Out(sig).array(destinations),
                          "rejected": Out(counter_width), "idle": Out(1), "moved": Out(1)})

    def elaborate(self, platform):
        m = Module()
        n, d = self.sources, self.destinations
        fifos = []
        for k in range(d):
            q = StreamFIFO(event_layout(self.fmt), self.depth)
            m.submodules[f"fifo{k}"] = q
            wiring.connect(m, q.o, wiring.flipped(self.o[k]))
            fifos.append(q)
        # a source may go when its head's destination has room (or is malformed: it is then dropped)
        eligible = Signal(n)
        bad = Signal(n)
        for s in range(n):
            tile = self.i[s].payload.tile
            room = Signal(name=f"room{s}")
            for k in range(d):
                with m.If(tile == k):
                    m.d.comb += room.eq(fifos[k].i.ready)
            m.d.comb += [bad[s].eq(tile >= d), eligible[s].eq(self.i[s].valid & (room | bad[s]))]
        last = Signal(range(n))
        pick = Signal(range(n))
        found = Signal()
        for k in reversed(range(n)):              # first eligible source after `last`, circularly
            for origin in range(n):
                idx = (origin + 1 + k) % n
                with m.If((last == origin) & eligible[idx]):
                    m.d.comb += [pick.eq(idx), found.eq(1)]
        for s in range(n):
            with m.If(found & (pick == s)):
                m.d.comb += self.i[s].ready.eq(1)
                for k in range(d):
                    m.d.comb += fifos[k].i.payload.eq(self.i[s].payload)
                    with m.If(self.i[s].payload.tile == k):
                        m.d.comb += fifos[k].i.valid.eq(1)
                with m.If(bad[s]):
                    m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
        with m.If(found):
            m.d.sync += last.eq(pick)
        m.d.comb += self.moved.eq(found)
        offered = Cat(*(self.i[k].valid for k in range(n))).any()
        empty = Cat(*(q.level == 0 for q in fifos)).all()
        m.d.comb += self.idle.eq(~offered & empty)
        return m
