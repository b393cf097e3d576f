"""Tests for statemap/transform/_arguments.py: argument numbers, ArgSpec and the once-per-call CallSignature."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import statemap as sm
from statemap.transform._arguments import ArgSpec, CallSignature, parse_argnums, resolve_argnums, shift_argnums


def test_parse_argnums_accepts_ints_and_sequences():
    assert parse_argnums(None) == ()
    assert parse_argnums(2) == (2,)
    assert parse_argnums([0, -1]) == (0, -1)


@pytest.mark.parametrize("bad", [True, (0, True), "0", 1.5, (0.0,)])
def test_parse_argnums_rejects_bools_and_non_ints(bad):
    with pytest.raises(sm.ArgumentError, match=r"(?s)not an int or a sequence of ints.*fix:"):
        parse_argnums(bad, "donate_argnums")


def test_resolve_and_shift_argnums():
    assert resolve_argnums((-1, 0, 0), 3, "jit") == (0, 2)
    with pytest.raises(sm.ArgumentError, match="static_argnums entry 5 is out of range"):
        resolve_argnums((5,), 2, "jit")
    assert shift_argnums((0, 1, 3, -1)) == (0, 2, -1)


def test_signature_without_statics_keys_on_structure_and_avals():
    spec = ArgSpec.create(lambda x, y: x, "jit")
    a = CallSignature.of(spec, (jnp.ones(2), jnp.zeros(())), {})
    b = CallSignature.of(spec, (jnp.zeros(2), jnp.ones(())), {})
    c = CallSignature.of(spec, (jnp.zeros(3), jnp.ones(())), {})
    assert a.key == b.key and a.key != c.key
    assert len(a.leaves) == 2 and a.static_pos == ()


def test_static_arguments_split_once_by_position_or_name():
    def f(x, n, *, mode="a"):
        return x

    spec = ArgSpec.create(f, "jit", static_argnums=1, static_argnames="mode")
    by_pos = CallSignature.of(spec, (jnp.ones(2), 3), {"mode": "b"})
    by_name = CallSignature.of(spec, (jnp.ones(2),), {"n": 3, "mode": "b"})
    assert by_pos.static_pos == (1,) and "mode" in by_pos.static_names
    assert "n" in by_name.static_names and by_name.static_pos == ()
    assert len(by_pos.leaves) == 1 and len(by_name.leaves) == 1
    args, kwargs = by_pos.rebuild([jnp.zeros(2)])
    assert args[1] == 3 and kwargs == {"mode": "b"} and float(args[0].sum()) == 0.0
    other = CallSignature.of(spec, (jnp.ones(2), 4), {"mode": "b"})
    assert other.key != by_pos.key


def test_unhashable_static_argument_is_named():
    spec = ArgSpec.create(lambda x, n: x, "jit", static_argnums=1)
    with pytest.raises(sm.ArgumentError, match=r"(?s)static argument is not hashable.*\[1, 2\]"):
        CallSignature.of(spec, (jnp.ones(2), [1, 2]), {})


def test_bad_leaf_is_named_with_its_path():
    spec = ArgSpec.create(lambda x: x, "vmap2")
    with pytest.raises(sm.ArgumentError, match=r"argument args\[0\]\['w'\] is not a valid JAX type"):
        CallSignature.of(spec, ({"w": "text"},), {})
    with pytest.raises(sm.StateArgumentError, match="argument kwargs\\['s'\\] is state 's'"):
        CallSignature.of(spec, (), {"s": sm.State(0.0, name="s")})


def test_leaf_names_follow_flattening_order():
    spec = ArgSpec.create(lambda *a, **k: a, "jit")
    sig = CallSignature.of(spec, ({"b": 1.0, "a": np.ones(2)}, [2.0]), {"k": 3.0})
    assert sig.leaf_names() == ["args[0]['a']", "args[0]['b']", "args[1][0]", "kwargs['k']"]


@given(st.lists(st.integers(-4, 4), max_size=4), st.integers(1, 4))
def test_resolve_argnums_property(nums, nargs):
    try:
        out = resolve_argnums(tuple(nums), nargs, "jit")
    except sm.ArgumentError as e:
        assert "out of range" in str(e)
        assert any(not -nargs <= i < nargs for i in nums)
    else:
        assert out == tuple(sorted({i % nargs for i in nums}))
        assert all(0 <= i < nargs for i in out)


def test_signature_is_what_jit_flattens_once(monkeypatch):
    calls = []
    real = jax.tree_util.tree_flatten

    def counting(tree, *a, **k):
        calls.append(1)
        return real(tree, *a, **k)

    spec = ArgSpec.create(lambda x: x, "jit")
    monkeypatch.setattr(jax.tree_util, "tree_flatten", counting)
    CallSignature.of(spec, (jnp.ones(2),), {})
    assert len(calls) == 1
