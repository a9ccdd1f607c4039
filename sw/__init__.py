"""Software side: float references, bit-exact fixed-point models (and, later, conversion and compiler)."""

from .neurons import (Bif, IntegrateFire, NeuronModel, PhaseNeuron, StBif, if_reference,
                      model_from_dict, phase_neuron_reference, quantizer, stbif_reference)
from .phase_coding import phase_decode, phase_encode, phase_error_bound

__all__ = [
    "NeuronModel", "StBif", "Bif", "IntegrateFire", "PhaseNeuron", "model_from_dict",
    "quantizer", "stbif_reference", "if_reference", "phase_neuron_reference",
    "phase_encode", "phase_decode", "phase_error_bound",
]
