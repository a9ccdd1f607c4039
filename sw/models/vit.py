"""The embedded default transformer: a small ViT for 8x8 digits, in the two forms the flows need.

* ``norm="layernorm"``: pre-norm ViT with LayerNorm and ReLU. With :func:`qann_plan`'s quantizers in
  its ``nn.Identity`` slots it is the spikezip QANN (LSQ quantizers after patch embedding, norms,
  q/k/v, softmax (unsigned), attn·V, projection, MLP activation (unsigned) and fc2; the residual
  stream's quantizers share one step so residual additions stay integer).
* ``norm="batchnorm"``: the same network with BatchNorm over channels instead of LayerNorm (foldable
  into the next linear), the spikedattention source ANN.

Input ``[N, 8, 8]`` in [0, 1] -> 16 patches of 2x2 -> linear embedding + learned positions ->
``depth`` blocks (multi-head attention, ReLU MLP) -> norm -> mean over tokens -> linear classifier.
"""

from __future__ import annotations

from torch import nn
import torch

from ..quant import Quantizer

__all__ = ["DigitsViT", "qann_plan", "PATCHES", "PATCH_DIM"]

PATCHES, PATCH_DIM = 16, 4


class TokenBatchNorm(nn.Module):
    """BatchNorm over the channel axis of ``[N, tokens, channels]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x):
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


def _norm(kind: str, dim: int) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim)
    if kind == "batchnorm":
        return TokenBatchNorm(dim)
    raise ValueError(f"norm={kind!r}: choose 'layernorm' or 'batchnorm'")


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections and quantizer slots."""

    def __init__(self, dim: int, heads: int, tokens: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not a multiple of heads={heads}")
        self.heads, self.tokens, self.head_dim = heads, tokens, dim // heads
        self.scale = self.head_dim ** -0.5
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.q_quant, self.k_quant, self.v_quant = nn.Identity(), nn.Identity(), nn.Identity()
        self.attn_quant, self.out_quant, self.proj_quant = nn.Identity(), nn.Identity(), nn.Identity()

    def split(self, x):
        return x.reshape(-1, self.tokens, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x):
        q = self.split(self.q_quant(self.q(x)))
        k = self.split(self.k_quant(self.k(x)))
        v = self.split(self.v_quant(self.v(x)))
        a = self.attn_quant(torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1))
        o = self.out_quant(a @ v).transpose(1, 2).reshape(-1, self.tokens, self.heads * self.head_dim)
        return self.proj_quant(self.proj(o))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, tokens: int, hidden: int, norm: str):
        super().__init__()
        self.norm1, self.norm2 = _norm(norm, dim), _norm(norm, dim)
        self.norm1_quant, self.norm2_quant = nn.Identity(), nn.Identity()
        self.attn = Attention(dim, heads, tokens)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim)
        self.act_quant, self.fc2_quant = nn.Identity(), nn.Identity()

    def forward(self, h):
        h = h + self.attn(self.norm1_quant(self.norm1(h)))
        return h + self.fc2_quant(self.fc2(self.act_quant(self.act(self.fc1(self.norm2_quant(self.norm2(h)))))))


class DigitsViT(nn.Module):
    """Vision transformer for 8x8 digits (see the module docstring).

    Parameters
    ----------
    dim, heads, depth, hidden : int
        Embedding width, attention heads, blocks, MLP hidden width.
    norm : {"layernorm", "batchnorm"}
        Normalisation (BatchNorm for the spikedattention flow).
    """

    def __init__(self, dim: int = 32, heads: int = 2, depth: int = 2, hidden: int = 64, norm: str = "layernorm",
                 classes: int = 10):
        super().__init__()
        self.config = {"dim": dim, "heads": heads, "depth": depth, "hidden": hidden, "norm": norm,
                       "classes": classes}
        self.embed = nn.Linear(PATCH_DIM, dim)
        self.pos = nn.Parameter(torch.zeros(PATCHES, dim))
        self.embed_quant = nn.Identity()
        self.blocks = nn.ModuleList(Block(dim, heads, PATCHES, hidden, norm) for _ in range(depth))
        self.norm, self.norm_quant = _norm(norm, dim), nn.Identity()
        self.head = nn.Linear(dim, classes)

    @staticmethod
    def patches(x):
        return x.reshape(-1, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(-1, PATCHES, PATCH_DIM)

    def forward(self, x):
        h = self.embed_quant(self.embed(self.patches(x)) + self.pos)
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.norm_quant(self.norm(h)).mean(1))


def qann_plan(model: DigitsViT, levels: int) -> dict[str, Quantizer]:
    """Quantizers for every slot of ``model`` (the SpikeZIP-TF placement) with ``levels`` levels."""
    residual = Quantizer(levels, signed=True)
    plan = {"embed_quant": residual, "norm_quant": Quantizer(levels, signed=True)}
    for i in range(len(model.blocks)):
        b = f"blocks.{i}"
        plan.update({f"{b}.norm1_quant": Quantizer(levels), f"{b}.norm2_quant": Quantizer(levels),
                     f"{b}.attn.q_quant": Quantizer(levels), f"{b}.attn.k_quant": Quantizer(levels),
                     f"{b}.attn.v_quant": Quantizer(levels), f"{b}.attn.attn_quant": Quantizer(levels, signed=False),
                     f"{b}.attn.out_quant": Quantizer(levels), f"{b}.attn.proj_quant": residual,
                     f"{b}.act_quant": Quantizer(levels, signed=False), f"{b}.fc2_quant": residual})
    return plan
