"""The function-unit tile's bit-exact event-level model: a softmax / LayerNorm unit and the ST-BIF neuron
layer that quantizes it (spikezip's ``softmax -> quant`` and ``layernorm -> quant``), as the RTL computes it.

A unit tile runs ``rows`` rows of ``width`` values of one unit. Input events accumulate the unit's input
totals; at ``STEP`` the tile evaluates the bit-exact ``f`` (:mod:`spikeforge.sw.units`) on every row whose
totals changed since the last evaluation (every row after ``CLEAR``), accumulates the difference
``f(X_t) - f(X_{t-1})`` of each output level into the quant neuron ``(row, c)`` of its core and then steps
the core, whose spikes are the tile's output. So the unit sees in step ``t`` what its producers emitted in
step ``t - 1`` and its neurons integrate the same step's difference: ``run_snn(..., timing="layer")``.

Core neuron of ``(row, c)``: ``row * width_padded + c`` (``width_padded`` = ``width`` rounded up to whole
lane groups). Input events (:class:`~spikeforge.sw.events.EventOp`):

* ``EVENT axon=(row << col_bits) | c value``: ``total[row, c] += value`` (saturating at ``total_bits``,
  counted in ``product_overflows``); an axon beyond the program's rows / width is rejected and counted.
* ``STEP``: evaluate the changed rows (ascending), one ``ACCUMULATE`` beat per lane group with a nonzero
  difference, then ``STEP`` to the core.
* ``CLEAR``: totals and levels to 0, every row marked changed, the core to its initial state.
* ``READ axon=group``: the core group's state on ``readback``.

:class:`UnitTileFormat` is the hardware (fixed at generation), :class:`UnitProgram` what one slice loads
(the unit's integer constants, the neuron parameters) through configuration writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .events import EventFormat, EventOp
from .neuron_tile import NeuronParams
from .fixed import check_int, signed_range
from .program import ConfigFormat, TileMemory, pack_fields
from .units import OUT_FRAC_BITS, SOFTMAX_FRAC_BITS, SQRT_FRAC_BITS, UnitConstants, unit_function

__all__ = ["UnitTileFormat", "UnitProgram", "UNIT_REGISTERS", "UNIT_OPS", "unit_core_inputs", "datapath_widths"]

#: Register addresses of a unit tile (``TileMemory.REGISTER``), in order.
UNIT_REGISTERS = ("op", "rows", "width", "groups", "n_min", "n_max", "exp_last", "scale", "eps", "theta", "s_min", "s_max")
#: Unit ops and their register codes.
UNIT_OPS = {"softmax": 0, "layernorm": 1}


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


@dataclass(frozen=True)
class UnitTileFormat:
    """The hardware of one unit tile: at most ``rows`` rows of ``width`` values, ``lanes`` core lanes,
    ``core_neurons`` neurons (default: exactly the rows), ``total_bits``-bit signed input totals, an exp
    table of ``exp_words`` entries, ``scale_bits``-bit constants (softmax ``A``, LayerNorm ``E``, gains and
    offsets), ``level_bits``-bit signed output levels."""
    rows: int
    width: int
    lanes: int
    current_width: int = 12
    value_bits: int = 8
    total_bits: int = 16
    exp_words: int = 1024
    scale_bits: int = 24
    level_bits: int = 6
    core_neurons: int | None = None
    total_words: int | None = None

    def __post_init__(self):
        for name, hi in (("rows", 1 << 16), ("width", 1 << 12), ("lanes", 64), ("exp_words", 1 << 16)):
            check_int(name, getattr(self, name), minimum=1, maximum=hi)
        check_int("current_width", self.current_width, minimum=2, maximum=32)
        check_int("value_bits", self.value_bits, minimum=2, maximum=32)
        check_int("total_bits", self.total_bits, minimum=2, maximum=32)
        check_int("scale_bits", self.scale_bits, minimum=2, maximum=40)
        check_int("level_bits", self.level_bits, minimum=2, maximum=16)
        if self.level_bits + 1 > self.current_width:
            raise ValueError(f"level_bits={self.level_bits}: a level difference needs {self.level_bits + 1} bits, "
                             f"more than current_width={self.current_width}")
        if self.core_neurons is not None:
            check_int("core_neurons", self.core_neurons, minimum=self.lanes, maximum=1 << 20)
            if self.core_neurons % self.lanes:
                raise ValueError(f"core_neurons={self.core_neurons} is not a multiple of lanes={self.lanes}")
        if self.total_words is not None:
            check_int("total_words", self.total_words, minimum=1, maximum=1 << 24)

    def config_format(self, model) -> ConfigFormat:
        """The narrowest configuration write that loads this tile (registers, exp table, gains)."""
        depth = max(self.exp_words, self.width, len(UNIT_REGISTERS))
        return ConfigFormat(_bits(depth), max(self.affine_word_bits, SOFTMAX_FRAC_BITS + 1, self.scale_bits,
                                              model.v_width, _bits(self.rows + 1) + 1, _bits(self.exp_words + 1) + 1,
                                              _bits(self.words + 1) + 1))

    @property
    def width_padded(self) -> int:
        return -(-self.width // self.lanes) * self.lanes

    @property
    def neurons(self) -> int:
        return self.core_neurons if self.core_neurons is not None else self.rows * self.width_padded

    @property
    def col_bits(self) -> int:
        return _bits(self.width)

    @property
    def row_bits(self) -> int:
        return _bits(self.rows)

    @property
    def words(self) -> int:
        """Total (and level) memory words (default ``rows x width``)."""
        return self.total_words if self.total_words is not None else self.rows * self.width

    @property
    def affine_word_bits(self) -> int:
        """A LayerNorm column's ``(gain, offset)`` word."""
        return 2 * self.scale_bits

    def event_format(self, tile_bits: int = 1) -> EventFormat:
        axon_bits = max(self.row_bits + self.col_bits, _bits(self.neurons))
        return EventFormat(tile_bits, axon_bits, self.value_bits)

    def axon(self, row, col):
        return (np.asarray(row, dtype=np.int64) << self.col_bits) | np.asarray(col, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class UnitProgram(NeuronParams):
    """What one slice loads into a unit tile: ``rows x width`` values of a unit with integer constants
    ``constants`` (:class:`~spikeforge.sw.units.UnitConstants` of the IR node) and the quant neurons'
    ST-BIF parameters."""
    rows: int
    width: int
    constants: UnitConstants
    theta: int = 1
    s_min: int = 0
    s_max: int = 0

    def __post_init__(self):
        check_int("rows", self.rows, minimum=1)
        check_int("width", self.width, minimum=1)
        check_int("theta", self.theta, minimum=1)
        k = self.constants
        if k.op not in UNIT_OPS:
            raise ValueError(f"unit op {k.op!r}: the unit tile computes {sorted(UNIT_OPS)}")
        if k.op == "layernorm" and (len(k.gain) != self.width or len(k.offset) != self.width):
            raise ValueError(f"LayerNorm gains/offsets have {len(k.gain)}/{len(k.offset)} entries, the row "
                             f"has {self.width}")

    @classmethod
    def from_dict(cls, d: dict) -> "UnitProgram":
        k = dict(d["constants"])
        for name in ("exp_table", "gain", "offset"):
            if k.get(name) is not None:
                k[name] = np.asarray(k[name], dtype=np.int64)
        return cls(**{**d, "constants": UnitConstants(**k)})

    def groups(self, lanes: int) -> int:
        return -(-self.width // lanes)

    def neuron(self, row, col, lanes: int):
        return np.asarray(row, dtype=np.int64) * (self.groups(lanes) * lanes) + np.asarray(col, dtype=np.int64)

    def check(self, fmt: UnitTileFormat, model) -> None:
        """Raise ``ValueError`` naming what of this program does not fit the tile ``fmt``."""
        P, k = fmt.lanes, self.constants
        need = [("rows", self.rows, fmt.rows), ("row width", self.width, fmt.width),
                ("totals (rows x width)", self.rows * self.width, fmt.words),
                ("neurons (rows x width padded to lanes)", self.rows * self.groups(P) * P, fmt.neurons)]
        if k.op == "softmax":
            need.append(("exp table entries", len(k.exp_table), fmt.exp_words))
        for what, n, limit in need:
            if n > limit:
                raise ValueError(f"the program needs {what} = {n}, the tile has {limit}")
        lo, hi = signed_range(fmt.level_bits)
        if not lo <= k.n_min <= k.n_max <= hi:
            raise ValueError(f"output levels [{k.n_min}, {k.n_max}] exceed the tile's {fmt.level_bits}-bit "
                             f"levels [{lo}, {hi}]")
        slo, shi = signed_range(fmt.scale_bits)
        consts = {"softmax scale A": [k.scale], "LayerNorm eps E": [k.eps]}
        if k.op == "layernorm":
            consts.update({"LayerNorm gains": k.gain.tolist(), "LayerNorm offsets": k.offset.tolist()})
        for what, vals in consts.items():
            if vals and (min(vals) < slo or max(vals) > shi):
                raise ValueError(f"{what} span [{min(vals)}, {max(vals)}], over the tile's {fmt.scale_bits}-bit "
                                 f"constants [{slo}, {shi}]: raise the unit tile's scale_bits")
        self.check_neuron_params(model)

    def registers(self, lanes: int) -> dict[str, int]:
        k = self.constants
        return {"op": UNIT_OPS[k.op], "rows": self.rows, "width": self.width, "groups": self.groups(lanes),
                "n_min": k.n_min, "n_max": k.n_max,
                "exp_last": len(k.exp_table) - 1 if k.op == "softmax" else 0, "scale": k.scale, "eps": k.eps,
                "theta": self.theta, "s_min": self.s_min, "s_max": self.s_max}

    def register_widths(self, fmt: UnitTileFormat, model) -> dict[str, int]:
        """Bits of each signed register (two's complement in the write)."""
        return {"n_min": fmt.level_bits, "n_max": fmt.level_bits, "scale": fmt.scale_bits, "eps": fmt.scale_bits,
                "s_min": model.s_width, "s_max": model.s_width}

    def writes(self, fmt: UnitTileFormat, model) -> list[tuple[int, int, int]]:
        """The configuration writes ``(memory, address, data)`` that load this program into ``fmt``:
        registers, the exp table (softmax: ``TileMemory.TABLE``), the columns' ``(gain, offset)``
        (LayerNorm: ``TileMemory.AFFINE``, gain in the low ``scale_bits``)."""
        self.check(fmt, model)
        regs, widths = self.registers(fmt.lanes), self.register_widths(fmt, model)
        out = [(TileMemory.REGISTER, i, int(regs[name]) & ((1 << widths[name]) - 1) if name in widths
                else int(regs[name])) for i, name in enumerate(UNIT_REGISTERS)]
        k = self.constants
        if k.op == "softmax":
            out += [(TileMemory.TABLE, a, int(v)) for a, v in enumerate(k.exp_table)]
        else:
            words = pack_fields([k.gain, k.offset], [fmt.scale_bits, fmt.scale_bits])
            out += [(TileMemory.AFFINE, a, int(d)) for a, d in enumerate(words)]
        return out


def unit_core_inputs(fmt: UnitTileFormat, prog: UnitProgram, events: np.ndarray):
    """Core input events ``[E, 3]`` (step, neuron, current) the tile issues for the input ``events`` (an
    :attr:`EventFormat.dtype` array in arrival order, steps counted by ``STEP`` markers, from a cleared
    state), in the RTL's order, plus the counts ``{"rejected", "product_overflows", "steps",
    "evaluations"}`` (``evaluations``: rows evaluated)."""
    ev = np.atleast_1d(events)
    if np.any(ev["op"] == EventOp.CLEAR):
        raise ValueError("unit_core_inputs models one run from a cleared state: give events without CLEAR")
    R, C, P = prog.rows, prog.width, fmt.lanes
    lo, hi = signed_range(fmt.total_bits)
    total = np.zeros((R, C), np.int64)
    level = np.zeros((R, C), np.int64)
    dirty = np.ones(R, bool)
    rejected = overflows = evaluations = 0
    out, step = [], 0
    cb = fmt.col_bits
    for e in ev:
        if e["op"] == EventOp.EVENT:
            r, c = int(e["axon"]) >> cb, int(e["axon"]) & ((1 << cb) - 1)
            if r >= R or c >= C:
                rejected += 1
                continue
            t = total[r, c] + int(e["value"])
            overflows += int(t < lo or t > hi)
            total[r, c] = min(max(t, lo), hi)
            dirty[r] = True
        elif e["op"] == EventOp.STEP:
            rows = np.nonzero(dirty)[0]
            evaluations += len(rows)
            if len(rows):
                new = unit_function(None, torch.from_numpy(total[rows][None]), prog.constants)[0].numpy()
                diff = new - level[rows]
                level[rows] = new
                rr, cc = np.nonzero(diff)
                out.append(np.stack([np.full(len(rr), step), prog.neuron(rows[rr], cc, P), diff[rr, cc]], 1))
            dirty[:] = False
            step += 1
    inputs = np.concatenate(out).astype(np.int64) if out else np.zeros((0, 3), np.int64)
    return inputs, {"rejected": rejected, "product_overflows": overflows, "steps": step, "evaluations": evaluations}


def datapath_widths(fmt: UnitTileFormat) -> dict[str, int]:
    """Widths of the evaluator's intermediate values such that none can overflow for any input the
    format admits (the RTL sizes its registers with these; signed values include their sign bit)."""
    T, cb, S = fmt.total_bits, _bits(fmt.width + 1), fmt.scale_bits
    F, G, Pq = SOFTMAX_FRAC_BITS, OUT_FRAC_BITS, SQRT_FRAC_BITS
    s1 = T + cb                                    # signed sum of a row
    s2 = 2 * T + cb                                # unsigned sum of squares
    var = 2 * T + 2 * cb                           # 0 <= C s2 - s1^2 <= C^2 2^(2T-2)
    rad = max(var, S) + 1 + 2 * Pq                 # (V + E) 4^P
    root = (rad + 1) // 2
    centred = T + 2 * cb + 1                       # C t - s1, signed
    esum = F + 1 + cb
    ln_num = max(centred + S + Pq, S + root) + 1
    sm_num = max(F + 1 + S, esum + G) + 1
    den = max(root, esum) + G
    return {"s1": s1, "s2": s2, "var": var + 1, "rad": rad, "root": root, "centred": centred,
            "num": max(ln_num, sm_num) + 1, "den": den, "exp": F + 1, "esum": esum}
