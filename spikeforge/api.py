"""Scriptable API behind the ``spikeforge`` command line.

>>> from spikeforge import api
>>> core = api.make_core("stbif", neurons=256, lanes=4, levels=16, theta=32)
>>> paths = api.generate_core(core, "out/core")               # Verilog + config JSON
>>> checks = api.simulate_core(core, steps=60, events=2000)   # golden trace replayed on Verilator
>>> report = api.report_core(core)                           # yosys + nextpnr on ECP5-25F
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .hw.neuron_core import NeuronCore
from .sw.neurons import Bif, IntegrateFire, NeuronModel, PhaseNeuron, StBif, if_reference, stbif_reference
from .sw.attention import DEFAULT_INHIBITION
from .sw.neurons.phase import phase_neuron_reference

__all__ = ["MODEL_KINDS", "DEFAULT_CORES", "make_model", "make_core", "default_core", "generate_core",
           "simulate_core", "report_core", "float_agreement", "FloatAgreement",
           "FLOWS", "EMBEDDED_MODELS", "convert", "check_conversion", "ConversionCheck"]

MODEL_KINDS = ("stbif", "bif", "if", "phase")

# The default configurations whose resources are tabulated in docs/results/neuron_cores.md.
DEFAULT_CORES = {
    "stbif": dict(kind="stbif", neurons=256, lanes=4, levels=16, theta=32, current_width=8),
    "stbif-p8": dict(kind="stbif", neurons=1024, lanes=8, levels=16, theta=32, current_width=8),
    "bif": dict(kind="bif", neurons=256, lanes=4, levels=16, theta=32, window=16, signed=False, current_width=8),
    "if": dict(kind="if", neurons=256, lanes=4, theta=64, current_width=8),
    "phase": dict(kind="phase", neurons=256, lanes=4, T=16, B=1.4),
    "phase-T8-B2": dict(kind="phase", neurons=256, lanes=4, T=8, B=2.0),
}


def make_model(kind: str, *, levels: int | None = None, signed: bool = True, theta: int | None = None,
               s_min: int | None = None, s_max: int | None = None, window: int | None = None,
               reset: str = "subtract", T: int | None = None, B: float | None = None, W: int | None = None,
               bipolar: bool = True, frac_bits: int | None = None, b_frac_bits: int | None = None,
               current_width: int | None = None, v_width: int | None = None) -> NeuronModel:
    """Build a neuron model from flat options (as the CLI gives them); unused options must be unset."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model {kind!r} is not supported; choose one of {MODEL_KINDS}")
    widths = {k: v for k, v in (("current_width", current_width), ("v_width", v_width)) if v is not None}
    if kind in ("stbif", "bif"):
        theta = 32 if theta is None else theta
        if s_min is not None or s_max is not None:
            if s_min is None or s_max is None or levels is not None:
                raise ValueError("give either --levels (with --signed/--unsigned) or both --s-min and --s-max")
            bounds = (s_min, s_max)
        else:
            levels = 16 if levels is None else levels
            proto = (StBif.signed if signed else StBif.unsigned)(levels, theta, **widths)
            bounds = (proto.s_min, proto.s_max)
        if kind == "stbif":
            if window is not None:
                raise ValueError("--window applies to the bif model only")
            return StBif(theta, *bounds, **widths)
        if window is None:
            raise ValueError("the bif model needs --window (steps per sequence element)")
        return Bif(theta, *bounds, window=window, **widths)
    if kind == "if":
        return IntegrateFire(64 if theta is None else theta, reset=reset, **widths)
    if T is None or B is None:
        raise ValueError("the phase model needs both T (window steps) and B (base > 1)")
    return PhaseNeuron(T, B, W=W, bipolar=bipolar, frac_bits=frac_bits, b_frac_bits=b_frac_bits, **widths)


def make_core(kind: str, *, neurons: int, lanes: int, **model_options) -> NeuronCore:
    """A :class:`NeuronCore` of ``neurons`` neurons on ``lanes`` lanes running ``make_model(kind, ...)``."""
    return NeuronCore(make_model(kind, **model_options), neurons=neurons, lanes=lanes)


def default_core(name: str) -> NeuronCore:
    if name not in DEFAULT_CORES:
        raise ValueError(f"no default core {name!r}; defaults: {sorted(DEFAULT_CORES)}")
    return make_core(**DEFAULT_CORES[name])


def generate_core(core: NeuronCore, outdir, *, name: str | None = None) -> dict[str, Path]:
    """Write ``<name>.v`` (Verilog) and ``<name>.json`` (the configuration, loadable by
    :meth:`NeuronCore.from_config`) into ``outdir``."""
    return generate_block(core, outdir, name=name, extra={
        "ports": {"events": core.event_layout.size, "spikes": core.spike_layout.size,
                  "readback": core.readback_layout.size}})


def simulate_core(core: NeuronCore, *, steps: int = 60, events: int = 2000, seed: int = 0,
                  simulator: str = "verilator", idle: float = 0.25, backpressure: float = 0.25,
                  replays: int = 1, workdir=None, waves: bool = False):
    """Random golden traces from the bit-exact model replayed on the RTL; returns ``CoreCheck``s."""
    from .sim.coverify import random_core_trace, verify_core
    goldens = [random_core_trace(core, steps=steps, events=events, seed=seed + i) for i in range(replays)]
    return verify_core(core, goldens, simulator=simulator, idle=idle, backpressure=backpressure, seed=seed,
                       workdir=workdir, waves=waves)


def report_core(core: NeuronCore, *, device: str = "25k", target_mhz: float = 150.0, workdir=None,
                progress=None):
    """ECP5 resources (yosys) and Fmax (nextpnr) of ``core``; see :mod:`spikeforge.boards.synth`."""
    return report_block(core, device=device, target_mhz=target_mhz, workdir=workdir, progress=progress)


@dataclass
class FloatAgreement:
    """Bit-exact model vs the float reference on one stimulus."""
    exact_method: bool
    compared: int
    differing: int
    max_abs_error: float
    note: str


def float_agreement(model: NeuronModel, golden) -> FloatAgreement:
    """Compare the bit-exact output in ``golden`` (a core trace) with the float reference.

    ST-BIF/BIF/IF are exact methods: every spike must agree unless the hardware saturated (the
    float reference has unbounded precision). The phase neuron is approximate: report how many
    period codes differ and the largest decoded difference (in units of scale).
    """
    steps, n = golden.steps, golden.meta["config"]["neurons"]
    per_step = torch.zeros((steps, n), dtype=torch.float64)
    inp = torch.from_numpy(golden.inputs)
    if len(inp):
        per_step.index_put_((inp[:, 0], inp[:, 1]), inp[:, 2].double(), accumulate=True)
    bitexact = torch.zeros((steps, n), dtype=torch.float64)
    if len(golden.spikes):
        sp = torch.from_numpy(golden.spikes)
        bitexact[sp[:, 0], sp[:, 1]] = sp[:, 2].double()
    ovf = golden.counters.get("overflows", 0)
    if isinstance(model, PhaseNeuron):
        P, T = model.period, model.T
        periods = steps // P
        x = per_step[:periods * P].reshape(periods, P, n)[:, :T] / (1 << model.frac_bits)
        ref = torch.stack([phase_neuron_reference(x[k], T, model.B, W=model.W, bipolar=model.bipolar)
                           for k in range(periods)]).double()
        got = bitexact[:periods * P].reshape(periods, P, n)
        weights = torch.tensor([model.B ** (model.W - T - j) for j in range(T)], dtype=torch.float64)
        dec_ref = (ref[:, T:] * weights[None, :, None]).sum(1)
        weights_q = torch.tensor([float(model.b_q) ** (model.W - T - j) for j in range(T)], dtype=torch.float64)
        dec_got = (got[:, T:] * weights_q[None, :, None]).sum(1)
        diff = (dec_ref - dec_got).abs()
        codes_differ = int((ref[:, T:] != got[:, T:]).any(1).sum())
        return FloatAgreement(False, dec_ref.numel(), codes_differ, float(diff.max()) if diff.numel() else 0.0,
                              f"one-spike codes (period, neuron) whose spike step or sign differs; decoded "
                              f"with B_q={float(model.b_q):.6f} vs B={model.B}; {ovf} saturations")
    if isinstance(model, IntegrateFire):
        ref = if_reference(per_step, float(model.theta), model.reset)
    else:
        ref = stbif_reference(per_step, float(model.theta), model.s_min, model.s_max,
                              window=getattr(model, "window", None)) / model.theta
    differing = int((ref != bitexact).sum())
    note = "identical" if not differing else f"differences come from {ovf} saturating additions (float has none)"
    return FloatAgreement(True, ref.numel(), differing, float((ref - bitexact).abs().max()), note)


# -- spiking attention head ---------------------------------------------------------------------------------
# The default head whose resources and cycles are tabulated in docs/results/attention_hw.md: the size of
# one head of the digits transformer (16 tokens, head dim 16).
DEFAULT_HEAD = dict(T=16, B=1.4, rows=16, keys=16, dim=16, dim_v=16)


def random_qkv(rows: int, keys: int, dim: int, dim_v: int, *, seed: int = 0):
    """``q [rows, dim]``, ``k [keys, dim]``, ``v [keys, dim_v]`` drawn from N(0, 1) (float64)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, dim, generator=g, dtype=torch.float64),
            torch.randn(keys, dim, generator=g, dtype=torch.float64),
            torch.randn(keys, dim_v, generator=g, dtype=torch.float64))


@dataclass
class HeadCheck:
    """One attention head through every level: exact softmax attention, the float spiking reference,
    the bit-exact model and the RTL replay (``rtl``: :class:`~spikeforge.sim.attention_replay.BlockCheck`,
    ``None`` when not simulated). Errors are max (``*_error``) and mean (``*_mean_error``) |.| in units
    of ``v``."""
    fmt: object
    exact: torch.Tensor
    float_out: torch.Tensor
    fixed_out: torch.Tensor
    float_error: float
    fixed_error: float
    fixed_vs_float: float
    float_mean_error: float
    fixed_mean_error: float
    rtl: object | None
    stats: dict


def make_head(q, k, v, T: int, B: float, *, inhibition: str = DEFAULT_INHIBITION, out_frac_bits: int = 12,
              **format_args):
    """A :class:`~spikeforge.hw.spiked_head.SpikedHead` for operands like ``q``, ``k``, ``v`` (per-channel
    scales from these tensors, temperature ``1/sqrt(dim)``) and the one-spike codes of the operands.
    Returns ``(head, (q_spikes, k_spikes, v_spikes), scale_v)``."""
    from .hw.spiked_head import SpikedHead
    from .sw.attention import SpikedHeadFormat, channel_scales
    from .sw.phase_coding import phase_encode
    sq, sk, sv = channel_scales(q), channel_scales(k), channel_scales(v)
    fmt = SpikedHeadFormat(T, B, rows=q.shape[-2], keys=k.shape[-2], dim=q.shape[-1], dim_v=v.shape[-1],
                           weights=sq * sk / q.shape[-1] ** 0.5, inhibition=inhibition,
                           out_frac_bits=out_frac_bits, **format_args)
    codes = (phase_encode(q, T, B, sq), phase_encode(k, T, B, sk), phase_encode(v, T, B, sv))
    return SpikedHead(fmt), codes, sv


def simulate_head(q, k, v, T: int, B: float, *, inhibition: str = DEFAULT_INHIBITION, out_frac_bits: int = 12,
                  simulator: str | None = "verilator", idle: float = 0.25, backpressure: float = 0.25,
                  seed: int = 0) -> HeadCheck:
    """Run one head (``q [rows, dim]``, ``k [keys, dim]``, ``v [keys, dim_v]``) through the float
    reference, the bit-exact model and — unless ``simulator`` is ``None`` — the RTL (golden trace of
    the chained block models replayed with random stalls, every output checked)."""
    from .sim.attention_replay import head_events, head_golden, verify_block
    from .sw.attention import spiked_attention
    head, (qs, ks, vs), sv = make_head(q, k, v, T, B, inhibition=inhibition, out_frac_bits=out_frac_bits)
    fmt = head.fmt
    exact = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1) @ v
    float_out = spiked_attention(q, k, v, T, B, inhibition=inhibition).out
    res = fmt.run(qs, ks, vs)
    fixed_out = res.decoded(sv)
    golden = head_golden(head, head_events(qs, ks, vs, seed=seed))
    expected = torch.zeros(fmt.rows * fmt.dim_v, dtype=torch.int64)
    for _, idx, value in golden.spikes:
        expected[idx] = int(value)
    if not torch.equal(expected.reshape(fmt.rows, fmt.dim_v), res.out):
        raise RuntimeError("the chained block models disagree with SpikedHeadFormat.run; please report this")
    rtl = None
    if simulator is not None:
        (rtl,) = verify_block(head, [golden], simulator=simulator, idle=idle, backpressure=backpressure, seed=seed)
    else:
        head._MustUse__silence = True
    return HeadCheck(fmt=fmt, exact=exact, float_out=float_out, fixed_out=fixed_out,
                     float_error=float((float_out - exact).abs().max()),
                     fixed_error=float((fixed_out - exact).abs().max()),
                     fixed_vs_float=float((fixed_out - float_out).abs().max()),
                     float_mean_error=float((float_out - exact).abs().mean()),
                     fixed_mean_error=float((fixed_out - exact).abs().mean()), rtl=rtl,
                     stats=dict(golden.meta["stats"], empty_rows=res.empty_rows, overflows=res.overflows))


def report_block(block, *, device: str = "25k", target_mhz: float = 150.0, workdir=None, progress=None):
    """ECP5 resources (yosys) and Fmax (nextpnr) of any block with a ``verilog_name`` (a core, an
    attention block, a head); see :mod:`spikeforge.boards.synth`. A block that does not fit ``device``
    is refused after synthesis, before place-and-route (:class:`~spikeforge.boards.synth.DoesNotFitError`).
    ``progress``: a callable given a line of text per stage."""
    from .boards.synth import synthesize_ecp5
    return synthesize_ecp5(block, block.verilog_name, device=device, target_mhz=target_mhz,
                           workdir=None if workdir is None else Path(workdir).resolve(), progress=progress)


def generate_block(block, outdir, *, name: str | None = None, extra: dict | None = None) -> dict[str, Path]:
    """Write ``<name>.v`` and ``<name>.json`` (``block.config()``, loadable by the block's
    ``from_config``, plus ``extra``) for any block: a neuron core, an attention block, a head."""
    from amaranth.back import verilog
    name = name or block.verilog_name
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    v = out / f"{name}.v"
    v.write_text(verilog.convert(block, name=name, emit_src=False))
    cfg = out / f"{name}.json"
    cfg.write_text(json.dumps({"top": name, "block": type(block).__name__, **block.config(), **(extra or {})},
                              indent=2))
    return {"verilog": v, "config": cfg}


__all__ += ["generate_block", "DEFAULT_HEAD", "random_qkv", "HeadCheck", "make_head", "simulate_head", "report_block"]


# -- conversion ---------------------------------------------------------------------------------------------
FLOWS = ("spikezip", "spikedattention", "crnn")
EMBEDDED_MODELS = {"spikezip": ("vit_qann_L8", "vit_qann_L16", "vit_qann_L32"), "spikedattention": ("vit_bn",),
                   "crnn": ("qrnn_rows", "qrnn_pixels", "qcnn")}
DEFAULT_MODEL = {"spikezip": "vit_qann_L8", "spikedattention": "vit_bn", "crnn": "qrnn_rows"}


@dataclass
class ConversionCheck:
    """A converted network run on test images: accuracies, exactness and activity."""
    images: int
    source_accuracy: float
    qann_accuracy: float
    snn_accuracy: float
    mismatched_images: int
    first_mismatch: str
    steps_mean: float
    steps_max: int
    quiescent: int
    spikes_mean: float
    sops_mean: float
    overflows: int
    truncations: int = 0

    @property
    def passed(self) -> bool:
        """The exactness claim holds: every image bit-exact and every run quiescent."""
        return self.mismatched_images == 0 and self.quiescent == self.images


def _test_images(images: int | None):
    """The first ``images`` of the digits test split (all by default), refusing counts it does not have."""
    from .sw.models.digits import digits_split
    data = digits_split()
    if images is not None and not 1 <= images <= len(data.x_test):
        raise ValueError(f"images={images} is out of range: the digits test split has {len(data.x_test)} images "
                         f"(give 1 to {len(data.x_test)}, or leave it out for all)")
    return data.x_test[:images], data.y_test[:images]


def convert(model=None, flow: str = "spikezip", *, example=None, input_scale: float | None = None,
            input_range: tuple[int, int] | None = None, weight_bits: int | None = None, T: int = 24,
            B: float = 1.25, inhibition: str = "window_max", calibration=None, window: int | None = None,
            recurrent: str = "tracer"):
    """Convert ``model`` (an embedded checkpoint name, default the flow's, or a ``torch.nn.Module``) with ``flow``.

    For an embedded digits model the input encoding is known (counts of 1/16 in 0..16) and the
    calibration data is the fixed calibration split; for your own module give ``example`` (one input
    batch), ``input_scale``, ``input_range`` and (spikedattention) ``calibration`` inputs.
    ``weight_bits`` defaults to 8 (spikezip, crnn) / 16 (spikedattention); ``T``, ``B`` and ``inhibition``
    are the spikedattention phase window, base and WOSS rule; ``window`` (default: the exact rule) and
    ``recurrent`` the crnn RBIF sub-steps per element and recurrent delivery. Returns a validated
    :class:`spikeforge.sw.ir.Network`.
    """
    from .sw.convert.spikedattention import SpikedAttentionOptions, convert_spikedattention
    from .sw.convert.spikezip import SpikezipOptions, convert_spikezip
    from .sw.models.digits import INPUT_SCALE, digits_split
    from .sw.models.train import load
    if flow not in FLOWS:
        raise ValueError(f"flow {flow!r} is not available; choose one of {FLOWS}")
    model = DEFAULT_MODEL[flow] if model is None else model
    if isinstance(model, str):
        if model not in EMBEDDED_MODELS[flow]:
            raise ValueError(f"no embedded {flow} model {model!r}; choose one of {EMBEDDED_MODELS[flow]}")
        model = load(model)
        data = digits_split()
        example = data.x_test[:1] if example is None else example
        calibration = data.x_calib if calibration is None else calibration
        input_scale = INPUT_SCALE if input_scale is None else input_scale
        input_range = (0, 16) if input_range is None else input_range
    if example is None or input_scale is None or input_range is None:
        raise ValueError("a custom model needs example=, input_scale= and input_range=")
    if flow == "crnn":
        from .sw.convert.crnn import CrnnOptions, convert_crnn
        return convert_crnn(model, example, CrnnOptions(input_scale, tuple(input_range),
                                                        8 if weight_bits is None else weight_bits,
                                                        window=window, recurrent=recurrent))
    if flow == "spikezip":
        return convert_spikezip(model, example, SpikezipOptions(input_scale, tuple(input_range),
                                                                8 if weight_bits is None else weight_bits))
    if calibration is None:
        raise ValueError("the spikedattention flow calibrates its scales: give calibration= (a batch of inputs)")
    opts = SpikedAttentionOptions(input_scale, tuple(input_range), T=T, B=B, inhibition=inhibition,
                                  weight_bits=16 if weight_bits is None else weight_bits)
    return convert_spikedattention(model, example, calibration, opts)


def check_conversion(net, source: torch.nn.Module | None = None, *, images: int | None = None,
                     max_steps: int | None = None, progress=None, timing: str = "zero") -> ConversionCheck:
    """Run ``net`` as integer QANN and as SNN on the digits test split (first ``images``) and compare
    (spikezip; a spikedattention network goes to :func:`check_phase_conversion`). ``progress``: a
    callable given a line of text as the runs go; ``timing``: when a layer sees its inputs' spikes
    (:data:`spikeforge.sw.snn.TIMINGS`)."""
    from .progress import reporter
    if net.flow == "spikedattention":
        raise ValueError("a spikedattention network has no integer QANN to match: use check_phase_conversion")
    from .sw.snn import compare_runs, run_qann, run_snn
    report = reporter(progress)
    x, y = _test_images(images)
    max_steps = net.meta.get("sequence_steps", 0) + 400 if max_steps is None else max_steps
    report(f"integer QANN on {len(x)} test images")
    q = run_qann(net, x)
    s = run_snn(net, x, max_steps=max_steps, timing=timing,
                progress=lambda t, busy: report(f"SNN step {t + 1} (max {max_steps}): {busy} of {len(x)} images "
                                                "not yet quiescent"))
    bad, first = compare_runs(net, q, s)
    src = float("nan")
    if source is not None:
        with torch.no_grad():
            src = float((source.eval()(x).argmax(1) == y).float().mean())
    acc = lambda out: float((out.argmax(1) == y).float().mean())   # noqa: E731
    return ConversionCheck(len(x), src, acc(q.output), acc(s.output), bad, str(first) if first else "",
                           float(s.steps.double().mean()), int(s.steps.max()), int(s.quiescent.sum()),
                           float(s.spikes_total.double().mean()), float(s.acs.double().mean()), s.overflows,
                           s.truncations)


@dataclass
class PhaseConversionCheck:
    """A phase-coded (spikedattention) network on test images: the float ANN, the float reference of the
    spiking rules and the bit-exact model, their agreement, activity and energy (pJ per inference)."""
    images: int
    ann_accuracy: float
    float_accuracy: float
    fixed_accuracy: float
    fixed_vs_float_predictions: float      # fraction of images with the same predicted class
    fixed_vs_float_spikes: float           # fraction of neurons with the same spike (step and sign)
    max_logit_error: float                 # bit-exact vs float reference, in logit units
    latency_steps: int
    spikes_mean: float
    sops_mean: float
    macs_mean: float
    ann_energy_pj: float
    snn_energy_pj: float
    overflows: int
    images_per_second: float

    def passed(self, max_loss: float = 1.0) -> bool:
        """The bit-exact SNN loses at most ``max_loss`` accuracy points against the float ANN and
        nothing saturated."""
        return 100 * (self.ann_accuracy - self.fixed_accuracy) <= max_loss and self.overflows == 0


def check_phase_conversion(net, source: torch.nn.Module | None = None, *, images: int | None = None,
                           batch_size: int = 120, progress=None) -> PhaseConversionCheck:
    """Run a spikedattention network in both arithmetics on the digits test split (first ``images``).
    ``progress``: a callable given a line of text per batch."""
    import time

    from .progress import reporter
    from .sw.energy import ann_costs, phase_snn_energy, spikedattention_ann_energy
    from .sw.phase_snn import run_phase, spike_agreement
    report = reporter(progress)
    x, y = _test_images(images)
    t0 = time.perf_counter()
    fx = run_phase(net, x, arithmetic="fixed", batch_size=batch_size,
                   progress=lambda done: report(f"bit-exact SNN: {done} of {len(x)} images"))
    speed = len(x) / (time.perf_counter() - t0)
    fl = run_phase(net, x, arithmetic="float", batch_size=batch_size,
                   progress=lambda done: report(f"float reference of the rules: {done} of {len(x)} images"))
    acc = lambda out: float((out.argmax(1) == y).float().mean())   # noqa: E731
    ann_acc, ann_e = float("nan"), float("nan")
    if source is not None:
        with torch.no_grad():
            ann_acc = acc(source.eval()(x))
        macs, outs = ann_costs(source, x[:1])
        ann_e = spikedattention_ann_energy(macs, outs)
    return PhaseConversionCheck(
        len(x), ann_acc, acc(fl.logits), acc(fx.logits),
        float((fx.logits.argmax(1) == fl.logits.argmax(1)).float().mean()), spike_agreement(fx, fl),
        float((fx.logits - fl.logits).abs().max()), fx.latency_steps, float(fx.spikes_total.double().mean()),
        float((fx.acs + fx.pair_adds).double().mean()), float(fx.macs.double().mean()), ann_e,
        float(phase_snn_energy(fx).mean()), fx.overflows, speed)


__all__ += ["PhaseConversionCheck", "check_phase_conversion", "DEFAULT_MODEL", "DEFAULT_INHIBITION"]


# -- compiler -----------------------------------------------------------------------------------------------
@dataclass
class Compiled:
    """A network compiled for a hardware spec: the plan and its report for the activity of ``images``
    test images at ``timing``."""
    net: object
    plan: object
    report: object
    timing: str
    images: int


def _network(net, say):
    """``net``, or the embedded checkpoint of that name converted with its flow."""
    if isinstance(net, str):
        flow = next((f for f, names in EMBEDDED_MODELS.items() if net in names), None)
        if flow is None:
            raise ValueError(f"no embedded model {net!r}; choose one of "
                             f"{sorted(n for names in EMBEDDED_MODELS.values() for n in names)}")
        say(f"converting {net} ({flow})")
        return convert(net, flow)
    return net


def compile(net, spec=None, *, images: int = 16, timing: str = "layer", progress=None) -> Compiled:
    """Compile ``net`` (a :class:`~spikeforge.sw.ir.Network`, or the name of an embedded count-coded
    checkpoint, converted with its flow) for ``spec`` (a :class:`~spikeforge.sw.compile.HardwareSpec`,
    default: the default spec) and report it for the activity of the first ``images`` test images run at
    ``timing`` (the accelerator's: each spiking layer a pipeline stage)."""
    from .progress import reporter
    from .sw.compile import HardwareSpec, compile_network, report
    from .sw.snn import run_snn
    say = reporter(progress)
    net = _network(net, say)
    spec = HardwareSpec() if spec is None else spec
    say("legalise, partition, place, route")
    plan = compile_network(net, spec)
    x, _ = _test_images(images)
    say(f"reference run on {len(x)} test images ({timing} timing) for the activity")
    run = run_snn(net, x, max_steps=net.meta.get("sequence_steps", 0) + 400, timing=timing)
    return Compiled(net, plan, report(plan, net, run), timing, len(x))


__all__ += ["Compiled", "compile"]


# -- the accelerator ----------------------------------------------------------------------------------------
def fit_spec(net, spec=None, *, shrink: bool = True):
    """The hardware spec that runs ``net`` (the "fit this network" choice): ``spec``'s neurons and lanes
    (default :class:`HardwareSpec`'s) with as many tiles of each kind as the compiled network uses, the
    neuron widths its layers need (currents, potentials, tracers) and, with ``shrink``, every memory cut to
    the largest its slices use, rounded up to a power of two (synapse, trace and unit words, routing
    table, unit row width, exp table); a network with a recurrent layer gets the input buffer it needs
    (``buffer_words``, a power of two, also without ``shrink``)."""
    from dataclasses import replace

    from .sw.compile import HardwareSpec, compile_network
    from .sw.neurons import model_from_dict
    from .sw.units import unit_constants
    spec = HardwareSpec() if spec is None else spec
    models = [model_from_dict(n.params["model"]) for n in net if n.op in ("neuron", "rnn")]
    if models:
        cw = max([spec.current_width] + [m.current_width for m in models])
        vw = max([spec.v_width, cw] + [m.v_width for m in models])
        bound = max(max(abs(m.s_min), abs(m.s_max)) for m in models)
        spec = replace(spec, current_width=cw, v_width=vw,
                       tracer_bits=max(spec.tracer_bits, bound.bit_length() + 1))
    roomy = replace(spec, neuron_tiles=4096, matmul_tiles=4096, unit_tiles=4096, buffer_words=1 << 24)
    plan = compile_network(net, roomy)
    fitted = replace(spec, **{f"{k}_tiles": plan.tiles_used(k) for k in ("neuron", "matmul", "unit")})
    pow2 = lambda n: 1 << max(1, (max(int(n), 1) - 1).bit_length())     # noqa: E731
    need = max(L.buffer_words for L in plan.layers)      # a recurrent layer's tiles buffer elements x fan-in
    if need > fitted.buffer_words:
        fitted = replace(fitted, buffer_words=pow2(need))
    if not shrink:
        return fitted
    words = {k: max([s.words for s in plan.slices if s.kind == k], default=1) for k in ("neuron", "matmul", "unit")}
    units = [L for L in plan.layers if L.kind == "unit"]
    tables = [len(unit_constants(net[L.front]).exp_table) for L in units if L.op == "softmax"]
    routes = max([n for (kind, _), n in plan.routes_per_tile.items() if kind != "host"], default=1)
    small = replace(fitted, synapse_words=min(spec.synapse_words, pow2(words["neuron"])),
                    trace_words=min(spec.trace_words, pow2(words["matmul"])),
                    unit_words=min(spec.unit_words, pow2(words["unit"])),
                    unit_width=min(spec.unit_width, pow2(max([L.cols for L in units], default=1))),
                    exp_words=min(spec.exp_words, pow2(max(tables, default=2))),
                    route_words=min(spec.route_words, pow2(routes)), buffer_words=pow2(need) if need else 0,
                    max_fanout=min(spec.max_fanout, pow2(routes)))
    compile_network(net, small)              # the shrunk spec must still hold the same slices
    return small


@dataclass
class NetworkCheck:
    """A network run on the generated accelerator: per image, the first mismatch against the golden
    model (``None`` = bit-exact layer by layer and output), error counters, cycles and predictions."""
    model: str
    net: object
    spec: object
    plan: object
    images: object
    counts: object
    runs: list
    mismatches: list
    qann_accuracy: float
    snn_accuracy: float
    rtl_accuracy: float
    simulator: str
    golden_traces: list                  # per image: the golden model's per-layer traces (run_snn, layer timing)

    @property
    def mismatched_images(self) -> int:
        return sum(m is not None for m in self.mismatches)

    @property
    def images_with_errors(self) -> int:
        return sum(bool(r.errors) for r in self.runs)

    @property
    def passed(self) -> bool:
        """Every image bit-exact (every layer's spikes and the outputs) and no error counter moved."""
        return self.mismatched_images == 0 and self.images_with_errors == 0

    @property
    def cycles_mean(self) -> float:
        return sum(r.run_cycles for r in self.runs) / max(1, len(self.runs))

    def costs(self) -> list:
        """Per image :class:`~spikeforge.sim.network.RunCosts` (beats, ACs, MACs, cycle bounds, energy)."""
        from .sim.network import run_costs
        return [run_costs(self.images, r, c) for r, c in zip(self.runs, self.counts)]


def run_network(net, spec=None, *, images: int = 4, simulator: str = "verilator", idle: float = 0.0,
                backpressure: float = 0.0, seed: int = 0, max_steps: int = 256, progress=None) -> NetworkCheck:
    """Compile ``net`` (a network or an embedded model name) for ``spec`` (default: :func:`fit_spec`),
    generate the accelerator, load the program and run the first ``images`` test images on ``simulator``
    with spike logging; every layer's spikes are compared with ``run_snn(..., timing="layer")`` and the
    outputs with the integer QANN."""
    from .progress import reporter
    from .sim.bench import check_stall_probability
    from .sim.network import compare_layers, outputs_of, run_accelerator
    from .sw.compile import compile_network
    from .sw.compile.images import build_images
    from .sw.snn import encode_input, run_qann, run_snn
    check_stall_probability("idle", idle)
    check_stall_probability("backpressure", backpressure)
    say = reporter(progress)
    name = net if isinstance(net, str) else net.name if hasattr(net, "name") else "network"
    net = _network(net, say)
    spec = fit_spec(net) if spec is None else spec
    say("compile: legalise, partition, place, route, images")
    plan = compile_network(net, spec)
    images_ = build_images(net, plan)
    x, y = _test_images(images)
    scale = net.input.params["scale"]
    xq = torch.round(x / scale) * scale
    counts = encode_input(net, xq).numpy()
    say(f"accelerator on {simulator}: {len(x)} images" + (" (building the model first)" if simulator == "verilator" else ""))
    runs = run_accelerator(images_, counts, simulator=simulator, max_steps=max_steps, idle=idle,
                           backpressure=backpressure, seed=seed, log=True)
    say("golden model and integer QANN")
    qann = run_qann(net, xq)
    goldens = [run_snn(net, xq[i:i + 1], timing="layer", record=0, max_steps=max_steps) for i in range(len(runs))]
    mismatches = [compare_layers(images_, r, g.traces, qann.output[i]) for i, (r, g) in enumerate(zip(runs, goldens))]
    rtl = torch.tensor([int(outputs_of(images_, r).argmax()) for r in runs])
    snn = torch.cat([g.output.reshape(1, -1) for g in goldens])
    acc = lambda logits: float((logits.reshape(len(y), -1).argmax(-1) == y).double().mean())   # noqa: E731
    return NetworkCheck(name, net, spec, plan, images_, counts, runs, mismatches, acc(qann.output), acc(snn),
                        float((rtl == y).double().mean()), simulator, [g.traces for g in goldens])


def generate_accelerator(spec, outdir, *, name: str = "spikeforge_accelerator") -> dict[str, Path]:
    """Write the Verilog of the accelerator for ``spec`` (neuron tiles only so far) and its format
    (``accelerator.json``: the geometry a program must be compiled for) into ``outdir``."""
    from amaranth.back import verilog

    from .hw.accelerator import Accelerator
    from .sw.accelerator import AcceleratorFormat
    fmt = AcceleratorFormat.from_spec(spec)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    v = out / f"{name}.v"
    v.write_text(verilog.convert(Accelerator(fmt), name=name, emit_src=False))
    j = out / "accelerator.json"
    j.write_text(json.dumps({"spec": spec.to_dict(), "format": fmt.to_dict()}, indent=1) + "\n")
    return {"verilog": v, "format": j}


__all__ += ["fit_spec", "NetworkCheck", "run_network", "generate_accelerator"]
