"""The papers' energy models (algorithms.md), in picojoules per inference.

* SpikeZIP-TF (spikezip, crnn): ``E = 4.6 pJ * N_MAC + 0.9 pJ * N_AC``.
* SpikedAttention: ``E_add = 0.9``, ``E_mul = 3.7``, ``E_mem = 5.0`` pJ;
  ANN ``N_MAC (2 E_mem + E_add + E_mul) + E_mem N_out``;
  SNN ``N_syn r_in (33/32 E_mem + E_add) + N_out a (2 E_mem + E_mul + 3 E_add + E_mem/32)``.

These are the published 45 nm estimates the papers compare with, not a measurement of our hardware.
"""

from __future__ import annotations

__all__ = ["E_MAC", "E_AC", "E_ADD", "E_MUL", "E_MEM", "mac_ac_energy", "spikedattention_ann_energy",
           "spikedattention_snn_energy", "phase_snn_energy", "ann_costs"]

E_MAC, E_AC = 4.6, 0.9
E_ADD, E_MUL, E_MEM = 0.9, 3.7, 5.0


def mac_ac_energy(n_mac: float, n_ac: float) -> float:
    """SpikeZIP-TF model: ``4.6 pJ`` per multiply-accumulate, ``0.9 pJ`` per accumulate."""
    return E_MAC * n_mac + E_AC * n_ac


def spikedattention_ann_energy(n_mac: float, n_out: float) -> float:
    """SpikedAttention's ANN model: every MAC reads two operands from memory; outputs are written."""
    return n_mac * (2 * E_MEM + E_ADD + E_MUL) + E_MEM * n_out


def spikedattention_snn_energy(n_syn: float, r_in: float, n_out: float, a: float) -> float:
    """SpikedAttention's SNN model: ``n_syn`` synapses, input spike fraction ``r_in``, ``n_out`` neurons
    of which a fraction ``a`` has not fired yet (per step)."""
    return n_syn * r_in * (33 / 32 * E_MEM + E_ADD) + n_out * a * (2 * E_MEM + E_MUL + 3 * E_ADD + E_MEM / 32)


def phase_snn_energy(run):
    """SpikedAttention's SNN model applied to a :class:`~spikeforge.sw.phase_snn.PhaseRun`, per sample:
    synaptic events (spikes x fan-out plus the heads' trace-memory additions) are the ``N_syn r_in``
    term, neuron-steps spent integrating or waiting to fire the ``N_out a`` term, and analog inputs
    (the first layer, re-coded attention quotients) cost an ANN MAC each."""
    syn = (run.acs + run.pair_adds).double()
    return (spikedattention_snn_energy(syn, 1.0, run.neuron_updates.double(), 1.0)
            + run.macs.double() * (2 * E_MEM + E_ADD + E_MUL))


def ann_costs(model, example) -> tuple[int, int]:
    """Multiply-accumulates and outputs written per sample of a float model: every ``nn.Linear`` and
    every ``@`` / ``matmul`` of its fx graph, measured on ``example`` (one sample is enough)."""
    import operator

    import torch
    import torch.fx as fx
    from torch import nn

    gm = fx.symbolic_trace(model)
    modules = dict(gm.named_modules())
    counts = [0, 0]

    class _Count(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n.op == "call_module" and isinstance(modules[n.target], nn.Linear):
                counts[0] += out.numel() * modules[n.target].in_features
                counts[1] += out.numel()
            elif n.op == "call_function" and n.target in (operator.matmul, torch.matmul, torch.bmm):
                counts[0] += out.numel() * self.env[n.args[0]].shape[-1]
                counts[1] += out.numel()
            return out
    with torch.no_grad():
        _Count(gm).run(example[:1])
    return counts[0], counts[1]
