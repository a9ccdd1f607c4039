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
version; :meth:`Network.load` validates everything and reports *all* problems in one :class:`IRError`,
and raises no other exception type for a bad file (wrong JSON structure or types, missing or unknown
keys, malformed arrays, NaN, huge numbers, negative shapes: docs/conversion.md, "The IR").
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
MAX_SIZE = 1 << 32          # values per node (and per array): indices and sizes stay exact in int64
_INT64 = np.iinfo(np.int64)


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
        return math.prod(self.shape)

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
    elif node.size > MAX_SIZE:
        problems.append(f"{where}: output shape {node.shape} has {node.size} values, over the {MAX_SIZE} a node "
                        "may have")
    ins = []
    for k, port in enumerate(node.inputs):
        if port.source not in shapes:
            problems.append(f"{where}: input {k} reads {port.source!r}, which is not an earlier node")
            return
        size = math.prod(shapes[port.source])
        if port.index is None:
            shape = gathered_shape(node, k, size)
            if math.prod(shape) != size:
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


def _number(x) -> bool:
    """A finite real number (``bool`` is not a number here)."""
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and math.isfinite(x))


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
    if not (_number(p.get("scale")) and p["scale"] > 0):
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
        top = max(int(w.max()), -int(w.min()))              # Python ints: abs(int64 min) does not wrap
        if top > lim:
            problems.append(f"{where}: weight magnitude {top} overflows weight_bits={bits} "
                            f"(limit {lim}); convert with more weight bits")
    _int_array(node, "bias", where, problems, shape=(r, w.shape[0]))
    shift = node.params.get("shift", 0)
    if not (isinstance(shift, int) and 0 <= shift <= 48):
        problems.append(f"{where}: shift={shift!r} must be an integer in 0..48")


def _why(err: BaseException) -> str:
    """An exception as a problem text: the message of a ValueError/TypeError, else its type too."""
    return str(err) if isinstance(err, (ValueError, TypeError)) and str(err) else f"{type(err).__name__}: {err}"


def _model(d, where, what, problems):
    """The neuron model of ``d`` (a ``NeuronModel.to_dict()`` object), or ``None`` with a problem added."""
    from .neurons import model_from_dict
    if not isinstance(d, dict):
        problems.append(f"{where}: {what}: must be an object with a 'kind' and the model's parameters, got "
                        f"{_json_type(d)}")
        return None
    try:
        return model_from_dict(d)
    except Exception as e:                       # the model's own checks, or garbage it chokes on
        problems.append(f"{where}: {what}: {_why(e)}")
        return None


def _check_neuron(node, ins, where, problems):
    if node.shape != ins[0]:
        problems.append(f"{where}: output shape {node.shape} must equal its input shape {ins[0]}")
    model = _model(node.params.get("model", {}), where, "neuron model", problems)
    if model is None:
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
        if math.prod(s) != node.size:
            problems.append(f"{where}: input {k} has {math.prod(s)} values, the output has {node.size}")


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
        if not (_number(p.get(name)) and p[name] > 0):
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
        if not (_number(p.get("eps")) and p["eps"] >= 0):
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
        if not isinstance(h, dict):
            problems.append(f"{where}: head {i} must be an object of SpikedHeadFormat parameters, got "
                            f"{_json_type(h)}")
            continue
        try:
            fmt = SpikedHeadFormat.from_params(h)
        except KeyError as err:
            problems.append(f"{where}: head {i}: missing parameter {err}")
            continue
        except Exception as err:                 # the format's own checks, or garbage it chokes on
            problems.append(f"{where}: head {i}: {_why(err)}")
            continue
        if (fmt.rows, fmt.keys, fmt.dim, fmt.dim_v) != (r, c, d, e):
            problems.append(f"{where}: head {i} is sized rows={fmt.rows}, keys={fmt.keys}, dim={fmt.dim}, "
                            f"dim_v={fmt.dim_v}; the inputs give {(r, c, d, e)}")
    _check_window(node, where, problems)


def _check_rnn(node, ins, where, problems):
    steps, k = ins[0]
    wx = _int_array(node, "wx", where, problems)
    wh = _int_array(node, "wh", where, problems)
    if wx is None or wh is None:
        return
    h = wh.shape[0] if wh.ndim else 0
    if wx.ndim != 2 or wh.ndim != 2 or wx.shape != (h, k) or wh.shape != (h, h):
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
        top = max([0] + [max(int(a.max()), -int(a.min())) for a in (wx, wh) if a.size])
        if top > lim:
            problems.append(f"{where}: weight magnitude {top} overflows weight_bits={bits} (limit {lim})")
    model = _model(node.params.get("model", {}), where, "neuron model", problems)
    if model is not None and model.kind != "bif":
        problems.append(f"{where}: an rnn layer runs BIF neurons (a window per element), got {model.kind!r}")
    if node.params.get("recurrent") not in ("tracer", "spikes"):
        problems.append(f"{where}: recurrent={node.params.get('recurrent')!r} must be 'tracer' or 'spikes'")


def _check_delay(node, ins, where, problems):
    if node.shape != ins[0]:
        problems.append(f"{where}: output shape {node.shape} must equal its input shape {ins[0]}")
    w, t = node.params.get("windows"), node.params.get("T")
    if not (isinstance(w, int) and w >= 1 and isinstance(t, int) and t >= 1):
        problems.append(f"{where}: windows={w!r} and T={t!r} must be integers >= 1")


def _check_integrator(node, ins, where, problems):
    if node.shape != ins[0]:
        problems.append(f"{where}: output shape {node.shape} must equal its input shape {ins[0]}")
    model = _model(node.params.get("model", {}), where, "model", problems)
    if model is not None and model.kind != "phase":
        problems.append(f"{where}: an integrator uses a phase model's accumulator")
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
            try:
                _check_node(node, shapes, problems)
            except Exception as e:                   # a checker tripped over a value no check anticipated
                problems.append(f"{node.describe()}: malformed ({_why(e)})")
            if len(problems) == before or node.op in OPS:
                shapes[node.name] = node.shape
        if sum(n.op == "input" for n in self.nodes) != 1:
            problems.append(f"a network has exactly one input node, found {sum(n.op == 'input' for n in self.nodes)}")
        if self.output not in shapes:
            problems.append(f"output {self.output!r} is not a node of the network")
        if not (_number(self.output_scale) and self.output_scale > 0):
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
        """Build and validate a network from its :meth:`to_dict` form (e.g. parsed JSON of any shape).

        Contract: returns a validated :class:`Network` or raises one :class:`IRError` listing every
        problem found, each naming the node (``node #i (name)``) and field; no other exception type
        escapes, whatever ``d`` holds (wrong types, missing keys, nested garbage, huge integers, NaN,
        negative or huge shapes, malformed arrays).
        """
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            kind = "" if isinstance(d, dict) else f" (the file holds a JSON {_json_type(d)}, not an object)"
            raise IRError([f"not a spikeforge network (format tag {FORMAT!r} missing){kind}"], where)
        version = d.get("version")
        if type(version) is not int or version != VERSION:
            raise IRError([f"format version {version!r}; this spikeforge reads version {VERSION}"], where)
        problems: list[str] = []
        for key in sorted(set(d) - _NETWORK_KEYS, key=str):
            problems.append(f"unknown top-level key {key!r} (known: {', '.join(sorted(_NETWORK_KEYS))})")
        for key, types, what in (("flow", str, "a string"), ("output", str, "a string (the readout node's name)"),
                                 ("meta", dict, "an object")):
            if key in d and not isinstance(d[key], types):
                problems.append(f"{key!r} must be {what}, got {_json_type(d[key])} {_short(d[key])}")
        if "output" not in d:
            problems.append("'output' (the readout node's name) is missing")
        scale = d.get("output_scale", 1.0)
        if not (_number(scale) and scale > 0):
            problems.append(f"output_scale must be a positive number, got {_short(scale)}")
        raw_nodes = d.get("nodes")
        nodes = []
        if not isinstance(raw_nodes, list):
            problems.append("'nodes' is missing" if raw_nodes is None and "nodes" not in d else
                            f"'nodes' must be a list of node objects, got {_json_type(raw_nodes)}")
        else:
            for i, nd in enumerate(raw_nodes):
                node = _node_from_dict(nd, i, problems)
                if node is not None:
                    nodes.append(node)
        if problems:
            raise IRError(problems, where)
        net = cls(flow=d.get("flow", ""), nodes=nodes, output=d["output"], output_scale=scale,
                  meta=d.get("meta", {}))
        try:
            return net.validate()
        except IRError as e:
            raise IRError(e.problems, where) from None

    @classmethod
    def load(cls, path) -> "Network":
        """Read and validate a network file; every problem is reported in one :class:`IRError`.

        Unreadable files (missing, a directory, not UTF-8 text, empty, not JSON) raise an
        :class:`IRError` naming the file too; see :meth:`from_dict` for the structure checks.
        """
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except IsADirectoryError:
            raise IRError(["is a directory, not a network file (.json)"], str(path)) from None
        except FileNotFoundError:
            raise IRError(["does not exist"], str(path)) from None
        except OSError as e:
            raise IRError([f"cannot be read: {e.strerror or e}"], str(path)) from None
        except UnicodeDecodeError as e:
            raise IRError([f"is not a text (UTF-8 JSON) file: byte {e.start} is {e.object[e.start:e.start + 1]!r}"],
                          str(path)) from None
        if not text.strip():
            raise IRError(["is empty: a network file is a JSON object (spikeforge convert -o writes one)"],
                          str(path))
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise IRError([f"not valid JSON: {e}"], str(path)) from None
        except (RecursionError, ValueError) as e:     # nesting too deep; integer strings over Python's limit
            raise IRError([f"not valid JSON: {_why(e)}"], str(path)) from None
        return cls.from_dict(d, str(path))


_NETWORK_KEYS = {"format", "version", "flow", "output", "output_scale", "meta", "nodes"}
_NODE_KEYS = {"name", "op", "shape", "inputs", "params", "arrays", "origin"}
_PORT_KEYS = {"source", "index"}
_ARRAY_KEYS = {"dtype", "shape", "data"}


def _json_type(x) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(x), type(x).__name__)


def _short(x, n: int = 60) -> str:
    r = repr(x)
    return r if len(r) <= n else r[:n] + "..."


def _bad_numbers(x, path: str, out: list[str], depth: int = 0):
    """Paths of JSON numbers in ``x`` that are not finite or do not fit int64 (nesting beyond 32: one entry)."""
    if len(out) >= 3:
        return
    if depth > 32:
        out.append(f"{path}: nested more than 32 levels deep")
    elif isinstance(x, dict):
        for k, v in x.items():
            _bad_numbers(v, f"{path}.{k}", out, depth + 1)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            _bad_numbers(v, f"{path}[{i}]", out, depth + 1)
    elif isinstance(x, float) and not math.isfinite(x):
        out.append(f"{path} = {x!r} (not a finite number)")
    elif isinstance(x, int) and not isinstance(x, bool) and not _INT64.min <= x <= _INT64.max:
        out.append(f"{path} = {_short(x, 30)} (does not fit 64 bits)")


def _shape_from(value, where: str, field: str, problems: list[str]) -> tuple[int, ...] | None:
    """A shape: a list of integers >= 0 whose product is at most MAX_SIZE."""
    if not isinstance(value, list) or any(type(v) is not int for v in value):
        problems.append(f"{where}: {field} must be a list of integers, got {_json_type(value)} {_short(value)}")
        return None
    if any(v < 0 for v in value):
        problems.append(f"{where}: {field} {value} has a negative dimension")
        return None
    if len(value) > 16 or math.prod(value) > MAX_SIZE:
        problems.append(f"{where}: {field} {_short(value)} is too large (at most 16 dimensions and "
                        f"{MAX_SIZE} values)")
        return None
    return tuple(value)


def _array_to_dict(a: np.ndarray) -> dict:
    kind = "int" if np.issubdtype(a.dtype, np.integer) else "float"
    data = a.reshape(-1).tolist()
    return {"dtype": kind, "shape": list(a.shape), "data": data}


def _array_from_dict(d, where: str, problems: list[str]) -> np.ndarray | None:
    """An array from ``{"dtype": "int"|"float", "shape": [...], "data": [flat numbers]}``, or ``None``
    with a problem added (``where`` names the node and field)."""
    if not isinstance(d, dict):
        problems.append(f"{where} must be an array object {{dtype, shape, data}}, got {_json_type(d)} {_short(d)}")
        return None
    missing = [k for k in ("dtype", "shape", "data") if k not in d]
    if missing:
        problems.append(f"{where}: array object is missing {', '.join(map(repr, missing))}")
        return None
    extra = sorted(set(d) - _ARRAY_KEYS, key=str)
    if extra:
        problems.append(f"{where}: array object has unknown keys {', '.join(map(repr, extra))}")
        return None
    if d["dtype"] not in ("int", "float"):
        problems.append(f"{where}: dtype must be 'int' or 'float', got {_short(d['dtype'])}")
        return None
    shape = _shape_from(d["shape"], where, "shape", problems)
    if shape is None:
        return None
    data = d["data"]
    if not isinstance(data, list):
        problems.append(f"{where}: data must be a flat list of numbers, got {_json_type(data)}")
        return None
    if len(data) != math.prod(shape):
        problems.append(f"{where}: array has {len(data)} values but shape {list(shape)} needs {math.prod(shape)}")
        return None
    try:
        a = np.array(data) if data else np.zeros(0, np.int64 if d["dtype"] == "int" else np.float64)
    except (ValueError, TypeError, OverflowError) as e:         # ragged nesting, huge integers
        problems.append(f"{where}: data must be a flat list of numbers ({_why(e)})")
        return None
    if a.ndim != 1:
        problems.append(f"{where}: data must be a flat list of numbers, got nested lists")
        return None
    if a.dtype.kind == "b" or any(type(v) is bool for v in data):
        problems.append(f"{where}: data must be a flat list of numbers, got booleans")
        return None
    if a.dtype.kind not in "iuf":                                # strings, null, objects, integers over 64 bits
        bad = next((v for v in data if isinstance(v, bool) or not isinstance(v, (int, float))
                    or (isinstance(v, int) and not _INT64.min <= v <= _INT64.max)), data[0])
        problems.append(f"{where}: data must be a flat list of numbers that fit 64 bits, got {_short(bad, 30)}")
        return None
    if d["dtype"] == "int":
        bad = next((v for v in data if not isinstance(v, int)), None) if a.dtype.kind == "f" else None
        if a.dtype.kind == "u" or (a.dtype.kind == "f" and bad is None):   # numpy widened an integer >= 2**63
            problems.append(f"{where}: data holds integers that do not fit 64 bits")
            return None
        if a.dtype.kind == "f":
            problems.append(f"{where}: an int array holds non-integer values (e.g. {bad!r})")
            return None
        return a.astype(np.int64).reshape(shape)
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        problems.append(f"{where}: a float array holds non-finite values (NaN or infinity)")
        return None
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


def _node_from_dict(d, i: int, problems: list[str]) -> Node | None:
    """A node from its :func:`_node_to_dict` form, or ``None`` with every problem found added."""
    if not isinstance(d, dict):
        problems.append(f"node #{i}: must be an object, got {_json_type(d)} {_short(d)}")
        return None
    name = d.get("name")
    where = f"node #{i} ({name})" if isinstance(name, str) else f"node #{i}"
    before = len(problems)
    for key in sorted(set(d) - _NODE_KEYS, key=str):
        problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(_NODE_KEYS))})")
    for key in ("name", "op", "shape"):
        if key not in d:
            problems.append(f"{where}: missing {key!r}")
    for key in ("name", "op", "origin"):
        if key in d and not isinstance(d[key], str):
            problems.append(f"{where}: {key!r} must be a string, got {_json_type(d[key])} {_short(d[key])}")
    shape = _shape_from(d["shape"], where, "'shape'", problems) if "shape" in d else None
    params = d.get("params", {})
    if not isinstance(params, dict):
        problems.append(f"{where}: 'params' must be an object, got {_json_type(params)}")
    else:
        bad: list[str] = []
        _bad_numbers(params, "params", bad)
        problems += [f"{where}: {b}" for b in bad]
    ports = []
    raw_inputs = d.get("inputs", [])
    if not isinstance(raw_inputs, list):
        problems.append(f"{where}: 'inputs' must be a list of ports, got {_json_type(raw_inputs)}")
    else:
        for k, pd in enumerate(raw_inputs):
            pw = f"{where}: input {k}"
            if not isinstance(pd, dict) or not isinstance(pd.get("source"), str) or set(pd) - _PORT_KEYS:
                problems.append(f"{pw} must be an object {{source: node name, index: array or null}}, got "
                                f"{_short(pd)}")
                continue
            index = pd.get("index")
            if index is not None:
                index = _array_from_dict(index, f"{pw} index", problems)
                if index is None:
                    continue
                if index.dtype.kind != "i":
                    problems.append(f"{pw} index must be an int array")
                    continue
            ports.append(Port(pd["source"], index))
    arrays = {}
    raw_arrays = d.get("arrays", {})
    if not isinstance(raw_arrays, dict):
        problems.append(f"{where}: 'arrays' must be an object of named arrays, got {_json_type(raw_arrays)}")
    else:
        for k, v in raw_arrays.items():
            a = _array_from_dict(v, f"{where}: array {k!r}", problems)
            if a is not None:
                arrays[k] = a
    if len(problems) > before:
        return None
    return Node(name=name, op=d["op"], inputs=ports, shape=shape, params=copy.deepcopy(params), arrays=arrays,
                origin=d.get("origin", ""))
