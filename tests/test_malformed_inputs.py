"""Malformed inputs get one clear error, never a raw traceback.

* trace files (``SpikeTrace.load``): every malformed file raises ``TraceFileError``; traces of two
  different designs are refused by ``check_same_design`` / ``diff_traces``; saves are atomic;
* IR files (``Network.load`` / ``Network.from_dict``): every malformed structure raises ``IRError``;
* property tests (hypothesis) mutate a valid file/dict at random: the loader either succeeds or raises
  its own error type, nothing else;
* API holes: ``NeuronModel.run``'s input contract, the WOSS inhibition default, default ``frac_bits``
  of the phase neuron and the attention formats over a (T, B) grid.
"""

from __future__ import annotations

import copy
import inspect
import io
import json
import math
import os
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from spikeforge.sim.trace import SpikeTrace, TraceFileError, check_same_design, diff_traces
from spikeforge.sw import PhaseNeuron, StBif
from spikeforge.sw.ir import IRError, Network, Node, Port

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


# == trace files ===============================================================================================
def _golden(block="neuron_core", config=None, steps=6) -> SpikeTrace:
    config = {"model": StBif.signed(8, 4).to_dict(), "neurons": 3, "lanes": 1} if config is None else config
    return SpikeTrace({"block": block, "config": config, "steps": steps}, [(0, 1, 3), (2, 0, -2)],
                      [(1, 1, 1), (3, 2, -1)], {"v": np.array([1, 2, 3]), "s": np.array([0, 1, -1])},
                      {"overflows": 0, "rejected": 1})


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


_META = {"format": "spikeforge-trace", "version": 1, "block": "neuron_core", "config": {}, "steps": 4}
_EV = np.zeros((2, 3), np.int64)


def _meta(**kw):
    m = dict(_META, **kw)
    return np.array(json.dumps({k: v for k, v in m.items() if v is not ...}))


@pytest.fixture
def trace_file(tmp_path):
    return _golden().save(tmp_path / "golden.npz")


def test_round_trip_still_exact(trace_file):
    t = SpikeTrace.load(trace_file)
    g = _golden()
    assert t.meta == g.meta and t.source == str(trace_file) and g.source is None
    assert np.array_equal(t.inputs, g.inputs) and np.array_equal(t.spikes, g.spikes)
    assert diff_traces(g, t).equal and t.counters == g.counters


TRACE_CASES = [
    ("empty", lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    ("not a zip", lambda p: p.write_text("step neuron sign\n1 2 +\n"), r"not an \.npz \(zip\) archive"),
    ("npy", lambda p: np.save(open(p, "wb"), np.zeros(3)), r"single \.npy array"),
    ("no meta", lambda p: _npz(p, inputs=_EV, spikes=_EV), r"no 'meta' member"),
    ("meta not JSON", lambda p: _npz(p, meta=np.array("{block: 1"), inputs=_EV, spikes=_EV), r"'meta' is not valid JSON"),
    ("meta not a string", lambda p: _npz(p, meta=np.arange(3), inputs=_EV, spikes=_EV), r"'meta' is not a JSON string"),
    ("meta a list", lambda p: _npz(p, meta=np.array("[1, 2]"), inputs=_EV, spikes=_EV), r"not a spikeforge trace"),
    ("no format tag", lambda p: _npz(p, meta=_meta(format=...), inputs=_EV, spikes=_EV),
     r"not a spikeforge trace \(missing format tag"),
    ("other version", lambda p: _npz(p, meta=_meta(version=2), inputs=_EV, spikes=_EV),
     r"trace format version 2; this spikeforge reads version 1"),
    ("version as text", lambda p: _npz(p, meta=_meta(version="1"), inputs=_EV, spikes=_EV), r"version '1'"),
    ("missing inputs", lambda p: _npz(p, meta=_meta(), spikes=_EV), r"has no 'inputs' array"),
    ("missing spikes", lambda p: _npz(p, meta=_meta(), inputs=_EV), r"has no 'spikes' array"),
    ("float inputs", lambda p: _npz(p, meta=_meta(), inputs=np.zeros((2, 3)), spikes=_EV),
     r"'inputs' must be an integer array .* got dtype float64"),
    ("two columns", lambda p: _npz(p, meta=_meta(), inputs=_EV, spikes=np.zeros((4, 2), np.int64)),
     r"'spikes' must be \[E, 3\].* got shape \(4, 2\)"),
    ("3-d spikes", lambda p: _npz(p, meta=_meta(), inputs=_EV, spikes=np.zeros((1, 2, 3), np.int64)),
     r"'spikes' must be \[E, 3\]"),
    ("string spikes", lambda p: _npz(p, meta=_meta(), inputs=_EV, spikes=np.array(["a", "b"])), r"dtype <U1"),
    ("missing steps", lambda p: _npz(p, meta=_meta(steps=...), inputs=_EV, spikes=_EV), r"'steps' .* is missing"),
    ("float steps", lambda p: _npz(p, meta=_meta(steps=2.5), inputs=_EV, spikes=_EV),
     r"'steps' .* must be an integer >= 0, got 2.5"),
    ("negative steps", lambda p: _npz(p, meta=_meta(steps=-1), inputs=_EV, spikes=_EV), r"integer >= 0, got -1"),
    ("bool steps", lambda p: _npz(p, meta=_meta(steps=True), inputs=_EV, spikes=_EV), r"integer >= 0, got True"),
    ("missing block", lambda p: _npz(p, meta=_meta(block=...), inputs=_EV, spikes=_EV), r"'block' .* is missing"),
    ("config not an object", lambda p: _npz(p, meta=_meta(config=[1]), inputs=_EV, spikes=_EV),
     r"'config' must be an object"),
    ("2-d state", lambda p: _npz(p, meta=_meta(), inputs=_EV, spikes=_EV, state__v=np.zeros((2, 2), np.int64)),
     r"'state__v' must be \[N\]"),
    ("float counter", lambda p: _npz(p, meta=_meta(), inputs=_EV, spikes=_EV, counter__overflows=np.array(1.5)),
     r"'counter__overflows' must be an integer array"),
]


@pytest.mark.parametrize("name, make, match", TRACE_CASES, ids=[c[0] for c in TRACE_CASES])
def test_malformed_trace_files_name_the_file_and_the_problem(tmp_path, name, make, match):
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(TraceFileError, match=match) as e:
        SpikeTrace.load(path)
    assert str(path) in str(e.value) and e.value.path == str(path)
    assert isinstance(e.value, ValueError)


def test_truncated_trace_files(trace_file, tmp_path):
    raw = trace_file.read_bytes()
    for cut in (4, 30, len(raw) // 2, len(raw) - 1):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(raw[:cut])
        with pytest.raises(TraceFileError, match=r"truncated or corrupt") as e:
            SpikeTrace.load(path)
        assert str(path) in str(e.value)


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(TraceFileError, match=r"is a directory, not a trace file"):
        SpikeTrace.load(tmp_path)
    with pytest.raises(TraceFileError, match=r"does not exist"):
        SpikeTrace.load(tmp_path / "nope.npz")


def test_empty_event_arrays_and_unsigned_ints_load(tmp_path):
    path = _npz(tmp_path / "t.npz", meta=_meta(), inputs=np.zeros(0, np.int64), spikes=np.zeros((1, 3), np.uint8))
    t = SpikeTrace.load(path)
    assert t.inputs.shape == (0, 3) and t.spikes.dtype == np.int64


# -- same design -----------------------------------------------------------------------------------------------
def test_same_design_passes_and_tuples_equal_lists(trace_file):
    g = _golden(config={"model": {"kind": "stbif", "theta": 4}, "neurons": 3, "lanes": 1, "dims": (2, 3)})
    o = SpikeTrace.load(g.save(trace_file.with_name("o.npz")))       # the tuple came back a list
    assert o.meta["config"]["dims"] == [2, 3]
    check_same_design(g, o)
    assert diff_traces(g, o).equal


def test_different_designs_are_refused_naming_both_files(tmp_path):
    a = SpikeTrace.load(_golden().save(tmp_path / "golden.npz"))
    other = {"model": StBif.signed(8, 7).to_dict(), "neurons": 3, "lanes": 1}
    b = SpikeTrace.load(_golden(config=other).save(tmp_path / "observed.npz"))
    with pytest.raises(TraceFileError, match=r"different designs") as e:
        check_same_design(a, b)
    msg = str(e.value)
    assert str(tmp_path / "golden.npz") in msg and str(tmp_path / "observed.npz") in msg
    assert "config.model.theta: 4 vs 7" in msg
    assert e.value.paths == (str(tmp_path / "golden.npz"), str(tmp_path / "observed.npz"))
    with pytest.raises(TraceFileError, match=r"config.model.theta"):
        diff_traces(a, b)                                           # diff refuses by default
    assert diff_traces(a, b, check_design=False).equal              # same events, when asked to compare anyway
    c = SpikeTrace.load(_golden(block="woss_softmax", steps=9).save(tmp_path / "woss.npz"))
    with pytest.raises(TraceFileError, match=r"different blocks .*block: 'neuron_core' vs 'woss_softmax'.*steps: 6 vs 9"):
        check_same_design(a, c, "g.npz", "w.npz")


def test_replayed_observed_traces_carry_their_goldens_design():
    """Observed traces copy the golden's block/config/steps (core replay and the attention replays)."""
    from spikeforge.hw.neuron_core import NeuronCore
    from spikeforge.hw.trace_matmul import TraceMatmul
    from spikeforge.sim.attention_replay import matmul_golden, random_matmul_events, verify_block
    from spikeforge.sim.coverify import random_core_trace, verify_core
    from spikeforge.sw.attention import TraceFormat
    core = NeuronCore(StBif.signed(8, 4, current_width=4), neurons=4, lanes=2)
    golden = random_core_trace(core, steps=5, events=12, seed=3)
    (check,) = verify_core(core, [golden], simulator="amaranth")
    check_same_design(golden, check.observed)
    assert check.diff.equal and check.observed.meta["observed"] is True
    engine = TraceMatmul(TraceFormat("phase", T=3, B=2.0, channels=2), rows=2, cols=2)
    g = matmul_golden(engine, random_matmul_events(engine, steps=3, density=0.5, seed=1))
    (bc,) = verify_block(engine, [g], simulator="amaranth", idle=0.0, backpressure=0.0)
    check_same_design(g, bc.observed)
    assert bc.diff.equal


# -- atomic save -----------------------------------------------------------------------------------------------
def test_save_is_atomic(tmp_path, monkeypatch):
    path = _golden().save(tmp_path / "t.npz")
    before = path.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["t.npz"]                # no temporary file left behind
    mode = os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask

    def interrupted(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _golden(steps=7).save(path)
    assert path.read_bytes() == before                              # the old file is untouched
    assert sorted(os.listdir(tmp_path)) == ["t.npz"]
    with pytest.raises(KeyboardInterrupt):
        _golden().save(tmp_path / "new.npz")
    assert sorted(os.listdir(tmp_path)) == ["t.npz"]                # no half file under the new name


# -- property tests: trace files ------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2 ** 62, max_value=2 ** 70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8)


def _paths(x, prefix=()):
    """Every path (tuple of keys/indices) into a JSON-like value, the root included."""
    out = [prefix]
    if isinstance(x, dict):
        for k, v in x.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            out += _paths(v, prefix + (i,))
    return out


def _get(x, path):
    for p in path:
        x = x[p]
    return x


@st.composite
def json_mutation(draw, value):
    """``value`` (a JSON-like dict/list, copied) with 1-3 random edits: drop a key or element, replace a
    value with random JSON, corrupt a number (huge, negative, NaN, bool, float), or nest garbage."""
    value = copy.deepcopy(value)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(value)
        path = draw(st.sampled_from(paths[1:] or paths))
        if not path:
            return draw(JSON)
        parent, key = _get(value, path[:-1]), path[-1]
        kind = draw(st.sampled_from(["drop", "replace", "number", "nest"]))
        if kind == "drop":
            del parent[key]
        elif kind == "replace":
            parent[key] = draw(JSON)
        elif kind == "number":
            parent[key] = draw(st.sampled_from([-1, 0, 2 ** 63, -2 ** 63 - 1, 10 ** 30, 1.5, -0.0, float("nan"),
                                                float("inf"), True, False, "12", None, [1, 2], {"1": 2}]))
        else:
            parent[key] = [parent[key], draw(JSON)] if draw(st.booleans()) else {"x": parent[key]}
    return value


def _trace_bytes() -> bytes:
    import tempfile
    with tempfile.TemporaryDirectory(prefix="sf-fuzz-") as d:
        return _golden().save(os.path.join(d, "t.npz")).read_bytes()


_TRACE_BYTES = _trace_bytes()


def _members(raw: bytes) -> dict:
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _load_bytes(tmp_path, raw: bytes):
    path = tmp_path / "fuzz.npz"
    path.write_bytes(raw)
    try:
        return SpikeTrace.load(path)
    except TraceFileError as e:
        assert str(path) in str(e)
        return None


@FUZZ
@given(data=st.data())
def test_fuzzed_trace_bytes_load_or_raise_trace_file_error(tmp_path, data):
    raw = bytearray(_TRACE_BYTES)
    kind = data.draw(st.sampled_from(["truncate", "flip", "both"]))
    if kind in ("truncate", "both"):
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    if kind in ("flip", "both") and raw:
        for _ in range(data.draw(st.integers(1, 6))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    _load_bytes(tmp_path, bytes(raw))


ARRAYS = st.one_of(
    st.builds(lambda s, d: np.zeros(s, d), st.lists(st.integers(0, 4), max_size=3).map(tuple),
              st.sampled_from([np.int64, np.int8, np.uint64, np.float64, np.bool_, np.complex64])),
    st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), max_size=6).map(lambda v: np.array(v, np.int64)),
    st.text(max_size=8).map(np.array),
    st.just(np.array(2 ** 64 - 1, np.uint64)))


@FUZZ
@given(data=st.data())
def test_fuzzed_trace_members_load_or_raise_trace_file_error(tmp_path, data):
    members = _members(_TRACE_BYTES)
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["drop", "array", "meta_json", "meta_text", "extra"]))
        names = sorted(members)
        if kind == "drop" and names:
            del members[data.draw(st.sampled_from(names))]
        elif kind == "array" and names:
            members[data.draw(st.sampled_from(names))] = data.draw(ARRAYS)
        elif kind == "meta_json" and "meta" in members and members["meta"].dtype.kind == "U":
            try:
                meta = json.loads(str(members["meta"]))
            except ValueError:
                continue
            members["meta"] = np.array(json.dumps(data.draw(json_mutation(meta))))
        elif kind == "meta_text":
            members["meta"] = np.array(data.draw(st.text(max_size=40)))
        else:
            members[data.draw(st.sampled_from(["state__x", "counter__y", "z"]))] = data.draw(ARRAYS)
    buf = io.BytesIO()
    np.savez_compressed(buf, **members)
    _load_bytes(tmp_path, buf.getvalue())


@pytest.mark.filterwarnings("ignore:Duplicate name")
@FUZZ
@given(data=st.data())
def test_fuzzed_zip_structure_loads_or_raises_trace_file_error(tmp_path, data):
    """Members renamed, duplicated or stored raw (not .npy) inside a real zip."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(_TRACE_BYTES)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            body = zin.read(info)
            kind = data.draw(st.sampled_from(["keep", "keep", "rename", "raw", "dup", "cut"]))
            name = info.filename
            if kind == "rename":
                name = data.draw(st.sampled_from(["meta", "inputs.npy", "x.npy", "spikes.txt", "meta.npy"]))
            elif kind == "raw":
                body = data.draw(st.binary(max_size=40))
            elif kind == "cut":
                body = body[:data.draw(st.integers(0, len(body)))]
            zout.writestr(name, body)
            if kind == "dup":
                zout.writestr(name, body)
    _load_bytes(tmp_path, out.getvalue())


# == IR files ==================================================================================================
def _network() -> Network:
    model = StBif.signed(8, theta=4, current_width=8)
    nodes = [Node("x", "input", [], (2, 3), {"scale": 0.0625, "encoding": "analog", "low": 0, "high": 16}),
             Node("fc", "linear", [Port("x")], (2, 4), {"weight_bits": 8},
                  {"weight": np.arange(12).reshape(4, 3) - 6, "bias": np.ones((2, 4), np.int64)}),
             Node("act", "neuron", [Port("fc", np.arange(8)[::-1].copy())], (8,), {"model": model.to_dict(), "step": 0.5}),
             Node("res", "add", [Port("act"), Port("fc", np.arange(8))], (8,)),
             Node("head", "linear", [Port("res", np.arange(8).reshape(1, 8))], (1, 2), {"weight_bits": 8},
                  {"weight": np.ones((2, 8), np.int64)})]
    return Network("spikezip", nodes, "head", 0.1, {"levels": 8}).validate()


NET = _network().to_dict()


def test_valid_network_round_trips(tmp_path):
    net = Network.load(_network().save(tmp_path / "n.json"))
    assert net.to_dict() == NET


TEXT_CASES = [
    ("empty", "", r"is empty"),
    ("blank", "  \n", r"is empty"),
    ("not JSON", "nodes: [1, 2]", r"not valid JSON"),
    ("truncated", json.dumps(NET)[:57], r"not valid JSON"),
    ("JSON lines", "\n".join(json.dumps(n) for n in NET["nodes"]), r"not valid JSON"),
    ("a list", json.dumps(NET["nodes"]), r"not a spikeforge network .*JSON array, not an object"),
    ("a number", "3", r"not a spikeforge network .*JSON integer"),
    ("deep nesting", "[" * 100000 + "]" * 100000, r"not valid JSON"),
]


@pytest.mark.parametrize("name, text, match", TEXT_CASES, ids=[c[0] for c in TEXT_CASES])
def test_malformed_network_text(tmp_path, name, text, match):
    path = tmp_path / "net.json"
    path.write_text(text)
    with pytest.raises(IRError, match=match) as e:
        Network.load(path)
    assert str(path) in str(e.value)


def test_unreadable_network_files(tmp_path):
    with pytest.raises(IRError, match=r"is a directory"):
        Network.load(tmp_path)
    with pytest.raises(IRError, match=r"does not exist"):
        Network.load(tmp_path / "none.json")
    (tmp_path / "bin.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(IRError, match=r"not a text \(UTF-8 JSON\) file"):
        Network.load(tmp_path / "bin.json")


def _mutate(path_and_value):
    d = copy.deepcopy(NET)
    for path, value in path_and_value:
        parent = _get(d, path[:-1])
        if value is ...:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return d


@pytest.mark.parametrize("edits, match", [
    ([(("nodes",), "abc")], r"'nodes' must be a list of node objects, got string"),
    ([(("nodes",), ...)], r"'nodes' is missing"),
    ([(("nodes", 1), 5)], r"node #1: must be an object, got integer 5"),
    ([(("nodes", 1), [1, 2])], r"node #1: must be an object, got array"),
    ([(("nodes", 1, "op"), ...)], r"node #1 \(fc\): missing 'op'"),
    ([(("nodes", 1, "name"), ...), (("nodes", 2, "shape"), ...)], r"node #1: missing 'name'.*\n.*node #2 \(act\): missing 'shape'"),
    ([(("nodes", 1, "shape"), "2,4")], r"'shape' must be a list of integers, got string '2,4'"),
    ([(("nodes", 1, "shape"), [2, 4.0])], r"'shape' must be a list of integers"),
    ([(("nodes", 1, "shape"), [2, True])], r"'shape' must be a list of integers"),
    ([(("nodes", 0, "shape"), [-2, 3])], r"'shape' \[-2, 3\] has a negative dimension"),
    ([(("nodes", 0, "shape"), [2 ** 40, 2 ** 40])], r"is too large"),
    ([(("nodes", 0, "shape"), [10 ** 30])], r"is too large"),
    ([(("nodes", 2, "inputs", 0, "index", "data"), "76543210")], r"data must be a flat list of numbers, got string"),
    ([(("nodes", 2, "inputs", 0, "index", "data"), [[7, 6], [5, 4], [3, 2], [1, 0]])], r"has 4 values but shape \[8\]"),
    ([(("nodes", 2, "inputs", 0, "index", "data"), [[7]] * 8)], r"got nested lists"),
    ([(("nodes", 2, "inputs", 0, "index", "data"), [[7], [6, 5]] + [0] * 6)], r"flat list of numbers"),
    ([(("nodes", 2, "inputs", 0, "index", "data"), [7.5] + [0] * 7)], r"int array holds non-integer values \(e.g. 7.5\)"),
    ([(("nodes", 2, "inputs", 0, "index", "data"), [True] * 8)], r"got booleans"),
    ([(("nodes", 2, "inputs", 0, "index", "data"), [None] * 8)], r"flat list of numbers that fit 64 bits, got None"),
    ([(("nodes", 2, "inputs", 0, "index", "dtype"), "int8")], r"dtype must be 'int' or 'float'"),
    ([(("nodes", 2, "inputs", 0, "index"), [7, 6])], r"must be an array object"),
    ([(("nodes", 2, "inputs", 0), "fc")], r"input 0 must be an object \{source"),
    ([(("nodes", 2, "inputs"), {"source": "fc"})], r"'inputs' must be a list of ports"),
    ([(("nodes", 1, "arrays", "weight", "data", 0), 10 ** 30)], r"fit 64 bits"),
    ([(("nodes", 1, "arrays", "weight", "data", 0), 2 ** 63)], r"do not fit 64 bits"),
    ([(("nodes", 1, "arrays", "weight", "data", 0), -2 ** 63)], r"weight magnitude 9223372036854775808 overflows"),
    ([(("nodes", 1, "arrays", "weight", "data", 0), float("nan"))], r"non-integer values \(e.g. nan\)"),
    ([(("nodes", 1, "arrays", "weight", "shape"), [3, 4, -1])], r"negative dimension"),
    ([(("nodes", 1, "arrays", "weight", "shape"), [5, 3])], r"has 12 values but shape \[5, 3\] needs 15"),
    ([(("nodes", 1, "arrays"), [1, 2])], r"'arrays' must be an object"),
    ([(("nodes", 2, "params"), "stbif")], r"'params' must be an object, got string"),
    ([(("nodes", 2, "params", "model"), "stbif")], r"neuron model: must be an object"),
    ([(("nodes", 2, "params", "model", "theta"), [4])], r"theta must be an integer, not \[4\]"),
    ([(("nodes", 2, "params", "model", "kind"), ["stbif"])], r"unknown neuron model kind"),
    ([(("nodes", 2, "params", "model", "theta"), 2 ** 64)], r"params.model.theta = 18446744073709551616 "
                                                            r"\(does not fit 64 bits\)"),
    ([(("nodes", 2, "params", "step"), float("nan"))], r"params.step = nan \(not a finite number\)"),
    ([(("nodes", 0, "params", "scale"), float("inf"))], r"params.scale = inf"),
    ([(("nodes", 0, "params", "scale"), True)], r"scale must be a positive number, got True"),
    ([(("nodes", 2, "params", "nested"), json.loads("[" * 40 + "1" + "]" * 40))], r"nested more than 32 levels"),
    ([(("nodes", 1, "weights"), {})], r"unknown key 'weights'"),
    ([(("nodes", 1, "name"), 7)], r"'name' must be a string, got integer 7"),
    ([(("output",), ...)], r"'output' .* is missing"),
    ([(("output",), ["head"])], r"'output' must be a string"),
    ([(("output_scale",), float("nan"))], r"output_scale must be a positive number, got nan"),
    ([(("meta",), [])], r"'meta' must be an object"),
    ([(("version",), True)], r"format version True"),
    ([(("version",), "1")], r"format version '1'"),
    ([(("format",), ...)], r"format tag"),
    ([(("nodes", 2, "params", "model", "theta"), 0), (("nodes", 1, "arrays", "weight", "data", 0), 1000)],
     r"2 problems.*\n.*'fc'.*overflows weight_bits=8.*\n.*'act'.*theta"),
])
def test_malformed_network_structures_raise_one_irerror(edits, match, tmp_path):
    d = _mutate(edits)
    with pytest.raises(IRError, match=match):
        Network.from_dict(d)
    path = tmp_path / "n.json"
    path.write_text(json.dumps(d))
    with pytest.raises(IRError, match=match) as e:
        Network.load(path)
    assert str(path) in str(e.value)


def test_every_structural_problem_of_a_file_is_listed():
    d = _mutate([(("nodes", 1, "shape"), "x"), (("nodes", 2, "params"), 3), (("nodes", 4, "inputs"), 1),
                 (("output_scale",), -1)])
    with pytest.raises(IRError) as e:
        Network.from_dict(d)
    assert len(e.value.problems) == 4, e.value.problems


def _check_network_result(load):
    try:
        net = load()
    except IRError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
        return
    assert isinstance(net, Network)
    net.summary()                                  # a network that loads is well-formed enough to describe


@FUZZ
@given(d=json_mutation(NET))
def test_fuzzed_network_dicts_load_or_raise_irerror(d):
    _check_network_result(lambda: Network.from_dict(d))


NET_TEXT = json.dumps(NET)


@FUZZ
@given(data=st.data())
def test_fuzzed_network_text_loads_or_raises_irerror(tmp_path, data):
    text = NET_TEXT
    kind = data.draw(st.sampled_from(["truncate", "flip", "number", "json"]))
    if kind == "truncate":
        text = text[:data.draw(st.integers(0, len(text)))]
    elif kind == "flip":
        chars = list(text)
        for _ in range(data.draw(st.integers(1, 5))):
            chars[data.draw(st.integers(0, len(chars) - 1))] = data.draw(st.sampled_from(list('{}[]",:0123456789-.e aN')))
        text = "".join(chars)
    elif kind == "number":            # corrupt one number of the text in place
        import re
        spans = [m.span() for m in re.finditer(r"-?\d+(\.\d+)?", text)]
        a, b = data.draw(st.sampled_from(spans))
        text = text[:a] + data.draw(st.sampled_from(["1e999", "NaN", "-Infinity", "9" * 40, "-1", "0.5", "true",
                                                     "null", '"7"', "[]", "{}"])) + text[b:]
    else:
        text = json.dumps(data.draw(json_mutation(NET)))
    path = tmp_path / "fuzz.json"
    path.write_text(text)
    _check_network_result(lambda: Network.load(path))


# == NeuronModel.run input contract ============================================================================
def test_run_accepts_numpy_and_torch_alike():
    m = StBif.signed(8, 4, current_width=8)
    cur = np.array([[5, -3, 0], [7, 1, -8], [0, 0, 2]], np.int32)
    a, b = m.run(cur), m.run(torch.from_numpy(cur))
    assert torch.equal(a.spikes, b.spikes) and a.spikes.shape == (3, 3)
    assert torch.equal(m.run(cur.tolist()).spikes, a.spikes)


def test_run_refuses_ambiguous_shapes_and_reads_them_as_told():
    m = StBif.signed(8, 4, current_width=8)
    cur = torch.tensor([[[3, 1, 0], [2, 0, 0]]] * 4)               # [T=4, 2, 3]
    with pytest.raises(ValueError, match=r"\(4, 2, 3\) is ambiguous: pass stacked=True .*\[T, K, \*neurons\].*"
                                         r"stacked=False .*\[T, \*neurons\]"):
        m.run(cur)
    stacked = m.run(cur, stacked=True)
    assert stacked.spikes.shape == (4, 3)
    grid = m.run(cur, stacked=False)
    assert grid.spikes.shape == (4, 2, 3)
    # stacked: the K currents of a step are the same as one current of their sum when nothing saturates
    assert torch.equal(stacked.spikes, m.run(cur.sum(1)).spikes)
    with pytest.raises(ValueError, match=r"stacked=True reads currents as \[T, K, \*neurons\] but its shape \(4, 2\)"):
        m.run(cur[:, :, 0], stacked=True)
    with pytest.raises(ValueError, match=r"expected \[T, \*neurons\]"):
        m.run(torch.tensor([1, 2, 3]))


def test_stacked_currents_saturate_one_at_a_time():
    m = StBif.unsigned(4, theta=10, current_width=8, v_width=8)
    stacked = m.run(torch.tensor([[[100], [100], [-128]]]), stacked=True)   # 5+100, ->127 (clamped), -128
    summed = m.run(torch.tensor([[72]]))                                      # 5 + 72 = 77, no saturation
    assert stacked.overflows == 1 and summed.overflows == 0
    assert stacked.state["v"].tolist() != summed.state["v"].tolist()


@pytest.mark.parametrize("cur, err, match", [
    (torch.zeros(3, 2), TypeError, r"integer currents, got dtype torch.float32; quantise first"),
    (np.zeros((3, 2)), TypeError, r"must hold integers, got a ndarray of dtype float64"),
    (torch.zeros(3, 2, dtype=torch.bool), TypeError, r"not booleans"),
    (np.zeros((3, 2), bool), TypeError, r"dtype bool"),
    ([[1, 2], [3]], TypeError, r"integer tensor or array"),
    (np.array([[2 ** 64 - 1]], np.uint64), ValueError, r"beyond int64"),
    (torch.tensor([[300]]), ValueError, r"input current out of range for current_width=8"),
])
def test_run_refuses_bad_currents(cur, err, match):
    with pytest.raises(err, match=match):
        StBif.signed(8, 4, current_width=8).run(cur)


def test_run_checks_steps():
    m = StBif.signed(8, 4)
    with pytest.raises(TypeError, match=r"steps must be an integer"):
        m.run(torch.zeros(2, 1, dtype=torch.long), steps=3.0)
    with pytest.raises(ValueError, match=r"steps=1 is shorter than the input \(2 steps\)"):
        m.run(torch.zeros(2, 1, dtype=torch.long), steps=1)


# == WOSS inhibition default ===================================================================================
def test_one_inhibition_default_everywhere():
    from spikeforge.sw import attention as att
    from spikeforge.sw.convert.spikedattention import SpikedAttentionOptions
    assert att.DEFAULT_INHIBITION == "window_max" and att.DEFAULT_INHIBITION in att.INHIBITIONS
    for fn in (att.woss_fire_steps, att.WossFormat, att.spiked_attention, att.spiked_attention_codes,
               att.SpikedHeadFormat):
        assert inspect.signature(fn).parameters["inhibition"].default == att.DEFAULT_INHIBITION, fn
    assert att.WossFormat(8, 1.4).inhibition == att.DEFAULT_INHIBITION
    assert att.woss_softmax_fixed(torch.zeros(2, 3), 8, 1.4).fmt.inhibition == att.DEFAULT_INHIBITION
    fmt = att.SpikedHeadFormat(8, 1.4, rows=2, keys=2, dim=2, dim_v=2, weights=[0.5, 0.5])
    assert fmt.inhibition == fmt.woss.inhibition == att.DEFAULT_INHIBITION
    assert SpikedAttentionOptions(1 / 16, (0, 16)).inhibition == att.DEFAULT_INHIBITION
    with pytest.raises(ValueError, match="not a WOSS inhibition rule"):
        att.SpikedHeadFormat(8, 1.4, rows=2, keys=2, dim=2, dim_v=2, weights=[0.5, 0.5], inhibition="max")


# == default frac_bits over a (T, B) grid ======================================================================
GRID_T = (2, 8, 16, 24, 40, 64)
GRID_B = (1.1, 1.15, 1.25, 1.4, 2.0, 4.0)


def _first_that_builds(make, candidates):
    for f in candidates:
        try:
            return f, make(f)
        except ValueError:
            continue
    return None, None


@pytest.mark.parametrize("T", GRID_T)
@pytest.mark.parametrize("B", GRID_B)
def test_phase_neuron_default_frac_bits_fits_whenever_some_does(T, B):
    target = max(0, math.ceil((T - 1) * math.log2(B) - math.log2(B - 1)) + 6)
    best, _ = _first_that_builds(lambda f: PhaseNeuron(T, B, frac_bits=f), range(56, -1, -1))
    if best is None:
        with pytest.raises(ValueError, match=rf"T={T}, B={B} .* any frac_bits.* 63 bits"):
            PhaseNeuron(T, B)
        return
    m = PhaseNeuron(T, B)
    assert m.frac_bits == min(best, target)      # the largest that fits, capped at the resolution target
    assert model_round_trip(m)


def model_round_trip(m) -> bool:
    from spikeforge.sw import model_from_dict
    return model_from_dict(m.to_dict()) == m


def test_previously_refused_phase_defaults_now_build():
    for T, B in ((24, 2.0), (40, 1.4), (40, 2.0)):
        m = PhaseNeuron(T, B)
        assert m.v_width + m.b_fx.bit_length() <= 63
        res = m.run(m.quantize_input(torch.tensor([[0.9, -0.5, 0.25]])), steps=m.period)
        assert int((res.spikes != 0).sum()) == 3                     # every value fires once


@pytest.mark.parametrize("T", GRID_T)
def test_attention_format_defaults_fit_whenever_some_frac_bits_does(T):
    from spikeforge.sw.attention import SpikedHeadFormat, TraceFormat, WossFormat
    for B in GRID_B:
        makers = {
            "WossFormat": (lambda f: WossFormat(T, B, frac_bits=f), r"over the 62 bits"),
            "TraceFormat": (lambda f: TraceFormat("phase", T=T, B=B, channels=3, weights=[0.01, 1.0, 50.0],
                                                  frac_bits=f), r"rounds to 0"),
            "SpikedHeadFormat": (lambda f: SpikedHeadFormat(T, B, rows=3, keys=3, dim=3, dim_v=3, weights=[0.25] * 3,
                                                            frac_bits=f), r"62"),
        }
        for name, (make, limit) in makers.items():
            try:
                make(None)
                continue
            except ValueError as e:
                err = str(e)
            best, _ = _first_that_builds(make, range(48, -1, -1))
            assert best is None, f"{name}(T={T}, B={B}) refuses its default frac_bits but frac_bits={best} works"
            assert f"T={T}" in err and f"B={B}" in err and re_search(limit, err), err


def re_search(pattern, text):
    import re
    return re.search(pattern, text) is not None
