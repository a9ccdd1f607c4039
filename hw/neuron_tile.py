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
from ..sw.neuron_tile import MAX_WINDOW, NeuronTileFormat, TileProgram
from ..sw.neurons import NeuronModel
from ..sw.program import MEMORY_BITS, TILE_REGISTERS, ConfigFormat, TileMemory
from .arith import index_width, popcount, saturating_increment
from .blocks import register_block
from .events import EventOp, event_signature
from .neuron_core import CoreOp, NeuronCore
from .neuron_rules import lane_rule

__all__ = ["NeuronTile", "CoreTile", "config_layout", "tile_config_format", "serialise_spikes"]


def serialise_spikes(m, core: NeuronCore, outputs, marker: Signal, offset=None):
    """Drive the event stream ``outputs`` from ``core``'s spike beats: one ``EVENT axon=offset + neuron
    value=±1`` per spike (lowest lane first; ``offset`` a signal held through the sweep, default 0), then
    ``STEP`` after each sweep; ``marker`` (held by the caller) asks for a lone ``STEP`` (a tile whose core
    does not step). Returns ``(busy, marker_taken)``: a beat is being sent; the marker was taken this cycle
    (the caller clears it)."""
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
                         out.axon.eq(beat.group * P + lane if offset is None else offset + beat.group * P + lane),
                         out.value.eq(Mux(neg.bit_select(lane, 1), -1, 1))]
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
                   config_format: ConfigFormat | None, need: ConfigFormat, kind: str, extra: dict | None = None):
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
            "overflows": Out(counter_width), "idle": Out(1), **(extra or {})})

    def config(self) -> dict:
        """JSON-ready: the tile's format, neuron model, program (if any), counter width, write format."""
        return {"fmt": vars(self.fmt), "model": self.model.to_dict(),
                "program": None if self.program is None else self.program.to_dict(),
                "counter_width": self.counter_width, "config_format": vars(self.config_format)}

    @classmethod
    def from_config(cls, config: dict):
        from ..sw.neurons import model_from_dict
        prog = config.get("program")
        return cls(cls.format_type(**config["fmt"]), model_from_dict(config["model"]),
                   program=None if prog is None else cls.program_type.from_dict(prog),
                   counter_width=config["counter_width"], config_format=ConfigFormat(**config["config_format"]))

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
                                                index_width(fmt.neurons + 1) + 1,
                                                index_width(MAX_WINDOW + 1) if fmt.buffer_words else 1))


@register_block("neuron_tile")
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
    pending : ``Out(1)`` — a recurrent program has windows left to run (the network is not done even in
        a step without spikes); 0 without an input buffer (``fmt.buffer_words == 0``)
    """

    format_type, program_type = NeuronTileFormat, TileProgram

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
        self._init_tile(fmt, NeuronTileFormat, model, program, counter_width, config_format, need, "neuron tile",
                        {"pending": Out(1)})

    @property
    def weights(self) -> np.ndarray:
        return self.program.weights if self.program is not None else np.zeros((0, 0), np.int64)

    @property
    def verilog_name(self) -> str:
        return f"neuron_tile_{self.model.kind}"

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
        window = Signal(range(MAX_WINDOW + 1), init=regs0["window"])
        elements = Signal(range(fmt.tokens + 1), init=min(regs0["elements"], fmt.tokens))
        registers = dict(zip(TILE_REGISTERS, (tokens, groups, fan_in, theta, s_min, s_max, readout, has_bias,
                                              window, elements)))
        buffered = fmt.buffer_words > 0           # the input buffer of recurrent programs (elided without one)
        rnn = Signal()                            # a recurrent program is loaded
        if buffered:
            m.d.sync += rnn.eq(window != 0)

        # ---- memories: synapses [words] x P weights, bias [core groups] x P currents ----------------------------
        wlayout = data.ArrayLayout(signed(fmt.weight_bits), P)
        blayout = data.ArrayLayout(signed(fmt.current_width), P)
        syn_init = [[int(w) for w in row] for row in prog.synapse_image(P)] if prog is not None else []
        bias_init = [[int(b) for b in row] for row in prog.bias_image(P)] if prog is not None else []
        m.submodules.synapses = syn = memory.Memory(shape=wlayout, depth=max(fmt.words, 2), init=syn_init)
        m.submodules.bias = bmem = memory.Memory(shape=blayout, depth=max(fmt.neurons // P, 2), init=bias_init)
        rd, brd = syn.read_port(), bmem.read_port()
        swr, bwr = syn.write_port(), bmem.write_port()
        if buffered:
            m.submodules.buffer = xbuf = memory.Memory(shape=signed(fmt.value_bits), depth=max(fmt.buffer_words, 2),
                                                        init=[])
            xrd, xwr = xbuf.read_port(), xbuf.write_port()

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
        buffer_saturated = Signal()                   # a buffered input value saturated (recurrent programs)
        with m.If((adv & c_over.any()) | buffer_saturated):      # counted as the beat leaves (or the slot empties)
            m.d.sync += self.product_overflows.eq(saturating_increment(
                self.product_overflows, Mux(adv, popcount(c_over), 0) + buffer_saturated))

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
        # recurrent programs (see the module docstring of spikeforge.sw.neuron_tile): the input buffer takes
        # one event per cycle (read-modify-write in two stages: X1 reads the word, X2 adds and writes it; a
        # word X2 writes while X1 reads it is forwarded); the window sequencer runs at a window's first
        # STEP: core CLEAR, the bias walk, the buffer row replayed into A0, then the core STEP
        x1_valid, x2_valid, x2_forward = Signal(), Signal(), Signal()
        x1_addr = Signal(range(max(fmt.buffer_words, 2)))
        x2_addr = Signal.like(x1_addr)
        x1_value, x2_value = Signal(signed(fmt.value_bits)), Signal(signed(fmt.value_bits))
        x2_written = Signal(signed(fmt.value_bits))          # the word X2 wrote last
        wiping = Signal()                   # CLEAR zeroes the buffer, one word per cycle
        wipe_addr = Signal.like(x1_addr)
        seq = Signal(2)                     # 0 idle, 1 core CLEAR, 2 read a buffer word, 3 replay it into A0
        replayed = Signal()                 # the window's inputs are in: its first STEP may go to the core
        phase = Signal(range(MAX_WINDOW + 1))                 # step within the window
        element = Signal(range(fmt.tokens + 1))              # the window's sequence element
        out_base = Signal(range(max(fmt.neurons, 2)))        # element x cols padded: its output indices
        row_base = Signal(range(max(fmt.buffer_words, 2)))   # element x fan_in: its buffer row
        out_offset = Signal.like(out_base)                   # the output indices of the sweep under way
        k_replay = Signal(range(max(fmt.fan_in, 2)))
        width = Signal(range(fmt.max_groups * P + 1))
        m.d.sync += width.eq(groups * P)
        buf_idle = ~x1_valid & ~x2_valid & ~wiping & (seq == 0)
        finished = rnn & (element >= elements)               # every window ran: STEP is answered at once
        m.d.comb += self.pending.eq(rnn & (element < elements))
        drained = ~z_valid & ~a_active & ~b_valid & ~b2_valid & ~c_valid & ~readout_step & buf_idle
        m.d.sync += x1_valid.eq(0)                  # X1 holds an event one cycle (set below when one is taken)
        with m.If(self.inputs.valid):
            with m.Switch(ev.op):
                with m.Case(EventOp.EVENT):
                    with m.If(rnn):
                        with m.If(~wiping & (seq == 0)):
                            m.d.comb += self.inputs.ready.eq(1)
                            with m.If((in_token < elements) & (in_k < fan_in)):
                                m.d.sync += [x1_addr.eq(in_token * fan_in + in_k), x1_value.eq(ev.value),
                                             x1_valid.eq(1)]
                            with m.Else():
                                m.d.sync += own_rejected.eq(saturating_increment(own_rejected, 1))
                    with m.Elif((~z_valid | a_takes) & ~readout_step):
                        m.d.comb += self.inputs.ready.eq(1)
                        with m.If((in_token < tokens) & (in_k < fan_in) & (groups != 0)):
                            m.d.sync += [z_token.eq(in_token), z_k.eq(in_k), z_value.eq(ev.value), z_valid.eq(1)]
                        with m.Else():
                            m.d.sync += own_rejected.eq(saturating_increment(own_rejected, 1))
                with m.Case(EventOp.STEP):
                    with m.If(drained):
                        with m.If(readout | finished):
                            with m.If(~finished | core.idle):      # after the last window's sweep
                                m.d.comb += self.inputs.ready.eq(1)
                                m.d.sync += readout_step.eq(1)
                        with m.Elif(rnn & (phase == 0) & ~replayed):
                            m.d.sync += seq.eq(1)               # the window starts: its inputs first
                        with m.Else():
                            m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.STEP),
                                         self.inputs.ready.eq(core.events.ready)]
                            with m.If(core.events.ready & rnn):
                                m.d.sync += [replayed.eq(0), out_offset.eq(out_base)]
                                with m.If(phase + 1 == window):
                                    m.d.sync += [phase.eq(0), element.eq(element + 1), out_base.eq(out_base + width),
                                                 row_base.eq(row_base + fan_in)]
                                with m.Else():
                                    m.d.sync += phase.eq(phase + 1)
                with m.Case(EventOp.CLEAR):
                    with m.If(drained):
                        m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.CLEAR),
                                     self.inputs.ready.eq(core.events.ready)]
                        with m.If(core.events.ready & has_bias & ~rnn & (tokens != 0) & (groups != 0)):
                            m.d.sync += [token.eq(0), t_base.eq(0), j.eq(0), a_active.eq(1), a_bias.eq(1)]
                        with m.If(core.events.ready & rnn):
                            m.d.sync += [wiping.eq(1), wipe_addr.eq(0), phase.eq(0), element.eq(0), out_base.eq(0),
                                         row_base.eq(0), replayed.eq(0)]
                with m.Case(EventOp.READ):
                    with m.If(drained):
                        self._read_group(m, core, own_rejected)
        if buffered:
            vlo, vhi = signed_range(fmt.value_bits)
            total = Signal(signed(fmt.value_bits + 1))
            saturated = Signal(signed(fmt.value_bits))
            m.d.comb += [xrd.en.eq(x1_valid | (seq == 2)), xrd.addr.eq(Mux(seq == 2, row_base + k_replay, x1_addr)),
                         total.eq(Mux(x2_forward, x2_written, xrd.data) + x2_value),
                         saturated.eq(Mux(total > vhi, vhi, Mux(total < vlo, vlo, total)))]
            m.d.sync += [x2_valid.eq(x1_valid), x2_addr.eq(x1_addr), x2_value.eq(x1_value),
                         x2_forward.eq(x1_valid & x2_valid & (x2_addr == x1_addr))]
            # a saturation is counted one cycle later (registered: the block-RAM read -> add -> compare ->
            # counter carry chain in one cycle set the recurrent tile's Fmax, 58.9 MHz)
            saturated_q = Signal()
            m.d.sync += saturated_q.eq(x2_valid & ((total > vhi) | (total < vlo)))
            m.d.comb += buffer_saturated.eq(saturated_q)
            with m.If(x2_valid):
                m.d.comb += [xwr.en.eq(1), xwr.addr.eq(x2_addr), xwr.data.eq(saturated)]
                m.d.sync += x2_written.eq(saturated)
            with m.If(wiping):
                m.d.comb += [xwr.en.eq(1), xwr.addr.eq(wipe_addr), xwr.data.eq(0)]
                m.d.sync += wipe_addr.eq(wipe_addr + 1)
                with m.If(wipe_addr == fmt.buffer_words - 1):
                    m.d.sync += wiping.eq(0)
            with m.Switch(seq):
                with m.Case(1):                            # the BIF window reset, then the bias
                    m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.CLEAR)]
                    with m.If(core.events.ready):
                        m.d.sync += [seq.eq(2), k_replay.eq(0)]
                        with m.If(has_bias & (groups != 0)):
                            m.d.sync += [token.eq(0), t_base.eq(0), j.eq(0), a_active.eq(1), a_bias.eq(1)]
                with m.Case(2):                            # read word k of the row (its data is held next cycle)
                    m.d.sync += seq.eq(3)
                with m.Case(3):                            # a nonzero word enters A0 as an event (token 0, k)
                    last = k_replay + 1 == fan_in
                    with m.If((xrd.data == 0) | ~z_valid | a_takes):
                        with m.If(xrd.data != 0):
                            m.d.sync += [z_token.eq(0), z_k.eq(k_replay), z_value.eq(xrd.data), z_valid.eq(1)]
                        m.d.sync += [seq.eq(Mux(last, 0, 2)), k_replay.eq(k_replay + 1)]
                        with m.If(last):
                            m.d.sync += replayed.eq(1)
        # ---- output side: one event per spike, then STEP ---------------------------------------------------
        busy, marker_taken = serialise_spikes(m, core, self.outputs, readout_step, out_offset if buffered else None)
        with m.If(marker_taken):                        # a readout tile answers STEP at once
            m.d.sync += readout_step.eq(0)
        m.d.comb += self.idle.eq(~z_valid & ~a_active & ~b_valid & ~b2_valid & ~c_valid & ~readout_step & core.idle & ~busy &
                                 ~core.spikes.valid & buf_idle &
                                 ~self.inputs.valid)
        return m
