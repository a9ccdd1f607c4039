"""Golden traces of the neuron tile and their replay against its RTL (either simulator).

Trace encoding (golden-trace format v1): ``inputs`` rows ``(step, axon, value)`` of the input ``EVENT``s
(malformed axons included; a ``STEP`` follows each step's events); ``spikes`` rows ``(step, neuron,
sign)``; counters ``rejected``, ``product_overflows``, ``overflows``. The replay sends ``CLEAR`` (block RAM
is not reset), then every step's events and its ``STEP``, with random idle input cycles and output
backpressure, collects output events until every ``STEP`` came back, and keeps the outputs open for a
drain tail so a spurious event after the last ``STEP`` is caught.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from ..hw.neuron_tile import NeuronTile
from ..sw.events import EventOp
from ..sw.neuron_tile import recurrent_core_inputs, tile_core_inputs
from .bench import Bench, StreamSink, StreamSource, check_stall_probability, clock, run_until
from .core_replay import core_golden
from .trace import SpikeTrace

__all__ = ["tile_golden", "random_tile_inputs", "replay_tile", "TileReplay", "verify_tile"]

TILE_COUNTERS = ("rejected", "product_overflows", "overflows")


def _events(inputs: np.ndarray, steps: int, fmt) -> np.ndarray:
    """The event stream of a trace's inputs: each step's events, then ``STEP``."""
    rows = []
    for s in range(steps):
        sel = inputs[inputs[:, 0] == s]
        rows += [(EventOp.EVENT, 0, int(a), int(v)) for _, a, v in sel] + [(EventOp.STEP, 0, 0, 0)]
    ops, tiles, axons, values = (np.array([r[i] for r in rows], np.int64) for i in range(4))
    return fmt.event_format().events(ops, tiles, axons, values)


def tile_golden(tile, inputs, steps: int) -> SpikeTrace:
    """Expected trace of ``tile`` (a neuron, unit or matmul tile with a program) for input events
    ``inputs [E, 3]`` (step, axon, value), from the bit-exact models: the tile kind's event model
    (:func:`~spikeforge.sw.neuron_tile.tile_core_inputs`, :func:`~spikeforge.sw.unit_tile.unit_core_inputs`,
    :func:`~spikeforge.sw.matmul_tile.matmul_outputs`) then the core's golden (a graded matmul's
    increments are its output events)."""
    from ..hw.matmul_tile import MatmulTile
    from ..hw.unit_tile import UnitTile
    from ..sw.matmul_tile import matmul_outputs
    from ..sw.unit_tile import unit_core_inputs
    inputs = np.asarray(inputs, dtype=np.int64).reshape(-1, 3)
    if tile.program is None:
        raise ValueError("the tile has no program: give it weights or a program")
    events = _events(inputs, steps, tile.fmt)
    if isinstance(tile, UnitTile):
        core_inputs, counts = unit_core_inputs(tile.fmt, tile.program, events)
        kind = "unit_tile"
    elif isinstance(tile, MatmulTile):
        core_inputs, counts = matmul_outputs(tile.fmt, tile.program, events)
        kind = "matmul_tile"
        if tile.program.graded:
            counters = {"rejected": counts["rejected"], "product_overflows": counts["product_overflows"],
                        "overflows": 0}
            meta = {"block": kind, "steps": steps}
            return SpikeTrace(meta, inputs, core_inputs, {}, counters)
    elif tile.program.window:
        return _recurrent_golden(tile, inputs, events, steps)
    else:
        if tile.program.readout:
            raise ValueError("a readout tile emits no spikes; its potentials are checked by the accelerator tests")
        core_inputs, counts = tile_core_inputs(tile.fmt, tile.program, events)
        kind = "neuron_tile"
    core = core_golden(tile.program.model(tile.model), neurons=tile.fmt.neurons, lanes=tile.fmt.lanes,
                       inputs=core_inputs, steps=steps)
    counters = {"rejected": counts["rejected"], "product_overflows": counts["product_overflows"],
                "overflows": core.counters["overflows"]}
    meta = {"block": kind, "steps": steps}
    if kind == "neuron_tile":
        meta["config"] = tile.config()
    return SpikeTrace(meta, inputs, core.spikes, {}, counters)


def _recurrent_golden(tile, inputs, events, steps: int) -> SpikeTrace:
    """A recurrent program's trace: every window is a cleared core run of ``window`` steps fed at its first
    step (:func:`~spikeforge.sw.neuron_tile.recurrent_core_inputs`); its spikes leave at the element's
    output indices."""
    prog, fmt = tile.program, tile.fmt
    windows, counts = recurrent_core_inputs(fmt, prog, events)
    model = prog.model(tile.model)
    width = prog.groups(fmt.lanes) * fmt.lanes
    spikes, overflows = [np.zeros((0, 3), np.int64)], 0
    for e, core_inputs in windows:
        run = core_golden(model, neurons=fmt.neurons, lanes=fmt.lanes, inputs=core_inputs,
                          steps=min(prog.window, steps - e * prog.window))
        spikes.append(run.spikes + np.array([e * prog.window, e * width, 0]))
        overflows += run.counters["overflows"]
    counters = {"rejected": counts["rejected"], "product_overflows": counts["product_overflows"],
                "overflows": overflows}
    return SpikeTrace({"block": "neuron_tile", "steps": steps, "config": tile.config()}, inputs,
                      np.concatenate(spikes), {}, counters)


def _replay_budget(tile, events: int, steps: int) -> int:
    """Cycles a replay may take before it counts as hung (generous: the slowest tile's sequential costs)."""
    from ..hw.matmul_tile import MatmulTile
    from ..hw.unit_tile import UnitTile
    f = tile.fmt
    if isinstance(tile, UnitTile):
        per_event, per_step = 4, f.rows * (f.width * (12 + f.level_bits) + 64) + f.words + f.neurons
    elif isinstance(tile, MatmulTile):
        per_event, per_step = 3 * max(f.rows, f.cols) + 8, f.words + f.neurons
    else:
        per_event, per_step = 3 * f.groups_per_token, f.neurons
        if f.buffer_words:           # a window start: core CLEAR, buffer row replay; CLEAR wipes the buffer
            per_event, per_step = per_event + 3, 2 * f.neurons + 3 * f.fan_in * (f.groups_per_token + 1)
    return 3 * events * per_event + steps * (per_step + 10) + 200


def random_tile_inputs(tile: NeuronTile, *, steps: int, events: int, seed: int = 0, malformed: int = 0) -> np.ndarray:
    """Random input events: spikes (or graded values within ``value_bits``) on random axons in the first
    two thirds of the steps, plus ``malformed`` events on axons beyond the tile."""
    rng = np.random.default_rng(seed)
    fmt, prog = tile.fmt, tile.program
    lo, hi = -(1 << (fmt.value_bits - 1)), (1 << (fmt.value_bits - 1)) - 1
    if getattr(prog, "window", 0):         # a recurrent program: element e's inputs by its window's start
        token = rng.integers(0, prog.elements, size=events)
        step = np.minimum(rng.integers(0, max(1, steps * 2 // 3), size=events), token * prog.window)
        axon = fmt.axon(token, rng.integers(0, prog.fan_in, size=events))
    else:
        step = rng.integers(0, max(1, steps * 2 // 3), size=events)
        axon = fmt.axon(rng.integers(0, prog.tokens, size=events), rng.integers(0, prog.fan_in, size=events))
    value = rng.choice([v for v in range(lo, hi + 1) if v != 0], size=events)
    rows = [np.stack([step, axon, value], 1)]
    top = (1 << fmt.event_format().axon_bits) - 1
    rows_of = prog.elements if getattr(prog, "window", 0) else prog.tokens
    bad = [a for a in range(top + 1) if (a >> fmt.k_bits) >= rows_of or (a & ((1 << fmt.k_bits) - 1)) >= prog.fan_in]
    if malformed:
        if not bad:
            raise ValueError("every axon of this tile is valid: no malformed events can be sent")
        rows.append(np.stack([rng.integers(0, max(1, steps * 2 // 3), size=malformed), rng.choice(bad, size=malformed),
                              np.ones(malformed, np.int64)], 1))
    out = np.concatenate(rows).astype(np.int64)
    return out[np.argsort(out[:, 0], kind="stable")]


@dataclass
class TileReplay:
    """Observed trace and cost of one replay."""
    trace: SpikeTrace
    cycles: int
    beats: int


async def replay_tile(bench: Bench, tile, golden: SpikeTrace, *, idle: float = 0.0,
                      backpressure: float = 0.0, seed: int = 0, writes=()) -> TileReplay:
    """Replay ``golden``'s inputs into ``tile`` on ``bench`` and return the observed trace; ``writes``
    (``(mem, addr, data)`` configuration writes, e.g. ``TileProgram.writes``) are sent first."""
    rng = random.Random(seed)
    if writes:
        wsrc = StreamSource(bench, "writes", tile.writes.payload.shape(), rng=random.Random(rng.random()))
        for mem, addr, data in writes:
            wsrc.put({"mem": int(mem), "addr": int(addr), "data": int(data)})
        await run_until(bench, [wsrc], lambda: wsrc.done, max_cycles=len(writes) * 2 + 10, what="program load")
        await clock(bench, [])
    layout = tile.inputs.payload.shape()
    src = StreamSource(bench, "inputs", layout, idle=idle, rng=random.Random(rng.random()))
    src.put({"op": EventOp.CLEAR.value})       # then the program's bias, if any
    stream = _events(golden.inputs, golden.steps, tile.fmt)
    for e in stream:
        src.put({"op": int(e["op"]), "tile": int(e["tile"]), "axon": int(e["axon"]), "value": int(e["value"])})
    spikes, seen = [], [0]

    def on_out(beat):
        if beat["op"] == EventOp.STEP.value:
            seen[0] += 1
        else:
            spikes.append((seen[0], beat["axon"], beat["value"]))

    sink = StreamSink(bench, "outputs", layout, backpressure=backpressure, rng=random.Random(rng.random()),
                      on_receive=on_out)
    drivers = [src, sink]
    slack = 1 / max(1e-3, (1 - idle) * (1 - backpressure))
    budget = int(_replay_budget(tile, len(stream), golden.steps) * slack * 4)
    cycles = await run_until(bench, drivers, lambda: src.done and seen[0] >= golden.steps, max_cycles=budget,
                             what="neuron-tile replay")
    sink.backpressure = 0.0
    for _ in range(tile.fmt.neurons // tile.fmt.lanes + 16):       # drain tail: nothing more may come
        await clock(bench, drivers)
    counters = {name: bench.get(name) for name in TILE_COUNTERS}
    meta = dict(golden.meta, observed=True)
    return TileReplay(SpikeTrace(meta, golden.inputs, np.array(spikes, np.int64).reshape(-1, 3), {}, counters),
                      cycles, len(stream) + 1)


def verify_tile(tile: NeuronTile, goldens: list[SpikeTrace], *, simulator: str = "amaranth", idle: float = 0.3,
                backpressure: float = 0.3, seed: int = 0):
    """Replay every golden on ``tile`` (Amaranth simulator or Verilator) and diff; returns
    ``[(golden, observed, diff, cycles)]``."""
    from .trace import diff_traces
    check_stall_probability("idle", idle)
    check_stall_probability("backpressure", backpressure)
    results = []
    if simulator == "amaranth":
        from .amaranth_sim import run_amaranth
        for i, g in enumerate(goldens):
            r = run_amaranth(tile, lambda bench, g=g, i=i: replay_tile(bench, tile, g, idle=idle,
                                                                       backpressure=backpressure, seed=seed + i))
            results.append((g, r.trace, diff_traces(g, r.trace), r.cycles))
        return results
    if simulator != "verilator":
        raise ValueError(f"simulator={simulator!r}: use 'verilator' or 'amaranth'")
    from .verilator import run_replays
    runs = run_replays(tile, {"kind": "tile_replay", "block": tile.block_kind, "config": tile.config()}, goldens, idle=idle,
                       backpressure=backpressure, seed=seed)
    return [(g, obs, diff_traces(g, obs), a["cycles"]) for g, (obs, a) in zip(goldens, runs)]
