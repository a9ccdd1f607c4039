"""The neuron tile's bit-exact event-level model: synapse memory + neuron core, as the RTL computes it.

A neuron tile runs one slice of a linear + neuron layer (see :mod:`spikeforge.sw.compile`): ``tokens``
tokens x ``cols`` output neurons, fan-in ``fan_in``, one weight matrix ``weights [cols, fan_in]`` shared by
every token. Neuron ``(r, m)`` is core neuron ``r * cols_padded + m`` (``cols_padded``: ``cols`` rounded up
to a multiple of ``lanes``, so a token's neurons fill whole lane groups).

Input events (:class:`~spikeforge.sw.events.EventOp`):

* ``EVENT axon value`` with ``axon = (token << k_bits) | k``: for every output neuron ``m`` of the token,
  ``current = sat(value * weights[m, k], current_width)`` is accumulated into ``(token, m)`` — in lane
  groups, in order (``ceil(cols / lanes)`` accumulate beats). An axon whose token or ``k`` is out of range
  is malformed: rejected and counted. A saturated product is counted in ``product_overflows``.
* ``STEP``: the core sweeps every neuron through its rule; the tile emits ``EVENT axon=neuron value=±1``
  for every spike (group order, then lane order), then ``STEP``.
* ``CLEAR``: initial state, step count 0.

:func:`tile_core_inputs` turns input events into the core events the tile issues; the core's own golden
(:func:`spikeforge.sim.core_replay.core_golden`) does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .events import EventFormat, EventOp
from .fixed import check_int, signed_range

__all__ = ["NeuronTileFormat", "tile_core_inputs"]


@dataclass(frozen=True)
class NeuronTileFormat:
    """Geometry and widths of one neuron tile (validated)."""
    tokens: int
    cols: int
    fan_in: int
    lanes: int
    weight_bits: int = 8
    value_bits: int = 2
    current_width: int = 12

    def __post_init__(self):
        for name, lo in (("tokens", 1), ("cols", 1), ("fan_in", 1), ("lanes", 1)):
            check_int(name, getattr(self, name), minimum=lo, maximum=1 << 16)
        check_int("weight_bits", self.weight_bits, minimum=2, maximum=16)
        check_int("value_bits", self.value_bits, minimum=2, maximum=16)
        check_int("current_width", self.current_width, minimum=2, maximum=32)

    @property
    def groups_per_token(self) -> int:
        return -(-self.cols // self.lanes)

    @property
    def cols_padded(self) -> int:
        return self.groups_per_token * self.lanes

    @property
    def neurons(self) -> int:
        """Core neurons (padded)."""
        return self.tokens * self.cols_padded

    @property
    def k_bits(self) -> int:
        return max(1, (self.fan_in - 1).bit_length())

    @property
    def token_bits(self) -> int:
        return max(1, (self.tokens - 1).bit_length())

    @property
    def words(self) -> int:
        """Synapse memory words (``lanes`` weights each)."""
        return self.fan_in * self.groups_per_token

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


def tile_core_inputs(fmt: NeuronTileFormat, weights: np.ndarray, events: np.ndarray):
    """Core input events ``[E, 3]`` (step, neuron, current) the tile issues for the input ``events`` (an
    :attr:`EventFormat.dtype` array in arrival order, steps counted by ``STEP`` markers), plus the counts
    ``{"rejected", "product_overflows", "steps"}``."""
    w = np.asarray(weights, dtype=np.int64)
    fmt.weight_image(w)                                     # validates shape and range
    ev = np.atleast_1d(events)
    step = np.cumsum(ev["op"] == EventOp.STEP) - (ev["op"] == EventOp.STEP)
    if np.any(ev["op"] == EventOp.CLEAR):
        raise ValueError("tile_core_inputs models one run from a cleared state: give events without CLEAR")
    spikes = ev[ev["op"] == EventOp.EVENT]
    sstep = step[ev["op"] == EventOp.EVENT].astype(np.int64)
    axon = spikes["axon"].astype(np.int64)
    token, k = axon >> fmt.k_bits, axon & ((1 << fmt.k_bits) - 1)
    ok = (token < fmt.tokens) & (k < fmt.fan_in)
    value = spikes["value"].astype(np.int64)[ok]
    token, k, sstep = token[ok], k[ok], sstep[ok]
    products = value[:, None] * w[:, k].T                   # [E, cols]
    lo, hi = signed_range(fmt.current_width)
    currents = np.clip(products, lo, hi)
    overflows = int((currents != products).sum())
    neuron = token[:, None] * fmt.cols_padded + np.arange(fmt.cols)[None, :]
    inputs = np.stack([np.broadcast_to(sstep[:, None], neuron.shape), neuron, currents], -1).reshape(-1, 3)
    counts = {"rejected": int((~ok).sum()), "product_overflows": overflows,
              "steps": int((ev["op"] == EventOp.STEP).sum())}
    return inputs, counts
