"""One testbench, two simulators: a cycle-level bench interface with cocotb and Amaranth backends,
and stream drivers that insert random idle cycles (sources) and backpressure (sinks).

Testbench code is written once against :class:`Bench`::

    await bench.cycle()      # advance to the next clock cycle; inputs may be driven now
    bench.set(port, bits)    # drive an input port (raw bits)
    await bench.settle()     # combinational outputs are now valid
    bench.get(port)          # sample a port (raw bits, unsigned)

Ports are named as in the generated Verilog: signature paths joined with ``__``
(``events__valid``, ``spikes__payload``). A transfer happens on the clock edge that ends a cycle in
which ``valid`` and ``ready`` were both seen high after ``settle``.
"""

from __future__ import annotations

import abc
import random
from collections import deque

from amaranth.hdl import Value

from .payload import pack, unpack

__all__ = ["Bench", "AmaranthBench", "CocotbBench", "StreamSource", "StreamSink", "clock", "run_until",
           "SimulationTimeout", "check_stall_probability"]


class SimulationTimeout(RuntimeError):
    """The design did not reach the expected end state within the cycle budget."""


def check_stall_probability(name: str, p: float) -> float:
    """``p`` as a stall probability in [0, 1); 1 (never offer / never accept a beat) would never finish."""
    if not isinstance(p, (int, float)) or p != p or not 0.0 <= p < 1.0:
        raise ValueError(f"{name}={p!r} is out of range: a stall probability must be in [0, 1) "
                         f"({name}=1 would stall the stream forever); use e.g. {name}=0.25")
    return float(p)


class Bench(abc.ABC):
    """Interface of a cycle-level bench (see module docstring)."""

    @abc.abstractmethod
    async def cycle(self):
        """Advance to the next clock cycle."""

    @abc.abstractmethod
    async def settle(self):
        """Wait until combinational outputs reflect the inputs driven this cycle."""

    @abc.abstractmethod
    def set(self, port: str, value: int):
        """Drive ``port`` with raw bits."""

    @abc.abstractmethod
    def get(self, port: str) -> int:
        """Sample ``port`` as an unsigned int."""

    async def wait_high(self, port: str, max_cycles: int) -> int:
        """From a settled cycle in which the 1-bit output ``port`` is low, let cycles pass without driving
        anything new (inputs keep their values) until a cycle in which it is high has settled; returns
        the cycles passed. Simulators that can wait for a value change override this, so a testbench
        whose streams are all quiet leaves the per-cycle loop (:class:`CocotbBench`)."""
        for n in range(1, max_cycles + 1):
            await self.cycle()
            await self.settle()
            if self.get(port):
                return n
        raise SimulationTimeout(f"{port} stayed low for {max_cycles} cycles")


class AmaranthBench(Bench):
    """Bench on Amaranth's Python simulator, for a testbench added with ``sim.add_testbench``."""

    def __init__(self, ctx, component):
        self.ctx = ctx
        self.ports = {"__".join(map(str, path)): Value.cast(value)
                      for path, _flow, value in component.signature.flatten(component)}

    async def cycle(self):
        await self.ctx.tick()

    async def settle(self):
        pass  # testbench reads in the Amaranth simulator always see settled values

    def set(self, port, value):
        self.ctx.set(self.ports[port], value)

    def get(self, port):
        sig = self.ports[port]
        return self.ctx.get(sig) & ((1 << len(sig)) - 1)


class CocotbBench(Bench):
    """Bench on a cocotb DUT (Verilator): drives after the falling edge, samples in ReadOnly."""

    def __init__(self, dut, clock_ns: float = 10):
        import cocotb.triggers as triggers
        from cocotb.clock import Clock
        self.dut = dut
        self.clock_ns = clock_ns
        self._falling = triggers.FallingEdge(dut.clk)
        self._readonly = triggers.ReadOnly()
        self._handles = {}
        Clock(dut.clk, clock_ns, unit="ns").start()

    def _h(self, port):
        h = self._handles.get(port)
        if h is None:
            h = self._handles[port] = getattr(self.dut, port)
        return h

    async def reset(self, cycles: int = 3):
        """Hold ``rst`` for ``cycles`` clock cycles (synchronous reset of every domain)."""
        await self._falling
        self.dut.rst.value = 1
        for _ in range(cycles):
            await self._falling
        self.dut.rst.value = 0
        await self._falling                # the design registers rst (verilator.SimulationTop)

    async def cycle(self):
        await self._falling

    async def settle(self):
        await self._readonly

    def set(self, port, value):
        self._h(port).value = value

    async def wait_high(self, port, max_cycles):
        import cocotb.triggers as triggers
        from cocotb.utils import get_sim_time
        h = self._h(port)
        start = get_sim_time("ns")
        rise = triggers.RisingEdge(h)
        timeout = triggers.Timer(max_cycles * self.clock_ns, unit="ns")
        fired = await triggers.First(rise, timeout)
        if fired is timeout:
            raise SimulationTimeout(f"{port} stayed low for {max_cycles} cycles")
        await self._falling               # the cycle in which it is high: drive, then settle
        await self._readonly
        return max(1, round((get_sim_time("ns") - start) / self.clock_ns))

    def get(self, port):
        value = self._h(port).value
        # 1-bit ports read as Logic, wider ones as LogicArray (cocotb 2.x)
        return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


class StreamSource:
    """Drives an ``In(stream.Signature(layout))`` port from a queue of payloads.

    Each cycle it offers the next payload with probability ``1 - idle``; once offered, ``valid`` and
    the payload stay put until the transfer (stream rule), so an idle cycle never drops data.
    """

    def __init__(self, bench: Bench, name: str, layout, *, idle: float = 0.0, rng: random.Random | None = None):
        self.bench, self.name, self.layout = bench, name, layout
        self.idle, self.rng = check_stall_probability("idle", idle), rng or random.Random(0)
        self.queue: deque = deque()
        self._offered = False
        self.sent = 0

    def put(self, payload):
        self.queue.append(pack(self.layout, payload))

    @property
    def done(self) -> bool:
        return not self.queue

    def drive(self):
        if not self._offered and self.queue and self.rng.random() >= self.idle:
            self._offered = True
        self.bench.set(f"{self.name}__valid", int(self._offered))
        if self._offered:
            self.bench.set(f"{self.name}__payload", self.queue[0])

    def observe(self):
        if self._offered and self.bench.get(f"{self.name}__ready"):
            self.queue.popleft()
            self._offered = False
            self.sent += 1


class StreamSink:
    """Receives from an ``Out(stream.Signature(layout))`` port, refusing with probability
    ``backpressure`` each cycle; ``received`` holds the unpacked payloads in arrival order."""

    def __init__(self, bench: Bench, name: str, layout, *, backpressure: float = 0.0,
                 rng: random.Random | None = None, on_receive=None):
        self.bench, self.name, self.layout = bench, name, layout
        self.backpressure = check_stall_probability("backpressure", backpressure)
        self.rng = rng or random.Random(1)
        self.received: list = []
        self.on_receive = on_receive
        self._ready = 0

    def drive(self):
        self._ready = int(self.rng.random() >= self.backpressure)
        self.bench.set(f"{self.name}__ready", self._ready)

    def observe(self):
        if self._ready and self.bench.get(f"{self.name}__valid"):
            beat = unpack(self.layout, self.bench.get(f"{self.name}__payload"))
            self.received.append(beat)
            if self.on_receive:
                self.on_receive(beat)


async def clock(bench: Bench, drivers) -> None:
    """One cycle: every driver drives, the design settles, every driver observes."""
    await bench.cycle()
    for d in drivers:
        d.drive()
    await bench.settle()
    for d in drivers:
        d.observe()


async def run_until(bench: Bench, drivers, done, *, max_cycles: int, what: str = "the run") -> int:
    """Clock the bench, letting every driver drive and observe each cycle, until ``done()``.

    Returns the number of cycles taken; raises :class:`SimulationTimeout` after ``max_cycles``.
    """
    for cycle in range(max_cycles):
        await clock(bench, drivers)
        if done():
            return cycle + 1
    raise SimulationTimeout(f"{what} did not finish within {max_cycles} cycles")
