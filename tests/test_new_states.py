"""Tests for statemap/transform/_new_states.py: ensemble creation (`vmap2_new_states`, `pmap2_new_states`,
`vmap_new_states`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _mapping_util import assert_clean, assert_tree_close, snapshot

import statemap as sm
from statemap.util.filter import OfType, PathContains


class Neuron(sm.nn.Module):
    def __init__(self):
        self.calls = []

    def init_state(self, n=2):
        self.calls.append(n)
        self.V = sm.HiddenState(sm.random.normal(size=n))
        self.W = sm.ParamState(jnp.arange(float(n)) + 1)
        self.t = sm.NonBatchState(jnp.array(0.0))


class Net(sm.nn.Module):
    def __init__(self):
        self.calls = []
        self.cell = Neuron()

    def init_state(self, n=2):
        self.calls.append(n)
        self.bias = sm.ParamState(jnp.zeros(n))


# -- vmap2_new_states ----------------------------------------------------------------------------------------


def test_leading_axis_random_differs_non_batch_replicated():
    neuron = Neuron()
    groups = sm.transform.vmap2_new_states(neuron, {"n": 3}, axis_size=4)
    assert neuron.V.value.shape == (4, 3)
    assert neuron.W.value.shape == (4, 3)
    assert neuron.t.value.shape == ()
    assert len({float(v) for v in neuron.V.value[:, 0]}) == 4  # each member initialised on its own
    assert_tree_close(neuron.W.value, jnp.tile(jnp.arange(3.0) + 1, (4, 1)))
    assert groups == {0: [neuron.V, neuron.W], None: [neuron.t]}
    assert neuron.V.path == ("V",)
    assert neuron.calls == [3]  # the initialiser is traced once


def test_global_key_advances_once_and_seed_is_deterministic():
    sm.random.seed(5)
    k0 = sm.random.DEFAULT.value
    a = Neuron()
    sm.transform.vmap2_new_states(a, {"n": 2}, axis_size=3)
    np.testing.assert_array_equal(
        jax.random.key_data(sm.random.DEFAULT.value), jax.random.key_data(jax.random.split(k0, 2 * 3 + 1)[0])
    )
    b = Neuron()
    sm.transform.vmap2_new_states(b, {"n": 2}, axis_size=3)
    assert not np.array_equal(a.V.value, b.V.value)
    sm.random.seed(5)
    c = Neuron()
    sm.transform.vmap2_new_states(c, {"n": 2}, axis_size=3)
    np.testing.assert_array_equal(a.V.value, c.V.value)


def test_state_out_axes_routes_another_axis():
    neuron = Neuron()
    groups = sm.transform.vmap2_new_states(
        neuron, {"n": 2}, axis_size=5, state_out_axes={1: OfType(sm.ParamState), 0: PathContains("V")}
    )
    assert neuron.W.value.shape == (2, 5)
    assert_tree_close(neuron.W.value, jnp.tile((jnp.arange(2.0) + 1)[:, None], (1, 5)))
    assert neuron.V.value.shape == (5, 2)
    assert groups == {0: [neuron.V], 1: [neuron.W], None: [neuron.t]}


def test_nested_modules_are_all_initialised_once():
    net = Net()
    groups = sm.transform.vmap2_new_states(net, {"n": 2}, axis_size=3, state_tag="ensemble")
    assert net.calls == [2] and net.cell.calls == [2]
    assert net.bias.value.shape == (3, 2) and net.cell.V.value.shape == (3, 2)
    assert net.cell.V.path == ("cell", "V")
    for s in [net.bias, net.cell.V, net.cell.W, net.cell.t]:
        assert "ensemble" in s.tag
    assert sorted(len(v) for v in groups.values()) == [1, 3]


def test_states_end_at_the_callers_level():
    neuron = Neuron()
    sm.transform.vmap2_new_states(neuron, {"n": 2}, axis_size=3)
    assert neuron.V.stack_level == 0 and neuron.t.stack_level == 0
    for leaf in jax.tree_util.tree_leaves([neuron.V.value, neuron.W.value, neuron.t.value]):
        assert not isinstance(leaf, jax.core.Tracer)
    inner = Neuron()
    with sm.StateTrace():
        sm.transform.vmap2_new_states(inner, {"n": 2}, axis_size=3)
        assert inner.V.stack_level == 1


def test_ensemble_is_usable_by_vmap2_and_jit():
    neuron = Neuron()
    sm.transform.vmap2_new_states(neuron, {"n": 2}, axis_size=4)
    v0 = neuron.V.value

    @sm.transform.jit
    @sm.transform.vmap2(state_in_axes={0: [neuron.V, neuron.W]}, state_out_axes={0: [neuron.V]})
    def step(x):
        neuron.V.value = neuron.V.value * neuron.W.value + x + neuron.t.value
        return neuron.V.value.sum()

    out = step(jnp.ones(4))
    want_v = v0 * neuron.W.value + 1.0
    assert_tree_close(neuron.V.value, want_v)
    assert_tree_close(out, want_v.sum(1))


def test_created_inside_jit():
    @sm.transform.jit
    def make(scale):
        neuron = Neuron()
        sm.transform.vmap2_new_states(neuron, {"n": 2}, axis_size=3)
        return neuron.W.value * scale, neuron.V.value.shape

    w, shape = make(2.0)
    assert_tree_close(w, jnp.tile(2 * (jnp.arange(2.0) + 1), (3, 1)))
    assert shape == (3, 2)


def test_non_batch_state_depending_on_the_lane_is_an_error():
    class Bad(sm.nn.Module):
        def init_state(self):
            self.h = sm.HiddenState(jnp.zeros(2), name="h")
            self.t = sm.NonBatchState(sm.random.normal(size=()), name="t")

    bad = Bad()
    snap = snapshot([])
    with pytest.raises(
        sm.BatchAxisError,
        match=r"vmap2_new_states: new state 't' \(NonBatchState, created at test_new_states\.py:\d+\)"
        r"(?s:.*)expected:(?s:.*)fix:",
    ):
        sm.transform.vmap2_new_states(bad, {}, axis_size=3)
    assert_clean([], snap)  # the global key is restored
    with pytest.raises(sm.TraceContextError, match="'h'"):  # half-made states refuse to leak their tracers
        _ = bad.h.value


@pytest.mark.parametrize("size", [None, 0, -1, 2.0, True])
def test_axis_size_is_required(size):
    with pytest.raises(ValueError, match=r"vmap2_new_states: axis_size must be a positive int(?s:.*)fix:"):
        sm.transform.vmap2_new_states(Neuron(), {}, axis_size=size)


def test_user_exception_propagates_and_existing_states_are_untouched():
    s = sm.State(jnp.ones(2), name="s")

    class Failing(sm.nn.Module):
        def init_state(self):
            s.value = s.value + 1
            raise KeyError("init failed")

    snap = snapshot([s])
    with pytest.raises(KeyError, match="init failed"):
        sm.transform.vmap2_new_states(Failing(), {}, axis_size=2)
    assert_clean([s], snap)


def test_initialiser_reading_an_existing_state():
    base = sm.ParamState(jnp.array([1.0, 2.0]), name="base")

    class Copy(sm.nn.Module):
        def init_state(self):
            self.w = sm.ParamState(base.value * 2 + sm.random.uniform(size=2) * 0)

    c = Copy()
    sm.transform.vmap2_new_states(c, {}, axis_size=3)
    assert_tree_close(c.w.value, jnp.tile(jnp.array([2.0, 4.0]), (3, 1)))
    np.testing.assert_array_equal(base.value, [1.0, 2.0])


# -- pmap2_new_states ----------------------------------------------------------------------------------------


def test_pmap2_new_states_one_member_per_device():
    n = jax.local_device_count()
    if n < 2:
        pytest.skip("needs 2 CPU devices")
    neuron = Neuron()
    groups = sm.transform.pmap2_new_states(neuron, {"n": 2})
    assert neuron.V.value.shape == (n, 2) and neuron.t.value.shape == ()
    assert len({float(v) for v in neuron.V.value[:, 0]}) == n
    assert groups[None] == [neuron.t]
    assert neuron.calls == [2]
    with pytest.raises(ValueError, match="pmap2_new_states: axis_size"):
        sm.transform.pmap2_new_states(Neuron(), {}, axis_size=0)


# -- vmap_new_states (legacy) --------------------------------------------------------------------------------


def test_vmap_new_states_gives_new_states_a_leading_axis():
    made = []
    calls = []

    @sm.transform.vmap_new_states(axis_size=3, in_axes=None, state_tag="new")
    def make(scale):
        calls.append(1)
        made.append(sm.ShortTermState(scale * sm.random.uniform(size=2)))
        made.append(sm.NonBatchState(jnp.array(1.0)))
        return scale * 2

    out = make(2.0)
    assert_tree_close(out, jax.vmap(lambda s: s * 2, in_axes=None, axis_size=3)(2.0))  # as jax.vmap
    assert len(calls) == 1
    h, nb = made
    assert h.value.shape == (3, 2) and nb.value.shape == ()
    assert len({float(v) for v in h.value[:, 0]}) == 3
    assert "new" in h.tag
    assert h.stack_level == 0


def test_vmap_new_states_maps_arguments():
    made = []

    def make(x):
        made.append(sm.State(x * 10))
        return x + 1

    out = sm.transform.vmap_new_states(make)(jnp.arange(3.0))
    assert_tree_close(out, jnp.arange(3.0) + 1)
    assert_tree_close(made[0].value, jnp.arange(3.0) * 10)


def test_vmap_new_states_excludes_states():
    made = []

    def make():
        made.append(sm.State(np.zeros(2), tag="skip"))  # concrete: stays as made, not mapped
        made.append(sm.State(jnp.zeros(2) + 1, tag="skip"))  # traced: refuses to leak its tracer
        made.append(sm.State(jnp.ones(2)))

    sm.transform.vmap_new_states(make, in_axes=(), axis_size=3, state_to_exclude="skip")()
    assert made[2].value.shape == (3, 2)
    assert made[0].value.shape == (2,)
    with pytest.raises(sm.TraceContextError, match="still holds one of its tracers"):
        _ = made[1].value


def test_vmap_new_states_rejects_declarations():
    s = sm.State(jnp.zeros(2))
    with pytest.raises(ValueError, match=r"vmap_new_states: in_states/out_states are not accepted(?s:.*)fix:"):
        sm.transform.vmap_new_states(lambda: None, in_states={0: [s]})
    with pytest.raises(ValueError, match="axis_size must be a positive int"):
        sm.transform.vmap_new_states(lambda: None, axis_size=0)
