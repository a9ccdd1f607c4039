"""The compiler's first passes: legalise, partition, place, route counts; networks that do not fit fail
naming the layer, the need and the limit."""

import time

import pytest

from spikeforge import api
from spikeforge.sw.compile import DoesNotFitError, HardwareSpec, compile_network, legalise
from spikeforge.sw.compile.synthetic import vit_ir


@pytest.fixture(scope="module")
def vit():
    return api.convert("vit_qann_L8", "spikezip")


def test_every_layer_is_mapped_and_every_neuron_placed_once(vit):
    spec = HardwareSpec(neuron_tiles=32, matmul_tiles=8, unit_tiles=8)
    plan = compile_network(vit, spec)
    spiking = {n.name for n in vit if n.op == "neuron"}
    layers = {L.name: L for L in plan.layers}
    # every neuron layer is a tile layer; the QK^T products go on as graded events into the softmax unit
    assert spiking <= set(layers)
    assert {L.name for L in plan.layers if L.graded} == {"blocks_0_attn_matmul", "blocks_1_attn_matmul"}
    assert layers["head"].readout
    for name, L in layers.items():
        covered = sum(s.neurons for s in plan.slices if s.layer == name)
        assert covered == L.neurons, name
    for s in plan.slices:
        assert s.neurons <= spec.neurons and s.axons <= spec.axons
    tiles = [(s.kind, s.tile) for s in plan.slices]
    assert len(tiles) == len(set(tiles))                        # one slice per tile


def test_a_linear_per_token_stores_its_weights_once_per_slice(vit):
    plan = compile_network(vit, HardwareSpec(neuron_tiles=32, matmul_tiles=8, unit_tiles=8))
    (s,) = [s for s in plan.slices if s.layer == "blocks_0_act_quant"]      # fc1: 16 tokens x 64 outputs, K = 32
    assert s.words == 32 * 64 // 4                                         # K rows of 64/P words, not x16 tokens


def test_routes_count_every_gathered_input(vit):
    plan = compile_network(vit, HardwareSpec(neuron_tiles=32, matmul_tiles=8, unit_tiles=8))
    assert plan.routes_per_tile[("host", 0)] == 64                         # 8x8 pixels, each read by one patch
    # fc1 reads each of norm2's 512 neurons once (one column slice)
    assert plan.routes_per_layer["blocks_0_act_quant"] == 512
    # the residual stream feeds LayerNorm through an add: both sources' neurons are routed
    assert plan.routes_per_layer["blocks_0_norm2_quant"] == 2 * 512


@pytest.mark.parametrize("model, flow", [("qcnn", "crnn"), ("qrnn_rows", "crnn")])
def test_crnn_networks_compile(model, flow):
    net = api.convert(model, flow)
    plan = compile_network(net, HardwareSpec(neuron_tiles=4, matmul_tiles=0, unit_tiles=0))
    assert plan.tiles_used("neuron") == len(plan.layers)
    if model == "qrnn_rows":
        assert plan.routes_per_layer["head"] == 64                          # the last element's 64 RBIF neurons


@pytest.mark.parametrize("spec, message", [
    (dict(neuron_tiles=4), "the network needs 14 neuron tiles, the spec has 4"),
    (dict(synapse_words=16, lanes=4), "layer 'blocks_0_fc2_quant' (blocks_0_fc2): one slice of 4 output neurons "
                                      "needs 64 synapse words (fan-in 64), the tile's synapse memory has 16"),
    (dict(synapse_words=16, lanes=4), "13 layers do not fit"),
    (dict(axons=40), "layer 'blocks_0_fc2_quant' (blocks_0_fc2): one token needs 64 axons"),
    (dict(unit_words=16), "one layernorm row of 32 values needs 32 accumulators"),
    (dict(trace_words=100), "one row of the product needs 272 trace words"),
    (dict(route_words=100), "routing-table entries, a tile has 100"),
])
def test_a_network_that_does_not_fit_names_the_layer_the_need_and_the_limit(vit, spec, message):
    base = dict(neuron_tiles=32, matmul_tiles=8, unit_tiles=8)
    with pytest.raises(DoesNotFitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_network(vit, HardwareSpec(**{**base, **spec}))


def test_phase_networks_are_refused_until_their_tiles_exist():
    net = api.convert("vit_bn", "spikedattention", T=8, B=2.0)
    with pytest.raises(DoesNotFitError, match="count-coded networks"):
        legalise(net)


def test_spec_is_validated_and_round_trips():
    with pytest.raises(ValueError, match="neurons=10 is not a multiple of lanes=4"):
        HardwareSpec(neurons=10, lanes=4)
    with pytest.raises(ValueError, match="at least one tile"):
        HardwareSpec(neuron_tiles=0, matmul_tiles=0, unit_tiles=0)
    s = HardwareSpec(lanes=8, neurons=512)
    assert HardwareSpec.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unknown hardware spec fields"):
        HardwareSpec.from_dict({"tiles": 3})


def test_a_vit_small_sized_network_compiles_in_seconds():
    net = vit_ir()                                   # 197 tokens, dim 384, 12 blocks: ~22 M weights
    assert sum(n.arrays["weight"].size for n in net if "weight" in n.arrays) > 21_000_000
    spec = HardwareSpec(neuron_tiles=4096, matmul_tiles=4096, unit_tiles=4096, neurons=4096, lanes=8,
                        synapse_words=16384, trace_words=32768, unit_words=8192, axons=1 << 16, route_words=1 << 24)
    t0 = time.perf_counter()
    plan = compile_network(net, spec)
    assert plan.tiles_used("neuron") > 1000
    assert time.perf_counter() - t0 < 120          # a loose guard against a per-synapse loop, not a benchmark


def test_report_estimates_events_cycles_and_energy_from_a_run(vit):
    import json

    from spikeforge.sw.compile import report
    from spikeforge.sw.models.digits import digits_split
    from spikeforge.sw.snn import run_snn
    spec = HardwareSpec(neuron_tiles=32, matmul_tiles=8, unit_tiles=8)
    plan = compile_network(vit, spec)
    run = run_snn(vit, digits_split().x_test[:4], max_steps=400, timing="layer")
    r = report(plan, vit, run)
    assert len(r.tiles) == len(plan.slices)
    for t in r.tiles:
        assert t["cycles"] >= r.steps * t["neurons"] / spec.lanes      # at least the sweeps
    assert r.busiest_tile_cycles >= r.balanced_cycles > 0
    # the estimate counts the same synaptic work as the simulator, within the routing approximation
    assert 0.8 < r.synaptic_ops / float(run.acs.double().mean()) < 1.5
    assert r.energy_pj > 0 and "estimated cycles" in r.markdown()
    json.dumps(plan.to_dict())
    json.dumps(r.to_dict())


def test_cli_compile_writes_plan_and_report_and_names_what_does_not_fit(tmp_path):
    from click.testing import CliRunner

    from spikeforge.cli import main
    r = CliRunner().invoke(main, ["compile", "--model", "qcnn", "--images", "2", "-o", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert {"plan.json", "report.md", "report.json", "manifest.json"} <= {p.name for p in (tmp_path / "c").iterdir()}
    r = CliRunner().invoke(main, ["compile", "--model", "vit_qann_L8", "--neuron-tiles", "4", "-o", str(tmp_path / "d")])
    assert r.exit_code == 2 and "needs 14 neuron tiles, the spec has 4" in r.output
    assert "raise --neuron-tiles to 14" in r.output and not (tmp_path / "d").exists()
