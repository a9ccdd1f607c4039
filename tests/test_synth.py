"""The open synthesis flow runs and its report parses (numbers are recorded in docs/results)."""

import pytest

from spikeforge.boards.synth import synthesize_ecp5
from spikeforge.hw.neuron_core import NeuronCore
from spikeforge.sw import StBif


@pytest.mark.synth
def test_ecp5_report_of_a_small_core(tmp_path):
    core = NeuronCore(StBif.signed(16, 7, current_width=6), neurons=64, lanes=4)
    r = synthesize_ecp5(core, "core_small", workdir=tmp_path)
    assert r.luts > 50 and r.ffs > 50, r
    assert r.pnr_comb >= r.luts // 2, r        # the placed harness still holds the core
    assert r.fmax_mhz is not None and r.fmax_mhz > 10
    assert (tmp_path / "nextpnr.log").exists()


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="device='12k' is not an ECP5 size"):
        synthesize_ecp5(None, "x", device="12k")  # checked before the design is touched


def test_harness_drives_every_input_from_the_pin():
    """Every input port of the wrapped block hangs off the shift chain (else synthesis would see
    constants and optimise the block away, and Fmax would be meaningless)."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from amaranth.sim import Simulator

    from spikeforge.boards.synth import SynthHarness

    class Xor(wiring.Component):
        a: In(4)
        b: In(1)
        y: Out(4)

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.y.eq(self.a ^ self.b)
            return m

    inner = Xor()
    harness = SynthHarness(inner)
    seen = {}

    async def bench(ctx):
        ctx.set(harness.sin, 1)
        await ctx.tick().repeat(8)
        seen.update(a=ctx.get(inner.a), b=ctx.get(inner.b))

    sim = Simulator(harness)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == {"a": 0b1111, "b": 1}
    assert harness.harness_ffs == 4 + 1 + 4 + 1
