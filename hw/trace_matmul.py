"""Trace-memory unit and trace-driven matmul engine (phase traces or spike counts), adds only.

:class:`TraceMatmul` holds two trace memories, side ``a`` (``rows x channels``) and side ``b``
(``cols x channels``), the global trace table ``G_t`` (``channels x T`` entries computed at elaboration
from :class:`~spikeforge.sw.attention.TraceFormat`, a single ``T``-entry table when every channel has
the same weight) and the step counter. It turns spike events into accumulator additions:

Protocol
--------
``events`` (one beat per event): ``SPIKE side token channel neg`` | ``STEP`` | ``CLEAR``.

* ``SPIKE``: the neuron's own trace slot is read and updated first (phase: capture ``(fired, neg,
  step)`` unless it already fired; count: ``count = sat(count +- 1)``), then every token of the other
  side is read in turn (the trace-memory read port) and one ``products`` beat ``ADD row col value``
  leaves for each non-zero trace, ``value = +-G[channel][step]`` (phase) or ``+-count`` (count). With
  ``norm_column`` a side-``a`` spike also emits ``ADD row cols G[channel][0]``.
* ``STEP`` advances the step counter and is forwarded as a ``products`` beat (op ``STEP``).
* ``CLEAR`` zeroes both memories (one address per cycle), restarts the step count and is forwarded.

Rejected and counted in ``rejected``: a token or channel out of range; in phase mode a second spike
of a neuron in the window and any spike at ``step >= T``. Count saturations are counted in
``overflows``. The engine reads one trace per cycle: a spike takes ``2 + other side's tokens`` cycles
(plus one with ``norm_column``). A refused ``products`` beat stalls the engine; nothing is dropped.
Block RAM is not reset: send ``CLEAR`` first.

The bit-exact model is :class:`spikeforge.sw.attention.TraceMatmulModel`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .blocks import register_block
from ..sw.attention import TraceFormat
from ..sw.fixed import check_int
from .arith import const_mul, index_width, saturate, saturating_increment

__all__ = ["TraceMatmul", "MatmulOp", "ProductOp"]


class MatmulOp(enum.Enum, shape=2):
    """Operation of one ``events`` beat."""
    SPIKE = 0
    STEP = 1
    CLEAR = 2


class ProductOp(enum.Enum, shape=2):
    """Operation of one ``products`` beat (the accumulator protocol shared with WOSS and A·V)."""
    ADD = 0
    STEP = 1
    CLEAR = 2


class _Slot(enum.Enum, shape=3):
    NONE = 0
    PRODUCT = 1
    NORM = 2
    STEP = 3
    CLEAR = 4


@register_block("trace_matmul")
class TraceMatmul(wiring.Component):
    """Trace-driven matmul engine with its two trace memories.

    Parameters
    ----------
    fmt : TraceFormat
        Mode, T, B, channels, weights and widths (shared with the bit-exact model).
    rows, cols : int
        Tokens of side ``a`` (accumulator rows) and side ``b`` (accumulator columns).
    norm_column : bool
        Emit the A·V normaliser column (phase mode only).
    counter_width : int
        Width of the saturating ``rejected``/``overflows`` counters.

    Members
    -------
    events : ``In(stream.Signature(event_layout))``
    products : ``Out(stream.Signature(product_layout))``
    step : ``Out(step_width)`` current step
    rejected, overflows : ``Out(counter_width)``
    """

    def __init__(self, fmt: TraceFormat, *, rows: int, cols: int, norm_column: bool = False, counter_width: int = 32):
        try:
            if not isinstance(fmt, TraceFormat):
                raise TypeError(f"fmt must be a spikeforge.sw.attention.TraceFormat, not {type(fmt).__name__}")
            check_int("rows", rows, minimum=1, maximum=1 << 12)
            check_int("cols", cols, minimum=1, maximum=1 << 12)
            check_int("counter_width", counter_width, minimum=8, maximum=64)
            if norm_column and fmt.mode != "phase":
                raise ValueError("norm_column needs a phase-mode trace format")
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self.fmt, self.rows, self.cols = fmt, rows, cols
        self.norm_column = bool(norm_column)
        self.counter_width = counter_width
        token_w = index_width(max(rows, cols))
        self.event_layout = data.StructLayout({
            "op": MatmulOp, "side": 1, "token": unsigned(token_w + 1),
            "channel": unsigned(index_width(fmt.channels) + 1),
            "neg": 1})
        self.product_layout = data.StructLayout({
            "op": ProductOp, "row": unsigned(index_width(rows)), "col": unsigned(index_width(cols + self.norm_column)),
            "value": signed(fmt.value_width)})
        super().__init__({
            "events": In(stream.Signature(self.event_layout)),
            "products": Out(stream.Signature(self.product_layout)),
            "step": Out(fmt.step_width),
            "rejected": Out(counter_width),
            "overflows": Out(counter_width),
        })

    @property
    def verilog_name(self) -> str:
        return f"trace_matmul_{self.fmt.mode}"

    def config(self) -> dict:
        return {"fmt": self.fmt.params(), "rows": self.rows, "cols": self.cols, "norm_column": self.norm_column,
                "counter_width": self.counter_width}

    @classmethod
    def from_config(cls, config: dict) -> "TraceMatmul":
        return cls(TraceFormat.from_params(config["fmt"]), rows=config["rows"], cols=config["cols"],
                   norm_column=config["norm_column"], counter_width=config["counter_width"])

    def elaborate(self, platform):
        m = Module()
        fmt, D, T = self.fmt, self.fmt.channels, self.fmt.T
        phase = fmt.mode == "phase"
        sizes = {"a": self.rows, "b": self.cols}
        if phase:
            entry = data.StructLayout({"fired": 1, "neg": 1, "step": unsigned(fmt.step_width)})
        else:
            entry = data.StructLayout({"count": signed(fmt.count_width)})
        mems, rds, wrs = {}, {}, {}
        for side in "ab":
            mems[side] = memory.Memory(shape=entry, depth=sizes[side] * D, init=[])
            m.submodules[f"trace_{side}"] = mems[side]
            rds[side] = mems[side].read_port()
            wrs[side] = mems[side].write_port()
        shared_lut = phase and all(row == fmt.lut[0] for row in fmt.lut)
        if phase:
            flat = fmt.lut[0] if shared_lut else [v for row in fmt.lut for v in row]
            m.submodules.lut = lut = memory.Memory(shape=unsigned(fmt.magnitude_width), depth=len(flat), init=flat)
            lut_rd = lut.read_port()

        # The engine advances unless the output register holds a beat its consumer refuses.
        adv = Signal()
        m.d.comb += adv.eq(~(self.products.valid & ~self.products.ready))
        for side in "ab":
            m.d.comb += rds[side].en.eq(adv)
        if phase:
            m.d.comb += lut_rd.en.eq(adv)

        # ---- S0: sequencer ------------------------------------------------------------------
        t = Signal(fmt.step_width)
        m.d.comb += self.step.eq(t)
        ev = self.events.payload
        cur_side, cur_neg = Signal(), Signal()
        cur_token = Signal(index_width(max(self.rows, self.cols)))
        cur_channel = Signal(index_width(D))
        sweep = Signal(index_width(max(self.rows, self.cols) * D + 1) + 1)
        s0_slot = Signal(_Slot)
        s0_row = Signal(self.product_layout.members["row"])
        s0_col = Signal(self.product_layout.members["col"])
        t_max = (1 << fmt.step_width) - 1

        def addr(token, channel):
            return const_mul(token, D) + channel

        other_size = Mux(cur_side, self.rows, self.cols)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.events.ready.eq(adv)
                ev_size = Mux(ev.side, self.cols, self.rows)
                malformed = (ev.token >= ev_size) | (ev.channel >= D)
                if phase:
                    malformed = malformed | (t >= T)
                with m.If(self.events.valid & adv):
                    with m.Switch(ev.op):
                        with m.Case(MatmulOp.SPIKE):
                            with m.If(malformed):
                                m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
                            with m.Else():
                                m.d.sync += [cur_side.eq(ev.side), cur_neg.eq(ev.neg), cur_token.eq(ev.token),
                                             cur_channel.eq(ev.channel)]
                                # issue the read of the spiking neuron's own slot
                                for side, bit in (("a", 0), ("b", 1)):
                                    with m.If(ev.side == bit):
                                        m.d.comb += rds[side].addr.eq(addr(ev.token, ev.channel))
                                m.next = "CAPTURE"
                        with m.Case(MatmulOp.STEP):
                            m.d.comb += s0_slot.eq(_Slot.STEP)
                            m.d.sync += t.eq(Mux(t == t_max, t, t + 1))
                        with m.Case(MatmulOp.CLEAR):
                            m.d.sync += sweep.eq(0)
                            m.next = "CLEARING"
                        with m.Default():
                            m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
            with m.State("CAPTURE"):
                own = Mux(cur_side, rds["b"].data.as_value(), rds["a"].data.as_value())
                own = entry(own)
                with m.If(adv):
                    if phase:
                        with m.If(own.fired):
                            m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
                            m.next = "IDLE"
                        with m.Else():
                            for side, bit in (("a", 0), ("b", 1)):
                                with m.If(cur_side == bit):
                                    m.d.comb += [wrs[side].addr.eq(addr(cur_token, cur_channel)), wrs[side].en.eq(1),
                                                 wrs[side].data.eq(Cat(Const(1, 1), cur_neg, t))]
                            m.d.sync += sweep.eq(0)
                            m.next = "SWEEP"
                    else:
                        new, ovf = saturate(m, own.count + Mux(cur_neg, -1, 1), fmt.count_width, name="count_next")
                        for side, bit in (("a", 0), ("b", 1)):
                            with m.If(cur_side == bit):
                                m.d.comb += [wrs[side].addr.eq(addr(cur_token, cur_channel)), wrs[side].en.eq(1),
                                             wrs[side].data.eq(new)]
                        with m.If(ovf):
                            m.d.sync += self.overflows.eq(saturating_increment(self.overflows, 1))
                        m.d.sync += sweep.eq(0)
                        m.next = "SWEEP"
            with m.State("SWEEP"):
                # read the other side's trace of token `sweep`, same channel
                for side, bit in (("a", 1), ("b", 0)):   # side a is read by a side-b spike
                    with m.If(cur_side == bit):
                        m.d.comb += rds[side].addr.eq(addr(sweep, cur_channel))
                m.d.comb += [s0_slot.eq(_Slot.PRODUCT),
                             s0_row.eq(Mux(cur_side, sweep, cur_token)),
                             s0_col.eq(Mux(cur_side, cur_token, sweep))]
                with m.If(adv):
                    m.d.sync += sweep.eq(sweep + 1)
                    with m.If(sweep == other_size - 1):
                        if self.norm_column:
                            with m.If(cur_side == 0):
                                m.next = "NORM"
                            with m.Else():
                                m.next = "IDLE"
                        else:
                            m.next = "IDLE"
            if self.norm_column:
                with m.State("NORM"):
                    m.d.comb += [s0_slot.eq(_Slot.NORM), s0_row.eq(cur_token), s0_col.eq(self.cols)]
                    with m.If(adv):
                        m.next = "IDLE"
            with m.State("CLEARING"):
                depth = max(self.rows, self.cols) * D
                for side in "ab":
                    m.d.comb += [wrs[side].addr.eq(sweep), wrs[side].data.eq(0),
                                 wrs[side].en.eq(adv & (sweep < sizes[side] * D))]
                with m.If(adv):
                    m.d.sync += sweep.eq(sweep + 1)
                    with m.If(sweep == depth - 1):
                        m.d.comb += s0_slot.eq(_Slot.CLEAR)
                        m.d.sync += t.eq(0)
                        m.next = "IDLE"

        # ---- S1: trace data arrives; look the trace up in the table ---------------------------
        s1_slot = Signal(_Slot)
        s1_row, s1_col = Signal.like(s0_row), Signal.like(s0_col)
        s1_side, s1_neg, s1_channel = Signal(), Signal(), Signal.like(cur_channel)
        with m.If(adv):
            m.d.sync += [s1_slot.eq(s0_slot), s1_row.eq(s0_row), s1_col.eq(s0_col), s1_side.eq(cur_side),
                         s1_neg.eq(cur_neg), s1_channel.eq(cur_channel)]
        other = entry(Mux(s1_side, rds["a"].data.as_value(), rds["b"].data.as_value()))
        s2_slot = Signal(_Slot)
        s2_row, s2_col = Signal.like(s0_row), Signal.like(s0_col)
        s2_neg, s2_present = Signal(), Signal()
        s2_count = Signal(signed(fmt.value_width))
        with m.If(adv):
            m.d.sync += [s2_slot.eq(s1_slot), s2_row.eq(s1_row), s2_col.eq(s1_col)]
        if phase:
            step = Mux(s1_slot == _Slot.NORM, 0, other.step)
            if shared_lut:
                m.d.comb += lut_rd.addr.eq(step)
            else:
                m.d.comb += lut_rd.addr.eq(const_mul(s1_channel, T) + step)
            with m.If(adv):
                m.d.sync += [s2_present.eq((s1_slot == _Slot.NORM) | other.fired),
                             s2_neg.eq(s1_neg ^ ((s1_slot == _Slot.PRODUCT) & other.neg))]
        else:
            with m.If(adv):
                m.d.sync += [s2_present.eq(other.count != 0), s2_neg.eq(s1_neg), s2_count.eq(other.count)]

        # ---- S2: form the product value; S3: output register ------------------------------------
        if phase:
            mag = lut_rd.data
            value = Mux(s2_neg, -mag, mag)
            nonzero = s2_present & (mag != 0)
        else:
            value = Mux(s2_neg, -s2_count, s2_count)
            nonzero = s2_present
        emit = Signal()
        out_op = Signal(ProductOp)
        with m.Switch(s2_slot):
            with m.Case(_Slot.PRODUCT, _Slot.NORM):
                m.d.comb += [emit.eq(nonzero), out_op.eq(ProductOp.ADD)]
            with m.Case(_Slot.STEP):
                m.d.comb += [emit.eq(1), out_op.eq(ProductOp.STEP)]
            with m.Case(_Slot.CLEAR):
                m.d.comb += [emit.eq(1), out_op.eq(ProductOp.CLEAR)]
        with m.If(adv):
            m.d.sync += [self.products.valid.eq(emit),
                         self.products.payload.op.eq(out_op),
                         self.products.payload.row.eq(s2_row),
                         self.products.payload.col.eq(s2_col),
                         self.products.payload.value.eq(Mux(out_op == ProductOp.ADD, value, 0))]
        return m
