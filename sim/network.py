"""Whole networks on the generated accelerator: the host driver and the layer-by-layer comparison.

:func:`drive_accelerator` runs on any :class:`~spikeforge.sim.bench.Bench` (Amaranth simulator or
Verilator through cocotb): it loads the program (``WRITE`` commands), switches spike logging on and,
for each sample, sends ``CLEAR``, the input events, ``RUN`` (until a step after the first has no spike)
and ``READ`` of the readout tiles, with random idle cycles on the command stream and backpressure on
the responses, and returns every spike the tiles emitted ``(step, tile, neuron, value)``, the readout
potentials, the steps and the counters. :func:`compare_layers` maps tile neurons back to layer neurons
(:meth:`~spikeforge.sw.compile.images.Images.locate`) and compares every layer's spikes with the golden
model's (``run_snn(..., timing="layer")``) step by step, and the outputs with the integer QANN.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from ..sw.accelerator import ACTIVITY_COUNTERS, NETWORK_COUNTERS, TILE_COUNTERS, CmdOp, RespKind
from ..sw.compile.images import Images, host_commands
from .bench import Bench, SimulationTimeout, StreamSink, StreamSource, check_stall_probability, clock

__all__ = ["SampleRun", "drive_accelerator", "compare_layers", "LayerMismatch", "run_accelerator", "accelerator_design",
           "run_costs", "RunCosts", "outputs_of"]


@dataclass
class SampleRun:
    """What the accelerator did on one sample."""
    spikes: np.ndarray                  # [S, 4] (step, tile, neuron, value)
    readout: dict                       # tile -> {neuron: potential}
    steps: int
    run_spikes: int
    cycles: int
    counters: dict = field(default_factory=dict)

    @property
    def errors(self) -> dict:
        """The error counters that moved (every one must stay 0): rejected / malformed events and
        commands, saturated products, potential overflows."""
        return {k: v for k, v in self.counters.items() if k[1] not in ACTIVITY_COUNTERS and v}

    @property
    def busy_cycles(self) -> dict:
        """Per tile: cycles of the run in which it was not idle."""
        return {k[0]: v for k, v in self.counters.items() if k[1] == "busy_cycles"}

    @property
    def run_cycles(self) -> int:
        """Cycles the accelerator took from ``RUN`` to ``DONE`` (its own counter)."""
        return self.counters.get(("network", "run_cycles"), 0)


def _command(fmt, c: dict) -> dict:
    return {"op": int(c["op"]), "tile": int(c.get("tile", 0)), "mem": int(c.get("mem", 0)),
            "addr": int(c.get("addr", 0)), "data": int(c.get("data", 0)) & ((1 << fmt.data_bits) - 1)}


async def drive_accelerator(bench: Bench, images: Images, inputs, *, max_steps: int = 256,
                            idle: float = 0.0, backpressure: float = 0.0, seed: int = 0,
                            load: bool = True, log: bool = True, max_cycles: int = 50_000_000) -> list[SampleRun]:
    """Load ``images`` (unless ``load=False``) into the accelerator of ``images.fmt`` on ``bench`` and run
    every sample of ``inputs`` (input counts ``[B, size]``); see the module docstring. ``log=False`` leaves
    spike logging off (outputs and counters only: much less traffic to the host)."""
    from ..hw.accelerator import command_layout, response_layout
    check_stall_probability("idle", idle)
    check_stall_probability("backpressure", backpressure)
    fmt = images.fmt
    rng = random.Random(seed)
    src = StreamSource(bench, "commands", command_layout(fmt), idle=idle, rng=random.Random(rng.random()))
    got: list[dict] = []
    kinds: dict[int, int] = {}

    def receive(beat):
        got.append(beat)
        kinds[beat["kind"]] = kinds.get(beat["kind"], 0) + 1
    sink = StreamSink(bench, "responses", response_layout(fmt), backpressure=backpressure,
                      rng=random.Random(rng.random()), on_receive=receive)
    drivers = [src, sink]
    if load:
        for tile, mem, addr, data in images.writes():
            src.put(_command(fmt, {"op": CmdOp.WRITE, "tile": tile, "mem": mem, "addr": addr, "data": data}))
    src.put(_command(fmt, {"op": CmdOp.LOG, "data": int(log)}))
    runs = []
    n_counters = fmt.tiles * len(TILE_COUNTERS) + len(NETWORK_COUNTERS)
    for counts in np.asarray(inputs):
        got.clear()
        kinds.clear()
        cmds = host_commands(images, counts, steps=max_steps)
        reads = sum(1 for c in cmds if c["op"] == CmdOp.READ) * fmt.lanes
        for c in cmds:
            src.put(_command(fmt, c))
        for t in range(fmt.tiles + 1):
            src.put(_command(fmt, {"op": CmdOp.COUNTERS, "tile": t}))

        def done():
            return (src.done and kinds.get(RespKind.DONE, 0) and kinds.get(RespKind.STATE, 0) >= reads
                    and kinds.get(RespKind.COUNTER, 0) >= n_counters)
        cycles = await _run(bench, drivers, src, sink, done, max_cycles)
        spikes = np.array([(g["step"], g["tile"], g["addr"], g["data"]) for g in got if g["kind"] == RespKind.SPIKE],
                          np.int64).reshape(-1, 4)
        readout: dict = {}
        for g in got:
            if g["kind"] == RespKind.STATE:
                readout.setdefault(g["tile"], {})[g["addr"]] = g["data"]
        fin = next(g for g in got if g["kind"] == RespKind.DONE)
        counters = {}
        for g in got:
            if g["kind"] == RespKind.COUNTER:
                names = NETWORK_COUNTERS if g["tile"] == fmt.tiles else TILE_COUNTERS
                counters[("network" if g["tile"] == fmt.tiles else g["tile"], names[g["addr"]])] = g["data"]
        runs.append(SampleRun(spikes, readout, fin["step"], fin["data"], cycles, counters))
    return runs


async def _run(bench, drivers, src, sink, done, max_cycles: int) -> int:
    """Clock until ``done()``; while no command is left to send and the responses are not stalled, wait
    for the next response without a Python step per cycle (:meth:`~spikeforge.sim.bench.Bench.wait_high`)."""
    cycles = 0
    while not done():
        if cycles >= max_cycles:
            raise SimulationTimeout(f"the accelerator run did not finish within {max_cycles} cycles")
        if cycles and src.done and sink.backpressure == 0 and not bench.get("responses__valid"):
            cycles += await bench.wait_high("responses__valid", max_cycles - cycles)
            for d in drivers:
                d.observe()
            continue
        await clock(bench, drivers)
        cycles += 1
    return cycles


@dataclass
class LayerMismatch:
    """First difference between the accelerator and the golden model."""
    layer: str
    tile: int | None
    step: int
    neuron: int
    expected: int
    got: int
    count: int

    def __str__(self):
        where = f"layer {self.layer!r}" + (f" (tile {self.tile})" if self.tile is not None else "")
        return (f"{self.count} differences; first: {where}, step {self.step}, neuron {self.neuron}: "
                f"golden {self.expected}, RTL {self.got}")


def outputs_of(images: Images, run: SampleRun) -> np.ndarray:
    """The network output (the readout layer's potentials minus the initial ``theta // 2 = 0``)."""
    cols = images.layer_cols[images.output]
    out = {}
    for im in images.tiles:
        if im.readout:
            for neuron, v in run.readout.get(im.tile, {}).items():
                r, c = divmod(neuron, im.width)
                if r < im.program.tokens and c < im.program.cols:
                    out[(im.row0 + r) * cols + im.col0 + c] = v
    return np.array([out[i] for i in sorted(out)], np.int64)


def compare_layers(images: Images, run: SampleRun, golden_traces: dict, golden_output) -> LayerMismatch | None:
    """Compare one sample's RTL spikes per layer and step with ``golden_traces`` (``SnnRun.traces``: per
    neuron layer ``{"spikes": [E, 3] (step, neuron, value)}``) and its output with ``golden_output``
    (flat); returns the first mismatch or ``None``."""
    layers = {}
    for tile in np.unique(run.spikes[:, 1]) if len(run.spikes) else []:
        sel = run.spikes[:, 1] == tile
        name, flat = images.locate(int(tile), run.spikes[sel, 2])
        rows = np.stack([run.spikes[sel, 0], flat, run.spikes[sel, 3], np.full(int(sel.sum()), tile)], 1)
        layers.setdefault(name, []).append(rows)
    first = None
    total = 0
    for name, tr in golden_traces.items():
        exp = np.asarray(tr["spikes"], np.int64).reshape(-1, 3)
        got = np.concatenate(layers.get(name, [np.zeros((0, 4), np.int64)]))
        e = {(int(t), int(n)): int(v) for t, n, v in exp}
        g = {(int(t), int(n)): (int(v), int(k)) for t, n, v, k in got}
        keys = sorted(set(e) | set(g))
        bad = [key for key in keys if e.get(key, 0) != g.get(key, (0, None))[0]]
        total += len(bad)
        if bad and first is None:
            t, n = bad[0]
            first = LayerMismatch(name, g.get((t, n), (0, None))[1], t, n, e.get((t, n), 0), g.get((t, n), (0,))[0], 0)
    out = outputs_of(images, run)
    ref = np.asarray(golden_output, np.int64).reshape(-1)
    if out.shape != ref.shape or not np.array_equal(out, ref):
        diff = np.nonzero(out != ref)[0] if out.shape == ref.shape else np.array([0])
        total += len(diff)
        if first is None:
            i = int(diff[0])
            first = LayerMismatch(images.output, None, run.steps, i, int(ref[i]) if i < len(ref) else 0,
                                  int(out[i]) if i < len(out) else 0, 0)
    if first is not None:
        first.count = total
    return first


_DESIGNS: dict = {}


def accelerator_design(fmt):
    """The Verilator build of the accelerator of ``fmt`` (built once and cached on disk; remembered for
    the process too, since converting a large accelerator to Verilog takes minutes)."""
    import json

    from ..hw.accelerator import Accelerator
    from .verilator import build
    key = json.dumps(fmt.to_dict(), sort_keys=True)
    if key not in _DESIGNS:
        accel = Accelerator(fmt)
        _DESIGNS[key] = build(accel, accel.verilog_name, skid=True)
    return _DESIGNS[key]


def run_accelerator(images: Images, inputs, *, simulator: str = "verilator", max_steps: int = 256,
                    idle: float = 0.0, backpressure: float = 0.0, seed: int = 0, log: bool = True,
                    workers: int = 1) -> list[SampleRun]:
    """Generate the accelerator of ``images.fmt``, load ``images`` and run every sample of ``inputs``
    (input counts ``[B, size]``) on ``simulator`` (``"verilator"``: built once per accelerator format and
    cached; ``"amaranth"``: Python simulator, slow). ``workers > 1`` (Verilator) splits the samples into
    that many consecutive chunks, each run by its own simulator process on the same build (each loads the
    program; chunk ``i`` stalls with ``seed + i``): the runs are the same, on that many cores."""
    import pickle
    import shutil
    import tempfile
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from ..hw.accelerator import Accelerator
    from ..sw.fixed import check_int
    check_stall_probability("idle", idle)
    check_stall_probability("backpressure", backpressure)
    check_int("workers", workers, minimum=1, maximum=256)
    inputs = np.asarray(inputs, dtype=np.int64)
    if simulator == "amaranth":
        from .amaranth_sim import run_amaranth
        return run_amaranth(Accelerator(images.fmt), lambda bench: drive_accelerator(bench, images, inputs, max_steps=max_steps,
                                                                   idle=idle, backpressure=backpressure, seed=seed,
                                                                   log=log))
    if simulator != "verilator":
        raise ValueError(f"simulator={simulator!r}: use 'verilator' or 'amaranth'")
    from .verilator import run_job
    design = accelerator_design(images.fmt)
    work = Path(tempfile.mkdtemp(prefix="sf-accelerator-"))

    def run_chunk(i: int, chunk: np.ndarray) -> list[SampleRun]:
        job = {"kind": "accelerator_run", "config": {"fmt": images.fmt.to_dict()}, "file": str(work / f"job{i}.pkl"),
               "observed": str(work / f"runs{i}.pkl")}
        with open(job["file"], "wb") as f:
            pickle.dump({"images": images, "inputs": chunk, "max_steps": max_steps, "idle": idle,
                         "backpressure": backpressure, "seed": seed + i, "log": log}, f)
        run_job(design, job)
        with open(job["observed"], "rb") as f:
            return pickle.load(f)
    try:
        chunks = [c for c in np.array_split(inputs, min(workers, max(1, len(inputs)))) if len(c)]
        if len(chunks) <= 1:
            return run_chunk(0, inputs)
        with ThreadPoolExecutor(len(chunks)) as pool:
            parts = list(pool.map(run_chunk, range(len(chunks)), chunks))
        return [run for part in parts for run in part]
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class RunCosts:
    """What one inference cost on the accelerator, counted from its spike log and the program: the beats
    each tile's front end issued (a neuron tile: one per lane group of an input event, the bias once after
    ``CLEAR``; a matmul tile: one trace read per partner entry of an event; a unit tile: one accumulation
    per event; a recurrent neuron tile: one buffer write per input event, then per window the bias and one
    lane-group beat per nonzero buffered word), the synaptic accumulates (routed spike x destination
    columns, matmul trace reads) and input MACs (analog input event x columns), and the cycle lower
    bounds: **busiest tile** = max over tiles of beats + sweeps (the program's lane groups per step, a
    recurrent program's only in its windows; a readout tile and a graded matmul do not sweep),
    **balanced** = their sum / tiles. A unit tile's per-step row evaluations are not in the bounds."""
    beats: np.ndarray
    acs: int
    macs: int
    busiest_bound: int
    balanced_bound: float

    @property
    def energy_pj(self) -> float:
        """SpikeZIP-TF's model (4.6 pJ per MAC, 0.9 pJ per AC) on the counted operations."""
        from ..sw.energy import mac_ac_energy
        return mac_ac_energy(self.macs, self.acs)


def _event_costs(images: Images, tiles: np.ndarray, axons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Front-end beats and accumulates of input events ``(tile, axon)`` (arrays)."""
    P = images.fmt.lanes
    beats = np.zeros(len(tiles), np.int64)
    acs = np.zeros(len(tiles), np.int64)
    mf = images.fmt.matmul_tile if images.fmt.matmul_tiles else None
    for im in images.tiles:
        sel = tiles == im.tile
        if not sel.any():
            continue
        p = im.program
        if im.kind == "neuron" and getattr(p, "window", 0):       # buffered: one write each
            beats[sel], acs[sel] = 1, p.cols
        elif im.kind == "neuron":
            beats[sel], acs[sel] = p.groups(P), p.cols
        elif im.kind == "unit":
            beats[sel], acs[sel] = 1, 0
        else:
            right = (axons[sel] >> mf.port_bit) != 0
            beats[sel] = acs[sel] = np.where(right, p.rows, p.cols)
    return beats, acs


def run_costs(images: Images, run: SampleRun, counts) -> RunCosts:
    """:class:`RunCosts` of ``run`` (a logged run) on input ``counts``."""
    P = images.fmt.lanes
    index = {im.tile: i for i, im in enumerate(images.tiles)}
    beats = np.array([im.program.tokens * im.program.groups(P) if im.kind == "neuron" and im.program.bias is not None
                      and not im.program.window else 0 for im in images.tiles], np.int64)      # the bias after CLEAR
    events = images.input_events(counts)
    b, a = _event_costs(images, events[:, 0], events[:, 1])
    np.add.at(beats, [index[t] for t in events[:, 0]], b)
    macs = int(a.sum())
    acs = 0
    buffered = [events[:, :3]]                  # (tile, axon, value) of every event a recurrent tile buffers
    for im in images.tiles:
        sel = run.spikes[:, 1] == im.tile
        if not sel.any() or not len(im.route):
            continue
        spk = run.spikes[sel, 2]
        start, cnt = im.pointer[spk, 0], im.pointer[spk, 1]
        total = int(cnt.sum())
        if not total:
            continue
        first = np.repeat(start - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt) + np.arange(total)
        dest = im.route[first]
        b, a = _event_costs(images, dest[:, 0], dest[:, 1])
        np.add.at(beats, [index[t] for t in dest[:, 0]], b)
        acs += int(a.sum())
        buffered.append(np.stack([dest[:, 0], dest[:, 1], np.repeat(run.spikes[sel, 3], cnt)], 1))
    buffered = np.concatenate(buffered).astype(np.int64)
    sweeps = np.zeros(len(images.tiles), np.int64)
    for i, im in enumerate(images.tiles):
        p = im.program
        if im.readout or (im.kind == "matmul" and p.graded):
            continue
        if im.kind == "neuron" and getattr(p, "window", 0):
            sweeps[i] = p.groups(P) * min(run.steps, p.window * p.elements)
            mine = buffered[buffered[:, 0] == im.tile]             # the words replayed: nonzero sums
            axons, inverse = np.unique(mine[:, 1], return_inverse=True)
            replayed = int((np.bincount(inverse, weights=mine[:, 2], minlength=len(axons)) != 0).sum())
            windows = min(p.elements, -(-run.steps // p.window))
            beats[i] += p.groups(P) * (replayed + (windows if p.bias is not None else 0))
        else:                       # the sweep covers the program's lane groups (the core's active groups)
            sweeps[i] = (p.tokens if im.kind == "neuron" else p.rows) * p.groups(P) * run.steps
    work = beats + sweeps
    return RunCosts(beats, acs, macs, int(work.max()), float(work.sum() / len(work)))
