"""Neuron tile: synapse (weight) memory + :class:`~.neuron_core.NeuronCore`, speaking the accelerator's
events (:mod:`spikeforge.hw.events`).

The bit-exact model and the event contract are in :mod:`spikeforge.sw.neuron_tile`: an input
``EVENT axon=(token, k) value`` reads the ``ceil(cols / lanes)`` weight words of row ``k`` and sends one
``ACCUMULATE`` beat per word into the core (``current = sat(value * weight)`` per lane, the token's lane
groups); ``STEP`` and ``CLEAR`` go to the core after the accumulations before them; the core's spike beats
are serialised into one ``EVENT axon=neuron value=±1`` per spike (lowest lane first) and a ``STEP`` after
each sweep. Malformed axons are dropped and counted in ``rejected``; saturated products in
``product_overflows``; the core's ``overflows`` are passed on. Every stream may stall; nothing is
dropped.

The weight memory is initialised from the compiler's image (``weights``); loading it over the program
stream is the accelerator top's job. Throughput: one accumulate beat every two cycles (read, then send).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from ..sw.fixed import signed_range
from ..sw.neuron_tile import NeuronTileFormat
from ..sw.neurons import NeuronModel
from .arith import const_mul, popcount, saturating_increment
from .events import EventOp, event_signature
from .neuron_core import CoreOp, NeuronCore

__all__ = ["NeuronTile"]


class NeuronTile(wiring.Component):
    """One neuron tile for ``fmt`` (:class:`~spikeforge.sw.neuron_tile.NeuronTileFormat`) running ``model``
    with the synapse image of ``weights [cols, fan_in]``.

    Members
    -------
    inputs : ``In(event_signature(fmt.event_format()))``
    outputs : ``Out(event_signature(fmt.event_format()))`` — spikes (axon = core neuron) and ``STEP``
    rejected, product_overflows, overflows : ``Out(counter_width)``
    """

    def __init__(self, fmt: NeuronTileFormat, model: NeuronModel, weights, *, counter_width: int = 32):
        try:
            if not isinstance(fmt, NeuronTileFormat):
                raise TypeError(f"fmt must be a NeuronTileFormat, not {type(fmt).__name__}")
            if model.current_width != fmt.current_width:
                raise ValueError(f"the neuron model's current_width={model.current_width} differs from the tile's "
                                 f"current_width={fmt.current_width}: build both with the same width")
            self.image = fmt.weight_image(weights)
            self.core = NeuronCore(model, neurons=fmt.neurons, lanes=fmt.lanes, counter_width=counter_width)
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self.core._MustUse__silence = True           # elaborated with the tile
        self.fmt, self.model, self.weights = fmt, model, np.asarray(weights, dtype=np.int64)
        self.counter_width = counter_width
        self.event_format = fmt.event_format()
        sig = event_signature(self.event_format)
        super().__init__({"inputs": In(sig), "outputs": Out(sig),
                          "rejected": Out(counter_width), "product_overflows": Out(counter_width),
                          "overflows": Out(counter_width)})

    @property
    def verilog_name(self) -> str:
        return f"neuron_tile_{self.model.kind}"

    def config(self) -> dict:
        return {"fmt": vars(self.fmt), "model": self.model.to_dict(), "weights": self.weights.tolist(),
                "counter_width": self.counter_width}

    @classmethod
    def from_config(cls, config: dict) -> "NeuronTile":
        from ..sw.neurons import model_from_dict
        return cls(NeuronTileFormat(**config["fmt"]), model_from_dict(config["model"]), config["weights"],
                   counter_width=config["counter_width"])

    def elaborate(self, platform):
        m = Module()
        fmt, P, G = self.fmt, self.fmt.lanes, self.fmt.groups_per_token
        m.submodules.core = core = self.core
        m.d.comb += [self.overflows.eq(core.overflows), core.readback.ready.eq(1)]

        wlayout = data.ArrayLayout(signed(fmt.weight_bits), P)
        init = [[int(w) for w in row] for row in self.image]
        m.submodules.synapses = mem = memory.Memory(shape=wlayout, depth=max(len(init), 2), init=init)
        rd = mem.read_port()

        # ---- input side: decode, read the weight row word by word, issue ACCUMULATE beats ----------------
        ev = self.inputs.payload
        ce = core.events.payload
        token = Signal(range(max(fmt.tokens, 2)))
        k = Signal(range(max(fmt.fan_in, 2)))
        value = Signal(signed(fmt.value_bits))
        j = Signal(range(max(G, 2)))
        in_token = ev.axon >> fmt.k_bits
        in_k = ev.axon & ((1 << fmt.k_bits) - 1)
        lo, hi = signed_range(fmt.current_width)
        over = Signal(P)                           # lanes whose product saturates
        for lane in range(P):
            prod = Signal(signed(fmt.weight_bits + fmt.value_bits), name=f"prod{lane}")
            m.d.comb += [prod.eq(rd.data[lane] * value), over[lane].eq((prod > hi) | (prod < lo)),
                         ce.current[lane].eq(Mux(prod > hi, hi, Mux(prod < lo, lo, prod)))]
        m.d.comb += rd.addr.eq(const_mul(k, G) + j)

        with m.FSM(name="issue"):
            with m.State("IDLE"):
                with m.If(self.inputs.valid):
                    with m.Switch(ev.op):
                        with m.Case(EventOp.EVENT):
                            m.d.comb += self.inputs.ready.eq(1)
                            with m.If((in_token < fmt.tokens) & (in_k < fmt.fan_in)):
                                m.d.sync += [token.eq(in_token), k.eq(in_k), value.eq(ev.value), j.eq(0)]
                                m.next = "READ"
                            with m.Else():
                                m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
                        with m.Case(EventOp.STEP):
                            m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.STEP),
                                         self.inputs.ready.eq(core.events.ready)]
                        with m.Case(EventOp.CLEAR):
                            m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.CLEAR),
                                         self.inputs.ready.eq(core.events.ready)]
                        with m.Default():
                            m.d.comb += self.inputs.ready.eq(1)
                            m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
            with m.State("READ"):                  # the word's address is on the read port; data next cycle
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.ACCUMULATE),
                             ce.group.eq(const_mul(token, G) + j)]
                with m.If(core.events.ready):
                    with m.If(over.any()):
                        m.d.sync += self.product_overflows.eq(saturating_increment(self.product_overflows,
                                                                                   popcount(over)))
                    with m.If(j == G - 1):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += j.eq(j + 1)
                        m.next = "READ"

        # ---- output side: one event per spike, then STEP ---------------------------------------------------
        out = self.outputs.payload
        beat = Signal.like(core.spikes.payload)
        fire, neg = Signal(P), Signal(P)
        end = Signal()
        busy = Signal()
        m.d.comb += core.spikes.ready.eq(~busy)
        with m.If(core.spikes.valid & ~busy):
            m.d.sync += [beat.eq(core.spikes.payload), fire.eq(core.spikes.payload.fire),
                         neg.eq(core.spikes.payload.neg), end.eq(core.spikes.payload.end_step), busy.eq(1)]
        lane = Signal(range(max(P, 2)))
        for i in reversed(range(P)):
            with m.If(fire[i]):
                m.d.comb += lane.eq(i)
        with m.If(busy):
            with m.If(fire.any()):
                m.d.comb += [self.outputs.valid.eq(1), out.op.eq(EventOp.EVENT),
                             out.axon.eq(beat.group * P + lane), out.value.eq(Mux(neg.bit_select(lane, 1), -1, 1))]
                with m.If(self.outputs.ready):
                    for i in range(P):
                        with m.If(lane == i):
                            m.d.sync += fire[i].eq(0)
            with m.Elif(end):
                m.d.comb += [self.outputs.valid.eq(1), out.op.eq(EventOp.STEP)]
                with m.If(self.outputs.ready):
                    m.d.sync += busy.eq(0)
            with m.Else():
                m.d.sync += busy.eq(0)
        return m

