"""The compiler's first passes: legalise, partition, place, route (counts) and the plan they produce.

``compile_network(net, spec)`` runs, each pass checked before the next:

1. **legalise** — every IR node gets a tile kind or is routing only. A ``neuron`` node and the node that
   produces its current form one *tile layer*: ``linear`` -> a neuron tile (synapses + core), ``matmul``
   -> a matmul tile (SESA count traces + core), ``softmax``/``layernorm`` -> a unit tile; ``rnn`` is a
   neuron tile whose RBIF neurons are reused for every sequence element; the network's output ``linear``
   is a neuron tile in readout mode (potentials read by the host, no firing). ``input``, ``add`` and
   ``sum`` cost no tile: they are fan-in of events at the consumer (increments add). A bias becomes part
   of the initial potential (it is added once, before the first update).
2. **partition** — each tile layer is cut into slices that fit one tile: neurons <= ``spec.neurons``,
   synapse words / trace words / unit accumulators <= the tile's memory, axons <= ``spec.axons``. A linear
   applied per token keeps its weight matrix once per slice: the axon is ``(token, input channel)`` and the
   weight row addresses the token's output neurons. A unit's row is never split (``f`` needs the row).
3. **place** — slices go to tiles of their kind in graph order (one slice per tile); a network that needs
   more tiles than the spec has fails naming the kind, the need, the limit and the largest layers.
4. **route** — the gather maps are followed through ``add``/``sum``/layout to the spiking layers that feed
   each slice, and every (source neuron -> destination tile, axon) entry is counted: per source tile
   (routing-table words, checked against ``spec.route_words``) and per link.

Every pass works on whole index arrays (numpy); there is no Python loop per synapse or per neuron. A
layer that cannot fit fails in the pass that finds it with a :class:`DoesNotFitError` naming the layer,
what it needs and what the target has. The result is a frozen :class:`Plan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..ir import Network, Node, gathered_shape
from .spec import TILE_KINDS, HardwareSpec

__all__ = ["compile_network", "Plan", "TileLayer", "Slice", "DoesNotFitError", "legalise"]

_ROUTING_OPS = ("input", "add", "sum")
_FRONT_ENDS = {"linear": "neuron", "matmul": "matmul", "softmax": "unit", "layernorm": "unit"}


class DoesNotFitError(ValueError):
    """The network (or one layer) does not fit the hardware spec; the message names the layer, the need
    and the limit, and what to change."""


@dataclass(frozen=True)
class TileLayer:
    """One spiking layer and the operator that feeds it, as the tiles will run it.

    ``rows`` x ``cols`` output neurons (tokens x channels; a unit: rows x row width; a matmul: (groups
    x rows) x cols); ``fan_in``: synapse rows a neuron reads (linear ``K``, rnn ``K + H``, matmul inner
    ``K``); ``weights``: integer weights stored once; ``front``: the IR node that computes the current.
    ``readout``: potentials read by the host (the network output); ``graded``: a matmul or unit whose
    output goes on as graded events (difference per step) instead of into a neuron core of its own."""
    name: str
    kind: str
    front: str
    rows: int
    cols: int
    fan_in: int
    weights: int
    readout: bool = False
    groups: int = 1
    graded: bool = False
    op: str = "linear"
    elements: int = 1            # an rnn: the sequence elements its neurons run (one window each)

    @property
    def neurons(self) -> int:
        return self.rows * self.cols

    @property
    def buffer_words(self) -> int:
        """Input-buffer words a slice needs: an rnn's elements x fan-in (each element's inputs and the
        previous element's spike counts); 0 for every other layer."""
        return self.elements * self.fan_in if self.op == "rnn" else 0


@dataclass(frozen=True)
class Slice:
    """``layer``'s rows ``[row0, row1)`` x cols ``[col0, col1)`` on tile ``tile`` of kind ``kind``;
    ``words``: memory words it uses (synapse / trace / unit accumulators); ``axons``: input lines."""
    layer: str
    kind: str
    tile: int
    row0: int
    row1: int
    col0: int
    col1: int
    words: int
    axons: int

    @property
    def neurons(self) -> int:
        return (self.row1 - self.row0) * (self.col1 - self.col0)


@dataclass(frozen=True)
class Plan:
    """The compiled network: tile layers, their slices (placed), and routing counts."""
    spec: HardwareSpec
    layers: tuple[TileLayer, ...]
    slices: tuple[Slice, ...]
    routes_per_tile: dict = field(default_factory=dict)     # (kind, tile) -> routing-table entries
    routes_per_layer: dict = field(default_factory=dict)    # layer -> entries feeding it
    links: dict = field(default_factory=dict)               # (producer layer or "input", consumer) -> entries

    def to_dict(self) -> dict:
        """JSON-ready: the spec, the layers, the placed slices and the routing counts."""
        from dataclasses import asdict
        return {"format": "spikeforge-plan", "version": 1, "spec": self.spec.to_dict(),
                "layers": [asdict(L) for L in self.layers], "slices": [asdict(s) for s in self.slices],
                "routes_per_tile": [{"kind": k, "tile": t, "entries": n} for (k, t), n in self.routes_per_tile.items()],
                "links": [{"source": a, "layer": b, "entries": n} for (a, b), n in self.links.items()]}

    def tiles_used(self, kind: str) -> int:
        return len({s.tile for s in self.slices if s.kind == kind})

    def utilisation(self) -> list[dict]:
        """One row per used tile: kind, tile, layer, neurons / N, memory words / capacity, routes."""
        cap = {"neuron": self.spec.synapse_words, "matmul": self.spec.trace_words, "unit": self.spec.unit_words}
        return [{"kind": s.kind, "tile": s.tile, "layer": s.layer, "neurons": s.neurons,
                 "neuron_use": s.neurons / self.spec.neurons, "words": s.words, "word_use": s.words / cap[s.kind],
                 "axons": s.axons, "routes": self.routes_per_tile.get((s.kind, s.tile), 0)} for s in self.slices]


# -- 1. legalise ----------------------------------------------------------------------------------------------
def legalise(net: Network) -> list[TileLayer]:
    """Tile layers of ``net`` in graph order; refuses ops no tile runs (see the module docstring)."""
    if net.flow not in ("spikezip", "crnn"):
        raise DoesNotFitError(f"the compiler maps count-coded networks (spikezip, crnn); a {net.flow} network "
                              "needs the phase-coded tiles, which are not built yet")
    consumed = {n.inputs[0].source for n in net if n.op == "neuron"}
    layers, problems = [], []
    for n in net:
        if n.op == "neuron":
            front = net[n.inputs[0].source]
            if front.op not in _FRONT_ENDS:
                problems.append(f"{n.describe()} is fed by {front.describe()}: no tile computes a current from "
                                f"a {front.op} (supported: {', '.join(_FRONT_ENDS)})")
                continue
            layers.append(_layer(net, n, front))
        elif n.op == "rnn":
            layers.append(_rnn_layer(n))
        elif n.op == "linear" and n.name == net.output:
            layers.append(_linear_layer(net, n, n, readout=True))
        elif n.op in ("matmul", "softmax", "layernorm") and n.name not in consumed:
            layers.append(_layer(net, n, n, graded=True))       # emits graded events, not spikes
        elif n.op == "linear" and n.name not in consumed:
            problems.append(f"{n.describe()}: its output is not read by a neuron layer nor is it the network "
                            "output; a linear's current must end in a neuron core")
        elif n.op not in _ROUTING_OPS and n.op not in _FRONT_ENDS:     # front ends belong to their neuron layer
            problems.append(f"{n.describe()}: op {n.op!r} has no tile yet")
    if problems:
        raise DoesNotFitError("the network cannot be mapped onto tiles:\n" + "\n".join(f"  - {p}" for p in problems))
    return layers


def _linear_layer(net: Network, name_node: Node, lin: Node, readout: bool = False) -> TileLayer:
    w = lin.arrays["weight"]
    rows, cols = lin.shape if len(lin.shape) == 2 else (1, lin.size)
    return TileLayer(name_node.name, "neuron", lin.name, rows, cols, int(w.shape[1]), int(w.size), readout,
                     op="linear")


def _layer(net: Network, n: Node, front: Node, graded: bool = False) -> TileLayer:
    if front.op == "linear":
        return _linear_layer(net, n, front)
    if front.op == "matmul":
        g, r, c = front.shape
        k = gathered_shape(front, 0, net[front.inputs[0].source].size)[2]
        return TileLayer(n.name, "matmul", front.name, g * r, c, k, 0, groups=g, graded=graded, op="matmul")
    rows, width = front.shape
    return TileLayer(n.name, "unit", front.name, rows, width, width, 0, graded=graded, op=front.op)


def _rnn_layer(n: Node) -> TileLayer:
    wx, wh = n.arrays["wx"], n.arrays["wh"]
    h = int(wh.shape[0])
    return TileLayer(n.name, "neuron", n.name, 1, h, int(wx.shape[1]) + h, int(wx.size + wh.size), op="rnn",
                     elements=int(n.shape[0]))


# -- 2. partition ---------------------------------------------------------------------------------------------
def _partition(layer: TileLayer, spec: HardwareSpec) -> list[tuple[int, int, int, int, int, int]]:
    """``(row0, row1, col0, col1, words, axons)`` of every slice of ``layer``."""
    P, N = spec.lanes, spec.neurons
    if layer.kind == "neuron":
        K = layer.fan_in
        words_per_col_group = K                         # one word of P weights per input row per lane group
        max_groups = min(spec.synapse_words // words_per_col_group, N // P)
        if max_groups < 1:
            raise DoesNotFitError(
                f"layer {layer.name!r} ({layer.front}): one slice of {P} output neurons needs {K} synapse words "
                f"(fan-in {K}), the tile's synapse memory has {spec.synapse_words}: raise synapse_words to at "
                f"least {K} or split the layer's fan-in in the model")
        if layer.op == "rnn":           # a recurrent tile buffers every element's inputs and spike counts
            if layer.buffer_words > spec.buffer_words:
                raise DoesNotFitError(
                    f"layer {layer.name!r} (rnn): {layer.elements} elements x fan-in {K} need {layer.buffer_words} "
                    f"input-buffer words, a neuron tile has {spec.buffer_words}: raise buffer_words to at least "
                    f"{layer.buffer_words}")
            # each element's spikes leave at their own output indices: elements x columns <= N
            max_groups = min(max_groups, N // (layer.elements * P))
            if max_groups < 1:
                raise DoesNotFitError(
                    f"layer {layer.name!r} (rnn): {layer.elements} elements x {P} columns need "
                    f"{layer.elements * P} output indices, a tile has {N}: raise neurons to at least "
                    f"{layer.elements * P}")
        c = min(math.ceil(layer.cols / P), max_groups) * P
        t = min(layer.rows, N // c, spec.axons // K if K <= spec.axons else 0)
        if t < 1:
            raise DoesNotFitError(
                f"layer {layer.name!r} ({layer.front}): one token needs {K} axons (fan-in {K}), a tile accepts "
                f"{spec.axons}: raise axons to at least {K}")
        out = []
        for r0 in range(0, layer.rows, t):
            for c0 in range(0, layer.cols, c):
                c1 = min(c0 + c, layer.cols)
                out.append((r0, min(r0 + t, layer.rows), c0, c1, K * math.ceil((c1 - c0) / P),
                            (min(r0 + t, layer.rows) - r0) * K))
        return out
    if layer.kind == "unit":
        W = layer.cols
        Wp = -(-W // P) * P
        if W > spec.unit_width:
            raise DoesNotFitError(
                f"layer {layer.name!r} ({layer.front}): one {layer.op} row has {W} values, a unit tile takes rows "
                f"of up to unit_width={spec.unit_width}: raise unit_width (rows are never split)")
        per_tile = min(spec.unit_words // W, N // Wp)
        if per_tile < 1:
            raise DoesNotFitError(
                f"layer {layer.name!r} ({layer.front}): one {layer.op} row of {W} values needs {W} "
                f"accumulators and {W} neurons, a unit tile has {spec.unit_words} accumulators and {N} neurons; "
                f"rows are never split")
        per_tile = min(per_tile, spec.axons // W)
        return [(r0, min(r0 + per_tile, layer.rows), 0, W, (min(r0 + per_tile, layer.rows) - r0) * W,
                 (min(r0 + per_tile, layer.rows) - r0) * W) for r0 in range(0, layer.rows, per_tile)]
    # matmul: rows of A (with their whole B) per slice; traces hold the A rows' counts and all of B
    K, C = layer.fan_in, layer.cols
    per_group_rows = layer.rows // layer.groups
    b_words = K * C
    fit_rows = min((spec.trace_words - b_words) // K if spec.trace_words > b_words else 0, N // C,
                   per_group_rows)
    if fit_rows < 1:
        raise DoesNotFitError(
            f"layer {layer.name!r} ({layer.front}): one row of the product needs {b_words + K} trace words "
            f"({K}x{C} of the right operand plus a row of {K}) and {C} neurons, a matmul tile has "
            f"{spec.trace_words} trace words and {N} neurons")
    out = []
    for g in range(layer.groups):
        base = g * per_group_rows
        for r0 in range(0, per_group_rows, fit_rows):
            r1 = min(r0 + fit_rows, per_group_rows)
            out.append((base + r0, base + r1, 0, C, b_words + (r1 - r0) * K, (r1 - r0) * K + b_words))
    return out


# -- 4. route -------------------------------------------------------------------------------------------------
def _producers(net: Network, node: Node, k: int, layer_of: dict[str, str]) -> list[tuple[str, np.ndarray]]:
    """The spiking layers (or ``"input"``) whose neurons feed input ``k`` of ``node``, as index arrays of the
    gathered shape (extra trailing axes where a ``sum`` fans several sources into one value)."""
    port = node.inputs[k]
    src = net[port.source]
    shape = gathered_shape(node, k, src.size)
    index = port.index if port.index is not None else np.arange(src.size, dtype=np.int64).reshape(shape)
    return _resolve(net, src, index, layer_of)


def _resolve(net: Network, src: Node, index: np.ndarray, layer_of) -> list[tuple[str, np.ndarray]]:
    if src.name in layer_of or src.op == "input":
        return [(src.name if src.name in layer_of else "input", index)]
    if src.op == "add":
        out = []
        for k, port in enumerate(src.inputs):
            inner = net[port.source]
            sub = port.index.reshape(-1) if port.index is not None else np.arange(inner.size, dtype=np.int64)
            composed = np.where(index >= 0, sub[np.clip(index, 0, None)], -1)
            out += _resolve(net, inner, composed, layer_of)
        return out
    if src.op == "sum":
        port = src.inputs[0]
        inner = net[port.source]
        shape = gathered_shape(src, 0, inner.size)
        sub = port.index if port.index is not None else np.arange(inner.size, dtype=np.int64).reshape(shape)
        composed = np.where((index >= 0)[..., None], sub[np.clip(index, 0, None)], -1)
        return _resolve(net, inner, composed, layer_of)
    raise DoesNotFitError(f"{src.describe()} feeds a tile but is neither a spiking layer nor routing")


def _route(net: Network, layers: list[TileLayer], slices: list[Slice], spec: HardwareSpec):
    """Routing-table entries per source tile and per consumer layer (counts; the tables are images).

    An input value read by a consumer reaches every slice that needs it: each column slice of its token
    (a linear's or unit's row), every slice of a matmul for the right operand (and one for the left)."""
    layer_of = {L.name: L for L in layers}
    by_layer: dict[str, list[Slice]] = {}
    for s in slices:
        by_layer.setdefault(s.layer, []).append(s)
    per_tile: dict[tuple[str, int], int] = {}
    per_layer: dict[str, int] = {}
    links: dict[tuple[str, str], int] = {}
    for L in layers:
        front = net[L.front]
        consumers = by_layer[L.name]
        ports = range(len(front.inputs)) if L.kind == "matmul" else [0]
        total = 0
        for k in ports:
            if L.kind == "matmul":
                copies = 1 if k == 0 else len(consumers)
            else:
                copies = len({s.col0 for s in consumers})
            for producer, index in _producers(net, front, k, layer_of):
                flat = index[index >= 0]
                total += copies * len(flat)
                links[(producer, L.name)] = links.get((producer, L.name), 0) + copies * len(flat)
                if producer == "input":
                    per_tile[("host", 0)] = per_tile.get(("host", 0), 0) + copies * len(flat)
                    continue
                src = layer_of[producer]
                neuron = flat % src.neurons           # an rnn's output is its H neurons once per element
                r, c = neuron // src.cols, neuron % src.cols
                for s in by_layer[producer]:
                    n = copies * int(((r >= s.row0) & (r < s.row1) & (c >= s.col0) & (c < s.col1)).sum())
                    if n:
                        per_tile[(s.kind, s.tile)] = per_tile.get((s.kind, s.tile), 0) + n
        if L.op == "rnn":                   # the loop: element e's spikes to every slice's axons of e + 1
            loop = 0
            for s in consumers:
                n = (L.elements - 1) * (s.col1 - s.col0) * len(consumers)
                per_tile[(s.kind, s.tile)] = per_tile.get((s.kind, s.tile), 0) + n
                loop += n
            links[(L.name, L.name)] = loop
            total += loop
        per_layer[L.name] = total
    over = [(key, n) for key, n in per_tile.items() if key[0] != "host" and n > spec.route_words]
    if over:
        (kind, tile), n = max(over, key=lambda kv: kv[1])
        layer = next(s.layer for s in slices if s.kind == kind and s.tile == tile)
        raise DoesNotFitError(f"{kind} tile {tile} (layer {layer!r}) needs {n} routing-table entries, a tile has "
                              f"{spec.route_words}: raise route_words or use more, smaller slices (fewer neurons)")
    return per_tile, per_layer, links


# -- driver ---------------------------------------------------------------------------------------------------
def compile_network(net: Network, spec: HardwareSpec) -> Plan:
    """Legalise, partition, place and route ``net`` for ``spec`` (see the module docstring)."""
    if not isinstance(spec, HardwareSpec):
        raise TypeError(f"spec must be a HardwareSpec, not {type(spec).__name__}")
    layers = legalise(net)
    parts, problems = {}, []
    for L in layers:
        try:
            parts[L.name] = _partition(L, spec)
        except DoesNotFitError as e:
            problems.append(str(e))
    if problems:
        raise DoesNotFitError(problems[0] if len(problems) == 1 else
                              f"{len(problems)} layers do not fit:\n" + "\n".join(f"  - {p}" for p in problems))
    slices, next_tile = [], {k: 0 for k in TILE_KINDS}
    for L in layers:
        for r0, r1, c0, c1, words, axons in parts[L.name]:
            slices.append(Slice(L.name, L.kind, next_tile[L.kind], r0, r1, c0, c1, words, axons))
            next_tile[L.kind] += 1
    for kind in TILE_KINDS:
        if next_tile[kind] > spec.tiles(kind):
            biggest = sorted(((len(parts[L.name]), L.name) for L in layers if L.kind == kind), reverse=True)[:3]
            names = ", ".join(f"{name} ({n} slice{'s' if n != 1 else ''})" for n, name in biggest)
            raise DoesNotFitError(f"the network needs {next_tile[kind]} {kind} tiles, the spec has "
                                  f"{spec.tiles(kind)} (largest layers: {names}): raise {kind}_tiles to "
                                  f"{next_tile[kind]} or enlarge the tiles (neurons, memories)")
    per_tile, per_layer, links = _route(net, layers, slices, spec)
    return Plan(spec, tuple(layers), tuple(slices), per_tile, per_layer, links)
