"""WOSS softmax block (SpikedAttention): ``rows x keys`` neurons, one update per cycle, state in block RAM.

The fixed-point rule is :class:`spikeforge.sw.attention.WossFormat` (module docstring of
:mod:`spikeforge.sw.attention.woss`); B is a constant shift-add multiplier generated from ``B_fx``,
the fire thresholds a ``T``-entry table computed at elaboration.

Protocol
--------
``inputs`` (the accumulator protocol of :class:`~spikeforge.hw.trace_matmul.TraceMatmul`):

* ``ADD row col value``: ``x[row, col] = sat(x + value)``; only during the integration window
  (period steps ``p < T``), otherwise rejected. Row/col out of range: rejected.
* ``STEP``: sweeps every neuron (row-major, one per cycle). For ``p < T``: integration and the row's
  inhibition update; for ``p >= T``: fire step ``j = p - T``, one ``spikes`` beat ``SPIKE row col`` per
  neuron that fires. Then a ``STEP`` beat. After ``p = 2T - 1`` the state is cleared and the next
  period starts.
* ``CLEAR``: zeroes every neuron and row (one address per cycle), restarts the period; forwarded.

``overflows`` counts saturations (``x``, ``v``, ``u``; one cycle after they happen), ``rejected``
malformed beats. A refused
``spikes`` beat stalls the block; nothing is dropped. Block RAM is not reset: send ``CLEAR`` first.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .blocks import register_block
from ..sw.attention import WossFormat
from ..sw.fixed import check_int
from .arith import const_mul, count_later, index_width, saturate, saturating_increment
from .trace_matmul import ProductOp

__all__ = ["WossSoftmax", "SpikeOp"]


class SpikeOp(enum.Enum, shape=2):
    """Operation of one ``spikes`` beat."""
    SPIKE = 0
    STEP = 1
    CLEAR = 2


class _Slot(enum.Enum, shape=3):
    NONE = 0
    ADD = 1
    INTEGRATE = 2
    FIRE = 3
    END = 4
    CLEAR = 5


@register_block("woss_softmax")
class WossSoftmax(wiring.Component):
    """WOSS softmax neurons for ``rows`` attention rows of ``keys`` keys.

    Parameters
    ----------
    fmt : WossFormat
    rows, keys : int
    value_width : int, optional
        Width of the incoming ``value`` (default ``fmt.x_width``), e.g. a trace matmul's ``value_width``.
    counter_width : int

    Members
    -------
    inputs : ``In(stream.Signature(input_layout))``
    spikes : ``Out(stream.Signature(spike_layout))``
    period_step : ``Out`` — ``p``, the step within the ``2T``-step period
    overflows, rejected : ``Out(counter_width)``
    """

    def __init__(self, fmt: WossFormat, *, rows: int, keys: int, value_width: int | None = None,
                 counter_width: int = 32):
        try:
            if not isinstance(fmt, WossFormat):
                raise TypeError(f"fmt must be a spikeforge.sw.attention.WossFormat, not {type(fmt).__name__}")
            check_int("rows", rows, minimum=1, maximum=1 << 12)
            check_int("keys", keys, minimum=1, maximum=1 << 12)
            value_width = fmt.x_width if value_width is None else check_int(
                "value_width", value_width, minimum=2, maximum=fmt.v_width)
            check_int("counter_width", counter_width, minimum=8, maximum=64)
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self.fmt, self.rows, self.keys = fmt, rows, keys
        self.value_width, self.counter_width = value_width, counter_width
        self.input_layout = data.StructLayout({
            "op": ProductOp, "row": unsigned(index_width(rows)), "col": unsigned(index_width(keys)),
            "value": signed(value_width)})
        self.spike_layout = data.StructLayout({
            "op": SpikeOp, "row": unsigned(index_width(rows)), "col": unsigned(index_width(keys))})
        super().__init__({
            "inputs": In(stream.Signature(self.input_layout)),
            "spikes": Out(stream.Signature(self.spike_layout)),
            "period_step": Out(index_width(2 * fmt.T)),
            "overflows": Out(counter_width),
            "rejected": Out(counter_width),
        })

    @property
    def verilog_name(self) -> str:
        return "woss_softmax"

    def config(self) -> dict:
        return {"fmt": self.fmt.params(), "rows": self.rows, "keys": self.keys, "value_width": self.value_width,
                "counter_width": self.counter_width}

    @classmethod
    def from_config(cls, config: dict) -> "WossSoftmax":
        return cls(WossFormat.from_params(config["fmt"]), rows=config["rows"], keys=config["keys"],
                   value_width=config["value_width"], counter_width=config["counter_width"])

    def elaborate(self, platform):
        m = Module()
        fmt, R, K, T = self.fmt, self.rows, self.keys, self.fmt.T
        N = R * K
        vw, xw = fmt.v_width, fmt.x_width
        m.submodules.x_mem = x_mem = memory.Memory(shape=signed(xw), depth=N, init=[])
        neuron = data.StructLayout({"v": signed(vw), "fired": 1})
        m.submodules.v_mem = v_mem = memory.Memory(shape=neuron, depth=N, init=[])
        row_state = data.StructLayout({"u": signed(vw), "inhibit": 1})
        m.submodules.u_mem = u_mem = memory.Memory(shape=row_state, depth=R, init=[])
        x_wr = x_mem.write_port()
        x_rd = x_mem.read_port(transparent_for=(x_wr,))
        v_rd, v_wr = v_mem.read_port(), v_mem.write_port()
        u_rd, u_wr = u_mem.read_port(), u_mem.write_port()

        adv = Signal()
        m.d.comb += adv.eq(~(self.spikes.valid & ~self.spikes.ready))
        m.d.comb += [x_rd.en.eq(adv), v_rd.en.eq(adv), u_rd.en.eq(adv)]

        p = Signal(index_width(2 * T))
        m.d.comb += self.period_step.eq(p)
        thresholds = Array(Const(t, signed(vw + 1)) for t in fmt.thresholds)
        thr = Signal(signed(vw + 1))

        # ---- S0: sequencer ------------------------------------------------------------------
        s0_slot = Signal(_Slot)
        s0_addr = Signal(range(max(N, 2)))
        s0_row = Signal(range(max(R, 2)))
        s0_col = Signal(range(max(K, 2)))
        s0_value = Signal(signed(self.value_width))
        s0_last_step = Signal()
        row, col = Signal.like(s0_row), Signal.like(s0_col)
        idx = Signal(range(N + 1))
        sweep_last_step = Signal()   # the fire sweep of p = 2T-1 also clears the period's state
        sweep_final_int = Signal()   # the integration sweep of p = T-1
        ev = self.inputs.payload

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.inputs.ready.eq(adv)
                with m.If(self.inputs.valid & adv):
                    with m.Switch(ev.op):
                        with m.Case(ProductOp.ADD):
                            with m.If((ev.row >= R) | (ev.col >= K) | (p >= T)):
                                m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
                            with m.Else():
                                m.d.comb += [s0_slot.eq(_Slot.ADD), s0_addr.eq(const_mul(ev.row, K) + ev.col),
                                             s0_value.eq(ev.value), x_rd.addr.eq(const_mul(ev.row, K) + ev.col)]
                        with m.Case(ProductOp.STEP):
                            m.d.sync += [idx.eq(0), row.eq(0), col.eq(0), sweep_last_step.eq(p == 2 * T - 1),
                                         sweep_final_int.eq(p == T - 1),
                                         thr.eq(thresholds[Mux(p >= T, p - T, 0)])]
                            with m.If(p < T):
                                m.next = "INTEGRATE"
                            with m.Else():
                                m.next = "FIRE"
                        with m.Case(ProductOp.CLEAR):
                            m.d.sync += idx.eq(0)
                            m.next = "CLEARING"
                        with m.Default():
                            m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
            for state, slot in (("INTEGRATE", _Slot.INTEGRATE), ("FIRE", _Slot.FIRE)):
                with m.State(state):
                    with m.If(idx == N):
                        m.d.comb += s0_slot.eq(_Slot.END)
                        with m.If(adv):
                            m.d.sync += p.eq(Mux(p == 2 * T - 1, 0, p + 1))
                            m.next = "IDLE"
                    with m.Else():
                        m.d.comb += [s0_slot.eq(slot), s0_addr.eq(idx), s0_row.eq(row), s0_col.eq(col),
                                     s0_last_step.eq(sweep_last_step),
                                     x_rd.addr.eq(idx), v_rd.addr.eq(idx), u_rd.addr.eq(row)]
                        with m.If(adv):
                            m.d.sync += idx.eq(idx + 1)
                            with m.If(col == K - 1):
                                m.d.sync += [col.eq(0), row.eq(row + 1)]
                            with m.Else():
                                m.d.sync += col.eq(col + 1)
            with m.State("CLEARING"):
                with m.If(idx == N):
                    m.d.comb += s0_slot.eq(_Slot.CLEAR)
                    with m.If(adv):
                        m.d.sync += p.eq(0)
                        m.next = "IDLE"
                with m.Else():
                    # S1 holds no writing slot while the sequencer clears (CLEAR pushes none)
                    m.d.comb += [x_wr.addr.eq(idx), x_wr.data.eq(0), x_wr.en.eq(adv),
                                 v_wr.addr.eq(idx), v_wr.data.eq(0), v_wr.en.eq(adv),
                                 u_wr.addr.eq(idx), u_wr.data.eq(Cat(Const(0, vw), Const(1, 1))),
                                 u_wr.en.eq(adv & (idx < R))]
                    with m.If(adv):
                        m.d.sync += idx.eq(idx + 1)

        # ---- S1: read data arrives: read-modify-write, rule, row bookkeeping -------------------
        s1_slot = Signal(_Slot)
        s1_addr, s1_row, s1_col = Signal.like(s0_addr), Signal.like(s0_row), Signal.like(s0_col)
        s1_value = Signal.like(s0_value)
        s1_last_step = Signal()
        with m.If(adv):
            m.d.sync += [s1_slot.eq(s0_slot), s1_addr.eq(s0_addr), s1_row.eq(s0_row), s1_col.eq(s0_col),
                         s1_value.eq(s0_value), s1_last_step.eq(s0_last_step)]
        x = x_rd.data
        nv = neuron(v_rd.data)
        rs = row_state(u_rd.data)
        first_col, last_col = s1_col == 0, s1_col == K - 1

        x_sum, x_ovf = saturate(m, x + s1_value, xw, name="x_sum")
        v_next, v_ovf = saturate(m, (const_mul(nv.v, fmt.b_fx) >> fmt.b_frac_bits) + x, vw, name="v_next")
        x_max, v_max = Signal(signed(xw)), Signal(signed(vw))       # running row maxima (registered)
        x_row_max = Signal(signed(xw))
        v_row_max = Signal(signed(vw))
        m.d.comb += [x_row_max.eq(Mux(first_col | (x > x_max), x, x_max)),
                     v_row_max.eq(Mux(first_col | (v_next > v_max), v_next, v_max))]
        u_mul = const_mul(rs.u, fmt.b_fx) >> fmt.b_frac_bits
        u_next, u_ovf = saturate(m, u_mul + Mux(rs.inhibit, x_row_max, 0), vw, name="u_next")
        diff = Signal(signed(vw + 1))
        m.d.comb += diff.eq(nv.v - rs.u)
        fires = ~nv.fired & (diff >= thr)

        ovf_count = Signal(range(4))
        out_valid, out_op = Signal(), Signal(SpikeOp)
        if fmt.inhibition == "window_max":
            final_u = Signal(signed(vw))
            m.d.comb += final_u.eq(Mux(sweep_final_int, v_row_max, u_next))
        else:
            final_u = u_next
        with m.Switch(s1_slot):
            with m.Case(_Slot.ADD):
                m.d.comb += [x_wr.addr.eq(s1_addr), x_wr.data.eq(x_sum), x_wr.en.eq(adv), ovf_count.eq(x_ovf)]
            with m.Case(_Slot.INTEGRATE):
                m.d.comb += [x_wr.addr.eq(s1_addr), x_wr.data.eq(0), x_wr.en.eq(adv),
                             v_wr.addr.eq(s1_addr), v_wr.data.eq(Cat(v_next, Const(0, 1))),
                             v_wr.en.eq(adv)]
                with m.If(adv):
                    m.d.sync += [x_max.eq(x_row_max), v_max.eq(v_row_max)]
                with m.If(last_col):
                    m.d.comb += [u_wr.addr.eq(s1_row), u_wr.en.eq(adv),
                                 u_wr.data.eq(Cat(final_u, rs.inhibit & (x_row_max <= 0))),
                                 ovf_count.eq(v_ovf + u_ovf)]
                with m.Else():
                    m.d.comb += ovf_count.eq(v_ovf)
            with m.Case(_Slot.FIRE):
                m.d.comb += [out_valid.eq(fires), out_op.eq(SpikeOp.SPIKE),
                             v_wr.addr.eq(s1_addr), v_wr.en.eq(adv & (fires | s1_last_step)),
                             v_wr.data.eq(Mux(s1_last_step, 0, Cat(nv.v, Const(1, 1))))]
                with m.If(s1_last_step & last_col):
                    m.d.comb += [u_wr.addr.eq(s1_row), u_wr.en.eq(adv), u_wr.data.eq(Cat(Const(0, vw), Const(1, 1)))]
            with m.Case(_Slot.END):
                m.d.comb += [out_valid.eq(1), out_op.eq(SpikeOp.STEP)]
            with m.Case(_Slot.CLEAR):
                m.d.comb += [out_valid.eq(1), out_op.eq(SpikeOp.CLEAR)]
        count_later(m, self.overflows, Mux(adv, ovf_count, 0), name="ovf_pending")

        # ---- S2: output register ---------------------------------------------------------------
        with m.If(adv):
            m.d.sync += [self.spikes.valid.eq(out_valid), self.spikes.payload.op.eq(out_op),
                         self.spikes.payload.row.eq(s1_row), self.spikes.payload.col.eq(s1_col)]
        return m
