"""The compiler's images pass: a placed plan -> the program the accelerator loads.

For every neuron-tile slice: its :class:`~spikeforge.sw.neuron_tile.TileProgram` (geometry, the slice's
weight rows ``W[c0:c1]``, bias, ST-BIF parameters, readout mode) and its routing table: for each of its
core neurons the list of destinations ``(tile, axon)`` — every consumer slice input that reads it,
followed through ``add`` / ``sum`` / layout nodes (:func:`~spikeforge.sw.compile.plan._producers`);
an axon is ``(token - row0) << k_bits | k``. The network input gets the same table (input value ->
destinations), which the host uses to turn an input into ``EVENT`` commands (one per nonzero count
and destination, at step 0). Everything is built from whole index arrays (no loop per synapse).

A network the images cannot express fails with :class:`~spikeforge.sw.compile.plan.DoesNotFitError`
naming the layer: a neuron's fan-out over ``max_fanout``, a tile's routing table over ``route_words``,
a layer whose neuron widths exceed the tiles', tile kinds the accelerator does not have yet.

A crnn ``rnn`` layer becomes a recurrent program (:class:`~spikeforge.sw.neuron_tile.TileProgram` with a
window): its input axons are ``(element, input)`` for every element (the tile buffers them), and the
compiler closes its loop with routes from element ``e``'s spikes to axons ``(e + 1, inputs + hidden)``
of every slice of the layer; its output index is ``element x width + neuron``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..accelerator import AcceleratorFormat, CmdOp
from ..fixed import check_int
from ..ir import Network
from ..matmul_tile import MatmulProgram
from ..neuron_tile import TileProgram
from ..unit_tile import UnitProgram
from ..units import unit_constants
from ..neurons import model_from_dict
from ..program import TileMemory, pack_fields
from .plan import DoesNotFitError, Plan, _producers

__all__ = ["Images", "TileImage", "build_images"]


@dataclass(eq=False)
class TileImage:
    """One tile's program and routing table; ``tile`` is the accelerator's tile index (neuron tiles first,
    then matmul, then unit tiles), ``kind`` its kind; ``layer``, ``row0``, ``col0``, ``width``: where its
    neurons sit in the layer (core neuron ``(r - row0) * width + (c - col0)``, ``width`` = the slice's
    columns padded to whole lane groups)."""
    tile: int
    layer: str
    row0: int
    col0: int
    program: object              # TileProgram | MatmulProgram | UnitProgram
    pointer: np.ndarray          # [N, 2] (start, count)
    route: np.ndarray            # [E, 2] (tile, axon)
    kind: str = "neuron"
    width: int = 0

    @property
    def readout(self) -> bool:
        return bool(getattr(self.program, "readout", False))


@dataclass(eq=False)
class Images:
    """The whole program: per-tile images, the input table and the layer map."""
    fmt: AcceleratorFormat
    tiles: list[TileImage]
    input_index: np.ndarray      # [E] input value index, sorted
    input_route: np.ndarray      # [E, 2] (tile, axon)
    layer_cols: dict = field(default_factory=dict)     # layer -> cols (to flatten (row, col))
    output: str = ""

    def writes(self) -> np.ndarray:
        """Every configuration write as ``WRITE`` command fields ``[W, 4]`` (tile, mem, addr, data) —
        ``data`` as Python ints (object array)."""
        f, rows = self.fmt, []
        pl, rl = f.pointer_widths, f.route_widths
        for im in self.tiles:
            for mem, addr, data in im.program.writes(f.tile_format(im.kind), f.model):
                rows.append((im.tile, int(mem), addr, data))
            if len(im.route):
                used = np.nonzero(im.pointer[:, 1])[0]
                for a, d in zip(used, pack_fields([im.pointer[used, 0], im.pointer[used, 1]], pl)):
                    rows.append((im.tile, int(TileMemory.POINTER), int(a), int(d)))
                for a, d in enumerate(pack_fields([im.route[:, 0], im.route[:, 1]], rl)):
                    rows.append((im.tile, int(TileMemory.ROUTE), a, int(d)))
        out = np.empty((len(rows), 4), dtype=object)
        out[:] = rows
        return out

    def input_events(self, counts: np.ndarray) -> np.ndarray:
        """``EVENT`` commands ``[E, 3]`` (tile, axon, value) for one sample's input ``counts [size]``."""
        c = np.asarray(counts, dtype=np.int64).reshape(-1)[self.input_index]
        keep = c != 0
        return np.stack([self.input_route[keep, 0], self.input_route[keep, 1], c[keep]], 1)

    def image(self, tile: int) -> TileImage:
        return next(im for im in self.tiles if im.tile == tile)

    def locate(self, tile: int, neuron) -> tuple[str, np.ndarray]:
        """Layer name and flat layer index of output indices ``neuron`` of ``tile`` (a recurrent layer's:
        its hidden neuron; the element is the step's window)."""
        im = self.image(tile)
        r, c = np.asarray(neuron) // im.width, np.asarray(neuron) % im.width
        if getattr(im.program, "window", 0):
            return im.layer, im.col0 + c
        return im.layer, (im.row0 + r) * self.layer_cols[im.layer] + im.col0 + c


def _check_widths(L, node, fmt: AcceleratorFormat):
    model = model_from_dict(node.params["model"])
    if model.kind != "stbif" and not (model.kind == "bif" and L.op == "rnn"):    # a window = a recurrent program
        raise DoesNotFitError(f"layer {L.name!r}: {model.kind} neurons; the accelerator's tiles run ST-BIF")
    problems = []
    if model.v_width > fmt.v_width:
        problems.append(f"a {model.v_width}-bit potential (the tiles have {fmt.v_width}: raise v_width)")
    if model.current_width > fmt.current_width:
        problems.append(f"{model.current_width}-bit currents (the tiles have {fmt.current_width}: raise current_width)")
    lo, hi = -(1 << (fmt.tracer_bits - 1)), (1 << (fmt.tracer_bits - 1)) - 1
    if model.s_min < lo or model.s_max > hi:
        problems.append(f"tracer bounds [{model.s_min}, {model.s_max}] (the tiles hold [{lo}, {hi}]: raise tracer_bits)")
    if problems:
        raise DoesNotFitError(f"layer {L.name!r} needs " + "; ".join(problems))
    return model


def _bound(net: Network, layer_of: dict, producer: str) -> int:
    """The largest magnitude a producer's accumulated output can reach: a neuron layer's tracer bound, the
    input's count range, a graded product's ``|gain| K max|A| max|B|``."""
    if producer == "input":
        p = net.input.params
        return max(abs(int(p["low"])), abs(int(p["high"])))
    L = layer_of[producer]
    if L.kind == "matmul" and L.graded:
        front = net[L.front]
        a, b = (max(_bound(net, layer_of, src) for src, _ in _producers(net, front, k, layer_of)) for k in (0, 1))
        return abs(int(front.params["gain"])) * L.fan_in * a * b
    model = model_from_dict(net[L.name].params["model"])
    return max(abs(model.s_min), abs(model.s_max))


def _fits(what: str, bound: int, bits: int, layer: str, knob: str):
    hi = (1 << (bits - 1)) - 1
    if bound > hi:
        raise DoesNotFitError(f"layer {layer!r}: {what} can reach {bound}, over the {bits}-bit range (up to {hi}): "
                              f"raise {knob}")


def _program(net: Network, L, s, fmt: AcceleratorFormat, layer_of: dict):
    """The program of slice ``s`` of tile layer ``L`` and its padded width."""
    P = fmt.lanes
    front = net[L.front]
    if L.op == "rnn":
        return _recurrent_program(net, L, s, fmt, layer_of)
    if L.kind == "neuron":
        w, b = front.arrays["weight"], front.arrays.get("bias")
        if L.readout:
            theta, s_min, s_max = 1, 0, 0
        else:
            model = _check_widths(L, net[L.name], fmt)
            theta, s_min, s_max = model.theta, model.s_min, model.s_max
        prog = TileProgram(s.row1 - s.row0, s.col1 - s.col0, L.fan_in, w[s.col0:s.col1],
                           None if b is None else b[s.row0:s.row1, s.col0:s.col1], theta, s_min, s_max,
                           readout=L.readout)
        return prog, prog.groups(P) * P
    graded = L.kind == "matmul" and L.graded
    if L.kind == "unit" and L.graded:
        raise DoesNotFitError(f"layer {L.name!r} ({L.op}): a unit's output must be quantized by a neuron layer "
                              "(the unit tile holds its quant neurons)")
    theta, s_min, s_max = (1, 0, 0) if graded else (lambda m: (m.theta, m.s_min, m.s_max))(
        _check_widths(L, net[L.name], fmt))
    if L.kind == "matmul":
        gain = int(front.params["gain"])
        a, b = (max(_bound(net, layer_of, src) for src, _ in _producers(net, front, k, layer_of)) for k in (0, 1))
        _fits("a count trace", max(a, b), fmt.trace_bits, L.name, "trace_bits")
        _fits("the gain", abs(gain), fmt.gain_bits, L.name, "gain_bits")
        _fits("an increment gain x trace", abs(gain) * max(a, b), fmt.value_bits if graded else fmt.current_width,
              L.name, "value_bits" if graded else "current_width")
        prog = MatmulProgram(s.row1 - s.row0, L.fan_in, L.cols, gain, graded, theta, s_min, s_max)
        return prog, prog.groups(P) * P
    if L.cols > fmt.unit_width:
        raise DoesNotFitError(f"layer {L.name!r} ({L.op}): rows of {L.cols} values, a unit tile takes rows of up to "
                              f"{fmt.unit_width}: raise unit_width")
    bound = sum(_bound(net, layer_of, src) * (idx.shape[-1] if idx.ndim > 2 else 1)
                for src, idx in _producers(net, front, 0, layer_of))
    _fits("a unit's input total", bound, fmt.total_bits, L.name, "total_bits")
    prog = UnitProgram(s.row1 - s.row0, L.cols, unit_constants(front), theta, s_min, s_max)
    return prog, prog.groups(P) * P


def _recurrent_program(net: Network, L, s, fmt: AcceleratorFormat, layer_of: dict):
    """A crnn ``rnn`` layer's slice as a recurrent neuron-tile program: fan-in = the element's inputs, then
    the previous element's hidden spike counts (weights ``[Wx | Wh]`` of the slice's columns)."""
    node = net[L.name]
    if node.params["recurrent"] != "tracer":
        raise DoesNotFitError(f"layer {L.name!r} (rnn, recurrent={node.params['recurrent']!r}): the recurrent tile adds "
                              "the previous element's spikes summed at the window's start; convert with "
                              "recurrent='tracer' (the default)")
    model = _check_widths(L, node, fmt)
    bound = max([abs(model.s_min), abs(model.s_max)] +
                [_bound(net, layer_of, src) for src, _ in _producers(net, node, 0, layer_of)])
    _fits("a buffered input (input count or a window's spike count)", bound, fmt.value_bits, L.name, "value_bits")
    w = np.concatenate([node.arrays["wx"], node.arrays["wh"]], 1)[s.col0:s.col1]
    b = node.arrays.get("bias")
    prog = TileProgram(1, s.col1 - s.col0, L.fan_in, w,
                       None if b is None else b[s.col0:s.col1].reshape(1, -1), model.theta, model.s_min, model.s_max,
                       window=model.window, elements=L.elements)
    return prog, prog.groups(fmt.lanes) * fmt.lanes


def _recurrent_routes(L, slices, gtile: dict, widths: dict, fmt: AcceleratorFormat):
    """The routes that close a recurrent layer's loop: element ``e``'s spike of hidden neuron ``c`` (on the
    slice that holds ``c``) to every slice's axon ``(e + 1, inputs + c)``, for ``e < elements - 1``;
    ``(source tile, source neuron, destination tile, axon)`` arrays."""
    inputs = L.fan_in - L.cols                # fan-in: the element's inputs, then the H hidden neurons
    e = np.arange(L.elements - 1)
    out = [[], [], [], []]
    for ps in slices:
        c = np.arange(ps.col0, ps.col1)
        neuron = (e[:, None] * widths[gtile[id(ps)]] + (c - ps.col0)[None, :]).reshape(-1)
        axon = (((e[:, None] + 1) << fmt.tile.k_bits) | (inputs + c)[None, :]).reshape(-1)
        for s in slices:
            out[0].append(np.full(len(neuron), gtile[id(ps)])), out[1].append(neuron)
            out[2].append(np.full(len(neuron), gtile[id(s)])), out[3].append(axon)
    return out


def _axons(L, s, fmt: AcceleratorFormat, k: int, index: np.ndarray):
    """``(positions of the slice's inputs in index, their flat source index, their axons)`` for port ``k``."""
    if L.op == "rnn":                    # every element's inputs, buffered: axon (element, input)
        pos = np.nonzero(index >= 0)
        return index[pos], (pos[0].astype(np.int64) << fmt.tile.k_bits) | pos[1].astype(np.int64)
    if L.kind == "neuron":
        sub = index[s.row0:s.row1]
        pos = np.nonzero(sub >= 0)
        return sub[pos], (pos[0].astype(np.int64) << fmt.tile.k_bits) | pos[1].astype(np.int64)
    if L.kind == "unit":
        sub = index[s.row0:s.row1]
        pos = np.nonzero(sub >= 0)
        return sub[pos], fmt.unit_tile.axon(pos[0], pos[1])
    rows = L.rows // L.groups
    g, i0 = divmod(s.row0, rows)
    mf = fmt.matmul_tile
    if k == 0:
        sub = index[g, i0:i0 + s.row1 - s.row0]
        pos = np.nonzero(sub >= 0)
        return sub[pos], mf.left_axon(pos[0], pos[1])
    sub = index[g]
    pos = np.nonzero(sub >= 0)
    return sub[pos], mf.right_axon(pos[0], pos[1])


def build_images(net: Network, plan: Plan, fmt: AcceleratorFormat | None = None) -> Images:
    """The program of ``plan`` (compiled from ``net``) for the accelerator ``fmt`` (default: the plan's
    spec)."""
    fmt = fmt or AcceleratorFormat.from_spec(plan.spec)
    layer_of = {L.name: L for L in plan.layers}
    by_layer: dict[str, list] = {}
    for s in plan.slices:
        by_layer.setdefault(s.layer, []).append(s)
    for kind in ("neuron", "matmul", "unit"):
        n = plan.tiles_used(kind)
        if n > getattr(fmt, f"{kind}_tiles"):
            raise DoesNotFitError(f"the plan uses {n} {kind} tiles, the accelerator has {getattr(fmt, f'{kind}_tiles')}")
    gtile = {id(s): fmt.first_tile(s.kind) + s.tile for s in plan.slices}
    # -- tile programs ---------------------------------------------------------------------------------------
    programs, widths = {}, {}
    for L in plan.layers:
        for s in by_layer[L.name]:
            prog, width = _program(net, L, s, fmt, layer_of)
            try:
                prog.check(fmt.tile_format(L.kind), fmt.model)
            except ValueError as e:
                raise DoesNotFitError(f"layer {L.name!r} slice on {L.kind} tile {s.tile}: {e}") from None
            programs[gtile[id(s)]], widths[gtile[id(s)]] = prog, width
    # -- routes: every (producer neuron -> consumer tile, axon) ------------------------------------------------
    src_tile, src_neuron, dst_tile, dst_axon = [], [], [], []
    in_index, in_tile, in_axon = [], [], []
    for L in plan.layers:
        front = net[L.front]
        for k in (range(len(front.inputs)) if L.kind == "matmul" else [0]):
            for producer, index in _producers(net, front, k, layer_of):
                for s in by_layer[L.name]:
                    flat, axon = _axons(L, s, fmt, k, index)
                    t = gtile[id(s)]
                    if producer == "input":
                        in_index.append(flat), in_tile.append(np.full(len(flat), t)), in_axon.append(axon)
                        continue
                    src = layer_of[producer]
                    r, c = flat // src.cols, flat % src.cols
                    # an rnn's output index is element x H + hidden neuron: the element picks the tile's
                    # output indices (element x width), not a row of slices
                    element, r = (r, 0 * r) if src.op == "rnn" else (0 * r, r)
                    for ps in by_layer[producer]:
                        sel = (r >= ps.row0) & (r < ps.row1) & (c >= ps.col0) & (c < ps.col1)
                        pt = gtile[id(ps)]
                        src_tile.append(np.full(int(sel.sum()), pt))
                        src_neuron.append((element[sel] + r[sel] - ps.row0) * widths[pt] + (c[sel] - ps.col0))
                        dst_tile.append(np.full(int(sel.sum()), t)), dst_axon.append(axon[sel])
        if L.op == "rnn":
            for acc, part in zip((src_tile, src_neuron, dst_tile, dst_axon),
                                 _recurrent_routes(L, by_layer[L.name], gtile, widths, fmt)):
                acc.extend(part)
    cat = lambda xs: np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, np.int64)   # noqa: E731
    src_tile, src_neuron, dst_tile, dst_axon = map(cat, (src_tile, src_neuron, dst_tile, dst_axon))
    tiles = []
    for s in plan.slices:
        t = gtile[id(s)]
        mine = src_tile == t
        n, order = src_neuron[mine], np.argsort(src_neuron[mine], kind="stable")
        n, dt, da = n[order], dst_tile[mine][order], dst_axon[mine][order]
        count = np.bincount(n, minlength=fmt.neurons) if len(n) else np.zeros(fmt.neurons, np.int64)
        if count.max(initial=0) > fmt.max_fanout:
            worst = int(np.argmax(count))
            raise DoesNotFitError(f"layer {s.layer!r} ({s.kind} tile {s.tile}): neuron {worst} feeds "
                                  f"{int(count[worst])} destinations, a routing table allows {fmt.max_fanout}: "
                                  "raise max_fanout")
        if len(n) > fmt.route_words:
            raise DoesNotFitError(f"layer {s.layer!r} ({s.kind} tile {s.tile}) needs {len(n)} routing-table entries, "
                                  f"a tile has {fmt.route_words}: raise route_words or use smaller slices")
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        tiles.append(TileImage(t, s.layer, s.row0, s.col0, programs[t], np.stack([start, count], 1),
                               np.stack([dt, da], 1), s.kind, widths[t]))
    tiles.sort(key=lambda im: im.tile)
    ii, it, ia = map(cat, (in_index, in_tile, in_axon))
    order = np.argsort(ii, kind="stable")
    return Images(fmt, tiles, ii[order], np.stack([it[order], ia[order]], 1),
                  {L.name: L.cols for L in plan.layers}, net.output)


def host_commands(images: Images, counts, *, steps: int, until_quiet: bool = True) -> list[dict]:
    """The commands of one inference after the program is loaded: ``CLEAR``, the input events, ``RUN``,
    then ``READ`` of every group of the readout tiles. ``steps`` (the most the run may take) must fit the
    accelerator's step counter."""
    check_int("steps", steps, minimum=1, maximum=(1 << images.fmt.step_bits) - 1)
    cmds = [{"op": CmdOp.CLEAR}]
    cmds += [{"op": CmdOp.EVENT, "tile": int(t), "addr": int(a), "data": int(v)}
             for t, a, v in images.input_events(counts)]
    cmds.append({"op": CmdOp.RUN, "data": steps, "mem": int(until_quiet)})
    for im in images.tiles:
        if im.readout:
            groups = im.program.tokens * im.program.groups(images.fmt.lanes)
            cmds += [{"op": CmdOp.READ, "tile": im.tile, "addr": g} for g in range(groups)]
    return cmds
