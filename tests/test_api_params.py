"""FlatParams: one contiguous buffer per dtype with named, writable views."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import fastopt
from fastopt import FlatParams


def _arrays(dtype=np.float64):
    rng = np.random.default_rng(0)
    return {"layer1.W": rng.standard_normal((3, 4)).astype(dtype),
            "layer1.b": rng.standard_normal(4).astype(dtype),
            "layer2.W": rng.standard_normal((4, 1)).astype(dtype),
            "scale": np.full((), 2.5, dtype=dtype)}


# ---------------------------------------------------------------------------
# Layout.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layout_names_order_shapes_and_values(dtype):
    arrays = _arrays(dtype)
    params = FlatParams(arrays)
    assert params.names == list(arrays)
    assert list(params) == list(arrays)
    assert len(params) == 4
    assert params.size == 12 + 4 + 4 + 1
    data = params.data
    assert data.dtype == dtype and data.ndim == 1 and data.flags.c_contiguous and data.flags.writeable
    start = 0
    for name, a in arrays.items():
        slot = params.slots[name]
        assert slot.dtype == np.dtype(dtype)
        assert (slot.start, slot.stop, slot.shape) == (start, start + a.size, a.shape)
        assert params[name].shape == a.shape and params[name].dtype == dtype
        assert np.array_equal(params[name], a)
        np.testing.assert_array_equal(data[slot.start:slot.stop], a.ravel())
        start += a.size
    assert "layer1.W" in params and "nope" not in params


def test_order_follows_the_mapping_not_sorted_names():
    params = FlatParams(OrderedDict([("z", np.ones(2)), ("a", np.zeros(3)), ("m", np.full(1, 7.0))]))
    assert params.names == ["z", "a", "m"]
    np.testing.assert_array_equal(params.data, [1, 1, 0, 0, 0, 7])


def test_views_are_writable_and_write_into_the_buffer():
    params = FlatParams(_arrays())
    w = params["layer1.W"]
    assert w.flags.writeable
    assert np.shares_memory(w, params.data)
    w[0, 0] = 123.0
    assert params.data[0] == 123.0
    params["layer1.b"][:] = -1.0
    np.testing.assert_array_equal(params.data[12:16], -1.0)
    params["scale"][...] = 9.0
    assert params.data[-1] == 9.0
    params["layer2.W"] = np.arange(4.0).reshape(4, 1)  # __setitem__ writes through as well
    np.testing.assert_array_equal(params.data[16:20], [0, 1, 2, 3])


def test_buffer_writes_show_in_views():
    params = FlatParams(_arrays())
    params.data[:] = 0.5
    for name in params.names:
        assert np.all(params[name] == 0.5)


def test_buffer_is_stable_across_accesses():
    params = FlatParams(_arrays())
    assert params.data is params.data
    assert np.shares_memory(params["layer1.W"], params["layer1.W"])


def test_setitem_with_wrong_shape_raises_and_changes_nothing():
    params = FlatParams(_arrays())
    before = params.data.tobytes()
    with pytest.raises(ValueError):
        params["layer1.b"] = np.ones(5)
    assert params.data.tobytes() == before


def test_input_arrays_are_copied():
    arrays = _arrays()
    original = {k: v.copy() for k, v in arrays.items()}
    params = FlatParams(arrays)
    arrays["layer1.W"][:] = 0.0
    np.testing.assert_array_equal(params["layer1.W"], original["layer1.W"])
    params["layer1.b"][:] = 42.0
    np.testing.assert_array_equal(arrays["layer1.b"], original["layer1.b"])
    assert not any(np.shares_memory(params.data, a) for a in arrays.values())


def test_non_contiguous_inputs_are_packed():
    base = np.arange(24.0).reshape(4, 6)
    params = FlatParams({"t": base.T, "s": base[:, ::2]})
    np.testing.assert_array_equal(params["t"], base.T)
    np.testing.assert_array_equal(params["s"], base[:, ::2])
    assert params.data.flags.c_contiguous


def test_zero_size_array():
    params = FlatParams({"a": np.ones(2), "empty": np.zeros((0, 3)), "b": np.full(1, 3.0)})
    assert params["empty"].shape == (0, 3)
    np.testing.assert_array_equal(params.data, [1, 1, 3])
    assert params.slots["empty"].start == params.slots["empty"].stop == 2


# ---------------------------------------------------------------------------
# Copies.
# ---------------------------------------------------------------------------
def test_zeros_like_layout():
    params = FlatParams(_arrays(np.float32))
    grads = params.zeros_like()
    assert isinstance(grads, FlatParams)
    assert grads.slots == params.slots
    assert grads.names == params.names
    assert grads.data.dtype == np.float32 and np.all(grads.data == 0)
    assert not np.shares_memory(grads.data, params.data)
    grads["layer1.b"][:] = 1.0
    np.testing.assert_array_equal(params.data, FlatParams(_arrays(np.float32)).data)


def test_copy_is_independent():
    params = FlatParams(_arrays())
    clone = params.copy()
    assert clone.slots == params.slots
    np.testing.assert_array_equal(clone.data, params.data)
    assert not np.shares_memory(clone.data, params.data)
    clone["layer1.W"][:] = 0.0
    assert not np.all(params["layer1.W"] == 0.0)
    params["scale"][...] = -7.0
    assert clone["scale"] == 2.5


def test_copy_of_two_buffers_is_independent():
    params = FlatParams({"a": np.ones(2, np.float32), "b": np.ones(3)})
    clone = params.copy()
    for d in params.buffers:
        assert not np.shares_memory(clone.buffers[d], params.buffers[d])
    clone["a"][:] = 5
    clone["b"][:] = 6
    assert np.all(params["a"] == 1) and np.all(params["b"] == 1)


def test_to_dict_copies():
    arrays = _arrays()
    params = FlatParams(arrays)
    out = params.to_dict()
    assert list(out) == params.names
    for name, a in out.items():
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, arrays[name])
        assert a.shape == arrays[name].shape
        assert not np.shares_memory(a, params.data)
    out["layer1.W"][:] = 0.0
    np.testing.assert_array_equal(params["layer1.W"], arrays["layer1.W"])


def test_buffers_and_slots_are_copies_of_the_mappings():
    params = FlatParams(_arrays())
    params.buffers.clear()
    params.slots.clear()
    assert len(params.buffers) == 1 and len(params.slots) == 4


# ---------------------------------------------------------------------------
# Mixed dtypes and dtype=.
# ---------------------------------------------------------------------------
def test_mixed_dtypes_give_two_buffers():
    params = FlatParams({"a": np.ones((2, 2), np.float32), "b": np.arange(3.0), "c": np.full(2, 5, np.float32)})
    bufs = params.buffers
    assert sorted(np.dtype(d).name for d in bufs) == ["float32", "float64"]
    b32 = bufs[np.dtype(np.float32)]
    b64 = bufs[np.dtype(np.float64)]
    np.testing.assert_array_equal(b32, [1, 1, 1, 1, 5, 5])
    np.testing.assert_array_equal(b64, [0, 1, 2])
    assert params.slots["c"].start == 4 and params.slots["b"].start == 0
    assert params["a"].dtype == np.float32 and params["b"].dtype == np.float64
    assert np.shares_memory(params["c"], b32)
    assert params.size == 9
    z = params.zeros_like()
    assert sorted(np.dtype(d).name for d in z.buffers) == ["float32", "float64"]


def test_data_with_mixed_dtypes_says_why():
    params = FlatParams({"a": np.ones(2, np.float32), "b": np.ones(3)})
    with pytest.raises(ValueError, match=r"FlatParams.data: parameters span 2 dtypes \(float32, float64\); "
                                         r"use \.buffers"):
        params.data


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float32", "f8"])
def test_dtype_casts_everything_into_one_buffer(dtype):
    params = FlatParams({"a": np.array([1.1, 2.2]), "b": np.array([3.3], np.float32),
                         "i": np.array([1, 2, 3])}, dtype=dtype)
    target = np.dtype(dtype)
    assert list(params.buffers) == [target]
    assert params.data.dtype == target
    np.testing.assert_array_equal(params.data, np.array([1.1, 2.2], target).tolist()
                                  + np.array([3.3], np.float32).astype(target).tolist() + [1, 2, 3])


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex128, "bool"])
def test_dtype_must_be_float32_or_float64(dtype):
    with pytest.raises(TypeError, match=r"FlatParams: dtype must be float32 or float64"):
        FlatParams({"a": np.ones(2)}, dtype=dtype)


# ---------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [{}, OrderedDict()], ids=["empty dict", "empty OrderedDict"])
def test_empty_mapping(bad):
    with pytest.raises(ValueError, match=r"FlatParams: arrays must be a non-empty mapping name -> array"):
        FlatParams(bad)


@pytest.mark.parametrize("bad", [[], None, [("a", np.ones(2))]], ids=["empty list", "None", "list of pairs"])
def test_not_a_mapping(bad):
    with pytest.raises(TypeError, match=r"FlatParams: arrays must be a mapping name -> array, got "):
        FlatParams(bad)


@pytest.mark.parametrize("name", [0, ("a",), None, b"a"])
def test_names_must_be_str(name):
    with pytest.raises(TypeError, match=r"FlatParams: names must be str, got "):
        FlatParams({"ok": np.ones(1), name: np.ones(2)})


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_, np.float16, np.complex64])
def test_non_float_arrays_name_the_parameter(dtype):
    with pytest.raises(TypeError, match=r"FlatParams: layer2\.b must be float32 or float64 \(or pass dtype=\)"):
        FlatParams({"layer2.W": np.ones(2), "layer2.b": np.ones(2, dtype=dtype)})


def test_integer_arrays_are_fine_with_dtype():
    params = FlatParams({"n": np.arange(3)}, dtype=np.float64)
    np.testing.assert_array_equal(params.data, [0.0, 1.0, 2.0])


@pytest.mark.parametrize("bad", [[1.0, 2.0], 3.0, "abc", None], ids=["list", "float", "str", "None"])
def test_non_arrays_name_the_parameter(bad):
    with pytest.raises(TypeError, match=r"\bw must be a NumPy or CuPy array"):
        FlatParams({"w": bad})


def test_missing_name_lists_the_names():
    params = FlatParams({"a": np.ones(1), "b": np.ones(1)})
    with pytest.raises(KeyError, match=r"FlatParams has no parameter 'c'; it has \['a', 'b'\]"):
        params["c"]


def test_repr_lists_layout():
    params = FlatParams({"W": np.ones((2, 3), np.float32), "b": np.ones(3)})
    assert repr(params) == "FlatParams(W: (2, 3) float32, b: (3,) float64)"


def test_segments_runs_by_group():
    params = FlatParams({"a": np.ones(2), "b": np.ones(3), "c": np.ones(1), "d": np.ones(4)})
    bounds, groups = params.segments(np.float64, {"a": 0, "b": 1, "c": 1, "d": 0}.get)
    np.testing.assert_array_equal(bounds, [0, 2, 6, 10])
    assert groups == [0, 1, 0]
    assert bounds.dtype == np.int64


def test_flatparams_feeds_a_functional_step():
    params = FlatParams({"W": np.ones((2, 2)), "b": np.zeros(2)})
    grads = params.zeros_like()
    grads["W"][:] = 1.0
    fastopt.sgd_step(params.data, grads.data, lr=0.5)
    np.testing.assert_array_equal(params["W"], 0.5)
    np.testing.assert_array_equal(params["b"], 0.0)
