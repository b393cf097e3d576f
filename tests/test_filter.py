"""Tests for statemap/util/filter.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm
from statemap.util import filter as F
from statemap.util.filter import (
    All,
    Any,
    Everything,
    Not,
    Nothing,
    OfType,
    PathContains,
    WithTag,
    to_predicate,
)

P = sm.ParamState(0.0, tag="fast")
S = sm.ShortTermState(0.0, tag={"slow", "x"})
PLAIN = sm.State(0.0)


def test_of_type():
    assert OfType(sm.ParamState)((), P)
    assert OfType(sm.LongTermState)((), P)
    assert not OfType(sm.ParamState)((), S)
    with pytest.raises(TypeError, match="OfType expects a type, got str"):
        OfType("ParamState")


def test_with_tag():
    assert WithTag("fast")((), P)
    assert WithTag("x")((), S)
    assert not WithTag("fast")((), S)
    assert not WithTag("fast")((), PLAIN)
    assert not WithTag("fast")((), object())

    class Tagged:
        tag = "fast"

    assert WithTag("fast")((), Tagged())
    with pytest.raises(TypeError, match="WithTag expects a str tag, got int"):
        WithTag(3)


def test_path_contains():
    assert PathContains("w")(("layers", 0, "w"), None)
    assert PathContains(0)(("layers", 0, "w"), None)
    assert not PathContains("b")(("layers", 0, "w"), None)
    assert not PathContains("w")((), None)


def test_path_contains_jax_key_entries():
    tree = {"layers": [{"w": 1}]}
    (path, _), *_ = jax.tree_util.tree_flatten_with_path(tree)[0]
    assert PathContains("w")(path, None)
    assert PathContains(0)(path, None)
    assert PathContains("layers")(path, None)


def test_any_all_not():
    assert Any(sm.ParamState, "slow")((), S)
    assert not Any()((), P)
    assert All(sm.ParamState, "fast")((), P)
    assert not All(sm.ParamState, "slow")((), P)
    assert All()((), P)
    assert Not(sm.ParamState)((), S)
    assert not Not("fast")((), P)


def test_everything_nothing():
    assert Everything()((), object()) and Everything()(("a",), None)
    assert not Nothing()((), P)


@pytest.mark.parametrize(
    "flt, expected",
    [
        ("fast", WithTag("fast")),
        (sm.ParamState, OfType(sm.ParamState)),
        (True, Everything()),
        (..., Everything()),
        (False, Nothing()),
        (None, Nothing()),
        ([sm.ParamState, "fast"], Any(OfType(sm.ParamState), WithTag("fast"))),
        ((sm.ParamState,), Any(OfType(sm.ParamState))),
        ([], Any()),
        (Not(sm.ParamState), Not(sm.ParamState)),
    ],
)
def test_to_predicate(flt, expected):
    assert to_predicate(flt) == expected


def test_to_predicate_keeps_callables():
    def pred(path, x):
        return path == ("a",)

    assert to_predicate(pred) is pred
    assert Any(pred)(("a",), None) and not Any(pred)(("b",), None)


@pytest.mark.parametrize("bad", [3, 2.5, {"a": 1}, {1, 2}, b"x", object()])
def test_to_predicate_rejects(bad):
    with pytest.raises(TypeError, match=rf"to_predicate: cannot use {type(bad).__name__} .* as a filter"):
        to_predicate(bad)


def test_bad_items_inside_combinators_raise():
    with pytest.raises(TypeError, match="cannot use int 3"):
        Any(sm.ParamState, 3)
    with pytest.raises(TypeError, match="cannot use int 3"):
        Not(3)


def test_hashable_and_comparable():
    filters = [
        OfType(sm.ParamState),
        WithTag("a"),
        PathContains("w"),
        Any("a", sm.ParamState),
        All("a", sm.ParamState),
        Not("a"),
        Everything(),
        Nothing(),
    ]
    rebuilt = [
        OfType(sm.ParamState),
        WithTag("a"),
        PathContains("w"),
        Any("a", sm.ParamState),
        All("a", sm.ParamState),
        Not("a"),
        Everything(),
        Nothing(),
    ]
    for f, g in zip(filters, rebuilt, strict=True):
        assert f == g and hash(f) == hash(g)
    assert len(set(filters)) == len(filters)
    assert OfType(sm.ParamState) != OfType(sm.State)
    assert WithTag("a") != PathContains("a")
    assert Any("a") != All("a")
    assert Everything() != Nothing()
    assert Any("a", "b") != Any("b", "a")


@pytest.mark.parametrize(
    "flt, text",
    [
        (OfType(sm.ParamState), "OfType(ParamState)"),
        (WithTag("a"), "WithTag('a')"),
        (PathContains("w"), "PathContains('w')"),
        (Any(sm.ParamState, "a"), "Any(OfType(ParamState), WithTag('a'))"),
        (All("a", ...), "All(WithTag('a'), Everything())"),
        (Not(None), "Not(Nothing())"),
        (Everything(), "Everything()"),
        (Nothing(), "Nothing()"),
    ],
)
def test_repr(flt, text):
    assert repr(flt) == text


def test_filters_usable_as_jit_static_args():
    # Hashable filters can be static arguments.
    calls = []

    @sm.transform.jit(static_argnums=1)
    def f(x, flt):
        calls.append(flt)
        return x + 1

    f(jnp.ones(()), Any("a", sm.ParamState))
    f(jnp.ones(()), Any("a", sm.ParamState))
    assert len(calls) == 1


def test_public_names():
    assert set(F.__all__) >= {
        "OfType",
        "WithTag",
        "PathContains",
        "Any",
        "All",
        "Not",
        "Everything",
        "Nothing",
        "to_predicate",
    }


# Filters see module paths inside transforms.


class _Layer(sm.nn.Module):
    def __init__(self):
        self.weight = sm.ParamState(jnp.ones(2))
        self.bias = sm.ParamState(jnp.zeros(2))


class _Net(sm.nn.Module):
    def __init__(self):
        self.layers = [_Layer(), _Layer()]
        self.count = sm.ShortTermState(jnp.zeros(()))


def test_path_contains_inside_jit_via_a_trace_hook():
    net = _Net()
    net.states()  # refresh paths
    pred = PathContains("weight")
    seen = {}

    def hook(state, value):
        seen[state.path] = pred(state.path, state)
        return value

    @sm.transform.jit
    def f(x):
        with sm.StateTrace(hook):
            y = x
            for layer in net.layers:
                y = layer.weight.value * y + layer.bias.value
            net.count.value = net.count.value + 1
        return y

    out = f(jnp.ones(2))
    np.testing.assert_array_equal(out, np.ones(2))
    assert seen == {
        ("layers", 0, "weight"): True,
        ("layers", 0, "bias"): False,
        ("layers", 1, "weight"): True,
        ("layers", 1, "bias"): False,
        ("count",): False,
    }
    # Paths survive the transform, and the states touched by jit are the module's own.
    written = f.stateful.get_write_states(jnp.ones(2))
    assert [s.path for s in written] == [("count",)]
    assert all(pred(s.path, s) == ("weight" in s.path) for s in f.stateful.get_states(jnp.ones(2)))
