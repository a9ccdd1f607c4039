"""crnn flow: QRNN -> RBIF and QCNN -> BIF, SNN == integer QRNN/QCNN bit for bit; the window rule that makes
the RBIF conversion exact (and where it breaks); random QRNNs; errors; IR; golden traces on RTL."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from spikeforge.sw.convert.crnn import CrnnOptions, convert_crnn, exact_window
from spikeforge.sw.convert.frontend import UnsupportedModelError
from spikeforge.sw.ir import IRError, Network
from spikeforge.sw.models.digits import INPUT_SCALE, digits_split
from spikeforge.sw.models.rnn import QuantRNN
from spikeforge.sw.models.train import load
from spikeforge.sw.snn import compare_runs, run_qann, run_snn


@pytest.fixture(scope="module")
def data():
    return digits_split()


def _convert(name, data, **kw):
    return convert_crnn(load(name), data.x_test[:1], CrnnOptions(INPUT_SCALE, (0, 16), **kw))


def _check(net, x):
    q = run_qann(net, x)
    s = run_snn(net, x, max_steps=net.meta.get("sequence_steps", 0) + 300)
    bad, first = compare_runs(net, q, s)
    return bad, first, s


@pytest.mark.parametrize("name, images", [("qrnn_rows", None), ("qcnn", 120), ("qrnn_pixels", 40)])
def test_snn_equals_integer_qann(name, images, data):
    """qrnn_rows on the whole test split (benchmarks/conversion.py runs all three on all of it)."""
    net = _convert(name, data)
    bad, first, s = _check(net, data.x_test[:images])
    assert bad == 0, f"{name}: {first}"
    assert s.truncations == 0 and bool(s.quiescent.all()) and s.overflows == 0


def test_window_rule_is_tight(data):
    """Recurrent term from the tracer: exact at window = L-1, broken at L-2. Spikes replayed one window later
    need longer windows: broken at L-1, exact at 2(L-1)."""
    x = data.x_test[:60]
    L = 16
    assert exact_window(L) == L - 1
    bad, _, s = _check(_convert("qrnn_rows", data, window=L - 2), x)
    assert bad > 0 and s.truncations > 0
    bad, _, s = _check(_convert("qrnn_rows", data, window=L - 1, recurrent="spikes"), x)
    assert bad > 0 and s.truncations > 0
    bad, first, s = _check(_convert("qrnn_rows", data, window=2 * (L - 1), recurrent="spikes"), x)
    assert bad == 0 and s.truncations == 0, str(first)


class _SeqNet(nn.Module):
    def __init__(self, k, h, levels, classes=3):
        super().__init__()
        self.rnn, self.head = QuantRNN(k, h, levels), nn.Linear(h, classes)

    def forward(self, x):
        return self.head(self.rnn(x)[:, -1])


@settings(max_examples=15)
@given(seed=st.integers(0, 10_000), levels=st.sampled_from([4, 8, 16]), elements=st.integers(1, 6),
       k=st.integers(1, 4), h=st.integers(1, 12))
def test_random_qrnn_converts_exactly(seed, levels, elements, k, h):
    g = torch.Generator().manual_seed(seed)
    model = _SeqNet(k, h, levels)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        model.rnn.quant.step.fill_(float(torch.rand(1, generator=g)) + 0.1)
    x = torch.randint(0, 8, (24, elements, k), generator=g).float() * 0.25
    net = convert_crnn(model.eval(), x[:1], CrnnOptions(0.25, (0, 7), weight_bits=12))
    bad, first, s = _check(net, x)
    assert bad == 0, str(first)
    assert s.truncations == 0


class _Gru(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru, self.head = nn.GRU(8, 16, batch_first=True), nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])


def test_unsupported_recurrent_modules_point_to_quantrnn():
    with pytest.raises(UnsupportedModelError) as e:
        convert_crnn(_Gru(), torch.zeros(1, 8, 8), CrnnOptions(INPUT_SCALE, (0, 16)))
    assert "nn.GRU at gru" in str(e.value) and "QuantRNN" in str(e.value)


class _Deep(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.rnn, self.head = nn.Linear(8, 8), QuantRNN(8, 4, 8), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.rnn(self.l1(x))[:, -1])


def test_rnn_must_read_the_input_sequence_and_other_flows_refuse_it(data):
    with pytest.raises(UnsupportedModelError, match="reads the network's input sequence"):
        convert_crnn(_Deep(), torch.zeros(1, 8, 8), CrnnOptions(INPUT_SCALE, (0, 16)))
    from spikeforge.sw.convert.spikezip import SpikezipOptions, convert_spikezip
    with pytest.raises(UnsupportedModelError, match="convert with the crnn flow"):
        convert_spikezip(load("qrnn_rows"), data.x_test[:1], SpikezipOptions(INPUT_SCALE, (0, 16)))


@pytest.mark.parametrize("kw, match", [({"window": 0}, "window=0"), ({"recurrent": "both"}, "recurrent")])
def test_options_name_the_parameter(kw, match):
    with pytest.raises(ValueError, match=match):
        CrnnOptions(INPUT_SCALE, (0, 16), **kw)


def test_ir_round_trip_and_rnn_validation(data, tmp_path):
    net = _convert("qrnn_rows", data)
    back = Network.load(net.save(tmp_path / "rnn.json"))
    x = data.x_test[:20]
    assert torch.equal(run_qann(back, x).output, run_qann(net, x).output)
    d = back.to_dict()
    rnn = next(nd for nd in d["nodes"] if nd["op"] == "rnn")
    rnn["arrays"]["wh"]["shape"] = [rnn["arrays"]["wh"]["shape"][0] * 2, rnn["arrays"]["wh"]["shape"][1] // 2]
    rnn["params"]["recurrent"] = "later"
    with pytest.raises(IRError) as e:
        Network.from_dict(d)
    assert "must be [H, 8] and [H, H]" in str(e.value)
    rnn["arrays"]["wh"]["shape"] = [64, 64]
    with pytest.raises(IRError, match="recurrent='later'"):
        Network.from_dict(d)


@pytest.mark.verilator
def test_rbif_layer_trace_replays_bit_exact_on_the_neuron_core(data):
    from spikeforge.hw.neuron_core import NeuronCore
    from spikeforge.sim.coverify import verify_core
    from spikeforge.sim.network_trace import network_traces
    golden = network_traces(_convert("qrnn_rows", data), data.x_test[:1], lanes=4)["rnn"]
    assert golden.meta["config"]["neurons"] == 64
    core = NeuronCore.from_config(golden.meta["config"])
    check = verify_core(core, [golden], simulator="verilator", idle=0.2, backpressure=0.3)[0]
    assert check.diff.equal, str(check.diff)
