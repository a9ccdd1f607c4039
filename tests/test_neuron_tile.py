"""The neuron tile (synapse memory + neuron core, accelerator events): RTL == bit-exact event model, spike
by spike, with random stalls on both streams, malformed axons and saturating products."""

import numpy as np
import pytest

from spikeforge.hw.neuron_tile import NeuronTile
from spikeforge.sim.tile_replay import random_tile_inputs, tile_golden, verify_tile
from spikeforge.sw import Bif, StBif
from spikeforge.sw.events import EventFormat, EventOp
from spikeforge.sw.neuron_tile import NeuronTileFormat, tile_core_inputs


def _tile(tokens=3, cols=6, fan_in=5, lanes=4, value_bits=3, current_width=8, model=None, seed=0):
    fmt = NeuronTileFormat(tokens=tokens, cols=cols, fan_in=fan_in, lanes=lanes, weight_bits=6, value_bits=value_bits,
                           current_width=current_width)
    w = np.random.default_rng(seed).integers(-31, 32, (cols, fan_in))
    return NeuronTile(fmt, model or StBif.signed(8, theta=20, current_width=current_width), w)


def _check(tile, steps=12, events=80, malformed=3, simulator="amaranth", seed=1):
    golden = tile_golden(tile, random_tile_inputs(tile, steps=steps, events=events, seed=seed, malformed=malformed),
                         steps)
    ((g, obs, diff, cycles),) = verify_tile(tile, [golden], simulator=simulator, idle=0.3, backpressure=0.4,
                                            seed=seed)
    assert diff.equal, str(diff)
    return g


def test_tile_equals_the_event_model_with_stalls_and_malformed_axons():
    g = _check(_tile())
    assert g.counters["rejected"] == 3 and len(g.spikes) > 20


def test_saturating_products_are_counted():
    tile = _tile(current_width=5, model=StBif.signed(8, theta=12, current_width=5))
    g = _check(tile, malformed=0)
    assert g.counters["product_overflows"] > 0


@pytest.mark.parametrize("shape", [dict(tokens=1, cols=4, fan_in=3, lanes=4), dict(tokens=5, cols=3, fan_in=7, lanes=2),
                                   dict(tokens=2, cols=9, fan_in=1, lanes=1)])
def test_tile_shapes(shape):
    _check(_tile(**shape), malformed=0)


def test_bif_tile():
    _check(_tile(model=Bif(20, -4, 3, window=4, current_width=8)), steps=16)


def test_the_event_model_matches_a_dense_linear():
    """Summed over the run, the currents the tile issues are value x weight per (token, output)."""
    tile = _tile()
    tile._MustUse__silence = True           # only its model is exercised here
    fmt = tile.fmt
    rng = np.random.default_rng(3)
    tok, k, v = rng.integers(0, 3, 40), rng.integers(0, 5, 40), rng.choice([-1, 1], 40)
    ev = fmt.event_format().events(np.r_[np.zeros(40), [EventOp.STEP]], 0, np.r_[fmt.axon(tok, k), [0]], np.r_[v, [0]])
    inputs, counts = tile_core_inputs(fmt, tile.weights, ev)
    dense = np.zeros((3, fmt.cols_padded), np.int64)
    np.add.at(dense, (inputs[:, 1] // fmt.cols_padded, inputs[:, 1] % fmt.cols_padded), inputs[:, 2])
    x = np.zeros((3, 5), np.int64)
    np.add.at(x, (tok, k), v)
    assert np.array_equal(dense[:, :fmt.cols], x @ tile.weights.T) and counts["rejected"] == 0


def test_bad_tiles_are_refused():
    fmt = NeuronTileFormat(tokens=2, cols=4, fan_in=3, lanes=2, current_width=8)
    with pytest.raises(ValueError, match="weights have shape"):
        NeuronTile(fmt, StBif.signed(8, theta=20, current_width=8), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="current_width=10 differs"):
        NeuronTile(fmt, StBif.signed(8, theta=20, current_width=10), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="over the 8-bit range"):
        NeuronTile(fmt, StBif.signed(8, theta=20, current_width=8), np.full((4, 3), 300))
    assert isinstance(fmt.event_format(), EventFormat)


@pytest.mark.verilator
def test_tile_on_verilator():
    _check(_tile(), steps=20, events=200, simulator="verilator")


def _programmed(bias=True, seed=4, readout=False):
    """A tile whose hardware is larger than the program (tokens, cols, fan-in, memories)."""
    from spikeforge.sw.neuron_tile import TileProgram
    fmt = NeuronTileFormat(tokens=4, cols=8, fan_in=6, lanes=4, weight_bits=6, value_bits=4, current_width=9,
                           core_neurons=24, synapse_words=20)
    model = StBif(30, -8, 7, current_width=9, v_width=12)
    rng = np.random.default_rng(seed)
    prog = TileProgram(3, 7, 5, rng.integers(-31, 32, (7, 5)), rng.integers(-60, 61, (3, 7)) if bias else None,
                       theta=23, s_min=-3, s_max=4, readout=readout)
    return fmt, model, prog


def test_bias_and_a_program_smaller_than_the_tile():
    fmt, model, prog = _programmed()
    tile = NeuronTile(fmt, model, program=prog)
    g = _check(tile, steps=10, events=60, malformed=2)
    inputs, _ = tile_core_inputs(fmt, prog, fmt.event_format().events([EventOp.STEP], 0, 0, 0))
    assert len(inputs) == int((prog.bias != 0).sum()) and len(g.spikes) > 10     # bias: once per neuron


def test_a_tile_programmed_over_its_writes_port_equals_one_built_with_the_program():
    from spikeforge.sim.amaranth_sim import run_amaranth
    from spikeforge.sim.tile_replay import replay_tile
    from spikeforge.sim.trace import diff_traces
    fmt, model, prog = _programmed()
    reference = NeuronTile(fmt, model, program=prog)
    reference._MustUse__silence = True      # only its program and golden are used
    golden = tile_golden(reference, random_tile_inputs(reference, steps=8, events=50, seed=2), 8)
    empty = NeuronTile(fmt, model)
    r = run_amaranth(empty, lambda bench: replay_tile(bench, empty, golden, idle=0.2, backpressure=0.3, seed=5,
                                                      writes=prog.writes(fmt, model)))
    diff = diff_traces(golden, r.trace)
    assert diff.equal, str(diff)


def test_programs_that_do_not_fit_are_refused():
    from spikeforge.sw.neuron_tile import TileProgram
    fmt, model, prog = _programmed()
    with pytest.raises(ValueError, match="tokens = 5, the tile has 4"):
        TileProgram(5, 7, 5, prog.weights).check(fmt, model)
    with pytest.raises(ValueError, match=r"neurons \(tokens x cols padded to lanes\) = 32, the tile has 24"):
        TileProgram(4, 8, 6, np.zeros((8, 6))).check(fmt, model)
    with pytest.raises(ValueError, match="bias spans"):
        TileProgram(3, 7, 5, prog.weights, np.full((3, 7), 1000)).check(fmt, model)
    with pytest.raises(ValueError, match="theta=5000 does not fit"):
        TileProgram(3, 7, 5, prog.weights, theta=5000).check(fmt, model)


def _recurrent(seed=0, bias=True, window=3, value_bits=5):
    """A recurrent program (3 elements of a window each) on a tile larger than it needs."""
    from spikeforge.sw.neuron_tile import TileProgram
    fmt = NeuronTileFormat(tokens=4, cols=7, fan_in=5, lanes=2, weight_bits=6, value_bits=value_bits, current_width=10,
                           core_neurons=24, synapse_words=20, buffer_words=16)
    model = StBif(30, -8, 7, current_width=10, v_width=12)
    rng = np.random.default_rng(seed)
    prog = TileProgram(1, 7, 5, rng.integers(-31, 32, (7, 5)), rng.integers(-20, 21, (1, 7)) if bias else None,
                       theta=23, s_min=-2, s_max=4, window=window, elements=3)
    return NeuronTile(fmt, model, program=prog)


@pytest.mark.parametrize("seed, bias, window", [(0, False, 3), (1, True, 4), (2, True, 1)])
def test_recurrent_tile_equals_the_event_model(seed, bias, window):
    """Buffered inputs (saturating: 5-bit values), a window per element, spikes at element x width + neuron,
    a lone STEP once every element ran; malformed axons (element beyond the program) rejected."""
    tile = _recurrent(seed, bias, window)
    g = _check(tile, steps=3 * window + 2, events=40, malformed=2, seed=seed)
    assert g.counters["product_overflows"] > 0 and g.counters["rejected"] == 2
    assert set(g.spikes[:, 1] // 8) == {0, 1, 2}                  # every element's output indices
    assert g.spikes[:, 0].max() < 3 * window                       # nothing after the last window


def test_recurrent_buffer_forwards_back_to_back_events_on_one_word():
    """One event per cycle into the buffer: runs of events on the same word (each read while the one
    before is written) must add up, as must alternating words."""
    tile = _recurrent(1, True, 3, value_bits=8)
    fmt = tile.fmt
    same = [(0, int(fmt.axon(1, 2)), 1)] * 9 + [(0, int(fmt.axon(2, 4)), -1)] * 4
    alternating = [(1, int(fmt.axon(e, 3)), 2) for e in (1, 2) * 5]
    golden = tile_golden(tile, np.array(same + alternating), 11)
    ((g, obs, diff, cycles),) = verify_tile(tile, [golden], simulator="amaranth", idle=0.0, backpressure=0.0)
    assert diff.equal, str(diff)


def test_recurrent_model_replays_each_row_at_its_window_start():
    from spikeforge.sw.neuron_tile import recurrent_core_inputs
    tile = _recurrent(bias=False, value_bits=8)
    tile._MustUse__silence = True
    fmt, prog = tile.fmt, tile.program
    # element 1 gets k=2 twice by its window start (step 3) and once after it (ignored: replayed already)
    steps, axons, values = [0, 2, 3, 4], fmt.axon([1, 1, 1, 1], [2, 2, 2, 2]), [1, 1, 1, 5]
    ops, ax, vs = [], [], []
    for s in range(6):
        for st, a, v in zip(steps, axons, values):
            if st == s:
                ops.append(EventOp.EVENT), ax.append(a), vs.append(v)
        ops.append(EventOp.STEP), ax.append(0), vs.append(0)
    windows, counts = recurrent_core_inputs(fmt, prog, fmt.event_format().events(ops, 0, ax, vs))
    assert [e for e, _ in windows] == [0, 1]                      # element 2's window starts at step 6
    assert len(windows[0][1]) == 0 and counts["rejected"] == 0
    assert np.array_equal(windows[1][1][:, 2], 3 * prog.weights[:, 2])      # value 1 + 1 + 1


def test_recurrent_programs_that_do_not_fit_are_refused():
    from spikeforge.sw.neuron_tile import TileProgram
    tile = _recurrent()
    tile._MustUse__silence = True
    fmt, model, w = tile.fmt, tile.model, tile.program.weights
    with pytest.raises(ValueError, match=r"input-buffer words \(elements x fan_in; raise buffer_words\) = 20, the "
                                         r"tile has 16"):
        TileProgram(1, 7, 5, w, window=2, elements=4).check(fmt, model)
    with pytest.raises(ValueError, match="runs one token"):
        TileProgram(2, 7, 5, w, window=2, elements=2)
    with pytest.raises(ValueError, match="elements=2 needs a window"):
        TileProgram(1, 7, 5, w, elements=2)


@pytest.mark.verilator
def test_recurrent_tile_on_verilator():
    _check(_recurrent(1, True, 4), steps=14, events=60, simulator="verilator", seed=4)
