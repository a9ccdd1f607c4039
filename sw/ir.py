"""The converted-network IR: a small graph of spiking operators with integer weights and thresholds.

This is what the conversion flows produce and what the compiler consumes. A :class:`Network` is a
list of :class:`Node` objects in topological order. Every node has a per-sample output *shape* and a
flat output of ``prod(shape)`` neurons/values; a node reads its inputs through :class:`Port` s, each a
*gather map* into the flat output of an earlier node (``-1`` reads a constant 0). Gather maps make
every layout change of the source model (reshape, permute, patch extraction, im2col for a
convolution, head split) a re-wiring of neuron indices, which is what a compiler maps onto routing.

Operators (``op``; the docs/conversion.md table has the full contract):

==============  ==================================================================================
``input``       the encoded input: integer counts ``x / scale`` (spikezip: all at step 0)
``linear``      ``y[r, m] = sum_k weight[m, k] x[r, k] (+ bias[r, m] once)``; integer weights
``neuron``      a layer of neurons of one bit-exact model (``model`` = ``NeuronModel.to_dict()``)
``add``         residual add of increments (spike counts of equal step)
``matmul``      SESA product of two spike-count tensors per group: ``[G,R,K] x [G,K,C]``, count traces
``softmax``     accumulate-and-difference softmax unit: emits level increments of ``Q(softmax)``
``layernorm``   accumulate-and-difference LayerNorm unit: emits level increments of ``Q(LN)``
``sum``         sum over the last gathered axis (token pooling)
``attention``   spiked attention heads (SpikedAttention): trace-matmul QK^T, WOSS softmax, A·V, division
``delay``       the input spikes, ``windows`` phase windows later (a FIFO on a residual path)
``integrator``  phase-window accumulator ``v = B*(v + x)`` read out as a potential (the network head)
``rnn``         a recurrent layer of RBIF neurons over a sequence ``[N, K]``: one window of sub-steps per element
==============  ==================================================================================

Neuron layers of the phase flow (``model`` kind ``phase``) carry a per-neuron ``scale`` array (the value
of a spike at step 0) and the ``window`` they integrate in; count-coded layers carry ``step``.

Files are JSON (one node per line, arrays as flat integer or float lists) with a format tag and a
version; :meth:`Network.load` validates everything and reports *all* problems in one error.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Port", "Node", "Network", "IRError", "FORMAT", "VERSION", "OPS", "gathered_shape"]

FORMAT = "spikeforge-snn"
VERSION = 1


class IRError(ValueError):
    """An invalid network: ``problems`` lists every problem found, each naming the node and field."""

    def __init__(self, problems: list[str], where: str = "network"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{where} is invalid ({len(self.problems)} problem"
                         f"{'s' if len(self.problems) != 1 else ''}):\n{lines}")


@dataclass
class Port:
    """One input of a node: ``index`` gathers values from the flat output of node ``source``.

    ``index`` is an int64 array whose shape is the shape the consuming operator expects; ``None``
    means the source's whole flat output, reshaped to that shape. ``-1`` entries read 0 (padding).
    """

    source: str
    index: np.ndarray | None = None

    def __post_init__(self):
        if self.index is not None:
            self.index = np.asarray(self.index, dtype=np.int64)


@dataclass
class Node:
    """One operator: name, op, input ports, per-sample output shape, scalar params and arrays.

    ``origin`` names what the node came from in the source model (module path / fx node).
    """

    name: str
    op: str
    inputs: list[Port]
    shape: tuple[int, ...]
    params: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    origin: str = ""

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def describe(self) -> str:
        return f"node {self.name!r} ({self.op})"


# -- operator contracts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpSpec:
    """What an operator needs: input count, gathered input ranks, params, arrays and a checker."""

    inputs: tuple[int, int]              # (min, max) number of input ports
    ranks: tuple[int, ...] | None        # rank of each gathered input (None: any)
    params: tuple[str, ...] = ()
    arrays: tuple[str, ...] = ()
    optional_arrays: tuple[str, ...] = ()


OPS: dict[str, OpSpec] = {
    "input": OpSpec((0, 0), (), ("scale", "encoding", "low", "high")),
    "linear": OpSpec((1, 1), (2,), ("weight_bits",), ("weight",), ("bias",)),
    "neuron": OpSpec((1, 1), None, ("model",), (), ("scale",)),
    "add": OpSpec((2, 64), None),
    "matmul": OpSpec((2, 2), (3, 3), ("gain",)),
    "softmax": OpSpec((1, 1), (2,), ("in_scale", "out_step", "n_min", "n_max")),
    "layernorm": OpSpec((1, 1), (2,), ("in_scale", "out_step", "n_min", "n_max", "eps"), ("gamma", "beta")),
    "sum": OpSpec((1, 1), (2,)),
    "attention": OpSpec((3, 3), (3, 3, 3), ("heads", "window"), (), ()),
    "delay": OpSpec((1, 1), None, ("windows", "T")),
    "integrator": OpSpec((1, 1), None, ("model", "scale", "window")),
    "rnn": OpSpec((1, 1), (2,), ("model", "weight_bits", "recurrent"), ("wx", "wh"), ("bias",)),
}

_ENCODINGS = ("analog",)     # integer counts x/scale delivered at step 0


def gathered_shape(node: Node, k: int, source_size: int) -> tuple[int, ...]:
    """Shape input ``k`` of ``node`` is gathered to: the index's shape, or (``index=None``) the source's
    flat output reshaped the way the operator reads it."""
    port = node.inputs[k]
    if port.index is not None:
        return tuple(port.index.shape)
    if node.op == "linear" and "weight" in node.arrays:
        k_in = node.arrays["weight"].shape[1] if node.arrays["weight"].ndim == 2 else source_size
        return (source_size // max(k_in, 1), k_in)
    if node.op == "matmul" and len(node.shape) == 3:
        g, r, c = node.shape
        return (g, r, source_size // max(g * r, 1)) if k == 0 else (g, source_size // max(g * c, 1), c)
    if node.op in ("softmax", "layernorm") and len(node.shape) == 2:
        return (source_size // node.shape[1], node.shape[1])
    if node.op == "sum" and node.shape:
        return (node.shape[0], source_size // max(node.shape[0], 1))
    return (source_size,)


def _check_node(node: Node, shapes: dict[str, tuple[int, ...]], problems: list[str]):
    """Append every problem of ``node`` (given the output shapes of earlier nodes) to ``problems``."""
    where = node.describe()
    spec = OPS.get(node.op)
    if spec is None:
        problems.append(f"{where}: unknown op; known ops: {', '.join(sorted(OPS))}")
        return
    lo, hi = spec.inputs
    if not lo <= len(node.inputs) <= hi:
        problems.append(f"{where}: has {len(node.inputs)} inputs; the op takes {lo}" + (f"..{hi}" if hi != lo else ""))
        return
    for p in spec.params:
        if p not in node.params:
            problems.append(f"{where}: missing parameter {p!r}")
    for a in spec.arrays:
        if a not in node.arrays:
            problems.append(f"{where}: missing array {a!r}")
    if any(d < 1 for d in node.shape):
        problems.append(f"{where}: output shape {node.shape} has an empty dimension")
    ins = []
    for k, port in enumerate(node.inputs):
        if port.source not in shapes:
            problems.append(f"{where}: input {k} reads {port.source!r}, which is not an earlier node")
            return
        size = int(np.prod(shapes[port.source], dtype=np.int64))
        if port.index is None:
            shape = gathered_shape(node, k, size)
            if int(np.prod(shape, dtype=np.int64)) != size:
                problems.append(f"{where}: input {k} reads all {size} outputs of {port.source!r} without an index, "
                                f"which do not form the {node.op} operator's input shape {shape}")
                return
            ins.append(shape)
            continue
        idx = port.index
        if idx.size and (idx.min() < -1 or idx.max() >= size):
            problems.append(f"{where}: input {k} gathers index {int(idx.max() if idx.max() >= size else idx.min())}"
                            f" from {port.source!r}, which has {size} outputs (valid: -1 for zero, 0..{size - 1})")
        ins.append(tuple(idx.shape))
    if spec.ranks is not None:
        for k, (shape, rank) in enumerate(zip(ins, spec.ranks)):
            if len(shape) != rank:
                problems.append(f"{where}: input {k} must be gathered as a rank-{rank} array, got shape {shape}")
                return
    if problems and problems[-1].startswith(where):
        return
    _CHECKS[node.op](node, ins, where, problems)


def _int_array(node, name, where, problems, shape=None) -> np.ndarray | None:
    a = node.arrays.get(name)
    if a is None:
        return None
    if not np.issubdtype(a.dtype, np.integer):
        problems.append(f"{where}: array {name!r} must hold integers, got {a.dtype}")
        return None
    if shape is not None and tuple(a.shape) != tuple(shape):
        problems.append(f"{where}: array {name!r} has shape {tuple(a.shape)}, expected {tuple(shape)}")
        return None
    return a


def _check_input(node, ins, where, problems):
    p = node.params
    if not (isinstance(p.get("scale"), (int, float)) and p["scale"] > 0):
        problems.append(f"{where}: scale must be a positive number, got {p.get('scale')!r}")
    if p.get("encoding") not in _ENCODINGS:
        problems.append(f"{where}: encoding {p.get('encoding')!r} is not one of {_ENCODINGS}")
    if not (isinstance(p.get("low"), int) and isinstance(p.get("high"), int) and p["low"] <= p["high"]):
        problems.append(f"{where}: input count range low={p.get('low')!r}, high={p.get('high')!r} must be integers "
                        "with low <= high")


def _check_linear(node, ins, where, problems):
    r, k = ins[0]
    w = _int_array(node, "weight", where, problems)
    if w is None:
        return
    if w.ndim != 2 or w.shape[1] != k:
        problems.append(f"{where}: weight has shape {tuple(w.shape)} but the input gathers {k} values per row "
                        f"(expected [out, {k}])")
        return
    if node.shape != (r, w.shape[0]):
        problems.append(f"{where}: output shape {node.shape} must be (rows, out) = {(r, w.shape[0])}")
    bits = node.params.get("weight_bits")
    if not isinstance(bits, int) or not 2 <= bits <= 32:
        problems.append(f"{where}: weight_bits={bits!r} must be an integer in 2..32")
    elif w.size:
        lim = (1 << (bits - 1)) - 1
        if int(np.abs(w).max()) > lim:
            problems.append(f"{where}: weight magnitude {int(np.abs(w).max())} overflows weight_bits={bits} "
                            f"(limit {lim}); convert with more weight bits")
    _int_array(node, "bias", where, problems, shape=(r, w.shape[0]))
    shift = node.params.get("shift", 0)
    if not (isinstance(shift, int) and 0 <= shift <= 48):
        problems.append(f"{where}: shift={shift!r} must be an integer in 0..48")


def _check_neuron(node, ins, where, problems):
    from .neurons import model_from_dict
    if node.shape != ins[0]:
        problems.append(f"{where}: output shape {node.shape} must equal its input shape {ins[0]}")
    try:
        model = model_from_dict(node.params.get("model", {}))
    except (TypeError, ValueError) as e:
        problems.append(f"{where}: neuron model: {e}")
        return
    if model.kind == "phase":
        scale = node.arrays.get("scale")
        if scale is None or tuple(scale.shape) != (node.size,):
            problems.append(f"{where}: a phase-coded layer needs a 'scale' array of {node.size} values "
                            "(the value of a spike at step 0, per neuron)")
        elif not (np.isfinite(scale).all() and (scale > 0).all()):
            problems.append(f"{where}: scale values must be finite and positive")
        _check_window(node, where, problems)
        return
    step = node.params.get("step")
    if not (isinstance(step, (int, float)) and step > 0 and math.isfinite(step)):
        problems.append(f"{where}: step (value of one spike) must be a positive number, got {step!r}")


def _check_window(node, where, problems):
    w = node.params.get("window")
    if not (isinstance(w, int) and w >= 0):
        problems.append(f"{where}: window (phase window the node integrates in) must be an integer >= 0, got {w!r}")


def _check_add(node, ins, where, problems):
    for k, s in enumerate(ins):
        if int(np.prod(s)) != node.size:
            problems.append(f"{where}: input {k} has {int(np.prod(s))} values, the output has {node.size}")


def _check_matmul(node, ins, where, problems):
    (g, r, k), (g2, k2, c) = ins
    if g != g2 or k != k2:
        problems.append(f"{where}: operands [G,R,K]={ins[0]} and [G,K,C]={ins[1]} do not match")
    elif node.shape != (g, r, c):
        problems.append(f"{where}: output shape {node.shape} must be (G, R, C) = {(g, r, c)}")
    gain = node.params.get("gain")
    if not isinstance(gain, int) or gain < 1:
        problems.append(f"{where}: gain must be an integer >= 1, got {gain!r}")


def _check_unit(node, ins, where, problems):
    p = node.params
    if node.shape != ins[0]:
        problems.append(f"{where}: output shape {node.shape} must equal its input shape {ins[0]}")
    for name in ("in_scale", "out_step"):
        if not (isinstance(p.get(name), (int, float)) and p[name] > 0):
            problems.append(f"{where}: {name} must be a positive number, got {p.get(name)!r}")
    if not (isinstance(p.get("n_min"), int) and isinstance(p.get("n_max"), int) and p["n_min"] < p["n_max"]):
        problems.append(f"{where}: level bounds n_min={p.get('n_min')!r}, n_max={p.get('n_max')!r} must be "
                        "integers with n_min < n_max")
    if node.op == "layernorm":
        c = ins[0][1]
        for a in ("gamma", "beta"):
            arr = node.arrays.get(a)
            if arr is not None and tuple(arr.shape) != (c,):
                problems.append(f"{where}: {a} has shape {tuple(arr.shape)}, expected ({c},)")
        if not (isinstance(p.get("eps"), (int, float)) and p["eps"] >= 0):
            problems.append(f"{where}: eps must be a number >= 0, got {p.get('eps')!r}")


def _check_sum(node, ins, where, problems):
    if node.shape != (ins[0][0],):
        problems.append(f"{where}: output shape {node.shape} must be (rows,) = {(ins[0][0],)}")


def _check_attention(node, ins, where, problems):
    from .attention import SpikedHeadFormat
    (g, r, d), (g2, c, d2), (g3, c2, e) = ins
    if not (g == g2 == g3 and d == d2 and c == c2):
        problems.append(f"{where}: q [G,R,D]={ins[0]}, k [G,C,D]={ins[1]} and v [G,C,E]={ins[2]} do not match")
        return
    if node.shape != (g, r, e):
        problems.append(f"{where}: output shape {node.shape} must be (G, R, E) = {(g, r, e)}")
    heads = node.params.get("heads")
    if not (isinstance(heads, list) and len(heads) == g):
        problems.append(f"{where}: 'heads' must list one head format per group ({g})")
        return
    for i, h in enumerate(heads):
        try:
            fmt = SpikedHeadFormat.from_params(h)
        except (TypeError, ValueError, KeyError) as err:
            problems.append(f"{where}: head {i}: {err}")
            continue
        if (fmt.rows, fmt.keys, fmt.dim, fmt.dim_v) != (r, c, d, e):
            problems.append(f"{where}: head {i} is sized rows={fmt.rows}, keys={fmt.keys}, dim={fmt.dim}, "
                            f"dim_v={fmt.dim_v}; the inputs give {(r, c, d, e)}")
    _check_window(node, where, problems)


def _check_rnn(node, ins, where, problems):
    from .neurons import model_from_dict
    steps, k = ins[0]
    wx = _int_array(node, "wx", where, problems)
    wh = _int_array(node, "wh", where, problems)
    if wx is None or wh is None:
        return
    h = wh.shape[0]
    if wx.ndim != 2 or wx.shape != (h, k) or wh.shape != (h, h):
        problems.append(f"{where}: wx {tuple(wx.shape)} and wh {tuple(wh.shape)} must be [H, {k}] and [H, H]")
        return
    if node.shape != (steps, h):
        problems.append(f"{where}: output shape {node.shape} must be (elements, hidden) = {(steps, h)}")
    _int_array(node, "bias", where, problems, shape=(h,))
    bits = node.params.get("weight_bits")
    if not isinstance(bits, int) or not 2 <= bits <= 32:
        problems.append(f"{where}: weight_bits={bits!r} must be an integer in 2..32")
    else:
        lim = (1 << (bits - 1)) - 1
        top = max(int(np.abs(wx).max(initial=0)), int(np.abs(wh).max(initial=0)))
        if top > lim:
            problems.append(f"{where}: weight magnitude {top} overflows weight_bits={bits} (limit {lim})")
    try:
        model = model_from_dict(node.params.get("model", {}))
        if model.kind != "bif":
            problems.append(f"{where}: an rnn layer runs BIF neurons (a window per element), got {model.kind!r}")
    except (TypeError, ValueError) as e:
        problems.append(f"{where}: neuron model: {e}")
    if node.params.get("recurrent") not in ("tracer", "spikes"):
        problems.append(f"{where}: recurrent={node.params.get('recurrent')!r} must be 'tracer' or 'spikes'")


def _check_delay(node, ins, where, problems):
    if node.shape != ins[0]:
        problems.append(f"{where}: output shape {node.shape} must equal its input shape {ins[0]}")
    w, t = node.params.get("windows"), node.params.get("T")
    if not (isinstance(w, int) and w >= 1 and isinstance(t, int) and t >= 1):
        problems.append(f"{where}: windows={w!r} and T={t!r} must be integers >= 1")


def _check_integrator(node, ins, where, problems):
    from .neurons import model_from_dict
    if node.shape != ins[0]:
        problems.append(f"{where}: output shape {node.shape} must equal its input shape {ins[0]}")
    try:
        if model_from_dict(node.params.get("model", {})).kind != "phase":
            problems.append(f"{where}: an integrator uses a phase model's accumulator")
    except (TypeError, ValueError) as e:
        problems.append(f"{where}: model: {e}")
    sc = node.params.get("scale")
    if not (isinstance(sc, (int, float)) and sc > 0 and math.isfinite(sc)):
        problems.append(f"{where}: scale must be a positive number, got {sc!r}")
    _check_window(node, where, problems)


_CHECKS = {"input": _check_input, "linear": _check_linear, "neuron": _check_neuron, "add": _check_add,
           "matmul": _check_matmul, "softmax": _check_unit, "layernorm": _check_unit, "sum": _check_sum,
           "attention": _check_attention, "delay": _check_delay, "integrator": _check_integrator,
           "rnn": _check_rnn}


# -- the network ------------------------------------------------------------------------------------------
@dataclass
class Network:
    """A converted network: nodes in topological order, the output node, flow name and metadata.

    ``output_scale`` is the value of one unit of the output node (logits = output * output_scale).
    """

    flow: str
    nodes: list[Node]
    output: str
    output_scale: float = 1.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.nodes}

    def __getitem__(self, name: str) -> Node:
        return self._by_name[name]

    def __iter__(self):
        return iter(self.nodes)

    @property
    def input(self) -> Node:
        return next(n for n in self.nodes if n.op == "input")

    def neurons(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "neuron"]

    def validate(self) -> "Network":
        """Check the whole graph; raise :class:`IRError` listing every problem found."""
        problems: list[str] = []
        shapes: dict[str, tuple[int, ...]] = {}
        seen = set()
        for node in self.nodes:
            if node.name in seen:
                problems.append(f"node name {node.name!r} is used twice")
            seen.add(node.name)
            before = len(problems)
            _check_node(node, shapes, problems)
            if len(problems) == before or node.op in OPS:
                shapes[node.name] = node.shape
        if sum(n.op == "input" for n in self.nodes) != 1:
            problems.append(f"a network has exactly one input node, found {sum(n.op == 'input' for n in self.nodes)}")
        if self.output not in shapes:
            problems.append(f"output {self.output!r} is not a node of the network")
        if not (isinstance(self.output_scale, (int, float)) and self.output_scale > 0):
            problems.append(f"output_scale must be a positive number, got {self.output_scale!r}")
        if problems:
            raise IRError(problems)
        self._by_name = {n.name: n for n in self.nodes}
        return self

    def summary(self) -> list[dict]:
        """One row per node: name, op, shape, neurons, synapses (weights), origin."""
        rows = []
        for n in self.nodes:
            syn = sum(int(n.arrays[a].size) for a in ("weight", "wx", "wh") if a in n.arrays)
            extra = ""
            if n.op == "neuron":
                m = n.params["model"]
                if "s_min" in m:
                    extra = f"{m['kind']} theta={m['theta']} S=[{m['s_min']},{m['s_max']}]"
                elif m["kind"] == "phase":
                    extra = (f"phase {'bipolar' if m['bipolar'] else 'unipolar'} T={m['T']} B={m['B']} "
                             f"F={m['frac_bits']} window {n.params['window']}")
                else:
                    extra = m["kind"]
            elif n.op == "matmul":
                extra = f"gain={n.params['gain']}"
            elif n.op == "attention":
                extra = f"{len(n.params['heads'])} heads, window {n.params['window']}"
            elif n.op == "delay":
                extra = f"{n.params['windows']} windows ({n.params['windows'] * n.params['T']} steps)"
            elif n.op == "integrator":
                extra = f"phase accumulator, window {n.params['window']}"
            elif n.op == "rnn":
                m = n.params["model"]
                extra = (f"RBIF theta={m['theta']} S=[{m['s_min']},{m['s_max']}] window={m['window']} "
                         f"recurrent={n.params['recurrent']}")
            elif n.op == "linear" and n.params.get("shift"):
                extra = f"shift {n.params['shift']}"
            rows.append({"name": n.name, "op": n.op, "shape": n.shape, "size": n.size, "weights": syn,
                         "detail": extra, "origin": n.origin})
        return rows

    # -- files ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "flow": self.flow, "output": self.output,
                "output_scale": self.output_scale, "meta": self.meta,
                "nodes": [_node_to_dict(n) for n in self.nodes]}

    def save(self, path) -> Path:
        """Write the network as JSON (one node per line) and return the path."""
        d = self.to_dict()
        nodes = d.pop("nodes")
        head = json.dumps(d)[:-1]
        body = ",\n".join("  " + json.dumps(n, separators=(",", ":")) for n in nodes)
        path = Path(path)
        path.write_text(f'{head}, "nodes": [\n{body}\n]}}\n')
        return path

    @classmethod
    def from_dict(cls, d: dict, where: str = "network") -> "Network":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise IRError([f"not a spikeforge network (format tag {FORMAT!r} missing)"], where)
        if d.get("version") != VERSION:
            raise IRError([f"format version {d.get('version')!r}; this spikeforge reads version {VERSION}"], where)
        problems = []
        nodes = []
        for i, nd in enumerate(d.get("nodes", [])):
            try:
                nodes.append(_node_from_dict(nd))
            except (KeyError, TypeError, ValueError) as e:
                problems.append(f"node #{i} ({nd.get('name', '?') if isinstance(nd, dict) else '?'}): malformed: {e}")
        if problems:
            raise IRError(problems, where)
        net = cls(flow=d.get("flow", ""), nodes=nodes, output=d.get("output", ""),
                  output_scale=d.get("output_scale", 1.0), meta=d.get("meta", {}))
        try:
            return net.validate()
        except IRError as e:
            raise IRError(e.problems, where) from None

    @classmethod
    def load(cls, path) -> "Network":
        """Read and validate a network file; every problem is reported in one :class:`IRError`."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise IRError([f"not valid JSON: {e}"], str(path)) from None
        return cls.from_dict(d, str(path))


def _array_to_dict(a: np.ndarray) -> dict:
    kind = "int" if np.issubdtype(a.dtype, np.integer) else "float"
    data = a.reshape(-1).tolist()
    return {"dtype": kind, "shape": list(a.shape), "data": data}


def _array_from_dict(d: dict) -> np.ndarray:
    dtype = {"int": np.int64, "float": np.float64}[d["dtype"]]
    a = np.asarray(d["data"], dtype=dtype)
    shape = tuple(int(s) for s in d["shape"])
    if a.size != int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"array has {a.size} values but shape {shape}")
    return a.reshape(shape)


def _node_to_dict(n: Node) -> dict:
    d = {"name": n.name, "op": n.op, "shape": list(n.shape),
         "inputs": [{"source": p.source, "index": None if p.index is None else _array_to_dict(p.index)}
                    for p in n.inputs]}
    if n.params:
        d["params"] = copy.deepcopy(n.params)
    if n.arrays:
        d["arrays"] = {k: _array_to_dict(v) for k, v in n.arrays.items()}
    if n.origin:
        d["origin"] = n.origin
    return d


def _node_from_dict(d: dict) -> Node:
    ports = [Port(p["source"], None if p.get("index") is None else _array_from_dict(p["index"]))
             for p in d.get("inputs", [])]
    return Node(name=d["name"], op=d["op"], inputs=ports, shape=tuple(d["shape"]), params=dict(d.get("params", {})),
                arrays={k: _array_from_dict(v) for k, v in d.get("arrays", {}).items()}, origin=d.get("origin", ""))
