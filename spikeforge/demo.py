"""``spikeforge demo``: everything that exists of the chain, run for real on the default cores.

For each neuron model (ST-BIF, BIF, IF, one-spike phase): generate the core's Verilog, make a golden
trace with the bit-exact model, replay it on Verilator through cocotb with random stalls on every
stream, diff every spike and final state, compare the bit-exact model with the float reference, and
measure sustained throughput without stalls. Then synthesise the default ST-BIF core for an
ECP5-25F (yosys + nextpnr). Writes Verilog, traces, a spike raster plot, a waveform and a JSON
summary into the output folder.

The conversion flows, compiler and whole-network runs are later milestones (see README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import api
from .outputs import output_folder
from .progress import Progress

__all__ = ["run_demo", "DEMO_CORES"]

DEMO_CORES = ("stbif", "bif", "if", "phase")


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


def run_demo(out, *, synth: bool = True, events: int = 2000, console: Console | None = None) -> bool:
    """Run the demo into folder ``out`` (replaced whole when the run finishes, left as it was if it is
    interrupted; see :mod:`spikeforge.outputs`). Returns whether every RTL run was bit-exact."""
    if events < 1:
        raise ValueError(f"events={events} must be >= 1")
    console = console or Console()
    with output_folder(out, option="--out", info={"command": "demo"}) as staged:
        ok = _run_demo(staged.path, synth, events, console, Path(out))
        if not ok:
            staged.fail("an RTL run differs from the bit-exact model")
    return ok


def _run_demo(out: Path, synth: bool, events: int, console: Console, shown: Path) -> bool:
    summary, ok = {"cores": {}}, True
    table = Table("core", "NxP", "inputs", "spikes", "RTL=model", "model vs float", "cycles", "busy",
                  title="Neuron cores on Verilator (cycles: with stalls; busy: cycles doing a beat, no stalls)")
    with Progress(console, "demo", total=len(DEMO_CORES) + int(synth)) as progress:
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
    console.print(f"Outputs in {shown}/: Verilog (*/neuron_core_*.v), traces (*/traces/), raster plots, "
                  f"stbif/waves.vcd, summary.json")
    console.print("[green]all RTL runs bit-exact[/]" if ok else "[red]RTL mismatch: see the table[/]")
    return ok
