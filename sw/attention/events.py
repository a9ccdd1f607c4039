"""Event-level bit-exact models of the attention blocks: what the RTL computes for a list of events, in
the order it processes them (so saturation order matches too). A replay scoreboard
(:mod:`spikeforge.sim.attention_replay`) or a tile's model composes them; each returns a
:class:`BlockRun`.

Events are tuples: ``("clear",)``, ``("step",)``, ``("add", row, col, value)`` (accumulator blocks) or
``("spike", "q"|"k"|"v", token, channel, neg)`` (a head). Input rows of a run are ``(step, index,
value)`` with ``index = -1`` for a malformed event (a head's: ``(tensor << 24) | (token << 12) |
channel``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..fixed import mul_shift_floor, saturate
from .head import SpikedHeadFormat
from .trace import MatmulEvent, TraceMatmulModel
from .woss import WossFormat

__all__ = ["BlockRun", "HEAD_COUNTERS", "TENSOR_CODES", "woss_block_run", "output_block_run", "head_block_run",
           "accumulator_events"]

#: A whole head's error counters, in the order the RTL (:class:`~spikeforge.hw.spiked_head.SpikedHead`) has them.
HEAD_COUNTERS = ("rejected", "qk_rejected", "woss_rejected", "woss_overflows", "av_rejected", "out_rejected",
                 "out_overflows", "empty_rows")

#: The ``tensor`` code of a head's input spike.
TENSOR_CODES = {"q": 0, "k": 1, "v": 2}


@dataclass
class BlockRun:
    """One event-level run: ``inputs`` and ``outputs`` rows ``(step, index, value)``, the error
    ``counters``, the ``steps`` it took and block-specific ``stats``."""
    inputs: list
    outputs: list
    counters: dict
    steps: int
    stats: dict = field(default_factory=dict)


def woss_block_run(fmt: WossFormat, rows: int, keys: int, events: list[tuple]) -> BlockRun:
    """What a WOSS softmax block (:class:`~spikeforge.hw.woss_softmax.WossSoftmax`) of ``rows x keys``
    computes for ``events``:
    ``("clear",)``, ``("add", row, col, value)``, ``("step",)``; whole ``2T``-step periods after the
    leading clear. Adds saturate into ``x`` one by one, as the hardware does; the per-step sums then
    go through :meth:`WossFormat.run`. Outputs ``(step, row * keys + col, +1)``."""
    R, K, T = rows, keys, fmt.T
    if not events or events[0][0] != "clear":
        raise ValueError("a replayed event list starts with a clear (block RAM is not reset)")
    lo, hi = -(1 << (fmt.x_width - 1)), (1 << (fmt.x_width - 1)) - 1
    inputs, spikes = [], []
    rejected = overflows = 0
    step = 0
    x = torch.zeros((T, R, K), dtype=torch.int64)
    for ev in events[1:]:
        p = step % (2 * T)
        if ev[0] == "add":
            _, r, c, value = ev
            inputs.append((step, r * K + c if (r < R and c < K) else -1, value))
            if r >= R or c >= K or p >= T:
                rejected += 1
                continue
            s = int(x[p, r, c]) + value
            if not lo <= s <= hi:
                overflows += 1
                s = max(lo, min(hi, s))
            x[p, r, c] = s
        elif ev[0] == "step":
            step += 1
            if step % (2 * T) == 0:
                res = fmt.run(x)
                overflows += res.overflows
                base = step - 2 * T
                for r, c in torch.nonzero(res.steps >= 0).tolist():
                    spikes.append((base + T + int(res.steps[r, c]), r * K + c, 1))
                x.zero_()
        else:
            raise ValueError(f"unknown WOSS event {ev!r}")
    if step % (2 * T):
        raise ValueError(f"the events end inside a period (step {step}); give whole {2 * T}-step periods")
    return BlockRun(inputs, spikes, {"overflows": overflows, "rejected": rejected}, step)



def output_block_run(fmt: SpikedHeadFormat, events: list[tuple]) -> BlockRun:
    """What the A·V output stage (:class:`~spikeforge.hw.attention_output.AttentionOutput`) of head
    ``fmt`` computes for ``events``
    (``("clear",)``, ``("add", row, col, value)``, ``("step",)``; the first is a clear). Adds saturate
    one by one as in the hardware; scaling steps and the read-out follow
    :meth:`SpikedHeadFormat.accumulate_av` / ``divide``. Output rows are
    ``(step, row * cols + col, quotient)``."""
    R, E, T = fmt.rows, fmt.dim_v, fmt.T
    if not events or events[0][0] != "clear":
        raise ValueError("a replayed event list starts with a clear (block RAM is not reset)")
    inputs, spikes = [], []
    counters = {"overflows": 0, "rejected": 0, "empty_rows": 0}
    acc = torch.zeros((R, E + 1), dtype=torch.int64)
    step = p = 0
    for ev in events:
        if ev[0] == "clear":
            acc.zero_()
            step = p = 0
        elif ev[0] == "add":
            _, r, c, value = ev
            inputs.append((step, r * (E + 1) + c if (r < R and c <= E) else -1, value))
            if r >= R or c > E:
                counters["rejected"] += 1
                continue
            a, o = saturate(torch.tensor(int(acc[r, c]) + value), fmt.av_width)
            acc[r, c] = a
            counters["overflows"] += int(o)
        elif ev[0] == "step":
            if p < T - 1:
                acc, o = saturate(mul_shift_floor(acc, fmt.b_fx, fmt.b_frac_bits), fmt.av_width)
                counters["overflows"] += int(o.sum())
                p += 1
            else:
                out, empty, ovf = fmt.divide(acc)
                counters["empty_rows"] += empty
                counters["overflows"] += ovf
                spikes += [(step, r * E + c, int(out[r, c])) for r in range(R) for c in range(E)]
                acc.zero_()
                p = 0
            step += 1
        else:
            raise ValueError(f"unknown A·V output event {ev!r}")
    return BlockRun(inputs, spikes, counters, step)



def head_block_run(fmt: SpikedHeadFormat, events: list[tuple]) -> BlockRun:
    """What a whole head (:class:`~spikeforge.hw.spiked_head.SpikedHead`) of ``fmt`` computes for ``events`` (``("clear",)``,
    ``("step",)``, ``("spike", "q"|"k"|"v", token, channel, neg)``; each head a clear followed by
    ``2T`` steps — more are rejected — or by nothing). The blocks' bit-exact models are chained in the
    order the hardware processes events (QK^T products in engine order, WOSS spikes row-major per fire
    step, then ``v``'s swept key-major), so saturation order matches too. Output rows are
    ``(window-1 step counted over all heads, row * dim_v + col, quotient)``; ``stats`` counts the
    accepted input spikes, QK^T products, WOSS spikes, A·V input spikes and A·V products (and ``heads``)."""
    R, K, D, E, T = fmt.rows, fmt.keys, fmt.dim, fmt.dim_v, fmt.T
    if not events or events[0][0] != "clear":
        raise ValueError("a replayed event list starts with a clear (block RAM is not reset)")
    sizes = {"q": (R, D), "k": (K, D), "v": (K, E)}
    counters = dict.fromkeys(HEAD_COUNTERS, 0)
    inputs, outs = [], []
    step_in = out_base = 0
    stats = dict.fromkeys(("input_spikes", "qk_products", "woss_spikes", "av_spikes", "av_products"), 0)
    bounds = [i for i, ev in enumerate(events) if ev[0] == "clear"] + [len(events)]
    for lo, hi in zip(bounds, bounds[1:]):
        t, qk_events, v_code = 0, [MatmulEvent("clear")], {}
        for ev in events[lo + 1:hi]:
            if ev[0] == "step":
                if t == 2 * T:
                    counters["rejected"] += 1
                else:
                    qk_events.append(MatmulEvent("step"))
                    t += 1
                    step_in += 1
            elif ev[0] == "spike":
                _, name, token, channel, neg = ev
                code = TENSOR_CODES.get(name, 3)
                inputs.append((step_in, (code << 24) | (token << 12) | channel, -1 if neg else 1))
                tokens, channels = sizes.get(name, (0, 0))
                if not (token < tokens and channel < channels) or t >= T:
                    counters["rejected"] += 1
                elif name == "v":
                    if (token, channel) in v_code:
                        counters["rejected"] += 1
                    else:
                        v_code[(token, channel)] = (t, bool(neg))
                else:
                    qk_events.append(MatmulEvent("spike", "a" if name == "q" else "b", token, channel, bool(neg)))
            else:
                raise ValueError(f"unknown head event {ev!r}")
        if t == 0:
            continue
        if t != 2 * T:
            raise ValueError(f"a head stops after {t} steps; the golden model needs 0 or {2 * T}")
        qk_run = TraceMatmulModel(fmt.qk, rows=R, cols=K).run(qk_events)
        counters["qk_rejected"] += qk_run.rejected
        woss = woss_block_run(fmt.woss, R, K, [("clear",)] + accumulator_events(qk_run.products, 2 * T))
        counters["woss_overflows"] += woss.counters["overflows"]
        counters["woss_rejected"] += woss.counters["rejected"]
        fires = sorted((int(step) - T, int(idx)) for step, idx, _ in woss.outputs)
        av_events = [MatmulEvent("clear")]
        for j in range(T):
            av_events += [MatmulEvent("spike", "a", idx // K, idx % K) for fj, idx in fires if fj == j]
            av_events += [MatmulEvent("spike", "b", e, key, neg) for (key, e), (st, neg) in sorted(v_code.items())
                          if st == j]
            av_events.append(MatmulEvent("step"))
        av_run = TraceMatmulModel(fmt.av, rows=R, cols=E, norm_column=True).run(av_events)
        stats["input_spikes"] += sum(e.op == "spike" for e in qk_events) - qk_run.rejected + len(v_code)
        stats["qk_products"] += len(qk_run.products)
        stats["woss_spikes"] += len(fires)
        stats["av_spikes"] += sum(e.op == "spike" for e in av_events)
        stats["av_products"] += len(av_run.products)
        counters["av_rejected"] += av_run.rejected
        out = output_block_run(fmt, [("clear",)] + accumulator_events(av_run.products, T))
        for name in ("overflows", "rejected", "empty_rows"):
            counters[name if name == "empty_rows" else f"out_{name}"] += out.counters[name]
        outs += [(out_base + int(st), int(i), int(v)) for st, i, v in out.outputs]
        out_base += T
    return BlockRun(inputs, outs, counters, step_in, {**stats, "heads": out_base // T})



def accumulator_events(products, steps: int) -> list[tuple]:
    """Accumulator events ``add``/``step`` for ``steps`` steps from products ``(step, row, col, value)``."""
    events, i = [], 0
    for s in range(steps):
        while i < len(products) and products[i][0] == s:
            events.append(("add", *products[i][1:]))
            i += 1
        events.append(("step",))
    if i != len(products):
        raise ValueError(f"products after step {steps}: {products[i]}")
    return events

