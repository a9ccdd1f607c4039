"""Function-unit tile: a softmax / LayerNorm unit evaluating the bit-exact integer ``f`` and the ST-BIF core
of the neuron layer that quantizes it, speaking the accelerator's events.

The contract and the bit-exact model are in :mod:`spikeforge.sw.unit_tile` (``f`` itself in
:mod:`spikeforge.sw.units`): ``EVENT axon=(row, c) value`` adds to the row's input total (read-modify-
write of the totals memory, the row marked changed); ``STEP`` evaluates every changed row and accumulates
the level differences into the core, then steps it; ``CLEAR`` zeroes totals and levels, marks every row
changed and clears the core; ``READ`` reads a core group back. The core's spikes leave as events.

The evaluator is sequential, one row at a time (one multiplier-and-adder datapath shared by the row):

1. scan the row's totals: max (softmax) or ``S1 = sum t``, ``S2 = sum t^2`` (LayerNorm);
2. softmax: ``s = sum EXP[min(m - t, D)]`` (table in block RAM); LayerNorm: ``V = C S2 - S1^2`` and
   ``q = isqrt((V + E) 4^P)`` by the bit-serial restoring square root (one result bit per cycle);
3. per value: the numerator and denominator of the module docstring's formulas, then
   ``clamp(floor(num / den), n_min, n_max)`` by a restoring division of ``level_bits`` quotient bits
   (one per cycle) on ``num - n_min den`` (exact: the quotient is clamped anyway), the difference to the
   stored level accumulated into lane ``c % P`` of the core group; a group with any nonzero difference
   is one ``ACCUMULATE`` beat.

Every register is as wide as :func:`spikeforge.sw.unit_tile.datapath_widths` says, so nothing inside the
evaluator can overflow; only the input totals saturate (counted in ``product_overflows``). Malformed axons
and unknown ops are dropped and counted in ``rejected``. Every stream may stall; nothing is dropped.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw.fixed import signed_range
from ..sw.neurons import NeuronModel
from ..sw.program import ConfigFormat, TileMemory
from ..sw.unit_tile import UNIT_OPS, UNIT_REGISTERS, UnitProgram, UnitTileFormat, datapath_widths
from ..sw.units import OUT_FRAC_BITS, SOFTMAX_FRAC_BITS, SQRT_FRAC_BITS
from .arith import index_width, saturating_increment
from .events import EventOp, event_signature
from .neuron_core import CoreOp, NeuronCore
from .neuron_rules import lane_rule
from .neuron_tile import config_layout, serialise_spikes

__all__ = ["UnitTile", "unit_config_format"]


def unit_config_format(fmt, model: NeuronModel) -> ConfigFormat:
    """The narrowest configuration write that loads a unit tile ``fmt`` (``fmt.config_format``)."""
    return fmt.config_format(model)


class UnitTile(wiring.Component):
    """One unit tile of hardware ``fmt`` (:class:`~spikeforge.sw.unit_tile.UnitTileFormat`) with quant
    neurons of ``model``'s kind and widths (ST-BIF; parameters from the program). Starts from ``program``
    if given (a standalone tile), else empty until programmed over ``writes``.

    Members: as :class:`~spikeforge.hw.neuron_tile.NeuronTile` (``inputs``, ``outputs``, ``readback``,
    ``writes``, ``rejected``, ``product_overflows`` (saturated totals), ``overflows``, ``idle``).
    """

    def __init__(self, fmt: UnitTileFormat, model: NeuronModel, *, program: UnitProgram | None = None,
                 counter_width: int = 32, config_format: ConfigFormat | None = None):
        try:
            if not isinstance(fmt, UnitTileFormat):
                raise TypeError(f"fmt must be a UnitTileFormat, not {type(fmt).__name__}")
            if model.current_width != fmt.current_width:
                raise ValueError(f"the neuron model's current_width={model.current_width} differs from the tile's "
                                 f"current_width={fmt.current_width}")
            if not lane_rule(model).runtime:
                raise TypeError(f"a unit tile runs ST-BIF neurons; {model.kind} has no run-time parameters")
            if program is not None:
                program.check(fmt, model)
            self.core = NeuronCore(model, neurons=fmt.neurons, lanes=fmt.lanes, counter_width=counter_width,
                                   runtime_params=True)
            self.config_format = config_format or unit_config_format(fmt, model)
            need = unit_config_format(fmt, model)
            if self.config_format.addr_bits < need.addr_bits or self.config_format.data_bits < need.data_bits:
                raise ValueError(f"config_format={self.config_format} is narrower than the tile needs ({need})")
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self.core._MustUse__silence = True
        self.fmt, self.model, self.program = fmt, model, program
        self.counter_width = counter_width
        self.event_format = fmt.event_format()
        sig = event_signature(self.event_format)
        super().__init__({"inputs": In(sig), "outputs": Out(sig),
                          "readback": Out(stream.Signature(self.core.readback_layout)),
                          "writes": In(stream.Signature(config_layout(self.config_format))),
                          "rejected": Out(counter_width), "product_overflows": Out(counter_width),
                          "overflows": Out(counter_width), "idle": Out(1)})

    @property
    def verilog_name(self) -> str:
        return "unit_tile"

    def elaborate(self, platform):
        m = Module()
        fmt, P, prog = self.fmt, self.fmt.lanes, self.program
        W = datapath_widths(fmt)
        S, T, L = fmt.scale_bits, fmt.total_bits, fmt.level_bits
        F, G, Pq = SOFTMAX_FRAC_BITS, OUT_FRAC_BITS, SQRT_FRAC_BITS
        m.submodules.core = core = self.core
        own_rejected = Signal(self.counter_width)
        m.d.comb += [self.overflows.eq(core.overflows),
                     self.rejected.eq(saturating_increment(own_rejected, core.rejected))]
        wiring.connect(m, wiring.flipped(self.readback), core.readback)

        # ---- registers -------------------------------------------------------------------------------------
        regs0 = prog.registers(P) if prog is not None else {name: 0 for name in UNIT_REGISTERS}
        if prog is None:
            regs0.update(theta=1)
        op = Signal(init=regs0["op"])
        rows = Signal(range(fmt.rows + 1), init=regs0["rows"])
        width = Signal(range(fmt.width + 1), init=regs0["width"])
        groups = Signal(range(-(-fmt.width // P) + 1), init=regs0["groups"])
        n_min = Signal(signed(L), init=regs0["n_min"])
        n_max = Signal(signed(L), init=regs0["n_max"])
        exp_last = Signal(range(fmt.exp_words), init=regs0["exp_last"])
        scale = Signal(signed(S), init=regs0["scale"])
        eps = Signal(signed(S), init=regs0["eps"])
        params = core.params
        theta = Signal.like(params.theta, init=regs0["theta"])
        s_min = Signal.like(params.s_min, init=regs0["s_min"])
        s_max = Signal.like(params.s_max, init=regs0["s_max"])
        m.d.comb += [params.theta.eq(theta), params.s_min.eq(s_min), params.s_max.eq(s_max)]
        active = Signal.like(core.active_groups)
        m.d.sync += active.eq(rows * groups)
        m.d.comb += core.active_groups.eq(active)
        registers = dict(zip(UNIT_REGISTERS, (op, rows, width, groups, n_min, n_max, exp_last, scale, eps,
                                              theta, s_min, s_max)))

        # ---- memories ----------------------------------------------------------------------------------------
        depth = max(fmt.words, 2)
        m.submodules.totals = tmem = memory.Memory(shape=signed(T), depth=depth, init=[])
        m.submodules.levels = lmem = memory.Memory(shape=signed(L), depth=depth, init=[])
        table_init = [int(v) for v in prog.constants.exp_table] if prog is not None and prog.constants.op == "softmax" else []
        affine_init = []
        if prog is not None and prog.constants.op == "layernorm":
            k = prog.constants
            mask = (1 << S) - 1
            affine_init = [(int(g) & mask) | ((int(b) & mask) << S) for g, b in zip(k.gain, k.offset)]
        m.submodules.table = emem = memory.Memory(shape=unsigned(F + 1), depth=max(fmt.exp_words, 2), init=table_init)
        m.submodules.affine = amem = memory.Memory(shape=unsigned(2 * S), depth=max(fmt.width, 2), init=affine_init)
        t_rd, t_wr = tmem.read_port(), tmem.write_port()
        l_rd, l_wr = lmem.read_port(), lmem.write_port()
        e_rd, e_wr = emem.read_port(), emem.write_port()
        a_rd, a_wr = amem.read_port(), amem.write_port()

        cfg = self.writes.payload
        m.d.comb += self.writes.ready.eq(1)
        with m.If(self.writes.valid):
            with m.Switch(cfg.mem):
                with m.Case(TileMemory.REGISTER):
                    for i, reg in enumerate(registers.values()):
                        with m.If(cfg.addr == i):
                            m.d.sync += reg.eq(cfg.data[:len(reg)])
                with m.Case(TileMemory.TABLE):
                    m.d.comb += [e_wr.en.eq(1), e_wr.addr.eq(cfg.addr), e_wr.data.eq(cfg.data[:F + 1])]
                with m.Case(TileMemory.AFFINE):
                    m.d.comb += [a_wr.en.eq(1), a_wr.addr.eq(cfg.addr), a_wr.data.eq(cfg.data[:2 * S])]

        # ---- state --------------------------------------------------------------------------------------------
        ev = self.inputs.payload
        ce = core.events.payload
        cb = fmt.col_bits
        in_row, in_col = ev.axon >> cb, ev.axon & ((1 << cb) - 1)
        dirty = Signal(max(fmt.rows, 1))
        acc_addr = Signal(range(depth))
        acc_row = Signal(range(max(fmt.rows, 2)))
        acc_value = Signal(signed(fmt.value_bits))
        row = Signal(range(fmt.rows + 1))
        base = Signal(range(depth + fmt.width + 1))           # row * width
        gbase = Signal(range(fmt.neurons // P + fmt.width + 1))   # row * groups
        c = Signal(range(fmt.width + 1))
        lane = Signal(range(max(P, 2)))
        grp = Signal.like(ce.group)
        beat = Signal.like(ce.current)
        t_hi = Signal(signed(T))                              # softmax: the row's max
        s1 = Signal(signed(W["s1"]))
        s2 = Signal(unsigned(W["s2"]))
        esum = Signal(unsigned(W["esum"]))
        rad = Signal(unsigned(W["rad"]))
        root = Signal(unsigned(W["rad"]))          # the square root's partial result spans the radicand
        sq_bit = Signal(unsigned(W["rad"]))
        sq_n = Signal(range(W["root"] + 1))
        t_val = Signal(signed(T))
        prev = Signal(signed(L))
        num = Signal(signed(W["num"] + 1))
        den = Signal(unsigned(W["den"]))
        rem = Signal(signed(max(W["num"], W["den"] + L) + 2))
        quo = Signal(unsigned(L))
        qbit = Signal(range(L + 1))
        clr = Signal(range(depth + 1))
        tlo, thi = signed_range(T)
        softmax = op == UNIT_OPS["softmax"]
        last_c = c == width - 1

        busy, _ = serialise_spikes(m, core, self.outputs, Const(0))

        with m.FSM(name="unit") as fsm:
            with m.State("IDLE"):
                with m.If(self.inputs.valid):
                    with m.Switch(ev.op):
                        with m.Case(EventOp.EVENT):
                            m.d.comb += self.inputs.ready.eq(1)
                            with m.If((in_row < rows) & (in_col < width)):
                                m.d.sync += [acc_addr.eq(in_row * width + in_col), acc_row.eq(in_row),
                                             acc_value.eq(ev.value)]
                                m.next = "ACC_READ"
                            with m.Else():
                                m.d.sync += own_rejected.eq(saturating_increment(own_rejected, 1))
                        with m.Case(EventOp.STEP):
                            m.d.comb += self.inputs.ready.eq(1)
                            m.d.sync += [row.eq(0), base.eq(0), gbase.eq(0)]
                            m.next = "ROW"
                        with m.Case(EventOp.CLEAR):
                            m.d.comb += self.inputs.ready.eq(1)
                            m.d.sync += [clr.eq(0), dirty.eq(-1)]
                            m.next = "CLEARING"
                        with m.Case(EventOp.READ):
                            with m.If(ev.axon < fmt.neurons // P):
                                m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.READ), ce.group.eq(ev.axon),
                                             self.inputs.ready.eq(core.events.ready)]
                            with m.Else():
                                m.d.comb += self.inputs.ready.eq(1)
                                m.d.sync += own_rejected.eq(saturating_increment(own_rejected, 1))
            with m.State("ACC_READ"):
                m.d.comb += [t_rd.addr.eq(acc_addr), t_rd.en.eq(1)]
                m.next = "ACC_WRITE"
            with m.State("ACC_WRITE"):
                total = Signal(signed(T + 1))
                m.d.comb += [total.eq(t_rd.data + acc_value), t_wr.en.eq(1), t_wr.addr.eq(acc_addr),
                             t_wr.data.eq(Mux(total > thi, thi, Mux(total < tlo, tlo, total)))]
                with m.If((total > thi) | (total < tlo)):
                    m.d.sync += self.product_overflows.eq(saturating_increment(self.product_overflows, 1))
                for r in range(fmt.rows):
                    with m.If(acc_row == r):
                        m.d.sync += dirty[r].eq(1)
                m.next = "IDLE"
            with m.State("CLEARING"):
                m.d.comb += [t_wr.en.eq(1), t_wr.addr.eq(clr), t_wr.data.eq(0),
                             l_wr.en.eq(1), l_wr.addr.eq(clr), l_wr.data.eq(0)]
                m.d.sync += clr.eq(clr + 1)
                with m.If(clr == depth - 1):
                    m.next = "CLEAR_CORE"
            with m.State("CLEAR_CORE"):
                m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.CLEAR)]
                with m.If(core.events.ready):
                    m.next = "IDLE"

            # ---- evaluation, row by row ----------------------------------------------------------------------
            with m.State("ROW"):
                with m.If(row == rows):
                    m.d.sync += dirty.eq(0)
                    m.next = "CORE_STEP"
                with m.Elif(~dirty.bit_select(row, 1)):
                    m.d.sync += [row.eq(row + 1), base.eq(base + width), gbase.eq(gbase + groups)]
                with m.Else():
                    m.d.sync += [c.eq(0), t_hi.eq(tlo), s1.eq(0), s2.eq(0), esum.eq(0)]
                    m.next = "SCAN_READ"
            with m.State("SCAN_READ"):
                m.d.comb += [t_rd.addr.eq(base + c), t_rd.en.eq(1)]
                m.next = "SCAN"
            with m.State("SCAN"):
                t = t_rd.data
                m.d.sync += [t_hi.eq(Mux(t > t_hi, t, t_hi)), s1.eq(s1 + t), s2.eq(s2 + (t * t).as_unsigned()),
                             c.eq(c + 1)]
                with m.If(last_c):
                    m.d.sync += c.eq(0)
                    m.next = "SPLIT"
                with m.Else():
                    m.next = "SCAN_READ"
            with m.State("SPLIT"):
                with m.If(softmax):
                    m.next = "EXP_READ"
                with m.Else():
                    var = Signal(signed(W["var"] + 1))
                    m.d.comb += var.eq(width * s2 - s1 * s1)
                    m.d.sync += [rad.eq((var + eps).as_unsigned() << (2 * Pq)), root.eq(0),
                                 sq_bit.eq(1 << (2 * (W["root"] - 1))), sq_n.eq(W["root"])]
                    m.next = "SQRT"
            # softmax: s = sum of EXP[min(m - t, D)]
            with m.State("EXP_READ"):
                m.d.comb += [t_rd.addr.eq(base + c), t_rd.en.eq(1)]
                m.next = "EXP_INDEX"
            with m.State("EXP_INDEX"):
                d = Signal(unsigned(T + 1))
                m.d.comb += [d.eq(t_hi - t_rd.data), e_rd.addr.eq(Mux(d > exp_last, exp_last, d)), e_rd.en.eq(1)]
                m.next = "EXP_SUM"
            with m.State("EXP_SUM"):
                m.d.sync += [esum.eq(esum + e_rd.data), c.eq(c + 1)]
                with m.If(last_c):
                    m.d.sync += c.eq(0)
                    m.next = "VAL_READ"
                with m.Else():
                    m.next = "EXP_READ"
            # LayerNorm: q = isqrt((V + E) 4^P), one result bit per cycle
            with m.State("SQRT"):
                trial = Signal(unsigned(W["rad"] + 1))
                m.d.comb += trial.eq(root + sq_bit)
                with m.If(rad >= trial):
                    m.d.sync += [rad.eq(rad - trial), root.eq((root >> 1) + sq_bit)]
                with m.Else():
                    m.d.sync += root.eq(root >> 1)
                m.d.sync += [sq_bit.eq(sq_bit >> 2), sq_n.eq(sq_n - 1)]
                with m.If(sq_n == 1):
                    m.next = "VAL_READ"
            # per value: numerator, denominator, clamped floor division, difference into the core
            with m.State("VAL_READ"):
                m.d.comb += [t_rd.addr.eq(base + c), t_rd.en.eq(1), l_rd.addr.eq(base + c), l_rd.en.eq(1),
                             a_rd.addr.eq(c), a_rd.en.eq(1)]
                m.next = "VAL_DATA"
            with m.State("VAL_DATA"):
                d = Signal(unsigned(T + 1))
                m.d.comb += [d.eq(t_hi - t_rd.data), e_rd.addr.eq(Mux(d > exp_last, exp_last, d)), e_rd.en.eq(1)]
                m.d.sync += [t_val.eq(t_rd.data), prev.eq(l_rd.data)]
                gain, offset = a_rd.data[:S].as_signed(), a_rd.data[S:].as_signed()
                centred = Signal(signed(W["centred"]))
                m.d.comb += centred.eq(width * t_rd.data - s1)
                with m.If(~softmax):
                    with m.If(root == 0):
                        m.d.sync += [num.eq(offset), den.eq(1 << G)]
                    with m.Else():
                        m.d.sync += [num.eq(((centred * gain) << Pq) + offset * root), den.eq(root << G)]
                m.next = "VAL_NUM"
            with m.State("VAL_NUM"):
                with m.If(softmax):
                    m.d.sync += [num.eq(e_rd.data * scale + (esum << (G - 1))), den.eq(esum << G)]
                m.next = "DIV_START"
            with m.State("DIV_START"):
                x = Signal.like(rem)
                m.d.comb += x.eq(num - n_min * den)
                m.d.sync += [rem.eq(x), quo.eq(0), qbit.eq(L - 1)]
                with m.If(x < 0):
                    m.next = "LEVEL"
                with m.Elif(x >= (den << L)):
                    m.d.sync += quo.eq(-1)
                    m.next = "LEVEL"
                with m.Else():
                    m.next = "DIVIDE"
            with m.State("DIVIDE"):
                shifted = Signal.like(rem)
                m.d.comb += shifted.eq(den << qbit)
                with m.If(rem >= shifted):
                    m.d.sync += [rem.eq(rem - shifted), quo.eq(quo | (Const(1, L) << qbit))]
                with m.If(qbit == 0):
                    m.next = "LEVEL"
                with m.Else():
                    m.d.sync += qbit.eq(qbit - 1)
            with m.State("LEVEL"):
                span = Signal(unsigned(L + 1))
                level = Signal(signed(L + 1))
                diff = Signal(signed(L + 2))
                m.d.comb += [span.eq(n_max - n_min), level.eq(n_min + Mux(quo > span, span, quo)),
                             diff.eq(level - prev), l_wr.en.eq(1), l_wr.addr.eq(base + c), l_wr.data.eq(level)]
                for i in range(P):
                    with m.If(lane == i):
                        m.d.sync += beat[i].eq(diff)
                with m.If((lane == P - 1) | last_c):
                    m.next = "EMIT"
                with m.Else():
                    m.d.sync += [lane.eq(lane + 1), c.eq(c + 1)]
                    m.next = "VAL_READ"
            with m.State("EMIT"):
                nonzero = Cat(*(beat[i] != 0 for i in range(P))).any()
                m.d.comb += [core.events.valid.eq(nonzero), ce.op.eq(CoreOp.ACCUMULATE), ce.group.eq(gbase + grp),
                             ce.current.eq(beat)]
                with m.If(~nonzero | core.events.ready):
                    m.d.sync += [beat.eq(0), lane.eq(0)]
                    with m.If(last_c):
                        m.d.sync += [c.eq(0), grp.eq(0), row.eq(row + 1), base.eq(base + width),
                                     gbase.eq(gbase + groups)]
                        m.next = "ROW"
                    with m.Else():
                        m.d.sync += [c.eq(c + 1), grp.eq(grp + 1)]
                        m.next = "VAL_READ"
            with m.State("CORE_STEP"):
                m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.STEP)]
                with m.If(core.events.ready):
                    m.next = "IDLE"
        m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & core.idle & ~busy & ~core.spikes.valid & ~self.inputs.valid)
        return m
