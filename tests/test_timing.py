"""The hardware's timing is a parameter of the reference SNN; the outputs equal the integer QANN for every
timing (docs/conversion.md, "Timing"), only the steps to quiescence differ."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from spikeforge import api
from spikeforge.sw.models.digits import digits_split
from spikeforge.sw.snn import TIMINGS, compare_runs, run_qann, run_snn


@pytest.fixture(scope="module")
def x():
    return digits_split().x_test[:12]


@pytest.mark.parametrize("model, flow", [("vit_qann_L8", "spikezip"), ("qcnn", "crnn"), ("qrnn_rows", "crnn")])
def test_every_timing_gives_the_integer_qann(model, flow, x):
    net = api.convert(model, flow)
    q = run_qann(net, x)
    steps = {}
    for timing in TIMINGS:
        s = run_snn(net, x, max_steps=net.meta.get("sequence_steps", 0) + 400, timing=timing)
        assert bool(s.quiescent.all()) and s.overflows == 0, timing
        bad, first = compare_runs(net, q, s)
        assert bad == 0, f"{timing}: {first}"
        steps[timing] = float(s.steps.double().mean())
    assert steps["zero"] <= steps["layer"] <= steps["node"]      # delays add steps, never remove them


def test_delayed_timing_really_delays(x):
    """A layer-pipelined network needs at least one more step per spiking layer on the longest path."""
    net = api.convert("vit_qann_L8", "spikezip")
    zero = run_snn(net, x, max_steps=400, timing="zero")
    layer = run_snn(net, x, max_steps=400, timing="layer")
    depth = sum(1 for n in net if n.op == "neuron")
    assert int(layer.steps.min()) > int(zero.steps.min())
    assert int(layer.steps.max()) < int(zero.steps.max()) + depth + 1


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), timing=st.sampled_from(TIMINGS))
def test_property_random_networks_are_exact_at_every_timing(seed, timing):
    from spikeforge.sw.convert.spikezip import SpikezipOptions, convert_spikezip
    from spikeforge.sw.quant import Quantizer
    from torch import nn
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), Quantizer(8, signed=False), nn.Linear(8, 4),
                          Quantizer(8, signed=True), nn.Linear(4, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        for q in (model[2], model[4]):
            q.step.fill_(0.5)
            q.initialised.fill_(True)
    x = torch.randint(-7, 8, (32, 6), generator=g).float() * 0.25
    net = convert_spikezip(model.eval(), x[:1], SpikezipOptions(0.25, (-7, 7), weight_bits=10))
    q, s = run_qann(net, x), run_snn(net, x, max_steps=400, timing=timing)
    assert bool(s.quiescent.all())
    bad, first = compare_runs(net, q, s)
    assert bad == 0, str(first)


def test_unknown_timing_is_refused(x):
    net = api.convert("qcnn", "crnn")
    with pytest.raises(ValueError, match="timing='late' is not a network timing"):
        run_snn(net, x, timing="late")
