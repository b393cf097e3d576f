"""Tests of statemap.transform.eval_shape: parity with jax.eval_shape on the pure function; no state changes."""

import jax
import jax.numpy as jnp
import pytest

import statemap as sm
from statemap.transform import eval_shape


def same_structs(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        assert (x.shape, x.dtype, x.weak_type) == (y.shape, y.dtype, y.weak_type)


def test_matches_jax_eval_shape_and_changes_no_state():
    w = sm.ParamState(jnp.ones((3, 2)), name="w")
    n = sm.State(jnp.array(0), name="n")
    calls = []

    def f(x, scale=2.0):
        calls.append(1)
        n.value = n.value + 1
        return {"y": x @ w.value * scale, "n": n.value, "k": 1.0}

    def pure(w_, n_, x, scale=2.0):
        return {"y": x @ w_ * scale, "n": n_ + 1, "k": 1.0}

    x = jnp.ones((5, 3))
    got = eval_shape(f, x, scale=3.0)
    same_structs(got, jax.eval_shape(pure, w.value, n.value, x, scale=3.0))
    assert int(n.value) == 0 and len(calls) == 1
    assert not isinstance(w.value, jax.core.Tracer)


def test_shape_dtype_struct_arguments():
    s = sm.State(jnp.zeros(4, jnp.int32), name="s")

    def f(x):
        s.value = s.value + x.astype(jnp.int32)
        return s.value, x.sum()

    arg = jax.ShapeDtypeStruct((4,), jnp.float32)
    same_structs(
        eval_shape(f, arg), jax.eval_shape(lambda x: (jnp.zeros(4, jnp.int32) + x.astype(jnp.int32), x.sum()), arg)
    )
    assert s.value.tolist() == [0, 0, 0, 0]


def test_inside_jit_records_nothing_and_returns_static_shapes():
    s = sm.State(jnp.zeros(2), name="s")

    def g(x):
        s.value = s.value + x
        return jnp.concatenate([s.value, x])

    @sm.transform.jit
    def f(x):
        shape = eval_shape(g, x).shape  # static, although x is traced
        return jnp.zeros(shape) + x.sum()

    assert f(jnp.ones(2)).shape == (4,)
    assert s.value.tolist() == [0.0, 0.0]


def test_exception_keeps_states_and_states_created_inside_die():
    s = sm.State(jnp.zeros(2), name="s")
    made = []

    def f(x):
        s.value = s.value + 1
        made.append(sm.State(x * 2, name="inner"))
        return made[-1].value

    assert eval_shape(f, jnp.ones(3)).shape == (3,)
    with pytest.raises(sm.TraceContextError, match="inner"):
        _ = made[0].value  # it held a tracer of the abstract trace

    def boom(x):
        s.value = s.value + 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        eval_shape(boom, jnp.ones(2))
    assert s.value.tolist() == [0.0, 0.0]


def test_errors():
    s = sm.State(jnp.zeros(2), name="s")
    with pytest.raises(sm.StateArgumentError, match="state 's'"):
        eval_shape(lambda x: x, s)
    with pytest.raises(sm.ArgumentError, match="fun is not callable"):
        eval_shape(3, jnp.ones(2))
