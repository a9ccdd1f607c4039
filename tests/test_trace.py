import numpy as np
import pytest

from spikeforge.sim.trace import SpikeTrace, diff_traces


def _trace(spikes, v=(0, 1, 2)):
    return SpikeTrace({"block": "t", "steps": 5}, [(0, 1, 3)], spikes, {"v": np.array(v)}, {"overflows": 2})


def test_save_load_roundtrip(tmp_path):
    t = _trace([(2, 1, 1), (0, 2, -1)])
    t2 = SpikeTrace.load(t.save(tmp_path / "t.npz"))
    assert t2.meta == t.meta
    assert t2.spikes.tolist() == [[0, 2, -1], [2, 1, 1]]  # canonical order: step, then index
    assert diff_traces(t, t2).equal


def test_diff_reports_first_mismatch_by_step():
    exp = _trace([(0, 2, -1), (3, 1, 1), (4, 0, 1)])
    obs = _trace([(0, 2, -1), (3, 1, -1), (4, 0, 1)], v=(0, 5, 2))
    d = diff_traces(exp, obs)
    assert not d.equal
    assert d.spike_mismatches == 2
    assert "step 3, neuron 1, sign +" in d.first_spike_mismatch and "missing" in d.first_spike_mismatch
    assert d.state_mismatches == {"v": 1}
    assert "neuron 1 field v: expected 1, observed 5" in str(d)


def test_diff_reports_counters():
    exp, obs = _trace([]), _trace([])
    obs.counters["overflows"] = 3
    assert "counter overflows: expected 2, observed 3" in str(diff_traces(exp, obs))


def test_load_rejects_other_files(tmp_path):
    np.savez(tmp_path / "x.npz", meta=np.array('{"format": "other"}'))
    with pytest.raises(ValueError, match="not a spikeforge trace"):
        SpikeTrace.load(tmp_path / "x.npz")
