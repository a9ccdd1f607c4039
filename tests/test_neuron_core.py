"""Neuron-core RTL against the bit-exact model, event by event.

* Verilator (cocotb): every neuron model in three parameter sets; per model more than 10,000 random
  input events in total; random idle cycles on the input and backpressure on both outputs; malformed
  events where the group field has spare codes.
* Amaranth simulator: quick checks of the same replay code, plus protocol corner cases.
"""

import numpy as np
import pytest

from spikeforge.hw.neuron_core import CoreOp, NeuronCore
from spikeforge.sim.amaranth_sim import run_amaranth
from spikeforge.sim.bench import StreamSink, StreamSource, run_until
from spikeforge.sim.core_replay import core_golden
from spikeforge.sim.coverify import random_core_trace, verify_core
from spikeforge.sw import Bif, IntegrateFire, PhaseNeuron, StBif

# (id, model, neurons, lanes, steps, events)
CONFIGS = [
    ("stbif-s16-p4", StBif.signed(16, 7, current_width=6), 60, 4, 80, 4000),
    ("stbif-u8-p8", StBif.unsigned(8, 13, current_width=8, v_width=10), 40, 8, 60, 3500),
    ("stbif-s32-p1", StBif.signed(32, 3, current_width=4, v_width=7), 24, 1, 70, 3000),
    ("bif-u16-w8-p4", Bif(5, 0, 15, window=8, current_width=6), 60, 4, 80, 4000),
    ("bif-s8-w5-p2", Bif(9, -4, 3, window=5, current_width=8), 34, 2, 60, 3500),
    ("bif-u4-w3-p8", Bif(2, 0, 3, window=3, current_width=4, v_width=6), 24, 8, 60, 3000),
    ("if-sub-p4", IntegrateFire(9, current_width=6), 60, 4, 80, 4000),
    ("if-zero-p3", IntegrateFire(40, reset="zero", current_width=8, v_width=9), 45, 3, 60, 3500),
    ("if-sub-p1", IntegrateFire(1, current_width=3, v_width=4), 20, 1, 60, 3000),
    ("phase-T8-B1.4-bi", PhaseNeuron(8, 1.4), 60, 4, 96, 4000),
    ("phase-T4-B2-uni", PhaseNeuron(4, 2.0, bipolar=False, frac_bits=6, b_frac_bits=4), 30, 2, 80, 3500),
    ("phase-T16-B1.15-bi", PhaseNeuron(16, 1.15, frac_bits=12, b_frac_bits=14), 36, 4, 96, 3000),
]


def _malformed_possible(core):
    return core.groups < 1 << max(1, (core.groups - 1).bit_length())


@pytest.mark.verilator
@pytest.mark.parametrize("name, model, neurons, lanes, steps, events", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_core_rtl_equals_bit_exact_model_on_verilator(name, model, neurons, lanes, steps, events):
    core = NeuronCore(model, neurons=neurons, lanes=lanes)
    goldens = [random_core_trace(core, steps=steps, events=events, seed=11),
               random_core_trace(core, steps=steps // 2, events=events // 10, seed=12)]
    malformed = 7 if _malformed_possible(core) else 0
    stalled = verify_core(core, goldens, simulator="verilator", idle=0.3, backpressure=0.4, seed=5,
                          malformed=malformed)
    free = verify_core(core, goldens[1:], simulator="verilator")  # full rate, no stalls
    for check in stalled + free:
        assert check.diff.equal, f"{name}: RTL differs from the bit-exact model:\n{check.diff}"
    # the stimulus really exercised the model
    g = goldens[0]
    assert len(g.spikes) > 50 and g.counters["overflows"] > 0
    if isinstance(model, Bif):
        assert g.counters["truncations"] > 0
    # ST-BIF/BIF take back over-firing with -1 spikes (unsigned bounds too); phase only if bipolar
    if isinstance(model, StBif) or (isinstance(model, PhaseNeuron) and model.bipolar):
        assert (g.spikes[:, 2] < 0).any()


def test_verilator_suite_has_10k_events_per_model():
    per_model = {}
    for _, model, _, _, _, events in CONFIGS:
        per_model[model.kind] = per_model.get(model.kind, 0) + events + events // 10
    assert all(n >= 10_000 for n in per_model.values()), per_model
    assert all(sum(1 for c in CONFIGS if c[1].kind == k) >= 3 for k in per_model)


@pytest.mark.parametrize("model", [StBif.signed(8, 5, current_width=6), Bif(4, 0, 7, window=4, current_width=6),
                                   IntegrateFire(6, current_width=6), PhaseNeuron(3, 1.4, frac_bits=6)],
                         ids=lambda m: m.kind)
def test_core_on_amaranth_simulator_quick(model):
    core = NeuronCore(model, neurons=12, lanes=4)
    golden = random_core_trace(core, steps=24, events=300, seed=3)
    (check,) = verify_core(core, [golden], simulator="amaranth", idle=0.3, backpressure=0.3, malformed=3)
    assert check.diff.equal, str(check.diff)


def test_back_to_back_accumulates_to_one_group_are_forwarded():
    """Every beat hits the same group: each read-modify-write depends on the previous two."""
    model = StBif.signed(16, 5, current_width=6)
    core = NeuronCore(model, neurons=8, lanes=4)
    rng = np.random.default_rng(0)
    inputs = np.array([(s, int(rng.integers(0, 4)), int(rng.integers(-20, 21))) for s in range(6) for _ in range(12)])
    golden = core_golden(model, neurons=8, lanes=4, inputs=inputs, steps=10)
    (check,) = verify_core(core, [golden], simulator="amaranth")
    assert check.diff.equal, str(check.diff)
    assert check.cycles <= check.beats + 10 * (core.groups + 4) + 20  # one beat per cycle at full rate


def test_clear_restarts_from_initial_state_and_step_count():
    model = StBif.unsigned(8, 4, current_width=6)
    core = NeuronCore(model, neurons=4, lanes=2)

    async def bench_fn(bench):
        src = StreamSource(bench, "events", core.event_layout)
        spikes = StreamSink(bench, "spikes", core.spike_layout)
        rb = StreamSink(bench, "readback", core.readback_layout)
        for beat in ({"op": CoreOp.CLEAR}, {"op": CoreOp.ACCUMULATE, "group": 1, "current": [30, -9]},
                     {"op": CoreOp.STEP}, {"op": CoreOp.STEP}, {"op": CoreOp.CLEAR},
                     {"op": CoreOp.READ, "group": 0}, {"op": CoreOp.READ, "group": 1}):
            src.put(beat)
        await run_until(bench, [src, spikes, rb], lambda: len(rb.received) == 2, max_cycles=200)
        return spikes.received, rb.received, bench.get("step")

    spk, rb, step = run_amaranth(core, bench_fn)
    fired = [(b["group"], b["fire"]) for b in spk if not b["end_step"]]
    assert fired == [(1, 0b01), (1, 0b01)]  # neuron 2 (group 1, lane 0) fired in both steps
    assert [b["end_step"] for b in spk].count(1) == 2
    init = {"v": 2, "s": 0}
    assert [b["state"] for b in rb] == [[init, init], [init, init]]
    assert step == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(neurons=10, lanes=4), r"neurons=10 is not a multiple of lanes=4: use neurons=8 or 12"),
    (dict(neurons=8, lanes=0), r"lanes=0 is too small"),
    (dict(neurons=0, lanes=1), r"neurons=0 is too small"),
])
def test_core_parameter_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeuronCore(StBif.signed(8, 5), **kwargs)


def test_core_rejects_non_model():
    with pytest.raises(TypeError, match="model must be a spikeforge.sw.neurons.NeuronModel"):
        NeuronCore("stbif", neurons=4, lanes=1)


def test_golden_trace_rejects_out_of_range_events():
    with pytest.raises(ValueError, match=r"neuron index out of range \[0, 4\)"):
        core_golden(StBif.signed(8, 5), neurons=4, lanes=1, inputs=[(0, 4, 1)], steps=2)
