"""The matmul tile's bit-exact event-level model: spikezip's SESA product of two spike-count traces
(``Q K^T``, ``A V``), as the RTL computes it.

A matmul tile runs one slice of a product ``P = gain * A @ B`` with ``A [rows, inner]`` (the slice's rows of
the left operand) and ``B [inner, cols]`` (the whole right operand of the slice's group). It keeps the count
traces of both operands and turns every input event into the increments of ``P`` it causes, with the
*other* operand's trace as it is at that moment:

* a left event ``a`` at ``(i, k)``: ``P[i, j] += gain * a * B[k, j]`` for every ``j``, then ``A[i, k] += a``;
* a right event ``b`` at ``(k, j)``: ``P[i, j] += gain * A[i, k] * b`` for every ``i``, then ``B[k, j] += b``.

So ``P = gain * A B`` holds after every event, whatever their order, and the increments of one step add up
to the SESA increment ``gain (a_t B_t + A_{t-1} b_t)`` of the reference (:func:`spikeforge.sw.snn.run_snn`):
the tile is a zero-delay node of ``timing="layer"``. Zero increments are skipped.

The increments go either into the tile's ST-BIF core (a product quantized by a neuron layer, e.g.
``A V -> out_quant``: neuron ``(i, j)`` is core neuron ``i * cols_padded + j``, one ``ACCUMULATE`` beat per
increment, the core stepped at ``STEP``), or, in ``graded`` mode (a product read by a unit, e.g.
``Q K^T -> softmax``), out of the tile as ``EVENT axon=i * cols_padded + j value=increment`` followed by
``STEP`` at each ``STEP``.

Axons: left ``(i << inner_bits) | k``, right ``(1 << port_bit) | (k << col_bits) | j``; an axon beyond the
program is rejected and counted. Increments and traces saturate (core: ``current_width``; graded:
``value_bits``; traces: ``trace_bits``) and are counted in ``product_overflows``. ``CLEAR`` zeroes the
traces and clears the core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .events import EventFormat, EventOp
from .neuron_tile import NeuronParams
from .fixed import check_int, signed_range

__all__ = ["MatmulTileFormat", "MatmulProgram", "MATMUL_REGISTERS", "matmul_outputs"]

#: Register addresses of a matmul tile (``TileMemory.REGISTER``), in order.
MATMUL_REGISTERS = ("rows", "inner", "cols", "gain", "graded", "b_base", "theta", "s_min", "s_max")


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


@dataclass(frozen=True)
class MatmulTileFormat:
    """The hardware of one matmul tile: at most ``rows x inner`` left and ``inner x cols`` right trace
    entries in ``trace_words`` words of ``trace_bits`` bits, ``gain_bits``-bit signed gain, ``lanes`` core
    lanes and ``core_neurons`` neurons (default: exactly ``rows x cols`` padded)."""
    rows: int
    inner: int
    cols: int
    lanes: int
    current_width: int = 12
    value_bits: int = 8
    trace_bits: int = 8
    gain_bits: int = 9
    trace_words: int | None = None
    core_neurons: int | None = None

    def __post_init__(self):
        for name in ("rows", "inner", "cols"):
            check_int(name, getattr(self, name), minimum=1, maximum=1 << 12)
        check_int("lanes", self.lanes, minimum=1, maximum=64)
        check_int("current_width", self.current_width, minimum=2, maximum=32)
        check_int("value_bits", self.value_bits, minimum=2, maximum=32)
        check_int("trace_bits", self.trace_bits, minimum=2, maximum=24)
        check_int("gain_bits", self.gain_bits, minimum=2, maximum=24)
        if self.trace_words is not None:
            check_int("trace_words", self.trace_words, minimum=2, maximum=1 << 24)
        if self.core_neurons is not None:
            check_int("core_neurons", self.core_neurons, minimum=self.lanes, maximum=1 << 20)
            if self.core_neurons % self.lanes:
                raise ValueError(f"core_neurons={self.core_neurons} is not a multiple of lanes={self.lanes}")

    def config_format(self, model):
        """The narrowest configuration write that loads this tile (registers only)."""
        from .program import ConfigFormat
        return ConfigFormat(_bits(len(MATMUL_REGISTERS)), max(model.v_width, self.gain_bits, _bits(self.words + 1) + 1,
                                                              _bits(max(self.rows, self.inner, self.cols) + 1) + 1))

    @property
    def cols_padded(self) -> int:
        return -(-self.cols // self.lanes) * self.lanes

    @property
    def neurons(self) -> int:
        return self.core_neurons if self.core_neurons is not None else self.rows * self.cols_padded

    @property
    def words(self) -> int:
        return self.trace_words if self.trace_words is not None else self.inner * (self.rows + self.cols)

    @property
    def inner_bits(self) -> int:
        return _bits(self.inner)

    @property
    def col_bits(self) -> int:
        return _bits(self.cols)

    @property
    def port_bit(self) -> int:
        return max(_bits(self.rows) + self.inner_bits, self.inner_bits + self.col_bits)

    def event_format(self, tile_bits: int = 1) -> EventFormat:
        return EventFormat(tile_bits, max(self.port_bit + 1, _bits(self.neurons)), self.value_bits)

    def left_axon(self, i, k):
        return (np.asarray(i, dtype=np.int64) << self.inner_bits) | np.asarray(k, dtype=np.int64)

    def right_axon(self, k, j):
        return ((1 << self.port_bit) | (np.asarray(k, dtype=np.int64) << self.col_bits)
                | np.asarray(j, dtype=np.int64))


@dataclass(frozen=True, eq=False)
class MatmulProgram(NeuronParams):
    """What one slice loads into a matmul tile: the product's ``rows x inner`` by ``inner x cols`` shape,
    its ``gain``, ``graded`` (increments leave the tile as events) or the quant neurons' ST-BIF
    parameters."""
    rows: int
    inner: int
    cols: int
    gain: int = 1
    graded: bool = False
    theta: int = 1
    s_min: int = 0
    s_max: int = 0

    def __post_init__(self):
        for name in ("rows", "inner", "cols"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("theta", self.theta, minimum=1)
        check_int("gain", self.gain)

    def groups(self, lanes: int) -> int:
        return -(-self.cols // lanes)

    def neuron(self, i, j, lanes: int):
        return np.asarray(i, dtype=np.int64) * (self.groups(lanes) * lanes) + np.asarray(j, dtype=np.int64)

    def check(self, fmt: MatmulTileFormat, model) -> None:
        P = fmt.lanes
        need = [("rows", self.rows, fmt.rows), ("inner", self.inner, fmt.inner), ("cols", self.cols, fmt.cols),
                ("trace words (inner x (rows + cols))", self.inner * (self.rows + self.cols), fmt.words),
                ("neurons (rows x cols padded to lanes)", self.rows * self.groups(P) * P, fmt.neurons)]
        for what, n, limit in need:
            if n > limit:
                raise ValueError(f"the program needs {what} = {n}, the tile has {limit}")
        lo, hi = signed_range(fmt.gain_bits)
        if not lo <= self.gain <= hi:
            raise ValueError(f"gain={self.gain} exceeds the tile's {fmt.gain_bits}-bit gain [{lo}, {hi}]")
        self.check_neuron_params(model)

    def registers(self, lanes: int) -> dict[str, int]:
        return {"rows": self.rows, "inner": self.inner, "cols": self.cols, "gain": self.gain,
                "graded": int(self.graded), "b_base": self.rows * self.inner, "theta": self.theta,
                "s_min": self.s_min, "s_max": self.s_max}

    def writes(self, fmt: MatmulTileFormat, model) -> list[tuple[int, int, int]]:
        """The configuration writes (registers only: the traces start at 0 after ``CLEAR``)."""
        from .program import TileMemory
        self.check(fmt, model)
        regs = self.registers(fmt.lanes)
        widths = {"gain": fmt.gain_bits, "s_min": model.s_width, "s_max": model.s_width}
        return [(TileMemory.REGISTER, i, int(regs[n]) & ((1 << widths[n]) - 1) if n in widths else int(regs[n]))
                for i, n in enumerate(MATMUL_REGISTERS)]


def matmul_outputs(fmt: MatmulTileFormat, prog: MatmulProgram, events: np.ndarray):
    """The increments the tile issues for the input ``events`` (an :attr:`EventFormat.dtype` array in arrival
    order, from a cleared state), in the RTL's order, as ``[E, 3]`` rows (step, neuron, increment) — core
    inputs, or in graded mode the output events — plus the counts ``{"rejected", "product_overflows",
    "steps"}``."""
    ev = np.atleast_1d(events)
    if np.any(ev["op"] == EventOp.CLEAR):
        raise ValueError("matmul_outputs models one run from a cleared state: give events without CLEAR")
    R, K, C, P = prog.rows, prog.inner, prog.cols, fmt.lanes
    A = np.zeros((R, K), np.int64)
    B = np.zeros((K, C), np.int64)
    tlo, thi = signed_range(fmt.trace_bits)
    lo, hi = signed_range(fmt.value_bits if prog.graded else fmt.current_width)
    kb, cb, pb = fmt.inner_bits, fmt.col_bits, fmt.port_bit
    rejected = overflows = 0
    out, step = [], 0
    for e in ev:
        if e["op"] == EventOp.STEP:
            step += 1
            continue
        if e["op"] != EventOp.EVENT:
            continue
        axon, v = int(e["axon"]), int(e["value"])
        if axon >> pb:
            k, j = (axon >> cb) & ((1 << kb) - 1), axon & ((1 << cb) - 1)
            if (axon >> pb) != 1 or (axon >> (cb + kb)) & ((1 << (pb - cb - kb)) - 1) or k >= K or j >= C:
                rejected += 1
                continue
            inc = prog.gain * A[:, k] * v
            rows, cols = np.arange(R), np.full(R, j)
            t = B[k, j] + v
            overflows += int(t < tlo or t > thi)
            B[k, j] = min(max(t, tlo), thi)
        else:
            i, k = axon >> kb, axon & ((1 << kb) - 1)
            if i >= R or k >= K:
                rejected += 1
                continue
            inc = prog.gain * B[k, :] * v
            rows, cols = np.full(C, i), np.arange(C)
            t = A[i, k] + v
            overflows += int(t < tlo or t > thi)
            A[i, k] = min(max(t, tlo), thi)
        nz = inc != 0
        sat = np.clip(inc[nz], lo, hi)
        overflows += int((sat != inc[nz]).sum())
        out.append(np.stack([np.full(int(nz.sum()), step), prog.neuron(rows[nz], cols[nz], P), sat], 1))
    rows = np.concatenate(out).astype(np.int64) if out else np.zeros((0, 3), np.int64)
    return rows, {"rejected": rejected, "product_overflows": overflows, "steps": step}
