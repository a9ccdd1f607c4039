"""Attention blocks in RTL vs their bit-exact models, event by event, with random stalls.

Verilator runs cover T in {8, 16, 40} and B in {1.15, 1.4, 2.0} for the trace-matmul engine (phase
and count traces, with and without the A·V normaliser column), the WOSS softmax block (both
inhibition rules, two periods each so the end-of-period clear is exercised), the A·V output stage
(scaling sweeps, divider, empty rows, saturation) and a whole head (QK^T -> WOSS -> A·V -> output,
two heads back to back), with malformed beats, 30 % idle input cycles and 40 % output backpressure.
"""

import pytest
import torch

from spikeforge.hw.attention_output import AttentionOutput
from spikeforge.hw.spiked_head import SpikedHead
from spikeforge.hw.trace_matmul import TraceMatmul
from spikeforge.hw.woss_softmax import WossSoftmax
from spikeforge.sim.attention_replay import (head_events, head_golden, matmul_golden, output_golden,
                                             random_matmul_events, random_output_events, random_woss_events,
                                             verify_block, woss_golden)
from spikeforge.sw.attention import SpikedHeadFormat, TraceFormat, WossFormat, channel_scales
from spikeforge.sw.phase_coding import phase_encode

MATMUL_CONFIGS = [
    # (mode, T, B, channels, rows, cols, norm, count_width)
    ("phase", 8, 2.0, 4, 4, 6, False, 8),
    ("phase", 16, 1.4, 8, 6, 5, True, 8),
    ("phase", 40, 1.15, 3, 5, 7, False, 8),
    ("count", 12, 2.0, 4, 5, 3, False, 3),
]
WOSS_CONFIGS = [
    # (T, B, rows, keys, inhibition, score_bound)
    (8, 2.0, 3, 5, "first_step", 8.0),
    (16, 1.4, 4, 6, "window_max", 8.0),
    (40, 1.15, 2, 7, "first_step", 4.0),
]


def _matmul(mode, T, B, channels, rows, cols, norm, count_width):
    weights = [0.5 + 0.25 * i for i in range(channels)] if mode == "phase" else None
    fmt = TraceFormat(mode, T=T, B=B, channels=channels, weights=weights, count_width=count_width)
    return TraceMatmul(fmt, rows=rows, cols=cols, norm_column=norm)


def _matmul_goldens(eng, n=2):
    density = 0.7 if eng.fmt.mode == "phase" else 0.4
    return [matmul_golden(eng, random_matmul_events(eng, steps=eng.fmt.T, density=density, seed=s, malformed=8))
            for s in range(n)]


def _woss(T, B, rows, keys, inhibition, score_bound):
    return WossSoftmax(WossFormat(T, B, score_bound=score_bound, inhibition=inhibition), rows=rows, keys=keys)


def _check(checks):
    for c in checks:
        assert c.diff.equal, f"{c.simulator} idle={c.idle} backpressure={c.backpressure}:\n{c.diff}"


@pytest.mark.parametrize("cfg", MATMUL_CONFIGS[:2] + MATMUL_CONFIGS[3:], ids=lambda c: f"{c[0]}-T{c[1]}-B{c[2]}")
def test_trace_matmul_amaranth(cfg):
    eng = _matmul(*cfg)
    _check(verify_block(eng, _matmul_goldens(eng, 1), simulator="amaranth", idle=0.3, backpressure=0.4))


@pytest.mark.verilator
@pytest.mark.parametrize("cfg", MATMUL_CONFIGS, ids=lambda c: f"{c[0]}-T{c[1]}-B{c[2]}-norm{int(c[6])}")
def test_trace_matmul_verilator(cfg):
    eng = _matmul(*cfg)
    goldens = _matmul_goldens(eng)
    assert sum(g.counters["rejected"] for g in goldens) > 0
    if eng.fmt.mode == "count":
        assert sum(g.counters["overflows"] for g in goldens) > 0   # saturation exercised
    _check(verify_block(eng, goldens, simulator="verilator", idle=0.3, backpressure=0.4))


def _woss_goldens(blk, n=2):
    goldens = [woss_golden(blk, random_woss_events(blk, periods=2, adds_per_step=3 * blk.keys, seed=s, malformed=5))
               for s in range(n)]
    # one run with inputs far beyond score_bound so x and v saturate
    goldens.append(woss_golden(blk, random_woss_events(blk, periods=1, adds_per_step=2 * blk.keys, seed=99,
                                                       spread=16.0)))
    return goldens


@pytest.mark.parametrize("cfg", WOSS_CONFIGS[:2], ids=lambda c: f"T{c[0]}-B{c[1]}-{c[4]}")
def test_woss_amaranth(cfg):
    blk = _woss(*cfg)
    _check(verify_block(blk, _woss_goldens(blk, 1)[:1], simulator="amaranth", idle=0.3, backpressure=0.4))


@pytest.mark.verilator
@pytest.mark.parametrize("cfg", WOSS_CONFIGS, ids=lambda c: f"T{c[0]}-B{c[1]}-{c[4]}")
def test_woss_verilator(cfg):
    blk = _woss(*cfg)
    goldens = _woss_goldens(blk)
    assert sum(len(g.spikes) for g in goldens) > 0
    assert sum(g.counters["rejected"] for g in goldens) > 0
    assert goldens[-1].counters["overflows"] > 0
    _check(verify_block(blk, goldens, simulator="verilator", idle=0.3, backpressure=0.4))


def test_blocks_refuse_bad_parameters():
    fmt = TraceFormat("count", T=4, channels=2)
    with pytest.raises(ValueError, match="norm_column needs a phase-mode"):
        TraceMatmul(fmt, rows=2, cols=2, norm_column=True)
    with pytest.raises(ValueError, match="rows=0 is too small"):
        TraceMatmul(fmt, rows=0, cols=2)
    with pytest.raises(TypeError, match="WossFormat"):
        WossSoftmax(fmt, rows=2, keys=2)
    with pytest.raises(ValueError, match="value_width=80 is too large"):
        WossSoftmax(WossFormat(8, 1.4), rows=2, keys=2, value_width=80)


OUTPUT_CONFIGS = [
    # (T, B, rows, keys, dim_v, out_frac_bits)
    (8, 2.0, 3, 5, 4, 8),
    (16, 1.4, 3, 6, 3, 12),
    (40, 1.15, 2, 3, 2, 10),
]


def _output(T, B, rows, keys, dim_v, out_frac_bits):
    fmt = SpikedHeadFormat(T, B, rows=rows, keys=keys, dim=2, dim_v=dim_v, weights=[0.5, 0.5],
                           out_frac_bits=out_frac_bits)
    return AttentionOutput(fmt)


def _output_goldens(blk, n=2):
    goldens = [output_golden(blk, random_output_events(blk, windows=2, adds_per_step=2 * blk.rows * blk.cols, seed=s,
                                                       malformed=4)) for s in range(n)]
    # accumulator saturation: the largest values, many times, on row 0 (plus a small normaliser)
    top = (1 << (blk.value_width - 1)) - 1
    hammer = [("clear",)]
    for _ in range(blk.fmt.T):
        hammer += [("add", 0, 0, top), ("add", 0, blk.cols - 1, -top - 1)] * 40 + [("add", 0, blk.cols, 1), ("step",)]
    goldens.append(output_golden(blk, hammer))
    return goldens


@pytest.mark.parametrize("cfg", OUTPUT_CONFIGS[:1], ids=lambda c: f"T{c[0]}-B{c[1]}")
def test_attention_output_amaranth(cfg):
    blk = _output(*cfg)
    _check(verify_block(blk, _output_goldens(blk), simulator="amaranth", idle=0.3, backpressure=0.4))


@pytest.mark.verilator
@pytest.mark.parametrize("cfg", OUTPUT_CONFIGS, ids=lambda c: f"T{c[0]}-B{c[1]}")
def test_attention_output_verilator(cfg):
    blk = _output(*cfg)
    goldens = _output_goldens(blk)
    assert sum(g.counters["rejected"] for g in goldens) > 0
    assert sum(g.counters["empty_rows"] for g in goldens) > 0
    assert goldens[-1].counters["overflows"] > blk.fmt.T       # accumulator saturation, not only quotients
    _check(verify_block(blk, goldens, simulator="verilator", idle=0.3, backpressure=0.4))


HEAD_CONFIGS = [
    # (T, B, rows, keys, dim, dim_v, inhibition)
    (8, 2.0, 3, 4, 2, 3, "first_step"),
    (16, 1.4, 4, 6, 4, 3, "window_max"),
    (40, 1.15, 3, 5, 3, 2, "first_step"),
]


def head_case(T, B, rows, keys, dim, dim_v, inhibition, seed=0):
    """A head format for random q/k/v (scales from the data) and their one-spike codes."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(rows, dim, generator=g, dtype=torch.float64)
    k = torch.randn(keys, dim, generator=g, dtype=torch.float64)
    v = torch.randn(keys, dim_v, generator=g, dtype=torch.float64)
    sq, sk, sv = channel_scales(q), channel_scales(k), channel_scales(v)
    fmt = SpikedHeadFormat(T, B, rows=rows, keys=keys, dim=dim, dim_v=dim_v, weights=sq * sk / dim ** 0.5,
                           out_frac_bits=10, inhibition=inhibition)
    return fmt, phase_encode(q, T, B, sq), phase_encode(k, T, B, sk), phase_encode(v, T, B, sv)


def _head_goldens(cfg):
    fmt, qs, ks, vs = head_case(*cfg)
    head = SpikedHead(fmt)
    _, qs2, ks2, vs2 = head_case(*cfg, seed=1)
    clean = head_golden(head, head_events(qs, ks, vs, seed=1))
    # malformed beats and extra steps, then a second head right behind it
    messy = head_golden(head, head_events(qs2, ks2, vs2, seed=2, malformed=12, extra_steps=2)
                        + head_events(qs, ks, vs, seed=3))
    return head, fmt, (qs, ks, vs), [clean, messy]


def _head_output(golden, fmt, head_index=0):
    out = torch.zeros(fmt.rows * fmt.dim_v, dtype=torch.int64)
    for step, idx, value in golden.spikes:
        if step // fmt.T == head_index:
            out[idx] = int(value)
    return out.reshape(fmt.rows, fmt.dim_v)


@pytest.mark.parametrize("cfg", HEAD_CONFIGS, ids=lambda c: f"T{c[0]}-B{c[1]}-{c[6]}")
def test_head_golden_equals_bit_exact_model(cfg):
    """The event-level chain of block models (what the RTL is checked against) computes exactly what
    SpikedHeadFormat.run computes from the spike tensors."""
    head, fmt, (qs, ks, vs), (clean, messy) = _head_goldens(cfg)
    head._MustUse__silence = True      # only the goldens are needed here
    ref = fmt.run(qs, ks, vs)
    assert torch.equal(_head_output(clean, fmt), ref.out)
    assert torch.equal(_head_output(messy, fmt, head_index=1), ref.out)
    assert messy.counters["rejected"] > 0 and clean.counters["rejected"] == 0


def test_head_amaranth():
    head, _, _, goldens = _head_goldens(HEAD_CONFIGS[0])
    _check(verify_block(head, goldens, simulator="amaranth", idle=0.3, backpressure=0.4))


@pytest.mark.verilator
@pytest.mark.parametrize("cfg", HEAD_CONFIGS, ids=lambda c: f"T{c[0]}-B{c[1]}-{c[6]}")
def test_head_verilator(cfg):
    head, _, _, goldens = _head_goldens(cfg)
    assert goldens[1].counters["rejected"] > 0
    _check(verify_block(head, goldens, simulator="verilator", idle=0.3, backpressure=0.4))


def test_head_blocks_refuse_bad_parameters():
    with pytest.raises(TypeError, match="SpikedHeadFormat"):
        AttentionOutput(WossFormat(8, 1.4))
    with pytest.raises(TypeError, match="SpikedHeadFormat"):
        SpikedHead(TraceFormat("count", T=4, channels=2))
    fmt = SpikedHeadFormat(8, 2.0, rows=2, keys=2, dim=2, dim_v=2, weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="counter_width=4 is too small"):
        SpikedHead(fmt, counter_width=4)
    head = SpikedHead(fmt)
    head._MustUse__silence = True
    with pytest.raises(ValueError, match="the golden model needs 0 or 16"):
        head_golden(head, [("clear",), ("step",)])
