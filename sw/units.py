"""Bit-exact softmax and LayerNorm units: the integer ``f`` the integer QANN, the SNN reference and the
function-unit RTL share (three copies, as every block: :func:`unit_function_float` is the float
reference, :func:`unit_function` the bit-exact model).

A unit maps the integer input totals ``t`` of one row (``C`` values, real value ``t * in_scale``) to
output levels ``clamp(floor(y / out_step + 1/2), n_min, n_max)``; only integer operations are used, on
constants that are a function of the node's parameters (:func:`unit_constants`, IEEE double arithmetic
rounded once to integers):

**softmax** (``F = G = 16`` fraction bits):

* ``m = max(t)``, ``e_i = EXP[min(m - t_i, D)]`` with the table ``EXP[d] = round(2^F exp(-d in_scale))``
  for ``d < D`` (``D`` = the first ``d`` where it is 0; ``EXP[D] = 0``);
* ``s = sum(e)`` (``>= 2^F``: the maximum contributes ``2^F``);
* ``level_i = floor((e_i A + s 2^(G-1)) / (s 2^G))`` with ``A = round(2^G / out_step)``.

**LayerNorm** (``G = 16``, ``P = 8``):

* ``S1 = sum(t)``, ``V = C sum(t^2) - S1^2`` (= ``C^2`` times the row variance, exact),
  ``E = round(C^2 eps / in_scale^2)``;
* ``q = isqrt((V + E) 4^P)`` (integer square root: ``floor(2^P sqrt(V + E))``);
* ``g_i = round(2^G gamma_i / out_step)``, ``b_i = round(2^G beta_i / out_step) + 2^(G-1)``;
* ``level_i = floor(((C t_i - S1) g_i 2^P + b_i q) / (q 2^G))`` (``q = 0``: ``floor(b_i / 2^G)``).

Every division is a floor division of integers (the RTL's divider computes the same quotient). The
error against the float ``f`` is measured in docs/results/units.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["unit_function", "unit_function_float", "unit_constants", "UnitConstants", "isqrt",
           "SOFTMAX_FRAC_BITS", "OUT_FRAC_BITS", "SQRT_FRAC_BITS", "MAX_EXP_TABLE"]

SOFTMAX_FRAC_BITS = 16     # F: fraction bits of exp
OUT_FRAC_BITS = 16         # G: fraction bits of the output scaling
SQRT_FRAC_BITS = 8         # P: fraction bits of the square root
MAX_EXP_TABLE = 1 << 16    # entries of the exp table at most (in_scale >= 16 ln 2 / 65536)


@dataclass(frozen=True, eq=False)
class UnitConstants:
    """The integer constants of one unit (see the module docstring)."""
    op: str
    n_min: int
    n_max: int
    exp_table: np.ndarray | None = None     # softmax: EXP[0..D], EXP[D] = 0
    scale: int = 0                          # softmax: A
    eps: int = 0                            # LayerNorm: E
    gain: np.ndarray | None = None          # LayerNorm: g [C]
    offset: np.ndarray | None = None        # LayerNorm: b [C]


def unit_constants(node) -> UnitConstants:
    """The integer constants of a ``softmax`` / ``layernorm`` node (refuses parameters they cannot hold)."""
    p = node.params
    n_min, n_max = int(p["n_min"]), int(p["n_max"])
    if node.op == "softmax":
        step = float(p["in_scale"])
        if not step > 0:
            raise ValueError(f"{node.describe()}: in_scale={step} must be > 0")
        size = math.ceil((SOFTMAX_FRAC_BITS + 1) * math.log(2) / step) + 1
        if size > MAX_EXP_TABLE:
            raise ValueError(f"{node.describe()}: in_scale={step:.3g} needs an exp table of {size} entries, "
                             f"more than {MAX_EXP_TABLE}; quantize the scores more coarsely")
        table = np.array([round(math.ldexp(math.exp(-d * step), SOFTMAX_FRAC_BITS)) for d in range(size)], np.int64)
        zero = int(np.argmax(table == 0)) if (table == 0).any() else size
        table = np.concatenate([table[:zero], [0]])
        return UnitConstants("softmax", n_min, n_max, exp_table=table,
                             scale=round(math.ldexp(1.0, OUT_FRAC_BITS) / float(p["out_step"])))
    if node.op == "layernorm":
        c = node.shape[-1]
        step, out = float(p["in_scale"]), float(p["out_step"])
        gamma = np.asarray(node.arrays["gamma"], np.float64)
        beta = np.asarray(node.arrays["beta"], np.float64)
        g = np.array([round(math.ldexp(float(v) / out, OUT_FRAC_BITS)) for v in gamma], np.int64)
        b = np.array([round(math.ldexp(float(v) / out, OUT_FRAC_BITS)) for v in beta], np.int64)
        return UnitConstants("layernorm", n_min, n_max, eps=round(c * c * float(p["eps"]) / (step * step)),
                             gain=g, offset=b + (1 << (OUT_FRAC_BITS - 1)))
    raise ValueError(f"{node.describe()} is not a function unit")


def isqrt(x: torch.Tensor) -> torch.Tensor:
    """``floor(sqrt(x))`` of non-negative int64 values below 2^62, exactly (a float estimate corrected by
    integer comparisons)."""
    if bool((x < 0).any()):
        raise ValueError("isqrt of a negative value")
    r = torch.floor(torch.sqrt(x.double())).to(torch.int64)
    for _ in range(2):
        r = torch.where(r * r > x, r - 1, r)
        r = torch.where((r + 1) * (r + 1) <= x, r + 1, r)
    return r


def unit_function(node, total: torch.Tensor, constants: UnitConstants | None = None) -> torch.Tensor:
    """Bit-exact ``f`` of a softmax / LayerNorm unit: integer totals ``[B, R, C]`` -> output levels (int64)."""
    k = constants or unit_constants(node)
    t = total.to(torch.int64)
    G = OUT_FRAC_BITS
    if k.op == "softmax":
        table = torch.from_numpy(k.exp_table)
        d = torch.clamp(t.max(-1, keepdim=True).values - t, max=len(table) - 1)
        e = table[d]
        s = e.sum(-1, keepdim=True)
        level = torch.div(e * k.scale + s * (1 << (G - 1)), s << G, rounding_mode="floor")
    else:
        C = t.shape[-1]
        s1 = t.sum(-1, keepdim=True)
        v = C * (t * t).sum(-1, keepdim=True) - s1 * s1
        q = isqrt((v + k.eps) << (2 * SQRT_FRAC_BITS))
        g, b = torch.from_numpy(k.gain), torch.from_numpy(k.offset)
        num = (C * t - s1) * g * (1 << SQRT_FRAC_BITS) + b * q
        safe = torch.clamp(q, min=1) << G
        level = torch.where(q > 0, torch.div(num, safe, rounding_mode="floor"),
                            torch.div(b, 1 << G, rounding_mode="floor").expand_as(num))
    return torch.clamp(level, k.n_min, k.n_max)


def unit_function_float(node, total: torch.Tensor) -> torch.Tensor:
    """The float reference ``f``: softmax / LayerNorm of ``total * in_scale`` in float64, then the output
    quantizer (what the QANN computes in floating point)."""
    p = node.params
    x = total.double() * p["in_scale"]
    if node.op == "softmax":
        y = torch.softmax(x, -1)
    else:
        y = F.layer_norm(x, (x.shape[-1],), torch.from_numpy(node.arrays["gamma"]),
                         torch.from_numpy(node.arrays["beta"]), p["eps"])
    return torch.clamp(torch.floor(y / p["out_step"] + 0.5), p["n_min"], p["n_max"]).to(torch.int64)
