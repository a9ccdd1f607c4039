"""Neuron tile: synapse (weight) memory + :class:`~.neuron_core.NeuronCore`, speaking the accelerator's
events (:mod:`spikeforge.hw.events`), programmable over a configuration stream.

The bit-exact model and the event contract are in :mod:`spikeforge.sw.neuron_tile`: an input
``EVENT axon=(token, k) value`` reads the ``groups`` weight words of row ``k`` and sends one
``ACCUMULATE`` beat per word into the core (``current = sat(value * weight)`` per lane, the token's lane
groups); ``STEP`` and ``CLEAR`` go to the core after the accumulations before them (``CLEAR`` is followed
by the bias accumulations when the program has a bias; a readout tile answers ``STEP`` with ``STEP`` and
keeps its potentials); ``READ axon=group`` sends the group's state on ``readback``; the core's spike beats
are serialised into one ``EVENT axon=neuron value=±1`` per spike (lowest lane first) and a ``STEP`` after
each sweep. Malformed axons (token or ``k`` beyond the program) and unknown ops are dropped and counted
in ``rejected``; saturated products in ``product_overflows``; the core's ``overflows`` are passed on.
Every stream may stall; nothing is dropped.

The program (:class:`~spikeforge.sw.neuron_tile.TileProgram`: geometry, neuron parameters, weights,
bias) is loaded by configuration writes ``{mem, addr, data}`` (:mod:`spikeforge.sw.program`) on ``writes``,
one per cycle, while the tile is idle; the registers and memories start from ``program`` if one is given
(a standalone tile needs no writes). Throughput: one accumulate beat per cycle (a two-stage read pipeline).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.fixed import signed_range
from ..sw.neuron_tile import NeuronTileFormat, TileProgram
from ..sw.neurons import NeuronModel
from ..sw.program import MEMORY_BITS, TILE_REGISTERS, ConfigFormat, TileMemory
from .arith import index_width, popcount, saturating_increment
from .events import EventOp, event_signature
from .neuron_core import CoreOp, NeuronCore
from .neuron_rules import lane_rule

__all__ = ["NeuronTile", "CoreTile", "config_layout", "tile_config_format", "serialise_spikes"]


def serialise_spikes(m, core: NeuronCore, outputs, marker: Signal):
    """Drive the event stream ``outputs`` from ``core``'s spike beats: one ``EVENT axon=neuron value=±1``
    per spike (lowest lane first), then ``STEP`` after each sweep; ``marker`` (held by the caller) asks for
    a lone ``STEP`` (a tile whose core does not step). Returns ``(busy, marker_taken)``: a beat is being
    sent; the marker was taken this cycle (the caller clears it)."""
    P = core.lanes
    out = outputs.payload
    beat = Signal.like(core.spikes.payload)
    fire, neg = Signal(P), Signal(P)
    end, busy = Signal(), Signal()
    marker_taken = Signal()
    m.d.comb += [core.spikes.ready.eq(~busy), marker_taken.eq(marker & ~busy & ~core.spikes.valid)]
    with m.If(core.spikes.valid & ~busy):
        m.d.sync += [beat.eq(core.spikes.payload), fire.eq(core.spikes.payload.fire),
                     neg.eq(core.spikes.payload.neg), end.eq(core.spikes.payload.end_step), busy.eq(1)]
    with m.If(marker_taken):
        m.d.sync += [fire.eq(0), end.eq(1), busy.eq(1)]
    lane = Signal(range(max(P, 2)))
    for i in reversed(range(P)):
        with m.If(fire[i]):
            m.d.comb += lane.eq(i)
    with m.If(busy):
        with m.If(fire.any()):
            m.d.comb += [outputs.valid.eq(1), out.op.eq(EventOp.EVENT),
                         out.axon.eq(beat.group * P + lane), out.value.eq(Mux(neg.bit_select(lane, 1), -1, 1))]
            with m.If(outputs.ready):
                for i in range(P):
                    with m.If(lane == i):
                        m.d.sync += fire[i].eq(0)
        with m.Elif(end):
            m.d.comb += [outputs.valid.eq(1), out.op.eq(EventOp.STEP)]
            with m.If(outputs.ready):
                m.d.sync += busy.eq(0)
        with m.Else():
            m.d.sync += busy.eq(0)
    return busy, marker_taken


class CoreTile(wiring.Component):
    """What the three tile kinds share: an ST-BIF/BIF :class:`~.neuron_core.NeuronCore` with run-time
    parameters behind a front end, the event ports, the configuration-write port and the counters
    (members: ``inputs``, ``outputs``, ``readback``, ``writes``, ``rejected``, ``product_overflows``,
    ``overflows``, ``idle``). Subclasses call :meth:`_init_tile` from their constructor."""

    def _init_tile(self, fmt, fmt_type, model: NeuronModel, program, counter_width: int,
                   config_format: ConfigFormat | None, need: ConfigFormat, kind: str):
        try:
            if not isinstance(fmt, fmt_type):
                raise TypeError(f"fmt must be a {fmt_type.__name__}, not {type(fmt).__name__}")
            if model.current_width != fmt.current_width:
                raise ValueError(f"the neuron model's current_width={model.current_width} differs from the tile's "
                                 f"current_width={fmt.current_width}: build both with the same width")
            if not lane_rule(model).runtime:
                raise TypeError(f"a {kind} runs ST-BIF or BIF neurons (their parameters are programmed); "
                                f"{model.kind} has no run-time parameters")
            if program is not None:
                program.check(fmt, model)
            self.core = NeuronCore(model, neurons=fmt.neurons, lanes=fmt.lanes, counter_width=counter_width,
                                   runtime_params=True)
            self.config_format = config_format or need
            if self.config_format.addr_bits < need.addr_bits or self.config_format.data_bits < need.data_bits:
                raise ValueError(f"config_format={self.config_format} is narrower than the tile needs ({need})")
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self.core._MustUse__silence = True           # elaborated with the tile
        self.fmt, self.model, self.program = fmt, model, program
        self.counter_width = counter_width
        self.event_format = fmt.event_format()
        sig = event_signature(self.event_format)
        wiring.Component.__init__(self, {
            "inputs": In(sig), "outputs": Out(sig), "readback": Out(stream.Signature(self.core.readback_layout)),
            "writes": In(stream.Signature(config_layout(self.config_format))),
            "rejected": Out(counter_width), "product_overflows": Out(counter_width),
            "overflows": Out(counter_width), "idle": Out(1)})

    def _core(self, m: Module, regs0: dict):
        """Add the core; return ``(core, own_rejected, theta, s_min, s_max)``: the tile's own rejected-event
        counter (added to the core's in ``rejected``) and the neuron-parameter registers (reset values
        from ``regs0``) that drive the core."""
        m.submodules.core = core = self.core
        own_rejected = Signal(self.counter_width)
        m.d.comb += [self.overflows.eq(core.overflows),
                     self.rejected.eq(saturating_increment(own_rejected, core.rejected))]
        wiring.connect(m, wiring.flipped(self.readback), core.readback)
        params = core.params
        theta = Signal.like(params.theta, init=regs0["theta"])
        s_min = Signal.like(params.s_min, init=regs0["s_min"])
        s_max = Signal.like(params.s_max, init=regs0["s_max"])
        m.d.comb += [params.theta.eq(theta), params.s_min.eq(s_min), params.s_max.eq(s_max)]
        return core, own_rejected, theta, s_min, s_max

    def _initial_registers(self, names) -> dict:
        """Reset values of the tile's registers: the initial program's, or 0 (theta 1) without one."""
        if self.program is not None:
            return self.program.registers(self.fmt.lanes)
        regs0 = {name: 0 for name in names}
        regs0.update(theta=1)
        return regs0

    def _load_registers(self, m: Module, registers) -> None:
        """Store a configuration write's data in register ``addr`` (in the caller's write-decode context)."""
        cfg = self.writes.payload
        for i, reg in enumerate(registers):
            with m.If(cfg.addr == i):
                m.d.sync += reg.eq(cfg.data[:len(reg)])

    def _read_group(self, m: Module, core, own_rejected, wait=None) -> None:
        """``READ axon=group`` (in the caller's op-decode context): the core reads the group back, or a group
        the core does not have is dropped and counted; ``wait`` holds a valid ``READ`` back."""
        ev, ce = self.inputs.payload, core.events.payload
        with m.If(ev.axon < self.fmt.neurons // self.fmt.lanes):
            if wait is None:
                m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.READ), ce.group.eq(ev.axon),
                             self.inputs.ready.eq(core.events.ready)]
            else:
                m.d.comb += [core.events.valid.eq(~wait), ce.op.eq(CoreOp.READ),
                             ce.group.eq(ev.axon), self.inputs.ready.eq(core.events.ready & ~wait)]
        with m.Else():            # no such lane group: dropped and counted
            m.d.comb += self.inputs.ready.eq(1)
            m.d.sync += own_rejected.eq(saturating_increment(own_rejected, 1))


def config_layout(fmt: ConfigFormat) -> data.StructLayout:
    """``{mem, addr, data}`` of one configuration write."""
    return data.StructLayout({"mem": MEMORY_BITS, "addr": fmt.addr_bits, "data": fmt.data_bits})


def tile_config_format(fmt: NeuronTileFormat, model: NeuronModel) -> ConfigFormat:
    """The narrowest configuration write that loads every memory and register of a tile ``fmt``."""
    depth = max(fmt.words, fmt.neurons // fmt.lanes, len(TILE_REGISTERS))
    return ConfigFormat(index_width(depth), max(fmt.synapse_word_bits, fmt.bias_word_bits, model.v_width,
                                                index_width(fmt.neurons + 1) + 1))


class NeuronTile(CoreTile):
    """One neuron tile of hardware ``fmt`` (:class:`~spikeforge.sw.neuron_tile.NeuronTileFormat`) with
    neurons of ``model``'s kind and widths (ST-BIF or BIF: ``theta`` and the tracer bounds come from the
    program). ``weights [cols, fan_in]`` is shorthand for ``program=TileProgram.for_format(fmt, model,
    weights)``; without either the tile starts empty (every event rejected until programmed).

    Members
    -------
    inputs : ``In(event_signature(fmt.event_format()))``
    outputs : ``Out(event_signature(fmt.event_format()))`` — spikes (axon = core neuron) and ``STEP``
    readback : ``Out(stream.Signature(core.readback_layout))`` — answers to ``READ``
    writes : ``In(stream.Signature(config_layout(config_format)))`` — program (configuration) writes
    rejected, product_overflows, overflows : ``Out(counter_width)``
    idle : ``Out(1)`` — no event held anywhere in the tile and none offered to it
    """

    def __init__(self, fmt: NeuronTileFormat, model: NeuronModel, weights=None, *, program: TileProgram | None = None,
                 counter_width: int = 32, config_format: ConfigFormat | None = None):
        try:
            if weights is not None and program is not None:
                raise TypeError("give weights or program, not both")
            if weights is not None and isinstance(fmt, NeuronTileFormat):
                program = TileProgram.for_format(fmt, model, weights)
            need = tile_config_format(fmt, model) if isinstance(fmt, NeuronTileFormat) else None
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self._init_tile(fmt, NeuronTileFormat, model, program, counter_width, config_format, need, "neuron tile")

    @property
    def weights(self) -> np.ndarray:
        return self.program.weights if self.program is not None else np.zeros((0, 0), np.int64)

    @property
    def verilog_name(self) -> str:
        return f"neuron_tile_{self.model.kind}"

    def config(self) -> dict:
        p = self.program
        prog = None if p is None else {
            "tokens": p.tokens, "cols": p.cols, "fan_in": p.fan_in, "weights": p.weights.tolist(),
            "bias": None if p.bias is None else p.bias.tolist(), "theta": p.theta, "s_min": p.s_min,
            "s_max": p.s_max, "readout": p.readout}
        return {"fmt": vars(self.fmt), "model": self.model.to_dict(), "program": prog,
                "counter_width": self.counter_width, "config_format": vars(self.config_format)}

    @classmethod
    def from_config(cls, config: dict) -> "NeuronTile":
        from ..sw.neurons import model_from_dict
        prog = config.get("program")
        return cls(NeuronTileFormat(**config["fmt"]), model_from_dict(config["model"]),
                   program=None if prog is None else TileProgram(**prog), counter_width=config["counter_width"],
                   config_format=ConfigFormat(**config["config_format"]))

    def elaborate(self, platform):
        m = Module()
        fmt, P = self.fmt, self.fmt.lanes
        prog = self.program
        # ---- registers (reset values from the initial program) --------------------------------------------
        regs0 = self._initial_registers(TILE_REGISTERS)
        core, own_rejected, theta, s_min, s_max = self._core(m, regs0)
        tokens = Signal(range(fmt.tokens + 1), init=regs0["tokens"])
        groups = Signal(range(fmt.max_groups + 1), init=regs0["groups"])
        fan_in = Signal(range(fmt.fan_in + 1), init=regs0["fan_in"])
        readout = Signal(init=regs0["readout"])
        has_bias = Signal(init=regs0["bias"])
        active = Signal.like(core.active_groups)        # the sweep covers the program's neurons only
        m.d.sync += active.eq(tokens * groups)
        m.d.comb += core.active_groups.eq(active)
        registers = dict(zip(TILE_REGISTERS, (tokens, groups, fan_in, theta, s_min, s_max, readout, has_bias)))

        # ---- memories: synapses [words] x P weights, bias [core groups] x P currents ----------------------------
        wlayout = data.ArrayLayout(signed(fmt.weight_bits), P)
        blayout = data.ArrayLayout(signed(fmt.current_width), P)
        syn_init = [[int(w) for w in row] for row in prog.synapse_image(P)] if prog is not None else []
        bias_init = [[int(b) for b in row] for row in prog.bias_image(P)] if prog is not None else []
        m.submodules.synapses = syn = memory.Memory(shape=wlayout, depth=max(fmt.words, 2), init=syn_init)
        m.submodules.bias = bmem = memory.Memory(shape=blayout, depth=max(fmt.neurons // P, 2), init=bias_init)
        rd, brd = syn.read_port(), bmem.read_port()
        swr, bwr = syn.write_port(), bmem.write_port()

        cfg = self.writes.payload
        m.d.comb += self.writes.ready.eq(1)
        with m.If(self.writes.valid):
            with m.Switch(cfg.mem):
                with m.Case(TileMemory.REGISTER):
                    self._load_registers(m, registers.values())
                with m.Case(TileMemory.SYNAPSE):
                    m.d.comb += [swr.en.eq(1), swr.addr.eq(cfg.addr), swr.data.eq(cfg.data[:fmt.synapse_word_bits])]
                with m.Case(TileMemory.BIAS):
                    m.d.comb += [bwr.en.eq(1), bwr.addr.eq(cfg.addr), bwr.data.eq(cfg.data[:fmt.bias_word_bits])]

        # ---- input side: a pipeline issues one ACCUMULATE beat per cycle ---------------------------------
        # A0 holds the accepted event; A walks its lane groups j (weights: word k * groups + j; the bias
        # after CLEAR: word token * groups + j of the bias memory), one memory read per cycle; B is the
        # word read (the read port's enable holds it while the core stalls), B2 the word registered, C the
        # saturated products registered: the beat the core takes. All stages move together (``adv``);
        # a new event enters A as the previous one issues its last read. STEP, CLEAR and READ reach the
        # core only once every stage is empty, so the core sees every op in input order.
        ev = self.inputs.payload
        ce = core.events.payload

        a_active, a_bias = Signal(), Signal()
        token = Signal(range(max(fmt.tokens, 2)))
        value = Signal(signed(fmt.value_bits))
        j = Signal(range(max(fmt.max_groups, 2)))
        b_valid, b_bias = Signal(), Signal()
        b_group = Signal.like(ce.group)
        b_value = Signal(signed(fmt.value_bits))
        readout_step = Signal()
        in_token = ev.axon >> fmt.k_bits
        in_k = ev.axon & ((1 << fmt.k_bits) - 1)
        lo, hi = signed_range(fmt.current_width)

        c_valid = Signal()
        adv = Signal()                              # the pipeline moves: its last stage is empty or taken now
        m.d.comb += adv.eq(~c_valid | core.events.ready)
        k_base = Signal(range(max(fmt.words, 2)))           # k * groups: the event's first weight word
        t_base = Signal(range(max(fmt.neurons // P, 2)))    # token * groups: its first core lane group
        m.d.comb += [rd.addr.eq(k_base + j), brd.addr.eq(t_base + j), rd.en.eq(adv), brd.en.eq(adv)]
        # groups - 1 and tokens - 1 registered: the last-group / last-token tests are then plain compares
        # (the subtraction in front of them was the critical path, 84.7 MHz)
        groups_m1 = Signal.like(groups, init=(regs0["groups"] - 1) % (1 << len(groups)))
        tokens_m1 = Signal.like(tokens, init=(regs0["tokens"] - 1) % (1 << len(tokens)))
        m.d.sync += [groups_m1.eq(groups - 1), tokens_m1.eq(tokens - 1)]
        last_group = j == groups_m1

        # stage B: the words read (block-RAM output) are registered; stage C: the products, saturated and
        # registered, are the beat the core takes (block RAM -> multiply -> saturate -> core in one cycle
        # measured 36 MHz on ECP5; split in three it is no longer the critical path)
        c_group = Signal.like(ce.group)
        c_current = Signal.like(ce.current)
        c_over = Signal(P)
        b2_valid, b2_bias = Signal(), Signal()
        b2_group = Signal.like(ce.group)
        b2_value = Signal(signed(fmt.value_bits))
        b2_w = Signal(wlayout)
        b2_b = Signal(blayout)
        with m.If(adv):
            m.d.sync += [b2_valid.eq(b_valid), b2_bias.eq(b_bias), b2_group.eq(b_group), b2_value.eq(b_value),
                         b2_w.eq(rd.data), b2_b.eq(brd.data)]
        over = Signal(P)                           # lanes whose product saturates
        current = Signal.like(ce.current)
        for lane in range(P):
            prod = Signal(signed(fmt.weight_bits + fmt.value_bits), name=f"prod{lane}")
            m.d.comb += [prod.eq(b2_w[lane] * b2_value), over[lane].eq(~b2_bias & ((prod > hi) | (prod < lo)))]
            with m.If(b2_bias):
                m.d.comb += current[lane].eq(b2_b[lane])
            with m.Else():
                m.d.comb += current[lane].eq(Mux(prod > hi, hi, Mux(prod < lo, lo, prod)))
        with m.If(adv):
            m.d.sync += [c_valid.eq(b2_valid), c_group.eq(b2_group), c_current.eq(current),
                         c_over.eq(Mux(b2_valid, over, 0))]
        with m.If(c_valid):
            m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.ACCUMULATE), ce.group.eq(c_group),
                         ce.current.eq(c_current)]
        with m.If(adv & c_over.any()):                # counted as the beat leaves (or the slot empties)
            m.d.sync += self.product_overflows.eq(saturating_increment(self.product_overflows, popcount(c_over)))

        # stage A0 holds the next accepted event; when A takes it the products k * groups and
        # token * groups are registered (no multiplier between a register and a block-RAM address)
        z_valid = Signal()
        z_token = Signal(range(max(fmt.tokens, 2)))
        z_k = Signal(range(max(fmt.fan_in, 2)))
        z_value = Signal(signed(fmt.value_bits))
        a_last = a_active & last_group & (~a_bias | (token == tokens_m1))     # A's last beat is issued now
        a_takes = z_valid & (~a_active | (adv & a_last))

        # stage A: issue a read per cycle while active
        with m.If(adv):
            m.d.sync += b_valid.eq(a_active)
            with m.If(a_active):
                m.d.sync += [b_group.eq(t_base + j), b_value.eq(value), b_bias.eq(a_bias)]
                with m.If(last_group):
                    m.d.sync += j.eq(0)
                    with m.If(~a_bias | (token == tokens_m1)):
                        m.d.sync += a_active.eq(0)
                    with m.Else():
                        m.d.sync += [token.eq(token + 1), t_base.eq(t_base + groups)]
                with m.Else():
                    m.d.sync += j.eq(j + 1)
        with m.If(a_takes):
            m.d.sync += [k_base.eq(z_k * groups), t_base.eq(z_token * groups), value.eq(z_value), j.eq(0),
                         a_active.eq(1), a_bias.eq(0), z_valid.eq(0)]

        # accepting input: an event into A0 when it is free (or empties this cycle), a marker when all is empty
        drained = ~z_valid & ~a_active & ~b_valid & ~b2_valid & ~c_valid & ~readout_step
        with m.If(self.inputs.valid):
            with m.Switch(ev.op):
                with m.Case(EventOp.EVENT):
                    with m.If((~z_valid | a_takes) & ~readout_step):
                        m.d.comb += self.inputs.ready.eq(1)
                        with m.If((in_token < tokens) & (in_k < fan_in) & (groups != 0)):
                            m.d.sync += [z_token.eq(in_token), z_k.eq(in_k), z_value.eq(ev.value), z_valid.eq(1)]
                        with m.Else():
                            m.d.sync += own_rejected.eq(saturating_increment(own_rejected, 1))
                with m.Case(EventOp.STEP):
                    with m.If(drained):
                        with m.If(readout):
                            m.d.comb += self.inputs.ready.eq(1)
                            m.d.sync += readout_step.eq(1)
                        with m.Else():
                            m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.STEP),
                                         self.inputs.ready.eq(core.events.ready)]
                with m.Case(EventOp.CLEAR):
                    with m.If(drained):
                        m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.CLEAR),
                                     self.inputs.ready.eq(core.events.ready)]
                        with m.If(core.events.ready & has_bias & (tokens != 0) & (groups != 0)):
                            m.d.sync += [token.eq(0), t_base.eq(0), j.eq(0), a_active.eq(1), a_bias.eq(1)]
                with m.Case(EventOp.READ):
                    with m.If(drained):
                        self._read_group(m, core, own_rejected)
        # ---- output side: one event per spike, then STEP ---------------------------------------------------
        busy, marker_taken = serialise_spikes(m, core, self.outputs, readout_step)
        with m.If(marker_taken):                        # a readout tile answers STEP at once
            m.d.sync += readout_step.eq(0)
        m.d.comb += self.idle.eq(~z_valid & ~a_active & ~b_valid & ~b2_valid & ~c_valid & ~readout_step & core.idle & ~busy &
                                 ~core.spikes.valid &
                                 ~self.inputs.valid)
        return m
