"""Whole networks on the generated accelerator (Verilator): exactness on the whole digits test split,
cycles per inference against the lower bound, simulation speed.

    python benchmarks/accelerator.py              # -> docs/results/accelerator.{md,json}
    python benchmarks/accelerator.py --images 20  # a quicker look (not written)
    python benchmarks/accelerator.py --network vit_qann_L16 --images 8 --record   # one row, first 8 images

For each network (``qcnn``, crnn flow, on 3 neuron tiles; ``qrnn_rows``, crnn flow, its recurrent layer
on one neuron tile with an input buffer plus the head's tile; the digits ViT ``vit_qann_L16``, spikezip
flow, on the demo's fitted accelerator of neuron, matmul and unit tiles) the
benchmark compiles it for its spec, loads the program once and runs every image with spike logging:
every layer's spikes must
equal ``run_snn(..., timing="layer")`` step by step (index, step, sign), the outputs the integer QANN,
every error counter 0. Then a second pass without logging measures Verilator's speed.

Cycles are the accelerator's own ``run_cycles`` counter (``RUN`` to ``DONE``). The lower bounds, per
image: **busiest tile** = max over tiles of (accumulate beats it receives + its sweeps: N/P cycles per
step), a bound for any schedule of this placement; **balanced** = (all beats + all sweeps) / tiles,
the bound with perfect balance. A beat is one lane group of one input event (``groups`` beats per
event); the tile issues one beat per cycle.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from spikeforge import api
from spikeforge.sim.network import compare_layers, outputs_of, run_accelerator, run_costs
from spikeforge.sw.energy import mac_ac_energy
from spikeforge.sw.snn import ann_macs
from spikeforge.sw.compile import HardwareSpec
from spikeforge.sw.compile.images import build_images
from spikeforge.sw.compile.plan import compile_network
from spikeforge.sw.models.digits import digits_split
from spikeforge.sw.snn import encode_input, run_qann, run_snn

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"
NETWORKS = {"qcnn": ("crnn", HardwareSpec(neuron_tiles=3, matmul_tiles=0, unit_tiles=0, neurons=512,
                                          synapse_words=1024, route_words=2048)),
            "qrnn_rows": ("crnn", HardwareSpec(neuron_tiles=2, matmul_tiles=0, unit_tiles=0, neurons=512,
                                               synapse_words=2048, route_words=512, buffer_words=1024)),
            "vit_qann_L16": ("spikezip", None)}            # None: api.fit_spec, the demo's accelerator


def measure(model: str, n: int | None, log=print, speed_images: int = 360) -> dict:
    flow, spec = NETWORKS[model]
    net = api.convert(model, flow)
    spec = api.fit_spec(net) if spec is None else spec
    plan = compile_network(net, spec)
    images = build_images(net, plan)
    data = digits_split()
    scale = net.input.params["scale"]
    x = torch.round(data.x_test[:n] / scale) * scale
    y = data.y_test[:n]
    counts = encode_input(net, x).numpy()
    qann = run_qann(net, x)
    t0 = time.perf_counter()
    runs = run_accelerator(images, counts, max_steps=256, log=True)
    logged_seconds = time.perf_counter() - t0
    P, N = images.fmt.lanes, images.fmt.neurons
    mismatched, errors, first = 0, 0, None
    rtl_pred, cycles, busiest, balanced, energy, busy_share, busy_layer = [], [], [], [], [], [], {}
    for i, run in enumerate(runs):
        golden = run_snn(net, x[i:i + 1], timing="layer", record=0)
        mm = compare_layers(images, run, golden.traces, qann.output[i])
        mismatched += mm is not None
        first = first or (mm and f"image {i}: {mm}")
        errors += bool(run.errors)
        rtl_pred.append(int(outputs_of(images, run).argmax()))
        costs = run_costs(images, run, counts[i])
        cycles.append(run.run_cycles)
        busiest.append(costs.busiest_bound)
        balanced.append(costs.balanced_bound)
        energy.append(costs.energy_pj)
        tile, busy = max(run.busy_cycles.items(), key=lambda kv: kv[1])
        busy_share.append(busy / run.run_cycles)
        name = images.image(tile).layer
        busy_layer[name] = busy_layer.get(name, 0) + 1
        if (i + 1) % 20 == 0 or len(runs) < 40:
            log(f"{model}: {i + 1}/{len(runs)} images, {mismatched} mismatched")
    t0 = time.perf_counter()
    speed_images = min(len(counts), speed_images)             # the speed pass: no logging
    quiet_runs = run_accelerator(images, counts[:speed_images], max_steps=256, log=False)
    seconds = time.perf_counter() - t0
    quiet_cycles = sum(r.cycles for r in quiet_runs)
    cycles, busiest, balanced = map(np.asarray, (cycles, busiest, balanced))
    rtl_pred = np.asarray(rtl_pred)
    snn = run_snn(net, x, timing="layer")
    row = {"model": model, "flow": flow, "spec": spec.to_dict(), "images": len(runs), "tiles": len(images.tiles),
           "lanes": P, "neurons": N,
           "mismatched_images": mismatched, "images_with_errors": errors, "first_mismatch": first,
           "qann_accuracy": float((qann.output.argmax(-1) == y).double().mean()),
           "snn_accuracy": float((snn.output.argmax(-1) == y).double().mean()),
           "rtl_accuracy": float((torch.from_numpy(rtl_pred) == y).double().mean()),
           "cycles_mean": float(cycles.mean()), "cycles_max": int(cycles.max()),
           "busiest_tile_bound_mean": float(busiest.mean()), "balanced_bound_mean": float(balanced.mean()),
           "ratio_to_busiest": float((cycles / busiest).mean()), "ratio_to_balanced": float((cycles / balanced).mean()),
           "steps_mean": float(np.mean([r.steps for r in runs])),
           "busiest_measured_share": float(np.mean(busy_share)),
           "busiest_measured_layer": max(busy_layer, key=busy_layer.get),
           "energy_uj_mean": float(np.mean(energy)) / 1e6, "ann_energy_uj": mac_ac_energy(ann_macs(net), 0) / 1e6,
           "verilator_cycles_per_s": quiet_cycles / seconds, "verilator_images_per_s": speed_images / seconds,
           "logged_images_per_s": len(runs) / logged_seconds, "program_writes": len(images.writes())}
    log(f"{model}: {mismatched} mismatched, RTL {row['rtl_accuracy']:.4f} == SNN {row['snn_accuracy']:.4f} == QANN "
        f"{row['qann_accuracy']:.4f}; {row['cycles_mean']:.0f} cycles/image, {row['ratio_to_busiest']:.2f}x busiest")
    return row


def placed_fmax(spec: dict) -> tuple[float | None, str]:
    """The placed Fmax (MHz) of ``spec``'s accelerator from docs/results/accelerator_synth.json and the row
    it comes from: the same spec, else a design with the same tiles (sizes and widths) but fewer of them
    (the whole accelerator may not fit an ECP5; its tiles, bus and controller do)."""
    path = OUT / "accelerator_synth.json"
    if not path.exists():
        return None, ""
    rows = [r for r in json.loads(path.read_text())["rows"] if r.get("fmax_mhz")]
    counts = ("neuron_tiles", "matmul_tiles", "unit_tiles")
    fields = [k for k in HardwareSpec().to_dict()]
    same = lambda r, keys: all(r.get(k, getattr(HardwareSpec(), k)) == spec[k] for k in keys)    # noqa: E731
    for r in rows:
        if same(r, fields):
            return r["fmax_mhz"], r["spec"]
    for r in rows:
        if same(r, [k for k in fields if k not in counts]):
            return r["fmax_mhz"], r["spec"]
    return None, ""


def _md(rows: list[dict], seconds: float) -> str:
    lines = ["# Whole networks on the generated accelerator (Verilator)", "",
             f"Generated by `python benchmarks/accelerator.py` (rows may come from separate runs: `--network NAME "
             "--record`; the images column says how many of the 360 test images each row ran). Each image runs on "
             "the accelerator (program loaded once); every layer's spikes are compared "
             "with the golden model `run_snn(..., timing=\"layer\")` step by step, the outputs with the integer "
             "QANN, and every error counter must stay 0. Cycles: the accelerator's `run_cycles` counter. Bounds per "
             "image: busiest tile = max over tiles of accumulate beats + sweeps (the program's lane groups per step; "
             "a recurrent tile: its buffer writes, replayed words and windows); balanced = their sum / tiles.", "",
             "| network | tiles x lanes | mismatched / images | errors | accuracy RTL / SNN / QANN | cycles mean / max | "
             "bound busiest / balanced | cycles / bound | steps | energy SNN / ANN (uJ) | Verilator cycles/s | "
             "images/s | us / inference at Fmax |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in rows:
        spec = r.get("spec") or (NETWORKS[r["model"]][1].to_dict() if NETWORKS[r["model"]][1] else None)
        fmax, source = placed_fmax(spec) if spec else (None, "")
        at_fmax = f"{r['cycles_mean'] / fmax:.0f} ({fmax:.1f} MHz)" if fmax else "n/a"
        if fmax:
            notes.append(f"{r['model']}: {fmax:.1f} MHz placed, from the ECP5 row \"{source}\" "
                         "(docs/results/accelerator_synth.md)")
        lines.append(
            f"| {r['model']} ({r['flow']}) | {r['tiles']} x {r['lanes']} | {r['mismatched_images']} / {r['images']} | "
            f"{r['images_with_errors']} | {100 * r['rtl_accuracy']:.2f} / {100 * r['snn_accuracy']:.2f} / "
            f"{100 * r['qann_accuracy']:.2f} % | {r['cycles_mean']:.0f} / {r['cycles_max']} | "
            f"{r['busiest_tile_bound_mean']:.0f} / {r['balanced_bound_mean']:.0f} | {r['ratio_to_busiest']:.2f}x / "
            f"{r['ratio_to_balanced']:.2f}x | {r['steps_mean']:.1f} | {r['energy_uj_mean']:.3f} / {r['ann_energy_uj']:.3f} | "
            f"{r['verilator_cycles_per_s']:.0f} | "
            f"{r['verilator_images_per_s']:.3g} | {at_fmax} |")
    lines += ["", "Measured busiest tile (`busy_cycles` counters: cycles of the run a tile was not idle), mean share "
              "of the run and the layer it most often was: " + "; ".join(
                  f"{r['model']}: {100 * r['busiest_measured_share']:.0f} % ({r['busiest_measured_layer']})"
                  for r in rows if "busiest_measured_share" in r) + ".",
              "", "Energy: SpikeZIP-TF's model (4.6 pJ per MAC, 0.9 pJ per AC) on the operations the accelerator did "
              "(input events x columns as MACs, routed spikes x columns as ACs) against the integer ANN's MACs; "
              "the papers' 45 nm estimate, not a measurement of an FPGA.", "",
              "Microseconds per inference: mean cycles / the placed Fmax of the same accelerator or, where the "
              "whole does not fit an ECP5, of one with the same tiles but fewer of them" +
              (": " + "; ".join(notes) + "." if notes else "."), "", "What limits it: the busiest tile (the layer with the most input events x lane groups) sets the "
              "pace; the step barrier waits for the slowest tile before the next step starts, and every step pays "
              "the pipeline latency from a sweep through the routing table and bus to the consumers plus the "
              "barrier's quiet detection, which the bounds leave out (qrnn_rows runs 121 short steps; a recurrent "
              "tile also clears its core and replays a buffer row at each window start).", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None, help="first N test images (default: all 360)")
    ap.add_argument("--network", choices=sorted(NETWORKS), action="append",
                    help="networks to run (default: all); repeatable")
    ap.add_argument("--record", action="store_true",
                    help="write the rows even for a partial run (they replace the same networks' rows)")
    ap.add_argument("--speed-images", type=int, default=360, help="images of the unlogged speed pass")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = [dict(measure(m, args.images, speed_images=args.speed_images),
                 seconds=None) for m in (args.network or NETWORKS)]
    seconds = time.perf_counter() - t0
    for r in rows:
        r["seconds"] = seconds / len(rows)
    if args.images is None or args.record:
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / "accelerator.json"
        old = json.loads(path.read_text())["rows"] if path.exists() else []
        keep = [r for r in old if r["model"] not in {n["model"] for n in rows}]
        merged = sorted(keep + rows, key=lambda r: list(NETWORKS).index(r["model"]))
        path.write_text(json.dumps({"rows": merged}, indent=1))
        (OUT / "accelerator.md").write_text(_md(merged, seconds))
    print(_md(rows, seconds))


if __name__ == "__main__":
    main()
