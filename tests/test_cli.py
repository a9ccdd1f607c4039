"""The command line is a thin layer over spikeforge.api; every subcommand has --help."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from spikeforge.cli import main

COMMANDS = [[], ["doctor"], ["network"], ["network", "show"], ["compile"], ["generate"], ["generate", "core"], ["simulate"], ["simulate", "core"], ["report"],
            ["report", "core"], ["generate", "attention"], ["simulate", "attention"], ["report", "attention"],
            ["trace"], ["trace", "show"], ["trace", "diff"], ["demo"], ["convert"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "spikeforge")
def test_every_command_has_help(cmd):
    r = CliRunner().invoke(main, cmd + ["--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "spikeforge.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "spikeforge" in out.stdout


def test_generate_core_writes_verilog_and_config(tmp_path):
    r = CliRunner().invoke(main, ["generate", "core", "--model", "phase", "--T", "8", "--B", "1.4",
                                  "--neurons", "32", "--lanes", "4", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    v = (tmp_path / "neuron_core_phase.v").read_text()
    assert "module neuron_core_phase" in v and "events__payload" in v
    cfg = json.loads((tmp_path / "neuron_core_phase.json").read_text())
    assert cfg["model"]["T"] == 8 and cfg["lanes"] == 4


@pytest.mark.parametrize("args, message", [
    (["--model", "phase", "--T", "8", "--B", "1.0"], "B=1.0 is out of range: the phase-coding base must be > 1"),
    (["--model", "phase", "--T", "0", "--B", "1.4"], "'--T': 0 is not in the range x>=1"),
    (["--model", "stbif", "--neurons", "10", "--lanes", "4"], "--neurons=10 is not a multiple of --lanes=4"),
    (["--model", "bif"], "the bif model needs --window"),
    (["--model", "stbif", "--levels", "16", "--theta", "300", "--v-width", "8"], "raise --v-width to at least"),
])
def test_bad_parameters_give_clear_errors(tmp_path, args, message):
    r = CliRunner().invoke(main, ["generate", "core", *args, "-o", str(tmp_path)])
    assert r.exit_code == 2
    assert message in r.output


def test_simulate_core_on_amaranth_and_trace_tools(tmp_path):
    r = CliRunner().invoke(main, ["simulate", "core", "--model", "if", "--neurons", "8", "--lanes", "2",
                                  "--steps", "12", "--events", "80", "--simulator", "amaranth"])
    assert r.exit_code == 0, r.output
    assert "equal" in r.output
    from spikeforge.sim.coverify import random_core_trace
    from spikeforge.hw.neuron_core import NeuronCore
    from spikeforge.sw import IntegrateFire
    t = random_core_trace(NeuronCore(IntegrateFire(4), neurons=4, lanes=1), steps=10, events=40, seed=0)
    a = t.save(tmp_path / "a.npz")
    assert CliRunner().invoke(main, ["trace", "diff", str(a), str(a)]).exit_code == 0
    t.spikes = t.spikes[1:]
    b = t.save(tmp_path / "b.npz")
    r = CliRunner().invoke(main, ["trace", "diff", str(a), str(b)])
    assert r.exit_code == 1 and "first:" in r.output
    r = CliRunner().invoke(main, ["trace", "show", str(a), "--limit", "3"])
    assert r.exit_code == 0 and "more" in r.output


def test_simulate_attention_runs_a_head_on_the_rtl():
    r = CliRunner().invoke(main, ["simulate", "attention", "--T", "8", "--B", "2.0", "--tokens", "3", "--keys", "4",
                                  "--dim", "2", "--dim-v", "3", "--simulator", "amaranth"])
    assert r.exit_code == 0, r.output
    assert "RTL vs bit-exact" in r.output and "equal" in r.output


def test_generate_attention_block(tmp_path):
    r = CliRunner().invoke(main, ["generate", "attention", "--block", "output", "--T", "8", "--tokens", "3",
                                  "--dim", "2", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "attention_output.json").read_text())
    assert cfg["block"] == "AttentionOutput" and cfg["fmt"]["T"] == 8
    assert "module attention_output" in (tmp_path / "attention_output.v").read_text()


def test_attention_bad_parameters_are_usage_errors():
    r = CliRunner().invoke(main, ["simulate", "attention", "--B", "1.0", "--simulator", "none"])
    assert r.exit_code == 2 and "B=1.0" in r.output


def test_convert_writes_a_loadable_network_and_checks_it(tmp_path):
    from spikeforge.sw.ir import Network
    r = CliRunner().invoke(main, ["convert", "--images", "8", "-o", str(tmp_path / "net.json"),
                                  "--traces", str(tmp_path / "traces")])
    assert r.exit_code == 0, r.output
    assert "bit-exact on 8 images" in r.output
    net = Network.load(tmp_path / "net.json")
    assert (tmp_path / "traces" / "index.json").exists()
    assert len(list((tmp_path / "traces").glob("*.npz"))) == len(net.neurons())


def test_convert_refuses_unknown_model_with_the_choices():
    r = CliRunner().invoke(main, ["convert", "--model", "resnet50"])
    assert r.exit_code == 2 and "vit_qann_L16" in r.output
