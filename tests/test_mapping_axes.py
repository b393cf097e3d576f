"""Tests for statemap/transform/_mapping_axes.py: state axis specs, selectors and `in_axes` handling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import statemap as sm
from statemap.transform._mapping_axes import (
    POLICIES,
    StateIs,
    arg_leaf_axes,
    check_in_axes_type,
    coerce_selector,
    describe_arg,
    drop_axis,
    is_unmatched,
    leaf_size,
    match_axis,
    normalize_state_axes,
    prefix_leaf_axes,
)
from statemap.util.filter import Everything, OfType, PathContains, WithTag


def _norm(spec):
    return normalize_state_axes(spec, "vmap2", "state_in_axes")


# -- normalize_state_axes: every selector form ---------------------------------------------------------------


def test_none_is_empty():
    assert _norm(None) == {}


def test_empty_dict_is_empty():
    # An empty spec declares nothing. The legacy `vmap` builds `state_in_axes={}` whenever `in_states` is not
    # given, so this must not be read as a (bad) selector.
    assert _norm({}) == {}


def test_bare_selectors_mean_axis_0():
    assert _norm(sm.ParamState) == {0: OfType(sm.ParamState)}
    assert _norm("fast") == {0: WithTag("fast")}
    assert _norm(OfType(sm.HiddenState)) == {0: OfType(sm.HiddenState)}
    (pred,) = _norm(...).values()
    assert pred((), sm.State(0.0)) and pred(("a",), sm.ParamState(0.0))


def test_dict_of_axes_keeps_order_and_none():
    spec = _norm({1: "a", None: sm.ParamState, 0: ...})
    assert list(spec) == [1, None, 0]
    assert spec[1] == WithTag("a")
    assert spec[None] == OfType(sm.ParamState)


def test_state_selectors_match_by_identity():
    a, b, c = sm.State(0.0, name="a"), sm.State(0.0, name="b"), sm.State(0.0, name="c")
    assert _norm(a) == {0: StateIs(a)}
    for group in ([a, b], (a, b), {a, b}, frozenset([a, b])):
        (pred,) = _norm(group).values()
        assert pred((), a) and pred((), b) and not pred((), c)
    twin = sm.State(0.0, name="a")  # same name and value: still another state
    assert not StateIs(a)((), twin)


def test_legacy_name_to_state_dict_is_a_selector():
    a, b = sm.State(0.0, name="a"), sm.State(0.0, name="b")
    assert _norm({"a": a, "b": b}) == {0: StateIs(a, b)}


@pytest.mark.parametrize("axis", [0, 1, -1, None])
def test_axis_to_single_state_keeps_the_axis(axis):
    # `{1: h}` maps h on axis 1 (as `{1: [h]}` does); it must not be read as a legacy {name: State} dict.
    h = sm.State(jnp.zeros((2, 3)), name="h")
    assert _norm({axis: h}) == {axis: StateIs(h)}
    assert _norm({axis: [h]}) == {axis: StateIs(h)}


def test_axis_to_several_single_states():
    w, h = sm.State(jnp.zeros(3), name="w"), sm.State(jnp.zeros((2, 3)), name="h")
    assert _norm({0: w, 1: h}) == {0: StateIs(w), 1: StateIs(h)}


def test_mixed_list_of_state_and_filter():
    a = sm.State(0.0, name="a")
    p = sm.ParamState(0.0, name="p")
    other = sm.State(0.0, name="other")
    (pred,) = _norm([a, sm.ParamState]).values()
    assert pred((), a) and pred((), p) and not pred((), other)


@pytest.mark.parametrize("key", ["x", 1.0, True, OfType(sm.State)])
def test_non_axis_key_is_a_type_error(key):
    with pytest.raises(TypeError, match=r"vmap2: state_in_axes has the key .*which is not an axis(?s:.*)fix:"):
        _norm({key: sm.State(0.0, name="s"), 0: "tag"})


def test_unusable_selector_is_a_type_error():
    with pytest.raises(TypeError, match="filter"):
        _norm({0: 3.5})


def test_normalised_on_the_public_object():
    m = sm.transform.StatefulMapping(lambda x: x, state_in_axes="fast", state_out_axes={1: sm.ParamState, None: ...})
    assert m.state_in_axes == {0: WithTag("fast")}
    assert list(m.state_out_axes) == [1, None]
    assert m.state_out_axes[1] == OfType(sm.ParamState)
    assert sm.transform.vmap2(lambda x: x).state_in_axes == {}


# -- StateIs, coerce_selector, match_axis --------------------------------------------------------------------


def test_state_is_eq_hash_repr():
    a, b = sm.State(0.0, name="a"), sm.State(0.0, name="b")
    assert StateIs(a, b) == StateIs(b, a)
    assert hash(StateIs(a, b)) == hash(StateIs(b, a))
    assert StateIs(a) != StateIs(b)
    assert repr(StateIs(a, b)) == "StateIs('a', 'b')"


def test_coerce_selector_passes_filters_through():
    assert coerce_selector(sm.ParamState) == OfType(sm.ParamState)
    assert coerce_selector("t") == WithTag("t")
    assert isinstance(coerce_selector(...), Everything)


def test_match_axis_first_match_wins_and_sees_module_paths():
    class Inner(sm.nn.Module):
        def __init__(self):
            self.w = sm.ParamState(jnp.zeros(2))
            self.h = sm.ShortTermState(jnp.zeros(2))

    class Outer(sm.nn.Module):
        def __init__(self):
            self.layer = Inner()

    m = Outer()
    axes = _norm({1: PathContains("w"), None: sm.ParamState, 0: ...})
    assert m.layer.w.path == ("layer", "w")
    assert match_axis(axes, m.layer.w) == 1
    assert match_axis(axes, m.layer.h) == 0
    assert match_axis(_norm({None: ..., 1: PathContains("w")}), m.layer.w) is None
    assert is_unmatched(match_axis(_norm({0: "nope"}), m.layer.h))
    assert not is_unmatched(None) and not is_unmatched(0)


def test_policies():
    assert POLICIES == ("raise", "warn", "ignore", "auto")


# -- in_axes -------------------------------------------------------------------------------------------------


def test_arg_leaf_axes_forms():
    x, y = jnp.ones((2, 3)), {"a": jnp.ones(3), "b": [jnp.ones(1), jnp.ones(2)]}
    assert arg_leaf_axes(0, (x, y), {}, "vmap2") == [0, 0, 0, 0]
    assert arg_leaf_axes(None, (x, y), {}, "vmap2") == [None] * 4
    assert arg_leaf_axes((1, None), (x, y), {}, "vmap2") == [1, None, None, None]
    assert arg_leaf_axes([1, -1], (x, y), {}, "vmap2") == [1, -1, -1, -1]
    assert arg_leaf_axes((0, {"a": 0, "b": None}), (x, y), {}, "vmap2") == [0, 0, None, None]
    assert arg_leaf_axes((0, {"a": 0, "b": [None, 0]}), (x, y), {}, "vmap2") == [0, 0, None, 0]
    # keyword arguments are mapped on axis 0, whatever in_axes says
    assert arg_leaf_axes(None, (x,), {"k": jnp.ones(2), "j": (jnp.ones(2),)}, "vmap2") == [None, 0, 0]


def test_arg_leaf_axes_length_mismatch_names_the_counts():
    with pytest.raises(
        sm.BatchAxisError,
        match=r"vmap2: in_axes has 1 entries but the call has 2 .*(?s:.*)expected:(?s:.*)fix:",
    ):
        arg_leaf_axes((0,), (jnp.ones(2), jnp.ones(2)), {}, "vmap2")


def test_arg_leaf_axes_not_a_prefix_names_the_argument():
    with pytest.raises(sm.BatchAxisError, match=r"pmap2: in_axes entry for argument 1 is not a pytree prefix"):
        arg_leaf_axes((0, {"zz": 0}), (jnp.ones(2), {"a": jnp.ones(2)}), {}, "pmap2")


def test_prefix_leaf_axes():
    tree = {"a": jnp.ones(2), "b": (jnp.ones(2), jnp.ones(2))}
    assert prefix_leaf_axes({"a": 0, "b": None}, tree) == [0, None, None]
    assert prefix_leaf_axes(1, tree) == [1, 1, 1]
    assert prefix_leaf_axes({"a": 0, "b": (1, None)}, tree) == [0, 1, None]
    with pytest.raises(ValueError):
        prefix_leaf_axes({"a": 0}, tree)


@pytest.mark.parametrize("good", [0, -1, None, (0, None), [1, 0], ({"a": 0, "b": None}, 0), ((0, (None, 1)),)])
def test_check_in_axes_type_accepts(good):
    check_in_axes_type(good, "vmap2")


@pytest.mark.parametrize("bad", ["x", 1.5, True, (0, 1.5), (0, "a"), ({"a": False},), [0, [None, 2.0]]])
def test_check_in_axes_type_rejects(bad):
    with pytest.raises(TypeError, match=r"vmap2: in_axes has an unsupported entry(?s:.*)found:.*in_axes="):
        check_in_axes_type(bad, "vmap2")


def test_unsupported_in_axes_rejected_at_construction():
    with pytest.raises(TypeError, match="in_axes has an unsupported entry"):
        sm.transform.vmap2(lambda x: x, in_axes="0")
    with pytest.raises(TypeError, match="in_axes has an unsupported entry"):
        sm.transform.StatefulMapping(lambda x: x, in_axes=(0, 1.0))


# -- leaf_size and drop_axis ---------------------------------------------------------------------------------


def test_leaf_size():
    x = jnp.ones((2, 3, 4))
    assert [leaf_size(x, a, "vmap2", "argument 0") for a in (0, 1, 2, -1, -3)] == [2, 3, 4, 4, 2]
    assert leaf_size(np.ones((5,)), 0, "vmap2", "argument 0") == 5


@pytest.mark.parametrize("axis", [3, -4, 10])
def test_leaf_size_out_of_range_names_where(axis):
    with pytest.raises(sm.BatchAxisError, match=rf"vmap2: argument 1\['a'\] is mapped on axis {axis} but has only 3"):
        leaf_size(jnp.ones((2, 3, 4)), axis, "vmap2", "argument 1['a']")


@pytest.mark.parametrize("leaf", [1.0, 3, None, "s"])
def test_leaf_size_non_array_names_where(leaf):
    with pytest.raises(sm.BatchAxisError, match=r"vmap2: keyword argument\['k'\] is mapped on axis 0 but is not an"):
        leaf_size(leaf, 0, "vmap2", "keyword argument['k']")


def test_drop_axis():
    x = jnp.ones((2, 3, 4), jnp.int32)
    assert drop_axis(x, 0) == jax.ShapeDtypeStruct((3, 4), jnp.int32)
    assert drop_axis(x, 1).shape == (2, 4)
    assert drop_axis(x, -1).shape == (2, 3)
    weak = jnp.asarray([1.0, 2.0, 3.0], dtype=float)  # a weakly typed array keeps its weak type per lane
    assert drop_axis(jnp.ones(3), 0).weak_type is False
    assert drop_axis(weak, 0).weak_type == jax.typeof(weak).weak_type


def test_describe_arg():
    assert describe_arg(()) == "args"
    path = jax.tree_util.tree_flatten_with_path([{"a": 1}])[0][0][0]
    assert describe_arg(path) == "args[0]['a']"


# -- hypothesis: never an internal error ---------------------------------------------------------------------


@given(
    shape=st.lists(st.integers(0, 4), max_size=3),
    axis=st.integers(-5, 5),
)
def test_leaf_size_property(shape, axis):
    x = np.zeros(shape, np.float32)
    nd = len(shape)
    if -nd <= axis < nd:
        assert leaf_size(x, axis, "vmap2", "argument 0") == shape[axis]
        k = axis % nd
        assert drop_axis(jnp.asarray(x), axis).shape == tuple(shape[:k] + shape[k + 1 :])
    else:
        with pytest.raises(sm.BatchAxisError, match=r"argument 0 is mapped on axis"):
            leaf_size(x, axis, "vmap2", "argument 0")


_AXIS = st.one_of(st.none(), st.integers(-3, 3))
_BAD = st.sampled_from([1.5, "a", True, b"x"])


@given(
    spec=st.recursive(
        st.one_of(_AXIS, _BAD),
        lambda inner: st.one_of(st.lists(inner, max_size=3).map(tuple), st.dictionaries(st.sampled_from("ab"), inner)),
        max_leaves=4,
    )
)
def test_check_in_axes_type_property(spec):
    leaves = jax.tree_util.tree_leaves(spec, is_leaf=lambda x: x is None)
    bad = isinstance(spec, (str, float, bytes)) or any(
        x is not None and (isinstance(x, bool) or not isinstance(x, int)) for x in leaves
    )
    if bad:
        with pytest.raises(TypeError, match="in_axes has an unsupported entry"):
            check_in_axes_type(spec, "vmap2")
    else:
        check_in_axes_type(spec, "vmap2")


@pytest.mark.parametrize("key", [1.0, True, np.float32(0.0)])
def test_float_and_bool_axis_keys_are_errors_even_with_state_values(key):
    h = sm.ShortTermState(jnp.zeros((3, 3)), name="h")
    with pytest.raises(TypeError, match="not an axis"):
        sm.transform.vmap2(lambda x: x, state_in_axes={key: h})


def test_out_axes_must_be_ints_or_none():
    with pytest.raises(TypeError, match="out_axes has an unsupported entry"):
        sm.transform.vmap2(lambda x: x, out_axes="a")
