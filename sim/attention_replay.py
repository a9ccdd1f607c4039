"""Golden traces of the attention blocks and their replay against the RTL.

Trace encoding (golden-trace format v1, docs/golden-traces.md):

* trace matmul: ``inputs`` rows ``(step, index, sign)`` with ``index = (side << 24) | (token << 12) |
  channel``; ``spikes`` rows are the ``ADD`` products ``(step, row * (cols + norm) + col, value)``;
  counters ``rejected``, ``overflows``, ``step``.
* WOSS softmax: ``inputs`` rows ``(step, row * keys + col, value)`` (ADD beats); ``spikes`` rows
  ``(step, row * keys + col, +1)`` with the step counted over the whole ``2T`` period; counters
  ``overflows``, ``rejected``.

Replays send ``CLEAR`` first (block RAM is not reset), then the events step by step, and collect the
output stream until every ``STEP`` marker has come back; random idle cycles on the input and random
backpressure on the output exercise every stall path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from ..hw.trace_matmul import MatmulOp, ProductOp, TraceMatmul
from ..sw.attention import MatmulEvent, TraceMatmulModel
from .bench import Bench, StreamSink, StreamSource, run_until
from .trace import SpikeTrace

__all__ = ["matmul_golden", "matmul_trace_events", "replay_matmul", "random_matmul_events", "ReplayStats"]

_SIDE_SHIFT, _TOKEN_SHIFT = 24, 12


@dataclass
class ReplayStats:
    """Observed trace and the cost of the run: cycles and input beats."""
    trace: SpikeTrace
    cycles: int
    beats: int


# -- trace matmul ------------------------------------------------------------------------------------
def _encode(ev: MatmulEvent) -> int:
    return ((ev.side == "b") << _SIDE_SHIFT) | (ev.token << _TOKEN_SHIFT) | ev.channel


def matmul_golden(engine: TraceMatmul, events: list[MatmulEvent]) -> SpikeTrace:
    """Expected trace of ``engine`` for ``events`` (which must start with ``clear``), from the
    bit-exact :class:`~spikeforge.sw.attention.TraceMatmulModel`."""
    if not events or events[0].op != "clear":
        raise ValueError("a replayed event list starts with a clear (block RAM is not reset)")
    model = TraceMatmulModel(engine.fmt, rows=engine.rows, cols=engine.cols, norm_column=engine.norm_column)
    run = model.run(events)
    width = engine.cols + engine.norm_column
    inputs, step = [], 0
    for ev in events:
        if ev.op == "step":
            step += 1
        elif ev.op == "spike":
            inputs.append((step, _encode(ev), -1 if ev.neg else 1))
    spikes = [(t, r * width + c, v) for t, r, c, v in run.products]
    meta = {"block": "trace_matmul", "config": engine.config(), "steps": run.steps,
            "events": [[e.op, e.side, e.token, e.channel, int(e.neg)] for e in events]}
    counters = {"rejected": run.rejected, "overflows": run.overflows, "step": model.t}
    return SpikeTrace(meta, inputs, spikes, {}, counters)


def matmul_trace_events(golden: SpikeTrace) -> list[MatmulEvent]:
    return [MatmulEvent(op, side, token, channel, bool(neg)) for op, side, token, channel, neg in golden.meta["events"]]


def random_matmul_events(engine: TraceMatmul, *, steps: int, density: float, seed: int,
                         malformed: int = 0) -> list[MatmulEvent]:
    """Random spike events: phase mode one spike per neuron at a random step (or none), count mode
    independent +-1 spikes; ``malformed`` extra events with out-of-range tokens/channels (and, in
    phase mode, repeated spikes of a neuron) mixed in."""
    rng = random.Random(seed)
    fmt = engine.fmt
    D = fmt.channels
    per_step: list[list[MatmulEvent]] = [[] for _ in range(steps)]
    for side, size in (("a", engine.rows), ("b", engine.cols)):
        for token in range(size):
            for channel in range(D):
                if fmt.mode == "phase":
                    if rng.random() < density:
                        t = rng.randrange(min(steps, fmt.T))
                        per_step[t].append(MatmulEvent("spike", side, token, channel, rng.random() < 0.5))
                else:
                    for t in range(steps):
                        if rng.random() < density:
                            per_step[t].append(MatmulEvent("spike", side, token, channel, rng.random() < 0.5))
    for _ in range(malformed):
        t = rng.randrange(steps)
        kind = rng.randrange(3)
        side = rng.choice("ab")
        size = engine.rows if side == "a" else engine.cols
        tok_top = (1 << (engine.event_layout.members["token"].width)) - 1
        ch_top = (1 << (engine.event_layout.members["channel"].width)) - 1
        if kind == 0 and tok_top >= size:
            per_step[t].append(MatmulEvent("spike", side, rng.randrange(size, tok_top + 1), 0))
        elif kind == 1 and ch_top >= D:
            per_step[t].append(MatmulEvent("spike", side, 0, rng.randrange(D, ch_top + 1)))
        elif fmt.mode == "phase" and per_step[t]:
            per_step[t].append(rng.choice(per_step[t]))   # the same neuron again: a second spike
    events = [MatmulEvent("clear")]
    for t in range(steps):
        evs = per_step[t]
        rng.shuffle(evs)
        events += evs + [MatmulEvent("step")]
    return events


def _matmul_beat(ev: MatmulEvent) -> dict:
    if ev.op == "spike":
        return {"op": MatmulOp.SPIKE, "side": int(ev.side == "b"), "token": ev.token, "channel": ev.channel,
                "neg": int(ev.neg)}
    return {"op": MatmulOp.STEP if ev.op == "step" else MatmulOp.CLEAR}


async def replay_matmul(bench: Bench, engine: TraceMatmul, golden: SpikeTrace, *, idle: float = 0.0,
                        backpressure: float = 0.0, seed: int = 0) -> ReplayStats:
    """Drive ``golden``'s events into ``engine`` and return the observed trace."""
    rng = random.Random(seed)
    events = matmul_trace_events(golden)
    src = StreamSource(bench, "events", engine.event_layout, idle=idle, rng=random.Random(rng.random()))
    sink = StreamSink(bench, "products", engine.product_layout, backpressure=backpressure,
                      rng=random.Random(rng.random()))
    for ev in events:
        src.put(_matmul_beat(ev))
    markers = sum(ev.op in ("step", "clear") for ev in events)

    def done():
        return src.done and sum(b["op"] in (ProductOp.STEP.value, ProductOp.CLEAR.value) for b in sink.received) >= markers

    cycles = await run_until(bench, [src, sink], done, max_cycles=50_000 + 40 * len(events) * max(engine.rows, engine.cols),
                             what="trace matmul replay")
    width = engine.cols + engine.norm_column
    spikes, step = [], 0
    for b in sink.received:
        if b["op"] == ProductOp.STEP.value:
            step += 1
        elif b["op"] == ProductOp.CLEAR.value:
            step = 0
        else:
            spikes.append((step, b["row"] * width + b["col"], b["value"]))
    counters = {"rejected": bench.get("rejected"), "overflows": bench.get("overflows"), "step": bench.get("step")}
    meta = dict(golden.meta, block="trace_matmul")
    return ReplayStats(SpikeTrace(meta, golden.inputs, np.asarray(spikes, dtype=np.int64).reshape(-1, 3), {}, counters),
                       cycles, len(events))
