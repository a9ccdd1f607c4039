"""Golden spike traces: save, load, compare.

A trace records what a block receives and emits, event by event, so a bit-exact model's run can be
replayed against RTL and the two diffed. File format (``.npz``, documented in docs/golden-traces.md):

``meta``           JSON string: ``{"format": "spikeforge-trace", "version": 1, "block": ..., "config": {...},
                   "steps": int, ...}``
``inputs``         int64 ``[E_in, 3]``: ``(step, index, value)`` input events, in arrival order per index
``spikes``         int64 ``[E, 3]``: ``(step, index, sign)`` output events, sorted by step then index
``state__<name>``  int64 ``[N]``: final value of state field ``<name>`` for every neuron
``counter__<name>`` int64 scalar: final value of a hardware counter (``overflows``, ...)
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["SpikeTrace", "TraceDiff", "diff_traces", "FORMAT", "VERSION"]

FORMAT = "spikeforge-trace"
VERSION = 1


def _events(a, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64).reshape(-1, 3) if len(a) else np.zeros((0, 3), np.int64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{what} must be an array of (step, index, value) rows")
    return a


@dataclass
class SpikeTrace:
    """A golden (or observed) trace of one block run."""

    meta: dict
    inputs: np.ndarray
    spikes: np.ndarray
    state: dict[str, np.ndarray] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.inputs = _events(self.inputs, "inputs")
        self.spikes = _events(self.spikes, "spikes")
        order = np.lexsort((self.spikes[:, 1], self.spikes[:, 0]))
        self.spikes = self.spikes[order]
        self.state = {k: np.asarray(v, dtype=np.int64) for k, v in self.state.items()}
        self.counters = {k: int(v) for k, v in self.counters.items()}

    @property
    def steps(self) -> int:
        return int(self.meta["steps"])

    def save(self, path) -> Path:
        path = Path(path)
        arrays = {"meta": np.array(json.dumps({"format": FORMAT, "version": VERSION, **self.meta})),
                  "inputs": self.inputs, "spikes": self.spikes}
        arrays.update({f"state__{k}": v for k, v in self.state.items()})
        arrays.update({f"counter__{k}": np.array(v, dtype=np.int64) for k, v in self.counters.items()})
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)
        return path

    @classmethod
    def load(cls, path) -> "SpikeTrace":
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.pop("format", None) != FORMAT:
                raise ValueError(f"{path} is not a spikeforge trace (missing format tag)")
            version = meta.pop("version", None)
            if version != VERSION:
                raise ValueError(f"{path} has trace format version {version}; this spikeforge reads version {VERSION}")
            state = {k[len("state__"):]: z[k] for k in z.files if k.startswith("state__")}
            counters = {k[len("counter__"):]: int(z[k]) for k in z.files if k.startswith("counter__")}
            return cls(meta, z["inputs"], z["spikes"], state, counters)

    def text(self, limit: int | None = None) -> str:
        """Human-readable listing: one ``step index sign`` line per output spike."""
        lines = [f"# {self.meta.get('block', '?')} steps={self.steps} inputs={len(self.inputs)} spikes={len(self.spikes)}"]
        rows = self.spikes if limit is None else self.spikes[:limit]
        lines += [f"{s} {i} {'+' if v > 0 else '-'}" for s, i, v in rows]
        if limit is not None and len(self.spikes) > limit:
            lines.append(f"... {len(self.spikes) - limit} more")
        lines += [f"# counter {k} = {v}" for k, v in self.counters.items()]
        return "\n".join(lines)


@dataclass
class TraceDiff:
    """Result of comparing an observed trace against the expected one."""

    spike_mismatches: int
    first_spike_mismatch: str | None
    state_mismatches: dict[str, int]
    first_state_mismatch: str | None
    counter_mismatches: dict[str, tuple[int, int]]
    expected_spikes: int
    observed_spikes: int

    @property
    def equal(self) -> bool:
        return not (self.spike_mismatches or self.state_mismatches or self.counter_mismatches)

    def __str__(self):
        if self.equal:
            return f"traces equal: {self.expected_spikes} spikes, final state and counters match"
        parts = []
        if self.spike_mismatches:
            parts.append(f"{self.spike_mismatches} spike events differ (expected {self.expected_spikes}, "
                         f"observed {self.observed_spikes}); first: {self.first_spike_mismatch}")
        if self.state_mismatches:
            parts.append(f"final state differs in {self.state_mismatches}; first: {self.first_state_mismatch}")
        for k, (e, o) in self.counter_mismatches.items():
            parts.append(f"counter {k}: expected {e}, observed {o}")
        return "\n".join(parts)


def _fmt(ev) -> str:
    s, i, v = (int(x) for x in ev)
    if abs(v) == 1:
        return f"(step {s}, neuron {i}, sign {'+' if v > 0 else '-'})"
    return f"(step {s}, index {i}, value {v})"


def diff_traces(expected: SpikeTrace, observed: SpikeTrace) -> TraceDiff:
    """Compare spike events (step, index, sign), final states and counters; locate the first mismatch."""
    # multisets: a block may emit the same (step, index, value) event more than once
    e = Counter(tuple(r) for r in expected.spikes.tolist())
    o = Counter(tuple(r) for r in observed.spikes.tolist())
    missing, extra = sorted((e - o).elements()), sorted((o - e).elements())
    first = None
    candidates = [(m, "missing from observed") for m in missing[:1]] + [(x, "unexpected in observed") for x in extra[:1]]
    if candidates:
        ev, why = min(candidates, key=lambda c: (c[0][0], c[0][1]))
        first = f"{_fmt(ev)} {why}"
    n_mis = len(missing) + len(extra)
    state_mis, first_state = {}, None
    for k, ev in expected.state.items():
        ov = observed.state.get(k)
        if ov is None or ov.shape != ev.shape:
            state_mis[k] = len(ev)
            first_state = first_state or f"state field {k!r} missing or of another shape"
            continue
        bad = np.nonzero(ev != ov)[0]
        if len(bad):
            state_mis[k] = len(bad)
            j = int(bad[0])
            first_state = first_state or f"neuron {j} field {k}: expected {int(ev[j])}, observed {int(ov[j])}"
    counters = {k: (v, observed.counters.get(k)) for k, v in expected.counters.items()
                if observed.counters.get(k) != v}
    return TraceDiff(n_mis, first, state_mis, first_state, counters, len(expected.spikes), len(observed.spikes))
