"""``spikeforge demo``: everything that exists of the chain, run for real.

First the main job on the embedded default network (the digits ViT ``vit_qann_L16``, spikezip flow):
convert it, compile it onto neuron, matmul and function-unit tiles, generate the accelerator, load the
program and run test images on Verilator; every layer's spikes are compared with the golden model and
the outputs with the integer QANN; reported: ANN / QANN / SNN / RTL accuracy, cycles per inference
against the lower bound, and the energy estimate.

Then, for each neuron model (ST-BIF, BIF, IF, one-spike phase): generate the core's Verilog, make a golden
trace with the bit-exact model, replay it on Verilator through cocotb with random stalls on every
stream, diff every spike and final state, compare the bit-exact model with the float reference, and
measure sustained throughput without stalls. Then synthesise the default ST-BIF core for an
ECP5-25F (yosys + nextpnr). Writes Verilog, traces, a spike raster plot, a waveform and a JSON
summary into the output folder.

"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import api
from .outputs import output_folder
from .progress import Progress

__all__ = ["run_demo", "DEMO_CORES", "DEMO_NETWORK", "DEMO_IMAGES"]

DEMO_CORES = ("stbif", "bif", "if", "phase")
DEMO_NETWORK = "vit_qann_L16"
DEMO_IMAGES = 2


def _raster(golden, observed, path: Path, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    for trace, marker, label, size in ((golden, "o", "bit-exact model", 18), (observed, "x", "RTL (Verilator)", 10)):
        s = trace.spikes
        for sign, color in ((1, "tab:blue"), (-1, "tab:red")):
            sel = s[s[:, 2] == sign]
            style = dict(facecolors="none", edgecolors=color) if marker == "o" else dict(c=color)
            ax.scatter(sel[:, 0], sel[:, 1], s=size, marker=marker, linewidths=0.8,
                       label=f"{label} ({'+' if sign > 0 else '-'})", **style)
    ax.set_xlabel("timestep")
    ax.set_ylabel("neuron")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _waveform(core, golden, path: Path):
    """A short Amaranth-simulator run of the core (first 6 steps of the trace) written as VCD."""
    from .sim.amaranth_sim import run_amaranth
    from .sim.core_replay import replay_core
    from .sim.trace import SpikeTrace
    keep = golden.inputs[golden.inputs[:, 0] < 6]
    short = SpikeTrace(dict(golden.meta, steps=6), keep, [], {}, {})
    run_amaranth(core, lambda bench: replay_core(bench, core, short, idle=0.2, backpressure=0.2), vcd=str(path))


def run_demo(out, *, synth: bool = True, events: int = 2000, images: int = DEMO_IMAGES, model: str = DEMO_NETWORK,
             console: Console | None = None) -> bool:
    """Run the demo into folder ``out`` (replaced whole when the run finishes, left as it was if it is
    interrupted; see :mod:`spikeforge.outputs`). Returns whether every RTL run was bit-exact."""
    if events < 1:
        raise ValueError(f"events={events} must be >= 1")
    if images < 1:
        raise ValueError(f"images={images} must be >= 1")
    console = console or Console()
    with output_folder(out, option="--out", info={"command": "demo"}) as staged:
        ok = _run_demo(staged.path, synth, events, images, model, console, Path(out))
        if not ok:
            staged.fail("an RTL run differs from the bit-exact model")
    return ok


def _layer_raster(check, path: Path):
    """Spikes of every layer of image 0: golden model (circles) and RTL (crosses), one row per layer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    run, golden = check.runs[0], check.golden_traces[0]
    layers = list(golden)
    fig, axes = plt.subplots(len(layers), 1, figsize=(8, 1.6 * len(layers)), squeeze=False)
    for ax, name in zip(axes[:, 0], layers):
        g = golden[name]["spikes"]
        ax.scatter(g[:, 0], g[:, 1], s=14, facecolors="none", edgecolors="tab:blue", linewidths=0.6,
                   label="golden model")
        for tile in {im.tile for im in check.images.tiles if im.layer == name}:
            sel = run.spikes[:, 1] == tile
            _, flat = check.images.locate(tile, run.spikes[sel, 2])
            ax.scatter(run.spikes[sel, 0], flat, s=5, marker="x", c="tab:red", linewidths=0.6,
                       label=f"RTL tile {tile}")
        ax.set_title(f"layer {name}", fontsize=9)
        ax.set_ylabel("neuron")
        ax.legend(fontsize=6, loc="upper right")
    axes[-1, 0].set_xlabel("timestep")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _run_network(out: Path, model: str, images: int, progress, console: Console) -> tuple[bool, dict]:
    """The main job on ``model``: see the module docstring."""
    import numpy as np

    from .sw.models.train import load
    from .sw.snn import ann_macs
    from .sw.energy import mac_ac_energy
    progress.update(f"{model}: convert, compile onto tiles, generate the accelerator, run {images} images on "
                    "Verilator")
    c = api.run_network(model, images=images, progress=progress)
    conv = api.check_conversion(c.net, load(model), images=images)
    costs = c.costs()
    folder = out / "network"
    folder.mkdir(parents=True, exist_ok=True)
    _layer_raster(c, folder / "layers.png")
    api.generate_accelerator(c.spec, folder)                  # spikeforge_accelerator.v, accelerator.json
    cycles = np.array([r.run_cycles for r in c.runs])
    busiest = np.array([k.busiest_bound for k in costs])
    energy = float(np.mean([k.energy_pj for k in costs]))
    ann_energy = mac_ac_energy(ann_macs(c.net), 0)
    d = {"model": model, "images": len(c.runs), "tiles": len(c.images.tiles), "spec": c.spec.to_dict(),
         "accuracy": {"ann": conv.source_accuracy, "qann": c.qann_accuracy, "snn": c.snn_accuracy,
                      "rtl": c.rtl_accuracy},
         "mismatched_images": c.mismatched_images, "images_with_errors": c.images_with_errors,
         "mismatches": [None if m is None else str(m) for m in c.mismatches],
         "cycles_mean": float(cycles.mean()), "busiest_tile_bound_mean": float(busiest.mean()),
         "cycles_per_bound": float((cycles / busiest).mean()), "steps_mean": float(np.mean([r.steps for r in c.runs])),
         "energy_pj_snn": energy, "energy_pj_ann": ann_energy}
    (folder / "results.json").write_text(json.dumps(d, indent=1) + "\n")
    kinds = ", ".join(f"{getattr(c.spec, f'{k}_tiles')} {k}" for k in ("neuron", "matmul", "unit")
                      if getattr(c.spec, f"{k}_tiles"))
    t = Table("", "value", title=f"{model} on the generated accelerator ({kinds} tiles x {c.spec.lanes} lanes, "
                                 f"Verilator, {len(c.runs)} test images)")
    t.add_row("accuracy ANN / QANN / SNN / RTL", " / ".join(f"{100 * a:.1f}" for a in d["accuracy"].values()) + " %")
    t.add_row("RTL = golden model (every layer's spikes) and outputs = integer QANN",
              "[green]all images[/]" if c.passed else f"[red]{c.mismatched_images} images differ, "
                                                     f"{c.images_with_errors} with errors: {next((m for m in d['mismatches'] if m), '')}[/]")
    t.add_row("cycles per inference (busiest-tile bound)", f"{cycles.mean():.0f} ({busiest.mean():.0f}: "
              f"{(cycles / busiest).mean():.2f}x)")
    t.add_row("steps per inference", f"{d['steps_mean']:.1f}")
    t.add_row("energy estimate SNN / ANN (SpikeZIP-TF model)", f"{energy / 1e6:.3f} / {ann_energy / 1e6:.3f} uJ")
    console.print(t)
    return c.passed, d


def _run_demo(out: Path, synth: bool, events: int, images: int, model: str, console: Console, shown: Path) -> bool:
    summary, ok = {"cores": {}}, True
    table = Table("core", "NxP", "inputs", "spikes", "RTL=model", "model vs float", "cycles", "busy",
                  title="Neuron cores on Verilator (cycles: with stalls; busy: cycles doing a beat, no stalls)")
    with Progress(console, "demo", total=1 + len(DEMO_CORES) + int(synth)) as progress:
        net_ok, summary["network"] = _run_network(out, model, images, progress, console)
        ok &= net_ok
        progress.advance()
        for name in DEMO_CORES:
            core = api.default_core(name)
            folder = out / name
            progress.update(f"{name}: Verilog, golden trace, Verilator build + replay")
            api.generate_core(core, folder)
            steps = 4 * core.model.period if core.model.period else 64
            stalled = api.simulate_core(core, steps=steps, events=events, seed=1, idle=0.25, backpressure=0.25,
                                        workdir=folder / "traces")[0]
            free = api.simulate_core(core, steps=steps, events=events, seed=1, idle=0.0, backpressure=0.0)[0]
            agree = api.float_agreement(core.model, stalled.golden)
            # pipeline occupancy: cycles carrying an ACCUMULATE or a sweep UPDATE beat (lanes of a
            # beat may be empty on this random workload; benchmarks/neuron_cores.py measures lane use)
            busy = (free.accumulate_beats + steps * core.groups) / free.cycles
            ok &= stalled.diff.equal and free.diff.equal
            _raster(stalled.golden, stalled.observed, folder / "raster.png",
                    f"{name}: {core.neurons} neurons x {core.lanes} lanes, {steps} steps")
            if name == "stbif":
                _waveform(core, stalled.golden, folder / "waves.vcd")
            fl = (f"{agree.differing}/{agree.compared} differ" if agree.differing else "identical") + \
                 ("" if agree.exact_method else f", err<={agree.max_abs_error:.2g}")
            table.add_row(name, f"{core.neurons}x{core.lanes}",
                          str(len(stalled.golden.inputs)), str(len(stalled.golden.spikes)),
                          "[green]yes[/]" if stalled.diff.equal and free.diff.equal else f"[red]{stalled.diff}[/]",
                          fl, str(stalled.cycles), f"{busy:.1%}")
            summary["cores"][name] = {
                "model": core.model.to_dict(), "neurons": core.neurons, "lanes": core.lanes, "steps": steps,
                "inputs": len(stalled.golden.inputs), "spikes": len(stalled.golden.spikes),
                "rtl_equal": bool(stalled.diff.equal and free.diff.equal), "diff": str(stalled.diff),
                "float": agree.__dict__, "cycles_stalled": stalled.cycles, "cycles_free": free.cycles,
                "beats": free.beats, "pipeline_occupancy": busy, "counters": stalled.golden.counters}
            progress.advance()
        if synth:
            progress.update("stbif: yosys + nextpnr (ECP5-25F)")
            r = api.report_core(api.default_core("stbif"), workdir=out / "stbif" / "synth", progress=progress)
            summary["synth"] = r.as_dict()
            progress.advance()
    console.print(table)
    if synth:
        r = summary["synth"]
        t = Table("design", "LUT4", "FF", "DP16KD", "MULT18", "Fmax (MHz)", title=f"Resources on {r['device']}")
        t.add_row(r["design"], str(r["luts"]), str(r["ffs"]), str(r["brams"]), str(r["dsps"]),
                  f"{r['fmax_mhz']:.1f}" if r["fmax_mhz"] else "n/a")
        console.print(t)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    console.print(f"Outputs in {shown}/: network/ (results, layer raster), Verilog (*/neuron_core_*.v), traces "
                  f"(*/traces/), raster plots, stbif/waves.vcd, summary.json")
    console.print("[green]all RTL runs bit-exact[/]" if ok else "[red]RTL mismatch: see the table[/]")
    return ok
