"""Golden spike traces: save, load, compare.

A trace records what a block receives and emits, event by event, so a bit-exact model's run can be
replayed against RTL and the two diffed. File format (``.npz``, documented in docs/golden-traces.md):

``meta``           JSON string: ``{"format": "spikeforge-trace", "version": 1, "block": ..., "config": {...},
                   "steps": int, ...}``
``inputs``         int64 ``[E_in, 3]``: ``(step, index, value)`` input events, in arrival order per index
``spikes``         int64 ``[E, 3]``: ``(step, index, sign)`` output events, sorted by step then index
``state__<name>``  int64 ``[N]``: final value of state field ``<name>`` for every neuron
``counter__<name>`` int64 scalar: final value of a hardware counter (``overflows``, ...)

:meth:`SpikeTrace.load` raises one :class:`TraceFileError` (a ``ValueError``) naming the file and the
problem for any malformed file; :meth:`SpikeTrace.save` writes atomically (temporary file + rename);
:func:`check_same_design` refuses to compare traces of two different designs (``diff_traces`` calls it).
"""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["SpikeTrace", "TraceDiff", "TraceFileError", "diff_traces", "check_same_design", "FORMAT", "VERSION"]

FORMAT = "spikeforge-trace"
VERSION = 1

_INT64 = np.iinfo(np.int64)


class TraceFileError(ValueError):
    """A trace file that is not a readable spikeforge trace, or two traces that cannot be compared.

    The message names the file(s) and what is wrong. ``path`` is the offending file (``None`` when the
    error is about two traces, see :func:`check_same_design`; then ``paths`` holds both names).
    """

    def __init__(self, message: str, path=None, paths: tuple[str, str] | None = None):
        self.path = None if path is None else str(path)
        self.paths = paths if paths is not None else ((self.path,) if self.path is not None else ())
        super().__init__(message)


def _events(a, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64).reshape(-1, 3) if len(a) else np.zeros((0, 3), np.int64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{what} must be an array of (step, index, value) rows")
    return a


@dataclass
class SpikeTrace:
    """A golden (or observed) trace of one block run.

    ``meta`` holds at least ``block`` (str) and ``steps`` (int >= 0) and normally ``config`` (what
    rebuilds the block); ``inputs``/``spikes`` are int64 ``[E, 3]`` event arrays, ``state`` int64
    ``[N]`` arrays, ``counters`` ints. ``source`` is the file the trace was loaded from (``None`` for
    a trace made in memory); it names the trace in error messages and is not saved.
    """

    meta: dict
    inputs: np.ndarray
    spikes: np.ndarray
    state: dict[str, np.ndarray] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    source: str | None = field(default=None, compare=False, repr=False)

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

    @property
    def name(self) -> str:
        """How error messages name this trace: its file, or ``<trace of block ...>``."""
        return self.source or f"<trace of block {self.meta.get('block', '?')!r}>"

    def save(self, path) -> Path:
        """Write the trace to ``path`` (``.npz``) atomically and return the path.

        The file is written under a temporary name in the same folder and then renamed over ``path``
        (:func:`os.replace`), so an interrupted write never leaves a partial file under the final name
        (an existing file stays as it was).
        """
        path = Path(path)
        meta = {**self.meta, "format": FORMAT, "version": VERSION}
        arrays = {"meta": np.array(json.dumps(meta)), "inputs": self.inputs, "spikes": self.spikes}
        arrays.update({f"state__{k}": v for k, v in self.state.items()})
        arrays.update({f"counter__{k}": np.array(v, dtype=np.int64) for k, v in self.counters.items()})
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        # os.open applies the umask, as open() would have for the final file
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path

    @classmethod
    def load(cls, path) -> "SpikeTrace":
        """Read a trace written by :meth:`save`.

        Raises :class:`TraceFileError` (a ``ValueError``) naming the file and the problem for anything
        that is not a well-formed trace of this format version: a missing, unreadable, empty or
        truncated file, a directory, a file that is not an ``.npz`` archive, an archive without a JSON
        ``meta`` carrying the ``spikeforge-trace`` format tag, another format version, ``steps`` missing
        or not an integer >= 0, ``block`` missing or not a string, ``config`` not an object, ``inputs`` /
        ``spikes`` missing or not integer ``[E, 3]`` arrays, ``state__*`` not integer ``[N]`` arrays,
        ``counter__*`` not integer scalars. No other exception type escapes for a bad file.
        """
        arrays = _read_npz(path)
        return _trace_from_arrays(arrays, str(path))

    def text(self, limit: int | None = None) -> str:
        """Human-readable listing: one ``step index sign`` line per output spike."""
        lines = [f"# {self.meta.get('block', '?')} steps={self.steps} inputs={len(self.inputs)} spikes={len(self.spikes)}"]
        rows = self.spikes if limit is None else self.spikes[:limit]
        lines += [f"{s} {i} {'+' if v > 0 else '-'}" for s, i, v in rows]
        if limit is not None and len(self.spikes) > limit:
            lines.append(f"... {len(self.spikes) - limit} more")
        lines += [f"# counter {k} = {v}" for k, v in self.counters.items()]
        return "\n".join(lines)


# -- reading and checking files ------------------------------------------------------------------------
def _read_npz(path) -> dict:
    """Every member of the ``.npz`` archive at ``path`` (arrays, or raw bytes for non-``.npy`` members);
    :class:`TraceFileError` for anything that is not a readable, complete archive."""
    p = Path(path)
    try:
        if p.is_dir():
            raise TraceFileError(f"{path} is a directory, not a trace file (.npz)", path)
        if not p.exists():
            raise TraceFileError(f"{path} does not exist", path)
        if p.stat().st_size == 0:
            raise TraceFileError(f"{path} is empty (0 bytes): not a trace file; was its write interrupted?", path)
    except OSError as e:
        raise TraceFileError(f"{path} cannot be read: {e.strerror or e}", path) from None
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise TraceFileError(f"{path} cannot be read: {e.strerror or e}", path) from None
    if magic.startswith(b"\x93NUMPY"):
        raise TraceFileError(f"{path} is a single .npy array, not a trace file (.npz archive)", path)
    if not magic.startswith(b"PK"):
        raise TraceFileError(f"{path} is not a trace file: not an .npz (zip) archive (it starts with {magic!r})", path)
    try:
        z = np.load(p, allow_pickle=False)
    except OSError as e:
        raise TraceFileError(f"{path} cannot be read: {e.strerror or e}", path) from None
    except Exception as e:                          # BadZipFile, EOFError, ... (the zip directory is unreadable)
        raise TraceFileError(f"{path} is truncated or corrupt: the .npz (zip) archive does not open ({_reason(e)})",
                             path) from None
    if not isinstance(z, np.lib.npyio.NpzFile):     # cannot happen after the magic check; be explicit anyway
        raise TraceFileError(f"{path} is not a trace file (.npz archive)", path)
    try:
        with z:
            return {k: z[k] for k in z.files}
    except Exception as e:                          # truncated or corrupt members: zlib, CRC, EOF, header
        raise TraceFileError(f"{path} is truncated or corrupt (.npz archive does not read back): {_reason(e)}",
                             path) from None


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__


def _int_array(arrays: dict, key: str, path: str, ndim: int, what: str) -> np.ndarray:
    a = arrays[key]
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu":
        kind = f"dtype {a.dtype}" if isinstance(a, np.ndarray) else "raw bytes, not an array"
        raise TraceFileError(f"{path}: {key!r} must be an integer array ({what}), got {kind}", path)
    if a.ndim != ndim:
        raise TraceFileError(f"{path}: {key!r} must be {what}, got shape {a.shape}", path)
    if a.size and a.dtype.kind == "u" and int(a.max()) > _INT64.max:
        raise TraceFileError(f"{path}: {key!r} holds values beyond int64", path)
    return a.astype(np.int64)


def _trace_from_arrays(arrays: dict, path: str) -> "SpikeTrace":
    if "meta" not in arrays:
        raise TraceFileError(f"{path} is not a spikeforge trace: the archive has no 'meta' member "
                             f"(members: {', '.join(sorted(arrays)) or 'none'})", path)
    raw = arrays["meta"]
    if not (isinstance(raw, np.ndarray) and raw.ndim == 0 and raw.dtype.kind == "U"):
        raise TraceFileError(f"{path} is not a spikeforge trace: 'meta' is not a JSON string", path)
    try:
        meta = json.loads(str(raw))
    except (ValueError, RecursionError) as e:
        raise TraceFileError(f"{path} is not a spikeforge trace: 'meta' is not valid JSON ({_reason(e)})",
                             path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TraceFileError(f"{path} is not a spikeforge trace (missing format tag {FORMAT!r} in its meta)", path)
    meta.pop("format")
    version = meta.pop("version", None)
    if type(version) is not int or version != VERSION:
        raise TraceFileError(f"{path} has trace format version {version!r}; this spikeforge reads version "
                             f"{VERSION}", path)
    steps = meta.get("steps")
    if type(steps) is not int or not 0 <= steps <= _INT64.max:
        problem = "is missing" if "steps" not in meta else f"must be an integer >= 0, got {steps!r}"
        raise TraceFileError(f"{path}: meta 'steps' (the number of steps the run took) {problem}", path)
    if not isinstance(meta.get("block"), str):
        problem = "is missing" if "block" not in meta else f"must be a string, got {meta['block']!r}"
        raise TraceFileError(f"{path}: meta 'block' (the block the trace was made for) {problem}", path)
    if "config" in meta and not isinstance(meta["config"], dict):
        raise TraceFileError(f"{path}: meta 'config' must be an object (the block's configuration), "
                             f"got {type(meta['config']).__name__}", path)
    events = {}
    for key in ("inputs", "spikes"):
        if key not in arrays:
            raise TraceFileError(f"{path}: the trace has no {key!r} array", path)
        a = arrays[key]
        if isinstance(a, np.ndarray) and a.ndim == 1 and a.size == 0:
            a = np.zeros((0, 3), np.int64)
        events[key] = _int_array({key: a}, key, path, 2, "[E, 3]: (step, index, value) rows")
        if events[key].shape[1] != 3:
            raise TraceFileError(f"{path}: {key!r} must be [E, 3]: (step, index, value) rows, got shape "
                                 f"{events[key].shape}", path)
    state, counters = {}, {}
    for k in arrays:
        if k.startswith("state__"):
            state[k[len("state__"):]] = _int_array(arrays, k, path, 1, "[N]: one value per neuron")
        elif k.startswith("counter__"):
            counters[k[len("counter__"):]] = int(_int_array(arrays, k, path, 0, "an integer scalar"))
    return SpikeTrace(meta, events["inputs"], events["spikes"], state, counters, source=path)


def _canonical(x):
    """JSON form of a meta value (tuples and lists alike, NaN comparable); the value itself otherwise."""
    try:
        return json.dumps(x, sort_keys=True)
    except (TypeError, ValueError):
        return x


def _differences(a, b, where: str, out: list[str], limit: int = 4):
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            key = f"{where}.{k}" if where else str(k)
            if k not in a:
                out.append(f"{key}: absent vs {b[k]!r}")
            elif k not in b:
                out.append(f"{key}: {a[k]!r} vs absent")
            else:
                _differences(a[k], b[k], key, out, limit)
            if len(out) >= limit:
                return
    elif _canonical(a) != _canonical(b):
        out.append(f"{where or 'value'}: {a!r} vs {b!r}"[:200])


def check_same_design(expected: SpikeTrace, observed: SpikeTrace, expected_name=None, observed_name=None) -> None:
    """Raise :class:`TraceFileError` unless both traces describe the same design and run: equal
    ``meta["block"]``, ``meta["config"]`` (compared as JSON, so tuples equal lists) and ``steps``.

    The message names both traces (``expected_name`` / ``observed_name``, default each trace's
    :attr:`SpikeTrace.source` file) and the first differences, e.g. ``config.model.theta: 32 vs 16``.
    Observed traces from a replay copy their golden's ``block``/``config``/``steps``, so they pass.
    """
    a = str(expected_name) if expected_name is not None else expected.name
    b = str(observed_name) if observed_name is not None else observed.name
    diffs: list[str] = []
    for key in ("block", "config", "steps"):
        ea, ob = expected.meta.get(key), observed.meta.get(key)
        if _canonical(ea) != _canonical(ob):
            if key == "config" and isinstance(ea, dict) and isinstance(ob, dict):
                _differences(ea, ob, "config", diffs)
            else:
                diffs.append(f"{key}: {ea!r} vs {ob!r}"[:200])
    if diffs:
        what = "blocks" if any(d.startswith("block:") for d in diffs) else "designs"
        raise TraceFileError(f"{a} and {b} are traces of different {what} and cannot be diffed: "
                             + "; ".join(diffs) + " (first file vs second)", paths=(a, b))


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


def diff_traces(expected: SpikeTrace, observed: SpikeTrace, *, check_design: bool = True) -> TraceDiff:
    """Compare spike events (step, index, sign), final states and counters; locate the first mismatch.

    With ``check_design`` (the default) the traces must describe the same design and run first
    (:func:`check_same_design`; :class:`TraceFileError` otherwise): a diff of two different designs'
    traces would list meaningless mismatches.
    """
    if check_design:
        check_same_design(expected, observed)
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
