"""Golden traces for the neuron core and their replay against the RTL.

* :func:`core_golden` runs the bit-exact model on input events and returns the expected
  :class:`~spikeforge.sim.trace.SpikeTrace` (spikes, final state, counters).
* :func:`core_beats` turns a trace's input events into ``events`` stream beats (canonical packing:
  within a step, the k-th current of every neuron of a group goes into that group's k-th beat).
* :func:`replay_core` drives those beats into a :class:`~spikeforge.hw.neuron_core.NeuronCore` on
  any :class:`~spikeforge.sim.bench.Bench` with random idle cycles and backpressure, and returns the
  observed trace; :func:`~spikeforge.sim.trace.diff_traces` compares the two.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from ..hw.neuron_core import CoreOp, NeuronCore
from ..sw.neurons import NeuronModel, PhaseNeuron
from .bench import Bench, StreamSink, StreamSource, clock, run_until
from .payload import width_of
from .trace import SpikeTrace

__all__ = ["core_golden", "core_beats", "replay_core", "random_core_inputs", "ReplayResult"]


def _ranked(inputs: np.ndarray) -> tuple[np.ndarray, int]:
    """Rank of each input event among the events of the same (step, index), in arrival order."""
    if not len(inputs):
        return np.zeros(0, np.int64), 1
    order = np.lexsort((np.arange(len(inputs)), inputs[:, 1], inputs[:, 0]))
    keys = inputs[order, 0] * (inputs[:, 1].max() + 1) + inputs[order, 1]
    first = np.r_[True, keys[1:] != keys[:-1]]
    starts = np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))
    rank = np.empty(len(inputs), np.int64)
    rank[order] = np.arange(len(keys)) - starts
    return rank, int(rank.max()) + 1


def _check_inputs(inputs: np.ndarray, neurons: int, steps: int):
    if len(inputs) and (inputs[:, 1].min() < 0 or inputs[:, 1].max() >= neurons):
        raise ValueError(f"input event neuron index out of range [0, {neurons})")
    if len(inputs) and (inputs[:, 0].min() < 0 or inputs[:, 0].max() >= steps):
        raise ValueError(f"input event step out of range [0, {steps})")


def core_golden(model: NeuronModel, *, neurons: int, lanes: int, inputs, steps: int) -> SpikeTrace:
    """Expected trace of a neuron core fed ``inputs`` (``[E, 3]``: step, neuron, current) for ``steps``
    steps and then read back, computed by the bit-exact model."""
    inputs = np.asarray(inputs, dtype=np.int64).reshape(-1, 3)
    _check_inputs(inputs, neurons, steps)
    rank, depth = _ranked(inputs)
    currents = torch.zeros((steps, depth, neurons), dtype=torch.int64)
    if len(inputs):
        currents[inputs[:, 0], rank, inputs[:, 1]] = torch.from_numpy(inputs[:, 2])
    result = model.run(currents, stacked=True)        # [steps, depth, neurons]: arrival order kept
    t, n = torch.nonzero(result.spikes, as_tuple=True)
    spikes = np.stack([t.numpy(), n.numpy(), result.spikes[t, n].numpy().astype(np.int64)], axis=1)
    meta = {"block": "neuron_core", "config": {"model": model.to_dict(), "neurons": neurons, "lanes": lanes},
            "steps": steps}
    counters = {"overflows": result.overflows, "truncations": result.truncations, "step": steps, "rejected": 0}
    return SpikeTrace(meta, inputs, spikes, {k: v.numpy() for k, v in result.state.items()}, counters)


def core_beats(core: NeuronCore, trace: SpikeTrace) -> list[dict]:
    """``events`` beats replaying ``trace``: CLEAR, then ACCUMULATE beats and STEP for each step,
    then READ of every group. (Block RAM keeps its contents through a reset; CLEAR starts the run
    from the model's initial state.)"""
    P = core.lanes
    inputs = trace.inputs
    rank, _ = _ranked(inputs)
    beats: list[dict] = [{"op": CoreOp.CLEAR}]
    by_step: dict[int, dict[tuple[int, int], list[int]]] = {}
    for (step, idx, value), k in zip(inputs.tolist(), rank.tolist()):
        cur = by_step.setdefault(step, {}).setdefault((k, idx // P), [0] * P)
        cur[idx % P] = value
    for step in range(trace.steps):
        for (k, group), cur in sorted(by_step.get(step, {}).items()):
            beats.append({"op": CoreOp.ACCUMULATE, "group": group, "current": cur})
        beats.append({"op": CoreOp.STEP})
    beats += [{"op": CoreOp.READ, "group": g} for g in range(core.groups)]
    return beats


@dataclass
class ReplayResult:
    """Observed trace plus what the run cost: ``cycles``, the number of ``events`` beats and how
    many of them were (well-formed) ACCUMULATE beats."""
    trace: SpikeTrace
    cycles: int
    beats: int
    accumulate_beats: int


async def replay_core(bench: Bench, core: NeuronCore, golden: SpikeTrace, *, idle: float = 0.0,
                      backpressure: float = 0.0, seed: int = 0, malformed: int = 0) -> ReplayResult:
    """Replay ``golden``'s inputs into ``core`` on ``bench`` and return the observed trace.

    ``malformed`` inserts that many ACCUMULATE beats naming a group beyond the core (only possible
    when the group count is not a power of two); the core must drop and count them.
    """
    rng = random.Random(seed)
    beats = core_beats(core, golden)
    accumulate_beats = sum(b["op"] == CoreOp.ACCUMULATE for b in beats)
    if malformed:
        top = (1 << width_of(core.event_layout["group"].shape)) - 1
        if top < core.groups:
            raise ValueError(f"a core with {core.groups} groups has no unused group numbers to send malformed beats to")
        for _ in range(malformed):
            bad = {"op": CoreOp.ACCUMULATE, "group": rng.randint(core.groups, top),
                   "current": [rng.randint(1, 3)] * core.lanes}
            beats.insert(rng.randrange(len(beats)), bad)
    src = StreamSource(bench, "events", core.event_layout, idle=idle, rng=random.Random(rng.random()))
    for b in beats:
        src.put(b)
    spikes: list[tuple[int, int, int]] = []
    steps_seen = [0]

    def on_spike(beat):
        if beat["end_step"]:
            steps_seen[0] += 1
            return
        for lane in range(core.lanes):
            if beat["fire"] >> lane & 1:
                sign = -1 if beat["neg"] >> lane & 1 else 1
                spikes.append((steps_seen[0], beat["group"] * core.lanes + lane, sign))

    spk = StreamSink(bench, "spikes", core.spike_layout, backpressure=backpressure,
                     rng=random.Random(rng.random()), on_receive=on_spike)
    rb = StreamSink(bench, "readback", core.readback_layout, backpressure=backpressure,
                    rng=random.Random(rng.random()))
    drivers = [src, spk, rb]
    slack = 1 / max(1e-3, (1 - idle) * (1 - backpressure))
    budget = int((len(beats) + golden.steps * (core.groups + 6) + 100) * slack * 4)
    cycles = await run_until(bench, drivers, lambda: src.done and steps_seen[0] >= golden.steps
                             and len(rb.received) >= core.groups, max_cycles=budget, what="neuron-core replay")
    # a few more cycles with open sinks: anything the core still emits would be a mismatch
    spk.backpressure = rb.backpressure = 0.0
    for _ in range(8):
        await clock(bench, drivers)
    state: dict[str, np.ndarray] = {name: np.zeros(core.neurons, np.int64) for name in core.model.state_fields()}
    for beat in rb.received[:core.groups]:
        for lane, st in enumerate(beat["state"]):
            for name, value in st.items():
                state[name][beat["group"] * core.lanes + lane] = value
    counters = {name: bench.get(name) for name in ("overflows", "truncations", "step", "rejected")}
    counters["readback_beats"] = len(rb.received)
    meta = dict(golden.meta, observed=True, malformed_sent=malformed)
    observed = SpikeTrace(meta, golden.inputs, np.array(spikes, np.int64).reshape(-1, 3), state, counters)
    return ReplayResult(observed, cycles, len(beats), accumulate_beats)


def random_core_inputs(model: NeuronModel, *, neurons: int, steps: int, events: int,
                       rng: np.random.Generator, active_steps: int | None = None) -> np.ndarray:
    """Random input events ``[events, 3]`` (step, neuron, current) exercising ``model``.

    Currents span the full ``current_width`` range with a bias toward small values, so saturation,
    both spike signs and quiet neurons all occur. For the phase neuron, inputs fall in the
    integration half of each period. Only the first ``active_steps`` steps get input (default: all
    but a drain tail).
    """
    lo, hi = -(1 << (model.current_width - 1)), (1 << (model.current_width - 1)) - 1
    active = active_steps if active_steps is not None else max(1, steps * 2 // 3)
    if isinstance(model, PhaseNeuron):
        cand = np.array([t for t in range(active) if t % model.period < model.T] or [0])
        step = rng.choice(cand, size=events)
    else:
        step = rng.integers(0, active, size=events)
    idx = rng.integers(0, neurons, size=events)
    big = rng.random(events) < 0.1
    small_span = max(1, hi // 8)
    value = np.where(big, rng.integers(lo, hi + 1, size=events), rng.integers(-small_span, small_span + 1, size=events))
    # a fifth of the neurons get a one-signed drive: they run into the tracer bounds and saturate
    drive = rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 0, 1], size=neurons)
    driven = drive[idx] != 0
    value = np.where(driven, drive[idx] * np.abs(rng.integers(hi // 2, hi + 1, size=events)), value)
    return np.stack([step, idx, value], axis=1).astype(np.int64)
