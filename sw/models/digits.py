"""scikit-learn's digits (1797 images of 8x8 pixels, values 0..16), split once and for all.

The split is fixed: 20 % test, stratified, ``random_state=0``; the first ``calibration`` training
images (default 256) form the calibration split the training-free flow uses. Images are returned as
``pixels / 16`` in ``[0, 1]``; ``INPUT_SCALE = 1/16`` makes them exact integer counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

__all__ = ["DigitsSplit", "digits_split", "digit_sequences", "INPUT_SCALE"]

INPUT_SCALE = 1.0 / 16


@dataclass(frozen=True)
class DigitsSplit:
    """Train/test/calibration tensors: images ``[N, 8, 8]`` float32 in [0, 1], labels int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_calib: torch.Tensor
    y_calib: torch.Tensor


@lru_cache(maxsize=4)
def digits_split(calibration: int = 256) -> DigitsSplit:
    """The fixed digits split (no download: the data ships with scikit-learn)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    data = load_digits()
    idx_train, idx_test = train_test_split(range(len(data.target)), test_size=0.2, random_state=0,
                                           stratify=data.target)
    x = torch.tensor(data.images, dtype=torch.float32) * INPUT_SCALE
    y = torch.tensor(data.target, dtype=torch.int64)
    tr, te = torch.tensor(idx_train), torch.tensor(idx_test)
    return DigitsSplit(x[tr], y[tr], x[te], y[te], x[tr[:calibration]], y[tr[:calibration]])


def digit_sequences(images: torch.Tensor, mode: str = "rows") -> torch.Tensor:
    """Images ``[N, 8, 8]`` as sequences: ``rows`` -> ``[N, 8, 8]`` (8 elements of 8 pixels),
    ``pixels`` -> ``[N, 64, 1]`` (sequential digits, one pixel per element, row-major)."""
    if mode == "rows":
        return images.reshape(-1, 8, 8)
    if mode == "pixels":
        return images.reshape(-1, 64, 1)
    raise ValueError(f"mode={mode!r}: choose 'rows' or 'pixels'")
