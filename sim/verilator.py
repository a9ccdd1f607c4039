"""Build an Amaranth component with Verilator once per distinct design, run cocotb jobs on it.

:func:`build` converts the component, inside a :class:`SimulationTop`, to Verilog, hashes the Verilog together with the build flags
and the tool versions, and compiles it into ``<cache>/<name>-<hash>`` unless that build already
exists (the cache survives between test runs; a file lock makes parallel pytest workers share it).
:func:`run_job` runs the cocotb entry test (:mod:`spikeforge.sim.cocotb_entry`) on a build with a
JSON job description and returns the job's JSON answer.

The cache lives in ``$SPIKEFORGE_CACHE`` or ``~/.cache/spikeforge``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import ClockDomain, Module, Signal
from amaranth.lib import wiring

from .toolchain import ensure_verilator

__all__ = ["VerilatorBuild", "build", "run_job", "run_replays", "cache_dir", "SimulationError"]

BUILD_ARGS = ("-Wno-fatal", "-O2")


class SimulationError(RuntimeError):
    """The simulator or the cocotb job failed; the message holds the log's tail."""


def cache_dir() -> Path:
    d = Path(os.environ.get("SPIKEFORGE_CACHE", Path.home() / ".cache" / "spikeforge")) / "verilator"
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass(frozen=True)
class VerilatorBuild:
    """A compiled design: its Verilog, top-level name and build directory."""
    name: str
    directory: Path
    verilog: Path
    cached: bool

    @property
    def build_dir(self) -> Path:
        return self.directory / "build"


def build(component, name: str, *, waves: bool = False, extra_args: tuple[str, ...] = (),
          skid: bool = False) -> VerilatorBuild:
    """Verilog for ``component`` (inside a :class:`SimulationTop`; ``skid``: a skid buffer on each
    top-level stream) compiled by Verilator, reusing a cached build of the same design."""
    info = ensure_verilator()
    text = verilog.convert(SimulationTop(component, skid=skid), name=name, emit_src=False)
    _check_constant_processes(text, name)
    # waves: the runner adds --trace (VCD). FST would need zlib/lz4 headers that no pip package ships.
    args = list(BUILD_ARGS) + list(extra_args) + (["--trace-structs"] if waves else [])
    control = f'`verilator_config\npublic_flat_rw -module "{name}" -var "*"\n'
    key = hashlib.sha256(json.dumps([text, args, control, waves, info.version, metadata.version("cocotb"),
                                     name]).encode()).hexdigest()[:16]
    directory = cache_dir() / f"{name}-{key}"
    directory.mkdir(parents=True, exist_ok=True)
    done = directory / ".complete"
    src = directory / f"{name}.v"
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return VerilatorBuild(name, directory, src, True)
        src.write_text(text)
        vlt = directory / f"{name}.vlt"
        vlt.write_text(control)
        log = directory / "build.log"
        # The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a model large enough to be
        # split into several files (and use a precompiled header) fails to compile with
        # "Vtop__pch.h.slow: linker input file not found". A make variable given in MAKEFLAGS
        # overrides the makefile's assignment; it is set for this build only.
        saved = os.environ.get("MAKEFLAGS")
        os.environ["MAKEFLAGS"] = f"{saved or ''} CFG_CXXFLAGS_PCH_I=-include".strip()
        try:
            _top_ports_runner().build(sources=[src, vlt], hdl_toplevel=name, build_dir=directory / "build",
                                      build_args=args, waves=waves, log_file=log)
        except Exception as e:  # the runner raises on a failing compile; surface the log
            shutil.rmtree(directory / "build", ignore_errors=True)
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise SimulationError(f"Verilator build of {name} failed:\n{tail}") from e
        finally:
            if saved is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = saved
        done.touch()
    return VerilatorBuild(name, directory, src, False)


class SimulationTop(wiring.Component):
    """``dut`` as Verilator simulates it: ``rst`` registered once before it reaches the ``sync`` domain
    and, with ``skid=True``, a :class:`~spikeforge.hw.stream.SkidBuffer` on every top-level stream.

    Amaranth's Verilog computes a register's next value in the same process as the logic that decides
    it; logic that depends combinationally on a top-level input (``rst`` behind every register, the
    command decode behind every tile's program registers) sits in Verilator's input-combinational region,
    which is re-evaluated on *every* evaluation (both clock edges and each testbench write). On the
    29-tile ViT accelerator that was most of the simulation time. Registered, these inputs are internal
    state, evaluated once per clock edge that changes them. The streams keep their protocol (a skid buffer
    adds one cycle of latency, not a beat more or less); a reset takes effect one cycle later, which
    :meth:`~spikeforge.sim.bench.CocotbBench.reset` waits out. The Verilog for synthesis is the
    component's own."""

    def __init__(self, dut, *, skid: bool = False):
        self.dut, self.skid = dut, skid
        super().__init__({**dict(dut.signature.members), "clk": wiring.In(1), "rst": wiring.In(1)})

    def elaborate(self, platform):
        from amaranth.lib import stream
        from ..hw.stream import SkidBuffer
        m = Module()
        m.submodules.dut = self.dut
        m.domains.sync = sync = ClockDomain("sync")
        sync.rst = Signal(name="rst_q")
        m.domains.rst_in = rst_in = ClockDomain("rst_in", reset_less=True)
        m.d.comb += [sync.clk.eq(self.clk), rst_in.clk.eq(self.clk)]
        m.d.rst_in += sync.rst.eq(self.rst)
        buffered = set()
        for name, member in self.dut.signature.members.items():
            if self.skid and member.is_signature and not member.dimensions and \
                    isinstance(member.signature, stream.Signature):
                buffered.add(name)
                skid = SkidBuffer(member.signature.members["payload"].shape)
                m.submodules[f"skid_{name}"] = skid
                outer, inner = getattr(self, name), getattr(self.dut, name)
                if member.flow == wiring.In:
                    wiring.connect(m, wiring.flipped(outer), skid.i)
                    wiring.connect(m, skid.o, inner)
                else:
                    wiring.connect(m, inner, skid.i)
                    wiring.connect(m, skid.o, wiring.flipped(outer))
        ours = {path: (flow, value) for path, flow, value in _ports(self)}
        for path, _, theirs in _ports(self.dut):
            if path[0] in buffered:
                continue
            flow, value = ours[path]
            m.d.comb += theirs.eq(value) if flow == wiring.In else value.eq(theirs)
        return m


def _ports(component):
    """``(path, flow, signal)`` of every port signal of ``component`` (flows as seen from outside)."""
    for path, member, value in component.signature.flatten(component):
        yield path, member.flow, value


def _top_ports_runner():
    """cocotb's Verilator runner without ``--public-flat-rw``; :func:`build` passes a control file that
    makes the top module's signals (the ports of :class:`SimulationTop`) visible to VPI instead.

    With every signal public and writable from outside at any time, Verilator must re-evaluate all
    combinational logic on every evaluation (both clock edges and each testbench write): on the 29-tile
    ViT accelerator that was most of the simulation time. The testbenches touch top-level ports only."""
    from cocotb_tools.runner import Verilator

    class TopPortsVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0].remove("--public-flat-rw")
            return cmds
    return TopPortsVerilator()


_CONSTANT_PROCESS = re.compile(r"^ *always @\*\n *(\S+(?: ?\[[0-9:]+\])?) = \d+'h([0-9a-f]+);$", re.M)


def _check_constant_processes(text: str, name: str) -> None:
    """Refuse Verilog with an ``always @*`` block that only assigns a nonzero constant: such a block has
    no inputs, so Verilator never evaluates it and the bits keep their initial value 0 (the Amaranth
    simulator assigns them). yosys writes one when a constant field of a signal is assigned next to
    fields assigned under conditions; drive the conditional part through its own signal."""
    bad = [(sig, value) for sig, value in _CONSTANT_PROCESS.findall(text) if int(value, 16) != 0]
    if bad:
        sig, value = bad[0]
        raise SimulationError(f"{name}: {len(bad)} constant-only always @* block(s) that Verilator would never "
                              f"evaluate, e.g. {sig} = 'h{value}; assign the conditional fields of that signal "
                              "through a separate signal so the whole signal is driven continuously")


def run_job(design: VerilatorBuild, job: dict, *, testcase: str = "run_job", waves_to: Path | None = None) -> dict:
    """Run ``job`` (JSON-serialisable; see :mod:`spikeforge.sim.cocotb_entry`) on ``design``.

    The job runs in a temporary folder, so every path in ``job`` must be absolute (checked).
    ``waves_to``: record a VCD waveform of the whole job there (``design`` must be built with
    ``waves=True``)."""
    ensure_verilator()
    _check_absolute(job)
    from cocotb_tools.runner import get_results, get_runner
    work = Path(tempfile.mkdtemp(prefix=f"sf-{design.name}-"))
    job_file, answer_file = work / "job.json", work / "answer.json"
    job_file.write_text(json.dumps(dict(job, answer=str(answer_file))))
    log = work / "sim.log"
    runner = get_runner("verilator")
    results = runner.test(test_module="spikeforge.sim.cocotb_entry", hdl_toplevel=design.name,
                          hdl_toplevel_lang="verilog", testcase=testcase,
                          build_dir=design.build_dir, test_dir=work, results_xml=str(work / "results.xml"),
                          extra_env={"SPIKEFORGE_JOB": str(job_file)}, waves=waves_to is not None, log_file=log)
    tests, failed = get_results(Path(results))
    if failed or tests == 0 or not answer_file.exists():
        tail = log.read_text()[-4000:] if log.exists() else "(no log)"
        raise SimulationError(f"cocotb job on {design.name} failed ({failed}/{tests} tests failed); log tail:\n{tail}")
    if waves_to is not None:
        dump = work / "dump.vcd"
        if not dump.exists():
            raise SimulationError(f"the job on {design.name} wrote no waveform: was the design built with waves=True?")
        shutil.move(str(dump), str(waves_to))
    answer = json.loads(answer_file.read_text())
    shutil.rmtree(work, ignore_errors=True)
    return answer


def run_replays(component, job: dict, goldens, *, idle: float, backpressure: float, seed: int) -> list[tuple]:
    """Build ``component`` (cached), replay every golden trace in one cocotb job ``job`` (its ``kind`` and
    fields; the replays are added here, seeds ``seed + i``) and return ``[(observed trace, answer)]``."""
    from .trace import SpikeTrace
    design = build(component, component.verilog_name)
    work = Path(tempfile.mkdtemp(prefix=f"sf-{job['kind']}-"))
    replays = []
    for i, g in enumerate(goldens):
        gp, op = work / f"golden{i}.npz", work / f"observed{i}.npz"
        g.save(gp)
        replays.append({"golden": str(gp), "observed": str(op), "idle": idle, "backpressure": backpressure,
                        "seed": seed + i})
    answers = run_job(design, dict(job, replays=replays))
    out = [(SpikeTrace.load(r["observed"]), a) for r, a in zip(replays, answers)]
    shutil.rmtree(work, ignore_errors=True)
    return out


def _check_absolute(job):
    """Paths handed to a job must not depend on the simulator's working directory."""
    if isinstance(job, dict):
        for key, value in job.items():
            if isinstance(value, str) and key in _PATH_KEYS and not os.path.isabs(value):
                raise ValueError(f"job path {key}={value!r} is relative; the simulator runs in another folder "
                                 "(resolve it first)")
            _check_absolute(value)
    elif isinstance(job, list):
        for value in job:
            _check_absolute(value)


_PATH_KEYS = ("golden", "observed", "answer", "trace", "path", "file")
