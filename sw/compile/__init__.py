"""The compiler: a converted network (IR) + a :class:`HardwareSpec` -> a frozen :class:`Plan`."""

from .plan import DoesNotFitError, Plan, Slice, TileLayer, compile_network, legalise
from .report import PlanReport, report
from .spec import TILE_KINDS, HardwareSpec

__all__ = ["HardwareSpec", "TILE_KINDS", "compile_network", "legalise", "Plan", "Slice", "TileLayer",
           "DoesNotFitError", "report", "PlanReport"]
