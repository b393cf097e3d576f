"""Tests for statemap/transform/_dependence.py: the equation walk agrees with tracing under `jax.vmap`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.extend import core as jex_core

from statemap import _compat
from statemap.transform._dependence import batched_outputs


def _traced(closed, batched, axis_env=None):
    """The reference: batch dims of the outputs when the jaxpr runs under `jax.vmap` (None = unbatched)."""
    found = []
    fn = jex_core.jaxpr_as_fun(closed)

    def probe(*flat):
        trace = _compat.current_trace()
        found.extend(_compat.batch_dim_in(o, trace) is not None for o in fn(*flat))
        return ()

    avals = closed.in_avals
    pairs = zip(avals, batched, strict=True)
    sds = [jax.ShapeDtypeStruct(((3,) if b else ()) + tuple(a.shape), a.dtype) for a, b in pairs]
    in_axes = tuple(0 if b else None for b in batched)
    jax.make_jaxpr(jax.vmap(probe, in_axes=in_axes, axis_size=3, axis_name="lanes"), axis_env=axis_env)(*sds)
    return found


def _jaxpr(f, *args, axis_env=None):
    return jax.make_jaxpr(f, axis_env=axis_env)(*args)


_WALKED = {
    "elementwise": (lambda x, y: (jnp.sin(x) * y, x + 1.0, y * 2.0), (jnp.ones(4), jnp.ones(4))),
    "reduction_and_dot": (lambda x, w: (x @ w, jnp.sum(w, axis=0), jnp.max(x)), (jnp.ones(4), jnp.ones((4, 2)))),
    "nn_functions": (lambda x, y: (jax.nn.relu(x), jax.nn.softplus(y), jax.nn.logsumexp(x)), (jnp.ones(4), 1.0)),
    "inner_jit": (lambda x, y: jax.jit(lambda a, b: (a * 2, b + 1))(x, y), (jnp.ones(2), jnp.ones(2))),
    "constants": (lambda x, y: (jnp.zeros_like(x), jnp.arange(3.0) + y, jnp.full((2,), 3.0)), (jnp.ones(2), 1.0)),
    "where_and_index": (lambda x, y: (jnp.where(x > 0, x, y), x[1], y.reshape(2, 1)), (jnp.ones(2), jnp.ones(2))),
    "random": (
        lambda k, x: (jax.random.normal(k, (2,)) + x, jax.random.split(k)[0]),
        (jax.random.key(0), jnp.ones(2)),
    ),
}


@pytest.mark.parametrize("name", sorted(_WALKED))
@pytest.mark.parametrize("pattern", [(True, False), (False, True), (True, True), (False, False)])
def test_walk_matches_vmap_on_common_jaxprs(name, pattern):
    f, args = _WALKED[name]
    closed = _jaxpr(f, *args)
    walked = batched_outputs(closed, list(pattern))
    assert walked is not None, "the walk must answer common jaxprs (did a JAX primitive change its name?)"
    assert walked == _traced(closed, list(pattern))


_FALLBACK = {
    "cond": (lambda p, x: jax.lax.cond(p, lambda v: v * 2, lambda v: v, x), (True, jnp.ones(2)), None),
    "while": (lambda n, x: jax.lax.fori_loop(0, n, lambda i, v: v + i, x), (3, jnp.ones(2)), None),
    "psum": (lambda x, y: jax.lax.psum(x, "lanes") + y, (jnp.ones(2), jnp.ones(2)), [("lanes", 3)]),
    "axis_index": (lambda x, y: jax.lax.axis_index("lanes") + x + y, (1, 1), [("lanes", 3)]),
    "custom_vjp": (lambda x, y: jax.checkpoint(jnp.sin)(x) + y, (jnp.ones(2), 1.0), None),
}


@pytest.mark.parametrize("name", sorted(_FALLBACK))
def test_walk_declines_what_it_cannot_tell(name):
    f, args, env = _FALLBACK[name]
    closed = _jaxpr(f, *args, axis_env=env)
    assert batched_outputs(closed, [True, False]) is None
    assert batched_outputs(closed, [False, True]) is None


def test_wrong_number_of_inputs_declines():
    closed = _jaxpr(lambda x: x * 2, 1.0)
    assert batched_outputs(closed, [True, True]) is None


_UNARY = [jnp.sin, jnp.exp, jnp.tanh, lambda v: v * 2.0, lambda v: jnp.sum(v) * jnp.ones(3), jnp.zeros_like]
_BINARY = [jnp.add, jnp.multiply, jnp.maximum, lambda a, b: jnp.where(a > b, a, b), lambda a, b: a @ b * jnp.ones(3)]


@st.composite
def _programs(draw):
    n_in = draw(st.integers(1, 3))
    steps = draw(
        st.lists(
            st.tuples(st.booleans(), st.integers(0, 10), st.integers(0, 10), st.integers(0, 10)), min_size=1, max_size=8
        )
    )
    batched = draw(st.lists(st.booleans(), min_size=n_in, max_size=n_in))
    return n_in, steps, batched


@settings(max_examples=60, deadline=None)
@given(_programs())
def test_walk_matches_vmap_on_generated_programs(program):
    n_in, steps, batched = program

    def f(*xs):
        vals = list(xs)
        for unary, op, a, b in steps:
            if unary:
                vals.append(_UNARY[op % len(_UNARY)](vals[a % len(vals)]))
            else:
                vals.append(_BINARY[op % len(_BINARY)](vals[a % len(vals)], vals[b % len(vals)]))
        return tuple(vals[n_in:])

    closed = _jaxpr(f, *[jnp.ones(3)] * n_in)
    walked = batched_outputs(closed, batched)
    assert walked is not None
    np.testing.assert_array_equal(walked, _traced(closed, batched))


@pytest.mark.parametrize(
    "f",
    [
        lambda x, y: jax.lax.optimization_barrier((x + 1.0, y * 2.0)),
        lambda x, y: jax.device_put((x + 1.0, y)),
    ],
)
def test_pass_through_primitives_keep_each_output_to_its_input(f):
    closed = _jaxpr(f, jnp.ones(2), jnp.ones(2))
    for pattern in ([True, False], [False, True]):
        walked = batched_outputs(closed, pattern)
        assert walked is None or walked == _traced(closed, pattern)
