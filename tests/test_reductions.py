"""Tests for statemap/transform/_reductions.py: `state_reduce` against a plain loop over the lanes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm

T = sm.transform
X = jnp.arange(8.0).reshape(4, 2)
OLD = jnp.array([10.0, -3.0])


def _plain(reduction):
    """The reduction computed by hand: every lane starts from OLD and writes OLD * 0.5 + x."""
    new = jnp.stack([OLD * 0.5 + x for x in X])
    return {
        "mean": new.mean(0),
        "sum": new.sum(0),
        "max": new.max(0),
        "min": new.min(0),
        "first": new[0],
        "last": new[-1],
        "add": OLD + (new - OLD[None]).sum(0),
    }[reduction]


def _step(s):
    def f(x):
        s.value = s.value * 0.5 + x
        return x.sum()

    return f


@pytest.mark.parametrize("reduction", ["mean", "sum", "max", "min", "first", "last", "add"])
@pytest.mark.parametrize("tier", ["compiled", "python"])
def test_each_reduction_matches_a_plain_loop(reduction, tier):
    s = sm.ShortTermState(OLD, name="s")
    flag = sm.State(True, name="flag")
    step = _step(s)
    f = step if tier == "compiled" else (lambda x: step(x) if flag.value else 0.0)
    mapped = T.vmap2(f, state_reduce={reduction: s})
    np.testing.assert_allclose(mapped(X), X.sum(1))
    np.testing.assert_allclose(s.value, _plain(reduction), rtol=1e-6)
    plan = mapped.explain(X)
    assert plan.cache == "python" if tier == "python" else plan.rows[0]["how"] == f"reduce:{reduction}"


def test_callable_reduction_gets_the_stack_and_the_old_value():
    s = sm.ShortTermState(OLD, name="s")
    seen = {}

    def median(stacked, old):
        seen["shape"] = stacked.shape
        return jnp.median(stacked, axis=0) + 0 * old

    T.vmap2(_step(s), state_reduce={median: s})(X)
    assert seen["shape"] == (4, 2)
    np.testing.assert_allclose(s.value, jnp.median(jnp.stack([OLD * 0.5 + x for x in X]), axis=0))


def test_running_mean_in_a_batchnorm_like_layer_under_jit_and_grad():
    class Norm(sm.nn.Module):
        def __init__(self):
            self.w = sm.ParamState(jnp.ones(2))
            self.running = sm.ShortTermState(jnp.zeros(2), name="running")

        def __call__(self, x):
            self.running.value = 0.9 * self.running.value + 0.1 * x
            return (x * self.w.value).sum()

    norm = Norm()
    mapped = T.vmap2(norm.__call__, state_reduce={"mean": norm.running})
    loss = T.jit(lambda x: mapped(x).sum())
    loss(X)
    np.testing.assert_allclose(norm.running.value, 0.1 * X.mean(0), rtol=1e-6)
    grads = T.grad(lambda x: mapped(x).sum(), grad_states=[norm.w])(X)
    np.testing.assert_allclose(grads[0], X.sum(0))


def test_nested_maps_reduce_over_their_own_axis_only():
    count = sm.ShortTermState(jnp.zeros(()), name="count")

    def inner(x):
        count.value = count.value + 1.0
        return x

    inner_map = T.vmap2(inner, state_reduce={"add": count})
    outer = T.vmap2(lambda row: inner_map(row), state_out_axes={0: count}, unexpected_out_state_mapping="ignore")
    outer(jnp.ones((3, 5)))
    np.testing.assert_allclose(count.value, jnp.full((3,), 5.0))  # each outer lane counted its 5 inner lanes


def test_pmap2_reduces_with_a_collective():
    total = sm.ShortTermState(jnp.zeros(()), name="total")
    n = jax.local_device_count()

    def f(x):
        total.value = total.value + x
        return x

    T.pmap2(f, state_reduce={"add": total})(jnp.arange(float(n)))
    assert float(total.value) == float(sum(range(n)))


def test_unknown_reduction_is_rejected_at_construction():
    s = sm.ShortTermState(OLD, name="s")
    with pytest.raises(ValueError, match="'median'"):
        T.vmap2(_step(s), state_reduce={"median": s})
    with pytest.raises(TypeError, match=r"state_reduce is not a \{reduction: selector\} dict"):
        T.vmap2(_step(s), state_reduce=[s])
    with pytest.raises(TypeError, match=r"state_reduce has the key 3, which is not a reduction"):
        T.vmap2(_step(s), state_reduce={3: s})


def test_a_state_both_reduced_and_in_state_out_axes_is_an_error():
    s = sm.ShortTermState(OLD, name="s")
    with pytest.raises(sm.BatchAxisError, match=r"'s'.*both by state_reduce and by state_out_axes"):
        T.vmap2(_step(s), state_reduce={"mean": s}, state_out_axes={0: s})(X)
    np.testing.assert_array_equal(s.value, OLD)
    h = sm.ShortTermState(jnp.zeros((4, 2)), name="h")
    with pytest.raises(sm.BatchAxisError, match="mapped on input axis 0"):
        T.vmap2(_step(h), state_in_axes={0: h}, state_reduce={"mean": h})(X)
