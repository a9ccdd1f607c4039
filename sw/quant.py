"""LSQ quantizer for quantization-aware training of the spikezip QANN (algorithms.md section 1).

``Quantizer`` is the activation quantizer an ST-BIF neuron replaces exactly:
``Q(x) = s * clip(floor(x/s + 1/2), n_min, n_max)`` with a learned step ``s`` (LSQ: initialised to
``2 mean|x| / sqrt(n_max)`` on the first training batch, gradient scaled by ``1/sqrt(numel * n_max)``,
straight-through rounding). Signed: ``[-L/2, L/2 - 1]``; unsigned (after softmax, after the MLP's
ReLU): ``[0, L - 1]``. The front end recognises it as the place where a neuron layer goes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .fixed import check_int

__all__ = ["Quantizer", "quantizer_bounds", "insert_quantizers", "quantizers"]


def quantizer_bounds(levels: int, signed: bool) -> tuple[int, int]:
    """``(n_min, n_max)`` of a quantizer with ``levels`` levels."""
    check_int("levels", levels, minimum=2, hint="a quantizer needs at least 2 levels")
    if signed:
        if levels % 2:
            raise ValueError(f"levels={levels}: a signed quantizer needs an even number of levels")
        return -levels // 2, levels // 2 - 1
    return 0, levels - 1


class Quantizer(nn.Module):
    """LSQ activation quantizer with ``levels`` levels, signed or unsigned.

    Members
    -------
    step : nn.Parameter
        The learned step ``s`` (> 0 after initialisation).
    n_min, n_max : int
        Integer clip range of ``x / s``.
    """

    def __init__(self, levels: int, signed: bool = True):
        super().__init__()
        self.levels = levels
        self.signed = bool(signed)
        self.n_min, self.n_max = quantizer_bounds(levels, signed)
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialised", torch.tensor(False))

    def extra_repr(self) -> str:
        return f"levels={self.levels}, signed={self.signed}, step={float(self.step):.4g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.initialised):
            with torch.no_grad():
                self.step.copy_((2 * x.abs().mean() / math.sqrt(self.n_max)).clamp_min(1e-6))
                self.initialised.fill_(True)
        grad_scale = 1.0 / math.sqrt(x.numel() / max(1, x.shape[0]) * self.n_max)
        s = self.step * grad_scale + (self.step - self.step * grad_scale).detach()
        v = x / s
        v = (torch.floor(v + 0.5) - v).detach() + v
        return torch.clamp(v, self.n_min, self.n_max) * s


def quantizers(model: nn.Module) -> dict[str, Quantizer]:
    """Every :class:`Quantizer` of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Quantizer)}


def insert_quantizers(model: nn.Module, plan: dict[str, Quantizer]) -> nn.Module:
    """Replace the modules named in ``plan`` (usually ``nn.Identity`` slots) by the given quantizers.

    The same :class:`Quantizer` instance may be given for several slots: they then share one step
    (the residual stream needs that, so its additions stay integer).
    """
    for name, q in plan.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not hasattr(parent, attr):
            raise KeyError(f"{name!r} is not a submodule of {type(model).__name__}")
        setattr(parent, attr, q)
    return model
