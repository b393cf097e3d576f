"""Tests of grad / vector_grad with debug_nan=True (statemap/transform/_nan_check.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm
from statemap import NaNError
from statemap.transform import grad, vector_grad


def no_tracers(*states):
    return not any(isinstance(leaf, jax.core.Tracer) for s in states for leaf in jax.tree_util.tree_leaves(s._value))


def make():
    w = sm.ParamState(jnp.array([1.0, 4.0]), name="w")
    n = sm.ShortTermState(jnp.array(0), name="n")
    return w, n


def test_clean_call_matches_jax_grad_and_writes():
    w, n = make()

    def f(x):
        n.value = n.value + 1
        return jnp.sum(jnp.sqrt(w.value * x))

    g = grad(f, grad_states=w, argnums=0, debug_nan=True, return_value=True)(jnp.array([2.0, 3.0]))
    ref = jax.value_and_grad(lambda w_, x: jnp.sum(jnp.sqrt(w_ * x)), argnums=(0, 1))(w.value, jnp.array([2.0, 3.0]))
    (gw, gx), value = g
    np.testing.assert_allclose(value, ref[0])
    np.testing.assert_allclose(gw, ref[1][0])
    np.testing.assert_allclose(gx, ref[1][1])
    assert int(n.value) == 1


def test_nan_in_the_value_names_it_and_the_operation_and_keeps_states():
    w, n = make()

    def f(x):
        n.value = n.value + 1
        return jnp.sum(jnp.log(w.value - x))

    with pytest.raises(NaNError, match=r"(?s)grad: NaN in the value of the function.*encountered in log"):
        grad(f, grad_states=w, debug_nan=True)(jnp.array([2.0, 0.0]))
    assert int(n.value) == 0
    assert no_tracers(w, n)


def test_nan_only_in_the_gradient_names_the_state():
    w, n = make()
    w.value = jnp.array([0.0, 4.0])

    def f():
        n.value = n.value + 1
        return jnp.sum(jnp.sqrt(w.value) * 0.0)  # value 0, gradient 0 * inf = NaN

    with pytest.raises(NaNError, match=r"(?s)NaN in the gradient with respect to state 'w' \(ParamState"):
        grad(f, grad_states=w, debug_nan=True)()
    assert int(n.value) == 0
    # without debug_nan, JAX gives the NaN gradient
    assert bool(jnp.isnan(grad(f, grad_states=w)()[0]))


def test_nan_in_an_input_names_the_argument():
    with pytest.raises(NaNError, match=r"(?s)NaN in the input argument args\[1\].*fix:      compute that input"):
        grad(lambda a, b: a * b, argnums=(0, 1), debug_nan=True)(1.0, jnp.nan)
    with pytest.raises(FloatingPointError):  # also what jax.debug_nans raises
        vector_grad(lambda x: jnp.log(x), debug_nan=True)(jnp.array([1.0, -1.0]))


def test_under_jit_the_error_comes_through_the_runtime_error():
    w, n = make()

    def f(x):
        n.value = n.value + 1
        return jnp.sum(jnp.sqrt(w.value - x))

    run = sm.transform.jit(grad(f, grad_states=w, debug_nan=True))
    np.testing.assert_allclose(run(jnp.zeros(2)), 0.5 / jnp.sqrt(w.value))
    assert int(n.value) == 1
    with pytest.raises(Exception, match="grad: NaN in the value of the function") as info:
        jax.block_until_ready(run(jnp.array([0.0, 5.0])))
    assert isinstance(info.value, jax.errors.JaxRuntimeError)
    assert int(n.value) == 1
    assert no_tracers(w, n)


def test_method_and_exception_in_the_function():
    class Model(sm.nn.Module):
        def __init__(self):
            self.w = sm.ParamState(jnp.array([1.0, -1.0]))
            self.n = sm.ShortTermState(jnp.array(0))

        @grad(argnums=0, debug_nan=True)
        def loss(self, x):
            self.n.value = self.n.value + 1
            return jnp.sum(jnp.sqrt(self.w.value * x))

    m = Model()
    with pytest.raises(NaNError, match=r"value of the function.*\n.*\n.*sqrt"):
        m.loss(jnp.ones(2))
    assert int(m.n.value) == 0
    np.testing.assert_allclose(
        m.loss(jnp.array([1.0, -1.0])), jax.grad(lambda x: jnp.sum(jnp.sqrt(m.w.value * x)))(jnp.array([1.0, -1.0]))
    )

    def boom(x):
        m.n.value = m.n.value + 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        grad(boom, debug_nan=True)(1.0)
    assert int(m.n.value) == 1
