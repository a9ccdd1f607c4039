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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..accelerator import AcceleratorFormat, CmdOp
from ..fixed import check_int
from ..ir import Network
from ..neuron_tile import TileProgram
from ..neurons import model_from_dict
from ..program import TileMemory, pack_fields
from .plan import DoesNotFitError, Plan, _producers

__all__ = ["Images", "TileImage", "build_images"]


@dataclass(eq=False)
class TileImage:
    """One tile's program and routing table; ``layer``, ``row0``, ``col0``: where its neurons sit in the
    layer (core neuron ``(r - row0) * groups * lanes + (c - col0)``)."""
    tile: int
    layer: str
    row0: int
    col0: int
    program: TileProgram
    pointer: np.ndarray          # [N, 2] (start, count)
    route: np.ndarray            # [E, 2] (tile, axon)


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
            for mem, addr, data in im.program.writes(f.tile, f.model):
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

    def locate(self, tile: int, neuron) -> tuple[str, np.ndarray]:
        """Layer name and flat layer index of core neurons ``neuron`` of ``tile``."""
        im = self.tiles[tile]
        P = self.fmt.lanes
        width = im.program.groups(P) * P
        r, c = np.asarray(neuron) // width, np.asarray(neuron) % width
        return im.layer, (im.row0 + r) * self.layer_cols[im.layer] + im.col0 + c


def _check_widths(L, node, fmt: AcceleratorFormat):
    model = model_from_dict(node.params["model"])
    if model.kind != "stbif":
        raise DoesNotFitError(f"layer {L.name!r}: {model.kind} neurons; the accelerator's neuron tiles run ST-BIF")
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


def build_images(net: Network, plan: Plan, fmt: AcceleratorFormat | None = None) -> Images:
    """The program of ``plan`` (compiled from ``net``) for the accelerator ``fmt`` (default: the plan's
    spec)."""
    other = [L for L in plan.layers if L.kind != "neuron" or L.op != "linear"]
    if other:
        raise DoesNotFitError("the accelerator runs linear + ST-BIF layers on neuron tiles so far; no tile yet for "
                              + ", ".join(f"{L.name!r} ({L.op})" for L in other))
    fmt = fmt or AcceleratorFormat.from_spec(plan.spec)
    tfmt = fmt.tile
    P, kb = fmt.lanes, tfmt.k_bits
    layer_of = {L.name: L for L in plan.layers}
    slices = [s for s in plan.slices if s.kind == "neuron"]
    by_layer: dict[str, list] = {}
    for s in slices:
        by_layer.setdefault(s.layer, []).append(s)
    if len(slices) > fmt.tiles:
        raise DoesNotFitError(f"the plan uses {len(slices)} neuron tiles, the accelerator has {fmt.tiles}")
    # -- tile programs ---------------------------------------------------------------------------------------
    programs = {}
    for L in plan.layers:
        lin = net[L.front]
        w, b = lin.arrays["weight"], lin.arrays.get("bias")
        if L.readout:
            theta, s_min, s_max = 1, 0, 0
        else:
            model = _check_widths(L, net[L.name], fmt)
            theta, s_min, s_max = model.theta, model.s_min, model.s_max
        for s in by_layer[L.name]:
            prog = TileProgram(s.row1 - s.row0, s.col1 - s.col0, L.fan_in, w[s.col0:s.col1],
                               None if b is None else b[s.row0:s.row1, s.col0:s.col1], theta, s_min, s_max, readout=L.readout)
            try:
                prog.check(tfmt, fmt.model)
            except ValueError as e:
                raise DoesNotFitError(f"layer {L.name!r} slice on tile {s.tile}: {e}") from None
            programs[s.tile] = prog
    # -- routes: every (producer neuron -> consumer tile, axon) ------------------------------------------------
    src_tile, src_neuron, dst_tile, dst_axon = [], [], [], []
    in_index, in_tile, in_axon = [], [], []
    for L in plan.layers:
        front = net[L.front]
        for producer, index in _producers(net, front, 0, layer_of):
            for s in by_layer[L.name]:
                sub = index[s.row0:s.row1]
                pos = np.nonzero(sub >= 0)
                flat = sub[pos]
                axon = (pos[0].astype(np.int64) << kb) | pos[1].astype(np.int64)
                if producer == "input":
                    in_index.append(flat), in_tile.append(np.full(len(flat), s.tile)), in_axon.append(axon)
                    continue
                src = layer_of[producer]
                r, c = flat // src.cols, flat % src.cols
                for ps in by_layer[producer]:
                    sel = (r >= ps.row0) & (r < ps.row1) & (c >= ps.col0) & (c < ps.col1)
                    g = programs[ps.tile].groups(P) * P
                    src_tile.append(np.full(int(sel.sum()), ps.tile))
                    src_neuron.append((r[sel] - ps.row0) * g + (c[sel] - ps.col0))
                    dst_tile.append(np.full(int(sel.sum()), s.tile)), dst_axon.append(axon[sel])
    cat = lambda xs: np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, np.int64)   # noqa: E731
    src_tile, src_neuron, dst_tile, dst_axon = map(cat, (src_tile, src_neuron, dst_tile, dst_axon))
    tiles = []
    for s in slices:
        mine = src_tile == s.tile
        n, order = src_neuron[mine], np.argsort(src_neuron[mine], kind="stable")
        n, dt, da = n[order], dst_tile[mine][order], dst_axon[mine][order]
        count = np.bincount(n, minlength=fmt.neurons) if len(n) else np.zeros(fmt.neurons, np.int64)
        if count.max(initial=0) > fmt.max_fanout:
            worst = int(np.argmax(count))
            raise DoesNotFitError(f"layer {s.layer!r} (tile {s.tile}): neuron {worst} feeds {int(count[worst])} "
                                  f"destinations, a routing table allows {fmt.max_fanout}: raise max_fanout")
        if len(n) > fmt.route_words:
            raise DoesNotFitError(f"layer {s.layer!r} (tile {s.tile}) needs {len(n)} routing-table entries, a tile "
                                  f"has {fmt.route_words}: raise route_words or use smaller slices")
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        tiles.append(TileImage(s.tile, s.layer, s.row0, s.col0, programs[s.tile], np.stack([start, count], 1),
                               np.stack([dt, da], 1)))
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
        if im.program.readout:
            groups = im.program.tokens * im.program.groups(images.fmt.lanes)
            cmds += [{"op": CmdOp.READ, "tile": im.tile, "addr": g} for g in range(groups)]
    return cmds
