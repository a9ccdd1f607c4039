"""The neuron tile's bit-exact event-level model: synapse memory + neuron core, as the RTL computes it.

A neuron tile runs one slice of a linear + neuron layer (see :mod:`spikeforge.sw.compile`): ``tokens``
tokens x ``cols`` output neurons, fan-in ``fan_in``, one weight matrix ``weights [cols, fan_in]`` shared by
every token. Neuron ``(r, m)`` is core neuron ``r * cols_padded + m`` (``cols_padded``: ``cols`` rounded up
to a multiple of ``lanes``, so a token's neurons fill whole lane groups).

Two descriptions meet here: :class:`NeuronTileFormat` is the *hardware* (the largest geometry a tile
takes, its memories and widths, fixed when the RTL is generated); :class:`TileProgram` is what one
slice loads into it at run time (geometry, weights, bias, neuron parameters, readout mode) through
configuration writes (:mod:`spikeforge.sw.program`). A program with a bias adds it once, after
``CLEAR``, as one accumulation per neuron (before any input event). A readout tile (the network's
output layer) ignores ``STEP``: its neurons only accumulate, and the host reads their potentials.

Input events (:class:`~spikeforge.sw.events.EventOp`):

* ``EVENT axon value`` with ``axon = (token << k_bits) | k``: for every output neuron ``m`` of the token,
  ``current = sat(value * weights[m, k], current_width)`` is accumulated into ``(token, m)`` — in lane
  groups, in order (``ceil(cols / lanes)`` accumulate beats). An axon whose token or ``k`` is out of range
  is malformed: rejected and counted. A saturated product is counted in ``product_overflows``.
* ``STEP``: the core sweeps every neuron through its rule; the tile emits ``EVENT axon=neuron value=±1``
  for every spike (group order, then lane order), then ``STEP``.
* ``CLEAR``: initial state, step count 0, then the bias accumulations.
* ``READ axon=group``: the group's state is sent on the tile's ``readback`` stream.

:func:`tile_core_inputs` turns input events into the core events the tile issues; the core's own golden
(:func:`spikeforge.sim.core_replay.core_golden`) does the rest.

**Recurrent programs** (``window > 0``: a crnn ``rnn`` layer of BIF/RBIF neurons over ``elements``
sequence elements, one window of ``window`` steps each) run one token of ``cols`` neurons whose fan-in is
the element's inputs followed by the previous element's hidden spike counts (``weights = [Wx | Wh]``).
The tile's *input buffer* (``buffer_words`` values of ``value_bits``, cleared by ``CLEAR``) takes the
input events: ``EVENT axon=(e, k) value`` adds ``value`` to buffer word ``e * fan_in + k`` (saturating;
a saturation is counted in ``product_overflows``; ``e >= elements`` or ``k >= fan_in`` is rejected). At
the start of window ``e`` (the ``STEP`` of step ``e * window``) the tile clears the core (the BIF window
reset: ``v = theta // 2``, ``s = 0``), adds the bias, replays buffer row ``e`` as accumulations (every
nonzero word ``k``, in order, as above) and then steps the core; the other steps of the window step the
core alone, and once every element ran the tile answers ``STEP`` with a lone ``STEP``. A spike of core
neuron ``n`` in window ``e`` leaves as ``EVENT axon = e * cols_padded + n``; the compiler routes element
``e``'s spikes back to the tile's own axons ``(e + 1, inputs + col)`` (the recurrent term arrives, summed
over the window, at the next window's start: the ``recurrent="tracer"`` conversion) and the last
element's to the next layer. :func:`recurrent_core_inputs` is the model of the buffer and the replay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .events import EventFormat, EventOp
from .fixed import check_int, signed_range
from .program import TILE_REGISTERS, TileMemory, pack_fields

__all__ = ["NeuronTileFormat", "TileProgram", "NeuronParams", "tile_core_inputs", "recurrent_core_inputs",
           "MAX_WINDOW"]

#: The longest window a recurrent program may have (the width of the tile's window register).
MAX_WINDOW = (1 << 12) - 1


@dataclass(frozen=True)
class NeuronTileFormat:
    """The hardware of one neuron tile (validated): the largest ``tokens``, ``cols`` and ``fan_in`` a
    program may use, lanes and widths; ``core_neurons`` (the core's N) and ``synapse_words`` (weight
    memory depth) default to what exactly ``tokens x cols`` with ``fan_in`` needs; ``buffer_words``: the
    input buffer of recurrent programs (0: none, the tile runs feed-forward programs only)."""
    tokens: int
    cols: int
    fan_in: int
    lanes: int
    weight_bits: int = 8
    value_bits: int = 2
    current_width: int = 12
    core_neurons: int | None = None
    synapse_words: int | None = None
    buffer_words: int = 0

    def __post_init__(self):
        for name, lo in (("tokens", 1), ("cols", 1), ("fan_in", 1), ("lanes", 1)):
            check_int(name, getattr(self, name), minimum=lo, maximum=1 << 16)
        check_int("weight_bits", self.weight_bits, minimum=2, maximum=16)
        check_int("value_bits", self.value_bits, minimum=2, maximum=16)
        check_int("current_width", self.current_width, minimum=2, maximum=32)
        if self.core_neurons is not None:
            check_int("core_neurons", self.core_neurons, minimum=self.lanes, maximum=1 << 20)
            if self.core_neurons % self.lanes:
                raise ValueError(f"core_neurons={self.core_neurons} is not a multiple of lanes={self.lanes}")
        if self.synapse_words is not None:
            check_int("synapse_words", self.synapse_words, minimum=1, maximum=1 << 24)
        check_int("buffer_words", self.buffer_words, minimum=0, maximum=1 << 24)

    @property
    def groups_per_token(self) -> int:
        return -(-self.cols // self.lanes)

    @property
    def cols_padded(self) -> int:
        return self.groups_per_token * self.lanes

    @property
    def neurons(self) -> int:
        """Core neurons N (default: ``tokens x cols`` padded to whole lane groups)."""
        return self.core_neurons if self.core_neurons is not None else self.tokens * self.cols_padded

    @property
    def max_groups(self) -> int:
        """Lane groups per token a program may use."""
        return min(self.groups_per_token, self.neurons // self.lanes)

    @property
    def k_bits(self) -> int:
        return max(1, (self.fan_in - 1).bit_length())

    @property
    def token_bits(self) -> int:
        return max(1, (self.tokens - 1).bit_length())

    @property
    def words(self) -> int:
        """Synapse memory words (``lanes`` weights each)."""
        return self.synapse_words if self.synapse_words is not None else self.fan_in * self.groups_per_token

    @property
    def synapse_word_bits(self) -> int:
        return self.lanes * self.weight_bits

    @property
    def bias_word_bits(self) -> int:
        return self.lanes * self.current_width

    def event_format(self, tile_bits: int = 1) -> EventFormat:
        """Input events address ``(token, k)``; output events the core neuron: the wider of the two."""
        axon_bits = max(self.token_bits + self.k_bits, max(1, (self.neurons - 1).bit_length()))
        return EventFormat(tile_bits, axon_bits, self.value_bits)

    def axon(self, token, k):
        """The axon of input channel ``k`` of ``token``."""
        return (np.asarray(token, dtype=np.int64) << self.k_bits) | np.asarray(k, dtype=np.int64)

    def weight_image(self, weights: np.ndarray) -> np.ndarray:
        """The synapse memory: word ``k * groups + j`` holds ``weights[j*lanes + lane, k]`` per lane
        (zeros for padding), as an int64 array ``[words, lanes]``; checks the weights fit ``weight_bits``."""
        w = np.asarray(weights, dtype=np.int64)
        if w.shape != (self.cols, self.fan_in):
            raise ValueError(f"weights have shape {w.shape}, the tile needs [cols, fan_in] = "
                             f"[{self.cols}, {self.fan_in}]")
        lo, hi = signed_range(self.weight_bits)
        if len(w) and (w.min() < lo or w.max() > hi):
            raise ValueError(f"weights span [{w.min()}, {w.max()}], over the {self.weight_bits}-bit range [{lo}, {hi}]")
        padded = np.zeros((self.cols_padded, self.fan_in), np.int64)
        padded[:self.cols] = w
        # [groups, lanes, K] -> [K, groups, lanes]
        return padded.reshape(self.groups_per_token, self.lanes, self.fan_in).transpose(2, 0, 1).reshape(
            self.words, self.lanes)


class NeuronParams:
    """The ST-BIF parameters ``theta``, ``s_min``, ``s_max`` a tile program sets on its core (every tile
    kind's program has them): checked against the tile's model and applied to it. Every tile program
    (a dataclass) also round-trips through a JSON-ready dict: :meth:`to_dict` / :meth:`from_dict`."""

    def to_dict(self) -> dict:
        """The program's fields, arrays as nested lists (nested dataclasses as dicts)."""
        from dataclasses import fields, is_dataclass

        def plain(v):
            if isinstance(v, np.ndarray):
                return v.tolist()
            if is_dataclass(v):
                return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
            return v
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**d)

    def check_neuron_params(self, model) -> None:
        if self.theta >= 1 << (model.v_width - 1):
            raise ValueError(f"theta={self.theta} does not fit the tile's {model.v_width}-bit potential")
        slo, shi = signed_range(model.s_width)
        if not slo <= self.s_min <= self.s_max <= shi:
            raise ValueError(f"s_min={self.s_min}, s_max={self.s_max}: need s_min <= s_max within the tile's "
                             f"{model.s_width}-bit tracer [{slo}, {shi}]")

    def model(self, model):
        """``model`` (the tile's kind and widths) with this program's parameters."""
        from .neurons import model_from_dict
        d = model.to_dict()
        d.update(theta=self.theta, s_min=self.s_min, s_max=self.s_max)
        return model_from_dict(d)


@dataclass(frozen=True, eq=False)
class TileProgram(NeuronParams):
    """What one slice loads into a neuron tile: ``tokens x cols`` neurons of fan-in ``fan_in``, the shared
    ``weights [cols, fan_in]``, an optional ``bias [tokens, cols]`` (a bias per neuron), the ST-BIF
    parameters ``theta``, ``s_min``, ``s_max`` and ``readout`` (accumulate only; the host reads the
    potentials; use ``theta=1`` so the initial potential ``theta // 2`` is 0). ``window > 0`` makes it a
    recurrent program over ``elements`` sequence elements (one token; see the module docstring)."""
    tokens: int
    cols: int
    fan_in: int
    weights: np.ndarray
    bias: np.ndarray | None = None
    theta: int = 1
    s_min: int = 0
    s_max: int = 0
    readout: bool = False
    window: int = 0
    elements: int = 0

    def __post_init__(self):
        for name in ("tokens", "cols", "fan_in"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("theta", self.theta, minimum=1)
        check_int("window", self.window, minimum=0, maximum=MAX_WINDOW)
        if self.window:
            check_int("elements", self.elements, minimum=1)
            if self.tokens != 1 or self.readout:
                raise ValueError(f"a recurrent program (window={self.window}) runs one token of neurons that fire; "
                                 f"got tokens={self.tokens}, readout={self.readout}")
        elif self.elements:
            raise ValueError(f"elements={self.elements} needs a window (a recurrent program); window is 0")
        w = np.asarray(self.weights, dtype=np.int64)
        if w.shape != (self.cols, self.fan_in):
            raise ValueError(f"weights have shape {w.shape}, the program needs [cols, fan_in] = "
                             f"[{self.cols}, {self.fan_in}]")
        object.__setattr__(self, "weights", w)
        if self.bias is not None:
            b = np.asarray(self.bias, dtype=np.int64)
            if b.ndim == 1 and self.tokens == 1:
                b = b.reshape(1, -1)
            if b.shape != (self.tokens, self.cols):
                raise ValueError(f"bias has shape {b.shape}, the program needs [tokens, cols] = "
                                 f"[{self.tokens}, {self.cols}]")
            object.__setattr__(self, "bias", b)

    @classmethod
    def for_format(cls, fmt: NeuronTileFormat, model, weights) -> "TileProgram":
        """The program that fills ``fmt`` exactly, with ``model``'s parameters (a standalone tile)."""
        return cls(fmt.tokens, fmt.cols, fmt.fan_in, weights, None, model.theta, model.s_min, model.s_max)

    def groups(self, lanes: int) -> int:
        return -(-self.cols // lanes)

    def neuron(self, token, col, lanes: int):
        """Core neuron of ``(token, col)``."""
        return np.asarray(token, dtype=np.int64) * (self.groups(lanes) * lanes) + np.asarray(col, dtype=np.int64)

    def check(self, fmt: NeuronTileFormat, model) -> None:
        """Raise ``ValueError`` naming what of this program does not fit the tile ``fmt`` running
        ``model`` (geometry, memories, weight / bias / parameter ranges)."""
        P, G = fmt.lanes, self.groups(fmt.lanes)
        need = [("tokens", self.tokens, fmt.tokens), ("fan_in", self.fan_in, fmt.fan_in),
                ("neurons (tokens x cols padded to lanes)", self.tokens * G * P, fmt.neurons),
                ("synapse words (fan_in x groups)", self.fan_in * G, fmt.words),
                ("lane groups per token", G, fmt.max_groups)]
        if self.window:
            need += [("input-buffer words (elements x fan_in; raise buffer_words)", self.elements * self.fan_in,
                      fmt.buffer_words),
                     ("output indices (elements x cols padded to lanes)", self.elements * G * P, fmt.neurons),
                     ("elements (buffer rows addressed by the axon's token field)", self.elements, fmt.tokens)]
        for what, n, limit in need:
            if n > limit:
                raise ValueError(f"the program needs {what} = {n}, the tile has {limit}")
        lo, hi = signed_range(fmt.weight_bits)
        if self.weights.size and (self.weights.min() < lo or self.weights.max() > hi):
            raise ValueError(f"weights span [{self.weights.min()}, {self.weights.max()}], over the "
                             f"{fmt.weight_bits}-bit range [{lo}, {hi}]")
        if self.bias is not None:
            lo, hi = signed_range(fmt.current_width)
            if self.bias.min() < lo or self.bias.max() > hi:
                raise ValueError(f"bias spans [{self.bias.min()}, {self.bias.max()}], over the tile's "
                                 f"{fmt.current_width}-bit current range [{lo}, {hi}]")
        self.check_neuron_params(model)

    def registers(self, lanes: int) -> dict[str, int]:
        return {"tokens": self.tokens, "groups": self.groups(lanes), "fan_in": self.fan_in, "theta": self.theta,
                "s_min": self.s_min, "s_max": self.s_max, "readout": int(self.readout),
                "bias": int(self.bias is not None), "window": self.window, "elements": self.elements}

    def synapse_image(self, lanes: int) -> np.ndarray:
        """Synapse words ``[fan_in x groups, lanes]``: word ``k * groups + j`` holds
        ``weights[j * lanes + lane, k]`` (zero padding)."""
        G = self.groups(lanes)
        padded = np.zeros((G * lanes, self.fan_in), np.int64)
        padded[:self.cols] = self.weights
        return padded.reshape(G, lanes, self.fan_in).transpose(2, 0, 1).reshape(self.fan_in * G, lanes)

    def bias_image(self, lanes: int) -> np.ndarray:
        """Bias words ``[tokens x groups, lanes]``, one per core lane group (zero padding)."""
        G = self.groups(lanes)
        b = np.zeros((self.tokens, G * lanes), np.int64)
        if self.bias is not None:
            b[:, :self.cols] = self.bias
        return b.reshape(self.tokens * G, lanes)

    def writes(self, fmt: NeuronTileFormat, model) -> list[tuple[int, int, int]]:
        """The configuration writes ``(memory, address, data)`` that load this program into ``fmt``."""
        self.check(fmt, model)
        P = fmt.lanes
        regs = self.registers(P)
        widths = {"s_min": model.s_width, "s_max": model.s_width}
        out = [(TileMemory.REGISTER, i, int(regs[name]) & ((1 << widths[name]) - 1) if name in widths
                else int(regs[name])) for i, name in enumerate(TILE_REGISTERS)]
        syn = pack_fields(list(self.synapse_image(P).T), [fmt.weight_bits] * P)
        out += [(TileMemory.SYNAPSE, a, int(d)) for a, d in enumerate(syn)]
        if self.bias is not None:
            bias = pack_fields(list(self.bias_image(P).T), [fmt.current_width] * P)
            out += [(TileMemory.BIAS, a, int(d)) for a, d in enumerate(bias)]
        return out


def tile_core_inputs(fmt: NeuronTileFormat, weights, events: np.ndarray):
    """Core input events ``[E, 3]`` (step, neuron, current) the tile issues for the input ``events`` (an
    :attr:`EventFormat.dtype` array in arrival order, steps counted by ``STEP`` markers), plus the counts
    ``{"rejected", "product_overflows", "steps"}``. ``weights`` is a :class:`TileProgram` (or, for a tile
    filled exactly by one program without bias, its weight matrix); the bias comes first, at step 0."""
    prog = weights if isinstance(weights, TileProgram) else TileProgram(fmt.tokens, fmt.cols, fmt.fan_in, weights)
    if prog.window:
        raise ValueError("a recurrent program (window > 0) buffers its inputs: use recurrent_core_inputs")
    w = prog.weights
    lo, hi = signed_range(fmt.weight_bits)
    if w.size and (w.min() < lo or w.max() > hi):
        raise ValueError(f"weights span [{w.min()}, {w.max()}], over the {fmt.weight_bits}-bit range [{lo}, {hi}]")
    ev = np.atleast_1d(events)
    step = np.cumsum(ev["op"] == EventOp.STEP) - (ev["op"] == EventOp.STEP)
    if np.any(ev["op"] == EventOp.CLEAR):
        raise ValueError("tile_core_inputs models one run from a cleared state: give events without CLEAR")
    spikes = ev[ev["op"] == EventOp.EVENT]
    sstep = step[ev["op"] == EventOp.EVENT].astype(np.int64)
    axon = spikes["axon"].astype(np.int64)
    token, k = axon >> fmt.k_bits, axon & ((1 << fmt.k_bits) - 1)
    ok = (token < prog.tokens) & (k < prog.fan_in)
    value = spikes["value"].astype(np.int64)[ok]
    token, k, sstep = token[ok], k[ok], sstep[ok]
    products = value[:, None] * w[:, k].T                   # [E, cols]
    lo, hi = signed_range(fmt.current_width)
    currents = np.clip(products, lo, hi)
    overflows = int((currents != products).sum())
    neuron = prog.neuron(token[:, None], np.arange(prog.cols)[None, :], fmt.lanes)
    inputs = np.stack([np.broadcast_to(sstep[:, None], neuron.shape), neuron, currents], -1).reshape(-1, 3)
    if prog.bias is not None:
        tok, col = np.meshgrid(np.arange(prog.tokens), np.arange(prog.cols), indexing="ij")
        bias = np.stack([np.zeros(tok.size, np.int64), prog.neuron(tok, col, fmt.lanes).reshape(-1),
                         prog.bias.reshape(-1)], 1)
        inputs = np.concatenate([bias[bias[:, 2] != 0], inputs])
    counts = {"rejected": int((~ok).sum()), "product_overflows": overflows,
              "steps": int((ev["op"] == EventOp.STEP).sum())}
    return inputs, counts


def _products(fmt: NeuronTileFormat, prog: TileProgram, k, value):
    """``sat(value * weights[:, k], current_width)`` for events ``(k, value)``: ``[E, cols]`` and the
    number of saturated products."""
    products = np.asarray(value, np.int64)[:, None] * prog.weights[:, np.asarray(k, np.int64)].T
    lo, hi = signed_range(fmt.current_width)
    currents = np.clip(products, lo, hi)
    return currents, int((currents != products).sum())


def recurrent_core_inputs(fmt: NeuronTileFormat, program: TileProgram, events: np.ndarray):
    """The recurrent program's windows as the tile runs them: ``[(e, inputs)]`` for every element ``e``
    whose window starts within the events' steps, ``inputs [E, 3]`` the core inputs (local step 0,
    neuron, current) after the window's ``CLEAR``: the bias, then the products of buffer row ``e`` as it
    stood at step ``e * window`` (word order); plus the counts ``{"rejected", "product_overflows",
    "steps"}``. The core then runs ``window`` steps from its initial state; its spikes leave as
    ``e * cols_padded + neuron`` at step ``e * window + local step``."""
    prog = program
    if not prog.window:
        raise ValueError("not a recurrent program (window = 0): use tile_core_inputs")
    lo, hi = signed_range(fmt.weight_bits)
    if prog.weights.size and (prog.weights.min() < lo or prog.weights.max() > hi):
        raise ValueError(f"weights span [{prog.weights.min()}, {prog.weights.max()}], over the {fmt.weight_bits}-bit "
                         f"range [{lo}, {hi}]")
    ev = np.atleast_1d(events)
    if np.any(ev["op"] == EventOp.CLEAR):
        raise ValueError("recurrent_core_inputs models one run from a cleared state: give events without CLEAR")
    step = (np.cumsum(ev["op"] == EventOp.STEP) - (ev["op"] == EventOp.STEP))[ev["op"] == EventOp.EVENT]
    spikes = ev[ev["op"] == EventOp.EVENT]
    axon = spikes["axon"].astype(np.int64)
    token, k = axon >> fmt.k_bits, axon & ((1 << fmt.k_bits) - 1)
    ok = (token < prog.elements) & (k < prog.fan_in)
    token, k, step = token[ok], k[ok], step[ok].astype(np.int64)
    value = spikes["value"].astype(np.int64)[ok]
    steps = int((ev["op"] == EventOp.STEP).sum())
    # the buffer: saturating sums in arrival order; a word is replayed at its window's first step, so only
    # the events that arrived by then count (later ones change nothing the tile emits)
    vlo, vhi = signed_range(fmt.value_bits)
    word = token * prog.fan_in + k
    buffer = np.zeros(prog.elements * prog.fan_in, np.int64)
    saturated = 0
    order = np.argsort(word, kind="stable")
    w_sorted, v_sorted, s_sorted = word[order], value[order], step[order]
    starts = np.flatnonzero(np.r_[True, w_sorted[1:] != w_sorted[:-1]]) if len(w_sorted) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(w_sorted)]
    for a, b in zip(starts, ends):        # one word at a time, vectorised unless a partial sum saturates
        partial = np.cumsum(v_sorted[a:b])
        if partial.min() >= vlo and partial.max() <= vhi:
            keep_until = np.searchsorted(s_sorted[a:b], (w_sorted[a] // prog.fan_in) * prog.window, "right")
            buffer[w_sorted[a]] = partial[keep_until - 1] if keep_until else 0
            continue
        acc = 0
        limit = (w_sorted[a] // prog.fan_in) * prog.window
        for s_, v in zip(s_sorted[a:b], v_sorted[a:b]):
            total = acc + int(v)
            clipped = min(max(total, vlo), vhi)
            saturated += clipped != total
            acc = clipped
            if s_ <= limit:
                buffer[w_sorted[a]] = acc
    buffer = buffer.reshape(prog.elements, prog.fan_in)
    windows, overflows = [], 0
    cols = np.arange(prog.cols)
    neuron = prog.neuron(0, cols, fmt.lanes)
    for e in range(prog.elements):
        if e * prog.window >= steps:
            break
        kk = np.flatnonzero(buffer[e])
        currents, over = _products(fmt, prog, kk, buffer[e, kk])
        overflows += over
        rows = [np.stack([np.zeros(currents.size, np.int64), np.tile(neuron, len(kk)), currents.reshape(-1)], 1)]
        if prog.bias is not None:
            b = prog.bias.reshape(-1)
            rows.insert(0, np.stack([np.zeros(int((b != 0).sum()), np.int64), neuron[b != 0], b[b != 0]], 1))
        windows.append((e, np.concatenate(rows).astype(np.int64)))
    counts = {"rejected": int((~ok).sum()), "product_overflows": overflows + saturated, "steps": steps}
    return windows, counts
