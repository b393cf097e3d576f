"""Tests of statemap.transform.checkpoint / remat: parity with jax.checkpoint, states, trace counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm

T = sm.transform


def assert_clean(*states):
    for s in (*states, sm.random.DEFAULT):
        assert not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(s.value))


def test_checkpoint_matches_jax_checkpoint_values_grads_and_states():
    w = sm.ParamState(jnp.array([0.5, -2.0]), name="w")
    calls = sm.State(jnp.array(0), name="calls")

    @T.checkpoint
    def layer(x):
        calls.value = calls.value + 1
        return jnp.sin(x * w.value)

    def loss(x):
        return layer(layer(x)).sum()

    pure_layer = jax.checkpoint(lambda w, x: jnp.sin(x * w))

    def pure_loss(w, x):
        return pure_layer(w, pure_layer(w, x)).sum()

    x = jnp.array([0.3, 0.7])
    np.testing.assert_allclose(loss(x), pure_loss(w.value, x), rtol=1e-6)
    assert int(calls.value) == 2
    g = T.jit(T.grad(loss, grad_states=w))(x)
    np.testing.assert_allclose(g, jax.grad(pure_loss)(w.value, x), rtol=1e-6)
    assert int(calls.value) == 4
    assert_clean(w, calls)


def test_remat_is_checkpoint_and_recomputes_under_grad():
    assert T.remat is T.checkpoint
    w = sm.ParamState(jnp.ones(3), name="w")
    f = T.remat(lambda x: jnp.sin(jnp.sin(x * w.value)).sum(), policy=jax.checkpoint_policies.nothing_saveable)
    jaxpr, _ = T.make_jaxpr(T.grad(f, grad_states=w))(jnp.ones(3))
    assert "checkpoint" in str(jaxpr) or "remat" in str(jaxpr)


def test_checkpoint_traces_once_per_signature_and_static_argnums():
    calls = []
    s = sm.State(jnp.zeros(()), name="s")

    @T.checkpoint(static_argnums=1)
    def f(x, n):
        calls.append(n)
        s.value = s.value + x.sum() * n
        return x * n

    f(jnp.ones(2), 2)
    f(jnp.ones(2), 2)
    T.jit(lambda x: f(x, 2))(jnp.ones(2))
    assert calls == [2]
    f(jnp.ones(2), 3)
    assert calls == [2, 3] and float(s.value) == 18.0


def test_exception_in_checkpointed_function_restores_states():
    s = sm.State(jnp.ones(2), name="s")
    default_key = np.asarray(jax.random.key_data(sm.random.DEFAULT.value))

    @T.checkpoint
    def f(x):
        s.value = s.value + x
        sm.random.split_key()
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        f(jnp.ones(2))
    np.testing.assert_array_equal(s.value, jnp.ones(2))
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(sm.random.DEFAULT.value)), default_key)
    assert_clean(s)


def test_checkpoint_inside_scan():
    acc = sm.State(jnp.zeros(()), name="acc")

    @T.checkpoint
    def step(c, x):
        acc.value = acc.value + x
        return c * 2, acc.value

    c, ys = T.scan(step, 1.0, jnp.arange(4.0))
    np.testing.assert_allclose(ys, [0.0, 1.0, 3.0, 6.0])
    assert float(c) == 16.0 and float(acc.value) == 6.0


def test_checkpoint_on_a_method():
    class Layer(sm.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = sm.ParamState(jnp.array(2.0), name="w")
            self.n = sm.State(jnp.array(0), name="n")

        @T.checkpoint
        def __call__(self, x):
            self.n.value = self.n.value + 1
            return jnp.sin(self.w.value * x)

    layer = Layer()
    g = T.grad(lambda x: layer(x), grad_states=layer.w)(0.5)
    np.testing.assert_allclose(g, 0.5 * np.cos(1.0), rtol=1e-6)
    assert int(layer.n.value) == 1
