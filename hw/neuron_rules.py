"""Hardware form of the bit-exact neuron models: the per-lane datapath of the neuron core.

:func:`lane_rule` returns the rule matching a :class:`spikeforge.sw.neurons.NeuronModel`. Its
``accumulate`` adds the logic of the model's saturating addition; its end-of-step update is split
in two pipeline stages:

* ``update_a(m, old, phase, name)`` works from the state read from block RAM and returns a dict of
  named values, which the core registers;
* ``update_b(m, regs, name)`` finishes from those registers and returns an :class:`UpdateResult`.

Together they compute exactly what the model's ``update`` computes (same widths, saturation and
rounding). The split keeps a long rule — the phase neuron's shift-add multiplication by B — out of
the accumulate path's cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Const, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data

from ..sw.neurons import Bif, IntegrateFire, NeuronModel, PhaseNeuron, StBif
from .arith import const_mul, saturate

__all__ = ["lane_rule", "UpdateResult"]


@dataclass
class UpdateResult:
    """Outputs of one lane's end-of-step rule (all 1-bit except ``state``)."""
    state: dict
    fire: Value
    neg: Value
    overflow: Value
    truncated: Value


class _Rule:
    #: Parameters a core can take at run time (``NeuronCore(..., runtime_params=True)``), by name.
    runtime = ()

    def __init__(self, model: NeuronModel, params=None):
        self.model = model
        if params is not None and not self.runtime:
            raise TypeError(f"the {model.kind} neuron takes no run-time parameters; build its core with "
                            "runtime_params=False")
        self.params = params

    def param_layout(self) -> data.StructLayout:
        """Layout of the run-time parameters (empty for rules without any)."""
        return data.StructLayout({})

    def initial(self) -> dict:
        return dict(self.model.initial_state())

    def accumulate(self, m, old, current, name):
        v, ovf = saturate(m, old.v + current, self.model.v_width, name=f"{name}_acc_v")
        new = {f: getattr(old, f) for f in self.model.state_fields()}
        new["v"] = v
        return new, ovf

    # Rules short enough for one cycle define ``update`` and compute everything in stage a;
    # stage b only unpacks the registers.
    def update_a(self, m, old, phase, name) -> dict:
        r = self.update(m, old, phase, name)
        return {**{f"state_{k}": v for k, v in r.state.items()},
                "fire": r.fire, "neg": r.neg, "overflow": r.overflow, "truncated": r.truncated}

    def update_b(self, m, regs, name) -> UpdateResult:
        state = {f: regs[f"state_{f}"] for f in self.model.state_fields()}
        return UpdateResult(state, regs["fire"], regs["neg"], regs["overflow"], regs["truncated"])


class _StBifRule(_Rule):
    """ST-BIF; ``theta``, ``s_min`` and ``s_max`` may be run-time parameters (the widths stay the model's:
    a run-time theta must lie in ``[1, 2**(v_width-1))``, the bounds within ``s_width``)."""
    runtime = ("theta", "s_min", "s_max")

    def param_layout(self):
        return data.StructLayout({"theta": unsigned(self.model.v_width - 1), "s_min": signed(self.model.s_width),
                                  "s_max": signed(self.model.s_width)})

    @property
    def theta(self):
        return self.model.theta if self.params is None else self.params.theta

    @property
    def s_min(self):
        return self.model.s_min if self.params is None else self.params.s_min

    @property
    def s_max(self):
        return self.model.s_max if self.params is None else self.params.s_max

    def initial(self):
        if self.params is None:
            return dict(self.model.initial_state())
        return {"v": self.params.theta >> 1, "s": 0}          # theta // 2 for theta >= 1

    def _fire(self, m, v, s, name):
        model = self.model
        up, down = Signal(name=f"{name}_up"), Signal(name=f"{name}_down")
        m.d.comb += [up.eq((v >= self.theta) & (s < self.s_max)),
                     down.eq((v < 0) & (s > self.s_min))]
        new_v = Signal(signed(model.v_width), name=f"{name}_upd_v")
        new_s = Signal(signed(model.s_width), name=f"{name}_upd_s")
        m.d.comb += [new_v.eq(Mux(up, v - self.theta, Mux(down, v + self.theta, v))),
                     new_s.eq(s + up - down)]
        return up, down, new_v, new_s

    def update(self, m, old, phase, name):
        up, down, v, s = self._fire(m, old.v, old.s, name)
        return UpdateResult({"v": v, "s": s}, up | down, down, Const(0), Const(0))


class _BifRule(_StBifRule):
    def update(self, m, old, phase, name):
        model = self.model
        up, down, v, s = self._fire(m, old.v, old.s, name)
        window_end = phase == model.window - 1
        # "would fire again after this update", from the pre-update values so the comparators run in
        # parallel with the update instead of after it: after an up-spike v-theta >= theta needs
        # v >= 2*theta and s+1 < s_max; after a down-spike v+theta < 0 needs v < -theta and
        # s-1 > s_min; a neuron that did not fire stays quiet.
        busy = ((up & (old.v >= 2 * self.theta) & (old.s < self.s_max - 1)) |
                (down & (old.v < -self.theta) & (old.s > self.s_min + 1)))
        init = self.initial()
        state = {"v": Mux(window_end, init["v"], v), "s": Mux(window_end, init["s"], s)}
        return UpdateResult(state, up | down, down, Const(0), window_end & busy)


class _IntegrateFireRule(_Rule):
    def update(self, m, old, phase, name):
        model = self.model
        fire = Signal(name=f"{name}_fire")
        m.d.comb += fire.eq(old.v >= model.theta)
        after = old.v - model.theta if model.reset == "subtract" else 0
        return UpdateResult({"v": Mux(fire, after, old.v)}, fire, Const(0), Const(0), Const(0))


class _PhaseRule(_Rule):
    def update_a(self, m, old, phase, name):
        model = self.model
        v, fired = old.v, old.fired
        in_window = phase >= model.T
        up, down = Signal(name=f"{name}_up"), Signal(name=f"{name}_down")
        m.d.comb += up.eq(in_window & ~fired & (v >= model.theta_fx))
        if model.bipolar:
            m.d.comb += down.eq(in_window & ~fired & ~up & (v <= -model.theta_fx))
        return {"v": v, "up": up, "down": down, "done": fired | up | down,
                "product": const_mul(v, model.b_fx) >> model.b_frac_bits,  # arithmetic shift: floor
                "period_end": phase == model.period - 1}

    def update_b(self, m, regs, name):
        model = self.model
        mul, ovf = saturate(m, regs["product"], model.v_width, name=f"{name}_mul_v")
        done, period_end = regs["done"], regs["period_end"]
        state = {"v": Mux(period_end, 0, Mux(done, regs["v"], mul)), "fired": Mux(period_end, 0, done)}
        return UpdateResult(state, regs["up"] | regs["down"], regs["down"], ovf & ~done, Const(0))


def lane_rule(model: NeuronModel, params=None) -> _Rule:
    """The hardware rule for ``model`` (dispatch on its type; subclasses first); ``params``: a view of
    :meth:`_Rule.param_layout` holding run-time parameters, or ``None`` for the model's constants."""
    for cls, rule in ((Bif, _BifRule), (StBif, _StBifRule), (IntegrateFire, _IntegrateFireRule),
                      (PhaseNeuron, _PhaseRule)):
        if isinstance(model, cls):
            return rule(model, params)
    raise TypeError(f"no hardware rule for neuron model {type(model).__name__}; supported: "
                    "StBif, Bif, IntegrateFire, PhaseNeuron")
