"""spikedattention flow: conversion of the float BatchNorm ViT, its three arithmetics (ideal values,
float spiking rules, bit-exact), scheduling and delays, IR round trip, errors, golden traces on RTL."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spikeforge.sw.convert.frontend import UnsupportedModelError
from spikeforge.sw.convert.spikedattention import SpikedAttentionOptions, bias_divisor, convert_spikedattention
from spikeforge.sw.ir import IRError, Network
from spikeforge.sw.models.digits import INPUT_SCALE, digits_split
from spikeforge.sw.models.train import load
from spikeforge.sw.neurons import model_from_dict
from spikeforge.sw.phase_snn import run_phase

IMAGES = 60


@pytest.fixture(scope="module")
def data():
    return digits_split()


@pytest.fixture(scope="module")
def source():
    return load("vit_bn")


@pytest.fixture(scope="module")
def net(data, source):
    return convert_spikedattention(source, data.x_test[:1], data.x_calib,
                                   SpikedAttentionOptions(INPUT_SCALE, (0, 16), T=24, B=1.25))


def _ann(source, x):
    with torch.no_grad():
        return source(x).double()


def test_ideal_values_reproduce_the_float_ann(net, data, source):
    """Without coding the IR must be the ANN: BN folding, bias rescaling, weights, attention wiring."""
    x = data.x_test[:IMAGES]
    ideal = run_phase(net, x, arithmetic="ideal").logits
    ann = _ann(source, x)
    err = (ideal - ann).abs().max()
    print(f"ideal IR vs float ANN: max logit error {float(err):.4f}")
    assert err < 0.1
    assert torch.equal(ideal.argmax(1), ann.argmax(1))


def test_spiking_runs_keep_the_ann_predictions(net, data, source):
    x = data.x_test[:IMAGES]
    fixed = run_phase(net, x, arithmetic="fixed")
    flt = run_phase(net, x, arithmetic="float")
    ann = _ann(source, x).argmax(1)
    agree_fixed = float((fixed.logits.argmax(1) == ann).float().mean())
    agree_float = float((flt.logits.argmax(1) == ann).float().mean())
    same = float((fixed.logits.argmax(1) == flt.logits.argmax(1)).float().mean())
    print(f"agreement with the ANN: bit-exact {agree_fixed:.3f}, float rules {agree_float:.3f}; "
          f"bit-exact vs float {same:.3f}; overflows {fixed.overflows}")
    assert agree_fixed >= 0.95 and agree_float >= 0.95 and same >= 0.95
    assert fixed.overflows == 0
    # one spike per neuron at most, codes in range
    for name, codes in fixed.codes.items():
        assert int(codes.abs().max()) <= 24, name
    assert fixed.latency_steps == net.meta["latency_steps"] > 0


def test_schedule_puts_every_source_in_its_consumers_window(net):
    """Each neuron/attention/integrator reads (through linear/add) only sources that emit in its window;
    residual paths go through delay nodes of the right length."""
    avail = {}
    by = {n.name: n for n in net}

    def sources(name):
        n = by[name]
        return [s for p in n.inputs for s in sources(p.source)] if n.op in ("linear", "add") else [name]
    for n in net:
        if n.op == "input":
            avail[n.name] = 0
        elif n.op == "delay":
            avail[n.name] = avail[n.inputs[0].source] + n.params["windows"]
        elif n.op in ("neuron", "attention", "integrator"):
            w = n.params["window"]
            for s in {s for p in n.inputs for s in sources(p.source)}:
                assert avail[s] == w, f"{n.name} integrates in window {w} but {s} emits in {avail[s]}"
            avail[n.name] = w + (2 if n.op == "attention" else 1)
    delays = [n for n in net if n.op == "delay"]
    assert delays and all(n.params["windows"] >= 1 for n in delays)
    assert net.meta["latency_steps"] == (net[net.output].params["window"] + 1) * net.meta["T"]


def test_bias_is_rescaled_over_the_window(net):
    """The per-step bias adds up, with the B**-p weights of a window, to the bias of one step-0 current."""
    node = next(n for n in net if n.op == "neuron")
    model = model_from_dict(node.params["model"])
    b = float(model.b_q)
    assert bias_divisor(model) == pytest.approx(sum(b ** -p for p in range(model.T)))
    assert bias_divisor(model) == pytest.approx((1 - b ** -model.T) / (1 - 1 / b))


def test_network_file_round_trip_and_validation(net, tmp_path, data):
    path = net.save(tmp_path / "sa.json")
    back = Network.load(path)
    assert [n.op for n in back] == [n.op for n in net]
    x = data.x_test[:8]
    assert torch.equal(run_phase(back, x).logits, run_phase(net, x).logits)
    d = back.to_dict()
    att = next(nd for nd in d["nodes"] if nd["op"] == "attention")
    att["params"]["heads"][0]["rows"] = 3
    neuron = next(nd for nd in d["nodes"] if nd["op"] == "neuron")
    del neuron["arrays"]["scale"]
    delay = next(nd for nd in d["nodes"] if nd["op"] == "delay")
    delay["params"]["windows"] = 0
    with pytest.raises(IRError) as e:
        Network.from_dict(d)
    msg = str(e.value)
    assert "3 problems" in msg and "rows=3" in msg and "'scale' array" in msg and "windows=0" in msg


@pytest.mark.parametrize("kw, match", [({"T": 0}, "T=0"), ({"B": 1.0}, "B=1.0"), ({"weight_bits": 2}, "weight_bits"),
                                       ({"inhibition": "max"}, "inhibition")])
def test_options_out_of_range_name_the_parameter(kw, match):
    with pytest.raises(ValueError, match=match):
        SpikedAttentionOptions(INPUT_SCALE, (0, 16), **kw)


def test_layernorm_and_quantized_models_are_refused_with_alternatives(data):
    with pytest.raises(UnsupportedModelError) as e:
        convert_spikedattention(load("vit_ln"), data.x_test[:1], data.x_calib[:32],
                                SpikedAttentionOptions(INPUT_SCALE, (0, 16)))
    msg = str(e.value)
    assert "nn.LayerNorm at blocks.0.norm1" in msg and "BatchNorm" in msg and "5 unsupported" in msg
    with pytest.raises(UnsupportedModelError, match="quantizers belong to the spikezip flow"):
        convert_spikedattention(load("vit_qann_L8"), data.x_test[:1], data.x_calib[:32],
                                SpikedAttentionOptions(INPUT_SCALE, (0, 16)))


class _Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.act, self.l2 = nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3)

    def forward(self, x):
        return self.l2(torch.sigmoid(self.act(self.l1(x))))


def test_unsupported_operations_are_listed_together():
    with pytest.raises(UnsupportedModelError) as e:
        convert_spikedattention(_Gelu(), torch.zeros(1, 4), torch.rand(16, 4), SpikedAttentionOptions(0.25, (0, 4)))
    assert "2 unsupported" in str(e.value) and "GELU" in str(e.value) and "sigmoid" in str(e.value)


def test_small_mlp_converts_and_runs():
    """A BN MLP (not the embedded model): BN folding on a 2-D input, unipolar ReLU layer, readout."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randint(0, 9, (200, 6)).double() / 8
    net = convert_spikedattention(model, x[:1].float(), x[:100].float(), SpikedAttentionOptions(1 / 8, (0, 8)))
    ops = [n.op for n in net]
    assert ops.count("neuron") == 2 and ops[-1] == "integrator"
    ideal = run_phase(net, x[100:], arithmetic="ideal").logits
    with torch.no_grad():
        ann = model(x[100:].float()).double()
    assert (ideal - ann).abs().max() < 0.05
    fixed = run_phase(net, x[100:]).logits
    assert float((fixed.argmax(1) == ann.argmax(1)).float().mean()) >= 0.9


def test_golden_traces_of_phase_layers(net, data):
    from spikeforge.sim.network_trace import network_traces
    traces = network_traces(net, data.x_test[:2], sample=1)
    assert list(traces) == [n.name for n in net.neurons()]
    run = run_phase(net, data.x_test[1:2])
    for node in net.neurons():
        t = traces[node.name]
        assert t.steps == 2 * net.meta["T"]
        codes = np.zeros(node.size, np.int64)
        codes[t.spikes[:, 1]] = t.spikes[:, 2] * (t.spikes[:, 0] - net.meta["T"] + 1)
        assert np.array_equal(codes, run.codes[node.name][0].numpy()), node.name


@pytest.mark.verilator
def test_phase_layer_trace_replays_bit_exact_on_the_neuron_core(net, data):
    from spikeforge.hw.neuron_core import NeuronCore
    from spikeforge.sim.coverify import verify_core
    from spikeforge.sim.network_trace import network_traces
    golden = network_traces(net, data.x_test[:1], lanes=4)["blocks_0_fc1_spikes"]      # unipolar, ReLU layer
    core = NeuronCore.from_config(golden.meta["config"])
    check = verify_core(core, [golden], simulator="verilator", idle=0.2, backpressure=0.3)[0]
    assert check.diff.equal, str(check.diff)
