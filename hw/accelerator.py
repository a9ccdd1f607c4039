"""The generated accelerator: neuron, matmul and unit tiles (:mod:`.neuron_tile`, :mod:`.matmul_tile`,
:mod:`.unit_tile`), their routing tables, the event bus, the step barrier and the host interface, for one
:class:`~spikeforge.sw.compile.HardwareSpec`.

The host talks to it through two ``lib.stream`` ports (layouts in :mod:`spikeforge.sw.accelerator`):

* ``commands``: ``WRITE tile mem addr data`` (load the program: registers, synapses, bias, routing
  tables), ``EVENT tile addr=axon data=value`` (an input event, e.g. an analog count at step 0),
  ``CLEAR`` (every tile to its initial state plus bias), ``RUN data=N mem=1`` (N steps, or until a step
  after the first has no spike and no recurrent layer has windows left, when ``mem`` bit 0 is set), ``READ tile addr=group`` (a lane group's
  potentials), ``COUNTERS tile`` (a tile's error counters; ``tile = tiles`` for the network's),
  ``LOG data=1|0`` (send every spike to the host as it is emitted);
* ``responses``: ``SPIKE tile addr=neuron step data=±1`` (logging), ``STATE tile addr=neuron data=v``,
  ``COUNTER tile addr=index data``, ``DONE step=steps since CLEAR data=spikes of the run`` (after every
  ``SPIKE`` of the run).

The step barrier: a step starts when the network is quiet (every tile, routing table and bus FIFO
idle), with ``STEP`` given to every tile in the same cycle; the spikes its sweep emits are routed
to and accumulated by their consumers before the next step starts (each spiking layer is one
pipeline stage: ``run_snn(..., timing="layer")`` is the golden model). Commands are taken one at a
time; ``RUN`` and ``CLEAR`` complete before the next command.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .blocks import register_block
from ..sw.accelerator import NETWORK_COUNTERS, TILE_COUNTERS, AcceleratorFormat, CmdOp, RespKind
from .arith import popcount, saturating_increment
from .events import EventOp, event_layout
from .fanout import FanOut
from .matmul_tile import MatmulTile
from .neuron_tile import NeuronTile
from .unit_tile import UnitTile
from .router import EventBus
from .stream import SkidBuffer, StreamFIFO, StreamMergeTree

__all__ = ["Accelerator", "command_layout", "response_layout"]


def command_layout(fmt: AcceleratorFormat) -> data.StructLayout:
    """``{op, tile, mem, addr, data}`` of one host command (see the module docstring)."""
    return data.StructLayout({"op": CmdOp.BITS, "tile": fmt.tile_bits, "mem": 3, "addr": fmt.addr_bits,
                              "data": fmt.data_bits})


def response_layout(fmt: AcceleratorFormat) -> data.StructLayout:
    """``{kind, tile, addr, step, data}`` of one response (``data`` signed)."""
    return data.StructLayout({"kind": RespKind.BITS, "tile": fmt.tile_bits, "addr": fmt.addr_bits,
                              "step": fmt.step_bits, "data": signed(fmt.data_bits)})


@register_block("accelerator")
class Accelerator(wiring.Component):
    """The accelerator of ``fmt`` (:class:`~spikeforge.sw.accelerator.AcceleratorFormat`).

    Members
    -------
    commands : ``In(stream.Signature(fmt.command_layout))``
    responses : ``Out(stream.Signature(fmt.response_layout))``
    """

    def __init__(self, fmt: AcceleratorFormat):
        if not isinstance(fmt, AcceleratorFormat):
            self._MustUse__silence = True
            raise TypeError(f"fmt must be an AcceleratorFormat, not {type(fmt).__name__}")
        self.fmt = fmt
        super().__init__({"commands": In(stream.Signature(command_layout(fmt))),
                          "responses": Out(stream.Signature(response_layout(fmt)))})

    @property
    def verilog_name(self) -> str:
        return "spikeforge_accelerator"

    def config(self) -> dict:
        return {"fmt": self.fmt.to_dict()}

    @classmethod
    def from_config(cls, config: dict) -> "Accelerator":
        return cls(AcceleratorFormat.from_dict(config["fmt"]))

    def elaborate(self, platform):
        m = Module()
        fmt = self.fmt
        T, P = fmt.tiles, fmt.tile.lanes
        cw = fmt.counter_width
        tiles, fans, logs, idles_extra, rejected_of = [], [], [], [], []
        for t in range(T):
            kind = fmt.kind_of(t)
            cls = {"neuron": NeuronTile, "matmul": MatmulTile, "unit": UnitTile}[kind]
            tile = cls(fmt.tile_format(kind), fmt.model, counter_width=cw, config_format=fmt.config_format)
            fan = FanOut(tile.event_format, fmt.event_format, neurons=fmt.neurons,
                         route_words=fmt.route_words, max_fanout=fmt.max_fanout, config_format=fmt.config_format,
                         counter_width=cw)
            log = StreamFIFO(response_layout(fmt), 4)
            m.submodules[f"tile{t}"], m.submodules[f"fanout{t}"], m.submodules[f"log{t}"] = tile, fan, log
            tiles.append(tile), fans.append(fan), logs.append(log)
        self._parts = {"tiles": tiles, "fanouts": fans}      # for monitors (no effect on the design)
        m.submodules.bus = bus = EventBus(fmt.event_format, sources=T + 1, destinations=T, depth=fmt.fifo_depth,
                                          counter_width=cw)
        n_resp = 1 + 2 * T                       # controller, readback per tile, log per tile
        m.submodules.responses = merge = StreamMergeTree(response_layout(fmt), n_resp)
        wiring.connect(m, merge.o, wiring.flipped(self.responses))
        ctrl = merge.i[0]

        cmd = self.commands.payload
        step = Signal(fmt.step_bits)
        run_spikes = Signal(cw)
        step_spikes = Signal(cw)
        logging = Signal()
        rejected_cmds = Signal(cw)
        run_cycles = Signal(cw)
        run_events = Signal(cw)

        # ---- tiles: inputs from the controller (priority, only when quiet) or their bus FIFO -------------
        ctrl_valid = Signal(T)
        ctrl_op = Signal(EventOp)
        ctrl_axon = Signal.like(tiles[0].inputs.payload.axon)
        spikes_now = Signal(T)
        for t, (tile, fan, log) in enumerate(zip(tiles, fans, logs)):
            q = bus.o[t]
            # an event whose axon has bits beyond the tile's axon field is malformed for this tile kind:
            # dropped and counted with the tile's rejected events (it must not alias a valid axon)
            narrow = tile.event_format.axon_bits
            too_wide = Signal(name=f"too_wide{t}")
            if narrow < fmt.event_format.axon_bits:
                m.d.comb += too_wide.eq((q.payload.op == EventOp.EVENT) & q.payload.axon[narrow:].any())
            wide_rejected = Signal(cw, name=f"wide_rejected{t}")
            rejected = Signal(cw, name=f"rejected{t}")
            m.d.comb += rejected.eq(saturating_increment(tile.rejected, wide_rejected))
            rejected_of.append(rejected)
            with m.If(ctrl_valid[t]):
                m.d.comb += [tile.inputs.valid.eq(1), tile.inputs.payload.op.eq(ctrl_op),
                             tile.inputs.payload.axon.eq(ctrl_axon)]
                with m.If(tile.inputs.ready):
                    m.d.sync += ctrl_valid[t].eq(0)
            with m.Elif(too_wide):
                m.d.comb += q.ready.eq(1)
                with m.If(q.valid):
                    m.d.sync += wide_rejected.eq(saturating_increment(wide_rejected, 1))
            with m.Else():
                m.d.comb += [tile.inputs.valid.eq(q.valid), tile.inputs.payload.op.eq(q.payload.op),
                             tile.inputs.payload.axon.eq(q.payload.axon), tile.inputs.payload.value.eq(q.payload.value),
                             q.ready.eq(tile.inputs.ready)]
            # tile outputs -> routing table, and (when logging) a copy of every spike to the host
            out = tile.outputs
            is_spike = out.payload.op == EventOp.EVENT
            log_room = ~logging | ~is_spike | log.i.ready
            m.d.comb += [fan.i.payload.op.eq(out.payload.op), fan.i.payload.axon.eq(out.payload.axon),
                         fan.i.payload.value.eq(out.payload.value), fan.i.valid.eq(out.valid & log_room),
                         out.ready.eq(fan.i.ready & log_room),
                         log.i.valid.eq(out.valid & logging & is_spike & fan.i.ready),
                         log.i.payload.kind.eq(RespKind.SPIKE), log.i.payload.tile.eq(t),
                         log.i.payload.addr.eq(out.payload.axon), log.i.payload.step.eq(step),
                         log.i.payload.data.eq(out.payload.value),
                         spikes_now[t].eq(out.valid & out.ready & is_spike)]
            wiring.connect(m, log.o, merge.i[1 + T + t])
            # a skid buffer registers the routed events: the bus arbitration starts from a register, not
            # from the routing table's block-RAM output (measured: that path set Fmax to 55 MHz)
            skid = SkidBuffer(event_layout(fmt.event_format))
            m.submodules[f"skid{t}"] = skid
            wiring.connect(m, fan.o, skid.i)
            wiring.connect(m, skid.o, bus.i[t])
            idles_extra.append(~skid.o.valid)
            # readback -> one STATE response per lane (the potential v)
            # (a skid buffer first: the core's pipeline stalls on its readback's ready, which must come from
            # a register, not from the response merge's arbitration)
            rb_skid = SkidBuffer(tile.readback.payload.shape())
            m.submodules[f"readback_skid{t}"] = rb_skid
            wiring.connect(m, tile.readback, rb_skid.i)
            idles_extra.append(~rb_skid.o.valid)
            rb, rsp = rb_skid.o, merge.i[1 + t]
            lane = Signal(range(max(P, 2)), name=f"rb_lane{t}")
            # the lane's potential goes through its own signal so that every field of the payload is
            # driven by one continuous assignment (a constant field of a partly conditional payload
            # becomes an `always @*` without inputs, which Verilator never evaluates)
            v = Signal(rsp.payload.data.shape(), name=f"rb_v{t}")
            for i in range(P):
                with m.If(lane == i):
                    m.d.comb += v.eq(rb.payload.state[i].v)
            m.d.comb += [rsp.valid.eq(rb.valid), rsp.payload.kind.eq(RespKind.STATE), rsp.payload.tile.eq(t),
                         rsp.payload.addr.eq(rb.payload.group * P + lane), rsp.payload.step.eq(step),
                         rsp.payload.data.eq(v)]
            with m.If(rsp.valid & rsp.ready):
                with m.If(lane == P - 1):
                    m.d.comb += rb.ready.eq(1)
                    m.d.sync += lane.eq(0)
                with m.Else():
                    m.d.sync += lane.eq(lane + 1)
        with m.If(spikes_now.any()):
            m.d.sync += step_spikes.eq(saturating_increment(step_spikes, popcount(spikes_now)))

        # ---- activity: cycles of the run each tile is not idle ---------------------------------------------
        running = Signal()
        busy_of = [Signal(cw, name=f"busy_cycles{t}") for t in range(T)]
        for t, tile in enumerate(tiles):
            with m.If(running & ~tile.idle):
                m.d.sync += busy_of[t].eq(saturating_increment(busy_of[t], 1))

        # ---- quiet: nothing held or offered anywhere in the network (two cycles in a row) ---------------
        idles = [bus.idle, ~ctrl_valid.any()] + [t.idle for t in tiles] + [f.idle for f in fans] + idles_extra
        quiet_now, logs_empty = Signal(), Signal()
        m.d.comb += [quiet_now.eq(Cat(*idles).all()), logs_empty.eq(Cat(*(log.level == 0 for log in logs)).all())]
        quiet_prev = Signal()
        m.d.sync += quiet_prev.eq(quiet_now)
        quiet = quiet_now & quiet_prev
        pending = Cat(*(t.pending for t in tiles if isinstance(t, NeuronTile))).any()   # windows left to run

        # ---- the host's input events enter the bus as its last source -----------------------------------
        host = bus.i[T]
        m.d.comb += [host.payload.op.eq(EventOp.EVENT), host.payload.tile.eq(cmd.tile),
                     host.payload.axon.eq(cmd.addr), host.payload.value.eq(cmd.data)]

        # ---- controller ----------------------------------------------------------------------------------
        steps_left = Signal(fmt.step_bits)
        until_quiet = Signal()
        guard = Signal(2)
        counter_index = Signal(range(max(len(TILE_COUNTERS), len(NETWORK_COUNTERS)) + 1))
        counter_tile = Signal.like(cmd.tile)
        tile_ok = cmd.tile < T
        with m.FSM(name="controller"):
            with m.State("IDLE"):
                with m.If(self.commands.valid):
                    with m.Switch(cmd.op):
                        with m.Case(CmdOp.WRITE):
                            m.d.comb += self.commands.ready.eq(1)
                            with m.If(~tile_ok):
                                m.d.sync += rejected_cmds.eq(saturating_increment(rejected_cmds, 1))
                            for t in range(T):
                                with m.If(cmd.tile == t):
                                    for port in (tiles[t].writes, fans[t].writes):
                                        m.d.comb += [port.valid.eq(1), port.payload.mem.eq(cmd.mem),
                                                     port.payload.addr.eq(cmd.addr), port.payload.data.eq(cmd.data)]
                        with m.Case(CmdOp.EVENT):
                            m.d.comb += [host.valid.eq(1), self.commands.ready.eq(host.ready)]
                        with m.Case(CmdOp.CLEAR):
                            m.d.comb += self.commands.ready.eq(1)
                            m.d.sync += [ctrl_valid.eq((1 << T) - 1), ctrl_op.eq(EventOp.CLEAR), step.eq(0),
                                         guard.eq(3)]
                            m.next = "CLEARING"
                        with m.Case(CmdOp.RUN):
                            m.d.comb += self.commands.ready.eq(1)
                            m.d.sync += [steps_left.eq(cmd.data), until_quiet.eq(cmd.mem[0]), run_spikes.eq(0),
                                         guard.eq(3), run_cycles.eq(0), run_events.eq(0)]
                            m.d.sync += [b.eq(0) for b in busy_of]
                            m.next = "BARRIER"
                        with m.Case(CmdOp.READ):
                            m.d.comb += self.commands.ready.eq(1)
                            with m.If(tile_ok):
                                m.d.sync += [ctrl_valid.eq(Const(1, T) << cmd.tile), ctrl_op.eq(EventOp.READ),
                                             ctrl_axon.eq(cmd.addr)]
                            with m.Else():
                                m.d.sync += rejected_cmds.eq(saturating_increment(rejected_cmds, 1))
                        with m.Case(CmdOp.COUNTERS):
                            m.d.comb += self.commands.ready.eq(1)
                            with m.If(cmd.tile <= T):
                                m.d.sync += [counter_tile.eq(cmd.tile), counter_index.eq(0)]
                                m.next = "COUNTERS"
                            with m.Else():
                                m.d.sync += rejected_cmds.eq(saturating_increment(rejected_cmds, 1))
                        with m.Case(CmdOp.LOG):
                            m.d.comb += self.commands.ready.eq(1)
                            m.d.sync += logging.eq(cmd.data[0])
                        with m.Default():
                            m.d.comb += self.commands.ready.eq(1)
                            m.d.sync += rejected_cmds.eq(saturating_increment(rejected_cmds, 1))
            with m.State("CLEARING"):
                with m.If(guard != 0):
                    m.d.sync += guard.eq(guard - 1)
                with m.Elif(quiet):
                    m.next = "IDLE"
            with m.State("BARRIER"):               # wait for quiet, then start a step (or finish)
                m.d.comb += running.eq(1)
                m.d.sync += [run_cycles.eq(saturating_increment(run_cycles, 1)),
                             run_events.eq(saturating_increment(run_events, bus.moved))]
                with m.If(guard != 0):
                    m.d.sync += guard.eq(guard - 1)
                with m.Elif(quiet):
                    with m.If(steps_left == 0):
                        m.next = "LOGS"
                    with m.Else():
                        m.d.sync += [ctrl_valid.eq((1 << T) - 1), ctrl_op.eq(EventOp.STEP), step_spikes.eq(0),
                                     guard.eq(3)]
                        m.next = "STEPPING"
            with m.State("STEPPING"):              # the step's sweeps and their events drain
                m.d.comb += running.eq(1)
                m.d.sync += [run_cycles.eq(saturating_increment(run_cycles, 1)),
                             run_events.eq(saturating_increment(run_events, bus.moved))]
                with m.If(guard != 0):
                    m.d.sync += guard.eq(guard - 1)
                with m.Elif(quiet):
                    m.d.sync += [step.eq(step + 1), steps_left.eq(steps_left - 1),
                                 run_spikes.eq(saturating_increment(run_spikes, step_spikes))]
                    with m.If(until_quiet & (step != 0) & (step_spikes == 0) & ~pending):
                        m.next = "LOGS"
                    with m.Else():
                        m.next = "BARRIER"
            with m.State("LOGS"):                  # DONE follows every spike log of the run to the host
                with m.If(logs_empty & ~merge.busy):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [ctrl.valid.eq(1), ctrl.payload.kind.eq(RespKind.DONE), ctrl.payload.step.eq(step),
                             ctrl.payload.data.eq(run_spikes)]
                with m.If(ctrl.ready):
                    m.next = "IDLE"
            with m.State("COUNTERS"):
                m.d.comb += [ctrl.valid.eq(1), ctrl.payload.kind.eq(RespKind.COUNTER),
                             ctrl.payload.tile.eq(counter_tile), ctrl.payload.addr.eq(counter_index),
                             ctrl.payload.step.eq(step)]
                for t in range(T):
                    values = [rejected_of[t], tiles[t].product_overflows, tiles[t].overflows, fans[t].rejected,
                              busy_of[t]]
                    with m.If(counter_tile == t):
                        for i, v in enumerate(values):
                            with m.If(counter_index == i):
                                m.d.comb += ctrl.payload.data.eq(v)
                with m.If(counter_tile == T):
                    for i, v in enumerate([bus.rejected, rejected_cmds, run_cycles, run_events]):
                        with m.If(counter_index == i):
                            m.d.comb += ctrl.payload.data.eq(v)
                n_last = Mux(counter_tile == T, len(NETWORK_COUNTERS) - 1, len(TILE_COUNTERS) - 1)
                with m.If(ctrl.ready):
                    m.d.sync += counter_index.eq(counter_index + 1)
                    with m.If(counter_index == n_last):
                        m.next = "IDLE"
        return m
