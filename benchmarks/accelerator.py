"""Whole networks on the generated accelerator (Verilator): exactness on the whole digits test split,
cycles per inference against the lower bound, simulation speed.

    python benchmarks/accelerator.py              # -> docs/results/accelerator.{md,json}
    python benchmarks/accelerator.py --images 20  # a quicker look (not written)
    python benchmarks/accelerator.py --network vit_qann_L16 --images 8 --record   # one row, first 8 images
    python benchmarks/accelerator.py --network vit_qann_L16 --first 0 --images 120 --accumulate --workers 2
        # one chunk of the split; later chunks (--first 120, 240) add to the same row: every image's record
        # is kept in docs/results/accelerator_images.json (for that Verilog build and program only)

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
                                          synapse_words=1024, route_words=2048, buffer_words=0)),
            "qrnn_rows": ("crnn", HardwareSpec(neuron_tiles=2, matmul_tiles=0, unit_tiles=0, neurons=512,
                                               synapse_words=2048, route_words=512, buffer_words=1024)),
            "vit_qann_L16": ("spikezip", None)}            # None: api.fit_spec, the demo's accelerator


def _setup(model: str):
    flow, spec = NETWORKS[model]
    net = api.convert(model, flow)
    spec = api.fit_spec(net) if spec is None else spec
    images = build_images(net, compile_network(net, spec))
    return flow, net, spec, images


def design_key(images, writes) -> str:
    """What a stored per-image record depends on: the accelerator's Verilog (not the simulator's build
    flags, which change the speed only) and the program (``writes``: ``images.writes()``)."""
    import hashlib

    from spikeforge.sim.network import accelerator_design
    verilog = hashlib.sha256(accelerator_design(images.fmt).verilog.read_bytes()).hexdigest()[:16]
    program = hashlib.sha256(repr(writes.tolist()).encode()).hexdigest()[:16]
    return f"verilog {verilog} program {program}"


def run_images(model: str, first: int, n: int | None, log=print, speed_images: int = 360, workers: int = 1):
    """Run test images ``[first, first + n)`` logged (each compared layer by layer) and then
    ``speed_images`` of them unlogged; returns ``(per-image records, speed, context)``."""
    flow, net, spec, images = _setup(model)
    data = digits_split()
    scale = net.input.params["scale"]
    stop = len(data.x_test) if n is None else min(len(data.x_test), first + n)
    x = torch.round(data.x_test[first:stop] / scale) * scale
    y = data.y_test[first:stop]
    counts = encode_input(net, x).numpy()
    qann = run_qann(net, x)
    t0 = time.perf_counter()
    runs = run_accelerator(images, counts, max_steps=256, log=True, workers=workers)
    logged_seconds = time.perf_counter() - t0
    records, mismatched = {}, 0
    for i, run in enumerate(runs):
        golden = run_snn(net, x[i:i + 1], timing="layer", record=0)
        mm = compare_layers(images, run, golden.traces, qann.output[i])
        mismatched += mm is not None
        costs = run_costs(images, run, counts[i])
        tile, busy = max(run.busy_cycles.items(), key=lambda kv: kv[1])
        records[str(first + i)] = {
            "mismatch": None if mm is None else str(mm), "errors": {f"{k[0]}.{k[1]}": v for k, v in run.errors.items()},
            "label": int(y[i]), "rtl": int(outputs_of(images, run).argmax()), "snn": int(golden.output[0].argmax()),
            "qann": int(qann.output[i].argmax()), "cycles": run.run_cycles, "steps": run.steps,
            "busiest_bound": costs.busiest_bound, "balanced_bound": costs.balanced_bound, "energy_pj": costs.energy_pj,
            "busy_share": busy / run.run_cycles, "busy_layer": images.image(tile).layer}
        if (i + 1) % 20 == 0 or len(runs) < 40:
            log(f"{model}: {i + 1}/{len(runs)} images from {first}, {mismatched} mismatched")
    t0 = time.perf_counter()
    speed_images = min(len(counts), speed_images)             # the speed pass: no logging
    quiet_runs = run_accelerator(images, counts[:speed_images], max_steps=256, log=False, workers=workers)
    seconds = time.perf_counter() - t0
    speed = {"verilator_cycles_per_s": sum(r.cycles for r in quiet_runs) / seconds / workers,
             "verilator_images_per_s": speed_images / seconds, "workers": workers,
             "logged_images_per_s": len(runs) / logged_seconds}
    writes = images.writes()
    context = {"model": model, "flow": flow, "spec": spec.to_dict(), "tiles": len(images.tiles),
               "lanes": images.fmt.lanes, "neurons": images.fmt.neurons, "program_writes": len(writes),
               "ann_energy_uj": mac_ac_energy(ann_macs(net), 0) / 1e6, "key": design_key(images, writes)}
    return records, speed, context


def aggregate(records: dict, speed: dict, context: dict) -> dict:
    """One table row from per-image records (any subset of the test split)."""
    r = list(records.values())
    col = lambda k: np.asarray([x[k] for x in r], dtype=float)      # noqa: E731
    cycles, busiest, balanced = col("cycles"), col("busiest_bound"), col("balanced_bound")
    layers = [x["busy_layer"] for x in r]
    acc = lambda k: float(np.mean([x[k] == x["label"] for x in r]))    # noqa: E731
    first = next((f"image {i}: {x['mismatch']}" for i, x in sorted(records.items(), key=lambda kv: int(kv[0]))
                  if x["mismatch"]), None)
    return {**{k: context[k] for k in ("model", "flow", "spec", "tiles", "lanes", "neurons", "program_writes",
                                       "ann_energy_uj")},
            "images": len(r), "mismatched_images": sum(x["mismatch"] is not None for x in r),
            "images_with_errors": sum(bool(x["errors"]) for x in r), "first_mismatch": first,
            "qann_accuracy": acc("qann"), "snn_accuracy": acc("snn"), "rtl_accuracy": acc("rtl"),
            "cycles_mean": float(cycles.mean()), "cycles_max": int(cycles.max()),
            "busiest_tile_bound_mean": float(busiest.mean()), "balanced_bound_mean": float(balanced.mean()),
            "ratio_to_busiest": float((cycles / busiest).mean()), "ratio_to_balanced": float((cycles / balanced).mean()),
            "steps_mean": float(col("steps").mean()), "busiest_measured_share": float(col("busy_share").mean()),
            "busiest_measured_layer": max(set(layers), key=layers.count),
            "energy_uj_mean": float(col("energy_pj").mean()) / 1e6, **speed}


def placed_fmax(spec: dict) -> tuple[float | None, str]:
    """The placed Fmax (MHz) of ``spec``'s accelerator from docs/results/accelerator_synth.json and the row
    it comes from: the same spec, else a design with the same tiles (sizes and widths) but fewer of them
    (the whole accelerator may not fit an ECP5; its tiles, bus and controller do)."""
    path = OUT / "accelerator_synth.json"
    if not path.exists():
        return None, ""
    rows = [r for r in json.loads(path.read_text())["rows"] if r.get("fmax_mhz")]
    defaults = HardwareSpec().to_dict()          # a row written before a spec field existed has its default
    counts = ("neuron_tiles", "matmul_tiles", "unit_tiles")
    for keys in (list(defaults), [k for k in defaults if k not in counts]):
        for r in rows:
            if all(r.get(k, defaults[k]) == spec[k] for k in keys):
                return r["fmax_mhz"], r["spec"]
    return None, ""


def _md(rows: list[dict]) -> str:
    lines = ["# Whole networks on the generated accelerator (Verilator)", "",
             f"Generated by `python benchmarks/accelerator.py` (rows may come from separate runs: `--network NAME "
             "--record`; the images column says how many of the 360 test images each row ran). Each image runs on "
             "the accelerator (program loaded once); every layer's spikes are compared "
             "with the golden model `run_snn(..., timing=\"layer\")` step by step, the outputs with the integer "
             "QANN, and every error counter must stay 0. Cycles: the accelerator's `run_cycles` counter. Bounds per "
             "image: busiest tile = max over tiles of accumulate beats + sweeps (the program's lane groups per step; "
             "a recurrent tile: its buffer writes, replayed words and windows); balanced = their sum / tiles. "
             "Verilator cycles/s: per simulator process (images/s: all processes together).", "",
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
            f"{r['verilator_images_per_s']:.3g}{' (%d processes)' % r['workers'] if r.get('workers', 1) > 1 else ''} | "
            f"{at_fmax} |")
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
    ap.add_argument("--images", type=int, default=None, help="N test images (default: all 360)")
    ap.add_argument("--first", type=int, default=0, help="the first test image to run (with --images: a chunk)")
    ap.add_argument("--network", choices=sorted(NETWORKS), action="append",
                    help="networks to run (default: all); repeatable")
    ap.add_argument("--record", action="store_true",
                    help="write the rows even for a partial run (they replace the same networks' rows)")
    ap.add_argument("--accumulate", action="store_true",
                    help="keep the per-image records of earlier runs of the same design and program "
                         "(docs/results/accelerator_images.json) and report the row over all of them: the whole "
                         "split in chunks, e.g. --first 0 --images 120, then --first 120 ...")
    ap.add_argument("--speed-images", type=int, default=360, help="images of the unlogged speed pass")
    ap.add_argument("--workers", type=int, default=1,
                    help="simulator processes running the images in parallel (one per core)")
    args = ap.parse_args()
    store_path = OUT / "accelerator_images.json"
    store = json.loads(store_path.read_text()) if store_path.exists() else {}
    rows = []
    for m in args.network or NETWORKS:
        records, speed, context = run_images(m, args.first, args.images, speed_images=args.speed_images,
                                             workers=args.workers)
        kept = store.get(m, {})
        if args.accumulate and kept.get("key") == context["key"]:
            records = {**kept["records"], **records}
        elif args.accumulate and kept:
            print(f"{m}: the stored records are of another design or program ({kept.get('key')}); starting afresh")
        store[m] = {"key": context["key"], "records": records}
        rows.append(aggregate(records, speed, context))
        r = rows[-1]
        print(f"{m}: {r['images']} images, {r['mismatched_images']} mismatched, RTL {r['rtl_accuracy']:.4f} == SNN "
              f"{r['snn_accuracy']:.4f} == QANN {r['qann_accuracy']:.4f}; {r['cycles_mean']:.0f} cycles/image, "
              f"{r['ratio_to_busiest']:.2f}x busiest")
    whole = args.images is None and args.first == 0
    if whole or args.record or args.accumulate:
        OUT.mkdir(parents=True, exist_ok=True)
        store_path.write_text(json.dumps(store, indent=0))
        path = OUT / "accelerator.json"
        old = json.loads(path.read_text())["rows"] if path.exists() else []
        keep = [r for r in old if r["model"] not in {n["model"] for n in rows}]
        merged = sorted(keep + rows, key=lambda r: list(NETWORKS).index(r["model"]))
        path.write_text(json.dumps({"rows": merged}, indent=1))
        (OUT / "accelerator.md").write_text(_md(merged))
    print(_md(rows))


if __name__ == "__main__":
    main()
