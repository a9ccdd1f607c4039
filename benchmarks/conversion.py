"""Conversion results on the embedded digits models: accuracy, exactness, latency, spikes, operations,
energy and simulator speed per flow and setting.

    python benchmarks/conversion.py            # writes docs/results/conversion.{md,json}

spikezip: the LSQ QANNs (levels 8/16/32) converted with weight_bits 8 and 12; every image of the test
split through the integer QANN and the step-wise SNN (to quiescence), compared node by node.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from spikeforge.sw.convert.spikezip import SpikezipOptions, convert_spikezip
from spikeforge.sw.energy import mac_ac_energy
from spikeforge.sw.models.digits import INPUT_SCALE, digits_split
from spikeforge.sw.models.train import accuracy, load
from spikeforge.sw.snn import ann_macs, compare_runs, run_qann, run_snn

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"
LEVELS = (8, 16, 32)
WEIGHT_BITS = (8, 12)


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


def _md(rows, seconds) -> str:
    lines = ["# Conversion results (digits)", "",
             f"Produced by `python benchmarks/conversion.py` ({seconds:.0f} s on the 2-core machine). Test split: "
             f"{rows[0]['images']} images (scikit-learn digits, fixed stratified split, "
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
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    t0 = time.time()
    rows = spikezip_rows()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "conversion.json").write_text(json.dumps({"spikezip": rows}, indent=1) + "\n")
    (OUT / "conversion.md").write_text(_md(rows, time.time() - t0))
    print(f"wrote {OUT / 'conversion.md'} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
