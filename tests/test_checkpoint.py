"""Tests for statemap/checkpoint.py: state dicts, save and restore."""

import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm
from statemap.util.filter import OfType


class Model(sm.nn.Module):
    def __init__(self, n=3):
        self.layers = [sm.ParamState(jnp.ones((n, 2))), sm.ParamState(jnp.zeros(2, jnp.bfloat16))]
        self.opt = sm.LongTermState({"mu": jnp.zeros(n), "count": jnp.array(0, jnp.int32)})
        self.rng = sm.random.RandomState(7)
        self.h = sm.HiddenState(jnp.zeros(n))

    def __call__(self, x):
        return x @ self.layers[0].value


def _randomise(m):
    m.layers[0].value = jnp.arange(6.0).reshape(3, 2)
    m.layers[1].value = jnp.array([1.5, -2.0], jnp.bfloat16)
    m.opt.value = {"mu": jnp.array([1.0, 2.0, 3.0]), "count": jnp.array(4, jnp.int32)}
    m.rng.seed(123)
    m.h.value = jnp.full(3, 9.0)


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a.state_dict()), jax.tree.leaves(b.state_dict()), strict=True):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


def test_round_trip_restores_values_in_place_with_dtypes_and_keys(tmp_path):
    src, dst = Model(), Model()
    _randomise(src)
    path = tmp_path / "ckpt.npz"
    sm.checkpoint.save(path, src)
    states = dst.states()
    f = sm.transform.jit(dst.__call__)
    f(jnp.ones((1, 3)))
    sm.checkpoint.restore(path, dst)
    assert all(s is states[p] for p, s in dst.states().items())  # the same State objects
    _assert_same(src, dst)
    assert dst.layers[1].value.dtype == jnp.bfloat16 and dst.rng.value.dtype == src.rng.value.dtype
    np.testing.assert_array_equal(f(jnp.ones((1, 3))), jnp.ones((1, 3)) @ src.layers[0].value)
    assert float(dst.rng.uniform()) == float(src.rng.uniform())  # the generator continues identically


def test_file_is_a_plain_npz_with_path_keys_and_no_temporary_left(tmp_path):
    m = Model()
    sm.checkpoint.save(tmp_path / "c.npz", m)
    assert os.listdir(tmp_path) == ["c.npz"]
    with np.load(tmp_path / "c.npz", allow_pickle=False) as data:
        assert {"layers.0", "layers.1", "opt['mu']", "opt['count']", "rng", "h", "__statemap__"} == set(data.files)
        np.testing.assert_array_equal(data["layers.0"], np.ones((3, 2)))


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    m = Model()
    path = tmp_path / "c.npz"
    sm.checkpoint.save(path, m)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(OSError, match="disk full"):
        sm.checkpoint.save(path, m)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["c.npz"]


def test_restore_checks_keys_and_names_the_states(tmp_path):
    path = tmp_path / "c.npz"
    sm.checkpoint.save(path, Model(), OfType(sm.ParamState))
    with pytest.raises(sm.CheckpointError, match=r"(?s)missing entries for 'opt' \(state 'opt' \(LongTermState"):
        sm.checkpoint.restore(path, Model())
    m = Model()
    sm.checkpoint.restore(path, m, strict=False)  # loads only the parameters
    sm.checkpoint.restore(path, m, OfType(sm.ParamState))  # or select them
    sm.checkpoint.save(path, Model())
    with pytest.raises(sm.CheckpointError, match=r"unexpected entries 'opt', 'rng', 'h' \(no state has these keys\)"):
        sm.checkpoint.restore(path, Model(), OfType(sm.ParamState))


def test_restore_refuses_other_shapes_dtypes_and_structures_and_writes_nothing(tmp_path):
    path = tmp_path / "c.npz"
    sm.checkpoint.save(path, Model(n=4))
    m = Model()
    before = m.layers[1].value
    with pytest.raises(
        sm.CheckpointError,
        match=r"(?s)entry 'layers.0' has another shape or dtype than state .*ParamState.*f32\[3,2\].*f32\[4,2\]",
    ):
        sm.checkpoint.restore(path, m)
    assert m.layers[1].value is before  # checked before writing anything
    w = sm.ParamState(jnp.ones(2, jnp.int32), name="w")
    sm.checkpoint.save(path, {"w": sm.ParamState(jnp.ones(2))})
    with pytest.raises(sm.CheckpointError, match=r"(?s)state 'w'.*i32\[2\].*f32\[2\]"):
        sm.checkpoint.restore(path, {"w": w})
    sm.checkpoint.save(path, {"w": sm.State({"a": jnp.ones(2)})})
    with pytest.raises(
        sm.CheckpointError, match=r"(?s)entry 'w' has another pytree structure.*\['w'\].*\[\"w\['a'\]\"\]"
    ):
        sm.checkpoint.restore(path, {"w": w})


def test_restore_refuses_a_file_not_written_by_save(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, w=np.ones(2))
    with pytest.raises(sm.CheckpointError, match="is not a statemap checkpoint"):
        sm.checkpoint.restore(path, {"w": sm.State(jnp.ones(2))})


def test_lists_dicts_scalars_and_uninitialised_states(tmp_path):
    a, b, lazy = sm.State(2.0), sm.State(jnp.arange(3)), sm.State(None)
    sm.checkpoint.save(tmp_path / "l.npz", [a, b, lazy])
    a2, b2, lazy2 = sm.State(0.0), sm.State(jnp.zeros(3, jnp.int32)), sm.State(None)
    sm.checkpoint.restore(tmp_path / "l.npz", [a2, b2, lazy2])
    assert float(a2.value) == 2.0 and b2.value.tolist() == [0, 1, 2] and lazy2.value is None
    later = sm.ParamState(None)
    sm.checkpoint.save(tmp_path / "d.npz", {"p": sm.ParamState(jnp.ones(2))})
    sm.checkpoint.restore(tmp_path / "d.npz", {"p": later})
    assert later.value.shape == (2,)


def test_bad_targets_and_duplicate_keys():
    with pytest.raises(sm.CheckpointError, match="cannot take the states of a int"):
        sm.checkpoint.state_dict(3)
    with pytest.raises(sm.CheckpointError, match="entry 'x' is not a State"):
        sm.checkpoint.state_dict({"x": jnp.ones(2)})

    class Dotted(sm.nn.Module):
        def __init__(self):
            self.a = {"b": {"c": sm.State(1.0)}, "b.c": sm.State(2.0)}

    with pytest.raises(sm.CheckpointError, match="two states have the key 'a.b.c'"):
        Dotted().state_dict()


def test_save_inside_a_transform_is_refused(tmp_path):
    w = sm.State(jnp.ones(2), name="w")

    @sm.transform.jit
    def f():
        w.value = w.value * 2
        sm.checkpoint.save(tmp_path / "x.npz", {"w": w})

    with pytest.raises(sm.CheckpointError, match=r"(?s)state 'w'.*holds a JAX tracer"):
        f()
    assert not os.path.exists(tmp_path / "x.npz")


def test_state_dict_with_filters_on_a_dict_target_and_load_state_dict():
    w, h = sm.ParamState(jnp.ones(2)), sm.HiddenState(jnp.zeros(2))
    assert list(sm.checkpoint.state_dict({"w": w, "h": h}, sm.ParamState)) == ["w"]
    sm.checkpoint.load_state_dict([w, h], {"0": np.zeros(2, np.float32), "1": np.ones(2, np.float32)})
    assert isinstance(h.value, jax.Array) and h.value.tolist() == [1.0, 1.0]


def test_npz_is_a_zip_of_npy(tmp_path):
    sm.checkpoint.save(tmp_path / "c.npz", {"w": sm.State(jnp.ones(2))})
    assert zipfile.ZipFile(tmp_path / "c.npz").namelist() == ["w.npy", "__statemap__.npy"]
