"""Portable arithmetic: matrix products without BLAS or oneDNN, for reproducible training.

Bitwise reproduction of a training run needs every floating-point sum to be taken in the same order.
torch hands matrix products (``linear``, ``matmul``, ``bmm``, ``addmm``) to MKL's sgemm and
convolutions to oneDNN, and both pick their kernels -- hence their summation order -- by CPU vendor and
model, cache sizes and thread count at run time, none of which torch reports. Measured on one
``torch 2.13.0+cpu`` / ``AVX512`` platform: an Intel and an AMD EPYC machine train different weights, and
``MKL_CBWR`` or ``OMP_NUM_THREADS`` change them on the same machine.

Inside :class:`PortableArithmetic` those operations are computed as broadcast elementwise products
reduced with torch's own ``sum`` (``linear``: ``(x[..., None, :] * W).sum(-1)``; ``conv1d``/``conv2d``:
``unfold`` then the same; ``matmul``: ``(a[..., :, None, :] * b.mT[..., None, :, :]).sum(-1)``), and with
``torch.set_num_threads(1)``. Their autograd backwards are elementwise products, sums, expands and
``fold`` (col2im): native ATen kernels whose order depends only on the torch build and the kernel level
it dispatches to (``torch.backends.cpu.get_cpu_capability()``), not on the CPU's vendor.
``PORTABLE_ARITHMETIC`` names this contract; a change to the formulas must change it.

Operations that would reach BLAS/oneDNN and have no portable form here (``einsum``, ``mv``, fused RNN
cells, attention kernels, ...) raise ``NotImplementedError`` instead of silently using them;
:func:`blas_ops` lists the BLAS/oneDNN ATen operators a function really dispatches to (forward and
backward), which the tests use to check the recipes.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["PORTABLE_ARITHMETIC", "PortableArithmetic", "portable_arithmetic", "blas_ops"]

#: Version tag of the formulas below (recorded in checkpoints; bump it when a formula changes).
PORTABLE_ARITHMETIC = "portable-v1"


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for ``a [..., n, k]``, ``b [..., k, m]`` (batch dims broadcast): products summed over k."""
    return (a.unsqueeze(-2) * b.transpose(-1, -2).unsqueeze(-3)).sum(-1)


def _matmul(a, b, *, out=None):
    if out is not None:
        raise NotImplementedError("portable arithmetic: matmul(out=...) is not supported")
    if a.dim() == 0 or b.dim() == 0:
        raise RuntimeError("both arguments to matmul need to be at least 1D")
    if a.dim() == 1 and b.dim() == 1:
        return (a * b).sum(-1)
    if a.dim() == 1:
        return _mm(a.unsqueeze(0), b).squeeze(-2)
    if b.dim() == 1:
        return (a * b).sum(-1)
    return _mm(a, b)


def _rmatmul(b, a):
    return _matmul(a, b)


def _check_2d(name, *ts):
    for t in ts:
        if t.dim() != 2:
            raise RuntimeError(f"{name}: expected 2-D tensors, got {tuple(t.shape)}")


def _mm2(a, b, *, out=None):
    if out is not None:
        raise NotImplementedError("portable arithmetic: mm(out=...) is not supported")
    _check_2d("mm", a, b)
    return _mm(a, b)


def _bmm(a, b, *, out=None):
    if out is not None:
        raise NotImplementedError("portable arithmetic: bmm(out=...) is not supported")
    if a.dim() != 3 or b.dim() != 3:
        raise RuntimeError(f"bmm: expected 3-D tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    return _mm(a, b)


def _addmm(input, mat1, mat2, *, beta=1, alpha=1, out=None):
    if out is not None:
        raise NotImplementedError("portable arithmetic: addmm(out=...) is not supported")
    _check_2d("addmm", mat1, mat2)
    prod = _mm(mat1, mat2)
    prod = prod if alpha == 1 else prod * alpha
    return prod + (input if beta == 1 else input * beta)


def _linear(input, weight, bias=None):
    if weight.dim() != 2:
        raise RuntimeError(f"linear: weight must be 2-D, got {tuple(weight.shape)}")
    y = (input.unsqueeze(-2) * weight).sum(-1)
    return y if bias is None else y + bias


def _pair(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if groups != 1:
        raise NotImplementedError("portable arithmetic: grouped convolutions are not supported")
    if isinstance(padding, str):
        if padding != "valid":
            raise NotImplementedError(f"portable arithmetic: conv padding={padding!r} is not supported")
        padding = 0
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    n, _, h, w = x.shape
    out_ch, _, kh, kw = weight.shape
    stride, padding, dilation = _pair(stride, 2), _pair(padding, 2), _pair(dilation, 2)
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)   # [N, C kh kw, L]
    y = _linear(cols.transpose(1, 2), weight.reshape(out_ch, -1), bias)                # [N, L, O]
    y = y.transpose(1, 2).reshape(n, out_ch, ho, wo)
    return y if batched else y.squeeze(0)


def _conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str) and padding != "valid":
        raise NotImplementedError(f"portable arithmetic: conv padding={padding!r} is not supported")
    padding = 0 if isinstance(padding, str) else _pair(padding, 1)[0]
    y = _conv2d(input.unsqueeze(-2), weight.unsqueeze(-2), bias, (1, _pair(stride, 1)[0]), (0, padding),
                (1, _pair(dilation, 1)[0]), groups)
    return y.squeeze(-2)


_T = torch.Tensor
_IMPLS = {
    torch.matmul: _matmul, _T.matmul: _matmul, _T.__matmul__: _matmul, _T.__rmatmul__: _rmatmul,
    torch.mm: _mm2, _T.mm: _mm2, torch.bmm: _bmm, _T.bmm: _bmm, torch.addmm: _addmm, _T.addmm: _addmm,
    F.linear: _linear, F.conv1d: _conv1d, F.conv2d: _conv2d,
}

# Entry points that would reach BLAS, oneDNN or fused kernels built on them, without a portable form here.
_REFUSED = [torch.einsum, torch.tensordot, torch.mv, _T.mv, torch.dot, _T.dot, torch.vdot, torch.inner,
            torch.baddbmm, _T.baddbmm, torch.addbmm, torch.addmv, torch.chain_matmul, torch.linalg.matmul,
            torch.linalg.multi_dot, F.bilinear, F.conv3d, F.conv_transpose1d,
            F.conv_transpose2d, F.conv_transpose3d, F.scaled_dot_product_attention,
            F.multi_head_attention_forward, torch.lstm, torch.gru, torch.rnn_tanh, torch.rnn_relu,
            torch.lstm_cell, torch.gru_cell, torch.rnn_tanh_cell, torch.rnn_relu_cell]
_REFUSED = {f for f in _REFUSED if f is not None}


class PortableArithmetic(TorchFunctionMode):
    """Torch-function mode computing matrix products and convolutions without BLAS/oneDNN (module
    docstring). Use :func:`portable_arithmetic`, which also runs single-threaded."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        impl = _IMPLS.get(func)
        if impl is not None:
            return impl(*args, **kwargs)
        if func in _REFUSED:
            raise NotImplementedError(f"portable arithmetic has no BLAS-free form of {func.__name__}; "
                                      f"express it with linear/matmul/conv2d or add one to {__name__}")
        return func(*args, **kwargs)


@contextmanager
def portable_arithmetic():
    """Run the block in portable arithmetic, single-threaded (the previous thread count is restored)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with PortableArithmetic():
            yield
    finally:
        torch.set_num_threads(threads)


# ATen operators that run on BLAS (MKL) or oneDNN on CPU.
_BLAS_ATEN = ("mm", "addmm", "bmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot", "addr", "matmul",
              "linear", "convolution", "_convolution", "convolution_backward", "conv2d", "conv1d",
              "_slow_conv2d_forward", "_slow_conv2d_backward", "_scaled_dot_product_flash_attention_for_cpu",
              "_scaled_dot_product_flash_attention_for_cpu_backward")


class _AtenLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _BLAS_ATEN or name.startswith("mkldnn") or name.startswith("_mkldnn"):
            self.ops.add(str(func))
        return func(*args, **(kwargs or {}))


def blas_ops(fn, *args, **kwargs) -> set[str]:
    """The BLAS/oneDNN ATen operators ``fn(*args, **kwargs)`` dispatches to (forward, and the backward of
    whatever ``fn`` differentiates)."""
    log = _AtenLog()
    with log:
        fn(*args, **kwargs)
    return log.ops
