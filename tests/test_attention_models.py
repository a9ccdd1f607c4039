"""Attention references and bit-exact models: formulas vs event models, error vs the float rule, errors."""

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from spikeforge.sw import attention as att
from spikeforge.sw.phase_coding import phase_decode, phase_encode


def _codes(seed, T, B, shape):
    g = torch.Generator().manual_seed(seed)
    return phase_encode(torch.randn(*shape, generator=g, dtype=torch.float64), T, B, scale=2.5)


@given(seed=st.integers(0, 10_000), T=st.sampled_from([4, 8, 16]), B=st.sampled_from([1.15, 1.4, 2.0]),
       b_first=st.booleans())
def test_event_model_equals_three_term_formula(seed, T, B, b_first):
    a, b = _codes(seed, T, B, (3, 4)), _codes(seed + 1, T, B, (5, 4))
    w = [0.5, 1.0, 1.5, 2.0]
    fmt = att.TraceFormat("phase", T=T, B=B, channels=4, weights=w)
    run = att.TraceMatmulModel(fmt, rows=3, cols=5).run(att.matmul_events(a, b, b_first=b_first))
    assert run.rejected == 0
    x = torch.zeros(T, 3, 5, dtype=torch.float64)
    for t, i, j, v in run.products:
        x[t, i, j] += v
    # same per-step increments as the paper's formula (traces from the realised base, then rounded)
    ref = att.phase_matmul_increments(a, b, float(fmt.b_q), torch.tensor(w)) * (1 << fmt.frac_bits)
    assert torch.allclose(x, ref, atol=4 * 0.5 + 1e-6)   # at most one rounded trace per (pair, channel)
    # and the decoded product is the product of the decoded values
    exact = (phase_decode(a, B) * torch.tensor(w)) @ phase_decode(b, B).T
    assert torch.allclose(att.phase_matmul(a, b, B, torch.tensor(w)), exact, atol=1e-12)


@given(seed=st.integers(0, 10_000), b_first=st.booleans())
def test_count_mode_equals_sesa(seed, b_first):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-1, 2, (7, 4, 3), generator=g)
    k = torch.randint(-1, 2, (7, 5, 3), generator=g)
    inc = att.sesa_increments(q, k)
    assert torch.equal(inc.sum(0), q.sum(0) @ k.sum(0).T)
    run = att.TraceMatmulModel(att.TraceFormat("count", T=7, channels=3), rows=4, cols=5).run(
        att.matmul_events(q, k, b_first=b_first))
    x = torch.zeros_like(inc)
    for t, i, j, v in run.products:
        x[t, i, j] += v
    assert torch.equal(x, inc)


def test_phase_trace_rejects_second_spike_and_late_spikes():
    fmt = att.TraceFormat("phase", T=2, B=2.0, channels=1)
    ev = att.MatmulEvent
    run = att.TraceMatmulModel(fmt, rows=1, cols=1).run(
        [ev("clear"), ev("spike", "a", 0, 0), ev("spike", "a", 0, 0), ev("spike", "b", 3, 0), ev("step"),
         ev("step"), ev("spike", "b", 0, 0), ev("step")])
    assert run.rejected == 3 and run.products == []


def test_woss_matches_reference_points():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(1000, 49, generator=g, dtype=torch.float64) * 2
    exact = torch.softmax(s, -1)
    for T, B, max_ref, mean_ref in ((40, 1.15, 0.040, 7.7e-4), (16, 1.4, 0.066, 1.7e-3)):
        err = (att.woss_softmax(s, T, B) - exact).abs()
        assert err.max() < max_ref * 1.1 and abs(err.mean() / mean_ref - 1) < 0.1
        fixed = (att.woss_softmax_fixed(s, T, B, score_bound=32).probabilities() - exact).abs()
        assert fixed.mean() <= err.mean() * 1.1   # the bit-exact model adds < 10 %


def test_woss_batch_dims_and_winner_first():
    s = torch.tensor([[[0.0, 1.0, -3.0]], [[2.0, 2.0, 0.0]]])
    p = att.woss_softmax(s, 16, 1.4)
    assert p.shape == s.shape and torch.allclose(p.sum(-1), torch.ones(2, 1, dtype=p.dtype))
    steps = att.woss_fire_steps(s.unsqueeze(0), 16, 1.4)
    assert steps[0, 0, 1] == 1 and steps[1, 0, 0] == steps[1, 0, 1] == 1


@settings(max_examples=20)
@given(seed=st.integers(0, 10_000), inhibition=st.sampled_from(["first_step", "window_max"]))
def test_head_fixed_close_to_float(seed, inhibition):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 6, 8, generator=g, dtype=torch.float64) for _ in range(3))
    ref = att.spiked_attention(q, k, v, 16, 1.4, inhibition=inhibition)
    out, res = att.spiked_attention_fixed(q, k, v, 16, 1.4, inhibition=inhibition)
    assert res.overflows == 0 and res.empty_rows == 0
    # fire steps may move by one where a potential sits on a threshold; elsewhere outputs agree closely
    same = (res.steps == ref.steps).all(-1)
    assert (out - ref.out).abs()[same].max() < 0.01 if same.any() else True


def test_window_max_inhibition_is_the_analog_rule():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    r = att.spiked_attention(q, k, v, 40, 1.15, inhibition="window_max")
    assert torch.equal(r.steps, att.woss_fire_steps(r.scores.unsqueeze(0), 40, 1.15))


@pytest.mark.parametrize("call, match", [
    (lambda: att.WossFormat(1, 1.4), "T=1 is too small"),
    (lambda: att.WossFormat(8, 1.0), "B=1.0 is out of range"),
    (lambda: att.WossFormat(40, 2.0, score_bound=64, frac_bits=30), "lower frac_bits"),
    (lambda: att.WossFormat(8, 1.4, v_width=8), "raise v_width to at least"),
    (lambda: att.WossFormat(8, 1.4, x_width=4), "raise x_width to at least"),
    (lambda: att.WossFormat(8, 1.4, inhibition="max"), "not a WOSS inhibition rule"),
    (lambda: att.TraceFormat("phase", T=8, B=1.4, channels=2, weights=[1.0]), "one weight per channel"),
    (lambda: att.TraceFormat("log", T=8), "not a trace mode"),
    (lambda: att.TraceFormat("phase", T=0, B=1.4), "T=0 is too small"),
    (lambda: att.TraceFormat("phase", T=8, B=1.0001, b_frac_bits=4), "rounds to 1"),
])
def test_bad_parameters_name_the_limit(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_every_table_combination_elaborates_a_format():
    for T in (4, 8, 16, 24, 40):
        for B in (1.1, 1.15, 1.25, 1.4, 2.0):
            fmt = att.SpikedHeadFormat(T, B, rows=16, keys=16, dim=16, dim_v=16, weights=[0.25] * 16)
            assert fmt.woss.v_width <= 62 and fmt.av_width + fmt.out_frac_bits <= 62
            assert math.isfinite(fmt.woss.thresholds[0])
