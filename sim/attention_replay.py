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
from ..sw.attention.events import TENSOR_CODES, head_block_run, output_block_run, woss_block_run
from .bench import Bench, StreamSink, StreamSource, run_until
from .trace import SpikeTrace

__all__ = ["matmul_golden", "matmul_trace_events", "replay_matmul", "random_matmul_events", "ReplayStats",
           "BlockCheck", "verify_block", "replay_block"]

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


async def _replay_stream(bench: Bench, golden: SpikeTrace, *, source: tuple[str, object], sink: tuple[str, object],
                         beats: list[dict], markers: int, event_of, counters, idle: float, backpressure: float,
                         seed: int, max_cycles: int, what: str, reset_on_clear: bool = True) -> ReplayStats:
    """Drive ``beats`` into stream ``source`` (name, layout) with random idle cycles, take stream ``sink``
    with random backpressure until ``markers`` STEP/CLEAR beats have come back, and return the observed
    trace: ``golden``'s meta and inputs, the other output beats as ``(step, index, value)`` events
    (``event_of(beat) -> (index, value)``; STEP beats count steps, CLEAR restarts the count if
    ``reset_on_clear``) and the ``counters`` ports read at the end; plus the cycles taken. Every
    attention protocol encodes STEP as 1 and CLEAR as 2."""
    rng = random.Random(seed)
    src = StreamSource(bench, source[0], source[1], idle=idle, rng=random.Random(rng.random()))
    out = StreamSink(bench, sink[0], sink[1], backpressure=backpressure, rng=random.Random(rng.random()))
    for beat in beats:
        src.put(beat)
    step_op, clear_op = ProductOp.STEP.value, ProductOp.CLEAR.value
    seen = {"markers": 0, "checked": 0}

    def done():
        received = out.received
        seen["markers"] += sum(b["op"] in (step_op, clear_op) for b in received[seen["checked"]:])
        seen["checked"] = len(received)
        return src.done and seen["markers"] >= markers

    cycles = await run_until(bench, [src, out], done, max_cycles=max_cycles, what=what)
    events, step = [], 0
    for b in out.received:
        if b["op"] == step_op:
            step += 1
        elif b["op"] == clear_op:
            step = 0 if reset_on_clear else step
        else:
            events.append((step, *event_of(b)))
    observed = SpikeTrace(dict(golden.meta), golden.inputs, np.asarray(events, dtype=np.int64).reshape(-1, 3), {},
                          {name: bench.get(name) for name in counters})
    return ReplayStats(observed, cycles, len(beats))


def _accumulator_beats(events: list[tuple]) -> tuple[list[dict], int]:
    """Beats of the accumulator protocol for ``("add", row, col, value)`` / ``("step",)`` / ``("clear",)``
    events, and how many STEP/CLEAR markers the block sends back for them."""
    beats = [{"op": ProductOp.ADD, "row": ev[1], "col": ev[2], "value": ev[3]} if ev[0] == "add" else
             {"op": ProductOp.STEP if ev[0] == "step" else ProductOp.CLEAR} for ev in events]
    return beats, sum(ev[0] in ("step", "clear") for ev in events)


async def replay_matmul(bench: Bench, engine: TraceMatmul, golden: SpikeTrace, *, idle: float = 0.0,
                        backpressure: float = 0.0, seed: int = 0) -> ReplayStats:
    """Drive ``golden``'s events into ``engine`` and return the observed trace."""
    events = matmul_trace_events(golden)
    width = engine.cols + engine.norm_column
    return await _replay_stream(
        bench, golden, source=("events", engine.event_layout), sink=("products", engine.product_layout),
        beats=[_matmul_beat(ev) for ev in events], markers=sum(ev.op in ("step", "clear") for ev in events),
        event_of=lambda b: (b["row"] * width + b["col"], b["value"]), counters=("rejected", "overflows", "step"),
        idle=idle, backpressure=backpressure, seed=seed,
        max_cycles=50_000 + 40 * len(events) * max(engine.rows, engine.cols), what="trace matmul replay")


# -- co-verification on either simulator --------------------------------------------------------------
@dataclass
class BlockCheck:
    """One replay of an attention block: golden vs observed trace, their diff, the RTL's cycles."""
    golden: SpikeTrace
    observed: SpikeTrace
    diff: "object"
    cycles: int
    beats: int
    simulator: str
    idle: float
    backpressure: float


#: block kind (spikeforge.hw.blocks) -> its replay coroutine
_REPLAYS = {"trace_matmul": replay_matmul}


def verify_block(block, goldens: list[SpikeTrace], *, simulator: str = "verilator", idle: float = 0.3,
                 backpressure: float = 0.3, seed: int = 0) -> list[BlockCheck]:
    """Replay every golden trace on ``block`` (a :class:`TraceMatmul` or :class:`WossSoftmax`) with
    random idle input cycles and output backpressure, on Verilator (cocotb) or Amaranth's simulator,
    and diff each observed trace against its golden."""
    from .bench import check_stall_probability
    from .trace import diff_traces
    check_stall_probability("idle", idle)
    check_stall_probability("backpressure", backpressure)
    kind = goldens[0].meta["block"] if goldens else None
    if kind not in _REPLAYS:
        raise ValueError(f"no replay for block {kind!r}; known: {sorted(_REPLAYS)}")
    replay = _REPLAYS[kind]
    results = []
    if simulator == "amaranth":
        from .amaranth_sim import run_amaranth
        for i, g in enumerate(goldens):
            async def fn(bench, g=g, i=i):
                return await replay(bench, block, g, idle=idle, backpressure=backpressure, seed=seed + i)
            r = run_amaranth(block, fn)
            results.append((g, r.trace, r.cycles, r.beats))
    elif simulator == "verilator":
        from .verilator import run_replays
        runs = run_replays(block, {"kind": "attention_block_replay", "block": kind, "config": block.config()}, goldens,
                           idle=idle, backpressure=backpressure, seed=seed)
        results += [(g, obs, a["cycles"], a["beats"]) for g, (obs, a) in zip(goldens, runs)]
    else:
        raise ValueError(f"simulator={simulator!r}: use 'verilator' or 'amaranth'")
    return [BlockCheck(g, o, diff_traces(g, o), c, b, simulator, idle, backpressure) for g, o, c, b in results]


async def replay_block(bench: Bench, kind: str, config: dict, golden: SpikeTrace, **kw) -> ReplayStats:
    """Rebuild block ``kind`` from ``config`` and replay ``golden`` (used inside the cocotb process)."""
    from ..hw.blocks import block_from_config
    replay = _REPLAYS[kind]
    block = block_from_config(kind, config)
    block._MustUse__silence = True     # only its layouts are needed here; the DUT is the Verilated design
    return await replay(bench, block, golden, **kw)


# -- WOSS softmax ----------------------------------------------------------------------------------------
def woss_golden(block, events: list[tuple]) -> SpikeTrace:
    """Expected trace of a :class:`~spikeforge.hw.woss_softmax.WossSoftmax` for ``events`` (``("clear",)``,
    ``("add", row, col, value)``, ``("step",)``; whole ``2T``-step periods after the leading clear),
    from :func:`~spikeforge.sw.attention.events.woss_block_run`."""
    run = woss_block_run(block.fmt, block.rows, block.keys, events)
    meta = {"block": "woss_softmax", "config": block.config(), "steps": run.steps, "events": [list(e) for e in events]}
    return SpikeTrace(meta, run.inputs, run.outputs, {}, run.counters)

def random_woss_events(block, *, periods: int, adds_per_step: int, seed: int, malformed: int = 0,
                       spread: float = 1.0) -> list[tuple]:
    """Random ADD beats (values ~ N(0, spread * score_bound / 4) in LSB) in the integration window of
    each period; ``malformed`` extra ADDs out of range or in the fire window."""
    rng = random.Random(seed)
    fmt, R, K, T = block.fmt, block.rows, block.keys, block.fmt.T
    sd = spread * fmt.score_bound / 4 * (1 << fmt.frac_bits)
    vlo, vhi = -(1 << (block.value_width - 1)), (1 << (block.value_width - 1)) - 1
    events: list[tuple] = [("clear",)]
    bad_steps = set(rng.randrange(periods * 2 * T) for _ in range(malformed))
    for period in range(periods):
        for p in range(2 * T):
            evs = []
            if p < T:
                for _ in range(adds_per_step if p < max(2, T // 2) else adds_per_step // 4):
                    value = max(vlo, min(vhi, int(rng.gauss(0, sd) / (1 + p))))
                    evs.append(("add", rng.randrange(R), rng.randrange(K), value))
            if period * 2 * T + p in bad_steps:
                rtop, ctop = (1 << _bits_of(block, "row")) - 1, (1 << _bits_of(block, "col")) - 1
                if rtop >= R:
                    evs.append(("add", rng.randrange(R, rtop + 1), 0, 1))
                elif ctop >= K:
                    evs.append(("add", 0, rng.randrange(K, ctop + 1), 1))
                else:
                    evs.append(("add", rng.randrange(R), rng.randrange(K), 1))   # rejected if p >= T
            events += evs + [("step",)]
    return events


def _bits_of(block, field: str) -> int:
    return block.input_layout.members[field].width


async def replay_woss(bench: Bench, block, golden: SpikeTrace, *, idle: float = 0.0, backpressure: float = 0.0,
                      seed: int = 0) -> ReplayStats:
    from ..hw.woss_softmax import SpikeOp
    assert (SpikeOp.STEP.value, SpikeOp.CLEAR.value) == (ProductOp.STEP.value, ProductOp.CLEAR.value)
    beats, markers = _accumulator_beats(golden.meta["events"])
    return await _replay_stream(
        bench, golden, source=("inputs", block.input_layout), sink=("spikes", block.spike_layout), beats=beats,
        markers=markers, event_of=lambda b: (b["row"] * block.keys + b["col"], 1),
        counters=("overflows", "rejected"), idle=idle, backpressure=backpressure, seed=seed,
        max_cycles=10_000 + 4 * len(beats) * block.rows * block.keys, what="WOSS replay")


_REPLAYS["woss_softmax"] = replay_woss
__all__ += ["woss_golden", "random_woss_events", "replay_woss"]


# -- A·V output stage --------------------------------------------------------------------------------------
def output_golden(block, events: list[tuple]) -> SpikeTrace:
    """Expected trace of an :class:`~spikeforge.hw.attention_output.AttentionOutput` for ``events``
    (``("clear",)``, ``("add", row, col, value)``, ``("step",)``; the first is a clear), from
    :func:`~spikeforge.sw.attention.events.output_block_run`: rows ``(step, row * cols + col, quotient)``."""
    run = output_block_run(block.fmt, events)
    meta = {"block": "attention_output", "config": block.config(), "steps": run.steps,
            "events": [list(e) for e in events]}
    return SpikeTrace(meta, run.inputs, run.outputs, {}, run.counters)

def random_output_events(block, *, windows: int, adds_per_step: int, seed: int, malformed: int = 0,
                         spread: float = 1.0, empty_fraction: float = 0.25) -> list[tuple]:
    """Random A·V additions: trace-sized values (``|v| <= spread * G_0``) on every column, positive
    normaliser additions on all but ``empty_fraction`` of the rows, ``malformed`` out-of-range beats."""
    rng = random.Random(seed)
    fmt, R, E, T = block.fmt, block.rows, block.cols, block.fmt.T
    g0 = fmt.av.lut[0][0]
    vlo, vhi = -(1 << (block.value_width - 1)), (1 << (block.value_width - 1)) - 1
    events: list[tuple] = [("clear",)]
    for _ in range(windows):
        live = [r for r in range(R) if rng.random() >= empty_fraction]
        for p in range(T):
            for _ in range(adds_per_step):
                r = rng.randrange(R)
                if rng.random() < 0.3:
                    if r in live:
                        events.append(("add", r, E, max(vlo, min(vhi, int(fmt.av.lut[0][rng.randrange(T)] * spread)))))
                else:
                    v = int(rng.uniform(-1, 1) * g0 * spread)
                    events.append(("add", r, rng.randrange(E), max(vlo, min(vhi, v))))
            events.append(("step",))
    rtop = (1 << block.input_layout.members["row"].width) - 1
    ctop = (1 << block.input_layout.members["col"].width) - 1
    for _ in range(malformed):
        pos = rng.randrange(1, len(events))
        if rtop >= R and rng.random() < 0.5:
            events.insert(pos, ("add", rng.randrange(R, rtop + 1), 0, 1))
        elif ctop > E:
            events.insert(pos, ("add", 0, rng.randrange(E + 1, ctop + 1), 1))
    return events


async def replay_output(bench: Bench, block, golden: SpikeTrace, *, idle: float = 0.0, backpressure: float = 0.0,
                        seed: int = 0) -> ReplayStats:
    beats, markers = _accumulator_beats(golden.meta["events"])
    E = block.cols
    return await _replay_stream(
        bench, golden, source=("inputs", block.input_layout), sink=("outputs", block.output_layout), beats=beats,
        markers=markers, event_of=lambda b: (b["row"] * E + b["col"], b["value"]),
        counters=("overflows", "rejected", "empty_rows"), idle=idle, backpressure=backpressure, seed=seed,
        max_cycles=10_000 + 4 * len(beats) * block.rows * (E + 1) * (block.fmt.out_frac_bits + 6),
        what="A·V output replay")


_REPLAYS["attention_output"] = replay_output
__all__ += ["output_golden", "random_output_events", "replay_output"]


# -- a whole head -------------------------------------------------------------------------------------------
def head_events(q_spikes: torch.Tensor, k_spikes: torch.Tensor, v_spikes: torch.Tensor, *, seed: int | None = None,
                malformed: int = 0, extra_steps: int = 0) -> list[tuple]:
    """Input events of one head for one-spike codes ``q [T, rows, D]``, ``k [T, keys, D]``,
    ``v [T, keys, E]``: ``clear``, window 0 with every spike (shuffled within a step when ``seed`` is
    given), ``step``s up to ``2T`` (plus ``extra_steps`` that the head must reject). ``malformed`` adds
    beats the head must reject: out-of-range tokens/channels, unknown tensors, window-1 spikes, second
    spikes of a neuron."""
    T = q_spikes.shape[0]
    rng = random.Random(seed)
    per_step: list[list[tuple]] = [[] for _ in range(2 * T)]
    for name, s in (("q", q_spikes), ("k", k_spikes), ("v", v_spikes)):
        for t, token, channel in torch.nonzero(s).tolist():
            per_step[t].append(("spike", name, token, channel, bool(s[t, token, channel] < 0)))
    sizes = {"q": q_spikes.shape[1:], "k": k_spikes.shape[1:], "v": v_spikes.shape[1:]}
    for _ in range(malformed):
        kind = rng.randrange(5)
        name = rng.choice("qkv")
        tokens, channels = sizes[name]
        t = rng.randrange(T)
        if kind == 0:
            per_step[t].append(("spike", name, tokens + rng.randrange(2), 0, False))
        elif kind == 1:
            per_step[t].append(("spike", name, 0, channels + rng.randrange(2), False))
        elif kind == 2:
            per_step[t].append(("spike", "x", 0, 0, False))
        elif kind == 3:
            late = ("spike", name, rng.randrange(tokens), rng.randrange(channels), False)
            per_step[T + rng.randrange(T)].append(late)
        else:   # a second spike of a neuron that already fired (v: rejected by the head, q/k: by QK^T)
            firsts = [e for step in per_step[:t + 1] for e in step if e[1] == name and e[2] < sizes[name][0]
                      and e[3] < sizes[name][1]]
            if firsts:
                per_step[t].append(rng.choice(firsts))
    events: list[tuple] = [("clear",)]
    for evs in per_step:
        if seed is not None:
            rng.shuffle(evs)
        events += evs + [("step",)]
    return events + [("step",)] * extra_steps


def head_golden(head, events: list[tuple]) -> SpikeTrace:
    """Expected trace of a :class:`~spikeforge.hw.spiked_head.SpikedHead` for ``events`` (``("clear",)``,
    ``("step",)``, ``("spike", "q"|"k"|"v", token, channel, neg)``), from
    :func:`~spikeforge.sw.attention.events.head_block_run`; ``meta["stats"]`` holds its counts."""
    run = head_block_run(head.fmt, events)
    stats = dict(run.stats)
    heads = stats.pop("heads")
    meta = {"block": "spiked_head", "config": head.config(), "steps": run.steps, "heads": heads,
            "stats": stats, "events": [list(e) for e in events]}
    return SpikeTrace(meta, run.inputs, run.outputs, {}, run.counters)


async def replay_head(bench: Bench, head, golden: SpikeTrace, *, idle: float = 0.0, backpressure: float = 0.0,
                      seed: int = 0) -> ReplayStats:
    from ..hw.spiked_head import HEAD_COUNTERS, HeadOp
    fmt = head.fmt
    events = [tuple(e) for e in golden.meta["events"]]
    beats = []
    for ev in events:
        if ev[0] == "spike":
            beats.append({"op": HeadOp.SPIKE, "tensor": TENSOR_CODES.get(ev[1], 3), "token": ev[2],
                          "channel": ev[3], "neg": int(ev[4])})
        else:
            beats.append({"op": HeadOp.STEP if ev[0] == "step" else HeadOp.CLEAR})
    clears = sum(ev[0] == "clear" for ev in events)
    markers = clears + fmt.T * golden.meta["heads"]
    E = fmt.dim_v
    per_head = (2 * fmt.T * (fmt.rows * fmt.keys + fmt.keys * E + fmt.rows * (E + 1) + 8)
                + fmt.rows * E * (fmt.out_frac_bits + 8))
    return await _replay_stream(
        bench, golden, source=("inputs", head.input_layout), sink=("outputs", head.output_layout), beats=beats,
        markers=markers, event_of=lambda b: (b["row"] * E + b["col"], b["value"]), counters=HEAD_COUNTERS,
        idle=idle, backpressure=backpressure, seed=seed, reset_on_clear=False,
        max_cycles=4 * (clears * per_head + len(events) * (fmt.rows + fmt.keys + E + 4)) + 10_000,
        what="spiked head replay")


_REPLAYS["spiked_head"] = replay_head
__all__ += ["head_events", "head_golden", "replay_head"]
