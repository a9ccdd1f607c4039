"""Synthetic count-coded networks of any size, for compiler scaling measurements (random integer weights).

:func:`vit_ir` builds the IR a spikezip conversion of a ViT of the given size would produce: per block
LayerNorm unit -> q/k/v linears -> QK^T matmul -> softmax unit -> A·V matmul -> projection -> residual
add -> LayerNorm -> MLP (fc1, ReLU neurons, fc2) -> residual add; then LayerNorm, token mean and the
head. Weights are random int8; thresholds are plausible but the network computes nothing meaningful.
Building does not validate the 22 M weights of a ViT-Small one by one (``validate=False`` skips it).
"""

from __future__ import annotations

import numpy as np

from ..ir import Network, Node, Port

__all__ = ["vit_ir"]


def _neuron(name, src, size, theta, signed=True):
    model = {"kind": "stbif", "theta": int(theta), "s_min": -8 if signed else 0, "s_max": 7 if signed else 15,
             "current_width": 16, "v_width": 24}
    return Node(name, "neuron", [Port(src)], (size,), {"model": model, "step": 1.0})


def vit_ir(*, tokens: int = 197, dim: int = 384, depth: int = 12, heads: int = 6, hidden: int = 1536,
           patch_values: int = 768, classes: int = 1000, seed: int = 0, validate: bool = False) -> Network:
    """A ViT-shaped IR (ViT-Small defaults: 197 tokens, dim 384, 12 blocks, 6 heads, MLP 1536)."""
    rng = np.random.default_rng(seed)
    w = lambda m, k: rng.integers(-127, 128, size=(m, k), dtype=np.int64)       # noqa: E731
    nodes = [Node("input", "input", [], (tokens, patch_values), {"scale": 1 / 16, "encoding": "analog", "low": 0,
                                                                 "high": 16})]
    unit = {"in_scale": 1.0, "out_step": 1.0, "n_min": -8, "n_max": 7}

    def linear(name, src, rows, m, k, index=None):
        nodes.append(Node(name, "linear", [Port(src, index)], (rows, m), {"weight_bits": 8}, {"weight": w(m, k)}))
        nodes.append(_neuron(f"{name}_quant", name, rows * m, 300))
        return f"{name}_quant"

    def layernorm(name, src):
        nodes.append(Node(name, "layernorm", [Port(src)], (tokens, dim), dict(unit, eps=1e-5),
                          {"gamma": np.ones(dim), "beta": np.zeros(dim)}))
        nodes.append(_neuron(f"{name}_quant", name, tokens * dim, 1))
        return f"{name}_quant"

    x = linear("embed", "input", tokens, dim, patch_values)
    dh = dim // heads
    tok = np.arange(tokens)[:, None] * dim
    for b in range(depth):
        h = layernorm(f"b{b}_norm1", x)
        q, k, v = (linear(f"b{b}_{n}", h, tokens, dim, dim) for n in "qkv")
        # [heads, tokens, dh] x [heads, dh, tokens]: gather maps split heads (and transpose k)
        head = np.arange(heads)[:, None, None] * dh
        qi = tok[None] + head + np.arange(dh)[None, None, :]                              # [H, T, dh]
        ki = (np.arange(tokens)[None, None, :] * dim) + head + np.arange(dh)[None, :, None]  # [H, dh, T]
        nodes.append(Node(f"b{b}_qk", "matmul", [Port(q, qi), Port(k, ki)], (heads, tokens, tokens), {"gain": 1}))
        nodes.append(Node(f"b{b}_softmax", "softmax", [Port(f"b{b}_qk")], (heads * tokens, tokens), dict(unit)))
        a = f"b{b}_attn_quant"
        nodes.append(_neuron(a, f"b{b}_softmax", heads * tokens * tokens, 1, signed=False))
        vi = (np.arange(tokens)[None, :, None] * dim) + head + np.arange(dh)[None, None, :]  # [H, T, dh]
        nodes.append(Node(f"b{b}_av", "matmul", [Port(a), Port(v, vi)], (heads, tokens, dh), {"gain": 64}))
        nodes.append(_neuron(f"b{b}_av_quant", f"b{b}_av", heads * tokens * dh, 300))
        # heads back to [tokens, dim]
        back = (np.arange(heads)[None, :, None] * tokens * dh + np.arange(tokens)[:, None, None] * dh
                + np.arange(dh)[None, None, :]).reshape(tokens, dim)
        p = linear(f"b{b}_proj", f"b{b}_av_quant", tokens, dim, dim, index=back)
        nodes.append(Node(f"b{b}_add1", "add", [Port(x), Port(p)], (tokens * dim,)))
        h = layernorm(f"b{b}_norm2", f"b{b}_add1")
        f1 = linear(f"b{b}_fc1", h, tokens, hidden, dim)
        f2 = linear(f"b{b}_fc2", f1, tokens, dim, hidden)
        nodes.append(Node(f"b{b}_add2", "add", [Port(f"b{b}_add1"), Port(f2)], (tokens * dim,)))
        x = f"b{b}_add2"
    n = layernorm("norm", x)
    nodes.append(Node("mean", "sum", [Port(n, np.arange(tokens * dim).reshape(tokens, dim).T.copy())], (dim,)))
    nodes.append(Node("head", "linear", [Port("mean", np.arange(dim)[None, :])], (1, classes), {"weight_bits": 8},
                      {"weight": w(classes, dim)}))
    net = Network("spikezip", nodes, "head", 1.0)
    return net.validate() if validate else net
