"""The unit (softmax / LayerNorm) and matmul tiles against their event-level models, under random stalls
(Amaranth simulator and Verilator)."""

import numpy as np
import pytest

from spikeforge.hw.matmul_tile import MatmulTile
from spikeforge.hw.unit_tile import UnitTile
from spikeforge.sim.tile_replay import tile_golden, verify_tile
from spikeforge.sw.events import EventOp
from spikeforge.sw.matmul_tile import MatmulProgram, MatmulTileFormat, matmul_outputs
from spikeforge.sw.neurons import StBif
from spikeforge.sw.unit_tile import UnitProgram, UnitTileFormat, unit_core_inputs
from spikeforge.sw.units import unit_constants

MODEL = StBif(1, -16, 15, current_width=18, v_width=20)


class _Node:
    """The parts of an IR unit node :func:`unit_constants` reads."""

    def __init__(self, op, width, **params):
        self.op, self.shape, self.params = op, (4, width), params
        rng = np.random.default_rng(3)
        self.arrays = {"gamma": rng.uniform(0.5, 1.5, width), "beta": rng.uniform(-0.5, 0.5, width)}

    def describe(self):
        return f"{self.op} unit"


UNITS = {"softmax": _Node("softmax", 16, in_scale=0.06, out_step=0.05, n_min=0, n_max=15),
         "layernorm": _Node("layernorm", 12, in_scale=0.12, out_step=0.45, n_min=-8, n_max=7, eps=1e-5)}


def _unit_tile(op, rows=3):
    node = UNITS[op]
    W = node.shape[1]
    fmt = UnitTileFormat(rows=4, width=W, lanes=4, current_width=18, value_bits=8, exp_words=256)
    k = unit_constants(node)
    return UnitTile(fmt, MODEL, program=UnitProgram(rows, W, k, 1, k.n_min, k.n_max)), fmt


def _unit_inputs(fmt, rows, width, seed, events=120, steps=8, values=(-3, -2, -1, 1, 2, 3, 5)):
    rng = np.random.default_rng(seed)
    inputs = np.stack([rng.integers(0, steps - 2, events), fmt.axon(rng.integers(0, rows, events),
                                                                   rng.integers(0, width, events)),
                       rng.choice(values, events)], 1)
    bad_col = fmt.axon(0, width) if width < 1 << fmt.col_bits else fmt.axon(rows, 1)
    inputs = np.concatenate([inputs, [[1, fmt.axon(rows, 0), 1], [2, bad_col, 1]]])   # malformed
    return inputs[np.argsort(inputs[:, 0], kind="stable")]


@pytest.mark.parametrize("op,values,backpressure", [("softmax", None, 0.3), ("layernorm", None, 0.3),
                                                   ("layernorm", (-120, -77, 90, 127), 0.3), ("softmax", None, 0.9),
                                                   ("layernorm", None, 0.9)])
def test_unit_tile_equals_its_model_with_stalls(op, values, backpressure):
    """Large totals included: the square root's partial result spans the whole radicand (a root register
    only as wide as the final root lost its high bits once totals reached about 20 in a 32-wide row)."""
    _check_unit(op, values, backpressure, "amaranth")


def _check_unit(op, values, backpressure, simulator):
    tile, fmt = _unit_tile(op)
    extra = {} if values is None else {"values": values}
    golden = tile_golden(tile, _unit_inputs(fmt, 3, UNITS[op].shape[1], seed=1, events=300, **extra), 10)
    assert len(golden.spikes) > 20 and golden.counters["rejected"] == 2
    for _, observed, diff, _ in verify_tile(tile, [golden], simulator=simulator, idle=0.3, backpressure=backpressure,
                                            seed=4):
        assert diff.equal, str(diff)
        assert observed.counters == golden.counters


@pytest.mark.verilator
@pytest.mark.parametrize("op", ["softmax", "layernorm"])
def test_unit_tile_on_verilator(op):
    _check_unit(op, None, 0.5, "verilator")


def test_unit_model_evaluates_changed_rows_only_and_its_levels_telescope():
    tile, fmt = _unit_tile("softmax")
    prog = tile.program
    inputs = _unit_inputs(fmt, 3, 16, seed=2)
    rows = [r for t in range(8) for r in
            [(EventOp.EVENT, 0, a, v) for s, a, v in inputs if s == t] + [(EventOp.STEP, 0, 0, 0)]]
    ev = fmt.event_format().events(*(np.array([r[f] for r in rows]) for f in range(4)))
    core, counts = unit_core_inputs(fmt, prog, ev)
    # every row at step 0, then only rows with input
    assert counts["evaluations"] < 3 * 8 and counts["rejected"] == 2
    # the differences of each neuron add up to f of its final totals
    import torch
    from spikeforge.sw.units import unit_function
    ok = inputs[(inputs[:, 1] >> fmt.col_bits) < 3]
    ok = ok[(ok[:, 1] & ((1 << fmt.col_bits) - 1)) < 16]
    total = np.zeros((3, 16), np.int64)
    np.add.at(total, (ok[:, 1] >> fmt.col_bits, ok[:, 1] & ((1 << fmt.col_bits) - 1)), ok[:, 2])
    final = unit_function(None, torch.from_numpy(total[None]), prog.constants)[0].numpy()
    summed = np.zeros(3 * 16, np.int64)
    np.add.at(summed, core[:, 1], core[:, 2])
    assert np.array_equal(summed.reshape(3, 16), final)


@pytest.mark.parametrize("graded,backpressure", [(True, 0.3), (False, 0.3), (True, 0.9), (False, 0.9)])
def test_matmul_tile_equals_its_model_with_stalls(graded, backpressure):
    _check_matmul(graded, backpressure, "amaranth")


@pytest.mark.verilator
@pytest.mark.parametrize("graded", [True, False])
def test_matmul_tile_on_verilator(graded):
    _check_matmul(graded, 0.5, "verilator")


def test_tiles_round_trip_through_the_block_registry():
    """A tile's config rebuilds the same tile (kind, format, model, program) from the registry: the
    simulator entry replays any tile kind from (kind, config)."""
    import json

    from spikeforge.hw.blocks import block_from_config, block_kinds
    unit, _ = _unit_tile("layernorm")
    matmul = MatmulTile(MatmulTileFormat(rows=4, inner=3, cols=5, lanes=4, current_width=18),
                        MODEL, program=MatmulProgram(4, 3, 5, gain=3, graded=True))
    for tile in (unit, matmul):
        tile._MustUse__silence = True
        config = json.loads(json.dumps(tile.config()))
        again = block_from_config(tile.block_kind, config)
        again._MustUse__silence = True
        assert type(again) is type(tile) and again.config() == tile.config()
    assert {"neuron_tile", "matmul_tile", "unit_tile", "accelerator", "spiked_head"} <= set(block_kinds())
    with pytest.raises(ValueError, match="unknown block kind 'nope'"):
        block_from_config("nope", {})


def _check_matmul(graded, backpressure, simulator):
    fmt = MatmulTileFormat(rows=8, inner=8, cols=8, lanes=4, current_width=18, value_bits=8, trace_bits=6)
    prog = MatmulProgram(6, 5, 7, gain=1 if graded else 127, graded=graded, theta=300, s_min=-8, s_max=7)
    tile = MatmulTile(fmt, MODEL, program=prog)
    rng = np.random.default_rng(2)
    E = 120
    left = rng.random(E) < 0.5
    axon = np.where(left, fmt.left_axon(rng.integers(0, 6, E), rng.integers(0, 5, E)),
                    fmt.right_axon(rng.integers(0, 5, E), rng.integers(0, 7, E)))
    inputs = np.stack([rng.integers(0, 8, E), axon, rng.choice([-1, 1], E)], 1)
    inputs = np.concatenate([inputs, [[2, fmt.left_axon(6, 0), 1], [3, fmt.right_axon(0, 7), 1]]])
    inputs = inputs[np.argsort(inputs[:, 0], kind="stable")]
    golden = tile_golden(tile, inputs, 12)
    assert len(golden.spikes) > 50 and golden.counters["rejected"] == 2
    for _, observed, diff, _ in verify_tile(tile, [golden], simulator=simulator, idle=0.3, backpressure=backpressure,
                                            seed=5):
        assert diff.equal, str(diff)
        assert observed.counters == golden.counters


def test_matmul_increments_add_up_to_the_product():
    fmt = MatmulTileFormat(rows=4, inner=3, cols=5, lanes=4, current_width=18, value_bits=8, trace_bits=8)
    prog = MatmulProgram(4, 3, 5, gain=3, graded=True)
    rng = np.random.default_rng(0)
    a, b = rng.integers(-3, 4, (4, 3)), rng.integers(-3, 4, (3, 5))
    rows = [(EventOp.EVENT, 0, int(fmt.left_axon(i, k)), int(np.sign(a[i, k])))
            for i in range(4) for k in range(3) for _ in range(abs(a[i, k]))]
    rows += [(EventOp.EVENT, 0, int(fmt.right_axon(k, j)), int(np.sign(b[k, j])))
             for k in range(3) for j in range(5) for _ in range(abs(b[k, j]))]
    order = rng.permutation(len(rows))
    ev = fmt.event_format().events(*(np.array([rows[i][f] for i in order]) for f in range(4)))
    out, counts = matmul_outputs(fmt, prog, ev)
    got = np.zeros(4 * prog.groups(4) * 4, np.int64)
    np.add.at(got, out[:, 1], out[:, 2])
    assert np.array_equal(got.reshape(4, -1)[:, :5], 3 * a @ b)
    assert counts["product_overflows"] == 0


def test_programs_that_do_not_fit_are_refused():
    tile, fmt = _unit_tile("softmax")
    k = unit_constants(UNITS["softmax"])
    with pytest.raises(ValueError, match="rows"):
        UnitProgram(5, 16, k).check(fmt, MODEL)
    small = UnitTileFormat(rows=4, width=16, lanes=4, current_width=18, exp_words=16)
    with pytest.raises(ValueError, match="exp table"):
        UnitProgram(2, 16, k).check(small, MODEL)
    narrow = UnitTileFormat(rows=4, width=16, lanes=4, current_width=18, exp_words=256, scale_bits=12)
    with pytest.raises(ValueError, match="scale_bits"):
        UnitProgram(2, 16, k).check(narrow, MODEL)
    mf = MatmulTileFormat(rows=4, inner=4, cols=4, lanes=4, current_width=18, gain_bits=4)
    with pytest.raises(ValueError, match="gain"):
        MatmulProgram(4, 4, 4, gain=127).check(mf, MODEL)
    with pytest.raises(ValueError, match="power of two"):
        MatmulTile(MatmulTileFormat(rows=4, inner=4, cols=6, lanes=3, current_width=18), MODEL)
