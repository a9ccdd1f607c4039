"""Embedded default models and data: a small vision transformer and sequence models for the digits
data that ships with scikit-learn, their training recipes and the committed checkpoints."""

from .digits import DigitsSplit, digits_split, digit_sequences
from .vit import DigitsViT, qann_plan

__all__ = ["DigitsSplit", "digits_split", "digit_sequences", "DigitsViT", "qann_plan"]
