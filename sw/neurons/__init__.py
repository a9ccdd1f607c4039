"""Bit-exact neuron models (integer, vectorised PyTorch) and their float references."""

from .base import NeuronModel, RunResult, StepResult, model_from_dict
from .integrate_fire import IntegrateFire, if_reference
from .phase import PhaseNeuron, phase_neuron_reference
from .stbif import Bif, StBif, quantizer, stbif_reference

__all__ = [
    "NeuronModel", "RunResult", "StepResult", "model_from_dict",
    "StBif", "Bif", "quantizer", "stbif_reference",
    "IntegrateFire", "if_reference",
    "PhaseNeuron", "phase_neuron_reference",
]
