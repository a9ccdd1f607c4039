"""The event bus and a tile's routing table on the Amaranth simulator, with random stalls on every
stream: every event reaches exactly its destination, in order per source, malformed ones are counted,
nothing is lost (a scoreboard per destination, every source drained)."""

import random

import numpy as np
import pytest

from spikeforge.hw.fanout import FanOut
from spikeforge.hw.router import EventBus
from spikeforge.sim.amaranth_sim import run_amaranth
from spikeforge.sim.bench import StreamSink, StreamSource, clock, run_until
from spikeforge.sw.events import EventFormat, EventOp
from spikeforge.sw.program import ConfigFormat, TileMemory, pack_fields


@pytest.mark.parametrize("sources,destinations,seed", [(3, 3, 0), (4, 2, 1), (1, 3, 2)])
def test_bus_delivers_every_event_to_its_destination_in_order(sources, destinations, seed):
    fmt = EventFormat(2, 6, 4)
    bus = EventBus(fmt, sources=sources, destinations=destinations, depth=4)
    rng = random.Random(seed)
    sent = [[{"op": 0, "tile": rng.randrange(4 if destinations < 4 else destinations), "axon": rng.randrange(64),
              "value": rng.choice([-1, 1, 5])} for _ in range(60)] for _ in range(sources)]
    layout = bus.i[0].payload.shape()

    async def bench_fn(bench):
        srcs = [StreamSource(bench, f"i__{s}", layout, idle=0.3, rng=random.Random(seed * 10 + s)) for s in range(sources)]
        sinks = [StreamSink(bench, f"o__{d}", layout, backpressure=0.5, rng=random.Random(seed * 10 + 5 + d))
                 for d in range(destinations)]
        for s, events in zip(srcs, sent):
            for e in events:
                s.put(e)
        expected = sum(1 for events in sent for e in events if e["tile"] < destinations)
        await run_until(bench, srcs + sinks, lambda: all(s.done for s in srcs) and
                        sum(len(k.received) for k in sinks) >= expected, max_cycles=20000, what="bus")
        for _ in range(20):                       # drain tail: nothing more may arrive
            await clock(bench, srcs + sinks)
        return [k.received for k in sinks], bench.get("rejected"), bench.get("idle")

    received, rejected, idle = run_amaranth(bus, bench_fn)
    assert rejected == sum(1 for events in sent for e in events if e["tile"] >= destinations)
    assert idle == 1
    for d in range(destinations):
        got = [(e["axon"], e["value"]) for e in received[d]]
        assert all(e["tile"] == d for e in received[d])
        for s in range(sources):                   # per-source order is kept
            mine = [(e["axon"], e["value"]) for e in sent[s] if e["tile"] == d]
            it = iter(got)
            assert all(any(x == y for y in it) for x in mine), f"source {s} -> {d} out of order or lost"
        assert len(got) == sum(1 for events in sent for e in events if e["tile"] == d)


def test_fanout_sends_one_event_per_destination_in_table_order():
    src, dst = EventFormat(1, 4, 2), EventFormat(2, 5, 2)
    cfg = ConfigFormat(5, 16)
    fan = FanOut(src, dst, neurons=8, route_words=20, max_fanout=4, config_format=cfg)
    rng = np.random.default_rng(0)
    count = rng.integers(0, 5, 8)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    route = np.stack([rng.integers(0, 4, count.sum()), rng.integers(0, 32, count.sum())], 1)
    writes = [(TileMemory.POINTER, a, int(d)) for a, d in enumerate(pack_fields([start, count], [5, 3]))]
    writes += [(TileMemory.ROUTE, a, int(d)) for a, d in enumerate(pack_fields([route[:, 0], route[:, 1]], [2, 5]))]
    spikes = [(int(n), int(v)) for n, v in zip(rng.integers(0, 8, 40), rng.choice([-1, 1], 40))] + [(12, 1)]

    async def bench_fn(bench):
        w = StreamSource(bench, "writes", fan.writes.payload.shape())
        for mem, addr, data in writes:
            w.put({"mem": int(mem), "addr": addr, "data": data})
        await run_until(bench, [w], lambda: w.done, max_cycles=200)
        i = StreamSource(bench, "i", fan.i.payload.shape(), idle=0.3, rng=random.Random(1))
        o = StreamSink(bench, "o", fan.o.payload.shape(), backpressure=0.4, rng=random.Random(2))
        for n, v in spikes:
            i.put({"op": EventOp.EVENT, "tile": 0, "axon": n, "value": v})
        i.put({"op": EventOp.STEP})
        expected = sum(int(count[n]) for n, _ in spikes if n < 8)
        await run_until(bench, [w, i, o], lambda: i.done and len(o.received) >= expected, max_cycles=5000,
                        what="fan-out")
        for _ in range(20):
            await clock(bench, [w, i, o])
        return o.received, bench.get("rejected")

    received, rejected = run_amaranth(fan, bench_fn)
    want = [(int(route[start[n] + j, 0]), int(route[start[n] + j, 1]), v) for n, v in spikes if n < 8
            for j in range(count[n])]
    assert [(e["tile"], e["axon"], e["value"]) for e in received] == want
    assert rejected == 1                           # neuron 12 is beyond the table
