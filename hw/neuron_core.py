"""Time-multiplexed neuron core: N virtual neurons on P update lanes, state in block RAM.

The core is one parameterised :class:`~amaranth.lib.wiring.Component`; the neuron model (ST-BIF,
BIF, IF, one-spike phase) is a constructor argument and selects the per-lane rule from
:mod:`spikeforge.hw.neuron_rules`. Neuron ``n`` lives in lane ``n % P`` of group ``n // P``; one
memory word holds the state of the P neurons of a group.

Protocol (``events`` stream, one beat per cycle at full rate)
---------------------------------------------------------------
* ``ACCUMULATE group current[P]``: ``v = sat(v + current[lane])`` for the group's P neurons.
* ``STEP``: ends the timestep: the core sweeps every group through the model's update rule,
  emits one ``spikes`` beat per group that fired and then one beat with ``end_step = 1``.
  While it sweeps (N/P cycles) it accepts no events.
* ``CLEAR``: writes the model's initial state to every neuron and restarts the step count.
* ``READ group``: sends the group's state on ``readback``.

An ``ACCUMULATE`` or ``READ`` naming a group >= N/P is malformed: it is dropped and counted in
``rejected``. Saturation events (per neuron) are counted in ``overflows``, BIF window truncations in
``truncations``; the counters saturate instead of wrapping.

Pipeline: S0 issues the block-RAM read, S1 waits for the data, S2 forwards the newest copy of the
group, accumulates and writes ACCUMULATE/INIT results and computes the first half of the update
rule, S3 finishes the rule and writes UPDATE results, S4 holds the output beats. Writes of the two
previous cycles are forwarded to S2, so back-to-back operations on the same group are exact at
one beat per cycle. A stalled output stream stalls the whole pipeline (nothing is dropped).
"""

from __future__ import annotations



from amaranth.hdl import Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .blocks import register_block
from ..sw.fixed import check_int
from ..sw.neurons import NeuronModel, model_from_dict
from .arith import index_width, popcount, saturating_increment
from .neuron_rules import lane_rule

__all__ = ["NeuronCore", "CoreOp"]


class CoreOp(enum.Enum, shape=2):
    """Operation of one ``events`` beat."""
    ACCUMULATE = 0
    STEP = 1
    CLEAR = 2
    READ = 3


class _Op(enum.Enum, shape=3):
    NOP = 0
    ACC = 1
    UPDATE = 2
    INIT = 3
    READ = 4
    END_STEP = 5
    END_CLEAR = 6


@register_block("neuron_core")
class NeuronCore(wiring.Component):
    """Neuron core with ``neurons`` virtual neurons of ``model`` on ``lanes`` update lanes.

    Parameters
    ----------
    model : NeuronModel
        Bit-exact neuron model; fixes the state layout, widths and update rule.
    neurons : int
        Number of virtual neurons N (a multiple of ``lanes``).
    lanes : int
        Number of update lanes P: neurons updated per cycle.
    counter_width : int
        Width of the ``step``, ``overflows``, ``truncations`` and ``rejected`` counters.

    Members
    -------
    events : ``In(stream.Signature(event_layout))``
        Operations (see module docstring).
    spikes : ``Out(stream.Signature(spike_layout))``
        ``{group, fire[P], neg[P], end_step}``: neuron ``group*P + i`` fired (``neg``: a -1 spike).
    readback : ``Out(stream.Signature(readback_layout))``
        ``{group, state[P]}`` answers to ``READ``.
    step, overflows, truncations, rejected : ``Out(counter_width)``
        Completed steps since the last clear, and the saturating event counters.
    idle : ``Out(1)``
        No operation in the pipeline, no sweep running and no output beat waiting (the accelerator's
        step barrier waits for it).
    params : ``In(rule.param_layout())``, only with ``runtime_params=True``
        The neuron parameters the model allows to be set at run time (ST-BIF/BIF: ``theta``, ``s_min``,
        ``s_max``), held steady by the user; ``CLEAR`` writes the initial state they give. The model
        still fixes the kind, the widths and the window.
    active_groups : ``In(range(N / P + 1))``, only with ``runtime_params=True``
        A ``STEP`` sweeps groups ``0 .. active_groups - 1`` only (at least one; 0 means all): a program
        that uses fewer neurons than the core has does not pay for the rest. ``CLEAR`` still initialises
        every group. Neurons beyond it must receive no input (they would never be updated).
    """

    def __init__(self, model: NeuronModel, *, neurons: int, lanes: int = 1, counter_width: int = 32,
                 runtime_params: bool = False):
        try:
            self._check(model, neurons, lanes, counter_width)
            if runtime_params:
                self.param_layout(model)          # refuses models without run-time parameters
        except (TypeError, ValueError):
            self._MustUse__silence = True  # a rejected configuration is not an unused design
            raise
        self.model = model
        self.neurons, self.lanes, self.groups = neurons, lanes, neurons // lanes
        self.counter_width = counter_width
        self.runtime_params = bool(runtime_params)
        group_shape = unsigned(index_width(self.groups))
        self.state_layout = data.StructLayout({
            name: signed(w) if is_signed else unsigned(w)
            for name, (w, is_signed) in model.state_fields().items()})
        self.event_layout = data.StructLayout({
            "op": CoreOp, "group": group_shape,
            "current": data.ArrayLayout(signed(model.current_width), lanes)})
        self.spike_layout = data.StructLayout({
            "group": group_shape, "fire": unsigned(lanes), "neg": unsigned(lanes), "end_step": 1})
        self.readback_layout = data.StructLayout({
            "group": group_shape, "state": data.ArrayLayout(self.state_layout, lanes)})
        super().__init__({
            "events": In(stream.Signature(self.event_layout)),
            "spikes": Out(stream.Signature(self.spike_layout)),
            "readback": Out(stream.Signature(self.readback_layout)),
            "step": Out(counter_width),
            "overflows": Out(counter_width),
            "truncations": Out(counter_width),
            "rejected": Out(counter_width),
            "idle": Out(1),
            **({"params": In(self.param_layout(model)), "active_groups": In(range(self.groups + 1))}
               if self.runtime_params else {}),
        })

    @staticmethod
    def param_layout(model: NeuronModel) -> data.StructLayout:
        """Layout of the run-time parameters of a core running ``model`` (refused if it has none)."""
        rule = lane_rule(model)
        if not rule.runtime:
            raise TypeError(f"the {model.kind} neuron takes no run-time parameters; build its core with "
                            "runtime_params=False")
        return rule.param_layout()

    @staticmethod
    def _check(model, neurons, lanes, counter_width):
        if not isinstance(model, NeuronModel):
            raise TypeError(f"model must be a spikeforge.sw.neurons.NeuronModel, not {type(model).__name__}")
        check_int("lanes", lanes, minimum=1, maximum=256)
        check_int("neurons", neurons, minimum=1, maximum=1 << 20)
        if neurons % lanes:
            lo, hi = neurons - neurons % lanes, neurons - neurons % lanes + lanes
            raise ValueError(f"neurons={neurons} is not a multiple of lanes={lanes}: "
                             f"use neurons={lo or hi} or {hi}, or another lane count")
        check_int("counter_width", counter_width, minimum=8, maximum=64)

    @property
    def verilog_name(self) -> str:
        """Default Verilog module name: ``neuron_core_<model kind>``."""
        return f"neuron_core_{self.model.kind}"

    # -- configuration round-trip (used by testbenches running in another process) ------------
    def config(self) -> dict:
        return {"model": self.model.to_dict(), "neurons": self.neurons, "lanes": self.lanes,
                "counter_width": self.counter_width, "runtime_params": self.runtime_params}

    @classmethod
    def from_config(cls, config: dict) -> "NeuronCore":
        return cls(model_from_dict(config["model"]), neurons=config["neurons"], lanes=config["lanes"],
                   counter_width=config.get("counter_width", 32),
                   runtime_params=config.get("runtime_params", False))

    # -- RTL ------------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        model, P, G = self.model, self.lanes, self.groups
        rule = lane_rule(model, self.params if self.runtime_params else None)
        word = data.ArrayLayout(self.state_layout, P)
        init_word = word.const([dict(model.initial_state())] * P)     # CLEAR writes rule.initial()
        m.submodules.state = mem = memory.Memory(shape=word, depth=G, init=[init_word] * G)
        rd = mem.read_port()
        wr = mem.write_port()

        # The pipeline advances unless an output register holds a beat its consumer refuses.
        adv = Signal()
        m.d.comb += adv.eq(~(self.spikes.valid & ~self.spikes.ready) &
                           ~(self.readback.valid & ~self.readback.ready))

        # ---- S0: operation source (events stream or the sweep sequencer) + block-RAM read ----
        s0_valid, s0_op = Signal(), Signal(_Op)
        s0_group = Signal(range(G))
        s0_current = Signal(self.event_layout.members["current"])
        seq_active, seq_init = Signal(), Signal()
        seq_group = Signal(range(G + 1))
        sweep_end = Signal(range(G + 1))          # the group after the last one this sweep updates
        if self.runtime_params:
            active = self.active_groups
            m.d.comb += sweep_end.eq(Mux(seq_init | (active == 0) | (active > G), G, active))
        else:
            m.d.comb += sweep_end.eq(G)
        ev = self.events.payload
        with m.If(seq_active):
            m.d.comb += [s0_valid.eq(1), s0_group.eq(seq_group)]
            with m.If(seq_group == sweep_end):
                m.d.comb += s0_op.eq(Mux(seq_init, _Op.END_CLEAR, _Op.END_STEP))
                with m.If(adv):
                    m.d.sync += seq_active.eq(0)
            with m.Else():
                m.d.comb += s0_op.eq(Mux(seq_init, _Op.INIT, _Op.UPDATE))
                with m.If(adv):
                    m.d.sync += seq_group.eq(seq_group + 1)
        with m.Else():
            m.d.comb += self.events.ready.eq(adv)
            with m.If(self.events.valid):
                with m.Switch(ev.op):
                    with m.Case(CoreOp.ACCUMULATE, CoreOp.READ):
                        in_range = ev.group < G
                        m.d.comb += [s0_valid.eq(in_range), s0_group.eq(ev.group), s0_current.eq(ev.current),
                                     s0_op.eq(Mux(ev.op == CoreOp.READ, _Op.READ, _Op.ACC))]
                        with m.If(adv & ~in_range):
                            m.d.sync += self.rejected.eq(saturating_increment(self.rejected, 1))
                    with m.Case(CoreOp.STEP, CoreOp.CLEAR):
                        is_clear = ev.op == CoreOp.CLEAR
                        m.d.comb += [s0_valid.eq(1), s0_group.eq(0),
                                     s0_op.eq(Mux(is_clear, _Op.INIT, _Op.UPDATE))]
                        with m.If(adv):
                            m.d.sync += [seq_active.eq(1), seq_init.eq(is_clear), seq_group.eq(1)]
        m.d.comb += [rd.addr.eq(s0_group), rd.en.eq(adv)]

        # ---- S1: block-RAM read in flight ----
        s1_valid, s1_op = Signal(), Signal(_Op)
        s1_group = Signal(range(G))
        s1_current = Signal.like(s0_current)
        # ---- S2: compute and write back ----
        s2_valid, s2_op = Signal(), Signal(_Op)
        s2_group = Signal(range(G))
        s2_current = Signal.like(s0_current)
        s2_rdata = Signal(word)
        with m.If(adv):
            m.d.sync += [s1_valid.eq(s0_valid), s1_op.eq(s0_op), s1_group.eq(s0_group), s1_current.eq(s0_current),
                         s2_valid.eq(s1_valid), s2_op.eq(s1_op), s2_group.eq(s1_group), s2_current.eq(s1_current),
                         s2_rdata.eq(rd.data)]

        # Forwarding: the writes of the previous two advancing cycles are not yet in s2_rdata. Which
        # one (if any) holds the newest copy of s2's group is decided a cycle early, in S1, so the
        # group comparators stay off the read-modify-write path.
        f1_data, f2_data = Signal(word, name="fwd1_data"), Signal(word, name="fwd2_data")
        f1_valid, f1_group = Signal(name="fwd1_valid"), Signal(range(G), name="fwd1_group")
        s2_hit1, s2_hit2 = Signal(), Signal()
        old = Signal(word)
        m.d.comb += old.eq(Mux(s2_hit1, f1_data, Mux(s2_hit2, f2_data, s2_rdata)))

        phase = Signal(range(model.period)) if model.period else Signal(1)
        is_acc, is_update, is_init = s2_op == _Op.ACC, s2_op == _Op.UPDATE, s2_op == _Op.INIT
        init = rule.initial()

        # S2 writes ACCUMULATE and INIT results; the update rule's first half is registered into S3,
        # which writes UPDATE results one cycle later. The two never collide and S3's write is
        # never needed by the operation in S2: during a sweep S2 holds the next group's UPDATE (or
        # the END marker), and the END marker separates the last UPDATE from any later operation.
        s2_new = Signal(word)
        acc_ovf = Signal(P)
        upd_a = []
        for i in range(P):
            acc_state, acc_ovf_i = rule.accumulate(m, old[i], s2_current[i], name=f"lane{i}")
            for f in model.state_fields():
                m.d.comb += getattr(s2_new[i], f).eq(Mux(is_init, init[f], acc_state[f]))
            m.d.comb += acc_ovf[i].eq(is_acc & acc_ovf_i)
            upd_a.append(rule.update_a(m, old[i], phase, name=f"lane{i}"))

        # ---- S3: second half of the update rule, UPDATE write-back ----
        s3_valid, s3_op = Signal(), Signal(_Op)
        s3_group = Signal(range(G))
        s3_old = Signal(word)
        s3_acc_ovf = Signal(P)
        s3_a = [{k: Signal(Value.cast(v).shape(), name=f"lane{i}_a_{k}") for k, v in a.items()}
                for i, a in enumerate(upd_a)]
        with m.If(adv):
            m.d.sync += [s3_valid.eq(s2_valid), s3_op.eq(s2_op), s3_group.eq(s2_group), s3_old.eq(old),
                         s3_acc_ovf.eq(acc_ovf)]
            m.d.sync += [s3_a[i][k].eq(v) for i, a in enumerate(upd_a) for k, v in a.items()]
        s3_new = Signal(word)
        fire, neg, ovf, trunc = (Signal(P, name=n) for n in ("fire", "neg", "ovf", "trunc"))
        s3_update = s3_op == _Op.UPDATE
        for i in range(P):
            upd = rule.update_b(m, s3_a[i], name=f"lane{i}")
            for f in model.state_fields():
                m.d.comb += getattr(s3_new[i], f).eq(upd.state[f])
            m.d.comb += [fire[i].eq(s3_update & upd.fire), neg[i].eq(s3_update & upd.neg),
                         ovf[i].eq(Mux(s3_update, upd.overflow, s3_acc_ovf[i])),
                         trunc[i].eq(s3_update & upd.truncated)]

        # The one write of this cycle (S3's UPDATE or S2's ACCUMULATE/INIT), also kept for forwarding.
        w_en, w_group, w_data = Signal(), Signal(range(G)), Signal(word)
        s3_writes = s3_valid & s3_update
        m.d.comb += [w_en.eq(adv & (s3_writes | (s2_valid & (is_acc | is_init)))),
                     w_group.eq(Mux(s3_writes, s3_group, s2_group)),
                     w_data.eq(Mux(s3_writes, s3_new, s2_new)),
                     wr.en.eq(w_en), wr.addr.eq(w_group), wr.data.eq(w_data)]
        with m.If(adv):
            m.d.sync += [f1_valid.eq(w_en), f1_group.eq(w_group), f1_data.eq(w_data), f2_data.eq(f1_data),
                         s2_hit1.eq(w_en & (w_group == s1_group)),
                         s2_hit2.eq(f1_valid & (f1_group == s1_group))]

        # Step and phase advance when END_STEP is in S2, before the next sweep's UPDATEs reach it.
        with m.If(adv & s2_valid):
            with m.If(s2_op == _Op.END_STEP):
                m.d.sync += self.step.eq(saturating_increment(self.step, 1))
                if model.period:
                    m.d.sync += phase.eq(Mux(phase == model.period - 1, 0, phase + 1))
            with m.If(s2_op == _Op.END_CLEAR):
                m.d.sync += [self.step.eq(0), phase.eq(0)]

        # ---- S4: output registers ----
        end_step = s3_op == _Op.END_STEP
        with m.If(adv):
            m.d.sync += [
                self.spikes.valid.eq(s3_valid & ((s3_update & fire.any()) | end_step)),
                self.spikes.payload.group.eq(s3_group),
                self.spikes.payload.fire.eq(fire),
                self.spikes.payload.neg.eq(neg),
                self.spikes.payload.end_step.eq(end_step),
                self.readback.valid.eq(s3_valid & (s3_op == _Op.READ)),
                self.readback.payload.group.eq(s3_group),
                self.readback.payload.state.eq(s3_old),
            ]
        m.d.comb += self.idle.eq(~(seq_active | s1_valid | s2_valid | s3_valid | self.spikes.valid |
                                   self.readback.valid | self.events.valid))
        # Event counters lag one cycle: the flags are registered first so the popcount and the
        # wide saturating addition stay off the compute path. Each registered flag is counted once.
        ovf_seen, trunc_seen = Signal(P), Signal(P)
        m.d.sync += [ovf_seen.eq(Mux(adv & s3_valid, ovf, 0)), trunc_seen.eq(Mux(adv & s3_valid, trunc, 0)),
                     self.overflows.eq(saturating_increment(self.overflows, popcount(ovf_seen))),
                     self.truncations.eq(saturating_increment(self.truncations, popcount(trunc_seen)))]
        return m
