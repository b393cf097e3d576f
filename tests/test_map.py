"""Tests of statemap.transform.map: sequential and chunked mapping with states."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import statemap as sm


def _no_tracers(*states):
    for s in states:
        for leaf in jax.tree_util.tree_leaves(s._value):
            assert not isinstance(leaf, jax.core.Tracer), s


def test_sequential_map_accumulates_like_scan():
    counter = sm.ShortTermState(jnp.array(0.0), name="counter")

    def accumulate(x):
        counter.value = counter.value + x
        return counter.value

    xs = jnp.array([1.0, 2.0, 3.0])
    out = sm.transform.map(accumulate, xs)
    ref_final, ref_out = jax.lax.scan(lambda c, x: (c + x, c + x), 0.0, xs)
    np.testing.assert_allclose(out, ref_out)
    np.testing.assert_allclose(counter.value, ref_final)


def test_seed_example_sequential_gives_documented_result():
    # The reference page's numbers ([1, 2, 3] and 3.0) are a sequential map's.
    counter = sm.ShortTermState(jnp.array(0.0))
    out = sm.transform.map(lambda x: (counter.__setattr__("value", counter.value + x), counter.value)[1], jnp.ones(3))
    np.testing.assert_allclose(out, [1.0, 2.0, 3.0])
    assert float(counter.value) == 3.0


@pytest.mark.parametrize("n,batch_size", [(5, 2), (6, 3), (4, 8), (7, 1)])
def test_batched_map_matches_loop_oracle(n, batch_size):
    w = sm.ParamState(jnp.arange(3.0), name="w")
    xs = jnp.arange(n * 3, dtype=jnp.float32).reshape(n, 3)
    ys = {"a": jnp.arange(n, dtype=jnp.float32)}
    f = lambda x, y: jnp.dot(w.value, x) + y["a"]  # noqa: E731
    out = sm.transform.map(f, xs, ys, batch_size=batch_size)
    oracle = jnp.stack([jnp.dot(jnp.arange(3.0), xs[i]) + ys["a"][i] for i in range(n)])
    np.testing.assert_allclose(out, oracle)
    np.testing.assert_allclose(w.value, jnp.arange(3.0))


def test_batched_map_draws_distinct_random_numbers_and_is_reproducible():
    sm.random.seed(3)
    a = sm.transform.map(lambda x: x + sm.random.normal(), jnp.zeros(5), batch_size=2)
    assert len(set(np.asarray(a).tolist())) == 5
    sm.random.seed(3)
    b = sm.transform.map(lambda x: x + sm.random.normal(), jnp.zeros(5), batch_size=2)
    np.testing.assert_array_equal(a, b)
    _no_tracers(sm.random.DEFAULT)


def test_batched_map_rejects_accumulating_writes_and_restores_state():
    counter = sm.ShortTermState(jnp.array(0.0), name="acc_counter")

    def accumulate(x):
        counter.value = counter.value + x
        return counter.value

    with pytest.raises(sm.BatchAxisError, match="acc_counter") as info:
        sm.transform.map(accumulate, jnp.ones(5), batch_size=2)
    assert any("batch_size=None" in n for n in info.value.__notes__)
    assert float(counter.value) == 0.0
    _no_tracers(counter, sm.random.DEFAULT)


def test_map_inside_jit_traces_once():
    calls = []
    # Strongly typed initial value: a weak-typed one (jnp.array(0.0)) becomes strong after the first write,
    # which is a new signature and rightly retraces once.
    total = sm.ShortTermState(jnp.zeros((), jnp.float32))

    def body(x):
        calls.append(1)
        total.value = total.value + x
        return total.value * 2

    run = sm.transform.jit(lambda xs: sm.transform.map(body, xs))
    np.testing.assert_allclose(run(jnp.ones(3)), [2.0, 4.0, 6.0])
    np.testing.assert_allclose(run(jnp.ones(3)), [8.0, 10.0, 12.0])
    assert len(calls) == 1
    assert float(total.value) == 6.0


@pytest.mark.parametrize(
    "xs, match",
    [
        ((), "no arrays"),
        ((jnp.array(1.0),), "no leading axis"),
        ((jnp.ones(3), jnp.ones(4)), "different leading sizes"),
    ],
)
def test_bad_xs_give_batch_axis_errors(xs, match):
    with pytest.raises(sm.BatchAxisError, match=match):
        sm.transform.map(lambda *a: 0.0, *xs)


@given(st.one_of(st.integers(max_value=0), st.floats(allow_nan=False), st.text(max_size=2), st.booleans()))
def test_bad_batch_size_is_a_value_error(batch_size):
    s = sm.ShortTermState(jnp.array(1.0))
    with pytest.raises((ValueError, TypeError), match="batch_size"):
        sm.transform.map(lambda x: x + s.value, jnp.ones(3), batch_size=batch_size)
    assert float(s.value) == 1.0


@pytest.mark.parametrize("batch_size", [None, 2])
def test_map_with_python_control_flow_on_a_state_runs_like_the_eager_loop(batch_size):
    flag = sm.State(True, name="flag")
    total = sm.ShortTermState(jnp.zeros(()), name="total")

    def f(x):
        if flag.value:
            return x * 2
        return x

    xs = jnp.arange(5.0)
    np.testing.assert_allclose(sm.transform.map(f, xs, batch_size=batch_size), xs * 2)
    flag.value = False
    np.testing.assert_allclose(sm.transform.map(f, xs, batch_size=batch_size), xs)

    def g(x):
        if flag.value:
            total.value = total.value + x
        return x

    flag.value = True
    if batch_size is None:  # sequential: the writes accumulate, as in a Python loop
        sm.transform.map(g, xs)
        assert float(total.value) == 10.0


def test_map_python_tier_is_atomic():
    flag = sm.State(True, name="flag")
    total = sm.ShortTermState(jnp.zeros(()), name="total")

    def g(x):
        if flag.value:
            total.value = total.value + x
        if float(x) == 3.0:
            raise RuntimeError("element 3")
        return x

    with pytest.raises(RuntimeError, match="element 3"):
        sm.transform.map(g, jnp.arange(5.0))
    assert float(total.value) == 0.0
