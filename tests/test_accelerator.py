"""The generated accelerator running whole networks: every layer's spikes equal the golden model's
(``run_snn(..., timing="layer")``) step by step, the outputs equal the integer QANN, no counter moves,
with random idle cycles on the command stream and backpressure on the responses."""

import numpy as np
import pytest
import torch

from spikeforge import api
from spikeforge.sim.network import compare_layers, run_accelerator
from spikeforge.sw.accelerator import AcceleratorFormat
from spikeforge.sw.compile import HardwareSpec
from spikeforge.sw.compile.images import build_images
from spikeforge.sw.compile.plan import DoesNotFitError, compile_network
from spikeforge.sw.models.digits import digits_split
from spikeforge.sw.snn import encode_input, run_qann, run_snn

QCNN_SPEC = HardwareSpec(neuron_tiles=3, matmul_tiles=0, unit_tiles=0, neurons=512, synapse_words=1024,
                         route_words=2048, buffer_words=0)


@pytest.fixture(scope="module")
def qcnn():
    return api.convert("qcnn", flow="crnn")


def _inputs(net, n):
    scale = net.input.params["scale"]
    x = torch.round(digits_split().x_test[:n] / scale) * scale
    return x, encode_input(net, x).numpy()


def _check(net, images, runs, x):
    qann = run_qann(net, x)
    for i, run in enumerate(runs):
        golden = run_snn(net, x[i:i + 1], timing="layer", record=0)
        mismatch = compare_layers(images, run, golden.traces, qann.output[i])
        assert mismatch is None, f"image {i}: {mismatch}"
        assert not run.errors, run.errors
        assert 0 < max(run.busy_cycles.values()) <= run.run_cycles
        assert run.run_spikes == len(run.spikes) == int(golden.spikes_total[0])


def test_images_route_every_synapse_once(qcnn):
    images = build_images(qcnn, compile_network(qcnn, QCNN_SPEC))
    # conv2 reads 3x3x8 of q1 over 16 tokens (with padding), the head reads all 256 of q2
    routes = {im.layer: len(im.route) for im in images.tiles}
    conv2_index = qcnn["conv2"].inputs[0].index
    assert routes["q1"] == int((conv2_index >= 0).sum()) and routes["q2"] == 256 and routes["head"] == 0
    assert len(images.input_index) == int((qcnn["conv1"].inputs[0].index >= 0).sum())


def test_a_network_the_tiles_cannot_run_is_refused():
    rnn = api.convert("qrnn_rows", "crnn")
    with pytest.raises(DoesNotFitError, match=r"layer 'rnn' \(rnn\): 8 elements x fan-in 72 need 576 input-buffer "
                                              r"words, a neuron tile has 0: raise buffer_words to at least 576"):
        compile_network(rnn, HardwareSpec(neuron_tiles=64, buffer_words=0))
    with pytest.raises(DoesNotFitError, match=r"8 elements x 4 columns need 32 output indices, a tile has 16"):
        compile_network(rnn, HardwareSpec(neuron_tiles=64, neurons=16))
    narrow = compile_network(rnn, HardwareSpec(neuron_tiles=64, neurons=256))     # 64 hidden -> 2 slices of 32
    assert [(s.col0, s.col1) for s in narrow.slices if s.layer == "rnn"] == [(0, 32), (32, 64)]
    images = build_images(rnn, narrow)                        # both slices' spikes loop back to both
    assert sorted(set(map(int, images.image(0).route[:, 0]))) == [0, 1, 2]
    with pytest.raises(DoesNotFitError, match=r"the program needs input-buffer words \(elements x fan_in; raise "
                                              r"buffer_words\) = 576, the tile has 0"):
        build_images(rnn, narrow, AcceleratorFormat.from_spec(HardwareSpec(neuron_tiles=64, neurons=256,
                                                                           buffer_words=0)))
    spikes = api.convert("qrnn_rows", "crnn", recurrent="spikes", window=28)
    with pytest.raises(DoesNotFitError, match="convert with recurrent='tracer'"):
        build_images(spikes, compile_network(spikes, HardwareSpec(neuron_tiles=64, buffer_words=1024)))
    vit = api.convert("vit_qann_L16")           # A V x 127 needs 19-bit currents
    with pytest.raises(DoesNotFitError, match=r"layer 'blocks_0_attn_out_quant' needs 19-bit currents \(the tiles "
                                              r"have 18: raise current_width\)"):
        build_images(vit, compile_network(vit, HardwareSpec(neuron_tiles=64, matmul_tiles=8, unit_tiles=16)))
    narrow = HardwareSpec(neuron_tiles=64, matmul_tiles=8, unit_tiles=16, current_width=20, v_width=22, value_bits=4)
    with pytest.raises(DoesNotFitError, match=r"layer 'blocks_0_attn_matmul': an increment gain x trace can reach "
                                              r"\d+, over the 4-bit range .*raise value_bits"):
        build_images(vit, compile_network(vit, narrow))


def test_fanout_over_the_limit_names_the_layer(qcnn):
    spec = HardwareSpec(**{**QCNN_SPEC.to_dict(), "max_fanout": 2})
    with pytest.raises(DoesNotFitError, match=r"layer 'q1' \(neuron tile 0\): neuron \d+ feeds 4 destinations, a routing "
                                              r"table allows 2: raise max_fanout"):
        build_images(qcnn, compile_network(qcnn, spec))


@pytest.mark.verilator
def test_qcnn_on_verilator_equals_the_golden_model_layer_by_layer(qcnn):
    images = build_images(qcnn, compile_network(qcnn, api.fit_spec(qcnn)))     # the CLI's default accelerator
    x, counts = _inputs(qcnn, 3)
    runs = run_accelerator(images, counts, max_steps=64, idle=0.2, backpressure=0.3, seed=3, workers=2)
    assert len(runs) == 3                       # two simulator processes: images 0-1 and 2, in order
    _check(qcnn, images, runs, x)


def test_recurrent_images_close_the_loop_through_routes():
    rnn = api.convert("qrnn_rows", "crnn")
    images = build_images(rnn, compile_network(rnn, api.fit_spec(rnn, HardwareSpec(neurons=512))))
    tile = images.image(0)
    k_bits = images.fmt.tile.k_bits
    route = tile.route[tile.pointer[:, 0][:448 * 1]]          # the first destination of elements 0..6's spikes
    assert len(tile.route) == 7 * 64 + 64 and np.all(tile.pointer[:512, 1] == 1)
    assert np.array_equal(route[:, 1], ((np.arange(448) // 64 + 1) << k_bits) | (8 + np.arange(448) % 64))
    assert np.all(tile.route[tile.pointer[448:512, 0], 0] == 1)      # the last element's spikes go to the head
    assert len(images.input_index) == 64 and images.locate(0, [5, 64 * 3 + 5])[1].tolist() == [5, 5]


@pytest.mark.verilator
@pytest.mark.parametrize("neurons, images", [(512, 2), (256, 1)])
def test_qrnn_on_verilator_equals_the_golden_model_layer_by_layer(neurons, images):
    """One recurrent tile (512 neurons: 8 elements x 64 hidden output indices) or the hidden layer split
    over two (256 neurons: 32 hidden each, every spike looping back to both)."""
    rnn = api.convert("qrnn_rows", "crnn")
    plan = compile_network(rnn, api.fit_spec(rnn, HardwareSpec(neurons=neurons)))
    assert sum(s.layer == "rnn" for s in plan.slices) == 512 // neurons
    images_ = build_images(rnn, plan)
    x, counts = _inputs(rnn, images)
    runs = run_accelerator(images_, counts, max_steps=256, idle=0.2, backpressure=0.3, seed=4)
    _check(rnn, images_, runs, x)
    assert all(run.steps == 121 for run in runs)           # 8 windows of 15 steps, then one without spikes


@pytest.mark.verilator
def test_simulate_network_command(tmp_path):
    import json
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "spikeforge.cli", "simulate", "network", "--images", "2",
                        "--backpressure", "0.2", "-o", "net"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((tmp_path / "net" / "results.json").read_text())
    assert res["mismatched_images"] == 0 and res["images"] == 2 and res["accuracy"]["rtl"] == res["accuracy"]["qann"]
    assert {"plan.json", "program.npz", "spikes0.npz", "spikes1.npz"} <= {p.name for p in (tmp_path / "net").iterdir()}


def test_generate_accelerator_writes_verilog(tmp_path):
    paths = api.generate_accelerator(HardwareSpec(neuron_tiles=2, matmul_tiles=0, unit_tiles=0, neurons=64,
                                                  synapse_words=128, route_words=256), tmp_path)
    assert "module spikeforge_accelerator" in paths["verilog"].read_text()
    with pytest.raises(ValueError, match="matmul tiles need lanes that are a power of two"):
        api.generate_accelerator(HardwareSpec(neuron_tiles=2, matmul_tiles=1, unit_tiles=0, lanes=3, neurons=96),
                                 tmp_path)


def test_malformed_commands_and_events_are_rejected_and_counted():
    """On the Amaranth simulator: unknown ops, tiles out of range and events no tile can take are dropped
    and counted where they are found; the accelerator keeps working (RUN still finishes)."""
    from spikeforge.hw.accelerator import Accelerator
    from spikeforge.sim.amaranth_sim import run_amaranth
    from spikeforge.sim.bench import StreamSink, StreamSource, run_until
    from spikeforge.sw.accelerator import NETWORK_COUNTERS, TILE_COUNTERS, AcceleratorFormat, CmdOp, RespKind
    fmt = AcceleratorFormat.from_spec(HardwareSpec(neuron_tiles=2, matmul_tiles=0, unit_tiles=0, neurons=16,
                                                   synapse_words=32, route_words=32, max_fanout=4))
    accel = Accelerator(fmt)
    cmds = [{"op": 9}, {"op": CmdOp.WRITE, "tile": 3}, {"op": CmdOp.READ, "tile": 3},
            {"op": CmdOp.EVENT, "tile": 2, "addr": 1, "data": 1},        # no tile 2: the bus drops it
            {"op": CmdOp.EVENT, "tile": 0, "addr": 5, "data": 1},        # tile 0 is empty: it rejects it
            {"op": CmdOp.READ, "tile": 1, "addr": 4},                     # tile 1 has 16 / 4 = 4 lane groups
            {"op": CmdOp.RUN, "data": 2}, {"op": CmdOp.COUNTERS, "tile": 0}, {"op": CmdOp.COUNTERS, "tile": 1},
            {"op": CmdOp.COUNTERS, "tile": 2}]

    async def bench_fn(bench):
        src = StreamSource(bench, "commands", accel.commands.payload.shape(), idle=0.3)
        sink = StreamSink(bench, "responses", accel.responses.payload.shape(), backpressure=0.3)
        for c in cmds:
            src.put({"op": int(c["op"]), "tile": c.get("tile", 0), "mem": 0, "addr": c.get("addr", 0),
                     "data": c.get("data", 0)})
        n = 1 + 2 * len(TILE_COUNTERS) + len(NETWORK_COUNTERS)
        await run_until(bench, [src, sink], lambda: len(sink.received) >= n, max_cycles=5000, what="commands")
        return sink.received

    got = run_amaranth(accel, bench_fn)
    done = [g for g in got if g["kind"] == RespKind.DONE]
    assert len(done) == 1 and done[0]["step"] == 2
    counters = {(g["tile"], g["addr"]): g["data"] for g in got if g["kind"] == RespKind.COUNTER}
    tile0 = dict(zip(TILE_COUNTERS, (counters[(0, i)] for i in range(len(TILE_COUNTERS)))))
    net = dict(zip(NETWORK_COUNTERS, (counters[(2, i)] for i in range(len(NETWORK_COUNTERS)))))
    assert counters[(1, 0)] == 1                                    # the READ of a group tile 1 lacks
    assert not any(g["kind"] == RespKind.STATE for g in got)
    assert tile0["rejected"] == 1 and net["bus_rejected"] == 1 and net["rejected_commands"] == 3


@pytest.mark.verilator
def test_the_digits_vit_on_verilator_equals_the_golden_model_layer_by_layer():
    """The spikezip ViT on neuron, matmul (graded Q K^T, A V into its quant neurons) and unit (softmax,
    LayerNorm) tiles: one image with stalls on both host streams (the demo runs two more without)."""
    vit = api.convert("vit_qann_L16")
    images = build_images(vit, compile_network(vit, api.fit_spec(vit)))     # the demo's accelerator
    assert {im.kind for im in images.tiles} == {"neuron", "matmul", "unit"}
    x, counts = _inputs(vit, 1)
    runs = run_accelerator(images, counts, max_steps=128, idle=0.2, backpressure=0.3, seed=5)
    qann = run_qann(vit, x)
    golden = run_snn(vit, x, timing="layer", record=0)
    assert compare_layers(images, runs[0], golden.traces, qann.output[0]) is None
    assert not runs[0].errors, runs[0].errors
    graded = {im.tile for im in images.tiles if im.kind == "matmul" and im.program.graded}
    spikes = runs[0].spikes[~np.isin(runs[0].spikes[:, 1], list(graded))]
    assert len(spikes) == int(golden.spikes_total[0]) and runs[0].steps == int(golden.steps[0])
