"""spikeforge: spiking-transformer accelerator generator.

Sub-packages: :mod:`spikeforge.sw` (references, bit-exact models), :mod:`spikeforge.hw` (Amaranth RTL
generators), :mod:`spikeforge.sim` (Verilator/cocotb and Amaranth simulation harness, golden traces),
:mod:`spikeforge.boards` (synthesis and place-and-route with the open yowasp toolchain).
"""

__version__ = "0.1.0"
