"""Tests for statemap/nn/_module.py: Module, its states and their paths."""

import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm
from statemap.util.filter import Not, OfType, PathContains


class Linear(sm.nn.Module):
    def __init__(self, n):
        self.weight = sm.ParamState(jnp.ones((n, n)))
        self.bias = sm.ParamState(jnp.zeros(n))

    def __call__(self, x):
        return x @ self.weight.value + self.bias.value


class MLP(sm.nn.Module):
    def __init__(self):
        self.layers = [Linear(2), Linear(2)]
        self.extra = {"scale": sm.State(jnp.ones(()), tag="aux"), "pair": (sm.ShortTermState(0.0),)}
        self.count = sm.ShortTermState(jnp.zeros((), jnp.int32))
        self.not_a_state = 3

    def __call__(self, x):
        self.count.value = self.count.value + 1
        for layer in self.layers:
            x = layer(x)
        return x * self.extra["scale"].value


def test_states_ordered_mapping_with_paths():
    m = MLP()
    states = m.states()
    assert list(states) == [
        ("layers", 0, "weight"),
        ("layers", 0, "bias"),
        ("layers", 1, "weight"),
        ("layers", 1, "bias"),
        ("extra", "scale"),
        ("extra", "pair", 0),
        ("count",),
    ]
    for path, state in states.items():
        assert state.path == path
    assert states[("layers", 1, "bias")] is m.layers[1].bias


@pytest.mark.parametrize(
    "filters, paths",
    [
        (
            (sm.ParamState,),
            [("layers", 0, "weight"), ("layers", 0, "bias"), ("layers", 1, "weight"), ("layers", 1, "bias")],
        ),
        ((PathContains("weight"),), [("layers", 0, "weight"), ("layers", 1, "weight")]),
        (("aux", sm.ShortTermState), [("extra", "scale"), ("extra", "pair", 0), ("count",)]),
        ((Not(OfType(sm.ParamState)), PathContains(0)), None),
        ((PathContains(1),), [("layers", 1, "weight"), ("layers", 1, "bias")]),
        ((False,), []),
    ],
)
def test_states_filters(filters, paths):
    m = MLP()
    got = list(m.states(*filters))
    if paths is None:  # several filters: union, in module order
        paths = [p for p in m.states() if not isinstance(m.states()[p], sm.ParamState) or 0 in p]
    assert got == paths


def test_states_rejects_bad_filter():
    with pytest.raises(TypeError, match="cannot use int 3 as a filter"):
        MLP().states(3)


def test_paths_set_on_assignment_and_refreshed():
    m = MLP()
    assert m.layers[0].weight.path == ("layers", 0, "weight")
    # Reassigning a sub-module under another name updates its states' paths.
    m.head = m.layers[1]
    assert m.layers[1].weight.path == ("head", "weight")
    # `states()` refreshes paths relative to the module it is called on (first path in traversal order).
    m.states()
    assert m.layers[1].weight.path == ("layers", 1, "weight")


def test_shared_state_listed_once():
    class Shared(sm.nn.Module):
        def __init__(self):
            s = sm.State(0.0)
            self.a = s
            self.b = [s]

    assert list(Shared().states()) == [("a",)]


def test_cycles_do_not_recurse():
    a = sm.nn.Module()
    a.w = sm.State(0.0)
    b = sm.nn.Module()
    b.parent = a
    a.child = b
    assert list(a.states()) == [("w",)]
    assert list(a.modules()) == [(), ("child",)]


def test_nodes_and_modules():
    m = MLP()
    nodes = m.nodes()
    assert nodes[()] is m
    assert nodes[("layers", 0)] is m.layers[0]
    assert list(m.modules()) == [(), ("layers", 0), ("layers", 1)]


def test_init_state_and_init_all_states():
    order = []

    class Cell(sm.nn.Module):
        def __init__(self, name):
            self.name = name

        def init_state(self, batch=1):
            order.append(self.name)
            self.h = sm.HiddenState(jnp.zeros((batch, 2)))

    class Net(sm.nn.Module):
        def __init__(self):
            self.name = "net"
            self.cells = [Cell("c0"), Cell("c1")]

        def init_state(self, batch=1):
            order.append(self.name)
            self.t = sm.ShortTermState(jnp.zeros(()))

    net = Net()
    assert net.states() == {}
    assert net.init_all_states(batch=4) is net
    assert order == ["net", "c0", "c1"]
    assert list(net.states()) == [("cells", 0, "h"), ("cells", 1, "h"), ("t",)]
    assert net.cells[1].h.value.shape == (4, 2)
    assert net.cells[1].h.path == ("cells", 1, "h")


def test_default_init_state_creates_nothing():
    m = sm.nn.Module()
    m.init_state()
    assert m.init_all_states().states() == {}


def test_module_method_under_jit_keeps_paths_and_updates():
    m = MLP()
    f = sm.transform.jit(m.__call__)
    out = f(jnp.ones(2))
    ref = np.ones(2) @ np.ones((2, 2)) @ np.ones((2, 2))
    np.testing.assert_allclose(out, ref)
    assert int(m.count.value) == 1
    written = f.stateful.get_write_states(jnp.ones(2))
    assert [s.path for s in written] == [("count",)]
    assert m.count.path == ("count",)


def test_module_states_created_in_jit_and_used_after():
    # init_all_states inside a transform: the created states hold tracers and must not leak.
    class Cell(sm.nn.Module):
        def init_state(self):
            self.h = sm.ShortTermState(jnp.zeros(2))

    cell = Cell()

    @sm.transform.jit
    def f(x):
        cell.init_all_states()
        cell.h.value = cell.h.value + x
        return cell.h.value

    np.testing.assert_array_equal(f(jnp.ones(2)), np.ones(2))
    with pytest.raises(sm.TraceContextError, match=r"path|state 'h'|created inside jit"):
        _ = cell.h.value


# -- display -------------------------------------------------------------------------------------------------------
def test_repr_shows_class_paths_types_and_shapes_nested_indented():
    text = repr(MLP())
    assert text.splitlines()[0] == "MLP(  # 12 params, 3 other"  # 2 x (4 + 2) params; scale, pair.0, count
    layer = "  layers.0: Linear(  # 6 params, 0 other\n    weight: ParamState f32[2,2]\n    bias: ParamState f32[2]\n"
    assert layer in text
    assert "  extra.scale: State f32[]" in text and "  extra.pair.0: ShortTermState float" in text
    assert "  count: ShortTermState i32[]" in text and "not_a_state" not in text
    assert text.endswith("\n)") and str(MLP()) == text


def test_repr_of_an_empty_module_and_a_shared_submodule():
    class Empty(sm.nn.Module):
        pass

    class Twice(sm.nn.Module):
        def __init__(self):
            self.a = Linear(2)
            self.b = self.a

    assert repr(Empty()) == "Empty()"
    text = repr(Twice())
    assert "  a: Linear(  # 6 params, 0 other" in text and "  b: Linear(...)  # shown above" in text
    assert text.startswith("Twice(  # 6 params, 0 other")  # a shared sub-module counts once


def test_repr_of_a_dead_state_does_not_raise():
    holder = {}

    class Box(sm.nn.Module):
        pass

    box = Box()

    @sm.transform.jit
    def make(x):
        holder["s"] = sm.State(x * 2)
        return x

    make(jnp.ones(2))
    box.s = holder["s"]
    assert "s: State" in repr(box)


# -- state dicts (the pytree view of a module) -----------------------------------------------------------------------
def test_state_dict_keys_are_dotted_paths_and_load_writes_in_place():
    m, other = MLP(), MLP()
    other.layers[0].weight.value = jnp.full((2, 2), 3.0)
    d = other.state_dict()
    assert list(d)[:4] == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    assert list(m.state_dict(OfType(sm.ParamState))) == list(d)[:4]
    weight = m.layers[0].weight
    m.load_state_dict(d)
    assert m.layers[0].weight is weight
    np.testing.assert_array_equal(weight.value, jnp.full((2, 2), 3.0))


def test_load_state_dict_errors_name_missing_unexpected_and_misshaped_entries():
    m = MLP()
    d = m.state_dict()
    del d["count"]
    d["bogus"] = jnp.ones(2)
    with pytest.raises(
        sm.CheckpointError,
        match=r"(?s)missing entries for 'count' \(state 'count' \(ShortTermState.*unexpected entries 'bogus'",
    ):
        m.load_state_dict(d)
    m.load_state_dict(d, strict=False)  # the matching entries load
    d = m.state_dict()
    d["layers.1.bias"] = jnp.zeros(5)
    with pytest.raises(sm.CheckpointError, match=r"(?s)entry 'layers.1.bias' has another shape.*f32\[2\].*f32\[5\]"):
        m.load_state_dict(d)
