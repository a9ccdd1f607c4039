"""The compiler's report: per-tile utilisation and, from a reference run's activity, the estimated
events, cycles, synaptic operations and energy of one inference on the planned accelerator.

Cycle model (an estimate, documented so the RTL can be held to it): a neuron-tile slice spends one
cycle per ACCUMULATE beat — every input event reads ``ceil(cols / lanes)`` weight words — plus one
sweep of ``ceil(neurons / lanes)`` cycles per step; a unit slice one cycle per input event plus a
sweep per step; a matmul slice one cycle per column it holds for every input event (the other
operand's trace row is read out), plus a sweep per step; an rnn slice (a recurrent program) writes
every input event into its buffer (one cycle each, its own spikes of elements 0..K-2 included: the
recurrent term, a link of the plan) and replays at most ``min(events, K x fan-in)`` buffered words at
its window starts, ``ceil(cols / lanes)`` beats each. Input events per slice come from the
run's events per producing node (spikes, graded events) times the routing entries of the link divided
by the producer's outputs (the mean fan-out). Tiles run in parallel: ``busiest_tile_cycles`` bounds
any schedule from below, ``balanced_cycles`` is the total work spread perfectly over the tiles used.
Energy: SpikeZIP-TF's model, ``4.6 pJ`` per MAC (analog input) and ``0.9 pJ`` per accumulate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..energy import mac_ac_energy
from .plan import Plan

__all__ = ["PlanReport", "report"]


@dataclass(frozen=True)
class PlanReport:
    tiles: list[dict]
    steps: float
    events_per_inference: float
    synaptic_ops: float
    input_macs: float
    busiest_tile_cycles: float
    balanced_cycles: float
    energy_pj: float

    def to_dict(self) -> dict:
        return {"tiles": self.tiles, "steps": self.steps, "events_per_inference": self.events_per_inference,
                "synaptic_ops": self.synaptic_ops, "input_macs": self.input_macs,
                "busiest_tile_cycles": self.busiest_tile_cycles, "balanced_cycles": self.balanced_cycles,
                "energy_pj": self.energy_pj}

    def markdown(self) -> str:
        lines = ["| kind | tile | layer | neurons | neuron use | words | word use | routes | events in | cycles |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for t in self.tiles:
            lines.append(f"| {t['kind']} | {t['tile']} | {t['layer']} | {t['neurons']} | {t['neuron_use']:.0%} | "
                         f"{t['words']} | {t['word_use']:.0%} | {t['routes']} | {t['events_in']:.0f} | "
                         f"{t['cycles']:.0f} |")
        lines += ["", f"- steps per inference: {self.steps:.1f}",
                  f"- events per inference: {self.events_per_inference:.0f}",
                  f"- synaptic operations: {self.synaptic_ops:.0f}, input MACs: {self.input_macs:.0f}",
                  f"- estimated cycles: busiest tile {self.busiest_tile_cycles:.0f}, perfectly balanced "
                  f"{self.balanced_cycles:.0f}",
                  f"- energy estimate (4.6 pJ/MAC, 0.9 pJ/AC): {self.energy_pj / 1e6:.3f} uJ"]
        return "\n".join(lines) + "\n"


def report(plan: Plan, net, run) -> PlanReport:
    """The report of ``plan`` for the activity of ``run`` (a :class:`spikeforge.sw.snn.SnnRun` of ``net``
    at the accelerator's timing; means over its samples)."""
    P = plan.spec.lanes
    events = {name: float(v.double().mean()) for name, v in run.events.items()}
    layers = {L.name: L for L in plan.layers}
    steps = float(run.steps.double().mean())
    into: dict[str, float] = {}
    for (producer, consumer), entries in plan.links.items():
        src = net[producer] if producer != "input" else net.input
        into[consumer] = into.get(consumer, 0.0) + events.get(src.name, 0.0) * entries / max(src.size, 1)
    rows, syn = [], 0.0
    for u, sl in zip(plan.utilisation(), plan.slices):
        L = layers[sl.layer]
        cols = sl.col1 - sl.col0
        ev = into.get(L.name, 0.0) * sl.neurons / L.neurons       # events spread evenly over the layer
        if L.op == "rnn":             # every slice takes every input and recurrent event into its buffer
            ev = into.get(L.name, 0.0)
            words = min(ev, L.buffer_words)
            cycles = ev + words * math.ceil(cols / P) + steps * math.ceil(sl.neurons / P)
        else:
            per_event = {"neuron": math.ceil(cols / P), "unit": 1, "matmul": cols}[L.kind]
            cycles = ev * per_event + steps * math.ceil(sl.neurons / P)
        syn += ev * (cols if L.kind != "unit" else 1)
        rows.append(dict(u, events_in=ev, cycles=cycles))
    total_events = sum(events.get(L.name, 0.0) for L in plan.layers) + events.get(net.input.name, 0.0)
    macs = float(run.macs.double().mean())
    busiest = max((r["cycles"] for r in rows), default=0.0)
    balanced = sum(r["cycles"] for r in rows) / max(len(rows), 1)
    return PlanReport(rows, steps, total_events, syn, macs, busiest, balanced, mac_ac_energy(macs, syn))

