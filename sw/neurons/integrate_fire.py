"""Plain integrate-and-fire neuron (rate coding): bit-exact model and float reference.

Rule, state ``v`` only::

    clear:       v = 0
    accumulate:  v = sat(v + I)
    update:      if v >= theta: emit +1 and v -= theta   (reset="subtract")
                                            or v = 0     (reset="zero")
"""

from __future__ import annotations

import torch

from ..fixed import check_int
from .base import NeuronModel, StepResult, register_model

__all__ = ["IntegrateFire", "if_reference"]

_RESETS = ("subtract", "zero")


def if_reference(currents: torch.Tensor, theta: float, reset: str = "subtract") -> torch.Tensor:
    """Float reference: ``currents[t, ...]`` summed per step; returns spikes ``{0, 1}`` per step."""
    v = torch.zeros(currents.shape[1:], dtype=torch.float64)
    out = torch.zeros(currents.shape, dtype=torch.float64)
    for t in range(currents.shape[0]):
        v = v + currents[t].double()
        fire = v >= theta
        v = torch.where(fire, v - theta if reset == "subtract" else torch.zeros_like(v), v)
        out[t] = fire.double()
    return out


@register_model
class IntegrateFire(NeuronModel):
    """Plain (unipolar) integrate-and-fire neuron.

    Parameters
    ----------
    theta : int
        Threshold (> 0).
    reset : {"subtract", "zero"}
        Reset by subtraction (the conversion-friendly default) or to zero.
    current_width, v_width : int
        Signed widths of one input current and of the potential.
    """

    kind = "if"

    def __init__(self, theta: int, *, reset: str = "subtract", current_width: int = 8,
                 v_width: int | None = None):
        self.theta = check_int("theta", theta, minimum=1)
        if reset not in _RESETS:
            raise ValueError(f"reset={reset!r} is not supported; choose one of {_RESETS}")
        self.reset = reset
        self._init_widths(theta, current_width, v_width)

    def params(self):
        return {"theta": self.theta, "reset": self.reset, "current_width": self.current_width,
                "v_width": self.v_width}

    def state_fields(self):
        return {"v": (self.v_width, True)}

    def initial_state(self):
        return {"v": 0}

    def update(self, state, t):
        v = state["v"]
        fire = v >= self.theta
        if self.reset == "subtract":
            v -= self.theta * fire.to(torch.int64)
        else:
            v[fire] = 0
        none = torch.zeros_like(fire)
        return StepResult(fire.to(torch.int8), none, none)
