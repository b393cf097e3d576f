"""Shared helpers for the mapping tests (tests/test_mapping*.py, test_vmap.py, test_new_states.py)."""

import jax
import jax.numpy as jnp
import numpy as np

import statemap as sm


def is_key(x):
    return jnp.issubdtype(jnp.result_type(x), jax.dtypes.prng_key)


def plain(x):
    """A NumPy copy of an array leaf (key data for typed keys)."""
    return np.asarray(jax.random.key_data(x)) if is_key(x) else np.asarray(x)


def snapshot(states):
    """The current values of `states` (and of sm.random.DEFAULT), as NumPy copies, for `assert_clean`."""
    return [jax.tree_util.tree_map(plain, s._value) for s in [*states, sm.random.DEFAULT]]


def assert_no_tracer(states):
    for s in [*states, sm.random.DEFAULT]:
        for leaf in jax.tree_util.tree_leaves(s._value):
            assert not isinstance(leaf, jax.core.Tracer), f"{s!r} holds a tracer"


def assert_clean(states, snap):
    """Every state (and sm.random.DEFAULT) holds exactly its snapshotted value, and no tracer."""
    assert_no_tracer(states)
    for s, ref in zip([*states, sm.random.DEFAULT], snap, strict=True):
        got = jax.tree_util.tree_map(plain, s._value)
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(ref), s
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref), strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype, (s, a.shape, b.shape)
            np.testing.assert_array_equal(a, b, err_msg=repr(s))


def assert_tree_close(got, want, rtol=1e-6, atol=1e-6):
    """Same structure, shapes and (close) values."""
    g_leaves, g_tree = jax.tree_util.tree_flatten(got)
    w_leaves, w_tree = jax.tree_util.tree_flatten(want)
    assert g_tree == w_tree, (g_tree, w_tree)
    for a, b in zip(g_leaves, w_leaves, strict=True):
        assert np.shape(a) == np.shape(b), (np.shape(a), np.shape(b))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def jax_notes(exc):
    """Notes JAX's traceback filtering attached to `exc` (noise on a statemap error)."""
    return [n for n in getattr(exc, "__notes__", []) if "JAX has removed its internal frames" in n]
