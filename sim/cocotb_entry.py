"""cocotb entry point: runs inside the Verilator process started by :func:`spikeforge.sim.verilator.run_job`.

The job file (path in ``$SPIKEFORGE_JOB``) is JSON::

    {"kind": "neuron_core_replay", "config": NeuronCore.config(),
     "replays": [{"golden": path, "observed": path, "idle": p, "backpressure": p, "seed": n,
                  "malformed": n}, ...],
     "answer": path}

Each replay resets the DUT, drives the golden trace's inputs through the same bench code that runs
on the Amaranth simulator, and saves the observed trace; the answer file lists cycles per replay.
Comparison happens in the caller, so failures print the first differing event there.
"""

from __future__ import annotations

import json
import os

import cocotb

from .bench import CocotbBench
from .core_replay import replay_core
from .trace import SpikeTrace


async def _replays(dut, job, replay, answer_keys=("cycles", "beats")):
    """Reset, replay and save the observed trace for every replay of ``job``; ``replay(bench, golden, r)``
    runs one and returns a result with ``trace`` and the ``answer_keys``."""
    bench = CocotbBench(dut)
    answers = []
    for r in job["replays"]:
        await bench.reset()
        res = await replay(bench, SpikeTrace.load(r["golden"]), r)
        res.trace.save(r["observed"])
        answers.append({key: getattr(res, key) for key in answer_keys})
    return answers


def _stalls(r):
    return {"idle": r.get("idle", 0.0), "backpressure": r.get("backpressure", 0.0), "seed": r.get("seed", 0)}


async def _neuron_core_replay(dut, job):
    from ..hw.neuron_core import NeuronCore
    core = NeuronCore.from_config(job["config"])
    return await _replays(dut, job, lambda bench, golden, r: replay_core(bench, core, golden, **_stalls(r),
                                                                         malformed=r.get("malformed", 0)),
                          ("cycles", "beats", "accumulate_beats"))


async def _attention_block_replay(dut, job):
    from .attention_replay import replay_block
    return await _replays(dut, job, lambda bench, golden, r: replay_block(bench, job["block"], job["config"], golden,
                                                                          **_stalls(r)))


async def _tile_replay(dut, job):
    """A neuron, matmul or unit tile (``job["block"]``: its kind in :mod:`spikeforge.hw.blocks`)."""
    from ..hw.blocks import block_from_config
    from .tile_replay import replay_tile
    tile = block_from_config(job["block"], job["config"])
    tile._MustUse__silence = True            # the DUT is the Verilated design; this one gives layouts and golden
    return await _replays(dut, job, lambda bench, golden, r: replay_tile(bench, tile, golden, **_stalls(r)))


async def _accelerator_run(dut, job):
    """A whole network on the generated accelerator (:func:`spikeforge.sim.network.run_accelerator`)."""
    import pickle

    from .network import drive_accelerator
    with open(job["file"], "rb") as f:
        d = pickle.load(f)
    bench = CocotbBench(dut)
    await bench.reset()
    runs = await drive_accelerator(bench, d["images"], d["inputs"], max_steps=d["max_steps"], idle=d["idle"],
                                   backpressure=d["backpressure"], seed=d["seed"], log=d["log"])
    with open(job["observed"], "wb") as f:
        pickle.dump(runs, f)
    return {"samples": len(runs)}


async def _smoke(dut, job):
    """``spikeforge doctor``'s check: clock the tiny counter of :func:`spikeforge.sim.toolchain.smoke_test`."""
    bench = CocotbBench(dut)
    await bench.reset()
    bench.set("en", 1)
    for _ in range(job["cycles"]):
        await bench.cycle()
    await bench.settle()
    return {"count": bench.get("count")}


_KINDS = {"neuron_core_replay": _neuron_core_replay, "attention_block_replay": _attention_block_replay,
          "tile_replay": _tile_replay, "accelerator_run": _accelerator_run, "smoke": _smoke}


@cocotb.test()
async def run_job(dut):
    """Run the job named by ``$SPIKEFORGE_JOB``."""
    with open(os.environ["SPIKEFORGE_JOB"]) as f:
        job = json.load(f)
    answer = await _KINDS[job["kind"]](dut, job)
    with open(job["answer"], "w") as f:
        json.dump(answer, f)
