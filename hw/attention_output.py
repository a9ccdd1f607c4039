"""A·V output stage of a spiking attention head: per-(row, column) accumulators with ``v = B*v + x``,
the row normaliser column and a sequential divider.

The fixed-point rule is :class:`spikeforge.sw.attention.SpikedHeadFormat` (``accumulate_av`` and
``divide``): accumulators of ``av_width`` bits, quotients ``trunc(acc * 2**O / norm)`` saturated to
``out_width`` bits.

Protocol
--------
``inputs`` (the accumulator protocol of :class:`~spikeforge.hw.trace_matmul.TraceMatmul`, e.g. the
A·V engine's ``products`` with its normaliser column ``cols``):

* ``ADD row col value``: ``acc[row, col] = sat(acc + value)``; ``col == cols`` is the normaliser.
  Row or column out of range: rejected and counted.
* ``STEP`` number ``p`` of the window (``p < T - 1``): sweeps every accumulator (one per cycle),
  ``acc = sat(floor(acc * B_fx / 2**b_frac_bits))``, then forwards ``STEP``.
* ``STEP`` ``p = T - 1``: read-out. Per row the normaliser is read; per column the accumulator is read,
  divided (restoring divider, ``O + 2`` cycles, truncation toward zero) and sent as ``VALUE row col
  value``; the accumulators are zeroed as they are read. Rows whose normaliser is ``<= 0`` output 0
  and count in ``empty_rows``. Then ``STEP`` is forwarded and the next window starts.
* ``CLEAR`` zeroes every accumulator (one per cycle), restarts the window and is forwarded.

``overflows`` counts saturations (accumulator and quotient; one cycle after they happen), ``rejected``
malformed beats. A refused
``outputs`` beat stalls the stage; nothing is dropped. Block RAM is not reset: send ``CLEAR`` first.

Cost: ``ADD`` one cycle; a scaling step ``rows * (cols + 1) + 1`` cycles; the read-out
``rows * (1 + cols * (O + 5)) + 1`` cycles.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .blocks import register_block
from ..sw.attention import SpikedHeadFormat
from ..sw.fixed import check_int
from .arith import const_mul, count_later, index_width, saturate, saturating_increment
from .trace_matmul import ProductOp

__all__ = ["AttentionOutput", "OutputOp"]


class OutputOp(enum.Enum, shape=2):
    """Operation of one ``outputs`` beat (``STEP``/``CLEAR`` encoded as in :class:`ProductOp`)."""
    VALUE = 0
    STEP = 1
    CLEAR = 2


class _Slot(enum.Enum, shape=3):
    NONE = 0
    ADD = 1
    SCALE = 2
    END = 3
    CLEAR = 4


@register_block("attention_output")
class AttentionOutput(wiring.Component):
    """A·V accumulators, normaliser and divider of one head (``fmt.rows x fmt.dim_v`` outputs).

    Parameters
    ----------
    fmt : SpikedHeadFormat
    value_width : int, optional
        Width of the incoming ``value`` (default: the A·V trace table's ``value_width``).
    counter_width : int

    Members
    -------
    inputs : ``In(stream.Signature(input_layout))``
    outputs : ``Out(stream.Signature(output_layout))``
    step : ``Out`` — the step within the window
    overflows, rejected, empty_rows : ``Out(counter_width)``
    """

    def __init__(self, fmt: SpikedHeadFormat, *, value_width: int | None = None, counter_width: int = 32):
        try:
            if not isinstance(fmt, SpikedHeadFormat):
                raise TypeError(f"fmt must be a spikeforge.sw.attention.SpikedHeadFormat, not {type(fmt).__name__}")
            value_width = fmt.av.value_width if value_width is None else check_int(
                "value_width", value_width, minimum=2, maximum=fmt.av_width)
            check_int("counter_width", counter_width, minimum=8, maximum=64)
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self.fmt, self.rows, self.cols = fmt, fmt.rows, fmt.dim_v
        self.value_width, self.counter_width = value_width, counter_width
        self.input_layout = data.StructLayout({
            "op": ProductOp, "row": unsigned(index_width(self.rows)), "col": unsigned(index_width(self.cols + 1)),
            "value": signed(value_width)})
        self.output_layout = data.StructLayout({
            "op": OutputOp, "row": unsigned(index_width(self.rows)), "col": unsigned(index_width(self.cols)),
            "value": signed(fmt.out_width)})
        super().__init__({
            "inputs": In(stream.Signature(self.input_layout)),
            "outputs": Out(stream.Signature(self.output_layout)),
            "step": Out(index_width(fmt.T)),
            "overflows": Out(counter_width),
            "rejected": Out(counter_width),
            "empty_rows": Out(counter_width),
        })

    @property
    def verilog_name(self) -> str:
        return "attention_output"

    def config(self) -> dict:
        return {"fmt": self.fmt.params(), "value_width": self.value_width, "counter_width": self.counter_width}

    @classmethod
    def from_config(cls, config: dict) -> "AttentionOutput":
        return cls(SpikedHeadFormat.from_params(config["fmt"]), value_width=config["value_width"],
                   counter_width=config["counter_width"])

    def elaborate(self, platform):
        m = Module()
        fmt, R, E, T = self.fmt, self.rows, self.cols, self.fmt.T
        W = E + 1                                  # columns incl. the normaliser
        N = R * W
        aw, O = fmt.av_width, fmt.out_frac_bits
        m.submodules.acc_mem = acc_mem = memory.Memory(shape=signed(aw), depth=N, init=[])
        wr = acc_mem.write_port()
        rd = acc_mem.read_port(transparent_for=(wr,))

        adv = Signal()
        m.d.comb += adv.eq(~(self.outputs.valid & ~self.outputs.ready))
        m.d.comb += rd.en.eq(adv)

        p = Signal(index_width(T))
        m.d.comb += self.step.eq(p)

        # output beat formed this cycle (from S1 or the read-out), registered in S2
        out_valid, out_op = Signal(), Signal(OutputOp)
        out_row, out_col = Signal.like(self.outputs.payload.row), Signal.like(self.outputs.payload.col)
        out_value = Signal(signed(fmt.out_width))
        ovf_count = Signal(range(3))

        # ---- S0: sequencer and read-out ---------------------------------------------------------
        s0_slot = Signal(_Slot)
        s0_addr = Signal(range(max(N, 2)))
        s0_value = Signal(signed(self.value_width))
        idx = Signal(range(N + 1))
        row = Signal(range(max(R, 2)))
        col = Signal(range(max(E, 2)))
        base = Signal(range(max(N, 2)))            # row * W
        norm = Signal(signed(aw))
        empty = Signal()
        neg, big = Signal(), Signal()
        rem = Signal(unsigned(aw + 2))             # restoring divider: remainder < 4 * norm
        quo = Signal(unsigned(O + 2))
        it = Signal(range(O + 3))
        ev = self.inputs.payload
        num = rd.data                              # the accumulator read in R_FIRST / R_COL
        mag = Signal(unsigned(aw), name="num_mag")
        too_big = Signal()                         # |num| >= 4 * norm: the quotient saturates
        m.d.comb += [mag.eq(Mux(num < 0, -num, num)), too_big.eq(mag >= (norm.as_unsigned() << 2))]
        qs = Signal(signed(O + 4), name="quotient")
        q = Mux(empty, 0, Mux(big, (1 << (O + 2)) - 1, quo))
        m.d.comb += qs.eq(Mux(neg, -q, q))
        value, q_ovf = saturate(m, qs, fmt.out_width, name="out_value")

        def next_column():
            with m.If(col == E - 1):
                m.d.sync += [col.eq(0), row.eq(row + 1), base.eq(base + W)]
                with m.If(row == R - 1):
                    m.next = "R_END"
                with m.Else():
                    m.next = "R_NORM"
            with m.Else():
                m.d.sync += col.eq(col + 1)
                m.next = "R_COL"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.inputs.ready.eq(adv)
                with m.If(self.inputs.valid & adv):
                    with m.Switch(ev.op):
                        with m.Case(ProductOp.ADD):
                            with m.If((ev.row >= R) | (ev.col >= W)):
                                m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
                            with m.Else():
                                m.d.comb += [s0_slot.eq(_Slot.ADD), s0_addr.eq(const_mul(ev.row, W) + ev.col),
                                             s0_value.eq(ev.value), rd.addr.eq(const_mul(ev.row, W) + ev.col)]
                        with m.Case(ProductOp.STEP):
                            m.d.sync += [idx.eq(0), row.eq(0), col.eq(0), base.eq(0)]
                            with m.If(p == T - 1):
                                m.next = "R_NORM"
                            with m.Else():
                                m.next = "SCALE"
                        with m.Case(ProductOp.CLEAR):
                            m.d.sync += idx.eq(0)
                            m.next = "CLEARING"
                        with m.Default():
                            m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
            with m.State("SCALE"):
                with m.If(idx == N):
                    m.d.comb += s0_slot.eq(_Slot.END)
                    with m.If(adv):
                        m.d.sync += p.eq(p + 1)
                        m.next = "IDLE"
                with m.Else():
                    m.d.comb += [s0_slot.eq(_Slot.SCALE), s0_addr.eq(idx), rd.addr.eq(idx)]
                    with m.If(adv):
                        m.d.sync += idx.eq(idx + 1)
            with m.State("CLEARING"):
                with m.If(idx == N):
                    m.d.comb += s0_slot.eq(_Slot.CLEAR)
                    with m.If(adv):
                        m.d.sync += p.eq(0)
                        m.next = "IDLE"
                with m.Else():
                    m.d.comb += [wr.addr.eq(idx), wr.data.eq(0), wr.en.eq(adv)]
                    with m.If(adv):
                        m.d.sync += idx.eq(idx + 1)
            # read-out: S1 holds no slot here (the STEP that started it pushed none)
            with m.State("R_NORM"):
                m.d.comb += [rd.addr.eq(base + E), rd.en.eq(1)]
                m.next = "R_FIRST"
            with m.State("R_FIRST"):
                m.d.comb += [wr.addr.eq(base + E), wr.data.eq(0), wr.en.eq(1),
                             rd.addr.eq(base), rd.en.eq(1)]
                m.d.sync += [norm.eq(rd.data), empty.eq(rd.data <= 0)]
                with m.If(rd.data <= 0):
                    m.d.sync += self.empty_rows.eq(saturating_increment(self.empty_rows, 1))
                m.next = "DIV_INIT"
            with m.State("R_COL"):
                m.d.comb += [rd.addr.eq(base + col), rd.en.eq(1)]
                m.next = "DIV_INIT"
            with m.State("DIV_INIT"):
                m.d.comb += [wr.addr.eq(base + col), wr.data.eq(0), wr.en.eq(1)]
                m.d.sync += [neg.eq(num < 0), rem.eq(mag), quo.eq(0), it.eq(0), big.eq(~empty & too_big)]
                with m.If(empty | too_big):
                    m.next = "EMIT"
                with m.Else():
                    m.next = "DIV"
            with m.State("DIV"):
                twice = norm.as_unsigned() << 1
                with m.If(rem >= twice):
                    m.d.sync += [rem.eq((rem - twice) << 1), quo.eq((quo << 1) | 1)]
                with m.Else():
                    m.d.sync += [rem.eq(rem << 1), quo.eq(quo << 1)]
                m.d.sync += it.eq(it + 1)
                with m.If(it == O + 1):
                    m.next = "EMIT"
            with m.State("EMIT"):
                m.d.comb += [out_valid.eq(1), out_op.eq(OutputOp.VALUE), out_row.eq(row), out_col.eq(col),
                             out_value.eq(value)]
                with m.If(adv):
                    m.d.comb += ovf_count.eq(q_ovf)
                    next_column()
            with m.State("R_END"):
                m.d.comb += s0_slot.eq(_Slot.END)
                with m.If(adv):
                    m.d.sync += p.eq(0)
                    m.next = "IDLE"

        # ---- S1: read data arrives: read-modify-write ----------------------------------------------
        s1_slot = Signal(_Slot)
        s1_addr, s1_value = Signal.like(s0_addr), Signal.like(s0_value)
        with m.If(adv):
            m.d.sync += [s1_slot.eq(s0_slot), s1_addr.eq(s0_addr), s1_value.eq(s0_value)]
        acc = rd.data
        acc_sum, sum_ovf = saturate(m, acc + s1_value, aw, name="acc_sum")
        acc_scaled, scale_ovf = saturate(m, const_mul(acc, fmt.b_fx) >> fmt.b_frac_bits, aw, name="acc_scaled")
        with m.Switch(s1_slot):
            with m.Case(_Slot.ADD):
                m.d.comb += [wr.addr.eq(s1_addr), wr.data.eq(acc_sum), wr.en.eq(adv)]
                with m.If(adv):
                    m.d.comb += ovf_count.eq(sum_ovf)
            with m.Case(_Slot.SCALE):
                m.d.comb += [wr.addr.eq(s1_addr), wr.data.eq(acc_scaled), wr.en.eq(adv)]
                with m.If(adv):
                    m.d.comb += ovf_count.eq(scale_ovf)
            with m.Case(_Slot.END):
                m.d.comb += [out_valid.eq(1), out_op.eq(OutputOp.STEP)]
            with m.Case(_Slot.CLEAR):
                m.d.comb += [out_valid.eq(1), out_op.eq(OutputOp.CLEAR)]
        count_later(m, self.overflows, ovf_count, name="ovf_pending")

        # ---- S2: output register -----------------------------------------------------------------
        with m.If(adv):
            m.d.sync += [self.outputs.valid.eq(out_valid), self.outputs.payload.op.eq(out_op),
                         self.outputs.payload.row.eq(out_row), self.outputs.payload.col.eq(out_col),
                         self.outputs.payload.value.eq(out_value)]
        return m

