"""Function-unit tile: a softmax / LayerNorm unit evaluating the bit-exact integer ``f`` and the ST-BIF core
of the neuron layer that quantizes it, speaking the accelerator's events.

The contract and the bit-exact model are in :mod:`spikeforge.sw.unit_tile` (``f`` itself in
:mod:`spikeforge.sw.units`): ``EVENT axon=(row, c) value`` adds to the row's input total (read-modify-
write of the totals memory, the row marked changed); ``STEP`` evaluates every changed row and accumulates
the level differences into the core, then steps it; ``CLEAR`` zeroes totals and levels, marks every row
changed and clears the core; ``READ`` reads a core group back. The core's spikes leave as events.

Accumulation takes one event per cycle (the totals word is read as the event is taken and written the
next cycle; an event for the word being written waits one cycle). The evaluator works one row at a
time, each pass streaming one value per cycle:

1. scan the row's totals: max (softmax) or ``S1 = sum t``, ``S2 = sum t^2`` (LayerNorm);
2. softmax: ``s = sum EXP[min(m - t, D)]`` (table in block RAM); LayerNorm: ``V = C S2 - S1^2`` and
   ``q = isqrt((V + E) 4^P)`` by the bit-serial restoring square root (one result bit per cycle);
3. per value, through a pipeline (reads, numerator / denominator, ``x = num - n_min den``, one stage per
   quotient bit, level): ``clamp(floor(num / den), n_min, n_max)`` by a restoring division of
   ``level_bits`` quotient bits on ``x`` (exact: the quotient is clamped anyway), the difference to the
   stored level put into lane ``c % P`` of the core group; a group with any nonzero difference is one
   ``ACCUMULATE`` beat, the pipeline's only stall point.

A row costs about ``3 C + 2 level_bits + 12`` cycles (LayerNorm: plus the root's bits).

Every register is as wide as :func:`spikeforge.sw.unit_tile.datapath_widths` says, so nothing inside the
evaluator can overflow; only the input totals saturate (counted in ``product_overflows``). Malformed axons
and unknown ops are dropped and counted in ``rejected``. Every stream may stall; nothing is dropped.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory

from ..sw.fixed import signed_range
from ..sw.neurons import NeuronModel
from ..sw.program import ConfigFormat, TileMemory
from ..sw.unit_tile import UNIT_OPS, UNIT_REGISTERS, UnitProgram, UnitTileFormat, datapath_widths
from ..sw.units import OUT_FRAC_BITS, SOFTMAX_FRAC_BITS, SQRT_FRAC_BITS
from .arith import saturating_increment
from .events import EventOp
from .neuron_core import CoreOp
from .blocks import register_block
from .neuron_tile import CoreTile, serialise_spikes

__all__ = ["UnitTile", "unit_config_format"]


def unit_config_format(fmt, model: NeuronModel) -> ConfigFormat:
    """The narrowest configuration write that loads a unit tile ``fmt`` (``fmt.config_format``)."""
    return fmt.config_format(model)


@register_block("unit_tile")
class UnitTile(CoreTile):
    """One unit tile of hardware ``fmt`` (:class:`~spikeforge.sw.unit_tile.UnitTileFormat`) with quant
    neurons of ``model``'s kind and widths (ST-BIF; parameters from the program). Starts from ``program``
    if given (a standalone tile), else empty until programmed over ``writes``.

    Members: as :class:`~spikeforge.hw.neuron_tile.NeuronTile` (``inputs``, ``outputs``, ``readback``,
    ``writes``, ``rejected``, ``product_overflows`` (saturated totals), ``overflows``, ``idle``).
    """

    format_type, program_type = UnitTileFormat, UnitProgram

    def __init__(self, fmt: UnitTileFormat, model: NeuronModel, *, program: UnitProgram | None = None,
                 counter_width: int = 32, config_format: ConfigFormat | None = None):
        need = unit_config_format(fmt, model) if isinstance(fmt, UnitTileFormat) else None
        self._init_tile(fmt, UnitTileFormat, model, program, counter_width, config_format, need, "unit tile")

    @property
    def verilog_name(self) -> str:
        return "unit_tile"

    def elaborate(self, platform):
        m = Module()
        fmt, P, prog = self.fmt, self.fmt.lanes, self.program
        W = datapath_widths(fmt)
        S, T, L = fmt.scale_bits, fmt.total_bits, fmt.level_bits
        F, G, Pq = SOFTMAX_FRAC_BITS, OUT_FRAC_BITS, SQRT_FRAC_BITS

        # ---- registers -------------------------------------------------------------------------------------
        regs0 = self._initial_registers(UNIT_REGISTERS)
        op = Signal(init=regs0["op"])
        rows = Signal(range(fmt.rows + 1), init=regs0["rows"])
        width = Signal(range(fmt.width + 1), init=regs0["width"])
        groups = Signal(range(-(-fmt.width // P) + 1), init=regs0["groups"])
        n_min = Signal(signed(L), init=regs0["n_min"])
        n_max = Signal(signed(L), init=regs0["n_max"])
        exp_last = Signal(range(fmt.exp_words), init=regs0["exp_last"])
        scale = Signal(signed(S), init=regs0["scale"])
        eps = Signal(signed(S), init=regs0["eps"])
        core, own_rejected, theta, s_min, s_max = self._core(m, regs0)
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
                    self._load_registers(m, registers.values())
                with m.Case(TileMemory.TABLE):
                    m.d.comb += [e_wr.en.eq(1), e_wr.addr.eq(cfg.addr), e_wr.data.eq(cfg.data[:F + 1])]
                with m.Case(TileMemory.AFFINE):
                    m.d.comb += [a_wr.en.eq(1), a_wr.addr.eq(cfg.addr), a_wr.data.eq(cfg.data[:2 * S])]

        # ---- state --------------------------------------------------------------------------------------------
        ev = self.inputs.payload
        ce = core.events.payload
        cb = fmt.col_bits
        in_row, in_col = ev.axon >> cb, ev.axon & ((1 << cb) - 1)
        # one "changed since the last evaluation" bit per row, in a memory (rows may be thousands)
        m.submodules.dirty = dmem = memory.Memory(shape=1, depth=max(fmt.rows, 2), init=[])
        d_rd, d_wr = dmem.read_port(), dmem.write_port()
        row = Signal(range(fmt.rows + 1))
        base = Signal(range(depth + fmt.width + 1))           # row * width
        gbase = Signal(range(fmt.neurons // P + fmt.width + 1))   # row * groups
        t_hi = Signal(signed(T))                              # softmax: the row's max
        s1 = Signal(signed(W["s1"]))
        s2 = Signal(unsigned(W["s2"]))
        esum = Signal(unsigned(W["esum"]))
        rad = Signal(unsigned(W["rad"]))
        root = Signal(unsigned(W["rad"]))          # the square root's partial result spans the radicand
        sq_bit = Signal(unsigned(W["rad"]))
        sq_n = Signal(range(W["root"] + 1))
        clr = Signal(range(depth + 1))
        tlo, thi = signed_range(T)
        softmax = op == UNIT_OPS["softmax"]
        ci = Signal(range(fmt.width + 1))                      # the element a pass issues next
        issuing = ci != width
        v1, v2 = Signal(), Signal()                           # a scan's read pipeline

        busy, _ = serialise_spikes(m, core, self.outputs, Const(0))
        # a read port's enable defaults to 1: every read below is explicit, so a stalled stage keeps its data
        m.d.comb += [t_rd.en.eq(0), l_rd.en.eq(0), a_rd.en.eq(0), e_rd.en.eq(0), d_rd.en.eq(0)]

        # ---- accumulation: one event per cycle (read issued as the event is taken, written the next) -----
        acc_pending = Signal()
        acc_addr = Signal(range(depth))
        acc_row = Signal(range(max(fmt.rows, 2)))
        acc_value = Signal(signed(fmt.value_bits))
        in_addr = Signal(range(depth + fmt.width * fmt.rows + 1))
        m.d.comb += in_addr.eq(in_row * width + in_col)
        with m.If(acc_pending):
            total = Signal(signed(T + 1))
            m.d.comb += [total.eq(t_rd.data + acc_value), t_wr.en.eq(1), t_wr.addr.eq(acc_addr),
                         t_wr.data.eq(Mux(total > thi, thi, Mux(total < tlo, tlo, total)))]
            with m.If((total > thi) | (total < tlo)):
                m.d.sync += self.product_overflows.eq(saturating_increment(self.product_overflows, 1))
            m.d.comb += [d_wr.en.eq(1), d_wr.addr.eq(acc_row), d_wr.data.eq(1)]
            m.d.sync += acc_pending.eq(0)

        # ---- the per-value pipeline of pass 3 (see the module docstring) -------------------------------------
        # I: reads issued; D: data (LayerNorm numerator/denominator, exp index); E: softmax numerator /
        # denominator, then x = num - n_min den and its range checks; Q[L-1..0]: one quotient bit each;
        # F: level, difference, level written, lane of the beat. The beat (one core ACCUMULATE) is the only
        # stall point: every stage moves when it is empty or taken (``adv``).
        Wr = max(W["num"], W["den"] + L) + 2
        beat = Signal.like(ce.current)
        beat_valid = Signal()
        beat_group = Signal.like(ce.group)
        nonzero = Cat(*(beat[i] != 0 for i in range(P))).any()
        adv = Signal()
        m.d.comb += adv.eq(~beat_valid | ~nonzero | core.events.ready)

        def stage(name, **fields):
            sig = {"valid": Signal(name=f"{name}_valid")}
            for k, shape in fields.items():
                sig[k] = Signal(shape, name=f"{name}_{k}")
            return sig
        tags = {"c": range(fmt.width + 1), "lane": range(max(P, 2)), "grp": ce.group.shape(), "last": 1}
        i_lane = Signal(range(max(P, 2)))
        i_grp = Signal.like(ce.group)
        D = stage("d", **tags)
        E = stage("e", num=signed(W["num"] + 1), den=unsigned(W["den"]), prev=signed(L), **tags)
        Q = [stage(f"q{b}", rem=signed(Wr), den=unsigned(W["den"]), quo=unsigned(L), neg=1, prev=signed(L), **tags)
             for b in range(L + 1)]                        # Q[L]: after the range checks; Q[b]: bits >= b done
        stages_busy = Cat(D["valid"], E["valid"], *(q["valid"] for q in Q)).any()

        def carry(dst, src):
            return [dst[k].eq(src[k]) for k in ("valid", *tags)]

        with m.If(adv):
            # D <- I
            m.d.sync += D["valid"].eq(0)
            # the pass-3 issue happens in the VAL state below (it sets D)
            # E <- D
            m.d.sync += carry(E, D) + [E["prev"].eq(l_rd.data)]
            gain, offset = a_rd.data[:S].as_signed(), a_rd.data[S:].as_signed()
            centred = Signal(signed(W["centred"]))
            m.d.comb += centred.eq(width * t_rd.data - s1)
            d_idx = Signal(unsigned(T + 1))
            m.d.comb += [d_idx.eq(t_hi - t_rd.data), e_rd.addr.eq(Mux(d_idx > exp_last, exp_last, d_idx)),
                         e_rd.en.eq(D["valid"])]
            with m.If(root == 0):
                m.d.sync += [E["num"].eq(offset), E["den"].eq(1 << G)]
            with m.Else():
                m.d.sync += [E["num"].eq(((centred * gain) << Pq) + offset * root), E["den"].eq(root << G)]
            # Q[L] <- E
            num_e = Signal(signed(W["num"] + 1))
            den_e = Signal(unsigned(W["den"]))
            m.d.comb += [num_e.eq(Mux(softmax, e_rd.data * scale + (esum << (G - 1)), E["num"])),
                         den_e.eq(Mux(softmax, esum << G, E["den"]))]
            x = Signal(signed(Wr))
            m.d.comb += x.eq(num_e - n_min * den_e)
            q0 = Q[L]
            m.d.sync += carry(q0, E) + [q0["prev"].eq(E["prev"]), q0["den"].eq(den_e), q0["rem"].eq(x),
                                        q0["neg"].eq(x < 0), q0["quo"].eq(Mux(x >= (den_e << L), -1, 0))]
            # Q[b] <- Q[b+1]: quotient bit b
            for bit in reversed(range(L)):
                src, dst = Q[bit + 1], Q[bit]
                shifted = Signal(signed(Wr), name=f"shifted{bit}")
                take = Signal(name=f"take{bit}")
                m.d.comb += [shifted.eq(src["den"] << bit),
                             take.eq(~src["neg"] & (src["quo"] == 0 if bit == L - 1 else 1) & (src["rem"] >= shifted))]
                m.d.sync += carry(dst, src) + [dst["den"].eq(src["den"]), dst["neg"].eq(src["neg"]),
                                               dst["prev"].eq(src["prev"]),
                                               dst["rem"].eq(Mux(take, src["rem"] - shifted, src["rem"])),
                                               dst["quo"].eq(src["quo"] | Mux(take, 1 << bit, 0))]
            # F <- Q[0]: level, difference, the beat
            f = Q[0]
            span = Signal(unsigned(L + 1))
            level = Signal(signed(L + 1))
            diff = Signal(signed(L + 2))
            m.d.comb += [span.eq(n_max - n_min),
                         level.eq(Mux(f["neg"], n_min, n_min + Mux(f["quo"] > span, span, f["quo"]))),
                         diff.eq(level - f["prev"])]
            with m.If(beat_valid):
                m.d.sync += [beat.eq(0), beat_valid.eq(0)]
            with m.If(f["valid"]):
                m.d.comb += [l_wr.en.eq(1), l_wr.addr.eq(base + f["c"]), l_wr.data.eq(level)]
                for i in range(P):
                    with m.If(f["lane"] == i):
                        m.d.sync += beat[i].eq(diff)
                m.d.sync += beat_group.eq(f["grp"])
                with m.If((f["lane"] == P - 1) | f["last"]):
                    m.d.sync += beat_valid.eq(1)
        with m.If(beat_valid & nonzero):
            m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.ACCUMULATE), ce.group.eq(beat_group),
                         ce.current.eq(beat)]

        with m.FSM(name="unit") as fsm:
            with m.State("IDLE"):
                with m.If(self.inputs.valid):
                    with m.Switch(ev.op):
                        with m.Case(EventOp.EVENT):
                            with m.If((in_row < rows) & (in_col < width)):
                                # the previous event's write to the same word must land before this read
                                with m.If(~acc_pending | (in_addr != acc_addr)):
                                    m.d.comb += [self.inputs.ready.eq(1), t_rd.addr.eq(in_addr), t_rd.en.eq(1)]
                                    m.d.sync += [acc_addr.eq(in_addr), acc_row.eq(in_row), acc_value.eq(ev.value),
                                                 acc_pending.eq(1)]
                            with m.Else():
                                m.d.comb += self.inputs.ready.eq(1)
                                m.d.sync += own_rejected.eq(saturating_increment(own_rejected, 1))
                        with m.Case(EventOp.STEP):
                            with m.If(~acc_pending):
                                m.d.comb += self.inputs.ready.eq(1)
                                m.d.sync += [row.eq(0), base.eq(0), gbase.eq(0)]
                                m.next = "ROW"
                        with m.Case(EventOp.CLEAR):
                            with m.If(~acc_pending):
                                m.d.comb += self.inputs.ready.eq(1)
                                m.d.sync += clr.eq(0)
                                m.next = "CLEARING"
                        with m.Case(EventOp.READ):
                            self._read_group(m, core, own_rejected, wait=acc_pending)
            with m.State("CLEARING"):                 # totals and levels to 0, every row changed
                m.d.comb += [t_wr.en.eq(1), t_wr.addr.eq(clr), t_wr.data.eq(0),
                             l_wr.en.eq(1), l_wr.addr.eq(clr), l_wr.data.eq(0),
                             d_wr.en.eq(clr < max(fmt.rows, 2)), d_wr.addr.eq(clr), d_wr.data.eq(1)]
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
                    m.next = "CORE_STEP"
                with m.Else():
                    m.d.comb += [d_rd.addr.eq(row), d_rd.en.eq(1)]
                    m.next = "ROW_TEST"
            with m.State("ROW_TEST"):
                with m.If(~d_rd.data):
                    m.d.sync += [row.eq(row + 1), base.eq(base + width), gbase.eq(gbase + groups)]
                    m.next = "ROW"
                with m.Else():
                    m.d.comb += [d_wr.en.eq(1), d_wr.addr.eq(row), d_wr.data.eq(0)]
                    m.d.sync += [ci.eq(0), t_hi.eq(tlo), s1.eq(0), s2.eq(0), esum.eq(0), v1.eq(0), v2.eq(0)]
                    m.next = "SCAN"
            with m.State("SCAN"):                 # pass 1, one value per cycle: max, S1, S2
                m.d.sync += v1.eq(issuing)
                with m.If(issuing):
                    m.d.comb += [t_rd.addr.eq(base + ci), t_rd.en.eq(1)]
                    m.d.sync += ci.eq(ci + 1)
                with m.If(v1):
                    t = t_rd.data
                    m.d.sync += [t_hi.eq(Mux(t > t_hi, t, t_hi)), s1.eq(s1 + t), s2.eq(s2 + (t * t).as_unsigned())]
                with m.Elif(~issuing):
                    m.d.sync += ci.eq(0)
                    with m.If(softmax):
                        m.next = "EXP"
                    with m.Else():
                        m.next = "VARIANCE"
            with m.State("EXP"):                  # softmax pass 2, one value per cycle: s = sum EXP[min(m - t, D)]
                m.d.sync += [v1.eq(issuing), v2.eq(v1)]
                with m.If(issuing):
                    m.d.comb += [t_rd.addr.eq(base + ci), t_rd.en.eq(1)]
                    m.d.sync += ci.eq(ci + 1)
                with m.If(v1):
                    dx = Signal(unsigned(T + 1))
                    m.d.comb += [dx.eq(t_hi - t_rd.data), e_rd.addr.eq(Mux(dx > exp_last, exp_last, dx)),
                                 e_rd.en.eq(1)]
                with m.If(v2):
                    m.d.sync += esum.eq(esum + e_rd.data)
                with m.If(~issuing & ~v1 & ~v2):
                    m.d.sync += [ci.eq(0), i_lane.eq(0), i_grp.eq(gbase)]
                    m.next = "VAL"
            with m.State("VARIANCE"):
                var = Signal(signed(W["var"] + 1))
                m.d.comb += var.eq(width * s2 - s1 * s1)
                m.d.sync += [rad.eq((var + eps).as_unsigned() << (2 * Pq)), root.eq(0),
                             sq_bit.eq(1 << (2 * (W["root"] - 1))), sq_n.eq(W["root"])]
                m.next = "SQRT"
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
                    m.d.sync += [ci.eq(0), i_lane.eq(0), i_grp.eq(gbase)]
                    m.next = "VAL"
            with m.State("VAL"):                  # pass 3: issue one value per cycle into the pipeline
                with m.If(adv & issuing):
                    m.d.comb += [t_rd.addr.eq(base + ci), t_rd.en.eq(1), l_rd.addr.eq(base + ci), l_rd.en.eq(1),
                                 a_rd.addr.eq(ci), a_rd.en.eq(1)]
                    m.d.sync += [D["valid"].eq(1), D["c"].eq(ci), D["lane"].eq(i_lane), D["grp"].eq(i_grp),
                                 D["last"].eq(ci == width - 1), ci.eq(ci + 1)]
                    with m.If(i_lane == P - 1):
                        m.d.sync += [i_lane.eq(0), i_grp.eq(i_grp + 1)]
                    with m.Else():
                        m.d.sync += i_lane.eq(i_lane + 1)
                with m.If(~issuing & ~stages_busy & ~beat_valid):
                    m.d.sync += [row.eq(row + 1), base.eq(base + width), gbase.eq(gbase + groups)]
                    m.next = "ROW"
            with m.State("CORE_STEP"):
                m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.STEP)]
                with m.If(core.events.ready):
                    m.next = "IDLE"
        m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & ~acc_pending & core.idle & ~busy & ~core.spikes.valid & ~self.inputs.valid)
        return m
