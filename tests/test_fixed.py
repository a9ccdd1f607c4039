import pytest
import torch
from hypothesis import given, strategies as st

from spikeforge.sw.fixed import (ceil_log2, check_int, check_width, csd_digits, saturate, signed_range,
                                 signed_width_for)


@given(st.integers(0, 1 << 40))
def test_csd_digits_sum_to_constant_without_adjacent_digits(c):
    digits = csd_digits(c)
    assert sum(sign << shift for shift, sign in digits) == c
    shifts = [s for s, _ in digits]
    assert all(b - a >= 2 for a, b in zip(shifts, shifts[1:]))


@given(st.integers(-(1 << 20), 1 << 20), st.integers(-(1 << 20), 1 << 20))
def test_signed_width_for_is_minimal(a, b):
    lo, hi = min(a, b), max(a, b)
    w = signed_width_for(lo, hi)
    mn, mx = signed_range(w)
    assert mn <= lo and hi <= mx
    if w > 1:
        mn, mx = signed_range(w - 1)
        assert lo < mn or hi > mx


def test_saturate_flags_exactly_the_clamped_elements():
    x = torch.tensor([-200, -128, -1, 0, 127, 128, 300])
    y, ovf = saturate(x, 8)
    assert y.tolist() == [-128, -128, -1, 0, 127, 127, 127]
    assert ovf.tolist() == [True, False, False, False, False, True, True]


def test_ceil_log2_exact_at_powers_of_two():
    assert [ceil_log2(x) for x in (1, 2, 3, 4, 5, 1024, 1025)] == [0, 1, 2, 2, 3, 10, 11]


def test_parameter_errors_name_parameter_and_limit():
    with pytest.raises(ValueError, match=r"lanes=0 is too small: it must be >= 1"):
        check_int("lanes", 0, minimum=1)
    with pytest.raises(TypeError, match="T must be an integer"):
        check_int("T", 2.5, minimum=1)
    with pytest.raises(ValueError, match="raise v_width to at least 9"):
        check_width("v_width", 8, -200, 200, "theta")
