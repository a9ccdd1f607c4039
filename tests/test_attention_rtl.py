"""Attention blocks in RTL vs their bit-exact models, event by event, with random stalls.

Verilator runs cover T in {8, 16, 40} and B in {1.15, 1.4, 2.0} for the trace-matmul engine (phase
and count traces, with and without the A·V normaliser column) and the WOSS softmax block (both
inhibition rules, two periods each so the end-of-period clear is exercised), with malformed beats,
30 % idle input cycles and 40 % output backpressure.
"""

import pytest

from spikeforge.hw.trace_matmul import TraceMatmul
from spikeforge.hw.woss_softmax import WossSoftmax
from spikeforge.sim.attention_replay import (matmul_golden, random_matmul_events, random_woss_events, verify_block,
                                             woss_golden)
from spikeforge.sw.attention import TraceFormat, WossFormat

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
