"""Tests for statemap/transform/_static_leaves.py: non-array leaves mapped with None reach the function unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm

T = sm.transform


def _body(x, name, fn, n, table):
    out = fn(x)
    for _ in range(n):  # a Python int: range() needs its value
        out = out + table["k"]
    return out if name == "plus" else -out


_AXES = (0, None, None, None, None)


@pytest.mark.parametrize(
    "statics",
    [
        ("plus", jnp.sin, 2, {"k": 1}),
        ("minus", jnp.cos, 1, {"k": 2}),
        ("plus", lambda v: v * 3, 0, {"k": 5}),
    ],
)
def test_static_leaves_match_jax_vmap(statics):
    x = jnp.arange(3.0)
    mapped = T.vmap2(_body, in_axes=_AXES)
    np.testing.assert_allclose(mapped(x, *statics), jax.vmap(_body, in_axes=_AXES)(x, *statics))


def test_changing_a_static_leaf_between_calls_changes_the_result():
    x = jnp.arange(3.0)
    mapped = T.vmap2(_body, in_axes=_AXES)
    results = [mapped(x, name, jnp.sin, n, {"k": 1}) for name, n in [("plus", 1), ("minus", 1), ("plus", 2)]]
    np.testing.assert_allclose(results[0], -results[1])
    np.testing.assert_allclose(results[2] - results[0], jnp.ones(3))
    assert mapped.cache_info["misses"] == 3
    mapped(x, "plus", jnp.sin, 1, {"k": 1})
    assert mapped.cache_info["misses"] == 3  # the same values hit their compiled program


def test_python_scalars_of_equal_value_but_different_type_are_different_keys():
    mapped = T.vmap2(lambda x, k: x * k if isinstance(k, int) else x + k, in_axes=(0, None))
    x = jnp.arange(2.0)
    np.testing.assert_allclose(mapped(x, 2), x * 2)
    np.testing.assert_allclose(mapped(x, 2.0), x + 2.0)


def test_unhashable_static_leaf_is_keyed_by_identity():
    class Table:  # unhashable on purpose
        __hash__ = None

        def __init__(self, k):
            self.k = k

    mapped = T.vmap2(lambda x, t: x + t.k, in_axes=(0, None))
    x = jnp.zeros(2)
    np.testing.assert_allclose(mapped(x, Table(1.0)), [1.0, 1.0])
    np.testing.assert_allclose(mapped(x, Table(2.0)), [2.0, 2.0])


def test_static_leaves_with_states_and_nested_in_axes():
    h = sm.ShortTermState(jnp.zeros(3), name="h")

    def f(args):
        h.value = h.value + args["x"] * args["scale"]
        return h.value if args["mode"] == "state" else args["x"]

    mapped = T.vmap2(f, in_axes=({"x": 0, "scale": None, "mode": None},), state_in_axes={0: h}, state_out_axes={0: h})
    x = jnp.arange(3.0)
    np.testing.assert_allclose(mapped({"x": x, "scale": 2, "mode": "state"}), 2 * x)
    np.testing.assert_allclose(mapped({"x": x, "scale": 1, "mode": "input"}), x)
    np.testing.assert_allclose(h.value, 3 * x)


def test_arrays_mapped_with_none_stay_dynamic():
    mapped = T.vmap2(lambda x, w: x * w, in_axes=(0, None))
    x = jnp.arange(3.0)
    mapped(x, jnp.asarray(2.0))
    mapped(x, jnp.asarray(3.0))
    assert mapped.cache_info["misses"] == 1


def test_mapped_non_array_leaf_still_raises_a_clear_error():
    with pytest.raises(sm.ArgumentError, match="str"):
        T.vmap2(lambda x, s: x, in_axes=(0, 0))(jnp.zeros(2), "text")


def test_explain_and_clear_cache_see_static_leaves():
    mapped = T.vmap2(_body, in_axes=_AXES)
    x = jnp.arange(3.0)
    mapped(x, "plus", jnp.sin, 1, {"k": 1})
    assert mapped.explain(x, "plus", jnp.sin, 1, {"k": 1}).cache == "hit"
    assert mapped.explain(x, "minus", jnp.sin, 1, {"k": 1}).cache == "miss"
    mapped.clear_cache()
    assert mapped.cache_info["size"] == 0


def test_negative_zero_and_nan_are_their_own_static_values():
    mapped = T.vmap2(lambda x, s: x * jnp.copysign(1.0, s), in_axes=(0, None))
    x = jnp.ones(2)
    np.testing.assert_allclose(mapped(x, 0.0), jax.vmap(lambda v: v * jnp.copysign(1.0, 0.0))(x))
    np.testing.assert_allclose(mapped(x, -0.0), jax.vmap(lambda v: v * jnp.copysign(1.0, -0.0))(x))
    for _ in range(3):
        mapped(x, float("nan"))
    assert mapped.cache_info["size"] == 3  # 0.0, -0.0 and one for NaN
