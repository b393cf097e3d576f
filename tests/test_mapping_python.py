"""Tests for statemap/transform/_mapping_python.py: Python control flow on concrete state values, as jax.vmap does.

Each case is checked against `jax.vmap` of the same function written over a closed-over concrete value.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm

T = sm.transform


@pytest.mark.parametrize("flag_value", [True, jnp.asarray(True), False, jnp.asarray(False)])
def test_if_on_a_broadcast_state_matches_jax_vmap(flag_value):
    flag = sm.State(flag_value, name="flag")

    def f(x):
        return x * 2 if flag.value else x - 1

    def ref(x):
        return x * 2 if flag_value else x - 1

    x = jnp.arange(3.0)
    np.testing.assert_allclose(T.vmap2(f)(x), jax.vmap(ref)(x))


def test_range_and_indexing_with_concrete_states():
    n = sm.State(3, name="n")
    which = sm.State(jnp.asarray(1), name="which")
    table = [jnp.sin, jnp.cos, jnp.tanh]

    def f(x):
        for _ in range(n.value):
            x = x + 1
        return table[which.value](x)

    x = jnp.arange(4.0)
    np.testing.assert_allclose(T.vmap2(f)(x), jax.vmap(lambda v: jnp.cos(v + 3))(x), rtol=1e-6)
    n.value, which.value = 1, jnp.asarray(2)
    np.testing.assert_allclose(T.vmap2(f)(x), jax.vmap(lambda v: jnp.tanh(v + 1))(x), rtol=1e-6)


def test_flipping_a_flag_switches_the_branch_and_the_written_states():
    flag = sm.State(True, name="flag")
    h = sm.ShortTermState(jnp.zeros(3), name="h")
    count = sm.ShortTermState(jnp.zeros(()), name="count")

    def f(x):
        if flag.value:
            h.value = h.value + x
        else:
            count.value = count.value + 1.0
        return x

    mapped = T.vmap2(f, state_in_axes={0: h}, state_out_axes={0: h})
    x = jnp.arange(3.0)
    mapped(x)
    np.testing.assert_allclose(h.value, x)
    assert float(count.value) == 0.0
    flag.value = False
    mapped(x)
    np.testing.assert_allclose(h.value, x)  # not written this time
    assert float(count.value) == 1.0  # written once, unbatched: as a closure write under eager jax.vmap
    flag.value = True
    mapped(x)
    np.testing.assert_allclose(h.value, 2 * x)
    assert mapped.explain(x).cache == "python"


def test_random_draws_are_the_same_in_both_tiers():
    flag = sm.State(True, name="flag")
    rng = sm.random.RandomState(0)
    python_tier = T.vmap2(lambda x: x + rng.normal() if flag.value else x)
    compiled = T.vmap2(lambda x: x + rng.normal())
    x = jnp.zeros(4)
    rng.seed(7)
    a, key_a = python_tier(x), rng.value
    rng.seed(7)
    b, key_b = compiled(x), rng.value
    np.testing.assert_allclose(a, b)
    np.testing.assert_array_equal(jax.random.key_data(key_a), jax.random.key_data(key_b))
    assert len(set(np.asarray(a).tolist())) == 4  # one draw per lane


def test_undeclared_per_lane_write_follows_the_policy():
    flag = sm.State(True, name="flag")
    s = sm.ShortTermState(jnp.zeros(()), name="s")

    def f(x):
        if flag.value:
            s.value = s.value + x
        return x

    with pytest.raises(sm.BatchAxisError, match="'s'"):
        T.vmap2(f)(jnp.arange(3.0))
    assert float(s.value) == 0.0
    T.vmap2(f, unexpected_out_state_mapping="ignore")(jnp.arange(3.0))
    np.testing.assert_allclose(s.value, [0.0, 1.0, 2.0])


def test_auto_policy_promotes_in_the_python_tier():
    flag = sm.State(True, name="flag")
    s = sm.ShortTermState(jnp.zeros(3), name="s")

    def f(x):
        if flag.value:
            s.value = s.value + x
        return x

    T.vmap2(f, unexpected_out_state_mapping="auto")(jnp.arange(3.0))
    np.testing.assert_allclose(s.value, [0.0, 1.0, 2.0])  # per lane: each lane added its own x to its own row


def test_an_exception_in_the_body_leaves_every_state_unchanged():
    flag = sm.State(True, name="flag")
    h = sm.ShortTermState(jnp.zeros(3), name="h")
    rng = sm.random.RandomState(0)
    key = jax.random.key_data(rng.value)

    def f(x):
        if flag.value:
            h.value = h.value + x + rng.normal()
            raise RuntimeError("boom")
        return x

    with pytest.raises(RuntimeError, match="boom"):
        T.vmap2(f, state_in_axes={0: h}, state_out_axes={0: h})(jnp.arange(3.0))
    np.testing.assert_allclose(h.value, jnp.zeros(3))
    np.testing.assert_array_equal(jax.random.key_data(rng.value), key)
    assert not isinstance(h.value, jax.core.Tracer)


def test_under_jit_the_error_names_the_state():
    flag = sm.State(True, name="the_flag")
    mapped = T.vmap2(lambda x: x * 2 if flag.value else x)
    with pytest.raises(sm.ConcreteValueError, match=r"'the_flag' \(State, created at test_mapping_python\.py:\d+\)"):
        T.jit(mapped)(jnp.ones(2))
    with pytest.raises(sm.ConcreteValueError, match="jax.lax.cond"):
        T.jit(lambda x: mapped(x))(jnp.ones(2))
    np.testing.assert_allclose(mapped(jnp.ones(2)), [2.0, 2.0])  # still fine eagerly


def test_a_per_lane_state_used_in_python_control_flow_fails_as_in_jax_vmap():
    h = sm.ShortTermState(jnp.ones(3), name="h")
    flag = sm.State(True, name="flag")

    def f(x):
        if flag.value and h.value > 0:  # h is per lane: a batched tracer, as in jax.vmap
            return x
        return -x

    with pytest.raises(jax.errors.TracerBoolConversionError):
        T.vmap2(f, state_in_axes={0: h})(jnp.ones(3))
    with pytest.raises(jax.errors.TracerBoolConversionError):
        jax.vmap(lambda x, hv: x if hv > 0 else -x)(jnp.ones(3), jnp.ones(3))


def test_mapped_state_slices_and_out_axes_match_the_compiled_tier():
    flag = sm.State(True, name="flag")

    def build(use_flag):
        h = sm.ShortTermState(jnp.arange(6.0).reshape(2, 3), name="h")  # mapped on axis 1

        def f(x):
            if not use_flag or flag.value:
                h.value = h.value * 2 + x
            return h.value.sum()

        return h, T.vmap2(f, state_in_axes={1: h}, state_out_axes={1: h})

    h1, python_tier = build(True)
    h2, compiled = build(False)
    x = jnp.arange(3.0)
    np.testing.assert_allclose(python_tier(x), compiled(x))
    np.testing.assert_allclose(h1.value, h2.value)
    assert python_tier.explain(x).cache == "python"
    assert compiled.explain(x).cache == "hit"


def test_nested_mapping_in_the_python_tier():
    flag = sm.State(True, name="flag")
    inner = T.vmap2(lambda v: v * 2 if flag.value else v)
    outer = T.vmap2(lambda row: inner(row) + 1 if flag.value else row)
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(outer(x), x * 2 + 1)


def test_nested_python_tiers_judge_writes_by_their_own_axis():
    s = sm.State(jnp.zeros(()), name="s")
    flag = sm.State(True, name="flag")

    def inner(x, y):
        if not flag.value:
            return x
        s.value = y * 1.0  # varies with the outer map only
        return x + y

    inner_map = T.vmap2(inner, in_axes=(0, None))
    outer = T.vmap2(lambda y: inner_map(jnp.arange(3.0), y) if flag.value else y, state_out_axes={0: s})
    out = outer(jnp.array([10.0, 20.0]))
    np.testing.assert_allclose(out, jnp.array([[10.0, 11.0, 12.0], [20.0, 21.0, 22.0]]))
    np.testing.assert_allclose(s.value, [10.0, 20.0])
