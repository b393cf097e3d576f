"""Tests for statemap/transform/_mapping.py: the state-aware mapping engine (`StatefulMapping`, `explain`).

Stateless parity with `jax.vmap` over in_axes/out_axes forms lives in tests/test_vmap.py; this module tests
what the engine does with states, caches, random numbers and errors.
"""

import functools
import gc
import threading
import warnings
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _mapping_util import assert_clean, assert_no_tracer, assert_tree_close, jax_notes, snapshot
from hypothesis import event, given
from hypothesis import strategies as st

import statemap as sm
from statemap.util.filter import OfType, PathContains, WithTag

SM = sm.transform.StatefulMapping
vmap2 = sm.transform.vmap2


# -- the seed example ----------------------------------------------------------------------------------------


def test_seed_example_verbatim_raises_naming_the_state():
    # /work/shared/seed/StatefulMapping.txt: a 0-d counter cannot be mapped on axis 0 (lanes are independent).
    counter = sm.ShortTermState(jnp.array(0.0))

    def accumulate(x):
        counter.value = counter.value + x
        return counter.value

    batched_accumulate = sm.transform.StatefulMapping(
        accumulate,
        in_axes=0,
        out_axes=0,
        state_in_axes={0: OfType(sm.ShortTermState)},
        state_out_axes={0: OfType(sm.ShortTermState)},
        name="batched_accumulate",
    )
    xs = jnp.ones((3,))
    snap = snapshot([counter])
    with pytest.raises(sm.BatchAxisError) as info:
        batched_accumulate(xs)
    msg = str(info.value)
    assert msg.startswith("batched_accumulate: state <unnamed> (ShortTermState, created at test_mapping.py:")
    assert "selected by state_in_axes on axis 0" in msg
    assert "f32[] has no axis 0" in msg
    assert "shape ()" in msg
    assert "expected: a value with a mapped axis 0 whose size is the batch size" in msg
    assert "fix:" in msg and "axis 0 of the batch size" in msg and "jnp.zeros(3)" in msg
    assert "statemap.transform.map" in msg
    assert_clean([counter], snap)


def test_seed_example_named_counter():
    counter = sm.ShortTermState(jnp.array(0.0), name="counter")

    def accumulate(x):
        counter.value = counter.value + x
        return counter.value

    f = SM(
        accumulate,
        state_in_axes={0: OfType(sm.ShortTermState)},
        state_out_axes={0: OfType(sm.ShortTermState)},
    )
    snap = snapshot([counter])
    with pytest.raises(
        sm.BatchAxisError,
        match=r"StatefulMapping: state 'counter' \(ShortTermState, created at test_mapping\.py:\d+\) "
        r"is selected"
        r"(?s:.*)expected:(?s:.*)found: +shape \(\)(?s:.*)fix:.*statemap\.transform\.map",
    ):
        f(jnp.ones(3))
    assert_clean([counter], snap)
    # the fix it suggests works: one slot per lane
    counter.value = jnp.zeros(3)
    np.testing.assert_array_equal(f(jnp.ones(3)), np.ones(3))
    np.testing.assert_array_equal(counter.value, np.ones(3))


def test_statemap_errors_carry_no_jax_traceback_note():
    # A statemap error raised while the body is traced must read as statemap's own message (its doctest
    # compares the message): JAX's "removed its internal frames" note is noise on it.
    counter = sm.ShortTermState(jnp.array(0.0), name="counter")

    def accumulate(x):
        counter.value = counter.value + x
        return counter.value

    with pytest.raises(sm.BatchAxisError) as info:
        SM(accumulate, state_in_axes={0: [counter]}, state_out_axes={0: [counter]})(jnp.ones(3))
    assert jax_notes(info.value) == []


# -- state semantics: parity with a pure jax.vmap with explicit state ----------------------------------------


def _model():
    w = sm.ParamState(jnp.arange(6.0).reshape(3, 2) / 4, name="w")  # per lane, axis 0, read-only
    h = sm.ShortTermState(jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), name="h")  # per lane, axis 1, read+write
    b = sm.ParamState(jnp.array([0.5, -0.5]), name="b")  # broadcast, read-only
    n = sm.State(jnp.array(0, jnp.int32), name="n")  # broadcast, written with an unbatched value
    return w, h, b, n


def _pure_lane(w, h, b, n, x):
    h = jnp.tanh(h * w + x + b)
    return (h.sum(), x * 2), (h, n + 1)


def test_parity_axis0_axis1_broadcast_and_unbatched_write():
    w, h, b, n = _model()

    def step(x):
        h.value = jnp.tanh(h.value * w.value + x + b.value)
        n.value = n.value + 1
        return h.value.sum(), x * 2

    f = vmap2(step, state_in_axes={0: [w], 1: [h]}, state_out_axes={1: [h]})
    ref = jax.vmap(_pure_lane, in_axes=(0, 1, None, None, 0), out_axes=((0, 0), (1, None)))
    w0, b0 = w.value, b.value
    hs, ns = h.value, n.value
    for k in range(3):
        xs = jnp.arange(6.0).reshape(3, 2) / (k + 1)
        out = f(xs)
        want, (hs, ns) = ref(w0, hs, b0, ns, xs)
        assert_tree_close(out, want)
        assert_tree_close(h.value, hs)
        assert h.value.shape == (2, 3)
        assert int(n.value) == int(ns) == k + 1
    assert w._value is w0 and b._value is b0  # read-only states are never written back


def test_parity_with_the_loop_oracle():
    w, h, b, n = _model()

    def step(x):
        h.value = jnp.tanh(h.value * w.value + x + b.value)
        return h.value.sum(), x * 2

    xs = jnp.arange(6.0).reshape(3, 2) - 2
    w0, h0, b0 = w.value, h.value, b.value
    out = vmap2(step, state_in_axes={0: [w], 1: [h]}, state_out_axes={1: [h]})(xs)
    lanes = [_pure_lane(w0[i], h0[:, i], b0, 0, xs[i]) for i in range(3)]
    want = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[lane[0] for lane in lanes])
    assert_tree_close(out, want)
    assert_tree_close(h.value, jnp.stack([lane[1][0] for lane in lanes], axis=1))


def test_single_state_selector_on_axis_1():
    # `{1: h}` (one State, not a list) must map h on axis 1, exactly like `{1: [h]}`.
    h = sm.ShortTermState(jnp.zeros((2, 3)), name="h")

    def step(x):
        h.value = h.value + x
        return h.value.sum()

    out = vmap2(step, state_in_axes={1: h}, state_out_axes={1: h})(jnp.arange(3.0))
    np.testing.assert_array_equal(out, [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(h.value, np.tile(np.arange(3.0), (2, 1)))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_selected_state_written_back_at_its_axis(axis):
    s = sm.State(jnp.arange(12.0).reshape(3, 4) if axis == 0 else jnp.arange(12.0).reshape(4, 3), name="s")

    def step(x):
        s.value = s.value * x
        return s.value.mean()

    s0 = s.value
    xs = jnp.array([1.0, 2.0, 3.0])
    out = vmap2(step, state_in_axes={axis: [s]}, state_out_axes={axis: [s]})(xs)
    pure = jax.vmap(lambda v, x: ((v * x).mean(), v * x), in_axes=(axis, 0), out_axes=(0, axis))
    want, s1 = pure(s0, xs)
    assert_tree_close(out, want)
    assert_tree_close(s.value, s1)


def test_selected_read_only_state_is_sliced_not_written():
    w = sm.ParamState(jnp.arange(6.0).reshape(3, 2), name="w")
    w0 = w.value
    out = vmap2(lambda x: w.value * x, state_in_axes={0: [w]})(jnp.array([1.0, 2.0, 3.0]))
    assert_tree_close(out, w0 * jnp.array([1.0, 2.0, 3.0])[:, None])
    assert w._value is w0


def test_write_only_states_follow_declarations():
    a = sm.State(jnp.zeros(()), name="a")  # declared axis 1: the per-lane (2,) values stack on axis 1
    c = sm.State(jnp.zeros(2), name="c")  # declared None: written with a lane-independent value
    d = sm.State(jnp.zeros(()), name="d")  # undeclared, lane-independent value: written back unbatched

    def step(x, k):
        a.value = x * 2
        c.value = k + 1.0
        d.value = jnp.sum(k)
        return x

    xs = jnp.arange(6.0).reshape(3, 2)
    vmap2(step, in_axes=(0, None), state_out_axes={1: [a], None: [c]})(xs, jnp.ones(2))
    assert_tree_close(a.value, (xs * 2).T)
    assert_tree_close(c.value, jnp.full(2, 2.0))
    assert_tree_close(d.value, jnp.array(2.0))


def test_state_reduced_over_the_axis_may_be_declared_none():
    total = sm.State(jnp.zeros(()), name="total")

    def step(x):
        total.value = total.value + jax.lax.psum(x, "i")
        return x

    f = vmap2(step, axis_name="i", state_out_axes={None: [total]})
    f(jnp.arange(4.0))
    f(jnp.arange(4.0))
    assert float(total.value) == 12.0


def test_pytree_valued_state():
    s = sm.State({"a": jnp.zeros((3, 2)), "b": (jnp.ones(3),)}, name="s")

    def step(x):
        s.value = {"a": s.value["a"] + x, "b": (s.value["b"][0] * x.sum(),)}
        return s.value["b"][0]

    xs = jnp.arange(6.0).reshape(3, 2)
    out = vmap2(step, state_in_axes={0: [s]}, state_out_axes={0: [s]})(xs)
    assert_tree_close(out, xs.sum(1))
    assert_tree_close(s.value, {"a": xs, "b": (xs.sum(1),)})


# -- unexpected_out_state_mapping ----------------------------------------------------------------------------


def _accumulator(shape=()):
    c = sm.State(jnp.zeros(shape), name="c")

    def step(x):
        c.value = c.value + x
        return x * 2

    return c, step


def test_policy_raise_is_the_default_and_names_the_state():
    c, step = _accumulator()
    f = vmap2(step)
    assert f.unexpected_out_state_mapping == "raise"
    snap = snapshot([c])
    with pytest.raises(
        sm.BatchAxisError,
        match=r"vmap2: state 'c' \(State, created at test_mapping\.py:\d+\) was written with a value "
        r"batched on the mapped axis, but state_out_axes does not select it(?s:.*)expected:(?s:.*)"
        r"found: +a per-lane write of f32\[\] \(mapped axis size 3\)(?s:.*)"
        r"fix: .*state_out_axes=\{0: s\}.*'warn'",
    ):
        f(jnp.arange(3.0))
    assert_clean([c], snap)
    with pytest.raises(sm.BatchAxisError, match="'c'"):  # not cached: raises again
        f(jnp.arange(3.0))
    assert_clean([c], snap)


def test_policy_warn_scatters_on_axis_0():
    c, step = _accumulator()
    f = vmap2(step, unexpected_out_state_mapping="warn")
    with pytest.warns(UserWarning, match=r"vmap2: state 'c' .*written per lane but is not declared.*axis 0 of size 3"):
        out = f(jnp.arange(3.0))
    np.testing.assert_array_equal(out, [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(c.value, [0.0, 1.0, 2.0])


def test_policy_ignore_scatters_silently():
    c, step = _accumulator((2,))
    f = SM(step, unexpected_out_state_mapping="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f(jnp.arange(6.0).reshape(3, 2))
    assert_tree_close(c.value, jnp.arange(6.0).reshape(3, 2))
    assert f.explain(jnp.ones((3, 2))).rows[0]["how"] == "policy:ignore"


def test_policy_auto_maps_read_modify_write_state_with_batch_leading_size():
    c = sm.State(jnp.array([10.0, 20.0, 30.0]), name="c")

    def step(x):
        c.value = c.value * 2 + x
        return c.value

    f = vmap2(step, unexpected_out_state_mapping="auto")
    pure = jax.vmap(lambda cv, x: (cv * 2 + x, cv * 2 + x))
    cs = c.value
    for _ in range(3):
        out = f(jnp.arange(3.0))
        want, cs = pure(cs, jnp.arange(3.0))
        assert_tree_close(out, want)
        assert_tree_close(c.value, cs)
    (row,) = f.explain(jnp.arange(3.0)).rows
    assert (row["in_axis"], row["out_axis"], row["how"]) == (0, 0, "policy:auto")


def test_policy_auto_other_states_scatter_on_axis_0():
    c, step = _accumulator((2,))  # leading size 2 != batch size 3: broadcast in, scattered out
    xs = jnp.outer(jnp.arange(3.0), jnp.ones(2))
    with pytest.warns(UserWarning, match=r"'c'.*shape changes from \(2,\)"):  # 'auto' says the shape changes
        vmap2(step, unexpected_out_state_mapping="auto")(xs)
    assert_tree_close(c.value, xs)


def test_policy_warnings_come_once_per_mapping_and_state():
    c, step = _accumulator()
    f = vmap2(step, unexpected_out_state_mapping="warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f(jnp.arange(3.0))
        c.value = jnp.array(0.0)  # back to the undeclared shape: the plan is rebuilt for the new shape
        f(jnp.arange(3.0))
        f.clear_cache()
        c.value = jnp.array(0.0)
        f(jnp.arange(3.0))
    assert len([w for w in caught if "'c'" in str(w.message)]) == 1


def test_policy_auto_warm_calls_do_not_retrace():
    c = sm.State(jnp.zeros(3), name="c")
    calls = []

    def step(x):
        calls.append(1)
        c.value = c.value + x
        return x

    f = vmap2(step, unexpected_out_state_mapping="auto")
    f(jnp.ones(3))
    cold = len(calls)
    assert 1 <= cold <= 2  # documented: a promoted state is traced a second time on the cold call
    f(jnp.ones(3))
    f(jnp.ones(3))
    assert len(calls) == cold
    np.testing.assert_array_equal(c.value, 3 * np.ones(3))


@pytest.mark.parametrize("policy", ["bogus", "Raise", None, 0])
def test_invalid_policy_rejected_at_construction(policy):
    with pytest.raises(ValueError, match=r"unexpected_out_state_mapping=.* is not a policy(?s:.*)fix: +use 'raise'"):
        SM(lambda x: x, unexpected_out_state_mapping=policy)
    with pytest.raises(ValueError, match="is not a policy"):
        vmap2(lambda x: x, unexpected_out_state_mapping=policy)


# -- options: return_only_write, axis_env, mapping_fn, attributes --------------------------------------------


def test_return_only_write_false_writes_back_read_states():
    r = sm.State(jnp.ones(2), name="r")  # broadcast, read only
    w = sm.State(jnp.arange(3.0), name="w")  # per lane, read only
    f = SM(lambda x: x * r.value.sum() + w.value, state_in_axes={0: [w]}, return_only_write=False)
    g = SM(lambda x: x * r.value.sum() + w.value, state_in_axes={0: [w]})
    with sm.StateTrace() as t:
        out = f(jnp.ones(3))
    assert sorted(s.name for s, wr in zip(t.states, t.written, strict=True) if wr) == ["r", "w"]
    with sm.StateTrace() as t2:
        g(jnp.ones(3))
    assert not any(t2.written)
    assert_tree_close(out, jnp.array([2.0, 3.0, 4.0]))
    assert_tree_close(r.value, jnp.ones(2))
    assert_tree_close(w.value, jnp.arange(3.0))
    rows = {row["state"]: row for row in f.explain(jnp.ones(3)).rows}
    assert rows["'r'"]["out_axis"] is None and rows["'w'"]["out_axis"] == 0


def test_axis_env_names_axes_for_collectives():
    f = SM(lambda x: jax.lax.psum(x, "outer") + x, axis_env=[("outer", 2)])
    out = jax.vmap(f, axis_name="outer")(jnp.arange(6.0).reshape(2, 3))
    want = jax.vmap(jax.vmap(lambda x: jax.lax.psum(x, "outer") + x), axis_name="outer")(jnp.arange(6.0).reshape(2, 3))
    assert_tree_close(out, want)
    assert f.axis_env == (("outer", 2),)


def _custom_mapping(log):
    def mapping(fn, *, in_axes, out_axes, axis_name=None, axis_size=None, **kwargs):
        log.append({"in_axes": in_axes, "out_axes": out_axes, "axis_size": axis_size, **kwargs})
        return jax.vmap(fn, in_axes=in_axes, out_axes=out_axes, axis_name=axis_name, axis_size=axis_size)

    return mapping


@pytest.mark.parametrize("kind", ["vmap", "pmap", "partial", "custom"])
def test_mapping_fn_variants(kind):
    s = sm.State(jnp.zeros(2), name="s")
    log = []
    mapping_fn = {
        "vmap": jax.vmap,
        "pmap": jax.pmap,
        "partial": functools.partial(jax.vmap, spmd_axis_name=None),
        "custom": _custom_mapping(log),
    }[kind]
    kwargs = {"mapping_kwargs": {"tag": "hello"}} if kind == "custom" else {}

    def step(x):
        s.value = s.value + x
        return x * 3

    f = SM(step, state_in_axes={0: [s]}, state_out_axes={0: [s]}, mapping_fn=mapping_fn, **kwargs)
    assert f.mapping_fn is mapping_fn
    np.testing.assert_array_equal(f(jnp.array([1.0, 2.0])), [3.0, 6.0])
    np.testing.assert_array_equal(f(jnp.array([1.0, 2.0])), [3.0, 6.0])
    np.testing.assert_array_equal(s.value, [2.0, 4.0])
    if kind == "custom":
        assert len(log) == 1  # built once per plan
        assert log[0]["tag"] == "hello" and log[0]["axis_size"] == 2
        assert f.mapping_kwargs == {"tag": "hello"}


def test_mapping_kwargs_forwarded_to_jax_pmap():
    devices = jax.local_devices()[:2]
    f = SM(lambda x: x + 1, mapping_fn=jax.pmap, mapping_kwargs={"devices": devices}, axis_name="d")
    out = f(jnp.zeros(2))
    np.testing.assert_array_equal(out, [1.0, 1.0])
    assert f.mapping_kwargs == {"devices": devices}


def test_attributes():
    def fn(x):
        """Doc of fn."""
        return x

    f = SM(fn, in_axes=(0,), out_axes=1, state_in_axes=sm.ParamState, axis_name="i", axis_size=3, name="mine")
    assert f.origin_fun is fn
    assert f.__wrapped__ is fn and f.__name__ == "fn" and f.__doc__ == "Doc of fn."
    assert f.state_in_axes == {0: OfType(sm.ParamState)} and f.state_out_axes == {}
    assert (f.in_axes, f.out_axes, f.axis_name, f.axis_size, f.name) == ((0,), 1, "i", 3, "mine")
    assert f.mapping_fn is jax.vmap and f.mapping_kwargs == {}
    assert f.return_only_write is True and f.axis_env == ()
    assert SM(fn).name == "StatefulMapping"


def test_construction_errors():
    with pytest.raises(TypeError, match="expected a callable"):
        SM(3)
    with pytest.raises(TypeError, match="mapping_fn must be callable"):
        SM(lambda x: x, mapping_fn="vmap")
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match=r"axis_size must be a positive int(?s:.*)fix:"):
            SM(lambda x: x, axis_size=bad)


def test_decorated_method_binds_self():
    calls = []

    class Model(sm.nn.Module):
        def __init__(self, k):
            self.s = sm.State(jnp.zeros(3), name="s")
            self.k = k

        @vmap2(state_in_axes=..., state_out_axes=...)
        def step(self, x):
            calls.append(self.k)
            self.s.value = self.s.value + x * self.k
            return self.s.value

        @vmap2(in_axes=(None, 0, None), static_argnums=2)
        def scaled(self, x, c):
            return x * c * self.k

    a, b = Model(1.0), Model(2.0)
    np.testing.assert_array_equal(a.step(jnp.arange(3.0)), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(b.step(jnp.arange(3.0)), [0.0, 2.0, 4.0])
    a.step(jnp.arange(3.0))
    np.testing.assert_array_equal(a.s.value, [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(b.s.value, [0.0, 2.0, 4.0])
    assert calls == [1.0, 2.0]  # one trace per instance
    np.testing.assert_array_equal(b.scaled(jnp.arange(3.0), 3.0), [0.0, 6.0, 12.0])
    assert isinstance(Model.step, sm.transform.StatefulMapping)


def test_decorated_method_does_not_keep_instances_alive():
    class Model(sm.nn.Module):
        def __init__(self):
            self.s = sm.State(jnp.zeros(3), name="s")

        @vmap2(state_in_axes=..., state_out_axes=...)
        def step(self, x):
            self.s.value = self.s.value + x
            return x

    m = Model()
    m.step(jnp.ones(3))
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None, "the per-instance cache of a decorated method keeps the instance alive"


# -- selectors -----------------------------------------------------------------------------------------------


class _Cell(sm.nn.Module):
    def __init__(self):
        self.h = sm.ShortTermState(jnp.zeros(3), tag="fast")
        self.w = sm.ParamState(jnp.ones(2))


class _Net(sm.nn.Module):
    def __init__(self):
        self.cell = _Cell()


def _selectors(net):
    h = net.cell.h
    return {
        "filter": OfType(sm.ShortTermState),
        "type": sm.ShortTermState,
        "tag": "fast",
        "withtag": WithTag("fast"),
        "path": PathContains("h"),
        "state": h,
        "list": [h],
        "tuple": (h,),
        "set": {h},
        "legacy-dict": {"h": h},
    }


@pytest.mark.parametrize(
    "which", ["filter", "type", "tag", "withtag", "path", "state", "list", "tuple", "set", "legacy-dict"]
)
def test_selector_forms_select_the_same_state(which):
    net = _Net()
    sel = _selectors(net)[which]

    def step(x):
        net.cell.h.value = net.cell.h.value + x * net.cell.w.value.sum()
        return net.cell.h.value

    out = vmap2(step, state_in_axes={0: sel}, state_out_axes={0: sel})(jnp.arange(3.0))
    np.testing.assert_array_equal(out, [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(net.cell.h.value, [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(net.cell.w.value, [1.0, 1.0])
    out = vmap2(step, state_in_axes=sel, state_out_axes=sel)(jnp.arange(3.0))  # bare selector: axis 0
    np.testing.assert_array_equal(net.cell.h.value, [0.0, 4.0, 8.0])


def test_ellipsis_selects_every_state():
    a = sm.State(jnp.zeros(3), name="a")
    b = sm.State(jnp.ones(3), name="b")

    def step(x):
        a.value = a.value + x
        b.value = b.value * x
        return x

    vmap2(step, state_in_axes=..., state_out_axes=...)(jnp.arange(3.0))
    np.testing.assert_array_equal(a.value, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(b.value, [0.0, 1.0, 2.0])


def test_none_entry_broadcasts_explicitly_first_match_wins():
    a = sm.State(jnp.ones(3), name="a")
    b = sm.State(jnp.arange(3.0), name="b")
    f = vmap2(lambda x: x * a.value.sum() + b.value, state_in_axes={None: [a], 0: ...})
    np.testing.assert_array_equal(f(jnp.ones(3)), [3.0, 4.0, 5.0])  # a broadcast, b per lane
    rows = {r["state"]: r for r in f.explain(jnp.ones(3)).rows}
    assert rows["'a'"]["in_axis"] == "broadcast" and rows["'b'"]["in_axis"] == 0


def test_filters_receive_module_paths():
    seen = []

    def spy(path, state):
        seen.append(path)
        return "w" in path

    net = _Net()

    def step(x):
        net.cell.h.value = net.cell.h.value + net.cell.w.value.sum() * x
        return x

    out = vmap2(step, state_in_axes={0: PathContains("h")}, state_out_axes={0: spy})
    out(jnp.ones(3))
    assert ("cell", "h") in seen
    np.testing.assert_array_equal(net.cell.h.value, 2 * np.ones(3))


def test_path_filter_inside_a_nested_module_selects_per_lane_params():
    class Layer(sm.nn.Module):
        def __init__(self):
            self.w = sm.ParamState(jnp.arange(6.0).reshape(3, 2))  # 3 ensemble members
            self.b = sm.ParamState(jnp.ones(2))

    class Model(sm.nn.Module):
        def __init__(self):
            self.layers = [Layer()]

    m = Model()
    f = vmap2(lambda x: m.layers[0].w.value * x + m.layers[0].b.value, in_axes=None, state_in_axes=PathContains("w"))
    out = f(jnp.ones(2))
    assert_tree_close(out, jnp.arange(6.0).reshape(3, 2) + 1)


# -- random numbers ------------------------------------------------------------------------------------------


def test_lanes_draw_independent_numbers():
    out = vmap2(lambda x: x + sm.random.normal(size=(2,)))(jnp.zeros((5, 2)))
    assert out.shape == (5, 2)
    assert len({float(v) for v in out[:, 0]}) == 5


def test_global_key_advances_once_per_call_deterministically():
    f = vmap2(lambda x: x + sm.random.uniform(size=()))
    sm.random.seed(7)
    k0 = sm.random.DEFAULT.value
    a = f(jnp.zeros(4))
    np.testing.assert_array_equal(
        jax.random.key_data(sm.random.DEFAULT.value), jax.random.key_data(jax.random.split(k0, 2 * 4 + 1)[0])
    )
    b = f(jnp.zeros(4))
    assert not np.array_equal(a, b)
    sm.random.seed(7)
    np.testing.assert_array_equal(f(jnp.zeros(4)), a)
    np.testing.assert_array_equal(f(jnp.zeros(4)), b)


def test_own_random_state_split_per_lane():
    rng = sm.random.RandomState(3)
    k0 = rng.value
    f = vmap2(lambda x: rng.normal(size=()) + x)
    out = f(jnp.zeros(3))
    assert len(set(np.asarray(out).tolist())) == 3
    np.testing.assert_array_equal(
        jax.random.key_data(rng.value), jax.random.key_data(jax.random.split(k0, 2 * 3 + 1)[0])
    )
    assert f.explain(jnp.zeros(3)).rows[0]["in_axis"] == "split-rng"


def test_random_inside_jit_of_vmap2():
    f = sm.transform.jit(vmap2(lambda x: x + sm.random.normal(size=())))
    a, b = f(jnp.zeros(3)), f(jnp.zeros(3))
    assert len(set(np.asarray(a).tolist())) == 3
    assert not np.array_equal(a, b)
    assert_no_tracer([])


class _Boom(Exception):
    pass


def test_random_key_restored_after_failure():
    def bad(x):
        sm.random.normal(size=())
        raise _Boom("after drawing")

    f = vmap2(bad)
    snap = snapshot([])
    with pytest.raises(_Boom):
        f(jnp.zeros(3))
    assert_clean([], snap)
    out = vmap2(lambda x: x + sm.random.normal(size=()))(jnp.zeros(3))  # the generator still works
    assert out.shape == (3,)


def test_random_key_restored_after_a_plan_error():
    c = sm.State(jnp.zeros(()), name="c")

    def step(x):
        c.value = c.value + sm.random.normal(size=()) + x
        return x

    snap = snapshot([c])
    with pytest.raises(sm.BatchAxisError, match="'c'"):
        vmap2(step)(jnp.zeros(3))
    assert_clean([c], snap)


# -- nesting -------------------------------------------------------------------------------------------------


def test_nested_write_depending_only_on_outer_data_gains_no_inner_axis():
    acc = sm.State(jnp.zeros(3), name="acc")  # one slot per outer lane

    def inner(xo, xi):
        acc.value = acc.value + xo
        return xo * xi

    def outer(xo):
        return vmap2(inner, in_axes=(None, 0))(xo, jnp.arange(4.0))

    out = vmap2(outer, state_in_axes={0: [acc]}, state_out_axes={0: [acc]})(jnp.arange(3.0))
    assert_tree_close(out, jnp.outer(jnp.arange(3.0), jnp.arange(4.0)))
    assert acc.value.shape == (3,)
    np.testing.assert_array_equal(acc.value, [0.0, 1.0, 2.0])


def test_nested_per_lane_states_on_both_levels():
    grid = sm.State(jnp.zeros((3, 4)), name="grid")  # outer axis 0, inner axis 0 of each row

    def inner(xo, xi):
        grid.value = grid.value + xo * xi
        return grid.value

    def outer(xo):
        return vmap2(inner, in_axes=(None, 0), state_in_axes={0: [grid]}, state_out_axes={0: [grid]})(
            xo, jnp.arange(4.0)
        )

    out = vmap2(outer, state_in_axes={0: [grid]}, state_out_axes={0: [grid]})(jnp.arange(3.0))
    want = jnp.outer(jnp.arange(3.0), jnp.arange(4.0))
    assert_tree_close(out, want)
    assert_tree_close(grid.value, want)


def test_nested_axis_names_reach_both_levels():
    def inner(x):
        return jax.lax.psum(x, "i") + jax.lax.psum(x, "o")

    f = vmap2(vmap2(inner, axis_name="i"), axis_name="o")
    want = jax.vmap(jax.vmap(inner, axis_name="i"), axis_name="o")
    x = jnp.arange(6.0).reshape(2, 3)
    assert_tree_close(f(x), want(x))


# -- one abstract trace per signature; cache invalidation ----------------------------------------------------


def _counted():
    s = sm.State(jnp.zeros(3), name="s")
    calls = []

    def step(x):
        calls.append(1)
        s.value = s.value + x.astype(s.value.dtype)
        return x * 2

    return s, calls, step


def test_one_trace_per_signature():
    s, calls, step = _counted()
    f = vmap2(step, state_in_axes={0: [s]}, state_out_axes={0: [s]})
    f(jnp.ones(3))
    assert len(calls) == 1
    for _ in range(3):
        f(jnp.ones(3))
    assert len(calls) == 1
    assert f.cache_info == {"hits": 3, "misses": 1, "size": 1}
    f(jnp.ones(3, jnp.int32))  # another dtype: one more trace
    assert len(calls) == 2
    np.testing.assert_array_equal(s.value, 5 * np.ones(3))
    f.clear_cache()
    f(jnp.ones(3))
    assert len(calls) == 3


def test_one_trace_under_jit():
    s, calls, step = _counted()
    f = sm.transform.jit(vmap2(step, state_in_axes={0: [s]}, state_out_axes={0: [s]}))
    for _ in range(3):
        out = f(jnp.arange(3.0))
    assert len(calls) == 1
    np.testing.assert_array_equal(out, [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(s.value, [0.0, 3.0, 6.0])


def test_static_args_are_part_of_the_signature():
    calls = []

    def step(x, k):
        calls.append(k)
        return x * k

    f = vmap2(step, in_axes=(0, None), static_argnums=1)
    assert_tree_close(f(jnp.ones(2), 3), jnp.full(2, 3.0))
    f(jnp.ones(2), 3)
    assert_tree_close(f(jnp.ones(2), 4), jnp.full(2, 4.0))
    assert calls == [3, 4]
    g = vmap2(lambda x, *, k: x * k, static_argnames="k")
    assert_tree_close(g(jnp.ones(2), k=5), jnp.full(2, 5.0))


def test_state_shape_change_retraces():
    b = sm.State(jnp.ones(2), name="b")  # broadcast
    s = sm.State(jnp.zeros((3, 2)), name="s")  # per lane
    calls = []

    def step(x):
        calls.append(1)
        s.value = s.value + x * b.value.sum()
        return s.value.sum()

    f = vmap2(step, state_in_axes={0: [s]}, state_out_axes={0: [s]})
    np.testing.assert_array_equal(f(jnp.ones(3)), 4 * np.ones(3))
    b.value = jnp.ones(4)
    np.testing.assert_array_equal(f(jnp.ones(3)), 12 * np.ones(3))
    assert len(calls) == 2
    s.value = jnp.zeros((3, 5))
    np.testing.assert_array_equal(f(jnp.ones(3)), 20 * np.ones(3))
    assert s.value.shape == (3, 5)
    assert len(calls) == 3
    f(jnp.ones(3))
    assert len(calls) == 3


def test_state_shape_change_under_jit():
    b = sm.State(jnp.ones(2), name="b")
    f = sm.transform.jit(vmap2(lambda x: x * b.value.sum()))
    np.testing.assert_array_equal(f(jnp.ones(3)), 2 * np.ones(3))
    b.value = jnp.ones(5)
    np.testing.assert_array_equal(f(jnp.ones(3)), 5 * np.ones(3))


def _make_module():
    class M(sm.nn.Module):
        def __init__(self):
            self.h = sm.ShortTermState(jnp.zeros(3))
            self.w = sm.ParamState(jnp.array(1.0))  # broadcast

    return M()


def test_plan_does_not_keep_states_alive_and_rebuilds_when_they_die():
    holder = {"m": _make_module()}

    def step(x):
        m = holder["m"]
        m.h.value = m.h.value + m.w.value * x
        return m.h.value

    f = vmap2(step, state_in_axes={0: PathContains("h")}, state_out_axes={0: PathContains("h")})
    f(jnp.ones(3))
    ref = weakref.ref(holder["m"].h)
    del holder["m"]
    gc.collect()
    assert ref() is None, "the plan cache keeps dead states alive"
    holder["m"] = _make_module()
    out = f(jnp.arange(3.0))
    np.testing.assert_array_equal(out, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(holder["m"].h.value, [0.0, 1.0, 2.0])


# -- errors: message, and every state untouched afterwards ---------------------------------------------------


def _states_for_errors():
    s = sm.State(jnp.zeros(3), name="s")
    r = sm.random.RandomState(11)
    return s, r


def _err_step(s, r):
    def step(x):
        s.value = s.value + x + r.uniform(size=())
        return s.value

    return step


# Each case: vmap2 options ("S" stands for the list [s] of the test's state; "_kwargs" are call keywords),
# positional call arguments, the exception type and a regex its message must match.
_STATE = object()  # placeholder for the state itself, passed as an argument

_ERROR_CASES = {
    "arg axis out of range": (
        dict(in_axes=2, state_in_axes={0: "S"}, state_out_axes={0: "S"}),
        (jnp.ones(3),),
        sm.BatchAxisError,
        r"vmap2: argument 0 is mapped on axis 2 but has only 1 dimension\(s\)(?s:.*)expected:(?s:.*)fix:",
    ),
    "negative arg axis out of range": (
        dict(in_axes=-3, state_in_axes={0: "S"}, state_out_axes={0: "S"}),
        (jnp.ones((3, 1)),),
        sm.BatchAxisError,
        r"argument 0 is mapped on axis -3",
    ),
    "state axis out of range": (
        dict(state_in_axes={2: "S"}, state_out_axes={2: "S"}),
        (jnp.ones(3),),
        sm.BatchAxisError,
        r"state 's' \(State, created at test_mapping\.py:\d+\) is selected by state_in_axes on axis 2 "
        r"but its value",
    ),
    "non-array mapped leaf": (
        dict(in_axes=(0, 0), state_in_axes={0: "S"}, state_out_axes={0: "S"}),
        (jnp.ones(3), 2.0),
        sm.BatchAxisError,
        # Eager calls go through jax.jit, which turns a Python scalar into a 0-d array first.
        r"vmap2: argument 1 is mapped on axis 0 but (is not an array(?s:.*)found: +float 2\.0|has only 0 dimension)",
    ),
    "non-array mapped leaf in a kwarg": (
        dict(state_in_axes={0: "S"}, state_out_axes={0: "S"}, _kwargs={"k": 1.0}),
        (jnp.ones(3),),
        sm.BatchAxisError,
        r"keyword argument\['k'\] is mapped on axis 0 but (is not an array|has only 0 dimension)",
    ),
    "conflicting in/out axes": (
        dict(state_in_axes={0: "S"}, state_out_axes={1: "S"}),
        (jnp.ones(3),),
        sm.BatchAxisError,
        r"state 's' .*is mapped on input axis 0 but state_out_axes maps it to axis 1(?s:.*)"
        r"fix: +declare it on axis 0",
    ),
    "batched write to a state declared None": (
        dict(state_out_axes={None: "S"}),
        (jnp.ones(3),),
        sm.BatchAxisError,
        r"state 's' .*declared unbatched \(axis None\) in state_out_axes but is written with a value "
        r"that differs",
    ),
    "read-modify-write declared only on output": (
        dict(state_out_axes={0: "S"}),
        (jnp.ones(3),),
        sm.BatchAxisError,
        r"state 's' .*is read and then written per lane(?s:.*)fix: +add it to state_in_axes",
    ),
    "undeclared batched write": (
        dict(),
        (jnp.ones(3),),
        sm.BatchAxisError,
        r"state 's' .*was written with a value batched on the mapped axis",
    ),
    "inconsistent sizes between args": (
        dict(in_axes=(0, 0), state_in_axes={0: "S"}, state_out_axes={0: "S"}),
        (jnp.ones(3), jnp.ones(4)),
        sm.BatchAxisError,
        r"the mapped inputs disagree on the size of the mapped axis(?s:.*)"
        r"found: +argument 0: 3; argument 1: 4",
    ),
    "inconsistent sizes between arg and state": (
        dict(state_in_axes={0: "S"}, state_out_axes={0: "S"}),
        (jnp.ones(4),),
        sm.BatchAxisError,
        r"disagree(?s:.*)found: +argument 0: 4; state 's' \(State, created at test_mapping\.py:\d+\): 3",
    ),
    "axis_size conflict": (
        dict(axis_size=4, state_in_axes={0: "S"}, state_out_axes={0: "S"}),
        (jnp.ones(3),),
        sm.BatchAxisError,
        r"vmap2: axis_size=4 conflicts with the mapped size(?s:.*)expected: +axis_size equal to .*\(3\)",
    ),
    "undeterminable size": (
        dict(in_axes=None),
        (jnp.ones(3),),
        sm.BatchAxisError,
        r"vmap2: cannot determine the size of the mapped axis(?s:.*)fix: +pass axis_size=N",
    ),
    "in_axes tuple length mismatch": (
        dict(in_axes=(0, None, 0), state_in_axes={0: "S"}, state_out_axes={0: "S"}),
        (jnp.ones(3),),
        sm.BatchAxisError,
        r"in_axes has 3 entries but the call has 1 mapped positional argument",
    ),
    "in_axes not a prefix": (
        dict(in_axes=({"b": 0},), state_in_axes={0: "S"}, state_out_axes={0: "S"}),
        ({"a": jnp.ones(3)},),
        sm.BatchAxisError,
        r"in_axes entry for argument 0 is not a pytree prefix",
    ),
    "out_axes None for a batched output": (
        dict(out_axes=None, state_in_axes={0: "S"}, state_out_axes={0: "S"}),
        (jnp.ones(3),),
        sm.BatchAxisError,
        r"output result depends on the mapped axis but out_axes is None for it",
    ),
    "out_axes not a prefix": (
        dict(out_axes=(0, 0), state_in_axes={0: "S"}, state_out_axes={0: "S"}),
        (jnp.ones(3),),
        sm.BatchAxisError,
        r"out_axes is not a pytree prefix of the function's result",
    ),
    "state passed as an argument": (
        dict(),
        (_STATE,),
        sm.StateArgumentError,
        r"vmap2: argument args\[0\] is state 's' \(State, created at test_mapping\.py:\d+\)"
        r"(?s:.*)closed over",
    ),
    "non-JAX argument": (  # mapped; with in_axes None it would be static (tests/test_static_leaves.py)
        dict(in_axes=(0, 0)),
        (jnp.ones(3), "text"),
        TypeError,
        r"is not a valid JAX type",
    ),
}


@pytest.mark.parametrize("case", list(_ERROR_CASES))
def test_errors_name_the_culprit_and_leave_states_untouched(case):
    options, args, exc, pattern = _ERROR_CASES[case]
    s, r = _states_for_errors()
    options = {k: ({a: [s] for a in v} if isinstance(v, dict) and "S" in v.values() else v) for k, v in options.items()}
    kwargs = options.pop("_kwargs", {})
    args = tuple(s if a is _STATE else a for a in args)
    f = vmap2(_err_step(s, r), **options)
    snap = snapshot([s, r])
    with pytest.raises(exc, match=pattern):
        f(*args, **kwargs)
    assert_clean([s, r], snap)
    assert f.cache_info["size"] == 0  # a failed call caches nothing
    with pytest.raises(exc, match=pattern):
        f(*args, **kwargs)
    assert_clean([s, r], snap)
    f2 = vmap2(_err_step(s, r), state_in_axes={0: [s]}, state_out_axes={0: [s]})
    f2(jnp.ones(3))  # the states are still usable
    assert s.value.shape == (3,)


class _UserError(Exception):
    pass


def test_user_exception_propagates_with_its_type_and_a_note():
    s = sm.State(jnp.zeros(3), name="s")
    n = sm.State(jnp.array(0), name="n")

    def failing_body(x):
        s.value = s.value + x
        n.value = n.value + 1
        sm.random.normal(size=())
        raise _UserError("from the body")

    snap = snapshot([s, n])
    with pytest.raises(_UserError, match="from the body") as info:
        vmap2(failing_body, state_in_axes={0: [s]}, state_out_axes={0: [s]})(jnp.ones(3))
    assert any("vmap2" in note and "failing_body" in note for note in info.value.__notes__)
    assert_clean([s, n], snap)


def test_user_exception_from_a_jax_error_in_the_body():
    s = sm.State(jnp.zeros(3), name="s")

    def body(x):
        s.value = s.value + x
        return jnp.ones(2) + jnp.ones(3)  # a shape error of the user's own

    snap = snapshot([s])
    with pytest.raises((TypeError, ValueError)) as info:
        SM(body, state_in_axes={0: [s]}, state_out_axes={0: [s]}, name="mymap")(jnp.ones(3))
    assert not isinstance(info.value, sm.StatemapError)
    assert any("mymap" in note and "body" in note for note in info.value.__notes__)
    assert_clean([s], snap)


def test_failure_in_a_nested_map_leaves_states_untouched():
    outer_s = sm.State(jnp.zeros(3), name="outer_s")
    inner_s = sm.State(jnp.zeros(()), name="inner_s")

    def inner(x):
        inner_s.value = inner_s.value + x  # undeclared per-lane write: raises in the inner map
        return x

    def outer(x):
        outer_s.value = outer_s.value + 1
        return vmap2(inner)(jnp.ones(2) * x)

    snap = snapshot([outer_s, inner_s])
    with pytest.raises(sm.BatchAxisError, match="'inner_s'"):
        vmap2(outer, state_in_axes={0: [outer_s]}, state_out_axes={0: [outer_s]})(jnp.ones(3))
    assert_clean([outer_s, inner_s], snap)


def test_failure_inside_jit_of_vmap2_leaves_states_untouched():
    c = sm.State(jnp.zeros(()), name="c")

    def step(x):
        c.value = c.value + x
        return x

    snap = snapshot([c])
    with pytest.raises(sm.BatchAxisError, match="'c'"):
        sm.transform.jit(vmap2(step))(jnp.ones(3))
    assert_clean([c], snap)


# -- hypothesis: axes, shapes and sizes ----------------------------------------------------------------------

_OK_ERRORS = (sm.StatemapError,)


@given(
    x_shape=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    x_axis=st.one_of(st.none(), st.integers(-4, 3)),
    s_shape=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    s_axis=st.one_of(st.none(), st.integers(-4, 3)),
    out_axis=st.integers(-1, 1),
    axis_size=st.one_of(st.none(), st.integers(1, 3)),
    aligned=st.booleans(),
)
def test_property_matches_jax_or_names_the_culprit(x_shape, x_axis, s_shape, s_axis, out_axis, axis_size, aligned):
    if aligned:  # most draws would fail on sizes alone: make the mapped axes agree half of the time
        size = axis_size or 2
        for shape, axis in ((x_shape, x_axis), (s_shape, s_axis)):
            if axis is not None and -len(shape) <= axis < len(shape):
                shape[axis] = size
    x = jnp.arange(float(np.prod(x_shape))).reshape(x_shape)
    s = sm.State(jnp.ones(s_shape) * 0.5, name="prop_state")

    def step(x):
        s.value = s.value * 2 + x.sum()
        return x * 3

    kwargs = {"in_axes": x_axis, "out_axes": out_axis, "axis_size": axis_size}
    if s_axis is not None:
        kwargs.update(state_in_axes={s_axis: [s]}, state_out_axes={s_axis: [s]})
    f = vmap2(step, **kwargs)

    def pure(x, sv):
        new = sv * 2 + x.sum()
        return x * 3, new

    s0 = s.value
    try:
        want, s1 = jax.vmap(
            pure,
            in_axes=(x_axis, s_axis),
            out_axes=(out_axis, s_axis if s_axis is not None else 0),
            axis_size=axis_size,
        )(x, s0)
    except Exception:
        want = None
    snap = snapshot([s])
    try:
        got = f(x)
    except _OK_ERRORS as e:
        event(f"refused: {type(e).__name__}")
        msg = str(e)
        assert "expected:" in msg and "fix:" in msg, msg
        assert "'prop_state'" in msg or "argument 0" in msg or "axis_size" in msg or "output" in msg, msg
        assert_clean([s], snap)
        if s_axis is None and want is not None:
            # a broadcast state written per lane is the one legitimate reason to refuse what jax.vmap does
            assert "'prop_state'" in msg, msg
        return
    assert want is not None, "statemap accepted what jax.vmap rejects"
    event("matched jax.vmap")
    assert_tree_close(got, want)
    if s_axis is not None:
        assert_tree_close(s.value, s1)


@given(
    n_args=st.integers(1, 3),
    axes=st.lists(st.one_of(st.none(), st.integers(-2, 2)), min_size=0, max_size=4),
    sizes=st.lists(st.integers(1, 3), min_size=3, max_size=3),
)
def test_property_in_axes_tuples(n_args, axes, sizes):
    args = tuple(jnp.ones((sizes[i], 2)) * (i + 1) for i in range(n_args))
    in_axes = tuple(axes)
    f = vmap2(lambda *a: sum(jnp.sum(v) for v in a), in_axes=in_axes)
    try:
        want = jax.vmap(lambda *a: sum(jnp.sum(v) for v in a), in_axes=in_axes)(*args)
    except Exception:
        want = None
    try:
        got = f(*args)
    except _OK_ERRORS as e:
        assert "expected:" in str(e), str(e)
        assert want is None, f"statemap refused what jax.vmap accepts: {e}"
        return
    assert want is not None
    assert_tree_close(got, want)


# -- explain -------------------------------------------------------------------------------------------------


def test_explain_reports_every_state_and_does_not_mutate():
    w = sm.ParamState(jnp.ones((4, 3)), name="w")
    h = sm.ShortTermState(jnp.zeros((4, 3)), name="h")
    b = sm.ParamState(jnp.ones(3), name="b")
    n = sm.State(jnp.array(0), name="n")

    def step(x):
        h.value = h.value + w.value * x + b.value + sm.random.normal(size=())
        n.value = n.value + 1
        return h.value.sum()

    f = vmap2(step, state_in_axes={0: [w, h]}, state_out_axes={0: [h]})
    snap = snapshot([w, h, b, n])
    plan = f.explain(jnp.ones(4))
    assert_clean([w, h, b, n], snap)
    assert isinstance(plan, sm.transform.MappingPlan)
    assert plan.cache == "miss" and plan.batch_size == 4 and plan.name == "vmap2"
    assert f.cache_info["size"] == 0  # explaining stores nothing
    rows = {r["state"]: r for r in plan.rows}
    assert set(rows) == {"'h'", "'w'", "'b'", "'n'", "'random.DEFAULT'"}
    assert (rows["'h'"]["read"], rows["'h'"]["written"], rows["'h'"]["in_axis"], rows["'h'"]["out_axis"]) == (
        True,
        True,
        0,
        0,
    )
    assert rows["'h'"]["how"] == "declared" and rows["'h'"]["shape"] == "(4, 3)"
    assert (rows["'w'"]["in_axis"], rows["'w'"]["out_axis"], rows["'w'"]["how"]) == (0, "-", "read-only")
    assert (rows["'b'"]["in_axis"], rows["'b'"]["how"]) == ("broadcast", "read-only")
    assert (rows["'n'"]["in_axis"], rows["'n'"]["out_axis"], rows["'n'"]["how"]) == (
        "broadcast",
        None,
        "inferred",
    )
    assert (rows["'random.DEFAULT'"]["in_axis"], rows["'random.DEFAULT'"]["how"]) == ("split-rng", "rng")
    assert rows["'h'"]["type"] == "ShortTermState" and rows["'h'"]["created"].startswith("test_mapping.py:")
    text = str(plan)
    lines = text.splitlines()
    assert lines[0] == "vmap2: batch size 4, plan cache miss"
    assert lines[1].split() == [
        "state",
        "type",
        "created",
        "shape",
        "read",
        "written",
        "in_axis",
        "out_axis",
        "how",
    ]
    assert len(lines) == 3 + 5
    (h_line,) = [line for line in lines if line.strip().startswith("'h'")]
    assert h_line.split()[-5:] == ["True", "True", "0", "0", "declared"]
    assert repr(plan) == str(plan)  # the table, also at a prompt


def test_explain_miss_then_hit():
    s, calls, step = _counted()
    f = vmap2(step, state_in_axes={0: [s]}, state_out_axes={0: [s]})
    assert f.explain(jnp.ones(3)).cache == "miss"
    assert f.explain(jnp.ones(3)).cache == "miss"
    f(jnp.ones(3))
    n = len(calls)
    plan = f.explain(jnp.ones(3))
    assert plan.cache == "hit"
    assert "plan cache hit" in str(plan)
    assert len(calls) == n  # a hit traces nothing
    assert f.explain(jnp.ones(3, jnp.int32)).cache == "miss"  # another signature


def test_explain_of_a_function_without_states():
    plan = vmap2(lambda x: x * 2).explain(jnp.ones(2))
    assert plan.rows == []
    assert "(no states touched)" in str(plan)


def test_explain_raises_like_a_call():
    c = sm.State(jnp.zeros(()), name="c")

    def step(x):
        c.value = c.value + x
        return x

    snap = snapshot([c])
    with pytest.raises(sm.BatchAxisError, match="'c'"):
        vmap2(step).explain(jnp.ones(3))
    assert_clean([c], snap)


# -- composition with other transforms -----------------------------------------------------------------------


def test_jit_of_vmap2_parity():
    w, h, b, n = _model()

    def step(x):
        h.value = jnp.tanh(h.value * w.value + x + b.value)
        n.value = n.value + 1
        return h.value.sum(), x * 2

    f = sm.transform.jit(vmap2(step, state_in_axes={0: [w], 1: [h]}, state_out_axes={1: [h]}))
    ref = jax.jit(jax.vmap(_pure_lane, in_axes=(0, 1, None, None, 0), out_axes=((0, 0), (1, None))))
    hs, ns = h.value, n.value
    for k in range(2):
        xs = jnp.ones((3, 2)) * k
        out = f(xs)
        want, (hs, ns) = ref(w.value, hs, b.value, ns, xs)
        assert_tree_close(out, want)
        assert_tree_close(h.value, hs)
        assert int(n.value) == int(ns)


def test_vmap2_inside_jit():
    s, calls, step = _counted()

    @sm.transform.jit
    def run(x):
        return vmap2(step, state_in_axes={0: [s]}, state_out_axes={0: [s]})(x) + 1

    run(jnp.arange(3.0))
    out = run(jnp.arange(3.0))
    np.testing.assert_array_equal(out, [1.0, 3.0, 5.0])
    np.testing.assert_array_equal(s.value, [0.0, 2.0, 4.0])
    assert len(calls) == 1


def test_grad_inside_vmap2():
    w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")
    xs = jnp.arange(6.0).reshape(3, 2)

    def per_example(x):
        return sm.transform.grad(lambda x: jnp.sum(w.value * x) ** 2, grad_states=w)(x)

    want = jax.vmap(lambda x: jax.grad(lambda w: jnp.sum(w * x) ** 2)(w.value))(xs)
    assert_tree_close(vmap2(per_example)(xs), want)
    np.testing.assert_array_equal(w.value, [1.0, 2.0])


def test_vmap2_inside_grad():
    w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")
    n = sm.State(jnp.array(0.0), name="n")
    xs = jnp.arange(6.0).reshape(3, 2)

    def loss(xs):
        n.value = n.value + 1
        return vmap2(lambda x: jnp.sum(w.value * x) ** 2)(xs).sum()

    g = sm.transform.grad(loss, grad_states=w)(xs)
    want = jax.grad(lambda w: jax.vmap(lambda x: jnp.sum(w * x) ** 2)(xs).sum())(w.value)
    assert_tree_close(g, want)
    assert float(n.value) == 1.0


def _require(name):
    if not hasattr(sm.transform, name):
        pytest.skip(f"sm.transform.{name} does not exist yet (control-flow transforms are another issue)")
    return getattr(sm.transform, name)


def test_scan_of_vmap2():
    scan = _require("scan")
    s, calls, step = _counted()
    mapped = vmap2(step, state_in_axes={0: [s]}, state_out_axes={0: [s]})

    def body(c, x):
        y = mapped(x)
        return c + y.sum(), y

    carry, ys = scan(body, 0.0, jnp.ones((4, 3)))

    def pure(carry_s, x):
        c, sv = carry_s
        return (c + (x * 2).sum(), sv + x), x * 2

    (c_ref, s_ref), ys_ref = jax.lax.scan(pure, (0.0, jnp.zeros(3)), jnp.ones((4, 3)))
    assert_tree_close(carry, c_ref)
    assert_tree_close(ys, ys_ref)
    assert_tree_close(s.value, s_ref)
    assert len(calls) == 1


def test_vmap2_of_scan():
    scan = _require("scan")
    s = sm.State(jnp.zeros(3), name="s")

    def lane(xs):
        def body(c, x):
            s.value = s.value + x
            return c + x, s.value

        return scan(body, 0.0, xs)

    xs = jnp.arange(6.0).reshape(3, 2)
    carry, ys = vmap2(lane, state_in_axes={0: [s]}, state_out_axes={0: [s]})(xs)
    assert_tree_close(carry, xs.sum(1))
    assert_tree_close(ys, jnp.cumsum(xs, axis=1))
    assert_tree_close(s.value, xs.sum(1))


def test_vmap2_of_cond():
    cond = _require("cond")
    s = sm.State(jnp.zeros(3), name="s")

    def lane(x):
        def yes():
            s.value = s.value + x

        return cond(x > 0, yes, lambda: None)

    vmap2(lane, state_in_axes={0: [s]}, state_out_axes={0: [s]})(jnp.array([1.0, -1.0, 2.0]))
    np.testing.assert_array_equal(s.value, [1.0, 0.0, 2.0])


def test_vmap2_of_while_loop():
    while_loop = _require("while_loop")
    s = sm.State(jnp.zeros(3), name="s")

    def lane(n):
        def body(i):
            s.value = s.value + 1.0
            return i + 1

        return while_loop(lambda i: i < n, body, 0)

    out = vmap2(lane, state_in_axes={0: [s]}, state_out_axes={0: [s]})(jnp.array([1, 3, 2]))
    np.testing.assert_array_equal(out, [1, 3, 2])
    np.testing.assert_array_equal(s.value, [1.0, 3.0, 2.0])


def test_vmap2_of_remat_under_grad():
    checkpoint = _require("checkpoint")
    w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")

    def loss(xs):
        return vmap2(checkpoint(lambda x: jnp.sin(jnp.sum(w.value * x))))(xs).sum()

    xs = jnp.arange(6.0).reshape(3, 2)
    g = sm.transform.grad(loss, grad_states=w)(xs)
    want = jax.grad(lambda w: jax.vmap(lambda x: jnp.sin(jnp.sum(w * x)))(xs).sum())(w.value)
    assert_tree_close(g, want, rtol=1e-5)


# -- threads -------------------------------------------------------------------------------------------------


def test_threads_with_disjoint_states():
    results, errors = {}, []

    def worker(k):
        try:
            s = sm.State(jnp.zeros(4), name=f"s{k}")
            b = sm.State(jnp.full(4, float(k)), name=f"b{k}")

            def step(x):
                s.value = s.value + x * b.value.sum()
                return s.value * k

            f = vmap2(step, state_in_axes={0: [s]}, state_out_axes={0: [s]})
            for _ in range(25):
                out = f(jnp.arange(4.0))
            results[k] = (out, s.value)
        except BaseException as e:  # noqa: B036 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in (1, 2, 3):
        out, sv = results[k]
        want_s = 25 * jnp.arange(4.0) * 4 * k
        assert_tree_close(sv, want_s)
        assert_tree_close(out, want_s * k)


def test_explain_shows_its_table_at_a_prompt():
    h = sm.ShortTermState(jnp.zeros(3), name="h")
    plan = vmap2(lambda x: h.__setattr__("value", h.value + x), state_in_axes={0: h}).explain(jnp.ones(3))
    assert repr(plan) == str(plan)
    assert repr(plan).splitlines()[0].startswith("vmap2: batch size 3")
