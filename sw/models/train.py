"""Training recipes for the embedded models, deterministic on CPU, and the committed checkpoints.

    python -m spikeforge.sw.models.train            # retrain everything, rewrite sw/models/checkpoints/
    python -m spikeforge.sw.models.train vit_bn     # one checkpoint

Recipes (fixed seeds, single-threaded deterministic ops, a few minutes in all on 2 cores):

* ``vit_ln``: float ``DigitsViT(norm="layernorm")``, Adam 3e-3 with cosine decay, 40 epochs.
* ``vit_bn``: float ``DigitsViT(norm="batchnorm")`` (the spikedattention source), same schedule.
* ``vit_qann_L{8,16,32}``: ``vit_ln`` with LSQ quantizers (:func:`~spikeforge.sw.models.vit.qann_plan`),
  quantization-aware fine-tuning with distillation from ``vit_ln`` (KL on softened logits + CE),
  Adam 1e-3, 20 epochs.
* ``qrnn_rows`` / ``qrnn_pixels``: :class:`~spikeforge.sw.models.rnn.DigitsRNN` (16 levels) on the rows
  (8 x 8, hidden 64, Adam 3e-3, 40 epochs) / pixels (64 x 1, hidden 128, Adam 1e-3, 100 epochs) of each
  digit, quantization-aware from scratch.
* ``qcnn``: :class:`~spikeforge.sw.models.rnn.DigitsCNN` (16 levels), quantization-aware, 30 epochs.

Checkpoints are ``torch.save`` state dicts plus the model config; :func:`load` rebuilds the model.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..quant import insert_quantizers
from .digits import digits_split
from .rnn import DigitsCNN, DigitsRNN
from .vit import DigitsViT, qann_plan

__all__ = ["RECIPES", "train", "load", "save", "accuracy", "CHECKPOINTS", "checkpoint_info", "training_platform"]

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
QANN_LEVELS = (8, 16, 32)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` in eval mode."""
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _fit(model: nn.Module, epochs: int, lr: float, seed: int, teacher: nn.Module | None = None,
         log=print) -> nn.Module:
    data = digits_split()
    x, y = data.x_train, data.y_train
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / 64)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    if teacher is not None:
        teacher.eval()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            out = model(x[idx])
            loss = F.cross_entropy(out, y[idx])
            if teacher is not None:
                with torch.no_grad():
                    soft = F.softmax(teacher(x[idx]) / 2, -1)
                loss = loss + 4 * F.kl_div(F.log_softmax(out / 2, -1), soft, reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if log and (epoch % 10 == 9 or epoch == epochs - 1):
            log(f"  epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}, "
                f"test accuracy {accuracy(model, digits_split().x_test, digits_split().y_test):.4f}")
    model.eval()
    return model


def _float_vit(norm: str, log=print, directory: Path = CHECKPOINTS) -> DigitsViT:
    torch.manual_seed(0)
    return _fit(DigitsViT(norm=norm), epochs=40, lr=3e-3, seed=1, log=log)


def _qann_vit(levels: int, log=print, directory: Path = CHECKPOINTS) -> DigitsViT:
    teacher = load("vit_ln", directory)
    torch.manual_seed(levels)
    student = load("vit_ln", directory)
    insert_quantizers(student, qann_plan(student, levels))
    return _fit(student, epochs=20, lr=1e-3, seed=levels, teacher=teacher, log=log)


def _qrnn(order: str, epochs: int, hidden: int, lr: float, log=print, directory: Path = CHECKPOINTS) -> DigitsRNN:
    torch.manual_seed(2)
    return _fit(DigitsRNN(order, hidden=hidden, levels=16), epochs=epochs, lr=lr, seed=3, log=log)


def _qcnn(log=print, directory: Path = CHECKPOINTS) -> DigitsCNN:
    torch.manual_seed(4)
    return _fit(DigitsCNN(levels=16), epochs=30, lr=3e-3, seed=5, log=log)


RECIPES = {"vit_ln": partial(_float_vit, "layernorm"), "vit_bn": partial(_float_vit, "batchnorm")}
RECIPES.update({f"vit_qann_L{L}": partial(_qann_vit, L) for L in QANN_LEVELS})
RECIPES.update({"qrnn_rows": partial(_qrnn, "rows", 40, 64, 3e-3), "qrnn_pixels": partial(_qrnn, "pixels", 100, 128, 1e-3),
                "qcnn": _qcnn})
ARCHS = {"DigitsViT": DigitsViT, "DigitsRNN": DigitsRNN, "DigitsCNN": DigitsCNN}


def train(name: str, log=print, directory: Path = CHECKPOINTS) -> nn.Module:
    """Run recipe ``name`` from scratch (deterministic) and return the trained model.

    QANN recipes start from the ``vit_ln`` checkpoint in ``directory``."""
    if name not in RECIPES:
        raise KeyError(f"unknown checkpoint {name!r}; known: {', '.join(RECIPES)}")
    torch.use_deterministic_algorithms(True)
    try:
        return RECIPES[name](log=log, directory=directory)
    finally:
        torch.use_deterministic_algorithms(False)


def training_platform() -> dict:
    """What bit-exact reproduction of a checkpoint depends on: torch version, CPU kernels, threads."""
    return {"torch": str(torch.__version__), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads()}


def checkpoint_info(name: str, directory: Path = CHECKPOINTS) -> dict:
    """The metadata stored with checkpoint ``name`` (config, levels, platform it was trained on)."""
    ck = torch.load(Path(directory) / f"{name}.pt", weights_only=True)
    return {k: v for k, v in ck.items() if k != "state_dict"}


def save(model: nn.Module, name: str, directory: Path = CHECKPOINTS) -> Path:
    levels = {q.levels for q in model.modules() if hasattr(q, "levels")}
    path = Path(directory) / f"{name}.pt"
    torch.save({"arch": type(model).__name__, "config": model.config, "levels": min(levels) if levels else None,
                "state_dict": model.state_dict(), "trained_on": training_platform()}, path)
    return path


def load(name: str, directory: Path = CHECKPOINTS) -> nn.Module:
    """Rebuild checkpoint ``name`` (``vit_ln``, ``vit_bn``, ``vit_qann_L8``, ``qrnn_rows`` ...) in eval mode."""
    path = Path(directory) / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}; run `python -m spikeforge.sw.models.train {name}` "
                                f"(known: {', '.join(RECIPES)})")
    ck = torch.load(path, weights_only=True)
    arch = ARCHS[ck.get("arch", "DigitsViT")]
    model = arch(**ck["config"])
    if ck["levels"] and arch is DigitsViT:
        insert_quantizers(model, qann_plan(model, ck["levels"]))
    model.load_state_dict(ck["state_dict"])
    return model.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"checkpoints to train (default: all of {', '.join(RECIPES)})")
    ap.add_argument("--out", type=Path, default=CHECKPOINTS, help="output folder")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = digits_split()
    for name in args.names or list(RECIPES):
        t0 = time.time()
        print(f"{name}:")
        model = train(name, directory=args.out)
        path = save(model, name, args.out)
        print(f"  -> {path} ({path.stat().st_size // 1024} KiB), test accuracy "
              f"{accuracy(model, data.x_test, data.y_test):.4f}, {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
