"""Error of the one-spike phase-coded neuron: float reference and bit-exact model vs the exact value.

    python benchmarks/phase_neuron_error.py      # writes docs/results/phase_neuron_error.{md,json}

For each (T, B): 20,000 values y ~ U(-1, 1) (units of scale) given at the first integration step;
the float neuron (phase_neuron_reference) and the bit-exact neuron (PhaseNeuron with its default
widths derived from T and B, and a fixed narrow 10/12-bit variant) both encode them. Reported: relative
error vs y for |y| inside the code's range [B^-(T-1), 1] (max and mean), the paper's bound
(B-1)/(B+1), and how many codes of the bit-exact neuron differ (step or sign) from the float one.
"""

import json
from pathlib import Path

import torch

from spikeforge.sw import PhaseNeuron, phase_error_bound, phase_neuron_reference

OUT = Path(__file__).resolve().parent.parent / "docs" / "results"


def rel_err(dec, y, T, B):
    inside = (y.abs() <= 1) & (y.abs() >= B ** -(T - 1))
    r = ((dec - y).abs() / y.abs())[inside]
    return float(r.max()), float(r.mean())


def main():
    torch.manual_seed(0)
    y = torch.rand(1, 20000, dtype=torch.float64) * 2 - 1
    rows = []
    for T in (4, 8, 16, 24, 40):
        for B in (1.1, 1.15, 1.25, 1.4, 2.0):
            ref = phase_neuron_reference(y, T, B)[T:]
            w = torch.tensor([B ** -j for j in range(T)], dtype=torch.float64)
            dec_ref = (ref.double() * w[:, None]).sum(0)
            row = {"T": T, "B": B, "bound": phase_error_bound(B)}
            row["float_max"], row["float_mean"] = rel_err(dec_ref, y[0], T, B)
            for tag, F, bf in (("fx", None, None), ("fx_wide", 10, 12)):
                try:
                    m = PhaseNeuron(T, B, frac_bits=F, b_frac_bits=bf)
                except ValueError as e:
                    row[f"{tag}_error"] = str(e)
                    continue
                sp = m.run(m.quantize_input(y), steps=m.period).spikes
                dec = m.decode(sp)[0]
                row[f"{tag}_max"], row[f"{tag}_mean"] = rel_err(dec, y[0], T, B)
                row[f"{tag}_codes_differ"] = float((sp[T:] != ref).any(0).double().mean())
                row[f"{tag}_v_width"] = m.v_width
                row[f"{tag}_frac_bits"], row[f"{tag}_b_frac_bits"] = m.frac_bits, m.b_frac_bits
            rows.append(row)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "phase_neuron_error.json").write_text(json.dumps(rows, indent=2))
    lines = ["# One-spike phase neuron: error vs the exact value (measured)", "",
             "Made by `python benchmarks/phase_neuron_error.py`: 20,000 values y ~ U(-1, 1), relative error",
             "|decode - y| / |y| for |y| in [B^-(T-1), 1]. fx = bit-exact model with its default widths",
             "(frac_bits = ceil((T-1) log2 B - log2(B-1)) + 6 lowered to the largest that fits the 63-bit product,",
             "b_frac_bits = ceil(log2 T) + 10; v bits = potential width);",
             "narrow = a fixed 10 fractional bits in the potential and 12 in B, to show what too few bits cost.",
             "'codes moved' = fraction of values whose spike step or sign differs from the float neuron's.", "",
             "| T | B | bound (B-1)/(B+1) | float max | float mean | fx max | fx mean | fx codes moved | fx F/bf/v bits | narrow max | narrow mean | narrow codes moved |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def cell(tag, key, fmt):
            return fmt.format(r[f"{tag}_{key}"]) if f"{tag}_{key}" in r else "n/a"
        lines.append(f"| {r['T']} | {r['B']} | {r['bound']:.4f} | {r['float_max']:.4f} | {r['float_mean']:.4f} | "
                     f"{cell('fx', 'max', '{:.4f}')} | {cell('fx', 'mean', '{:.4f}')} | {cell('fx', 'codes_differ', '{:.2%}')} | "
                     f"{cell('fx', 'frac_bits', '{}')}/{cell('fx', 'b_frac_bits', '{}')}/{cell('fx', 'v_width', '{}')} | {cell('fx_wide', 'max', '{:.4f}')} | {cell('fx_wide', 'mean', '{:.4f}')} | "
                     f"{cell('fx_wide', 'codes_differ', '{:.2%}')} |")
    unbuildable = [r for r in rows if "fx_error" in r or "fx_wide_error" in r]
    if unbuildable:
        lines += ["", "n/a: the bit-exact model refuses these parameters (its message):"]
        lines += [f"- T={r['T']}, B={r['B']}: {r.get('fx_error') or r.get('fx_wide_error')}" for r in unbuildable]
    (OUT / "phase_neuron_error.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
