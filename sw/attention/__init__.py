"""Spike-based attention: trace-driven matmul (phase and count traces), WOSS softmax, a whole head.

Float references follow the papers (algorithms.md sections 1 and 3); the bit-exact models compute
exactly what the RTL in :mod:`spikeforge.hw` computes.
"""

from .trace import (MatmulEvent, TraceFormat, TraceMatmulModel, matmul_events, phase_matmul,
                    phase_matmul_increments, sesa_increments, spike_steps)

__all__ = ["TraceFormat", "TraceMatmulModel", "MatmulEvent", "matmul_events", "phase_matmul",
           "phase_matmul_increments", "sesa_increments", "spike_steps"]
from .woss import (DEFAULT_INHIBITION, INHIBITIONS, WossFormat, WossResult, woss_fire_steps,  # noqa: E402
                   woss_probabilities, woss_softmax, woss_softmax_fixed)

__all__ += ["WossFormat", "WossResult", "woss_fire_steps", "woss_probabilities", "woss_softmax",
            "woss_softmax_fixed", "DEFAULT_INHIBITION", "INHIBITIONS"]
from .head import (FixedHeadResult, HeadResult, SpikedHeadFormat, channel_scales, spiked_attention,  # noqa: E402
                   spiked_attention_codes, spiked_attention_fixed)

__all__ += ["HeadResult", "FixedHeadResult", "SpikedHeadFormat", "channel_scales", "spiked_attention",
            "spiked_attention_codes", "spiked_attention_fixed"]
