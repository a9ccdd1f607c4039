"""ST-BIF (SpikeZIP-TF) and windowed BIF (CRNN-SNN) neurons: bit-exact models and float references.

Rule (algorithms.md section 1), state ``v`` (potential) and ``s`` (signed spike tracer)::

    clear:        v = theta // 2 ; s = 0
    accumulate:   v = sat(v + I)                          (saturating, v_width bits)
    update:       up = v >= theta and s < s_max ; down = v < 0 and s > s_min
                  v -= theta * (up - down) ; s += up - down ; emit up - down

``theta // 2`` equals the paper's ``theta/2`` for the integer quantizer: with integer inputs
``floor((X + theta//2)/theta) == floor(X/theta + 1/2)`` for odd and even theta alike.
The update itself cannot overflow (``v >= theta`` gives ``v - theta >= 0``; ``v < 0`` gives
``v + theta < theta``), so only accumulation saturates.

BIF is the same neuron with a window: every ``window`` steps (one sequence element under
s-analog coding) the state is cleared after the update. A neuron that would still fire at that
moment has its remaining spikes cut off; the hardware counts it as a *truncation*.
"""

from __future__ import annotations

import torch

from ..fixed import check_int, signed_width_for
from .base import NeuronModel, StepResult, register_model

__all__ = ["StBif", "Bif", "quantizer", "stbif_reference"]


def quantizer(x: torch.Tensor, theta: float, n_min: int, n_max: int) -> torch.Tensor:
    """The QANN quantizer the ST-BIF neuron replaces: ``theta * clip(floor(x/theta + 1/2), n_min, n_max)``."""
    return theta * torch.clamp(torch.floor(x / theta + 0.5), n_min, n_max)


def stbif_reference(currents: torch.Tensor, theta: float, s_min: int, s_max: int, *,
                    window: int | None = None) -> torch.Tensor:
    """Float reference of the ST-BIF rule exactly as the paper states it (``V(0) = theta/2``).

    ``currents[t, ...]`` is the summed input of step ``t``; returns the output ``theta * xi[t]``.
    With ``window`` the state restarts every ``window`` steps (BIF under s-analog coding).
    """
    v = torch.full(currents.shape[1:], theta / 2, dtype=torch.float64)
    s = torch.zeros(currents.shape[1:], dtype=torch.float64)
    out = torch.zeros(currents.shape, dtype=torch.float64)
    for t in range(currents.shape[0]):
        h = v + currents[t].double()
        xi = (h >= theta) & (s < s_max)
        xi = xi.double() - ((h < 0) & (s > s_min)).double()
        v = h - theta * xi
        s = s + xi
        out[t] = theta * xi
        if window is not None and t % window == window - 1:
            v.fill_(theta / 2)
            s.zero_()
    return out


def _stbif_update(v: torch.Tensor, s: torch.Tensor, theta: int, s_min: int, s_max: int):
    up = (v >= theta) & (s < s_max)
    down = (v < 0) & (s > s_min)
    xi = up.to(torch.int64) - down.to(torch.int64)
    v -= theta * xi
    s += xi
    return xi


@register_model
class StBif(NeuronModel):
    """Spike-triggered bipolar integrate-and-fire neuron (bit-exact integer model).

    Parameters
    ----------
    theta : int
        Threshold (> 0) in units of the input current; equals the quantizer step.
    s_min, s_max : int
        Tracer bounds (``s_min <= 0 <= s_max``, ``s_min < s_max``). Use :meth:`signed` or
        :meth:`unsigned` to derive them from the quantizer's levels.
    v_width : int, optional
        Potential width; default holds ``theta`` plus the largest current plus 2 headroom bits.
    current_width : int
        Width of one signed input current.
    """

    kind = "stbif"

    def __init__(self, theta: int, s_min: int, s_max: int, *, current_width: int = 8,
                 v_width: int | None = None):
        self.theta = check_int("theta", theta, minimum=1)
        self.s_min = check_int("s_min", s_min, maximum=0)
        self.s_max = check_int("s_max", s_max, minimum=0)
        if self.s_max == self.s_min:
            raise ValueError("s_max must be > s_min: a neuron with one level never fires")
        self._init_widths(theta, current_width, v_width)
        self.s_width = signed_width_for(self.s_min, self.s_max)

    @classmethod
    def signed(cls, levels: int, theta: int, **kw) -> "StBif":
        """Bounds of a signed quantizer with ``levels`` levels: ``[-L/2, L/2 - 1]``."""
        check_int("levels", levels, minimum=2, hint="a quantizer needs at least 2 levels")
        if levels % 2:
            raise ValueError(f"levels={levels}: a signed quantizer needs an even number of levels")
        return cls(theta, -levels // 2, levels // 2 - 1, **kw)

    @classmethod
    def unsigned(cls, levels: int, theta: int, **kw) -> "StBif":
        """Bounds of an unsigned quantizer (the ReLU) with ``levels`` levels: ``[0, L - 1]``."""
        check_int("levels", levels, minimum=2, hint="a quantizer needs at least 2 levels")
        return cls(theta, 0, levels - 1, **kw)

    def params(self) -> dict:
        return {"theta": self.theta, "s_min": self.s_min, "s_max": self.s_max,
                "current_width": self.current_width, "v_width": self.v_width}

    def state_fields(self):
        return {"v": (self.v_width, True), "s": (self.s_width, True)}

    def initial_state(self):
        return {"v": self.theta // 2, "s": 0}

    def settle(self, total: torch.Tensor) -> torch.Tensor:
        """Tracer ``S`` after quiescence for a total input ``total`` (no saturation): the integer
        quantizer ``clip(floor((total + theta//2) / theta), s_min, s_max)`` the neuron replaces."""
        return torch.clamp(torch.div(total + self.theta // 2, self.theta, rounding_mode="floor"),
                           self.s_min, self.s_max)

    def quiet(self, state) -> torch.Tensor:
        """Neurons that would not fire in the next update without further input."""
        v, s = state["v"], state["s"]
        return ~(((v >= self.theta) & (s < self.s_max)) | ((v < 0) & (s > self.s_min)))

    def update(self, state, t):
        xi = _stbif_update(state["v"], state["s"], self.theta, self.s_min, self.s_max)
        none = torch.zeros_like(xi, dtype=torch.bool)
        return StepResult(xi.to(torch.int8), none, none)


@register_model
class Bif(StBif):
    """BIF neuron for the crnn flow: ST-BIF whose state is cleared every ``window`` steps.

    At the update of the last step of each window, neurons that are not quiet count as
    truncated (their remaining spikes would be lost); then ``v = theta // 2, s = 0``.
    """

    kind = "bif"

    def __init__(self, theta: int, s_min: int, s_max: int, *, window: int, current_width: int = 8,
                 v_width: int | None = None):
        super().__init__(theta, s_min, s_max, current_width=current_width, v_width=v_width)
        self.window = check_int("window", window, minimum=1)

    @property
    def period(self):
        return self.window

    def params(self):
        return {**super().params(), "window": self.window}

    def update(self, state, t):
        res = super().update(state, t)
        if t % self.window == self.window - 1:
            res.truncated = ~self.quiet(state)
            self.reset_state(state)
        return res
