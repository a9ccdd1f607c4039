"""Conversion flows: PyTorch module -> spiking-network IR (docs/conversion.md).

Available: ``spikezip`` (LSQ QANN -> ST-BIF, exact). The front end (:func:`trace`) reports every
unsupported operation of a model at once (:class:`UnsupportedModelError`).
"""

from .frontend import TracedModel, Unsupported, UnsupportedModelError, trace
from .spikezip import SpikezipOptions, convert_spikezip

__all__ = ["trace", "TracedModel", "Unsupported", "UnsupportedModelError", "convert_spikezip", "SpikezipOptions"]
