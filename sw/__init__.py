"""Software side: float references, bit-exact fixed-point models (and, later, conversion and compiler)."""

from .neurons import (Bif, IntegrateFire, NeuronModel, PhaseNeuron, StBif, if_reference,
                      model_from_dict, phase_neuron_reference, quantizer, stbif_reference)
from .phase_coding import phase_decode, phase_encode, phase_error_bound
from .attention import (SpikedHeadFormat, TraceFormat, WossFormat, phase_matmul, sesa_increments,  # noqa: E402
                        spiked_attention, spiked_attention_fixed, woss_softmax, woss_softmax_fixed)

__all__ = [
    "NeuronModel", "StBif", "Bif", "IntegrateFire", "PhaseNeuron", "model_from_dict",
    "quantizer", "stbif_reference", "if_reference", "phase_neuron_reference",
    "phase_encode", "phase_decode", "phase_error_bound",
    # spike attention (spikeforge.sw.attention has the rest)
    "woss_softmax", "woss_softmax_fixed", "spiked_attention", "spiked_attention_fixed", "phase_matmul",
    "sesa_increments", "TraceFormat", "WossFormat", "SpikedHeadFormat",
]
