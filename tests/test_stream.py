"""Stream primitives and the event format: nothing lost, order kept, under random stalls on every stream."""

import random

import numpy as np
import pytest
from amaranth.hdl import unsigned
from amaranth.lib import data
from hypothesis import given, settings, strategies as st

from spikeforge.hw.events import EventOp, event_layout, event_signature
from spikeforge.hw.stream import SkidBuffer, StreamDemux, StreamFIFO, StreamMerge
from spikeforge.sim.amaranth_sim import run_amaranth
from spikeforge.sim.bench import StreamSink, StreamSource, clock, run_until
from spikeforge.sw.events import EventFormat
from spikeforge.sw.events import EventOp as SwEventOp

LAYOUT = data.StructLayout({"src": unsigned(3), "seq": unsigned(10)})


def _run(dut, inputs: dict[str, list], outputs: list[str], *, idle=0.4, backpressure=0.4, seed=0, expect=None,
         extra=None):
    """Feed ``inputs`` (port -> payloads), collect every output port until ``expect`` beats arrived."""
    async def bench_fn(bench):
        rng = random.Random(seed)
        sources = [StreamSource(bench, name, LAYOUT, idle=idle, rng=random.Random(rng.random()))
                   for name in inputs]
        for s, beats in zip(sources, inputs.values()):
            for b in beats:
                s.put(b)
        sinks = [StreamSink(bench, name, LAYOUT, backpressure=backpressure, rng=random.Random(rng.random()))
                 for name in outputs]
        drivers = sources + sinks + (extra(bench) if extra else [])
        total = expect if expect is not None else sum(map(len, inputs.values()))
        await run_until(bench, drivers, lambda: sum(len(k.received) for k in sinks) >= total, max_cycles=20000)
        for _ in range(20):                       # drain tail: a spurious extra beat must be caught
            from spikeforge.sim.bench import clock
            await clock(bench, drivers)
        return [k.received for k in sinks]
    return run_amaranth(dut, bench_fn)


def _beats(src, n):
    return [{"src": src, "seq": i} for i in range(n)]


@pytest.mark.parametrize("depth", [1, 4])
def test_fifo_keeps_every_beat_in_order(depth):
    (out,) = _run(StreamFIFO(LAYOUT, depth), {"i": _beats(1, 200)}, ["o"], seed=depth)
    assert out == _beats(1, 200)


def test_skid_buffer_keeps_every_beat_in_order_and_runs_at_full_rate():
    (out,) = _run(SkidBuffer(LAYOUT), {"i": _beats(2, 300)}, ["o"], seed=3)
    assert out == _beats(2, 300)

    async def free(bench):
        src = StreamSource(bench, "i", LAYOUT)
        sink = StreamSink(bench, "o", LAYOUT)
        for b in _beats(0, 100):
            src.put(b)
        return await run_until(bench, [src, sink], lambda: len(sink.received) == 100, max_cycles=1000)
    assert run_amaranth(SkidBuffer(LAYOUT), free) <= 102          # one beat per cycle after the fill


@pytest.mark.parametrize("n", [1, 3, 4])
def test_merge_loses_nothing_and_keeps_each_inputs_order(n):
    inputs = {f"i__{k}": _beats(k, 60 + 7 * k) for k in range(n)}
    (out,) = _run(StreamMerge(LAYOUT, n), inputs, ["o"], seed=n)
    assert sorted((b["src"], b["seq"]) for b in out) == sorted((b["src"], b["seq"]) for v in inputs.values() for b in v)
    for k in range(n):
        assert [b["seq"] for b in out if b["src"] == k] == list(range(60 + 7 * k))


def test_merge_is_fair():
    """With every input always valid and the output always ready, grants rotate."""
    inputs = {f"i__{k}": _beats(k, 30) for k in range(3)}
    (out,) = _run(StreamMerge(LAYOUT, 3), inputs, ["o"], idle=0.0, backpressure=0.0)
    srcs = [b["src"] for b in out[:60]]
    assert all(srcs[i] != srcs[i + 1] for i in range(59))


class _Select:
    """Drives the demux's ``select`` from the offered payload's ``src`` field."""

    def __init__(self, bench):
        self.bench = bench

    def drive(self):
        from spikeforge.sim.payload import unpack
        self.bench.set("select", unpack(LAYOUT, self.bench.get("i__payload"))["src"])

    def observe(self):
        pass


def test_demux_routes_every_beat_and_counts_malformed_ones():
    rng = random.Random(5)
    beats = [{"src": rng.randrange(4), "seq": i} for i in range(300)]      # src 3 is out of range for n=3
    dut = StreamDemux(LAYOUT, 3)
    good = [b for b in beats if b["src"] < 3]
    outs = _run(dut, {"i": beats}, ["o__0", "o__1", "o__2"], expect=len(good), extra=lambda bench: [_Select(bench)])
    for k in range(3):
        assert outs[k] == [b for b in good if b["src"] == k]


def test_bad_parameters():
    with pytest.raises(ValueError, match="depth=0 is too small"):
        StreamFIFO(LAYOUT, 0)
    with pytest.raises(ValueError, match="n=0 is too small"):
        StreamMerge(LAYOUT, 0)


# -- the event format: one definition, software and hardware agree bit for bit ------------------------------
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.integers(1, 16), st.integers(2, 12), st.data())
def test_event_packing_matches_the_hardware_layout(tile_bits, axon_bits, value_bits, draw):
    fmt = EventFormat(tile_bits, axon_bits, value_bits)
    layout = event_layout(fmt)
    assert layout.size == fmt.width
    op = draw.draw(st.sampled_from(list(SwEventOp)))
    tile = draw.draw(st.integers(0, (1 << tile_bits) - 1))
    axon = draw.draw(st.integers(0, (1 << axon_bits) - 1))
    value = draw.draw(st.integers(-(1 << (value_bits - 1)), (1 << (value_bits - 1)) - 1))
    ev = fmt.events(op, tile, axon, value)
    bits = int(fmt.pack(ev)[0])
    const = layout.const({"op": EventOp(op.value), "tile": tile, "axon": axon, "value": value})
    assert bits == const.as_value().value & ((1 << layout.size) - 1)
    assert fmt.unpack([bits]).tolist() == ev.tolist()


def test_event_format_refuses_fields_that_do_not_fit():
    fmt = EventFormat.for_sizes(tiles=5, axons=300, value_range=(-8, 7))
    assert (fmt.tile_bits, fmt.axon_bits, fmt.value_bits) == (3, 9, 4)
    with pytest.raises(ValueError, match="event 1: axon=512 does not fit"):
        fmt.events(0, [0, 1], [3, 512], 1)
    with pytest.raises(ValueError, match="value=8 does not fit"):
        fmt.events(0, 0, 0, 8)
    assert event_signature(fmt) == event_signature(EventFormat(3, 9, 4))
    assert event_signature(fmt) != event_signature(EventFormat(3, 9, 5))
    assert np.dtype(fmt.dtype).names == ("op", "tile", "axon", "value")


@pytest.mark.parametrize("n,fan_in", [(1, 4), (3, 2), (7, 4), (10, 3)])
def test_merge_tree_keeps_every_beat_and_each_inputs_order(n, fan_in):
    from spikeforge.hw.stream import StreamMergeTree
    tree = StreamMergeTree(unsigned(12), n, fan_in=fan_in)
    sent = {k: [(k << 6) | j for j in range(25)] for k in range(n)}

    async def bench_fn(bench):
        srcs = [StreamSource(bench, f"i__{k}", unsigned(12), idle=0.4, rng=random.Random(k)) for k in range(n)]
        sink = StreamSink(bench, "o", unsigned(12), backpressure=0.4, rng=random.Random(99))
        for k, s in enumerate(srcs):
            for v in sent[k]:
                s.put(v)
        await run_until(bench, srcs + [sink], lambda: len(sink.received) >= 25 * n, max_cycles=20000, what="tree")
        for _ in range(10):
            await clock(bench, srcs + [sink])
        return sink.received, bench.get("busy")

    got, busy = run_amaranth(tree, bench_fn)
    assert len(got) == 25 * n and busy == 0
    for k in range(n):
        assert [v for v in got if v >> 6 == k] == sent[k]
