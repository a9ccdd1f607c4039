"""Co-verification API: replay golden traces on the RTL and diff them, on either simulator.

>>> from spikeforge.sw import StBif
>>> from spikeforge.hw.neuron_core import NeuronCore
>>> core = NeuronCore(StBif.signed(16, theta=8), neurons=64, lanes=4)
>>> checks = verify_core(core, [random_core_trace(core, steps=40, events=2000, seed=1)], simulator="verilator")
>>> checks[0].diff.equal
True
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hw.neuron_core import NeuronCore
from .amaranth_sim import run_amaranth
from .bench import check_stall_probability
from .core_replay import core_golden, random_core_inputs, replay_core
from .trace import SpikeTrace, TraceDiff, diff_traces

__all__ = ["CoreCheck", "verify_core", "random_core_trace", "SIMULATORS"]

SIMULATORS = ("verilator", "amaranth")


@dataclass
class CoreCheck:
    """One replay: golden vs observed trace, their diff, and the cycles the RTL took
    (``beats``: all ``events`` beats sent; ``accumulate_beats``: the ACCUMULATE ones)."""
    golden: SpikeTrace
    observed: SpikeTrace
    diff: TraceDiff
    cycles: int
    beats: int
    accumulate_beats: int
    simulator: str
    idle: float
    backpressure: float


def random_core_trace(core: NeuronCore, *, steps: int, events: int, seed: int) -> SpikeTrace:
    """Golden trace of ``events`` random input events over ``steps`` steps (bit-exact model)."""
    rng = np.random.default_rng(seed)
    inputs = random_core_inputs(core.model, neurons=core.neurons, steps=steps, events=events, rng=rng)
    return core_golden(core.model, neurons=core.neurons, lanes=core.lanes, inputs=inputs, steps=steps)


def _expected(core: NeuronCore, golden: SpikeTrace, malformed: int) -> SpikeTrace:
    """The golden trace plus what the replay itself must see: ``malformed`` more rejected beats and
    exactly one readback beat per group."""
    counters = dict(golden.counters, rejected=golden.counters.get("rejected", 0) + malformed,
                    readback_beats=core.groups)
    return SpikeTrace(golden.meta, golden.inputs, golden.spikes, golden.state, counters)


def verify_core(core: NeuronCore, goldens: list[SpikeTrace], *, simulator: str = "verilator",
                idle: float = 0.0, backpressure: float = 0.0, seed: int = 0, malformed: int = 0,
                waves: bool = False, workdir: Path | None = None) -> list[CoreCheck]:
    """Replay every golden trace on ``core``'s RTL and diff the observed traces against them.

    ``simulator`` is ``"verilator"`` (cocotb on the Verilog, built once and cached) or
    ``"amaranth"`` (Amaranth's Python simulator; no build, slower per cycle). ``idle`` and
    ``backpressure`` are stall probabilities in [0, 1). With ``workdir`` the traces are kept there
    (``golden<i>.npz``, ``observed<i>.npz``) on either simulator; ``waves`` (needs ``workdir``)
    records VCD waveforms there: ``waves.vcd`` for the whole Verilator job, ``waves<i>.vcd`` per
    replay on Amaranth.
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator={simulator!r} is not supported; choose one of {SIMULATORS}")
    check_stall_probability("idle", idle)
    check_stall_probability("backpressure", backpressure)
    if malformed < 0:
        raise ValueError(f"malformed={malformed} must be >= 0")
    if waves and workdir is None:
        raise ValueError("waves=True needs a workdir to write the waveform into")
    for g in goldens:
        if g.meta.get("config", {}).get("model") != core.model.to_dict():
            raise ValueError("golden trace was made for another neuron model than the core's: "
                             f"{g.meta.get('config', {}).get('model')} vs {core.model.to_dict()}")
    replays = [dict(idle=idle, backpressure=backpressure, seed=seed + i, malformed=malformed)
               for i in range(len(goldens))]
    work = Path(workdir).resolve() if workdir is not None else None   # jobs run in another folder
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    checks = []
    if simulator == "amaranth":
        for i, (g, r) in enumerate(zip(goldens, replays)):
            vcd = str(work / f"waves{i}.vcd") if waves else None
            res = run_amaranth(core, lambda bench: replay_core(bench, core, g, **r), vcd=vcd)
            if work is not None:
                g.save(work / f"golden{i}.npz")
                res.trace.save(work / f"observed{i}.npz")
            checks.append(CoreCheck(g, res.trace, diff_traces(_expected(core, g, malformed), res.trace), res.cycles,
                                    res.beats, res.accumulate_beats, simulator, idle, backpressure))
        return checks
    from .verilator import build, run_job
    design = build(core, core.verilog_name, waves=waves)
    keep = work is not None
    work = work or Path(tempfile.mkdtemp(prefix="sf-verify-"))
    for i, (g, r) in enumerate(zip(goldens, replays)):
        r["golden"] = str(g.save(work / f"golden{i}.npz"))
        r["observed"] = str(work / f"observed{i}.npz")
    answer = run_job(design, {"kind": "neuron_core_replay", "config": core.config(), "replays": replays},
                     waves_to=work / "waves.vcd" if waves else None)
    for g, r, a in zip(goldens, replays, answer):
        obs = SpikeTrace.load(r["observed"])
        checks.append(CoreCheck(g, obs, diff_traces(_expected(core, g, malformed), obs), a["cycles"], a["beats"],
                                a["accumulate_beats"], simulator, idle, backpressure))
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return checks
