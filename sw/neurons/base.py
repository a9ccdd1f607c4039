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

import numpy as np
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
    if not isinstance(kind, str) or kind not in _REGISTRY:
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

    def run(self, currents, steps: int | None = None, *, stacked: bool | None = None) -> RunResult:
        """Run the model from a cleared state.

        Parameters
        ----------
        currents : integer ``torch.Tensor`` or ``numpy.ndarray`` (anything ``numpy.asarray`` takes)
            * ``[T, *neurons]`` (``stacked=False``): ``currents[t, n]`` is the one current neuron ``n``
              receives in step ``t`` (0 = none);
            * ``[T, K, *neurons]`` (``stacked=True``): ``currents[t, k, n]`` is the k-th of ``K`` currents
              neuron ``n`` receives in step ``t``. They are added to ``v`` one at a time in ``k`` order,
              each with saturation (what the neuron core does with ``K`` ACCUMULATE beats), which is
              not the same as adding their sum once when ``v`` saturates.

            Values must fit ``current_width`` bits signed; integer dtypes only (quantise floats first).
        steps : int, optional
            Total number of steps to run (>= T); extra steps get no input (the neurons drain).
        stacked : bool, optional
            Whether axis 1 is the ``K`` axis. A 2-D input is ``[T, neurons]`` unless ``stacked=True``
            says it is ``[T, K]`` (then there are no neurons, which is refused). An input of 3 or more
            dimensions is ambiguous (``[T, K, N]`` or a ``[T, H, W]`` neuron grid) and must say which.

        Raises ``ValueError`` for shapes that do not fit (naming the expected shapes), ``TypeError``
        for non-integer currents or a non-integer ``steps``.
        """
        currents = _as_currents(currents)
        if currents.dim() < 2:
            raise ValueError(f"currents has shape {tuple(currents.shape)}; expected [T, *neurons] (one current per "
                             "neuron and step) or, with stacked=True, [T, K, *neurons] (K currents per neuron and "
                             "step)")
        if stacked is None:
            if currents.dim() > 2:
                raise ValueError(
                    f"currents of shape {tuple(currents.shape)} is ambiguous: pass stacked=True if it is "
                    f"[T, K, *neurons] = [{currents.shape[0]}, {currents.shape[1]}, "
                    f"{', '.join(map(str, currents.shape[2:]))}] (K={currents.shape[1]} currents per neuron and "
                    f"step, added one at a time) or stacked=False if it is [T, *neurons] = [{currents.shape[0]}, "
                    f"{', '.join(map(str, currents.shape[1:]))}] (one current per neuron and step)")
            stacked = False
        elif not isinstance(stacked, bool):
            raise TypeError(f"stacked must be True or False, not {stacked!r}")
        if stacked and currents.dim() < 3:
            raise ValueError(f"stacked=True reads currents as [T, K, *neurons] but its shape {tuple(currents.shape)} "
                             "has no neuron axis; use [T, K, N], or stacked=False for [T, N]")
        self.check_currents(currents)
        n_in = currents.shape[0]
        if steps is None:
            steps = n_in
        elif isinstance(steps, bool) or not isinstance(steps, int):
            raise TypeError(f"steps must be an integer number of steps, not {steps!r}")
        if steps < n_in:
            raise ValueError(f"steps={steps} is shorter than the input ({n_in} steps)")
        if not stacked:
            currents = currents.unsqueeze(1)
        neuron_shape = currents.shape[2:]
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


def _as_currents(currents) -> torch.Tensor:
    """``currents`` as an int64 tensor: torch tensors and numpy arrays (or nested lists) of an integer
    dtype; ``TypeError`` for floats, booleans and anything else."""
    if not isinstance(currents, torch.Tensor):
        try:
            a = np.asarray(currents)
        except (ValueError, TypeError) as e:
            raise TypeError(f"currents must be an integer tensor or array, not {type(currents).__name__} "
                            f"({e})") from None
        if a.dtype.kind not in "iu":
            raise TypeError(f"currents must hold integers, got a {type(currents).__name__} of dtype {a.dtype}: "
                            "the bit-exact model takes integer currents; quantise first (e.g. quantize_input)")
        if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
            raise ValueError("currents hold values beyond int64")
        return torch.from_numpy(np.array(a, dtype=np.int64))
    if currents.dtype.is_floating_point or currents.dtype.is_complex:
        raise TypeError(f"the bit-exact model takes integer currents, got dtype {currents.dtype}; quantise first "
                        "(e.g. quantize_input)")
    if currents.dtype == torch.bool:
        raise TypeError("currents must be integers, not booleans")
    return currents
