"""Tests of the shared control-flow engine (statemap/transform/_control.py): trace cache, unions, direct calls."""

import gc
import weakref

import jax.numpy as jnp
import pytest

import statemap as sm
from statemap.transform import _control

T = sm.transform


def test_stateful_cache_is_shared_per_function_and_transform():
    def f(c, x):
        return c, x

    assert _control.stateful(f, "scan") is _control.stateful(f, "scan")
    assert _control.stateful(f, "scan") is not _control.stateful(f, "while_loop")


def test_stateful_cache_does_not_keep_the_function_alive():
    s = sm.State(jnp.zeros(()), name="s")

    def f(c, x):
        s.value = s.value + x
        return c, x

    T.scan(f, 0.0, jnp.arange(3.0))
    ref = weakref.ref(f)
    del f
    gc.collect()
    assert ref() is None


def test_unhashable_callable_is_traced_each_call():
    class Body:
        __hash__ = None

        def __init__(self):
            self.calls = 0

        def __call__(self, c, x):
            self.calls += 1
            return c + x, None

    body = Body()
    T.scan(body, 0.0, jnp.arange(3.0))
    T.scan(body, 0.0, jnp.arange(3.0))
    assert body.calls == 2


def test_state_union_orders_states_by_first_touch_and_collects_writes():
    a, b, c = (sm.State(jnp.zeros(()), name=n) for n in "abc")

    def f1():
        a.value = b.value + 1

    def f2():
        c.value = a.value + b.value

    flats = [_control.FlatTraced(_control.stateful(f, "test").trace()) for f in (f1, f2)]
    union = _control.StateUnion(flats)
    assert [s.name for s in union.states] == ["b", "a", "c"]
    assert [union.states[p].name for p in union.written] == ["a", "c"]
    assert union.maps == [[0, 1], [1, 0, 2]]


def test_flatten_checked_names_leaves():
    leaves, _, names = _control.flatten_checked({"a": (1.0, jnp.ones(2))}, "scan", "init")
    assert names == ["init['a'][0]", "init['a'][1]"] and len(leaves) == 2
    with pytest.raises(TypeError, match=r"scan: argument init\['a'\] is not a valid JAX type"):
        _control.flatten_checked({"a": "text"}, "scan", "init")


def test_run_direct_restores_on_exception_and_keeps_new_states_visible():
    s = sm.State(jnp.zeros(()), name="s")
    made = []

    def branch():
        s.value = s.value + 1
        made.append(sm.State(jnp.ones(()), name="new"))
        raise KeyError("boom")

    with pytest.raises(KeyError):
        _control.run_direct(branch, (), "cond")
    assert float(s.value) == 0.0
    new = made[0]
    # A state created inside a direct branch is seen by later transforms.
    T.jit(lambda: setattr(new, "value", new.value + 1))()
    assert float(new.value) == 2.0
    assert float(s.value) == 0.0


def test_bound_method_bodies_are_cached_per_instance():
    class Model(sm.nn.Module):
        def __init__(self):
            super().__init__()
            self.h = sm.State(jnp.zeros(()), name="h")
            self.calls = 0

        def step(self, x):
            self.calls += 1
            self.h.value = self.h.value + x
            return self.h.value

    m1, m2 = Model(), Model()
    for _ in range(3):
        T.for_loop(m1.step, jnp.arange(3.0))
    T.for_loop(m2.step, jnp.arange(3.0))
    assert (m1.calls, m2.calls) == (1, 1)
    assert float(m1.h.value) == 9.0 and float(m2.h.value) == 3.0
    ref = weakref.ref(m1)
    del m1
    gc.collect()
    assert ref() is None
