"""The crnn flow's embedded models: a quantized RNN on sequential digits and a small quantized CNN.

* :class:`QuantRNN` -- the QRNN cell of algorithms.md section 2, run over a sequence::

      h_n = s * clip(floor((Wx x_n + Wh h_{n-1} + b) / s + 1/2), 0, L - 1),      h_0 = 0

  with an LSQ :class:`~spikeforge.sw.quant.Quantizer` (unsigned, ``L`` levels, step ``s``). The
  converter treats the module as one operator (a leaf for torch.fx), so its time loop is not unrolled:
  it becomes one layer of RBIF neurons that runs a window of sub-steps per sequence element.
* :class:`DigitsRNN` -- ``QuantRNN`` over the rows (8 elements of 8 pixels) or the pixels (64 elements of
  1) of a digit, classifier on the last hidden state.
* :class:`DigitsCNN` -- conv 3x3 (8 ch) -> ReLU -> Quantizer -> conv 3x3 stride 2 (16 ch) -> ReLU ->
  Quantizer -> linear on the flattened 16 x 4 x 4 map: the QCNN the crnn flow converts to BIF (ST-BIF) layers.
"""

from __future__ import annotations

import torch
from torch import nn

from ..quant import Quantizer
from .digits import digit_sequences

__all__ = ["QuantRNN", "DigitsRNN", "DigitsCNN"]


class QuantRNN(nn.Module):
    """Quantized Elman RNN: ``x [N, steps, input_size] -> h [N, steps, hidden]`` (see the module docstring)."""

    def __init__(self, input_size: int, hidden: int, levels: int):
        super().__init__()
        self.input_size, self.hidden, self.levels = input_size, hidden, levels
        self.wx = nn.Linear(input_size, hidden)
        self.wh = nn.Linear(hidden, hidden, bias=False)
        self.quant = Quantizer(levels, signed=False)

    def forward(self, x):
        h = x.new_zeros(x.shape[0], self.hidden)
        out = []
        for n in range(x.shape[1]):
            h = self.quant(self.wx(x[:, n]) + self.wh(h))
            out.append(h)
        return torch.stack(out, 1)


class DigitsRNN(nn.Module):
    """A QRNN classifier of digits read as a sequence (``order`` = ``"rows"`` or ``"pixels"``)."""

    def __init__(self, order: str = "rows", hidden: int = 64, levels: int = 16, classes: int = 10):
        super().__init__()
        self.config = {"order": order, "hidden": hidden, "levels": levels, "classes": classes}
        self.order = order
        features = 8 if order == "rows" else 1
        self.rnn = QuantRNN(features, hidden, levels)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.rnn(digit_sequences(x, self.order))[:, -1])


class DigitsCNN(nn.Module):
    """A small QCNN for 8x8 digits (see the module docstring)."""

    def __init__(self, levels: int = 16, c1: int = 8, c2: int = 16, classes: int = 10):
        super().__init__()
        self.config = {"levels": levels, "c1": c1, "c2": c2, "classes": classes}
        self.conv1, self.act1, self.q1 = nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), Quantizer(levels, signed=False)
        self.conv2, self.act2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU()
        self.q2 = Quantizer(levels, signed=False)
        self.head = nn.Linear(c2 * 16, classes)

    def forward(self, x):
        h = self.q1(self.act1(self.conv1(x.reshape(-1, 1, 8, 8))))
        h = self.q2(self.act2(self.conv2(h)))
        return self.head(h.flatten(1))
