"""The main job runs end to end (without synthesis, which tests/test_synth.py covers)."""

import json

import pytest

from spikeforge.demo import DEMO_CORES, run_demo


@pytest.mark.verilator
def test_demo_runs_and_everything_is_bit_exact(tmp_path):
    assert run_demo(tmp_path, synth=False, events=300, images=2)
    summary = json.loads((tmp_path / "summary.json").read_text())
    net = summary["network"]
    assert net["mismatched_images"] == 0 and net["images_with_errors"] == 0 and net["images"] == 2
    assert net["accuracy"]["rtl"] == net["accuracy"]["qann"] == net["accuracy"]["snn"]
    assert net["cycles_per_bound"] >= 1.0
    assert {"layers.png", "results.json", "spikeforge_accelerator.v"} <= {p.name for p in (tmp_path / "network").iterdir()}
    assert set(summary["cores"]) == set(DEMO_CORES)
    for name, core in summary["cores"].items():
        assert core["rtl_equal"], (name, core["diff"])
        assert (tmp_path / name / f"neuron_core_{core['model']['kind']}.v").exists()
        assert (tmp_path / name / "raster.png").exists()
        if core["float"]["exact_method"]:
            assert core["float"]["differing"] == 0 or core["counters"]["overflows"] > 0
    assert (tmp_path / "stbif" / "waves.vcd").stat().st_size > 1000
