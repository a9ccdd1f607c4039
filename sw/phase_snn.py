"""Reference simulator of a phase-coded network (the spikedattention flow), window by window, vectorised.

A phase-coded layer integrates one window of ``T`` steps and fires one spike per neuron in the next;
:func:`~spikeforge.sw.convert.spikedattention.schedule` gave every layer its window and put ``delay``
nodes on the paths that skip windows, so each node can be simulated over *its own* window on
window-relative tensors ``[T, batch, neurons]``: the Python loop is over nodes and the ``2T`` steps of
a layer, never over neurons or spikes.

Two arithmetics of the same :class:`~spikeforge.sw.ir.Network`:

* ``"fixed"`` -- the bit-exact model: integer currents (``floor(W x / 2**shift) + bias`` per step),
  :class:`~spikeforge.sw.neurons.PhaseNeuron` neurons (saturating potentials, realised base ``B_q``,
  rounded thresholds), :class:`~spikeforge.sw.attention.SpikedHeadFormat` heads, the integrator's
  ``v = sat(mulB(v + x))``. This is what the hardware computes and what golden traces come from.
* ``"float"`` -- the float reference of the papers' rules on the same integer weights: real currents
  (no floor), a layer fires at the first step ``j`` with ``|Y| >= B**-j (1 + 1/B)/2`` with the real base
  ``B`` (:func:`~spikeforge.sw.phase_coding.phase_encode`), heads by
  :func:`~spikeforge.sw.attention.spiked_attention_codes`, the integrator reads ``Y`` exactly.
* ``"ideal"`` -- no coding at all: every layer passes its value ``Y`` on (as a real number at step 0;
  ReLU layers clamp at 0), heads compute the exact ``softmax(q k^T * c) v``. This checks the conversion
  itself (BatchNorm folding, bias rescaling, weights, delays): it must reproduce the float ANN up to
  weight rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .attention import SpikedHeadFormat, spiked_attention_codes
from .fixed import saturate
from .ir import Network, Node
from .neurons import model_from_dict
from .phase_coding import phase_encode
from .snn import _Gather, encode_input

__all__ = ["run_phase", "PhaseRun", "fire_codes", "spike_agreement", "ARITHMETICS"]

ARITHMETICS = ("fixed", "float", "ideal")


@dataclass
class PhaseRun:
    """Outcome of :func:`run_phase` on a batch.

    Members
    -------
    logits : float64 ``[batch, *output_shape]``
    codes : dict
        Per neuron layer, ``sign * (j + 1)`` of each neuron's spike (0 = none), int16 ``[batch, N]``
        (``"ideal"``: the layer's values, units of its scale).
    spikes : dict
        Spikes per neuron layer and sample.
    acs, macs : int64 ``[batch]``
        Synaptic events (spike x non-zero fan-out) and multiply-accumulates (analog inputs to a layer).
    pair_adds : int64 ``[batch]``
        Trace-memory additions of the attention heads (one per QK^T / A·V pair and normaliser update).
    neuron_updates : int64 ``[batch]``
        Neuron-steps spent integrating or waiting to fire (layers, WOSS neurons, A·V accumulators).
    overflows : int
        Saturations anywhere (currents, potentials, attention accumulators, quotients).
    latency_steps : int
        Steps from the input to the end of the readout window.
    traces : dict
        Per neuron layer (when recorded): ``{"inputs": [E, 3], "spikes": [E, 3]}`` of one sample, steps
        counted from the start of the layer's integration window.
    """

    logits: torch.Tensor
    codes: dict[str, torch.Tensor]
    spikes: dict[str, torch.Tensor]
    acs: torch.Tensor
    macs: torch.Tensor
    pair_adds: torch.Tensor
    neuron_updates: torch.Tensor
    overflows: int
    latency_steps: int
    traces: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def spikes_total(self) -> torch.Tensor:
        return sum(self.spikes.values()) if self.spikes else torch.zeros_like(self.acs)


def fire_codes(spikes: torch.Tensor) -> torch.Tensor:
    """``sign * (j + 1)`` of the (single) spike of each neuron in a window ``[T, ...]``; 0 = no spike."""
    j = torch.arange(1, spikes.shape[0] + 1, dtype=torch.int16).reshape((-1,) + (1,) * (spikes.dim() - 1))
    return (spikes.to(torch.int16) * j).sum(0).to(torch.int16)


def spike_agreement(a: PhaseRun, b: PhaseRun) -> float:
    """Fraction of neurons (all layers, all samples) whose spike (step and sign) is the same in both runs."""
    same = sum(int((a.codes[k] == b.codes[k]).sum()) for k in a.codes)
    return same / max(sum(c.numel() for c in a.codes.values()), 1)


def _events(arr: torch.Tensor, offset: int = 0) -> np.ndarray:
    """Non-zero entries of ``arr [steps, N]`` as ``[t + offset, index, value]`` rows."""
    nz = torch.nonzero(arr)
    if not len(nz):
        return np.zeros((0, 3), np.int64)
    vals = arr[nz[:, 0], nz[:, 1]].to(torch.int64)
    return np.stack([nz[:, 0].numpy() + offset, nz[:, 1].numpy(), vals.numpy()], 1).astype(np.int64)


class _Runner:
    def __init__(self, net: Network, arithmetic: str, record: int | None):
        if net.flow != "spikedattention":
            raise ValueError(f"run_phase simulates phase-coded networks (flow 'spikedattention'), not {net.flow!r}; "
                             "use spikeforge.sw.snn.run_snn")
        if arithmetic not in ARITHMETICS:
            raise ValueError(f"arithmetic={arithmetic!r}: choose one of {ARITHMETICS}")
        self.net, self.fixed, self.record = net, arithmetic == "fixed", record
        self.ideal = arithmetic == "ideal"
        self.T = int(net.meta["T"])
        self.B = float(net.meta["B"])
        self.gathers = {n.name: [_Gather(n, k, net[p.source]) for k, p in enumerate(n.inputs)] for n in net}
        self.models = {n.name: model_from_dict(n.params["model"]) for n in net if n.op in ("neuron", "integrator")}
        self.heads = {n.name: [SpikedHeadFormat.from_params(h) for h in n.params["heads"]]
                      for n in net if n.op == "attention"}

    def run(self, x: torch.Tensor) -> PhaseRun:
        net, T = self.net, self.T
        counts = encode_input(net, x)
        batch = counts.shape[0]
        z = torch.zeros(batch, dtype=torch.int64)
        self.acs, self.macs, self.pairs, self.updates = z.clone(), z.clone(), z.clone(), z.clone()
        self.overflows = 0
        sig: dict[str, tuple[str, torch.Tensor]] = {}
        codes, spikes, traces = {}, {}, {}
        logits = None
        for n in net:
            ins = self.gathers[n.name]
            if n.op == "input":
                sig[n.name] = ("analog", counts)
            elif n.op == "linear":
                sig[n.name] = ("currents", self._linear(n, sig[n.inputs[0].source], ins[0], batch))
            elif n.op == "add":
                sig[n.name] = ("currents", sum(sig[p.source][1] for p in n.inputs))
            elif n.op == "delay":
                sig[n.name] = sig[n.inputs[0].source]
            elif n.op == "neuron":
                cur = sig[n.inputs[0].source][1]
                out = self._neuron(n, cur)
                sig[n.name] = ("spikes", out)
                codes[n.name] = out[0] if self.ideal else fire_codes(out)
                spikes[n.name] = out.abs().sum((0, 2)).to(torch.int64)
                if self.record is not None:
                    traces[n.name] = {"inputs": _events(cur[:, self.record].round().to(torch.int64)),
                                      "spikes": _events(out[:, self.record], T)}
            elif n.op == "attention":
                q, k, v = (self._spikes(g, sig) for g in ins)
                sig[n.name] = ("analog", self._attention(n, q, k, v))
            elif n.op == "integrator":
                logits = self._integrate(n, sig[n.inputs[0].source][1])
            else:
                raise ValueError(f"{n.describe()}: no phase-coded semantics for op {n.op!r}")
        shape = net.meta.get("output_shape") or list(net[net.output].shape)
        return PhaseRun(logits.reshape(batch, *shape), codes, spikes, self.acs, self.macs, self.pairs, self.updates,
                        self.overflows, int(net.meta.get("latency_steps", 0)), traces)

    # -- nodes -------------------------------------------------------------------------------------------------
    def _spikes(self, g: _Gather, sig) -> torch.Tensor:
        kind, x = sig[g.source]
        if kind != "spikes":
            raise ValueError(f"attention input {g.source!r} must be spikes")
        return g({g.source: x.reshape(-1, x.shape[-1])}).reshape(x.shape[0], x.shape[1], *g.shape)

    def _linear(self, n: Node, src, g: _Gather, batch: int) -> torch.Tensor:
        kind, x = src
        T = self.T
        w = torch.from_numpy(n.arrays["weight"]).double()
        nnz = (w != 0).sum(0).double()
        shift = int(n.params.get("shift", 0))
        r, m = n.shape
        if kind == "spikes":                       # [T, batch, N] -> gathered [T, batch, R, K]
            xg = g({g.source: x.reshape(T * batch, -1)}).reshape(T, batch, *g.shape)
            self.acs += ((xg != 0).double().sum((0, 2)) @ nnz).round().to(torch.int64)
            y = torch.matmul(xg.double(), w.T)
        else:                                      # analog values at step 0
            xg = g({g.source: x}).reshape(batch, *g.shape)
            self.macs += ((xg != 0).double().sum(1) @ nnz).round().to(torch.int64)
            y = torch.zeros((T, batch, r, m), dtype=torch.float64)
            y[0] = torch.matmul(xg.double(), w.T)
        if self.fixed:
            cur = torch.floor(y / 2 ** shift) if shift else y.round()
            cur = cur.to(torch.int64)
        else:
            cur = y / 2 ** shift
        if "bias" in n.arrays:
            b = torch.from_numpy(n.arrays["bias"])
            cur = cur + (b if self.fixed else b.double())
        return cur.reshape(T, batch, r * m)

    def _neuron(self, n: Node, cur: torch.Tensor) -> torch.Tensor:
        model, T = self.models[n.name], self.T
        batch, size = cur.shape[1], cur.shape[2]
        if not self.fixed:
            y = (cur * torch.pow(torch.tensor(self.B, dtype=torch.float64),
                                 -torch.arange(T, dtype=torch.float64)).reshape(T, 1, 1)).sum(0)
            y = y / 2 ** model.frac_bits
            if self.ideal:
                out = torch.zeros((T, batch, size), dtype=torch.float64)
                out[0] = y if model.bipolar else y.clamp(min=0)
                return out
            out = phase_encode(y, T, self.B, bipolar=model.bipolar)
            fired = (out != 0).to(torch.int64).cumsum(0) > 0        # fired at or before step j
            self.updates += 2 * T * size - fired[:-1].sum((0, 2))   # integrate T steps + fire steps while unfired
            return out
        cur, ovf = saturate(cur, model.current_width)
        self.overflows += int(ovf.sum())
        state = model.init_state((batch, size))
        out = torch.zeros((T, batch, size), dtype=torch.int8)
        self.updates += T * size
        for p in range(2 * T):
            if p < T:
                self.overflows += int(model.accumulate(state, cur[p]).sum())
            else:
                self.updates += (state["fired"] == 0).sum(1)
            res = model.update(state, p)
            ovf = res.overflow if model.bipolar else res.overflow & (state["v"] > 0)
            self.overflows += int(ovf.sum())        # a unipolar neuron's negative potential never fires
            if p >= T:
                out[p - T] = res.spikes
        return out

    def _attention(self, n: Node, q, k, v) -> torch.Tensor:
        """Quotients ``[batch, G * R * E]`` (``O`` fractional bits, units of v's scale)."""
        outs = []
        T = self.T
        for i, fmt in enumerate(self.heads[n.name]):
            qs, ks, vs = q[:, :, i], k[:, :, i], v[:, :, i]
            fq, fk, fv = ((s != 0).any(0).double() for s in (qs, ks, vs))
            self.pairs += (fq @ fk.transpose(-1, -2)).sum((1, 2)).to(torch.int64)
            if self.ideal:
                p = torch.softmax((qs[0] * torch.tensor(fmt.weights)) @ ks[0].transpose(-1, -2), -1)
                outs.append((p @ vs[0] * 2 ** fmt.out_frac_bits).reshape(p.shape[0], -1))
                continue
            if self.fixed:
                res = fmt.run(qs, ks, vs)
                self.overflows += res.overflows
                out, steps = res.out, res.steps
            else:
                head = spiked_attention_codes(qs, ks, vs, T, self.B, fmt.weights, inhibition=fmt.inhibition)
                out, steps = head.out * 2 ** fmt.out_frac_bits, head.steps
            fa = (steps >= 0).double()
            self.pairs += ((fa @ fv).sum((1, 2)) + fa.sum((1, 2))).to(torch.int64)
            self.updates += T * (fmt.rows * fmt.keys + fmt.rows * (fmt.dim_v + 1))
            outs.append(out.reshape(out.shape[0], -1))
        return torch.cat(outs, 1)

    def _integrate(self, n: Node, cur: torch.Tensor) -> torch.Tensor:
        model, T = self.models[n.name], self.T
        self.updates += T * cur.shape[2]
        if not self.fixed:
            w = torch.pow(torch.tensor(self.B, dtype=torch.float64), -torch.arange(T, dtype=torch.float64))
            return (cur * w.reshape(T, 1, 1)).sum(0) / 2 ** model.frac_bits * n.params["scale"]
        cur, ovf = saturate(cur, model.current_width)
        self.overflows += int(ovf.sum())
        v = torch.zeros(cur.shape[1:], dtype=torch.int64)
        for p in range(T):
            v, o1 = saturate(v + cur[p], model.v_width)
            v, o2 = model.multiply(v)
            self.overflows += int(o1.sum() + o2.sum())
        return v.double() * self.net.output_scale


def run_phase(net: Network, x: torch.Tensor, *, arithmetic: str = "fixed", batch_size: int = 120,
              record: int | None = None, progress=None) -> PhaseRun:
    """Run a phase-coded network on inputs ``x`` (chunks of ``batch_size``); ``record`` = a sample index
    whose per-layer currents and spikes are kept (golden traces); ``progress(done)`` is called with the
    number of inputs run so far, after every chunk."""
    if record is not None and not 0 <= record < len(x):
        raise ValueError(f"record={record} is outside the batch of {len(x)} inputs")
    runner = _Runner(net, arithmetic, None)
    parts = []
    for start in range(0, len(x), batch_size):
        rec = record - start if record is not None and start <= record < start + batch_size else None
        runner.record = rec
        parts.append(runner.run(x[start:start + batch_size]))
        if progress is not None:
            progress(min(start + batch_size, len(x)))
    first = parts[0]
    cat = lambda key: torch.cat([getattr(p, key) for p in parts])          # noqa: E731
    return PhaseRun(cat("logits"), {k: torch.cat([p.codes[k] for p in parts]) for k in first.codes},
                    {k: torch.cat([p.spikes[k] for p in parts]) for k in first.spikes}, cat("acs"), cat("macs"),
                    cat("pair_adds"), cat("neuron_updates"), sum(p.overflows for p in parts), first.latency_steps,
                    next((p.traces for p in parts if p.traces), {}))
