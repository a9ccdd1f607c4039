"""Matmul tile: the SESA product of two spike-count traces (spikezip's ``Q K^T`` and ``A V``), its
increments either accumulated into the tile's ST-BIF core (a product quantized by a neuron layer) or sent
on as graded events (a product read by a softmax unit).

The contract and the bit-exact model are in :mod:`spikeforge.sw.matmul_tile`. One trace memory holds the
left operand transposed (``A^T[k, i]`` at ``k * rows + i``) and the right one (``B[k, j]`` at
``b_base + k * cols + j``), so an event's partner products are one contiguous read: a left event ``(i, k)``
reads row ``k`` of ``B``, a right event ``(k, j)`` row ``k`` of ``A^T``, one entry per cycle (a read, product
and output pipeline whose output is the only stall point); each nonzero
increment ``gain * value * trace`` is one core ``ACCUMULATE`` beat (one lane) or one output event; then the
event's own trace entry is updated (read, add, write). ``STEP`` steps the core (graded: answers ``STEP``);
``CLEAR`` zeroes the program's trace words and clears the core; ``READ`` reads a core group. Increments
and traces saturate and are counted in ``product_overflows``; malformed axons are dropped and counted in
``rejected``. Every stream may stall; nothing is dropped. The core needs lanes that are a power of two.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import memory, stream

from ..sw.fixed import signed_range
from ..sw.matmul_tile import MATMUL_REGISTERS, MatmulProgram, MatmulTileFormat
from ..sw.neurons import NeuronModel
from ..sw.program import ConfigFormat, TileMemory
from .arith import saturating_increment
from .events import EventOp
from .neuron_core import CoreOp
from .blocks import register_block
from .neuron_tile import CoreTile, serialise_spikes

__all__ = ["MatmulTile", "matmul_config_format"]


def matmul_config_format(fmt, model: NeuronModel) -> ConfigFormat:
    """The narrowest configuration write that loads a matmul tile ``fmt`` (``fmt.config_format``)."""
    return fmt.config_format(model)


@register_block("matmul_tile")
class MatmulTile(CoreTile):
    """One matmul tile of hardware ``fmt`` (:class:`~spikeforge.sw.matmul_tile.MatmulTileFormat`) with quant
    neurons of ``model``'s kind and widths. Members as :class:`~spikeforge.hw.neuron_tile.NeuronTile`."""

    format_type, program_type = MatmulTileFormat, MatmulProgram

    def __init__(self, fmt: MatmulTileFormat, model: NeuronModel, *, program: MatmulProgram | None = None,
                 counter_width: int = 32, config_format: ConfigFormat | None = None):
        if isinstance(fmt, MatmulTileFormat) and fmt.lanes & (fmt.lanes - 1):
            self._MustUse__silence = True
            raise ValueError(f"a matmul tile needs lanes that are a power of two, not {fmt.lanes}")
        need = matmul_config_format(fmt, model) if isinstance(fmt, MatmulTileFormat) else None
        self._init_tile(fmt, MatmulTileFormat, model, program, counter_width, config_format, need, "matmul tile")

    @property
    def verilog_name(self) -> str:
        return "matmul_tile"

    def elaborate(self, platform):
        m = Module()
        fmt, P = self.fmt, self.fmt.lanes
        lb = (P - 1).bit_length()

        regs0 = self._initial_registers(MATMUL_REGISTERS)
        rows = Signal(range(fmt.rows + 1), init=regs0["rows"])
        inner = Signal(range(fmt.inner + 1), init=regs0["inner"])
        cols = Signal(range(fmt.cols + 1), init=regs0["cols"])
        gain = Signal(signed(fmt.gain_bits), init=regs0["gain"])
        graded = Signal(init=regs0["graded"])
        b_base = Signal(range(fmt.words + 1), init=regs0["b_base"])
        core, own_rejected, theta, s_min, s_max = self._core(m, regs0)
        groups = Signal(range(fmt.cols // P + 2))
        m.d.sync += groups.eq((cols + P - 1) >> lb)
        active = Signal.like(core.active_groups)
        m.d.sync += active.eq(rows * groups)
        m.d.comb += core.active_groups.eq(active)
        registers = dict(zip(MATMUL_REGISTERS, (rows, inner, cols, gain, graded, b_base, theta, s_min, s_max)))

        cfg = self.writes.payload
        m.d.comb += self.writes.ready.eq(1)
        with m.If(self.writes.valid & (cfg.mem == TileMemory.REGISTER)):
            self._load_registers(m, registers.values())

        depth = max(fmt.words, 2)
        m.submodules.traces = tmem = memory.Memory(shape=signed(fmt.trace_bits), depth=depth, init=[])
        rd, wr = tmem.read_port(), tmem.write_port()

        # ---- outputs: the core's spikes, or graded increments (then a lone STEP per STEP) -----------------
        spk = stream.Signature(self.outputs.payload.shape()).create()
        marker = Signal()
        busy, marker_taken = serialise_spikes(m, core, spk, marker)
        with m.If(marker_taken):
            m.d.sync += marker.eq(0)
        g_valid = Signal()
        g_axon = Signal.like(self.outputs.payload.axon)
        g_value = Signal(signed(fmt.value_bits))
        with m.If(g_valid):
            m.d.comb += [self.outputs.valid.eq(1), self.outputs.payload.op.eq(EventOp.EVENT),
                         self.outputs.payload.axon.eq(g_axon), self.outputs.payload.value.eq(g_value)]
        with m.Else():
            m.d.comb += [self.outputs.valid.eq(spk.valid), self.outputs.payload.eq(spk.payload),
                         spk.ready.eq(self.outputs.ready)]

        # ---- the event engine -------------------------------------------------------------------------------
        ev = self.inputs.payload
        ce = core.events.payload
        kb, cb, pb = fmt.inner_bits, fmt.col_bits, fmt.port_bit
        port = ev.axon >> pb
        l_i, l_k = ev.axon[kb:pb], ev.axon[:kb]
        r_k, r_j, r_mid = ev.axon[cb:cb + kb], ev.axon[:cb], ev.axon[cb + kb:pb]
        right = Signal()
        e_row = Signal(range(max(fmt.rows, fmt.cols, 2)))     # left: i; right: j
        e_k = Signal(range(max(fmt.inner, 2)))
        value = Signal(signed(fmt.value_bits))
        rd_base = Signal(range(depth + 1))
        wr_addr = Signal(range(depth + 1))
        items = Signal(range(max(fmt.rows, fmt.cols) + 1))
        idx = Signal(range(max(fmt.rows, fmt.cols) + 1))
        grp = Signal.like(ce.group)
        lane = Signal(range(max(P, 2)))
        prod = Signal(signed(fmt.gain_bits + fmt.trace_bits + fmt.value_bits))
        sat = Signal(signed(max(fmt.current_width, fmt.value_bits)))
        clr = Signal(range(depth + 1))
        tlo, thi = signed_range(fmt.trace_bits)
        clo, chi = signed_range(fmt.current_width)
        vlo, vhi = signed_range(fmt.value_bits)
        lo, hi = Mux(graded, vlo, clo), Mux(graded, vhi, chi)

        # ---- the product pipeline: read (ITEMS) -> product, saturated (s1) -> output (o, the stall point) ------
        m.d.comb += rd.en.eq(0)                  # a read port's enable defaults to 1: every read is explicit
        issuing = idx != items
        s1_valid = Signal()
        s1_grp = Signal.like(grp)
        s1_lane = Signal.like(lane)
        o_valid = Signal()
        o_grp = Signal.like(grp)
        o_lane = Signal.like(lane)
        o_taken = Signal()
        adv = Signal()
        m.d.comb += adv.eq(~o_valid | o_taken)
        m.d.comb += prod.eq(gain * rd.data * value)
        with m.If(adv):
            m.d.sync += [s1_valid.eq(0), o_valid.eq(s1_valid & (prod != 0)), o_grp.eq(s1_grp), o_lane.eq(s1_lane),
                         sat.eq(Mux(prod > hi, hi, Mux(prod < lo, lo, prod)))]
            with m.If(s1_valid & ((prod > hi) | (prod < lo))):
                m.d.sync += self.product_overflows.eq(saturating_increment(self.product_overflows, 1))
        with m.If(o_valid):
            with m.If(graded):
                m.d.comb += [g_valid.eq(1), g_axon.eq((o_grp << lb) | o_lane), g_value.eq(sat),
                             o_taken.eq(self.outputs.ready)]
            with m.Else():
                m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.ACCUMULATE), ce.group.eq(o_grp),
                             o_taken.eq(core.events.ready)]
                for i in range(P):
                    m.d.comb += ce.current[i].eq(Mux(o_lane == i, sat, 0))

        with m.FSM(name="matmul") as fsm:
            with m.State("IDLE"):
                with m.If(self.inputs.valid):
                    with m.Switch(ev.op):
                        with m.Case(EventOp.EVENT):
                            # not while the previous STEP is still being sent: it must leave first
                            m.d.comb += self.inputs.ready.eq(~marker & ~busy)
                            ok_left = (port == 0) & (l_i < rows) & (l_k < inner)
                            ok_right = (port == 1) & (r_mid == 0) & (r_k < inner) & (r_j < cols)
                            with m.If(~self.inputs.ready):
                                pass
                            with m.Elif(ok_left):
                                m.d.sync += [right.eq(0), e_row.eq(l_i), e_k.eq(l_k), value.eq(ev.value)]
                                m.next = "SETUP"
                            with m.Elif(ok_right):
                                m.d.sync += [right.eq(1), e_row.eq(r_j), e_k.eq(r_k), value.eq(ev.value)]
                                m.next = "SETUP"
                            with m.Else():
                                m.d.sync += own_rejected.eq(saturating_increment(own_rejected, 1))
                        with m.Case(EventOp.STEP):
                            with m.If(graded):
                                with m.If(~marker):
                                    m.d.comb += self.inputs.ready.eq(1)
                                    m.d.sync += marker.eq(1)
                            with m.Else():
                                m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.STEP),
                                             self.inputs.ready.eq(core.events.ready)]
                        with m.Case(EventOp.CLEAR):
                            m.d.comb += self.inputs.ready.eq(1)
                            m.d.sync += clr.eq(0)
                            m.next = "CLEARING"
                        with m.Case(EventOp.READ):
                            self._read_group(m, core, own_rejected)
            with m.State("SETUP"):               # the partner row, the own entry, the first output neuron
                m.d.sync += idx.eq(0)
                with m.If(right):                # reads A^T[k, 0..rows), updates B[k, j]
                    m.d.sync += [rd_base.eq(e_k * rows), wr_addr.eq(b_base + e_k * cols + e_row), items.eq(rows),
                                 grp.eq(e_row >> lb), lane.eq(e_row & (P - 1))]
                with m.Else():                   # reads B[k, 0..cols), updates A^T[k, i]
                    m.d.sync += [rd_base.eq(b_base + e_k * cols), wr_addr.eq(e_k * rows + e_row), items.eq(cols),
                                 grp.eq(e_row * groups), lane.eq(0)]
                m.next = "ITEMS"
            with m.State("ITEMS"):               # one partner entry read per cycle into the product pipeline
                with m.If(adv & issuing):
                    m.d.comb += [rd.addr.eq(rd_base + idx), rd.en.eq(1)]
                    m.d.sync += [idx.eq(idx + 1), s1_valid.eq(1), s1_grp.eq(grp), s1_lane.eq(lane)]
                    with m.If(right):
                        m.d.sync += grp.eq(grp + groups)
                    with m.Elif(lane == P - 1):
                        m.d.sync += [lane.eq(0), grp.eq(grp + 1)]
                    with m.Else():
                        m.d.sync += lane.eq(lane + 1)
                with m.If(~issuing & ~s1_valid & ~o_valid):
                    m.next = "OWN_READ"
            with m.State("OWN_READ"):
                m.d.comb += [rd.addr.eq(wr_addr), rd.en.eq(1)]
                m.next = "OWN_WRITE"
            with m.State("OWN_WRITE"):
                t = Signal(signed(fmt.trace_bits + 1))
                m.d.comb += [t.eq(rd.data + value), wr.en.eq(1), wr.addr.eq(wr_addr),
                             wr.data.eq(Mux(t > thi, thi, Mux(t < tlo, tlo, t)))]
                with m.If((t > thi) | (t < tlo)):
                    m.d.sync += self.product_overflows.eq(saturating_increment(self.product_overflows, 1))
                m.next = "IDLE"
            with m.State("CLEARING"):
                m.d.comb += [wr.en.eq(1), wr.addr.eq(clr), wr.data.eq(0)]
                m.d.sync += clr.eq(clr + 1)
                with m.If(clr == depth - 1):
                    m.next = "CLEAR_CORE"
            with m.State("CLEAR_CORE"):
                m.d.comb += [core.events.valid.eq(1), ce.op.eq(CoreOp.CLEAR)]
                with m.If(core.events.ready):
                    m.next = "IDLE"
        m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & core.idle & ~busy & ~core.spikes.valid & ~marker &
                                 ~g_valid & ~self.inputs.valid)
        return m
