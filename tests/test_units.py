"""The bit-exact softmax / LayerNorm f: exact integer arithmetic, within one level of the float f, the
same in the QANN and the SNN."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.sw.ir import Node
from spikeforge.sw.units import isqrt, unit_constants, unit_function, unit_function_float


def _softmax(in_scale=0.06, out_step=0.05):
    return Node("sm", "softmax", [], (4, 16), params={"in_scale": in_scale, "out_step": out_step, "n_min": 0, "n_max": 15})


def _layernorm(c=32, seed=0):
    rng = np.random.default_rng(seed)
    return Node("ln", "layernorm", [], (4, c), params={"in_scale": 0.1, "out_step": 0.45, "n_min": -8, "n_max": 7,
                                                    "eps": 1e-5},
                arrays={"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.uniform(-0.2, 0.2, c)})


@given(st.lists(st.integers(0, (1 << 62) - 1), min_size=1, max_size=50))
def test_isqrt_is_exact(values):
    x = torch.tensor(values, dtype=torch.int64)
    assert isqrt(x).tolist() == [math.isqrt(v) for v in values]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["softmax", "layernorm"]))
def test_integer_f_is_within_one_level_of_the_float_f(seed, op):
    node = _softmax() if op == "softmax" else _layernorm(seed=seed % 7)
    rng = np.random.default_rng(seed)
    total = torch.from_numpy(rng.integers(-120, 121, (3, *node.shape)))
    a, b = unit_function(node, total), unit_function_float(node, total)
    assert int((a - b).abs().max()) <= 1
    assert float((a != b).double().mean()) < 0.05


def test_softmax_of_a_dominant_score_is_the_top_level():
    node = _softmax()
    total = torch.zeros(1, 4, 16, dtype=torch.int64)
    total[..., 3] = 500                           # exp of every other score underflows the table
    out = unit_function(node, total)
    assert out[..., 3].eq(15).all() and out[..., :3].eq(0).all()


def test_constant_row_layernorm_gives_beta():
    node = _layernorm()
    total = torch.full((1, 4, 32), 17, dtype=torch.int64)      # variance 0: eps only
    out = unit_function(node, total)
    beta_levels = torch.clamp(torch.floor(torch.from_numpy(node.arrays["beta"]) / 0.45 + 0.5), -8, 7)
    assert torch.equal(out[0, 0], beta_levels.to(torch.int64))


def test_a_scale_too_fine_for_the_exp_table_is_refused():
    with pytest.raises(ValueError, match="needs an exp table of .* entries"):
        unit_constants(_softmax(in_scale=1e-6))
