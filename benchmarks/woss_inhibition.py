"""The WOSS inhibition default: whole-head error of ``first_step`` (the paper's rule) vs ``window_max``
(spikeforge's default, ``sw.attention.DEFAULT_INHIBITION``) on random data.

    python benchmarks/woss_inhibition.py        # prints the markdown table quoted in docs/attention.md

20 random heads (16 tokens, head dim 16, q/k/v from N(0, 1), seeds 0..19, per-channel scales from the
data, temperature 1/sqrt(16)); error = |head output - softmax(q k^T / 4) v| in units of v, mean and max
over every output of every head, for the float spiking rule and the bit-exact model. About a minute.
"""

from __future__ import annotations

import math

import torch

from spikeforge.sw.attention import INHIBITIONS, spiked_attention, spiked_attention_fixed

GRID = ((16, 1.4), (24, 1.4), (24, 1.25), (40, 1.15))
SEEDS, TOKENS, DIM = 20, 16, 16


def heads():
    for seed in range(SEEDS):
        g = torch.Generator().manual_seed(seed)
        yield [torch.randn(TOKENS, DIM, generator=g, dtype=torch.float64) for _ in range(3)]


def errors(T, B, inhibition):
    """(float mean, float max, bit-exact mean, bit-exact max) over all heads."""
    fl, fx = [], []
    for q, k, v in heads():
        exact = torch.softmax(q @ k.T / math.sqrt(DIM), -1) @ v
        fl.append((spiked_attention(q, k, v, T, B, inhibition=inhibition).out - exact).abs())
        fx.append((spiked_attention_fixed(q, k, v, T, B, inhibition=inhibition)[0] - exact).abs())
    fl, fx = torch.stack(fl), torch.stack(fx)
    return float(fl.mean()), float(fl.max()), float(fx.mean()), float(fx.max())


def main():
    print("| T | B | first_step mean / max | window_max mean / max | ratio mean | ratio max | bit-exact ratio mean |")
    print("|---|---|---|---|---|---|---|")
    for T, B in GRID:
        e = {inh: errors(T, B, inh) for inh in INHIBITIONS}
        f, w = e["first_step"], e["window_max"]
        print(f"| {T} | {B} | {f[0]:.4f} / {f[1]:.3f} | {w[0]:.4f} / {w[1]:.3f} | {f[0] / w[0]:.1f}x | "
              f"{f[1] / w[1]:.1f}x | {f[2] / w[2]:.1f}x |")


if __name__ == "__main__":
    main()
