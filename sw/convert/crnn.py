"""crnn flow: a quantized RNN or CNN -> RBIF / BIF spiking network, exact (CRNN-SNN conversion).

Built on the spikezip lowering (quantizer -> ST-BIF layer, integer weights, thresholds = quantizer
steps) with two more operators:

* ``nn.Conv2d [ReLU] Quantizer`` -> a ``linear`` node whose gather map is the convolution's im2col
  (padding reads -1 = 0) + a BIF (ST-BIF) layer. Output positions are ``(y * W_out + x) * C_out + c``.
* :class:`~spikeforge.sw.models.rnn.QuantRNN` -> one ``rnn`` node: a layer of RBIF neurons (ST-BIF
  cleared every ``window`` sub-steps, :class:`~spikeforge.sw.neurons.Bif`) that runs one window per
  sequence element. "s-analog" encoding: element ``n`` of the input and the bias arrive at the first
  sub-step of window ``n``; the recurrent term ``Wh h_{n-1}`` comes from the previous window.

Exactness rule (verified on the whole test split, docs/conversion.md): with ``theta`` = quantizer step,
``V(0) = theta//2``, tracer bounds = the clip range ``[0, L-1]`` and the recurrent term delivered *at once
from the previous window's tracer* (``recurrent="tracer"``), every neuron's input of a window arrives at
its first sub-step, so it fires at most one spike per sub-step, monotonically, and is quiet after
``S_max - S_min = L - 1`` sub-steps: ``window >= L - 1`` is necessary and sufficient, and the tracer after
each window is exactly the QRNN's ``h_n``. Replaying the previous window's *spikes* one window later
(``recurrent="spikes"``) spreads the input over the window and needs longer windows (measured in the
results).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..fixed import signed_width_for
from ..ir import Network, Port
from ..neurons import Bif
from ..quant import Quantizer
from .frontend import trace
from .lowering import identity_index, require_quantizers
from .spikezip import Counts, PendingLinear, SpikezipOptions, _Spikezip, _theta_for

__all__ = ["CrnnOptions", "convert_crnn", "exact_window"]


@dataclass
class CrnnOptions(SpikezipOptions):
    """spikezip's options plus the RBIF ``window`` (sub-steps per sequence element; default the exact rule
    :func:`exact_window`) and how the recurrent term is delivered (``"tracer"`` or ``"spikes"``)."""

    window: int | None = None
    recurrent: str = "tracer"

    def __post_init__(self):
        super().__post_init__()
        if self.window is not None and not (isinstance(self.window, int) and self.window >= 1):
            raise ValueError(f"window={self.window!r} must be an integer >= 1 (sub-steps per sequence element)")
        if self.recurrent not in ("tracer", "spikes"):
            raise ValueError(f"recurrent={self.recurrent!r}: choose 'tracer' or 'spikes'")


def exact_window(levels: int) -> int:
    """Shortest RBIF window that keeps the conversion exact with the recurrent term from the tracer:
    ``S_max - S_min`` for an unsigned ``levels``-level quantizer, i.e. ``levels - 1``."""
    return levels - 1


_REFUSED = {
    "batchnorm": ("BatchNorm is not folded by the crnn flow", "fold it into the convolution before quantizing"),
    "layernorm": ("the crnn flow converts QCNNs and QRNNs", "use the spikezip flow for transformers"),
    "sub": ("subtraction of activations is not converted", "add a negated weight instead"),
    "neg": ("negation of activations is not converted", "fold the sign into the preceding layer"),
}


class _Crnn(_Spikezip):
    def __init__(self, tm, example_shape, opts: CrnnOptions):
        super().__init__(tm, example_shape, opts)
        self.refused = set(_REFUSED)

    def lower_conv2d(self, n, args, kwargs):
        x, mod = args[0], self.modules[n.target]
        if not isinstance(x, Counts) or len(x.shape) != 3:
            return self.fail(n, "a convolution must read a quantized [C, H, W] value (spikes or the input)",
                             "put a Quantizer before the convolution")
        cin, h, w = x.shape
        if cin != mod.in_channels:
            return self.fail(n, f"input has {cin} channels, the convolution expects {mod.in_channels}",
                             "check the layout")
        cols = F.unfold(x.idx.double() + 1, mod.kernel_size, dilation=mod.dilation, padding=mod.padding,
                        stride=mod.stride)                                  # [1, Cin*kh*kw, L]; padding -> 0
        gather = (cols[0].T - 1).round().long().numpy().copy()              # [L, K], padding -> -1
        kh, kw = mod.kernel_size
        ho = (h + 2 * mod.padding[0] - mod.dilation[0] * (kh - 1) - 1) // mod.stride[0] + 1
        wo = (w + 2 * mod.padding[1] - mod.dilation[1] * (kw - 1) - 1) // mod.stride[1] + 1
        cout = mod.out_channels
        weight = mod.weight.detach().double().reshape(cout, -1).numpy() * x.scale
        bias = mod.bias.detach().double().numpy() if mod.bias is not None else np.zeros(cout)
        pos = torch.arange(ho * wo).reshape(1, 1, ho, wo) * cout + torch.arange(cout).reshape(1, cout, 1, 1)
        return PendingLinear(pos, src=x, gather=gather, weight=weight, bias=np.tile(bias, ho * wo),
                             origin=self.origin(n))

    def lower_qrnn(self, n, args, kwargs):
        x, mod = args[0], self.modules[n.target]
        if not isinstance(x, Counts) or x.node != "input" or len(x.shape) != 2:
            return self.fail(n, "a QuantRNN reads the network's input sequence [elements, features] (s-analog "
                             "encoding delivers element n at the first sub-step of window n)",
                             "feed the (quantized) input sequence straight into the QuantRNN")
        q = mod.quant
        s = float(q.step.detach())
        if not s > 0 or q.signed:
            return self.fail(n, "the QRNN quantizer must be unsigned with a positive (trained) step",
                             "train the QuantRNN")
        elements, k = x.shape
        wx = mod.wx.weight.detach().double().numpy() * x.scale / s
        wh = mod.wh.weight.detach().double().numpy()           # h_{n-1} = s * count: s/s = 1
        b = mod.wx.bias.detach().double().numpy() / s if mod.wx.bias is not None else np.zeros(mod.hidden)
        if mod.wh.bias is not None:
            b = b + mod.wh.bias.detach().double().numpy() / s
        theta = _theta_for(max(float(np.abs(wx).max(initial=0)), float(np.abs(wh).max(initial=0))), self.lim)
        wx_i, wh_i = np.round(wx * theta).astype(np.int64), np.round(wh * theta).astype(np.int64)
        if max(np.abs(wx_i).max(initial=0), np.abs(wh_i).max(initial=0)) > self.lim:
            return self.fail(n, f"recurrent weights do not fit weight_bits={self.opts.weight_bits}", "raise weight_bits")
        b_i = np.round(b * theta).astype(np.int64)
        window = self.opts.window or exact_window(q.levels)
        x_bound = int((np.abs(wx_i).sum(1) * x.bound + np.abs(wh_i).sum(1) * q.n_max + np.abs(b_i)).max())
        v_bound = theta // 2 + x_bound + theta * (q.n_max + 1)
        model = Bif(theta, q.n_min, q.n_max, window=window, current_width=signed_width_for(-x_bound, x_bound),
                    v_width=signed_width_for(-v_bound, v_bound))
        node = self.add_node(str(n.target), "rnn", [Port(x.node, x.idx.reshape(elements, k).numpy().copy())],
                             (elements, mod.hidden), self.origin(n),
                             {"model": model.to_dict(), "weight_bits": self.opts.weight_bits,
                              "recurrent": self.opts.recurrent, "step": s, "levels": q.levels},
                             {"wx": wx_i, "wh": wh_i, "bias": b_i})
        return Counts(identity_index((elements, mod.hidden)), node.name, s, q.n_min, q.n_max)


def convert_crnn(model: nn.Module, example: torch.Tensor, opts: CrnnOptions) -> Network:
    """Convert a QRNN (:class:`~spikeforge.sw.models.rnn.QuantRNN`) or QCNN with LSQ quantizers to an
    RBIF/BIF network. Raises :class:`~spikeforge.sw.convert.frontend.UnsupportedModelError` listing every
    unsupported operation."""
    model = model.eval()
    tm = trace(model)
    require_quantizers(tm, "crnn", _REFUSED, "a QCNN or QRNN", "quantize it (spikeforge.sw.quant, "
                       "spikeforge.sw.models.rnn.QuantRNN) and fine-tune")
    low = _Crnn(tm, tuple(example.shape), opts)
    out_node, out_scale, out_shape = low.lower_model("crnn", _REFUSED)
    rnns = [nd for nd in low.nodes if nd.op == "rnn"]
    meta = {"source": type(model).__name__, "output_shape": list(out_shape), "weight_bits": opts.weight_bits,
            "levels": sorted({q.levels for q in model.modules() if isinstance(q, Quantizer)})}
    if rnns:
        meta["sequence_steps"] = max(nd.shape[0] * nd.params["model"]["window"] for nd in rnns)
        meta["recurrent"] = opts.recurrent
    return Network("crnn", low.nodes, out_node, out_scale, meta).validate()

