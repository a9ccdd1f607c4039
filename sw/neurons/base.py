"""The bit-exact neuron-model contract shared by every neuron type and by the neuron-core RTL.

A neuron model is integer arithmetic on a small per-neuron state (always a potential ``v`` plus
model-specific fields). One timestep is:

1. ``accumulate``: each input current of the step is added to ``v`` with saturation to ``v_width``
   bits, one addition at a time in arrival order (saturation makes the order matter);
2. ``update``: the end-of-step rule (fire, reset, tracer, B-multiplier, window handling) for step
   index ``t`` (counted from the last clear).

The RTL neuron core (:class:`spikeforge.hw.neuron_core.NeuronCore`) implements exactly these two
operations; the models here are the golden reference its traces are compared against.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..fixed import check_int, check_width, saturate, signed_range, signed_width_for

__all__ = ["NeuronModel", "StepResult", "RunResult", "model_from_dict", "register_model"]

_REGISTRY: dict[str, type["NeuronModel"]] = {}


def register_model(cls):
    """Class decorator: make a model constructible from its ``to_dict()`` form."""
    _REGISTRY[cls.kind] = cls
    return cls


def model_from_dict(d: dict) -> "NeuronModel":
    """Rebuild a neuron model from :meth:`NeuronModel.to_dict` output (validates every parameter)."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in _REGISTRY:
        raise ValueError(f"unknown neuron model kind {kind!r}; known kinds: {sorted(_REGISTRY)}")
    return _REGISTRY[kind](**d)


@dataclass
class StepResult:
    """What one ``update`` produced: spikes (+1/-1/0, int8) and per-neuron flags."""
    spikes: torch.Tensor
    overflow: torch.Tensor
    truncated: torch.Tensor


@dataclass
class RunResult:
    """A whole run: ``spikes[t, ...]`` (int8), final state, and the hardware counters' values."""
    spikes: torch.Tensor
    state: dict[str, torch.Tensor]
    overflows: int
    truncations: int


class NeuronModel(abc.ABC):
    """Base class of the bit-exact neuron models.

    Members
    -------
    kind : str
        Short name used in configuration files and on the command line.
    v_width : int
        Width in bits of the signed potential ``v``; every addition to it saturates.
    current_width : int
        Width of one signed input current (``<= v_width``).
    """

    kind: ClassVar[str]
    v_width: int
    current_width: int

    # -- contract -------------------------------------------------------------------------------
    @property
    def period(self) -> int | None:
        """Number of steps after which the rule repeats (window length), or ``None``."""
        return None

    @abc.abstractmethod
    def state_fields(self) -> dict[str, tuple[int, bool]]:
        """Per-neuron state fields: ``{name: (width, signed)}``; ``v`` always first."""

    @abc.abstractmethod
    def initial_state(self) -> dict[str, int]:
        """Value of every state field after a clear."""

    @abc.abstractmethod
    def update(self, state: dict[str, torch.Tensor], t: int) -> StepResult:
        """Apply the end-of-step rule for step ``t`` in place; return the spikes and flags."""

    @abc.abstractmethod
    def params(self) -> dict:
        """Constructor arguments (JSON-serialisable)."""

    # -- shared behaviour -------------------------------------------------------------------------
    def _init_widths(self, theta: int, current_width: int, v_width: int | None) -> None:
        """Set ``current_width`` and ``v_width`` for a threshold model: by default ``v`` holds
        ``theta`` plus one full-scale current with a bit of headroom; a given width must hold
        ``+-theta`` and be at least as wide as a current."""
        self.current_width = check_int("current_width", current_width, minimum=2, maximum=48)
        half = 1 << (current_width - 1)
        self.v_width = (signed_width_for(-half, theta + half) + 1 if v_width is None
                        else check_int("v_width", v_width, minimum=2, maximum=62))
        check_width("v_width", self.v_width, -theta, theta, "the threshold theta and -theta")
        if self.current_width > self.v_width:
            raise ValueError(f"current_width={current_width} exceeds v_width={self.v_width}: "
                             f"raise v_width to at least {current_width}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, **self.params()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.params() == other.params()

    def __hash__(self):
        return hash((self.kind, tuple(sorted(self.params().items()))))

    def init_state(self, shape) -> dict[str, torch.Tensor]:
        """Fresh state tensors (int64) of the given neuron shape."""
        return {k: torch.full(tuple(shape), v, dtype=torch.int64) for k, v in self.initial_state().items()}

    def reset_state(self, state: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> None:
        """Reset ``state`` (where ``mask``) to the initial values, in place."""
        for k, v in self.initial_state().items():
            if mask is None:
                state[k].fill_(v)
            else:
                state[k][mask] = v

    def check_currents(self, currents: torch.Tensor) -> None:
        """Raise ``ValueError`` if any current does not fit ``current_width``."""
        lo, hi = signed_range(self.current_width)
        if currents.numel() and (int(currents.min()) < lo or int(currents.max()) > hi):
            raise ValueError(
                f"input current out of range for current_width={self.current_width} ([{lo}, {hi}]): "
                f"got [{int(currents.min())}, {int(currents.max())}]; raise current_width or scale the input")

    def accumulate(self, state: dict[str, torch.Tensor], current: torch.Tensor) -> torch.Tensor:
        """Add one current per neuron to ``v`` with saturation, in place; return the overflow mask."""
        state["v"], overflow = saturate(state["v"] + current.to(torch.int64), self.v_width)
        return overflow

    def run(self, currents: torch.Tensor, steps: int | None = None) -> RunResult:
        """Run the model from a cleared state.

        Parameters
        ----------
        currents : integer tensor ``[T, K, *neurons]`` or ``[T, *neurons]``
            ``currents[t, k]`` is the k-th current each neuron receives in step ``t`` (0 = none).
        steps : int, optional
            Total number of steps to run (>= T); extra steps get no input (the neurons drain).
        """
        if currents.dim() < 2:
            raise ValueError("currents must have shape [T, K, *neurons] or [T, *neurons]")
        if currents.dtype.is_floating_point:
            raise TypeError("the bit-exact model takes integer currents; quantise first")
        self.check_currents(currents)
        n_in = currents.shape[0]
        steps = n_in if steps is None else steps
        if steps < n_in:
            raise ValueError(f"steps={steps} is shorter than the input ({n_in} steps)")
        neuron_shape = currents.shape[2:] if currents.dim() >= 3 else currents.shape[1:]
        if currents.dim() == 2:
            currents = currents.unsqueeze(1)
        state = self.init_state(neuron_shape)
        spikes = torch.zeros((steps, *neuron_shape), dtype=torch.int8)
        overflows = truncations = 0
        for t in range(steps):
            if t < n_in:
                for k in range(currents.shape[1]):
                    overflows += int(self.accumulate(state, currents[t, k]).sum())
            res = self.update(state, t)
            spikes[t] = res.spikes
            overflows += int(res.overflow.sum())
            truncations += int(res.truncated.sum())
        return RunResult(spikes, state, overflows, truncations)
