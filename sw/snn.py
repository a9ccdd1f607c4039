"""Reference simulator of a converted network (IR), vectorised over batch and neurons.

Two semantics of the same :class:`~spikeforge.sw.ir.Network`:

* :func:`run_qann` -- the *integer QANN*: every node computes its total at once (a neuron layer is
  its quantizer ``settle(total)``, a unit is ``f(total)``, a product is ``A @ B``).
* :func:`run_snn` -- the spiking network, step by step until every sample is quiescent (a step
  after the input with no spike and no unit output anywhere) or ``max_steps``: the analog input
  arrives at step 0, linear layers add ``W x_t`` (+ bias at step 0), neurons run their bit-exact
  model (:mod:`spikeforge.sw.neurons`), products use SESA increments of the count traces
  ``dP_t = a_t B_t + A_{t-1} b_t``, softmax/LayerNorm units accumulate their input and emit
  ``f(X_t) - f(X_{t-1})``. Within a step, nodes run in graph order (no per-layer delay).

The only Python loop is over steps (and nodes); everything per neuron or per spike is a tensor op.
Integers stay int64; products go through float64 BLAS, exact because every bound is far below 2^53.
Softmax / LayerNorm units evaluate the bit-exact integer ``f`` of :mod:`spikeforge.sw.units`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .ir import Network, Node, gathered_shape
from . import units as _units
from .neurons import model_from_dict

__all__ = ["encode_input", "run_qann", "run_snn", "QannRun", "SnnRun", "compare_runs", "Mismatch", "ann_macs",
           "rnn_qann"]


def encode_input(net: Network, x: torch.Tensor) -> torch.Tensor:
    """Input counts ``x / scale`` (int64 ``[B, size]``); refuses values that are not exact counts in range."""
    node = net.input
    p = node.params
    x = torch.as_tensor(x, dtype=torch.float64)
    if tuple(x.shape[1:]) != node.shape:
        raise ValueError(f"input has per-sample shape {tuple(x.shape[1:])}; the network expects {node.shape}")
    counts = torch.round(x / p["scale"])
    bad = (x - counts * p["scale"]).abs() > 1e-6 * p["scale"]
    if bool(bad.any()):
        raise ValueError(f"{int(bad.sum())} input values are not integer multiples of the input scale "
                         f"{p['scale']:.6g} (e.g. {float(x[bad][0]):.6g}); quantize the input first")
    out = (counts < p["low"]) | (counts > p["high"])
    if bool(out.any()):
        raise ValueError(f"{int(out.sum())} input counts lie outside the declared range [{p['low']}, {p['high']}]")
    return counts.to(torch.int64).reshape(x.shape[0], -1)


class _Gather:
    """Gather one input port: ``values [B, src_size] -> [B, *shape]`` (-1 reads 0)."""

    def __init__(self, node: Node, k: int, src: Node):
        shape = gathered_shape(node, k, src.size)
        port = node.inputs[k]
        idx = torch.arange(src.size).reshape(shape) if port.index is None else torch.from_numpy(port.index)
        self.pad = bool((idx < 0).any())
        self.idx = torch.where(idx < 0, src.size, idx).reshape(-1)
        self.shape, self.source = shape, port.source

    def __call__(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        x = values[self.source]
        if self.pad:
            x = torch.cat([x, x.new_zeros(x.shape[0], 1)], 1)
        return x[:, self.idx].reshape(x.shape[0], *self.shape)


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.matmul(a.double(), b.double()).round().to(torch.int64)


def unit_function(node: Node, total: torch.Tensor) -> torch.Tensor:
    """``f`` of a softmax / LayerNorm unit: integer input totals ``[B, R, C]`` -> output levels, in the
    bit-exact integer arithmetic the RTL uses (:mod:`spikeforge.sw.units`)."""
    return _units.unit_function(node, total)


@dataclass
class QannRun:
    """Integer-QANN result: ``values[node]`` = total output of every node (int64 ``[B, size]``)."""
    values: dict[str, torch.Tensor]
    output: torch.Tensor


@dataclass
class SnnRun:
    """Spiking run: accumulated outputs per node, per-sample activity and costs.

    Members
    -------
    values : dict
        Sum over all steps of every node's output increments (neurons: the tracer ``S``).
    output : int64 tensor
        Accumulated output node, reshaped to ``[B, *output_shape]``.
    steps : int64 ``[B]``
        Steps to quiescence (last step with any activity + 1); ``quiescent`` says whether it came.
    spikes : dict
        Spike events per neuron node and sample (``[B]``).
    acs, macs : int64 ``[B]``
        Synaptic accumulates (spike x fan-out, trace reads) and multiply-accumulates (analog input).
    overflows : int
        Saturating accumulations anywhere (0 for a correctly sized network).
    traces : dict
        Per neuron node (when recorded): ``{"inputs": [E, 3], "spikes": [E, 3]}`` of the recorded sample.
    truncations : int
        RBIF neurons not quiet at the end of their element's window (their remaining spikes are lost).
    events : dict
        Per node and sample (``[B]``), the nonzero output increments it emitted over the run: spikes of a
        neuron layer, graded events of a matmul or unit (what an accelerator's links carry).
    """

    values: dict[str, torch.Tensor]
    output: torch.Tensor
    steps: torch.Tensor
    quiescent: torch.Tensor
    spikes: dict[str, torch.Tensor]
    acs: torch.Tensor
    macs: torch.Tensor
    unit_evaluations: torch.Tensor
    overflows: int
    total_steps: int
    traces: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    truncations: int = 0
    events: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def spikes_total(self) -> torch.Tensor:
        return sum(self.spikes.values()) if self.spikes else torch.zeros_like(self.steps)


def _gathers(net: Network) -> dict[str, list[_Gather]]:
    return {n.name: [_Gather(n, k, net[p.source]) for k, p in enumerate(n.inputs)] for n in net}


def _output(net: Network, values, batch: int) -> torch.Tensor:
    shape = net.meta.get("output_shape") or list(net[net.output].shape)
    return values[net.output].reshape(batch, *shape)


def _rnn_weights(n: Node):
    b = n.arrays.get("bias")
    return (torch.from_numpy(n.arrays["wx"]), torch.from_numpy(n.arrays["wh"]),
            torch.from_numpy(b) if b is not None else torch.zeros(n.arrays["wh"].shape[0], dtype=torch.int64))


def rnn_qann(n: Node, x: torch.Tensor) -> torch.Tensor:
    """The integer QRNN of an ``rnn`` node: ``h_e = settle(Wx x_e + Wh h_{e-1} + b)`` over the elements of
    ``x [B, N, K]``; returns ``[B, N, H]`` counts."""
    model = model_from_dict(n.params["model"])
    wx, wh, b = _rnn_weights(n)
    h = torch.zeros(x.shape[0], wh.shape[0], dtype=torch.int64)
    out = []
    for e in range(x.shape[1]):
        h = model.settle(_mm(x[:, e], wx.T) + _mm(h, wh.T) + b)
        out.append(h)
    return torch.stack(out, 1)


class _RnnState:
    """Step-wise RBIF layer: element ``e`` runs in steps ``[e W, (e+1) W)``; its input (buffered from step 0)
    and bias arrive at the window's first sub-step, the recurrent term ``Wh h_{e-1}`` either at once from
    the previous window's tracer (``recurrent="tracer"``) or spike by spike, each previous-window spike
    at the same sub-step one window later (``"spikes"``)."""

    def __init__(self, n: Node, batch: int):
        self.model = model_from_dict(n.params["model"])
        self.W = self.model.window
        self.wx, self.wh, self.b = _rnn_weights(n)
        self.tracer = n.params["recurrent"] == "tracer"
        self.h = self.wh.shape[0]
        self.state = self.model.init_state((batch, self.h))
        self.buffer = None
        self.prev_sum = torch.zeros(batch, self.h, dtype=torch.int64)
        self.prev_spikes = torch.zeros(self.W, batch, self.h, dtype=torch.int64)
        self.sum = torch.zeros_like(self.prev_sum)
        self.spikes = torch.zeros_like(self.prev_spikes)
        self.truncations = 0

    def step(self, x: torch.Tensor, t: int, elements: int):
        """Currents, spikes ``[B, N * H]``, MACs and ACs ``[B]`` and overflows of step ``t``."""
        batch = x.shape[0]
        self.buffer = x if self.buffer is None else self.buffer + x
        e, p = divmod(t, self.W)
        out = torch.zeros(batch, elements * self.h, dtype=torch.int64)
        macs = torch.zeros(batch, dtype=torch.int64)
        acs = torch.zeros(batch, dtype=torch.int64)
        if e >= elements:
            return torch.zeros(batch, self.h, dtype=torch.int64), out, macs, acs, 0
        cur = torch.zeros(batch, self.h, dtype=torch.int64)
        if p == 0:
            xe = self.buffer[:, e]
            cur = cur + _mm(xe, self.wx.T) + self.b
            macs += (xe != 0).sum(1) * self.h
        if self.tracer:          # the whole recurrent term at the first sub-step
            rec = self.prev_sum if p == 0 else None
        else:                    # each previous-window spike at the same sub-step
            rec = self.prev_spikes[p]
        if rec is not None:
            cur = cur + _mm(rec, self.wh.T)
            acs += rec.abs().sum(1) * self.h
        overflows = int(self.model.accumulate(self.state, cur).sum())
        res = self.model.update(self.state, t)
        overflows += int(res.overflow.sum())
        spk = res.spikes.to(torch.int64)
        self.sum += spk
        self.spikes[p] = spk
        if p == self.W - 1:
            self.truncations += int(res.truncated.sum())
            self.prev_sum, self.sum = self.sum, torch.zeros_like(self.sum)
            self.prev_spikes, self.spikes = self.spikes, torch.zeros_like(self.spikes)
        out[:, e * self.h:(e + 1) * self.h] = spk
        return cur, out, macs, acs, overflows


def ann_macs(net: Network) -> int:
    """Multiply-accumulates of one inference of the (integer) ANN: linear layers and products."""
    total = 0
    for n in net:
        if n.op == "linear":
            total += n.shape[0] * int(n.arrays["weight"].size)
        elif n.op == "matmul":
            g, r, c = n.shape
            total += g * r * c * gathered_shape(n, 0, net[n.inputs[0].source].size)[2]
        elif n.op == "rnn":
            total += n.shape[0] * (int(n.arrays["wx"].size) + int(n.arrays["wh"].size))
    return total


def run_qann(net: Network, x: torch.Tensor, units: str = "exact") -> QannRun:
    """Evaluate the integer QANN the network stands for (one shot, no spikes); ``units="float"`` evaluates
    softmax / LayerNorm in float64 instead of the bit-exact integer ``f`` (to measure its error)."""
    if units not in ("exact", "float"):
        raise ValueError(f"units={units!r}: use 'exact' (the integer f every simulator shares) or 'float'")
    counts = encode_input(net, x)
    g = _gathers(net)
    consts = {n.name: _units.unit_constants(n) for n in net if n.op in ("softmax", "layernorm")}
    values: dict[str, torch.Tensor] = {}
    for n in net:
        ins = [gi(values) for gi in g[n.name]]
        if n.op == "input":
            out = counts
        elif n.op == "linear":
            out = _mm(ins[0], torch.from_numpy(n.arrays["weight"]).T)
            if "bias" in n.arrays:
                out = out + torch.from_numpy(n.arrays["bias"])
        elif n.op == "neuron":
            out = model_from_dict(n.params["model"]).settle(ins[0])
        elif n.op == "add":
            out = sum(ins)
        elif n.op == "matmul":
            out = n.params["gain"] * _mm(ins[0], ins[1])
        elif n.op in ("softmax", "layernorm"):
            out = (_units.unit_function(n, ins[0], consts[n.name]) if units == "exact"
                   else _units.unit_function_float(n, ins[0]))
        elif n.op == "sum":
            out = ins[0].sum(-1)
        elif n.op == "rnn":
            out = rnn_qann(n, ins[0])
        else:
            raise ValueError(f"{n.describe()}: no QANN semantics for op {n.op!r}")
        values[n.name] = out.reshape(out.shape[0], -1)
    return QannRun(values, _output(net, values, counts.shape[0]))


#: When a node's output is seen by the nodes that read it (the hardware's timing, see docs/conversion.md):
#: ``zero`` in the same step (topological order); ``layer`` one step later for every spiking layer
#: (``neuron``/``rnn`` nodes: a pipelined accelerator where each layer integrates in step t+1 what the
#: previous one emitted in step t); ``node`` one step later for every node but the input.
TIMINGS = ("zero", "layer", "node")


def _delayed_ops(timing: str) -> set[str]:
    if timing not in TIMINGS:
        raise ValueError(f"timing={timing!r} is not a network timing; choose one of {TIMINGS}")
    return {"zero": set(), "layer": {"neuron", "rnn"},
            "node": {"linear", "neuron", "add", "matmul", "softmax", "layernorm", "sum", "rnn"}}[timing]


def run_snn(net: Network, x: torch.Tensor, max_steps: int = 256, record: int | None = None,
            progress=None, timing: str = "zero") -> SnnRun:
    """Run the spiking network on a batch until every sample is quiescent or ``max_steps``.

    ``record`` = a sample index whose per-neuron-layer input currents and spikes are kept (golden traces).
    ``progress(t, busy)`` is called after each step ``t`` with the number of samples not yet quiescent.
    ``timing`` (:data:`TIMINGS`) says when a node's output reaches its readers; the totals at quiescence,
    hence the outputs, are the same for every timing (every operator works on increments whose sums
    telescope), only the steps differ.
    """
    delayed = _delayed_ops(timing)
    counts = encode_input(net, x)
    unit_consts = {n.name: _units.unit_constants(n) for n in net if n.op in ("softmax", "layernorm")}
    batch = counts.shape[0]
    g = _gathers(net)
    models = {n.name: model_from_dict(n.params["model"]) for n in net if n.op == "neuron"}
    rnns = {n.name: _RnnState(n, batch) for n in net if n.op == "rnn"}
    busy_until = max((n.shape[0] * rnns[n.name].W for n in net if n.op == "rnn"), default=0)
    state = {name: m.init_state((batch, net[name].size)) for name, m in models.items()}
    acc = {n.name: torch.zeros(batch, n.size, dtype=torch.int64) for n in net}
    trace_a, trace_b = {}, {}                     # SESA count traces of matmul operands
    unit_total, unit_prev = {}, {}                # softmax / LayerNorm accumulators and last levels
    spikes = {name: torch.zeros(batch, dtype=torch.int64) for name in list(models) + list(rnns)}
    events = {n.name: torch.zeros(batch, dtype=torch.int64) for n in net}
    acs = torch.zeros(batch, dtype=torch.int64)
    macs = torch.zeros(batch, dtype=torch.int64)
    unit_evals = torch.zeros(batch, dtype=torch.int64)
    steps = torch.ones(batch, dtype=torch.int64)
    quiescent = torch.zeros(batch, dtype=torch.bool)
    overflows = 0
    rec = {name: {"inputs": [], "spikes": []} for name in list(models) + list(rnns)} if record is not None else {}
    t = 0
    visible: dict[str, torch.Tensor] = {}         # the outputs readers see in this step
    for t in range(max_steps):
        values: dict[str, torch.Tensor] = {}
        active = torch.zeros(batch, dtype=torch.bool)
        for n in net:
            ins = [gi(visible) for gi in g[n.name]]
            if n.op == "input":
                out = counts if t == 0 else torch.zeros_like(counts)
            elif n.op == "linear":
                w = torch.from_numpy(n.arrays["weight"])
                out = _mm(ins[0], w.T)
                fan = ins[0].abs().reshape(batch, -1).sum(1) * w.shape[0]
                if net[n.inputs[0].source].op == "input":
                    macs += fan
                else:
                    acs += fan
                if t == 0 and "bias" in n.arrays:
                    out = out + torch.from_numpy(n.arrays["bias"])
            elif n.op == "neuron":
                m, st = models[n.name], state[n.name]
                cur = ins[0].reshape(batch, -1)
                overflows += int(m.accumulate(st, cur).sum())
                res = m.update(st, t)
                out = res.spikes.to(torch.int64)
                overflows += int(res.overflow.sum())
                spikes[n.name] += out.abs().sum(1)
                if record is not None:
                    for key, arr in (("inputs", cur[record]), ("spikes", out[record])):
                        nz = torch.nonzero(arr).reshape(-1)
                        if len(nz):
                            rec[n.name][key].append(np.stack([np.full(len(nz), t), nz.numpy(), arr[nz].numpy()], 1))
            elif n.op == "add":
                out = sum(ins)
            elif n.op == "matmul":
                a, b = ins
                a_prev = trace_a.get(n.name, torch.zeros_like(a))
                b_now = trace_b.get(n.name, torch.zeros_like(b)) + b
                out = n.params["gain"] * (_mm(a, b_now) + _mm(a_prev, b))
                trace_a[n.name], trace_b[n.name] = a_prev + a, b_now
                acs += a.abs().sum((1, 2, 3)) * b.shape[-1] + b.abs().sum((1, 2, 3)) * a.shape[-2]
            elif n.op in ("softmax", "layernorm"):
                total = unit_total.get(n.name, 0) + ins[0]
                unit_total[n.name] = total
                level = _units.unit_function(n, total, unit_consts[n.name])
                out = level - unit_prev.get(n.name, 0)
                unit_prev[n.name] = level
                unit_evals += (ins[0] != 0).any(-1).sum(-1) if t else torch.full_like(unit_evals, ins[0].shape[1])
            elif n.op == "sum":
                out = ins[0].sum(-1)
            elif n.op == "rnn":
                cur, out, m_, a_, o_ = rnns[n.name].step(ins[0], t, n.shape[0])
                macs += m_
                acs += a_
                overflows += o_
                spikes[n.name] += out.abs().sum(1)
                if record is not None:
                    e = min(t // rnns[n.name].W, n.shape[0] - 1)
                    h = rnns[n.name].h
                    for key, arr in (("inputs", cur[record]), ("spikes", out[record, e * h:(e + 1) * h])):
                        nz = torch.nonzero(arr).reshape(-1)
                        if len(nz):
                            rec[n.name][key].append(np.stack([np.full(len(nz), t), nz.numpy(), arr[nz].numpy()], 1))
            else:
                raise ValueError(f"{n.describe()}: no spiking semantics for op {n.op!r}")
            out = out.reshape(batch, -1)
            values[n.name] = out
            if n.op not in delayed:
                visible[n.name] = out
            elif n.name not in visible:
                visible[n.name] = torch.zeros_like(out)      # nothing emitted before step 0
            acc[n.name] += out
            nonzero = out != 0
            events[n.name] += nonzero.sum(1)
            if n.op != "input":
                active |= nonzero.any(1)
        visible.update({name: v for name, v in values.items() if net[name].op in delayed})
        if t == 0:
            continue
        if t < busy_until - 1:             # a recurrent layer still has sequence elements to run
            active = torch.ones_like(active)
        newly = ~quiescent & ~active
        steps = torch.where(active & ~quiescent, torch.full_like(steps, t + 1), steps)
        quiescent |= newly
        if progress is not None:
            progress(t, int((~quiescent).sum()))
        if bool(quiescent.all()):
            break
    values = acc
    traces = {}
    if record is not None:
        for name, d in rec.items():
            traces[name] = {k: (np.concatenate(v) if v else np.zeros((0, 3), np.int64)).astype(np.int64)
                            for k, v in d.items()}
    return SnnRun(values, _output(net, values, batch), steps, quiescent, spikes, acs, macs, unit_evals,
                  overflows, t + 1, traces, sum(r.truncations for r in rnns.values()), events)


@dataclass
class Mismatch:
    """First difference between two runs: node, sample, flat index and both values."""
    node: str
    sample: int
    index: int
    expected: int
    got: int
    count: int

    def __str__(self):
        return (f"{self.count} values differ; first: node {self.node!r}, sample {self.sample}, index {self.index}: "
                f"integer QANN {self.expected}, SNN {self.got}")


def compare_runs(net: Network, qann: QannRun, snn: SnnRun, samples=None) -> tuple[int, Mismatch | None]:
    """Compare every node's QANN total with the SNN's accumulated output (neurons: the tracers).

    Returns ``(samples with any difference, first mismatch)``; ``samples`` restricts the check.
    """
    bad = None
    first = None
    for n in net:
        if n.op == "input":
            continue
        a, b = qann.values[n.name], snn.values[n.name]
        if samples is not None:
            a, b = a[samples], b[samples]
        diff = a != b
        row = diff.any(1)
        bad = row if bad is None else bad | row
        if first is None and bool(row.any()):
            s, i = (int(v) for v in torch.nonzero(diff)[0])
            first = Mismatch(n.name, s, i, int(a[s, i]), int(b[s, i]), int(diff.sum()))
    return (int(bad.sum()) if bad is not None else 0), first
