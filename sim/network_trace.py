"""Golden traces of a whole converted network: one neuron-core trace per neuron layer.

:func:`network_traces` runs the reference SNN (:func:`spikeforge.sw.snn.run_snn`; phase-coded networks:
:func:`spikeforge.sw.phase_snn.run_phase`, bit-exact, with each layer's steps counted from the start of
its integration window) on a batch, keeps
the input currents each neuron layer received for one sample, and turns them into standard
neuron-core golden traces (:func:`~spikeforge.sim.core_replay.core_golden`: the layer's bit-exact
model fed those currents). It checks that the layer-alone trace reproduces the spikes the layer
emitted inside the network, so a trace replayed against a :class:`~spikeforge.hw.neuron_core.NeuronCore`
checks the RTL on exactly the events the network produces. :func:`dump_network_traces` writes them
(``<layer>.npz`` + ``index.json``) for ``spikeforge trace show/diff`` and the core replay.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..sw.ir import Network
from ..sw.neurons import model_from_dict
from ..sw.phase_snn import run_phase
from ..sw.snn import run_snn
from .core_replay import core_golden
from .trace import SpikeTrace

__all__ = ["network_traces", "dump_network_traces"]


def network_traces(net: Network, x: torch.Tensor, *, sample: int = 0, lanes: int = 1,
                   max_steps: int = 256, timing: str = "zero") -> dict[str, SpikeTrace]:
    """Per neuron layer (in graph order), the golden trace of sample ``sample`` of batch ``x``, with the
    network run at ``timing`` (:data:`spikeforge.sw.snn.TIMINGS`; count-coded networks)."""
    if not 0 <= sample < len(x):
        raise ValueError(f"sample={sample} is outside the batch of {len(x)} inputs")
    if net.flow == "spikedattention":        # one period (integrate + fire window) per layer, layer-local steps
        run = run_phase(net, x, record=sample)
        steps = {n.name: n.params["model"]["T"] * 2 for n in net.neurons()}
        quiescent = True
    else:
        run = run_snn(net, x, max_steps=max(max_steps, net.meta.get("sequence_steps", 0) + 256), record=sample,
                      timing=timing)
        steps = {n.name: run.total_steps for n in net if n.op in ("neuron", "rnn")}
        quiescent = bool(run.quiescent[sample])
    traces = {}
    for node in (n for n in net if n.op in ("neuron", "rnn")):
        rec = run.traces[node.name]
        model = model_from_dict(node.params["model"])
        neurons = node.shape[-1] if node.op == "rnn" else node.size      # an RBIF layer reuses its neurons
        trace = core_golden(model, neurons=neurons, lanes=lanes, inputs=rec["inputs"], steps=steps[node.name])
        emitted = rec["spikes"][np.lexsort((rec["spikes"][:, 1], rec["spikes"][:, 0]))]
        if not np.array_equal(trace.spikes, emitted):
            raise AssertionError(f"layer {node.name!r}: the layer run alone does not reproduce its spikes in the "
                                 "network (simulator inconsistency)")
        trace.meta.update({"layer": node.name, "origin": node.origin, "flow": net.flow, "sample": sample,
                           "quiescent": quiescent, "window": node.params.get("window"),
                           "timing": None if net.flow == "spikedattention" else timing})
        traces[node.name] = trace
    return traces


def dump_network_traces(net: Network, x: torch.Tensor, folder, **kw) -> list[Path]:
    """Write :func:`network_traces` to ``folder/<layer>.npz`` and an ``index.json`` listing them in order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    traces = network_traces(net, x, **kw)
    paths = [t.save(folder / f"{name}.npz") for name, t in traces.items()]
    index = [{"layer": name, "file": p.name, "neurons": t.meta["config"]["neurons"], "steps": t.steps,
              "input_events": len(t.inputs), "spikes": len(t.spikes)} for (name, t), p in zip(traces.items(), paths)]
    (folder / "index.json").write_text(json.dumps({"flow": net.flow, "layers": index}, indent=1) + "\n")
    return paths
