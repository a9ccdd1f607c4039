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
    assert r.fmax_mhz is not None and r.fmax_mhz > 10
    assert (tmp_path / "nextpnr.log").exists()


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="device='12k' is not an ECP5 size"):
        synthesize_ecp5(None, "x", device="12k")  # checked before the design is touched
