"""Bad input on the command line: one clear line naming the option as typed, never a traceback or a hang;
commands that write files work from any working directory with relative paths."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from spikeforge.cli import main


def run(args, cwd=None, timeout=300):
    """The installed CLI as a subprocess (stdout is a pipe, as in a CI log)."""
    env = dict(os.environ)
    env.pop("SPIKEFORGE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "spikeforge.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def invoke(args):
    r = CliRunner().invoke(main, args)
    assert "Traceback" not in r.output, r.output
    return r


# -- no hangs: everything that could make a run endless is refused up front ----------------------------------
@pytest.mark.parametrize("args, option", [
    (["simulate", "core", "--preset", "stbif", "--simulator", "amaranth", "--events", "20", "--steps", "2",
      "--idle", "1.0"], "--idle"),
    (["simulate", "core", "--preset", "stbif", "--simulator", "amaranth", "--backpressure", "1.0"], "--backpressure"),
    (["simulate", "attention", "--idle", "-0.1"], "--idle"),
])
def test_stall_probabilities_of_one_are_refused(args, option):
    r = invoke(args)
    assert r.exit_code == 2 and option in r.output and "0.0<=x<1.0" in r.output


def test_the_api_refuses_endless_stalls_too():
    from spikeforge import api
    with pytest.raises(ValueError, match=r"idle=1.0 is out of range: a stall probability must be in \[0, 1\)"):
        api.simulate_core(api.default_core("if"), steps=2, events=4, simulator="amaranth", idle=1.0)


def test_a_huge_window_is_refused_in_seconds():
    t0 = time.monotonic()
    r = invoke(["simulate", "attention", "--simulator", "none", "--T", "10000"])
    assert r.exit_code == 2 and "--T=10000" in r.output
    assert time.monotonic() - t0 < 20


# -- sizes and options that do not apply ---------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["simulate", "attention", "--tokens", "0"], "'--tokens': 0 is not in the range x>=1"),
    (["simulate", "attention", "--dim-v", "-3"], "'--dim-v': -3 is not in the range x>=1"),
    (["simulate", "core", "--steps", "0"], "'--steps': 0 is not in the range x>=1"),
    (["generate", "core", "--neurons", "0"], "'--neurons': 0 is not in the range x>=1"),
    (["convert", "--images", "0"], "'--images': 0 is not in the range x>=1"),
    (["report", "core", "--freq", "0"], "'--freq': 0.0 is not in the range x>0"),
    (["demo", "--events", "0"], "'--events': 0 is not in the range x>=1"),
])
def test_sizes_of_zero_or_below_are_refused(args, message):
    r = invoke(args)
    assert r.exit_code == 2 and message in r.output


@pytest.mark.parametrize("args, message", [
    (["simulate", "core", "--preset", "stbif", "--T", "16"], "--T does not apply to the stbif model (preset stbif)"),
    (["generate", "core", "--model", "phase", "--T", "8", "--B", "1.4", "--theta", "3"],
     "--theta does not apply to the phase model"),
    (["generate", "core", "--model", "if", "--window", "4"], "--window does not apply to the if model"),
    (["generate", "core", "--preset", "phase", "--model", "stbif"], "--model stbif contradicts --preset phase"),
    (["convert", "--flow", "crnn", "--T", "8"], "--T does not apply to the crnn flow"),
    (["convert", "--flow", "spikezip", "--window", "8"], "--window does not apply to the spikezip flow"),
    (["convert", "--flow", "spikedattention", "--recurrent", "spikes"],
     "--recurrent does not apply to the spikedattention flow"),
    (["simulate", "attention", "--simulator", "none", "--backpressure", "0.5"],
     "--backpressure does not apply with --simulator none"),
    (["simulate", "core", "--waves"], "--waves needs --save DIR"),
])
def test_options_that_do_not_apply_are_refused(args, message):
    r = invoke(args)
    assert r.exit_code == 2 and message in r.output, r.output


def test_errors_name_the_option_as_typed():
    r = invoke(["generate", "core", "--model", "stbif", "--neurons", "10", "--lanes", "4"])
    assert r.exit_code == 2 and "--neurons=10 is not a multiple of --lanes=4" in r.output
    r = invoke(["simulate", "attention", "--simulator", "none", "--T", "200"])
    assert r.exit_code == 2 and "--T=200" in r.output and "rows=" not in r.output
    r = invoke(["convert", "--model", "vit_bn"])
    assert r.exit_code == 2 and "no embedded spikezip model 'vit_bn'" in r.output


def test_debug_env_gives_the_traceback(tmp_path):
    (tmp_path / "net.json").write_text("{")
    env = dict(os.environ, SPIKEFORGE_DEBUG="1")
    r = subprocess.run([sys.executable, "-m", "spikeforge.cli", "network", "show", "net.json"], cwd=tmp_path,
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "Traceback" in r.stderr


# -- output paths: checked before the work starts ------------------------------------------------------------
def test_output_paths_that_are_files_are_refused_before_work(tmp_path):
    (tmp_path / "taken").write_text("x")
    r = run(["demo", "--no-synth", "-o", "taken"], cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "'--out'" in r.stderr and "is a file" in r.stderr and "Traceback" not in r.stderr
    r = run(["simulate", "core", "--simulator", "amaranth", "--save", "taken/sub"], cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "is a file, so nothing can be created under it" in r.stderr
    r = run(["convert", "-o", "."], cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "'--out'" in r.stderr and "is a directory" in r.stderr


def test_a_folder_spikeforge_did_not_write_is_not_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = run(["generate", "core", "--preset", "if", "-o", "mine"], cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "was not written by spikeforge" in r.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# -- bad files: traces and networks ---------------------------------------------------------------------------
def _valid_trace(path):
    from spikeforge.sim.coverify import random_core_trace
    from spikeforge.hw.neuron_core import NeuronCore
    from spikeforge.sw import IntegrateFire
    return random_core_trace(NeuronCore(IntegrateFire(4), neurons=4, lanes=1), steps=10, events=40, seed=0).save(path)


@pytest.mark.parametrize("case", ["empty", "truncated", "foreign", "not_zip", "version"])
def test_bad_trace_files_give_one_line(tmp_path, case):
    good = _valid_trace(tmp_path / "good.npz")
    bad = tmp_path / "bad.npz"
    if case == "empty":
        bad.write_bytes(b"")
    elif case == "truncated":
        bad.write_bytes(good.read_bytes()[:200])
    elif case == "foreign":
        np.savez(bad, weights=np.zeros(3))
    elif case == "not_zip":
        bad.write_text("hello")
    else:
        with np.load(good) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays["meta"]))
        arrays["meta"] = np.array(json.dumps(dict(meta, version=99)))
        np.savez(bad, **arrays)
    for cmd in (["trace", "show", "bad.npz"], ["trace", "diff", "good.npz", "bad.npz"]):
        r = run(cmd, cwd=tmp_path, timeout=60)
        assert r.returncode == 2, (case, r.stderr)
        assert r.stderr.startswith("Error: ") and "bad.npz" in r.stderr and "Traceback" not in r.stderr


def test_trace_diff_refuses_traces_of_different_designs(tmp_path):
    from spikeforge.sim.coverify import random_core_trace
    from spikeforge.hw.neuron_core import NeuronCore
    from spikeforge.sw import IntegrateFire
    _valid_trace(tmp_path / "a.npz")
    random_core_trace(NeuronCore(IntegrateFire(8), neurons=4, lanes=1), steps=10, events=40, seed=0).save(
        tmp_path / "b.npz")
    r = run(["trace", "diff", "a.npz", "b.npz"], cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "a.npz" in r.stderr and "b.npz" in r.stderr


def test_a_stale_trace_in_an_output_folder_is_refused(tmp_path):
    r = run(["simulate", "core", "--model", "if", "--neurons", "4", "--lanes", "1", "--steps", "8", "--events",
             "30", "--simulator", "amaranth", "--save", "tr"], cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    stale = tmp_path / "tr" / "observed1.npz"
    stale.write_bytes((tmp_path / "tr" / "observed0.npz").read_bytes())
    r = run(["trace", "diff", "tr/golden0.npz", "tr/observed1.npz"], cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "was not written by the run" in r.stderr


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '{"format": "spikeforge-snn", "version": 1}\n{"op": 3}\n'])
def test_malformed_network_files_give_one_error(tmp_path, text):
    (tmp_path / "net.json").write_text(text)
    r = run(["network", "show", "net.json"], cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("Error: ") and "Traceback" not in r.stderr, r.stderr


# -- a design that cannot fit the FPGA: refused after yosys, before nextpnr -----------------------------------
def test_a_design_too_large_for_the_device_fails_before_place_and_route(monkeypatch, tmp_path):
    from spikeforge import api
    from spikeforge.boards import synth
    calls = []
    monkeypatch.setattr(synth, "_synth", lambda work, src, top, extra, log: calls.append(top) or "abc9")
    monkeypatch.setattr(synth, "_yosys_cells", lambda text: {"LUT4": 30000, "DP16KD": 90, "TRELLIS_FF": 100})
    (tmp_path / "x").mkdir()
    monkeypatch.setattr(synth, "_run", lambda *a, **k: pytest.fail("nextpnr must not run"))
    core = api.default_core("if")
    stat = tmp_path / "x" / f"{core.verilog_name}.stat"
    stat.write_text("")
    with pytest.raises(synth.DoesNotFitError) as e:
        api.report_core(core, workdir=tmp_path / "x")
    msg = str(e.value)
    assert "needs 30000 LUT4s, the LFE5U-25F has 24288" in msg and "90 DP16KD block RAMs" in msg
    assert "use --device 45k or 85k" in msg
    assert calls == [core.verilog_name]


# -- relative paths from any working directory; progress in a log ---------------------------------------------
def test_commands_that_write_files_work_with_relative_paths(tmp_path):
    r = run(["generate", "core", "--preset", "if", "-o", "gen"], cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "gen" / "neuron_core_if.v").exists()
    r = run(["generate", "attention", "--block", "qk", "--tokens", "4", "--dim", "4", "-o", "att"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert any(p.suffix == ".v" for p in (tmp_path / "att").iterdir())
    r = run(["simulate", "core", "--model", "if", "--neurons", "4", "--lanes", "1", "--steps", "8", "--events",
             "30", "--simulator", "amaranth", "--save", "tr", "--waves"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert {"golden0.npz", "observed0.npz", "waves0.vcd", "manifest.json"} <= {p.name for p in (tmp_path / "tr").iterdir()}
    r = run(["trace", "diff", "tr/golden0.npz", "tr/observed0.npz"], cwd=tmp_path)
    assert r.returncode == 0 and "traces equal" in r.stdout, r.stderr
    r = run(["convert", "--images", "2", "-o", "nets/net.json", "--traces", "nt"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "nets" / "net.json").exists() and (tmp_path / "nt" / "index.json").exists()
    # progress as plain lines, although stdout is not a terminal (sub-step lines are rate-limited)
    assert "convert vit_qann_L8 (spikezip): tracing and lowering the model" in r.stdout and "done in" in r.stdout
    r = run(["network", "show", "nets/net.json"], cwd=tmp_path)
    assert r.returncode == 0 and "readout" in r.stdout.lower() or "linear" in r.stdout, r.stdout


@pytest.mark.verilator
def test_verilator_runs_with_a_relative_save_folder_and_waves(tmp_path):
    r = run(["simulate", "core", "--model", "if", "--neurons", "4", "--lanes", "1", "--steps", "8", "--events",
             "30", "--save", "rel/traces", "--waves"], cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    names = {p.name for p in (tmp_path / "rel" / "traces").iterdir()}
    assert {"golden0.npz", "observed0.npz", "waves.vcd"} <= names
    assert (tmp_path / "rel" / "traces" / "waves.vcd").read_text().startswith("$")
