"""A whole spiking attention head in RTL: QK^T trace matmul -> WOSS softmax -> A·V trace matmul -> output.

The bit-exact model is :class:`spikeforge.sw.attention.SpikedHeadFormat` (``run``); the blocks are
:class:`~.trace_matmul.TraceMatmul` (QK^T, phase traces), :class:`~.woss_softmax.WossSoftmax`,
:class:`~.trace_matmul.TraceMatmul` (A·V, with the normaliser column) and
:class:`~.attention_output.AttentionOutput`, joined by two small units defined here:

* the **input demultiplexer** sends ``q``/``k`` spikes to the QK^T engine and stores ``v``'s one-spike
  code (``fired, neg, step``) in a ``keys x dim_v`` memory — the delay of ``v`` by one window;
* the **merger** turns WOSS output into A·V events: in fire step ``j`` the WOSS spikes (side ``a``,
  token = row, channel = key), then every stored ``v`` spike of code step ``j`` (side ``b``, token = value
  channel, channel = key, found by a sweep of the ``v`` memory), then ``STEP``.

Protocol
--------
``inputs``: ``SPIKE tensor token channel neg`` (tensor ``Q``/``K``/``V``) | ``STEP`` | ``CLEAR``. A head
is ``CLEAR``, then ``2T`` steps: window 0 (steps ``0 .. T-1``) carries the spikes of ``q``, ``k`` and
``v``; window 1 carries none (WOSS fires, A·V accumulates). Rejected and counted in ``rejected``: an
unknown tensor or op, a token or channel out of range, a spike in window 1, a second ``v`` spike of a
neuron, a ``STEP`` beyond ``2T``. (Second ``q``/``k`` spikes are rejected by the QK^T engine and counted
in ``qk_rejected``.) A ``CLEAR`` waits until everything sent before it has passed the merger, then
zeroes the ``v`` memory and travels through every block.

``outputs``: ``VALUE row col value`` (``out_frac_bits`` fractional bits, units of ``v``'s scale) for every
``(row, col)`` after the last step of window 1, a ``STEP`` per window-1 step and ``CLEAR`` per clear.

Every stream stalls on a refused beat; nothing is dropped. Block RAM is not reset: send ``CLEAR`` first.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .blocks import register_block
from ..sw.attention import SpikedHeadFormat
from ..sw.attention.events import HEAD_COUNTERS
from ..sw.fixed import check_int
from .arith import const_mul, index_width, saturating_increment
from .attention_output import AttentionOutput
from .trace_matmul import MatmulOp, TraceMatmul
from .woss_softmax import SpikeOp, WossSoftmax

__all__ = ["SpikedHead", "HeadOp", "HeadTensor", "HEAD_COUNTERS"]

# HEAD_COUNTERS (the counter ports, in the order the golden traces list them) is defined with the head's
# event-level model in spikeforge.sw.attention.events and re-exported here.


class HeadOp(enum.Enum, shape=2):
    """Operation of one ``inputs`` beat."""
    SPIKE = 0
    STEP = 1
    CLEAR = 2


class HeadTensor(enum.Enum, shape=2):
    """Which operand a ``SPIKE`` belongs to."""
    Q = 0
    K = 1
    V = 2


@register_block("spiked_head")
class SpikedHead(wiring.Component):
    """One spiking attention head (``fmt.rows`` queries, ``fmt.keys`` keys, head dims ``fmt.dim`` and
    ``fmt.dim_v``).

    Parameters
    ----------
    fmt : SpikedHeadFormat
    counter_width : int

    Members
    -------
    inputs : ``In(stream.Signature(input_layout))``
    outputs : ``Out(stream.Signature(output_layout))`` (:class:`AttentionOutput`'s)
    step : ``Out`` — steps since the last ``CLEAR`` at the input
    rejected, qk_rejected, woss_rejected, woss_overflows, av_rejected, out_rejected, out_overflows,
    empty_rows : ``Out(counter_width)``
    """

    def __init__(self, fmt: SpikedHeadFormat, *, counter_width: int = 32):
        try:
            if not isinstance(fmt, SpikedHeadFormat):
                raise TypeError(f"fmt must be a spikeforge.sw.attention.SpikedHeadFormat, not {type(fmt).__name__}")
            check_int("counter_width", counter_width, minimum=8, maximum=64)
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self.fmt, self.counter_width = fmt, counter_width
        R, K = fmt.rows, fmt.keys
        self.qk = TraceMatmul(fmt.qk, rows=R, cols=K, counter_width=counter_width)
        self.woss = WossSoftmax(fmt.woss, rows=R, keys=K, value_width=fmt.qk.value_width, counter_width=counter_width)
        self.av = TraceMatmul(fmt.av, rows=R, cols=fmt.dim_v, norm_column=True, counter_width=counter_width)
        self.out = AttentionOutput(fmt, value_width=fmt.av.value_width, counter_width=counter_width)
        for block in (self.qk, self.woss, self.av, self.out):
            block._MustUse__silence = True          # elaborated with the head, or not at all
        self.input_layout = data.StructLayout({
            "op": HeadOp, "tensor": HeadTensor, "token": unsigned(index_width(max(R, K)) + 1),
            "channel": unsigned(index_width(max(fmt.dim, fmt.dim_v)) + 1), "neg": 1})
        self.output_layout = self.out.output_layout
        super().__init__({
            "inputs": In(stream.Signature(self.input_layout)),
            "outputs": Out(stream.Signature(self.output_layout)),
            "step": Out(index_width(2 * fmt.T + 1)),
            **{name: Out(counter_width) for name in HEAD_COUNTERS},
        })

    @property
    def verilog_name(self) -> str:
        return "spiked_head"

    def config(self) -> dict:
        return {"fmt": self.fmt.params(), "counter_width": self.counter_width}

    @classmethod
    def from_config(cls, config: dict) -> "SpikedHead":
        return cls(SpikedHeadFormat.from_params(config["fmt"]), counter_width=config["counter_width"])

    def elaborate(self, platform):
        m = Module()
        fmt = self.fmt
        R, K, D, E, T = fmt.rows, fmt.keys, fmt.dim, fmt.dim_v, fmt.T
        KE = K * E
        m.submodules.qk, m.submodules.woss = qk, woss = self.qk, self.woss
        m.submodules.av, m.submodules.out = av, out = self.av, self.out
        wiring.connect(m, qk.products, woss.inputs)
        wiring.connect(m, av.products, out.inputs)
        wiring.connect(m, out.outputs, wiring.flipped(self.outputs))
        m.d.comb += [self.qk_rejected.eq(qk.rejected), self.woss_rejected.eq(woss.rejected),
                     self.woss_overflows.eq(woss.overflows), self.av_rejected.eq(av.rejected),
                     self.out_rejected.eq(out.rejected), self.out_overflows.eq(out.overflows),
                     self.empty_rows.eq(out.empty_rows)]

        # v's one-spike codes, written by the demultiplexer in window 0, swept by the merger in window 1
        code = data.StructLayout({"fired": 1, "neg": 1, "step": unsigned(index_width(T))})
        m.submodules.v_mem = v_mem = memory.Memory(shape=code, depth=KE, init=[])
        v_wr, v_rd_in, v_rd_sweep = v_mem.write_port(), v_mem.read_port(), v_mem.read_port()

        # markers (STEP/CLEAR) sent into the QK^T engine vs. handled by the merger: equal = drained
        mark_w = index_width(2 * T + 2) + 1
        sent, seen = Signal(mark_w), Signal(mark_w)

        # ---- input demultiplexer -----------------------------------------------------------------
        t = Signal(range(2 * T + 1))
        m.d.comb += self.step.eq(t)
        ev = self.inputs.payload
        qe = qk.events.payload
        size = {HeadTensor.Q: (R, D), HeadTensor.K: (K, D), HeadTensor.V: (K, E)}
        in_range = Signal()
        with m.Switch(ev.tensor):
            for tensor, (tokens, channels) in size.items():
                with m.Case(tensor):
                    m.d.comb += in_range.eq((ev.token < tokens) & (ev.channel < channels))
        v_addr, v_neg = Signal(range(max(KE, 2))), Signal()
        clear_idx = Signal(range(KE + 1))
        reject = Signal()
        with m.If(reject):
            m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
        m.d.comb += v_rd_in.en.eq(1)

        with m.FSM(name="demux"):
            with m.State("IDLE"):
                with m.If(self.inputs.valid):
                    with m.Switch(ev.op):
                        with m.Case(HeadOp.SPIKE):
                            with m.If(~in_range | (t >= T)):
                                m.d.comb += [self.inputs.ready.eq(1), reject.eq(1)]
                            with m.Elif(ev.tensor == HeadTensor.V):
                                v_at = const_mul(ev.token, E) + ev.channel
                                m.d.comb += [self.inputs.ready.eq(1), v_rd_in.addr.eq(v_at)]
                                m.d.sync += [v_addr.eq(v_at), v_neg.eq(ev.neg)]
                                m.next = "V_CHECK"
                            with m.Else():
                                m.d.comb += [qk.events.valid.eq(1), qe.op.eq(MatmulOp.SPIKE),
                                             qe.side.eq(ev.tensor == HeadTensor.K), qe.token.eq(ev.token),
                                             qe.channel.eq(ev.channel), qe.neg.eq(ev.neg),
                                             self.inputs.ready.eq(qk.events.ready)]
                        with m.Case(HeadOp.STEP):
                            with m.If(t == 2 * T):
                                m.d.comb += [self.inputs.ready.eq(1), reject.eq(1)]
                            with m.Else():
                                m.d.comb += [qk.events.valid.eq(1), qe.op.eq(MatmulOp.STEP),
                                             self.inputs.ready.eq(qk.events.ready)]
                                with m.If(qk.events.ready):
                                    m.d.sync += [t.eq(t + 1), sent.eq(sent + 1)]
                        with m.Case(HeadOp.CLEAR):
                            with m.If(sent == seen):
                                m.d.sync += clear_idx.eq(0)
                                m.next = "V_CLEAR"
                        with m.Default():
                            m.d.comb += [self.inputs.ready.eq(1), reject.eq(1)]
            with m.State("V_CHECK"):
                with m.If(v_rd_in.data.fired):
                    m.d.comb += reject.eq(1)
                with m.Else():
                    m.d.comb += [v_wr.addr.eq(v_addr), v_wr.en.eq(1), v_wr.data.fired.eq(1), v_wr.data.neg.eq(v_neg),
                                 v_wr.data.step.eq(t)]
                m.next = "IDLE"
            with m.State("V_CLEAR"):
                m.d.comb += [v_wr.addr.eq(clear_idx), v_wr.data.eq(0), v_wr.en.eq(1)]
                m.d.sync += clear_idx.eq(clear_idx + 1)
                with m.If(clear_idx == KE - 1):
                    m.next = "CLEAR_FWD"
            with m.State("CLEAR_FWD"):
                m.d.comb += [qk.events.valid.eq(1), qe.op.eq(MatmulOp.CLEAR), self.inputs.ready.eq(qk.events.ready)]
                with m.If(qk.events.ready):
                    m.d.sync += [t.eq(0), sent.eq(sent + 1)]
                    m.next = "IDLE"

        # ---- merger: WOSS spikes + delayed v -> A·V events ---------------------------------------------
        ae = av.events
        adv = Signal()                       # the merger's output register can take a beat
        m.d.comb += adv.eq(~(ae.valid & ~ae.ready))
        s = Signal(range(2 * T + 1))         # WOSS markers seen in this head
        j = Signal(index_width(T))                 # fire step being swept
        sweep_idx = Signal(range(KE + 1))
        sweep_key, sweep_e = Signal(range(max(K, 2))), Signal(range(max(E, 2)))
        sw_valid = Signal()
        sw_key, sw_e = Signal.like(sweep_key), Signal.like(sweep_e)
        m.d.comb += [v_rd_sweep.en.eq(adv), v_rd_sweep.addr.eq(sweep_idx)]
        entry = v_rd_sweep.data
        match = Signal()
        m.d.comb += match.eq(sw_valid & entry.fired & (entry.step == j))

        nxt_valid = Signal()
        nxt = Signal(av.event_layout)
        with m.If(sw_valid):
            m.d.comb += [nxt_valid.eq(match), nxt.op.eq(MatmulOp.SPIKE), nxt.side.eq(1), nxt.token.eq(sw_e),
                         nxt.channel.eq(sw_key), nxt.neg.eq(entry.neg)]
        wp = woss.spikes.payload
        with m.FSM(name="merger"):
            with m.State("IDLE"):
                with m.If(woss.spikes.valid):
                    with m.Switch(wp.op):
                        with m.Case(SpikeOp.SPIKE):
                            m.d.comb += [woss.spikes.ready.eq(adv), nxt_valid.eq(1), nxt.op.eq(MatmulOp.SPIKE),
                                         nxt.side.eq(0), nxt.token.eq(wp.row), nxt.channel.eq(wp.col)]
                        with m.Case(SpikeOp.STEP):
                            with m.If(s < T):
                                m.d.comb += woss.spikes.ready.eq(adv)
                                with m.If(adv):
                                    m.d.sync += [s.eq(s + 1), seen.eq(seen + 1)]
                            with m.Else():
                                m.d.sync += [j.eq(s - T), sweep_idx.eq(0), sweep_key.eq(0), sweep_e.eq(0)]
                                m.next = "SWEEP"
                        with m.Case(SpikeOp.CLEAR):
                            m.d.comb += [woss.spikes.ready.eq(adv), nxt_valid.eq(1), nxt.op.eq(MatmulOp.CLEAR)]
                            with m.If(adv):
                                m.d.sync += [s.eq(0), seen.eq(seen + 1)]
            with m.State("SWEEP"):
                with m.If(adv):
                    m.d.sync += [sw_valid.eq(1), sw_key.eq(sweep_key), sw_e.eq(sweep_e), sweep_idx.eq(sweep_idx + 1)]
                    with m.If(sweep_e == E - 1):
                        m.d.sync += [sweep_e.eq(0), sweep_key.eq(sweep_key + 1)]
                    with m.Else():
                        m.d.sync += sweep_e.eq(sweep_e + 1)
                    with m.If(sweep_idx == KE - 1):
                        m.next = "END"
            with m.State("END"):
                with m.If(adv):
                    m.d.sync += sw_valid.eq(0)
                with m.If(~sw_valid):
                    m.d.comb += [nxt_valid.eq(1), nxt.op.eq(MatmulOp.STEP), woss.spikes.ready.eq(adv)]
                    with m.If(adv):
                        m.d.sync += [s.eq(s + 1), seen.eq(seen + 1)]
                        m.next = "IDLE"
        with m.If(adv):
            m.d.sync += [ae.valid.eq(nxt_valid), ae.payload.eq(nxt)]
        return m
