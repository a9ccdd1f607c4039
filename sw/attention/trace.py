"""Trace-driven matrix products (SpikedAttention) and spike-count products (SESA, SpikeZIP-TF).

Two operands arrive as spike events: side ``a`` (rows, e.g. queries ``q[i, d]``) and side ``b``
(columns, e.g. keys ``k[j, d]``), both indexed by ``(token, channel)``; the product contracts over the
channel. A *trace* is what a neuron leaves in memory when it spikes:

* **phase mode** (one-spike phase coding): on its first spike at step ``t`` a neuron captures the
  global trace ``G_t = B**-(t+1)`` (times its sign and its channel's weight) and freezes it;
* **count mode** (SESA): the trace is the running spike count ``Q_t = sum_{s<=t} q_s``.

Event rule (both modes, what the hardware does): a spike of ``a[i, d]`` adds ``sign * trace(b[j, d])``
to ``acc[i, j]`` for every column ``j`` whose trace is non-zero, then updates its own trace; a spike of
``b[j, d]`` does the same against side ``a``. Each pair of spikes is counted exactly once, by whichever
arrives later - same-step pairs included, in either arrival order. This is the paper's three-term
formula ``q @ trace(k)^T + trace(q) @ k^T - (trace_pure(q) * q) @ k^T`` (phase) and SESA's
``dA_t = Q_t k_t^T + q_t K_t^T - q_t k_t^T`` (count) evaluated one event at a time; the third term is
the correction for same-step pairs that the simultaneous form counts twice
(:func:`phase_matmul_increments` / :func:`sesa_increments` compute the formulas themselves, and the
tests check that the event model equals them).

In phase mode the accumulator weights an addition made at step ``t`` by ``B**-t`` (it integrates
``v = B*v + x``), so a pair at steps ``(t_early, t_late)`` contributes ``B**-(t_early + 1 + t_late)``:
the product of the decoded values divided by ``B``.

Fixed-point contract (:class:`TraceFormat`)
-------------------------------------------
* phase: ``lut[d][t] = round(weight[d] * B_q**-(t+1) * 2**F)`` (half up, exact rational arithmetic;
  ``B_q`` is the realised base of :func:`~spikeforge.sw.phase_coding.quantize_base`); the memory keeps
  ``(fired, sign, step)`` per neuron and a read returns ``sign * lut[d][step]``. A second spike of a
  neuron in the same window, and any spike at ``t >= T``, is rejected and counted.
* count: the memory keeps a signed ``count_width``-bit count per neuron, saturating (overflows counted);
  a read returns the count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import torch

from ..fixed import check_int, signed_range, signed_width_for, unsigned_width_for
from ..phase_coding import check_phase_params, default_b_frac_bits, quantize_base

__all__ = ["TraceFormat", "TraceMatmulModel", "MatmulEvent", "phase_matmul_increments", "phase_matmul",
           "sesa_increments", "spike_steps", "matmul_events"]

MODES = ("phase", "count")


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


class TraceFormat:
    """Fixed-point format of a trace-memory unit, shared by the bit-exact model and the RTL.

    Parameters
    ----------
    mode : ``"phase"`` or ``"count"``
    T : int
        Window length (phase mode: spikes at ``t >= T`` are rejected; count mode: only sizes the step
        counter, steps are unbounded).
    B : float
        Phase-coding base (phase mode).
    channels : int
        Number of channels ``D`` (the contracted dimension).
    weights : sequence of float, optional
        Per-channel weight folded into the trace table (phase mode), e.g. ``B * scale_q[d] * scale_k[d]
        * temperature`` so that the accumulator holds scores in natural units. Default all 1.
    frac_bits : int, optional
        Fractional bits ``F`` of the trace table; default ``ceil(T log2 B - log2 min(weights)) + 8`` (at
        most 48) so the last entry ``B**-T`` still has about 8 significant bits.
    b_frac_bits : int, optional
        Fractional bits of the realised base (see :func:`~spikeforge.sw.phase_coding.quantize_base`).
    count_width : int
        Signed width of a count (count mode), default 8.
    """

    def __init__(self, mode: str = "phase", *, T: int, B: float = 2.0, channels: int = 1, weights=None,
                 frac_bits: int | None = None, b_frac_bits: int | None = None, count_width: int = 8):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not a trace mode: use one of {MODES}")
        self.mode = mode
        check_phase_params(T, B)
        self.T, self.B = T, float(B)
        self.channels = check_int("channels", channels, minimum=1, maximum=1 << 16)
        self.b_frac_bits = check_int("b_frac_bits", default_b_frac_bits(T) if b_frac_bits is None else b_frac_bits,
                                     minimum=1, maximum=29)
        self.b_fx, self.b_q = quantize_base(self.B, self.b_frac_bits)
        weights = [1.0] * channels if weights is None else [float(w) for w in weights]
        if len(weights) != channels:
            raise ValueError(f"weights has {len(weights)} entries but channels={channels}: give one weight per channel")
        if any(not math.isfinite(w) or w <= 0 for w in weights):
            raise ValueError("weights must be finite and > 0 (signs travel with the spikes)")
        self.weights = weights
        if frac_bits is None:
            frac_bits = min(48, max(0, math.ceil(T * math.log2(float(self.b_q)) - math.log2(min(weights)))) + 8)
        self.frac_bits = check_int("frac_bits", frac_bits, minimum=0, maximum=48)
        self.count_width = check_int("count_width", count_width, minimum=2, maximum=32)
        self.step_width = unsigned_width_for(T)  # holds 0 .. T (T = "window over")
        if mode == "phase":
            self.lut = [[_round_half_up(Fraction(w) / self.b_q ** (t + 1) * (1 << self.frac_bits)) for t in range(T)]
                        for w in weights]
            top = max(max(row) for row in self.lut)
            if top == 0:
                raise ValueError(f"every trace rounds to 0 with frac_bits={self.frac_bits}: raise frac_bits")
            self.magnitude_width = unsigned_width_for(top)
            self.value_width = self.magnitude_width + 1
        else:
            self.lut = None
            self.value_width = self.count_width + 1  # a negated minimum count
        self.value_range = signed_range(self.value_width)

    # -- contract -------------------------------------------------------------------------------
    def params(self) -> dict:
        return {"mode": self.mode, "T": self.T, "B": self.B, "channels": self.channels, "weights": self.weights,
                "frac_bits": self.frac_bits, "b_frac_bits": self.b_frac_bits, "count_width": self.count_width}

    @classmethod
    def from_params(cls, p: dict) -> "TraceFormat":
        p = dict(p)
        return cls(p.pop("mode"), **p)

    def lut_tensor(self) -> torch.Tensor:
        """``[channels, T]`` int64 table (phase mode)."""
        return torch.tensor(self.lut, dtype=torch.int64)

    def value_bound(self) -> int:
        """Largest magnitude a single trace read can return."""
        if self.mode == "phase":
            return max(max(row) for row in self.lut)
        return -signed_range(self.count_width)[0]


@dataclass(frozen=True)
class MatmulEvent:
    """One input beat of the matmul engine: a spike of ``side`` (``"a"`` or ``"b"``) at
    ``(token, channel)``, or a step boundary (``op="step"``) or a clear (``op="clear"``)."""

    op: str  # "spike" | "step" | "clear"
    side: str = "a"
    token: int = 0
    channel: int = 0
    neg: bool = False


@dataclass
class MatmulRun:
    """Result of :meth:`TraceMatmulModel.run`: products ``(step, row, col, value)`` in emission order
    and the counters the hardware keeps."""

    products: list[tuple[int, int, int, int]] = field(default_factory=list)
    rejected: int = 0
    overflows: int = 0
    steps: int = 0
    reads: int = 0


class TraceMatmulModel:
    """Bit-exact event model of the trace-driven matmul engine (both modes).

    ``rows``/``cols`` tokens on sides ``a``/``b``; with ``norm_column`` every accepted ``a`` spike also
    emits ``lut[channel][0]`` to column ``cols`` (the A·V row normaliser: a virtual ``b`` operand that
    is 1 at step 0 for every channel).
    """

    def __init__(self, fmt: TraceFormat, *, rows: int, cols: int, norm_column: bool = False):
        self.fmt = fmt
        self.rows = check_int("rows", rows, minimum=1, maximum=1 << 16)
        self.cols = check_int("cols", cols, minimum=1, maximum=1 << 16)
        self.norm_column = bool(norm_column)
        if norm_column and fmt.mode != "phase":
            raise ValueError("norm_column needs a phase-mode trace format")
        self.clear()

    def clear(self):
        D = self.fmt.channels
        self.t = 0
        # phase: captured step (-1 = none) and sign; count: count
        self.state = {"a": [[None] * D for _ in range(self.rows)], "b": [[None] * D for _ in range(self.cols)]}
        self.counts = {"a": [[0] * D for _ in range(self.rows)], "b": [[0] * D for _ in range(self.cols)]}

    def read(self, side: str, token: int, channel: int) -> int:
        if self.fmt.mode == "phase":
            cap = self.state[side][token][channel]
            if cap is None:
                return 0
            step, neg = cap
            value = self.fmt.lut[channel][step]
            return -value if neg else value
        return self.counts[side][token][channel]

    def spike(self, side: str, token: int, channel: int, neg: bool, run: MatmulRun) -> None:
        size = self.rows if side == "a" else self.cols
        if not (0 <= token < size and 0 <= channel < self.fmt.channels):
            run.rejected += 1
            return
        if self.fmt.mode == "phase" and (self.t >= self.fmt.T or self.state[side][token][channel] is not None):
            run.rejected += 1
            return
        sign = -1 if neg else 1
        other = "b" if side == "a" else "a"
        for o in range(self.cols if side == "a" else self.rows):
            run.reads += 1
            value = self.read(other, o, channel)
            if value:
                row, col = (token, o) if side == "a" else (o, token)
                run.products.append((self.t, row, col, sign * value))
        if self.norm_column and side == "a":
            run.products.append((self.t, token, self.cols, sign * self.fmt.lut[channel][0]))
        if self.fmt.mode == "phase":
            self.state[side][token][channel] = (self.t, neg)
        else:
            lo, hi = signed_range(self.fmt.count_width)
            c = self.counts[side][token][channel] + sign
            if not lo <= c <= hi:
                run.overflows += 1
                c = max(lo, min(hi, c))
            self.counts[side][token][channel] = c

    def run(self, events) -> MatmulRun:
        run = MatmulRun()
        for ev in events:
            if ev.op == "clear":
                self.clear()
            elif ev.op == "step":
                self.t = min(self.t + 1, (1 << self.fmt.step_width) - 1)
                run.steps += 1
            elif ev.op == "spike":
                self.spike(ev.side, ev.token, ev.channel, ev.neg, run)
            else:
                raise ValueError(f"unknown matmul event op {ev.op!r}")
        return run


# -- canonical event order --------------------------------------------------------------------------
def matmul_events(a_spikes: torch.Tensor, b_spikes: torch.Tensor, *, b_first: bool = False) -> list[MatmulEvent]:
    """Events for spike tensors ``a [S, rows, D]`` and ``b [S, cols, D]`` (values in {-1, 0, 1}):
    ``clear``, then per step every ``a`` spike (token-major), every ``b`` spike, and ``step``.
    ``b_first`` puts side ``b`` first within a step (the result must not change)."""
    if a_spikes.shape[0] != b_spikes.shape[0] or a_spikes.shape[-1] != b_spikes.shape[-1]:
        raise ValueError(f"a {tuple(a_spikes.shape)} and b {tuple(b_spikes.shape)} must share steps and channels")
    events = [MatmulEvent("clear")]
    for t in range(a_spikes.shape[0]):
        sides = [("a", a_spikes[t]), ("b", b_spikes[t])]
        for side, s in (sides[::-1] if b_first else sides):
            for token, channel in torch.nonzero(s).tolist():
                events.append(MatmulEvent("spike", side, token, channel, bool(s[token, channel] < 0)))
        events.append(MatmulEvent("step"))
    return events


# -- the formulas, vectorised -----------------------------------------------------------------------
def spike_steps(spikes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First spike step of each neuron of a one-spike code ``[T, ...]`` (``T`` if none) and its sign."""
    T = spikes.shape[0]
    fired = spikes != 0
    any_ = fired.any(0)
    step = torch.where(any_, fired.to(torch.int8).argmax(0), torch.full_like(any_, T, dtype=torch.int64))
    sign = torch.gather(spikes, 0, step.clamp(max=T - 1).unsqueeze(0)).squeeze(0).to(torch.int64)
    return step.to(torch.int64), torch.where(any_, sign, 0)


def phase_matmul_increments(a_spikes: torch.Tensor, b_spikes: torch.Tensor, B: float,
                            weights: torch.Tensor | None = None) -> torch.Tensor:
    """Float reference: per-step accumulator inputs ``x [T, ..., rows, cols]`` of the trace-driven
    product, by the paper's three-term formula with ``trace_t = B**-(t+1)`` (captured on the first spike
    and frozen)::

        x_t = a_t @ (w * trace_t(b))^T + (w * trace_t(a)) @ b_t^T - (w * trace_pure_t(a)) @ b_t^T

    where ``trace_t`` holds the signed traces captured up to and including step ``t`` and
    ``trace_pure_t(a)`` the part of ``a``'s captured at step ``t`` (the first two terms both count a
    same-step pair; the third takes one copy back). ``a_spikes [T, ..., rows, D]``,
    ``b_spikes [T, ..., cols, D]``; ``sum_t B**-t x_t = (decode(a) * w) @ decode(b)^T / B``.
    """
    T = a_spikes.shape[0]
    D = a_spikes.shape[-1]
    w = torch.ones(D, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    g = torch.pow(torch.tensor(float(B), dtype=torch.float64), -(torch.arange(T, dtype=torch.float64) + 1))
    a = a_spikes.double()
    b = b_spikes.double()
    trace_a = torch.zeros_like(a[0])
    trace_b = torch.zeros_like(b[0])
    xs = []
    for t in range(T):
        pure_a = a[t] * g[t]
        trace_a = trace_a + pure_a
        trace_b = trace_b + b[t] * g[t]
        xs.append((a[t] * w) @ trace_b.transpose(-1, -2) + (trace_a * w) @ b[t].transpose(-1, -2)
                  - (pure_a * w) @ b[t].transpose(-1, -2))
    return torch.stack(xs)


def phase_matmul(a_spikes: torch.Tensor, b_spikes: torch.Tensor, B: float,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_t B**(1-t) x_t`` of :func:`phase_matmul_increments`: the weighted product of the decoded
    one-spike values, ``(decode(a) * w) @ decode(b)^T``."""
    x = phase_matmul_increments(a_spikes, b_spikes, B, weights)
    T = x.shape[0]
    scale = torch.pow(torch.tensor(float(B), dtype=torch.float64), 1 - torch.arange(T, dtype=torch.float64))
    return (x * scale.reshape((T,) + (1,) * (x.dim() - 1))).sum(0)


def sesa_increments(q_spikes: torch.Tensor, k_spikes: torch.Tensor) -> torch.Tensor:
    """SESA (count mode): ``dA_t = Q_t k_t^T + q_t K_t^T - q_t k_t^T`` with running sums
    ``Q_t = sum_{s<=t} q_s``; ``q_spikes [S, ..., rows, D]``, ``k_spikes [S, ..., cols, D]``; returns
    ``[S, ..., rows, cols]`` int64 whose sum over steps is ``Q_S K_S^T``."""
    q = q_spikes.to(torch.int64)
    k = k_spikes.to(torch.int64)
    Q = q.cumsum(0)
    K = k.cumsum(0)
    kt = k.transpose(-1, -2)
    return Q @ kt + q @ K.transpose(-1, -2) - q @ kt
