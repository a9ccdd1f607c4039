"""Conversion: IR files and validation, the front end's unsupported-operation report, the spikezip flow
(SNN run to quiescence == integer QANN bit for bit), embedded checkpoints and network golden traces."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.nn import functional as F

from spikeforge.sw.convert.frontend import UnsupportedModelError, trace
from spikeforge.sw.convert.spikezip import SpikezipOptions, convert_spikezip
from spikeforge.sw.ir import IRError, Network
from spikeforge.sw.models.digits import INPUT_SCALE, digits_split
from spikeforge.sw.models.portable import PORTABLE_ARITHMETIC, blas_ops, portable_arithmetic
from spikeforge.sw.models.train import (CHECKPOINTS, FIRST_STEPS, RECIPES, checkpoint_info, load,
                                        reproduction_problems, state_digest, train)
from spikeforge.sw.quant import Quantizer
from spikeforge.sw.snn import compare_runs, run_qann, run_snn

DIGITS = SpikezipOptions(INPUT_SCALE, (0, 16), weight_bits=8)


@pytest.fixture(scope="module")
def data():
    return digits_split()


@pytest.fixture(scope="module")
def net8(data):
    return convert_spikezip(load("vit_qann_L8"), data.x_test[:1], DIGITS)


# -- spikezip exactness ------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels, images", [(8, None), (16, 120)])
def test_spikezip_snn_equals_integer_qann_on_test_split(data, levels, images):
    """L=8 on the whole test split, L=16 on a part (benchmarks/conversion.py runs every level on all)."""
    net = convert_spikezip(load(f"vit_qann_L{levels}"), data.x_test[:1], DIGITS)
    x = data.x_test[:images]
    q = run_qann(net, x)
    s = run_snn(net, x, max_steps=200)
    assert bool(s.quiescent.all()), "some inputs did not reach quiescence within 200 steps"
    assert s.overflows == 0
    bad, first = compare_runs(net, q, s)
    assert bad == 0, f"{bad} of {len(x)} test inputs differ: {first}"
    assert torch.equal(q.output, s.output)


def test_integer_qann_tracks_float_qann(data):
    model = load("vit_qann_L16")
    net = convert_spikezip(model, data.x_test[:1], DIGITS)
    with torch.no_grad():
        ref = model(data.x_test).argmax(1)
    got = run_qann(net, data.x_test).output.argmax(1)
    agree = float((ref == got).float().mean())
    assert agree > 0.95, f"integer QANN agrees with the float QANN on only {agree:.3f} of the test split"


class _Mlp(nn.Module):
    def __init__(self, w1, b1, w2, b2, w3, s1, s2, levels):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(6, 8), nn.Linear(8, 5), nn.Linear(5, 3, bias=False)
        self.q1, self.q2 = Quantizer(levels, signed=False), Quantizer(levels)
        with torch.no_grad():
            for lin, w, b in ((self.l1, w1, b1), (self.l2, w2, b2), (self.l3, w3, None)):
                lin.weight.copy_(w)
                if b is not None:
                    lin.bias.copy_(b)
            self.q1.step.fill_(s1)
            self.q2.step.fill_(s2)

    def forward(self, x):
        return self.l3(self.q2(self.l2(self.q1(torch.relu(self.l1(x))))))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), levels=st.sampled_from([4, 8, 16, 32]), bits=st.integers(8, 12),
       s1=st.floats(0.1, 2.0), s2=st.floats(0.1, 2.0))
def test_property_random_qann_mlp_converts_exactly(seed, levels, bits, s1, s2):
    g = torch.Generator().manual_seed(seed)
    w = [torch.randn(8, 6, generator=g), torch.randn(8, generator=g), torch.randn(5, 8, generator=g),
         torch.randn(5, generator=g), torch.randn(3, 5, generator=g)]
    model = _Mlp(*w, s1, s2, levels).eval()
    x = torch.randint(-7, 8, (64, 6), generator=g).float() * 0.25
    net = convert_spikezip(model, x[:1], SpikezipOptions(0.25, (-7, 7), weight_bits=bits))
    q, s = run_qann(net, x), run_snn(net, x, max_steps=400)
    assert bool(s.quiescent.all()) and s.overflows == 0
    bad, first = compare_runs(net, q, s)
    assert bad == 0, str(first)


# -- lowering errors ------------------------------------------------------------------------------------------
class _Bad(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.act, self.pool = nn.Linear(4, 4), nn.GELU(), nn.MaxPool1d(2)
        self.mha = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x):
        y = torch.sigmoid(self.act(self.l1(x)))
        y = y + self.mha(y, y, y)[0]
        return torch.cat([self.pool(y), x], 1)


def test_unsupported_operations_are_all_reported_at_once():
    with pytest.raises(UnsupportedModelError) as e:
        convert_spikezip(_Bad(), torch.zeros(1, 3, 4), DIGITS)
    msg = str(e.value)
    assert len(e.value.problems) == 5, msg
    for what in ("nn.GELU", "torch.sigmoid", "nn.MultiheadAttention", "nn.MaxPool1d", "torch.cat"):
        assert what in msg
    assert "test_conversion.py:" in msg               # source location
    assert all(p.alternative for p in e.value.problems)


class _Mixed(nn.Module):
    def __init__(self, signed_after_relu=True, shared=False):
        super().__init__()
        self.l1, self.l2 = nn.Linear(4, 4), nn.Linear(4, 4)
        self.q0, self.q1 = Quantizer(8), Quantizer(8, signed=signed_after_relu)
        self.qa, self.qb = Quantizer(8), Quantizer(8)
        for q, s in ((self.q0, 0.5), (self.q1, 0.3), (self.qa, 0.2), (self.qb, 0.7)):
            q.step.data.fill_(s)

    def forward(self, x):
        h = self.q0(x)
        mixed = self.qa(self.l1(h)) + self.qb(self.l2(h))           # residual add across two steps
        relu_signed = self.q1(torch.relu(self.l1(h)))                 # ReLU into a signed quantizer
        return mixed + relu_signed


def test_context_errors_name_the_layer_and_the_fix():
    with pytest.raises(UnsupportedModelError) as e:
        convert_spikezip(_Mixed(), torch.zeros(1, 4), SpikezipOptions(0.5, (-4, 3)))
    msg = str(e.value)
    assert "ReLU followed by a signed quantizer" in msg and "q1" in msg
    assert "different quantizer steps" in msg and "same Quantizer instance" in msg


def test_float_model_is_refused_by_spikezip():
    with pytest.raises(UnsupportedModelError, match="no Quantizer"):
        convert_spikezip(load("vit_ln"), torch.zeros(1, 8, 8), DIGITS)


def test_options_are_checked():
    with pytest.raises(ValueError, match="input_scale"):
        SpikezipOptions(0, (0, 1))
    with pytest.raises(ValueError, match="weight_bits"):
        SpikezipOptions(1.0, (0, 1), weight_bits=1)


def test_input_must_be_exact_counts(net8):
    with pytest.raises(ValueError, match="not integer multiples"):
        run_qann(net8, torch.full((1, 8, 8), 0.01))
    with pytest.raises(ValueError, match="outside the declared range"):
        run_qann(net8, torch.full((1, 8, 8), 2.0))


# -- IR files ---------------------------------------------------------------------------------------------------
def test_ir_round_trip_is_lossless(net8, data, tmp_path):
    path = net8.save(tmp_path / "net.json")
    again = Network.load(path)
    assert [n.name for n in again] == [n.name for n in net8]
    assert torch.equal(run_qann(again, data.x_test[:16]).output, run_qann(net8, data.x_test[:16]).output)
    assert again.to_dict() == json.loads(path.read_text())


def test_ir_validation_reports_every_problem(net8, tmp_path):
    d = net8.to_dict()
    nodes = {n["name"]: n for n in d["nodes"]}
    nodes["embed"]["arrays"]["weight"]["data"][0] = 100_000             # overflows weight_bits
    nodes["blocks_0_attn_q"]["inputs"][0]["source"] = "nowhere"         # dangling input
    nodes["blocks_0_attn_k_quant"]["params"]["model"]["theta"] = 0      # threshold out of range
    nodes["blocks_0_attn_matmul"]["op"] = "conv3d"                      # unknown op
    del nodes["head"]["params"]["weight_bits"]                         # missing parameter
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(IRError) as e:
        Network.load(path)
    msg = str(e.value)
    assert len(e.value.problems) >= 5, msg
    for needle in ("'embed'", "weight_bits=8", "'nowhere'", "theta", "unknown op", "missing parameter 'weight_bits'"):
        assert needle in msg, needle


def test_ir_version_and_format_are_checked(net8, tmp_path):
    d = net8.to_dict()
    d["version"] = 99
    (tmp_path / "v.json").write_text(json.dumps(d))
    with pytest.raises(IRError, match="version 99"):
        Network.load(tmp_path / "v.json")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(IRError, match="format tag"):
        Network.load(tmp_path / "x.json")


def test_gather_index_out_of_range_is_reported(net8):
    d = net8.to_dict()
    d["nodes"][1]["inputs"][0]["index"]["data"][0] = 9999
    with pytest.raises(IRError, match="gathers index 9999"):
        Network.from_dict(d)


# -- checkpoints ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vit_ln", "vit_qann_L8", "qrnn_rows", "qcnn"])
def test_training_script_reproduces_committed_checkpoint(name, tmp_path):
    """A whole retrain: bit-identical weights where the recorded platform (torch, CPU kernel level,
    portable arithmetic) is this one; elsewhere the same recipe, first losses and accuracy."""
    if name != "vit_ln":
        (tmp_path / "vit_ln.pt").write_bytes((CHECKPOINTS / "vit_ln.pt").read_bytes())
    model = train(name, log=None, directory=tmp_path)
    problems = reproduction_problems(name, model)
    assert not problems, f"{name}: " + "; ".join(problems)


def test_every_checkpoint_records_its_recipe_and_first_losses(tmp_path):
    """Cheap check of all recipes: recorded recipe and platform tag, QANNs start from the committed vit_ln,
    and the first optimizer steps give the recorded losses."""
    (tmp_path / "vit_ln.pt").write_bytes((CHECKPOINTS / "vit_ln.pt").read_bytes())
    vit_ln = state_digest(load("vit_ln"))
    for name, recipe in RECIPES.items():
        info = checkpoint_info(name)
        assert info["recipe"] == recipe, name
        assert info["trained_on"]["arithmetic"] == PORTABLE_ARITHMETIC, name
        assert len(info["first_losses"]) == FIRST_STEPS and len(info["epoch_losses"]) == recipe["epochs"], name
        if "start" in recipe:
            assert info["start_digest"] == vit_ln, f"{name} was trained from another vit_ln: retrain it"
        model = train(name, log=None, directory=tmp_path, max_steps=FIRST_STEPS)
        problems = reproduction_problems(name, model)
        assert not problems, f"{name}: " + "; ".join(problems)


@pytest.mark.parametrize("change", [{"lr": 3.3e-3}, {"order_seed": 6}, {"init_seed": 5}, {"epochs": 31}])
def test_reproduction_check_catches_a_changed_recipe(change, monkeypatch):
    monkeypatch.setitem(RECIPES, "qcnn", {**RECIPES["qcnn"], **change})
    problems = reproduction_problems("qcnn", train("qcnn", log=None, max_steps=FIRST_STEPS))
    assert any("recipe differs" in p and next(iter(change)) in p for p in problems), problems
    if "epochs" not in change:     # a change the first losses show even if the recipe were not recorded
        assert any("losses differ" in p for p in problems), problems


def test_portable_training_uses_no_blas_and_computes_the_same_products():
    for name in ("vit_bn", "vit_qann_L8", "qrnn_rows", "qcnn"):
        assert not blas_ops(train, name, log=None, max_steps=2), name
    g = torch.Generator().manual_seed(0)
    a, b, w, x, k = (torch.randn(*s, generator=g) for s in ((2, 3, 4, 5), (3, 5, 6), (7, 5), (2, 3, 8, 8), (4, 3, 3, 3)))
    ops = lambda: [a @ b, torch.matmul(a[0, 0], b[0, :, 0]), F.linear(a, w, w[:, 0]), torch.bmm(a[0], b),
                   F.conv2d(x, k, k[:, 0, 0, 0], stride=2, padding=1), nn.Conv1d(3, 4, 3, padding=1)(x[:, :, 0])]
    torch.manual_seed(0)
    ref = ops()
    with portable_arithmetic():
        torch.manual_seed(0)
        got = ops()
        with pytest.raises(NotImplementedError, match="einsum"):
            torch.einsum("ij,jk->ik", a[0, 0], b[0])
    for r, q in zip(ref, got):
        assert r.shape == q.shape and torch.allclose(r, q, atol=1e-5), (r.shape, q.shape)


def test_front_end_needs_no_data():
    tm = trace(load("vit_qann_L8"))
    assert not tm.unsupported
    assert {"linear", "quantizer", "layernorm", "matmul", "softmax", "add", "mean", "layout"} <= set(tm.kinds.values())


# -- golden traces of a whole network ------------------------------------------------------------------------
def test_network_golden_traces_load_and_match_the_network(net8, data, tmp_path):
    from spikeforge.sim.network_trace import dump_network_traces
    from spikeforge.sim.trace import SpikeTrace
    paths = dump_network_traces(net8, data.x_test[:3], tmp_path, sample=2)
    assert len(paths) == len(net8.neurons())
    index = json.loads((tmp_path / "index.json").read_text())
    assert [e["layer"] for e in index["layers"]] == [n.name for n in net8.neurons()]
    s = run_snn(net8, data.x_test[2:3])
    for node, path in zip(net8.neurons(), paths):
        t = SpikeTrace.load(path)
        counts = np.zeros(node.size, np.int64)
        np.add.at(counts, t.spikes[:, 1], t.spikes[:, 2])
        assert np.array_equal(counts, s.values[node.name][0].numpy()), node.name
        assert np.array_equal(t.state["s"], counts)


@pytest.mark.verilator
def test_network_layer_traces_replay_bit_exact_on_the_neuron_core(net8, data):
    from spikeforge.hw.neuron_core import NeuronCore
    from spikeforge.sim.coverify import verify_core
    from spikeforge.sim.network_trace import network_traces
    traces = network_traces(net8, data.x_test[:1], lanes=4)
    for layer in ("blocks_0_attn_q_quant", "blocks_0_norm2_quant"):     # linear-fed and unit-fed ST-BIF
        golden = traces[layer]
        core = NeuronCore.from_config(golden.meta["config"])
        check = verify_core(core, [golden], simulator="verilator", idle=0.2, backpressure=0.3)[0]
        assert check.diff.equal, f"{layer}: {check.diff}"


def test_weights_that_cannot_fit_name_the_layer_and_the_fix():
    g = torch.Generator().manual_seed(0)
    model = _Mlp(*(torch.randn(*s, generator=g) * 4 for s in ((8, 6), (8,), (5, 8), (5,), (3, 5))), 1.0, 0.05, 8)
    with pytest.raises(UnsupportedModelError, match=r"q2 .*more than weight_bits=4.*raise weight_bits"):
        convert_spikezip(model.eval(), torch.zeros(1, 6), SpikezipOptions(0.25, (-7, 7), weight_bits=4))


class _Branches(nn.Module):
    """One linear output used twice: through ReLU into an unsigned quantizer and straight into a signed one."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(4, 6), nn.Linear(6, 3)
        self.q_in, self.q_pos, self.q_lin = Quantizer(16), Quantizer(16, signed=False), Quantizer(16)
        for q, s in ((self.q_in, 0.25), (self.q_pos, 0.3), (self.q_lin, 0.3)):
            q.step.data.fill_(s)

    def forward(self, x):
        y = self.l1(self.q_in(x))
        return self.l2(self.q_pos(torch.relu(y)) + self.q_lin(y * 1.0))


def test_a_value_used_twice_is_lowered_independently_per_use():
    model = _Branches().eval()
    x = torch.randint(-8, 8, (32, 4), generator=torch.Generator().manual_seed(3)).float() * 0.25
    with pytest.raises(UnsupportedModelError, match="different quantizer steps"):   # 0.3 vs 0.3 is fine ...
        model.q_lin.step.data.fill_(0.2)                                             # ... 0.3 vs 0.2 is not
        convert_spikezip(model, x[:1], SpikezipOptions(0.25, (-8, 7), weight_bits=10))
    model.q_lin.step.data.fill_(0.3)
    net = convert_spikezip(model, x[:1], SpikezipOptions(0.25, (-8, 7), weight_bits=10))
    assert [n.params["model"]["s_min"] for n in net.neurons()] == [-8, 0, -8]     # the ReLU went to one use only
    bad, first = compare_runs(net, run_qann(net, x), run_snn(net, x))
    assert bad == 0, str(first)


class _BadQann(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.act, self.q1, self.q2 = nn.Linear(4, 4), nn.GELU(), Quantizer(8), Quantizer(8, signed=False)
        self.q1.step.data.fill_(0.5)
        self.q2.step.data.fill_(0.5)

    def forward(self, x):
        pos = self.q2(torch.relu(self.l1(x)))
        return pos + self.act(self.q1(torch.relu(self.l1(x)))) - pos      # GELU, ReLU into signed q1, subtraction


def test_front_end_and_context_problems_come_in_one_report():
    with pytest.raises(UnsupportedModelError) as e:
        convert_spikezip(_BadQann(), torch.zeros(1, 4), SpikezipOptions(0.5, (-4, 3)))
    msg = str(e.value)
    assert "nn.GELU" in msg and "subtraction" in msg and "ReLU followed by a signed quantizer" in msg, msg
