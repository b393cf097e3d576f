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
        ((jnp.ones(3), jnp.ones(4)), "disagree on the size of the mapped axis"),
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


# -- map as lanes (issue: declared reductions and a chunked map with state semantics) ---------------------------
@given(n=st.integers(1, 9), batch=st.integers(1, 10), draw=st.booleans())
def test_results_and_states_do_not_depend_on_batch_size(n, batch, draw):
    rng = sm.random.RandomState(3)
    rows = sm.ShortTermState(jnp.zeros((n, 2)), name="rows")
    total = sm.ShortTermState(jnp.zeros(()), name="total")

    def f(x):
        noise = rng.normal(size=(2,)) if draw else jnp.zeros(2)
        rows.value = rows.value + x + noise
        total.value = total.value + x
        return rows.value.sum()

    outcomes = []
    for b in (None, batch):
        rng.seed(5)
        rows.value, total.value = jnp.zeros((n, 2)), jnp.zeros(())
        out = sm.transform.map(
            f, jnp.arange(float(n)), batch_size=b, state_in_axes={0: rows}, state_out_axes={0: rows},
            state_reduce={"add": total},
        )  # fmt: skip
        outcomes.append((out, rows.value, total.value, jax.random.key_data(rng.value)))
    for a, b in zip(*outcomes, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(outcomes[0][2], n * (n - 1) / 2)  # the total of a sequential loop


@pytest.mark.parametrize("reduction", ["mean", "sum", "max", "min", "first", "last", "add"])
@pytest.mark.parametrize("batch_size", [None, 2, 3])
def test_map_reductions_match_a_plain_loop(reduction, batch_size):
    s = sm.ShortTermState(jnp.array([1.0, -2.0]), name="s")
    old = s.value
    xs = jnp.arange(10.0).reshape(5, 2)

    def f(x):
        s.value = s.value * 0.5 + x
        return x

    sm.transform.map(f, xs, batch_size=batch_size, state_reduce={reduction: s})
    new = jnp.stack([old * 0.5 + x for x in xs])
    expected = {
        "mean": new.mean(0), "sum": new.sum(0), "max": new.max(0), "min": new.min(0), "first": new[0],
        "last": new[-1], "add": old + (new - old[None]).sum(0),
    }[reduction]  # fmt: skip
    np.testing.assert_allclose(s.value, expected, rtol=1e-6)


def test_a_sequential_map_carries_shared_writes_and_a_chunked_one_asks_for_a_reduction():
    total = sm.ShortTermState(jnp.zeros(()), name="total")

    def f(x):
        total.value = total.value + x
        return total.value

    np.testing.assert_allclose(sm.transform.map(f, jnp.arange(4.0)), [0.0, 1.0, 3.0, 6.0])
    with pytest.raises(sm.BatchAxisError, match="'total'") as e:
        sm.transform.map(f, jnp.arange(4.0), batch_size=2)
    assert "state_reduce" in "".join(getattr(e.value, "__notes__", []))
    assert float(total.value) == 6.0


def test_map_is_one_program_so_a_failure_writes_nothing():
    total = sm.ShortTermState(jnp.zeros(()), name="total")
    key_before = jax.random.key_data(sm.random.DEFAULT.value)

    def check(x):
        if float(x) == 4.0:
            raise RuntimeError("element 4 failed")

    def f(x):
        total.value = total.value + x + sm.random.normal()
        jax.debug.callback(check, x)
        return x

    with pytest.raises(Exception, match="element 4 failed"):
        jax.block_until_ready(sm.transform.map(f, jnp.arange(5.0), batch_size=2, state_reduce={"add": total}))
    assert float(total.value) == 0.0
    np.testing.assert_array_equal(jax.random.key_data(sm.random.DEFAULT.value), key_before)


def test_map_under_jit_and_grad():
    w = sm.ParamState(jnp.array(2.0), name="w")
    rows = sm.ShortTermState(jnp.zeros(4), name="rows")

    def f(x):
        rows.value = rows.value + w.value * x
        return w.value * x

    def loss(xs):
        return sm.transform.map(f, xs, batch_size=3, state_in_axes={0: rows}, state_out_axes={0: rows}).sum()

    xs = jnp.arange(4.0)
    np.testing.assert_allclose(sm.transform.jit(loss)(xs), 2 * xs.sum())
    np.testing.assert_allclose(rows.value, 2 * xs)
    grads = sm.transform.grad(loss, grad_states=[w])(xs)
    np.testing.assert_allclose(grads[0], xs.sum())


def test_map_reuses_its_compiled_program_for_the_same_function():
    calls = []

    def f(x):
        calls.append(1)
        return x * 2

    for _ in range(3):
        sm.transform.map(f, jnp.arange(3.0), batch_size=2)
    assert len(calls) == 1


def test_a_sequential_map_carries_a_state_declared_unbatched():
    s = sm.ShortTermState(jnp.zeros(()), name="s")

    def f(x):
        s.value = s.value + 1.0
        return x

    sm.transform.map(f, jnp.arange(4.0), state_out_axes={None: s})
    assert float(s.value) == 4.0  # as a plain loop
