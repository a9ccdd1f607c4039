"""Conversion results on the embedded digits models: accuracy, exactness, latency, spikes, operations,
energy and simulator speed per flow and setting.

    python benchmarks/conversion.py                    # every flow -> docs/results/conversion.{md,json}
    python benchmarks/conversion.py spikedattention    # one flow (the others' rows are kept from the JSON)

spikezip: the LSQ QANNs (levels 8/16/32) converted with weight_bits 8 and 12; every image of the test
split through the integer QANN and the step-wise SNN (to quiescence), compared node by node.
spikedattention: the float BatchNorm ViT converted at a grid of (T, B), WOSS inhibition window_max (ours)
and first_step (the paper's); every test image through the ideal-value IR, the float spiking rules and
the bit-exact model. crnn: the QRNNs (rows, pixels) and the QCNN, integer QANN vs step-wise SNN on every
test image, plus windows around the exact rule.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from spikeforge.sw.convert.spikezip import SpikezipOptions, convert_spikezip
from spikeforge.sw.convert.crnn import CrnnOptions, convert_crnn, exact_window
from spikeforge.sw.convert.spikedattention import SpikedAttentionOptions, convert_spikedattention
from spikeforge.sw.energy import (E_ADD, E_MEM, E_MUL, ann_costs, mac_ac_energy, phase_snn_energy,
                                  spikedattention_ann_energy, spikedattention_snn_energy)
from spikeforge.sw.phase_snn import run_phase, spike_agreement
from spikeforge.sw.models.digits import INPUT_SCALE, digits_split
from spikeforge.sw.models.train import accuracy, load
from spikeforge.sw.snn import ann_macs, compare_runs, run_qann, run_snn

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"
LEVELS = (8, 16, 32)
WEIGHT_BITS = (8, 12)
PHASE_GRID = [(t, b, "window_max") for t, b in ((8, 2.0), (12, 1.6), (16, 1.4), (24, 1.25), (32, 1.2), (40, 1.15),
                                                (48, 1.12), (64, 1.1))]
PHASE_GRID += [(t, b, "first_step") for t, b in ((16, 1.4), (24, 1.25), (40, 1.15))]


def _acc(logits, y) -> float:
    return float((logits.argmax(1) == y).float().mean())


def spikezip_rows(log=print) -> list[dict]:
    data = digits_split()
    x, y = data.x_test, data.y_test
    float_acc = accuracy(load("vit_ln"), x, y)
    rows = []
    for levels in LEVELS:
        model = load(f"vit_qann_L{levels}")
        qann_acc = accuracy(model, x, y)
        for bits in WEIGHT_BITS:
            net = convert_spikezip(model, x[:1], SpikezipOptions(INPUT_SCALE, (0, 16), weight_bits=bits))
            t0 = time.perf_counter()
            q = run_qann(net, x)
            t_qann = time.perf_counter() - t0
            t0 = time.perf_counter()
            s = run_snn(net, x, max_steps=400)
            t_snn = time.perf_counter() - t0
            bad, first = compare_runs(net, q, s)
            n_mac = ann_macs(net)
            e_ann = mac_ac_energy(n_mac, 0)
            e_snn = mac_ac_energy(float(s.macs.double().mean()), float(s.acs.double().mean()))
            row = {"flow": "spikezip", "levels": levels, "weight_bits": bits, "images": len(x),
                   "float_ann": float_acc, "float_qann": qann_acc, "int_qann": _acc(q.output, y),
                   "snn": _acc(s.output, y), "mismatched_images": bad, "first_mismatch": str(first) if first else "",
                   "quiescent": int(s.quiescent.sum()), "steps_mean": float(s.steps.double().mean()),
                   "steps_max": int(s.steps.max()), "spikes": float(s.spikes_total.double().mean()),
                   "sops": float(s.acs.double().mean()), "input_macs": float(s.macs.double().mean()),
                   "ann_macs": n_mac, "energy_ann_uj": e_ann / 1e6, "energy_snn_uj": e_snn / 1e6,
                   "overflows": s.overflows, "snn_images_per_s": len(x) / t_snn,
                   "qann_images_per_s": len(x) / t_qann, "neurons": sum(n.size for n in net.neurons())}
            rows.append(row)
            if log:
                log(f"spikezip L={levels} w={bits}: float {float_acc:.4f} QANN {qann_acc:.4f} int-QANN "
                    f"{row['int_qann']:.4f} SNN {row['snn']:.4f}, mismatches {bad}, steps {row['steps_mean']:.1f} "
                    f"(max {row['steps_max']}), {row['spikes']:.0f} spikes, SNN {row['snn_images_per_s']:.0f} img/s")
    return rows


def spikedattention_rows(log=print) -> list[dict]:
    data = digits_split()
    x, y = data.x_test, data.y_test
    model = load("vit_bn")
    float_acc = accuracy(model, x, y)
    macs, outs = ann_costs(model, x[:1])
    e_ann = spikedattention_ann_energy(macs, outs)
    rows = []
    for T, B, inhibition in PHASE_GRID:
        net = convert_spikedattention(model, x[:1], data.x_calib, SpikedAttentionOptions(
            INPUT_SCALE, (0, 16), T=T, B=B, inhibition=inhibition))
        ideal = run_phase(net, x, arithmetic="ideal")
        t0 = time.perf_counter()
        fx = run_phase(net, x, arithmetic="fixed")
        t_fixed = time.perf_counter() - t0
        fl = run_phase(net, x, arithmetic="float")
        syn = float((fx.acs + fx.pair_adds).double().mean())
        upd = float(fx.neuron_updates.double().mean())
        row = {"flow": "spikedattention", "T": T, "B": B, "inhibition": inhibition, "images": len(x),
               "float_ann": float_acc, "ideal_ir": _acc(ideal.logits, y), "float_snn": _acc(fl.logits, y),
               "snn": _acc(fx.logits, y), "fixed_vs_float_predictions": float(
                   (fx.logits.argmax(1) == fl.logits.argmax(1)).float().mean()),
               "fixed_vs_float_spikes": spike_agreement(fx, fl), "max_logit_error_fixed_vs_float": float(
                   (fx.logits - fl.logits).abs().max()),
               "latency_steps": fx.latency_steps, "spikes": float(fx.spikes_total.double().mean()),
               "synaptic_events": syn, "pair_adds": float(fx.pair_adds.double().mean()),
               "input_macs": float(fx.macs.double().mean()), "neuron_updates": upd, "ann_macs": macs,
               "ann_outputs": outs, "energy_ann_uj": e_ann / 1e6,
               "energy_snn_uj": float(phase_snn_energy(fx).mean()) / 1e6,
               "energy_snn_synaptic_uj": spikedattention_snn_energy(syn, 1.0, 0, 0) / 1e6,
               "energy_snn_neurons_uj": spikedattention_snn_energy(0, 0, upd, 1.0) / 1e6,
               "energy_snn_macs_uj": float(fx.macs.double().mean()) * (2 * E_MEM + E_ADD + E_MUL) / 1e6,
               "overflows": fx.overflows, "snn_images_per_s": len(x) / t_fixed,
               "neurons": sum(n.size for n in net.neurons()), "delays": sum(n.op == "delay" for n in net)}
        rows.append(row)
        if log:
            log(f"spikedattention T={T} B={B} {inhibition}: float {float_acc:.4f} ideal {row['ideal_ir']:.4f} "
                f"float-SNN {row['float_snn']:.4f} bit-exact {row['snn']:.4f}, latency {row['latency_steps']}, "
                f"{row['spikes']:.0f} spikes, E {row['energy_ann_uj']:.2f}/{row['energy_snn_uj']:.2f} uJ, "
                f"{row['snn_images_per_s']:.0f} img/s")
    return rows


CRNN_RUNS = [("qrnn_rows", None, "tracer"), ("qrnn_pixels", None, "tracer"), ("qcnn", None, "tracer"),
             ("qrnn_rows", 14, "tracer"), ("qrnn_rows", 15, "spikes"), ("qrnn_rows", 20, "spikes"),
             ("qrnn_rows", 30, "spikes")]


def crnn_rows(log=print) -> list[dict]:
    data = digits_split()
    x, y = data.x_test, data.y_test
    rows = []
    for name, window, recurrent in CRNN_RUNS:
        model = load(name)
        net = convert_crnn(model, x[:1], CrnnOptions(INPUT_SCALE, (0, 16), weight_bits=8, window=window,
                                                     recurrent=recurrent))
        q = run_qann(net, x)
        t0 = time.perf_counter()
        s = run_snn(net, x, max_steps=net.meta.get("sequence_steps", 0) + 300)
        t_snn = time.perf_counter() - t0
        bad, first = compare_runs(net, q, s)
        rnn = next((n for n in net if n.op == "rnn"), None)
        n_mac = ann_macs(net)
        row = {"flow": "crnn", "model": name, "kind": "QRNN" if rnn is not None else "QCNN",
               "window": rnn.params["model"]["window"] if rnn is not None else None,
               "exact_window": exact_window(16) if rnn is not None else None,
               "recurrent": recurrent if rnn is not None else None, "elements": rnn.shape[0] if rnn else None,
               "images": len(x), "float_qann": accuracy(model, x, y), "int_qann": _acc(q.output, y),
               "snn": _acc(s.output, y), "mismatched_images": bad, "first_mismatch": str(first) if first else "",
               "truncations": s.truncations, "quiescent": int(s.quiescent.sum()),
               "steps_mean": float(s.steps.double().mean()), "steps_max": int(s.steps.max()),
               "spikes": float(s.spikes_total.double().mean()), "sops": float(s.acs.double().mean()),
               "input_macs": float(s.macs.double().mean()), "ann_macs": n_mac,
               "energy_ann_uj": mac_ac_energy(n_mac, 0) / 1e6,
               "energy_snn_uj": mac_ac_energy(float(s.macs.double().mean()), float(s.acs.double().mean())) / 1e6,
               "overflows": s.overflows, "snn_images_per_s": len(x) / t_snn}
        rows.append(row)
        if log:
            log(f"crnn {name} window={row['window']} {recurrent}: QANN {row['float_qann']:.4f} int {row['int_qann']:.4f} "
                f"SNN {row['snn']:.4f}, mismatches {bad}, truncations {s.truncations}, steps {row['steps_mean']:.1f}, "
                f"{row['snn_images_per_s']:.0f} img/s")
    return rows


def _md_crnn(rows) -> list[str]:
    lines = ["", "## crnn (QRNN -> RBIF, QCNN -> BIF, exact)", "",
             "Models (`sw/models/rnn.py`, trained quantization-aware by `sw/models/train.py`): `qrnn_rows` reads a "
             "digit as 8 elements of 8 pixels, `qrnn_pixels` as 64 elements of 1 pixel (sequential digits), "
             "`qcnn` is a two-layer QCNN; 16 levels, weight bits 8. *float QANN* is the trained model; *int QANN* "
             "the integer network of the IR; *SNN* runs it step by step (RBIF: one window of sub-steps per "
             "element). The first rows use the exact rule (window = L - 1 = 15, recurrent term from the "
             "previous window's tracer); the others probe it.", "",
             "| model | window | recurrent | float QANN | int QANN | SNN | mismatched | truncations | steps mean / "
             "max | spikes | SOPs (AC) | input MACs | ANN MACs | E ANN (uJ) | E SNN (uJ) | SNN img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['window'] or '-'} | {r['recurrent'] or '-'} | {100 * r['float_qann']:.2f} | "
                     f"{100 * r['int_qann']:.2f} | {100 * r['snn']:.2f} | {r['mismatched_images']} / {r['images']} | "
                     f"{r['truncations']} | {r['steps_mean']:.1f} / {r['steps_max']} | {r['spikes']:.0f} | "
                     f"{r['sops']:.3g} | {r['input_macs']:.0f} | {r['ann_macs']:.3g} | {r['energy_ann_uj']:.3f} | "
                     f"{r['energy_snn_uj']:.3f} | {r['snn_images_per_s']:.0f} |")
    lost20 = next((r["mismatched_images"] for r in rows if r["model"] == "qrnn_rows" and r["recurrent"] == "spikes"
                   and r["window"] == 20), "?")
    lines += ["", "Reading notes:", "",
              "* The lossless claim holds under this rule: threshold = quantizer step, `V(0) = theta/2`, tracer "
              "bounds = clip range, input and bias at the first sub-step of each element's window, the recurrent "
              "term `Wh h_{n-1}` delivered at once from the previous window's tracer, and window >= `S_max - "
              "S_min` = L - 1. A neuron whose whole input arrives at one sub-step fires at most one spike per "
              "sub-step, all of one sign, so it is quiet after L - 1 sub-steps; one sub-step less truncates "
              "(row window 14). Replaying the previous window's spikes one window later instead spreads the "
              f"input over the window: 15 sub-steps truncate, 20 still lose {lost20} images, 30 = 2(L - 1) is exact "
              "here (a sufficient bound: the last recurrent spike arrives by sub-step L - 2 and the neuron then "
              "needs at most L - 1 more).",
              "* Energy: SpikeZIP-TF's model (the same group's CRNN paper uses it), `4.6 pJ` per MAC (ANN; the "
              "SNN's analog input) and `0.9 pJ` per synaptic accumulate.",
              "* `qrnn_pixels` (64 elements of one pixel) is hard for a ReLU-quantized Elman RNN trained from "
              "scratch in minutes; its accuracy is what the recipe reaches, the conversion is exact regardless."]
    return lines


def _md_spikedattention(rows) -> list[str]:
    best = max((r for r in rows if r["inhibition"] == "window_max"), key=lambda r: (r["snn"], -r["latency_steps"]))
    lines = ["", "## spikedattention (float BN transformer -> phase-coded SNN, training-free)", "",
             "Model: `vit_bn` (float, BatchNorm, ReLU). Scales: per-channel max |activation| on the 256 "
             "calibration images. *ideal IR* runs the converted network without coding (checks BN folding, bias "
             "rescaling and weights: any gap to the float ANN is weight rounding); *float SNN* applies the "
             "papers' spiking rules in real arithmetic; *bit-exact* is the fixed-point model the hardware "
             "computes (golden traces). *same class / same spike*: bit-exact vs float rules.", "",
             "| T | B | WOSS inhibition | float ANN | ideal IR | float SNN | bit-exact SNN | loss (pt) | same class | "
             "same spike | latency (steps) | spikes | synaptic events | input MACs | neuron-steps | E ANN (uJ) | "
             "E SNN (uJ) | img/s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['T']} | {r['B']} | {r['inhibition']} | {100 * r['float_ann']:.2f} | "
                     f"{100 * r['ideal_ir']:.2f} | {100 * r['float_snn']:.2f} | {100 * r['snn']:.2f} | "
                     f"{100 * (r['float_ann'] - r['snn']):+.2f} | {100 * r['fixed_vs_float_predictions']:.1f} % | "
                     f"{100 * r['fixed_vs_float_spikes']:.1f} % | {r['latency_steps']} | {r['spikes']:.0f} | "
                     f"{r['synaptic_events']:.3g} | {r['input_macs']:.0f} | {r['neuron_updates']:.3g} | "
                     f"{r['energy_ann_uj']:.2f} | {r['energy_snn_uj']:.2f} | {r['snn_images_per_s']:.0f} |")
    lines += ["", f"Best bit-exact setting (window_max): T = {best['T']}, B = {best['B']}: {100 * best['snn']:.2f} % "
              f"vs {100 * best['float_ann']:.2f} % for the float ANN ({100 * (best['float_ann'] - best['snn']):+.2f} "
              "points; one test image is 0.28 points).", "",
              "Reading notes:", "",
              "* Loss = float ANN minus bit-exact SNN accuracy, in points (negative: the SNN got more images right).",
              "* WOSS `first_step` (the paper's global inhibition: subtract the row maximum of the first step with a "
              "positive input) loses accuracy here because QK^T products arrive over the window: the first step's "
              "maximum is not the row's, so many keys fire together at j = 0 (docs/attention.md). `window_max` "
              "subtracts the maximum of the final potentials (same hardware, no extra latency).",
              "* Energy: SpikedAttention's model (sw/energy.py). ANN: `N_MAC (2 E_mem + E_add + E_mul) + E_mem "
              "N_out` over every linear layer and attention product. SNN: synaptic events (a spike times its "
              "non-zero fan-out, plus one trace-memory addition per QK^T/A·V pair and normaliser update) cost "
              "`33/32 E_mem + E_add`; every neuron-step spent integrating or waiting to fire (phase layers, WOSS "
              "neurons, A·V accumulators) costs `2 E_mem + E_mul + 3 E_add + E_mem/32`; analog inputs (first "
              "layer, re-coded attention quotients) cost an ANN MAC. The JSON splits the SNN energy into these "
              "three parts. In this small model (fan-in 4 to 64) neuron-steps dominate, so the SNN costs more "
              "than the ANN; the paper's Swin-T/BERT layers have fan-ins of hundreds to thousands, which "
              "amortise the per-neuron cost.",
              "* Latency: each phase layer integrates one window and fires in the next; the attention node takes "
              "two windows (QK^T + WOSS, then A·V); residual paths wait in delay FIFOs.",
              "* img/s: the window-by-window simulator (sw/phase_snn.py), bit-exact arithmetic, batches of 120, "
              "2 CPU threads."]
    return lines


def _md(results: dict, seconds) -> str:
    rows = results.get("spikezip", [])
    lines = ["# Conversion results (digits)", "",
             f"Produced by `python benchmarks/conversion.py` (last run {seconds:.0f} s on the 2-core machine). "
             "Test split: 360 images (scikit-learn digits, fixed stratified split, "
             "`spikeforge.sw.models.digits`).",
             "", "## spikezip (QANN -> ST-BIF, exact)", "",
             "Models: `vit_qann_L{8,16,32}` (LSQ QANNs fine-tuned from the float `vit_ln`, "
             "`sw/models/train.py`). *int QANN* is the integer network the IR stands for (integer weights with "
             "`weight_bits`, thresholds = quantizer steps); *SNN* runs it step by step to quiescence. "
             "*mismatched* counts test images where any node of the SNN differs from the integer QANN "
             "(every neuron's tracer, every unit, the logits).", "",
             "| L | weight bits | float ANN | float QANN | int QANN | SNN | mismatched | steps mean / max | "
             "spikes | SOPs (AC) | input MACs | ANN MACs | E ANN (uJ) | E SNN (uJ) | SNN img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['levels']} | {r['weight_bits']} | {100 * r['float_ann']:.2f} | "
                     f"{100 * r['float_qann']:.2f} | "
                     f"{100 * r['int_qann']:.2f} | {100 * r['snn']:.2f} | {r['mismatched_images']} / {r['images']} | "
                     f"{r['steps_mean']:.1f} / {r['steps_max']} | {r['spikes']:.0f} | {r['sops']:.3g} | "
                     f"{r['input_macs']:.0f} | {r['ann_macs']:.3g} | {r['energy_ann_uj']:.2f} | "
                     f"{r['energy_snn_uj']:.2f} | {r['snn_images_per_s']:.0f} |")
    lines += ["", "Reading notes:", "",
              "* Accuracies in %. Energy: SpikeZIP-TF's model `E = 4.6 pJ N_MAC + 0.9 pJ N_AC` (sw/energy.py); "
              "ANN = every MAC of the integer network (linear layers and both attention products); SNN = the "
              "analog input layer's MACs + every synaptic accumulate (a spike times its fan-out; an attention "
              "spike reads one stored count per partner). The softmax/LayerNorm units' arithmetic is in neither "
              "(the same in both).",
              "* Steps to quiescence: last step with any spike or unit output, + 1 (the ST-BIF delay adds up "
              "through ~22 neuron layers).",
              "* img/s: the vectorised reference simulator (sw/snn.py) on the whole split as one batch, 2 CPU "
              "threads; the integer QANN's speed is in the JSON."]
    if results.get("spikedattention"):
        lines += _md_spikedattention(results["spikedattention"])
    if results.get("crnn"):
        lines += _md_crnn(results["crnn"])
    return "\n".join(lines) + "\n"


FLOW_ROWS = {"spikezip": spikezip_rows, "spikedattention": spikedattention_rows, "crnn": crnn_rows}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    flows = argv or list(FLOW_ROWS)
    unknown = [f for f in flows if f not in FLOW_ROWS]
    if unknown:
        print(f"unknown flow(s) {unknown}; choose from {list(FLOW_ROWS)}", file=sys.stderr)
        return 2
    t0 = time.time()
    path = OUT / "conversion.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for flow in flows:
        results[flow] = FLOW_ROWS[flow]()
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    (OUT / "conversion.md").write_text(_md(results, time.time() - t0))
    print(f"wrote {OUT / 'conversion.md'} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
