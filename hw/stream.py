"""Reusable ``lib.stream`` primitives: FIFO, skid buffer, merge (round-robin arbiter), demultiplexer.

Every component moves whole payloads of any shape (a ``data.Struct`` layout, an enum, ``unsigned(n)``),
obeys the stream rules (``valid`` never waits for ``ready``; a payload stays put until it is taken) and
never drops a beat under backpressure; the demultiplexer drops only beats it is told are malformed
(an out-of-range ``select``), and counts them. Interfaces follow ``amaranth.lib.stream``: ``i`` is the
consumer side, ``o`` (or ``o[k]``) the producer side.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.fixed import check_int
from .arith import saturating_increment

__all__ = ["StreamFIFO", "SkidBuffer", "StreamMerge", "StreamMergeTree", "StreamDemux"]


def _checked(component, checks):
    try:
        checks()
    except (TypeError, ValueError):
        component._MustUse__silence = True     # a rejected configuration is not an unused design
        raise


class StreamFIFO(wiring.Component):
    """A synchronous FIFO of ``depth`` payloads of ``shape`` between two streams (``SyncFIFOBuffered``:
    the output is registered, so it also cuts the combinational path between ``i`` and ``o``).

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(shape))``
    level : ``Out(range(depth + 1))`` — payloads held
    """

    def __init__(self, shape, depth: int):
        _checked(self, lambda: check_int("depth", depth, minimum=1))
        self.shape, self.depth = shape, depth
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape)),
                          "level": Out(range(depth + 1))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=len(self.i.payload.as_value()), depth=self.depth)
        m.d.comb += [q.w_data.eq(self.i.payload), q.w_en.eq(self.i.valid), self.i.ready.eq(q.w_rdy),
                     self.o.payload.eq(q.r_data), self.o.valid.eq(q.r_rdy), q.r_en.eq(self.o.ready),
                     self.level.eq(q.level)]
        return m


class SkidBuffer(wiring.Component):
    """A two-entry register stage that registers ``i.ready`` as well as the payload: full throughput,
    and no combinational path from ``o.ready`` back to ``i.ready`` (timing closure between tiles).

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(shape))``
    """

    def __init__(self, shape):
        self.shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        skid = Signal.like(self.i.payload, name="skid")
        skid_full = Signal()
        m.d.comb += self.i.ready.eq(~skid_full)
        take_out = self.o.valid & self.o.ready
        with m.If(~self.o.valid | take_out):
            # the output register is (or becomes) free: fill it from the skid entry first, then the input
            with m.If(skid_full):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_full.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & self.i.ready):
            m.d.sync += [skid.eq(self.i.payload), skid_full.eq(1)]   # output stalled: park the beat
        return m


class StreamMerge(wiring.Component):
    """Merge ``n`` streams into one with round-robin arbitration: a granted input keeps the grant until
    its beat is taken, then the next waiting input (in circular order) goes; no input waits more than
    ``n - 1`` beats, and beats of one input keep their order.

    Members
    -------
    i : ``In(stream.Signature(shape)).array(n)``
    o : ``Out(stream.Signature(shape))``
    """

    def __init__(self, shape, n: int):
        _checked(self, lambda: check_int("n", n, minimum=1))
        self.shape, self.n = shape, n
        super().__init__({"i": In(stream.Signature(shape)).array(n), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        n = self.n
        last = Signal(range(n))              # the input granted last; the search starts after it
        held = Signal()                      # o holds a beat not yet taken (its input stays granted)
        grant = Signal(range(n))
        pick = Signal(range(n))
        found = Signal()
        # first valid input after `last`, circularly (a priority chain over the n rotations)
        for k in reversed(range(n)):
            for origin in range(n):
                idx = (origin + 1 + k) % n
                with m.If((last == origin) & self.i[idx].valid):
                    m.d.comb += [pick.eq(idx), found.eq(1)]
        m.d.comb += grant.eq(pick)
        with m.If(held):
            m.d.comb += grant.eq(last)
        for idx in range(n):
            with m.If(grant == idx):
                m.d.comb += [self.o.valid.eq(self.i[idx].valid), self.o.payload.eq(self.i[idx].payload),
                             self.i[idx].ready.eq(self.o.ready)]
        with m.If(self.o.valid):
            m.d.sync += [last.eq(grant), held.eq(~self.o.ready)]
        return m


class StreamMergeTree(wiring.Component):
    """Merge ``n`` streams through a tree of :class:`StreamMerge` of at most ``fan_in`` inputs, each
    followed by a :class:`SkidBuffer`: the arbitration and payload multiplexer of a level stay within one
    cycle whatever ``n`` (one wide merge is an ``n``-way priority chain). Full throughput; beats of one
    input keep their order; round-robin at every level (an input of a fuller subtree waits longer).

    Members
    -------
    i : ``In(stream.Signature(shape)).array(n)``
    o : ``Out(stream.Signature(shape))``
    busy : ``Out(1)`` — a beat is held inside the tree
    """

    def __init__(self, shape, n: int, *, fan_in: int = 4):
        _checked(self, lambda: (check_int("n", n, minimum=1), check_int("fan_in", fan_in, minimum=2)))
        self.shape, self.n, self.fan_in = shape, n, fan_in
        super().__init__({"i": In(stream.Signature(shape)).array(n), "o": Out(stream.Signature(shape)),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        level = [self.i[k] for k in range(self.n)]
        holds = []
        depth = 0
        while len(level) > 1:
            nxt = []
            for g in range(0, len(level), self.fan_in):
                group = level[g:g + self.fan_in]
                merge, skid = StreamMerge(self.shape, len(group)), SkidBuffer(self.shape)
                m.submodules[f"merge{depth}_{g}"], m.submodules[f"skid{depth}_{g}"] = merge, skid
                for k, src in enumerate(group):
                    if depth == 0:
                        wiring.connect(m, wiring.flipped(src), merge.i[k])
                    else:
                        wiring.connect(m, src, merge.i[k])
                wiring.connect(m, merge.o, skid.i)
                holds.append(skid.o.valid)
                nxt.append(skid.o)
            level, depth = nxt, depth + 1
        if depth == 0:                           # one input: just the register stage
            m.submodules.skid = skid = SkidBuffer(self.shape)
            wiring.connect(m, wiring.flipped(self.i[0]), skid.i)
            holds.append(skid.o.valid)
            level = [skid.o]
        wiring.connect(m, level[0], wiring.flipped(self.o))
        m.d.comb += self.busy.eq(Cat(*holds).any())
        return m


class StreamDemux(wiring.Component):
    """Route each beat of ``i`` to ``o[select]``, where the parent drives ``select`` from the payload
    (combinationally, while ``i.valid``). A beat whose ``select`` is ``>= n`` (possible when ``n`` is
    not a power of two) is malformed: it is taken, dropped and counted in ``rejected``.

    Members
    -------
    i : ``In(stream.Signature(shape))``
    select : ``In(range(2 ** bits))`` with ``bits`` enough for ``n``
    o : ``Out(stream.Signature(shape)).array(n)``
    rejected : ``Out(counter_width)`` — saturating count of malformed beats
    """

    def __init__(self, shape, n: int, *, counter_width: int = 32):
        _checked(self, lambda: (check_int("n", n, minimum=1), check_int("counter_width", counter_width,
                                                                          minimum=1, maximum=64)))
        self.shape, self.n, self.counter_width = shape, n, counter_width
        super().__init__({"i": In(stream.Signature(shape)), "select": In(max(1, (n - 1).bit_length())),
                          "o": Out(stream.Signature(shape)).array(n), "rejected": Out(counter_width)})

    def elaborate(self, platform):
        m = Module()
        for idx in range(self.n):
            m.d.comb += [self.o[idx].payload.eq(self.i.payload), self.o[idx].valid.eq(self.i.valid & (self.select == idx))]
            with m.If(self.select == idx):
                m.d.comb += self.i.ready.eq(self.o[idx].ready)
        with m.If(self.select >= self.n):
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
        return m
