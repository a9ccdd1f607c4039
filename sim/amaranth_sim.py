"""Run a bench coroutine on Amaranth's Python simulator (quick checks, no C++ build)."""

from __future__ import annotations

from amaranth.sim import Simulator

from .bench import AmaranthBench

__all__ = ["run_amaranth"]


def run_amaranth(component, bench_fn, *, vcd: str | None = None):
    """Simulate ``component`` with a 100 MHz clock and run ``await bench_fn(bench)``; return its result."""
    sim = Simulator(component)
    sim.add_clock(1e-8)
    result = {}

    async def testbench(ctx):
        result["value"] = await bench_fn(AmaranthBench(ctx, component))

    sim.add_testbench(testbench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return result["value"]
