from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from hypothesis import given, strategies as st

from spikeforge.hw.neuron_core import CoreOp
from spikeforge.sim.payload import pack, unpack

LAYOUT = data.StructLayout({"op": CoreOp, "group": unsigned(5),
                            "current": data.ArrayLayout(signed(6), 3)})


@given(st.sampled_from(list(CoreOp)), st.integers(0, 31), st.lists(st.integers(-32, 31), min_size=3, max_size=3))
def test_pack_unpack_roundtrip(op, group, current):
    bits = pack(LAYOUT, {"op": op, "group": group, "current": current})
    assert 0 <= bits < 1 << LAYOUT.size
    assert unpack(LAYOUT, bits) == {"op": op.value, "group": group, "current": current}


def test_pack_matches_amaranth_const():
    value = {"op": CoreOp.READ, "group": 9, "current": [-1, 5, -32]}
    assert pack(LAYOUT, value) == LAYOUT.const(value).as_value().value & ((1 << LAYOUT.size) - 1)
