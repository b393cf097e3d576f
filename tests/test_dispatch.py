"""Tests for statemap/transform/_dispatch.py: the one per-call protocol of jit and the mapping transforms."""

import gc
import threading
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm
from statemap.transform._arguments import ArgSpec
from statemap.transform._dispatch import Dispatcher, NewStates, Program


class _Model(sm.nn.Module):
    def __init__(self):
        self.w = sm.ParamState(jnp.array(1.0))
        self.h = sm.ShortTermState(jnp.zeros(3))


def _jit_step(holder):
    @sm.transform.jit
    def step(x):
        m = holder["m"]
        m.h.value = m.h.value + m.w.value * x
        return m.h.value.sum()

    return step


def _vmap_step(holder):
    def step(x):
        m = holder["m"]
        m.h.value = m.h.value + m.w.value * x
        return m.h.value

    return sm.transform.vmap2(step, state_in_axes={0: sm.ShortTermState}, state_out_axes={0: sm.ShortTermState})


@pytest.mark.parametrize("make", [_jit_step, _vmap_step], ids=["jit", "vmap2"])
def test_no_transform_keeps_a_dead_model_alive(make):
    holder = {"m": _Model()}
    step = make(holder)
    step(jnp.ones(3))
    step(jnp.ones(3))
    refs = [weakref.ref(holder["m"].w), weakref.ref(holder["m"].h)]
    del holder["m"]
    gc.collect()
    assert all(r() is None for r in refs), "a transform keeps a dead model's states alive"
    holder["m"] = _Model()  # a new model with states of the same shapes: the known list is compacted
    out = step(2 * jnp.ones(3))
    np.testing.assert_allclose(holder["m"].h.value, 2 * np.ones(3))
    assert np.asarray(out).sum() == pytest.approx(6.0)


def test_compaction_never_reuses_code_compiled_for_old_positions():
    a, b = sm.State(jnp.zeros(2), name="a"), sm.State(jnp.zeros(2), name="b")
    holder = {"first": a, "second": b}

    @sm.transform.jit
    def f(x):
        holder["second"].value = holder["second"].value + x
        return holder["first"].value

    f(jnp.ones(2))  # known: [second (b), first (a)]
    c = sm.State(jnp.full(2, 7.0), name="c")
    holder["first"], holder["second"] = c, a  # b dies below; a is now written, c read
    del b
    gc.collect()
    out = f(jnp.ones(2))
    np.testing.assert_array_equal(out, [7.0, 7.0])
    np.testing.assert_array_equal(a.value, [1.0, 1.0])
    np.testing.assert_array_equal(c.value, [7.0, 7.0])


def test_threads_sharing_one_wrapper_race_on_first_calls():
    n_threads = 8
    states = [sm.State(jnp.zeros(()), name=f"s{i}") for i in range(n_threads)]
    barrier = threading.Barrier(n_threads)
    errors, results = [], {}

    @sm.transform.jit
    def f(i, x):
        states[i].value = states[i].value + x
        return states[i].value

    def work(i):
        try:
            barrier.wait()
            for _ in range(5):
                results[i] = f(i, jnp.ones(()))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    # Static `i`: every thread traces its own signature, each with new states, at the same time.
    f = sm.transform.jit(f.origin_fun, static_argnums=0)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [float(s.value) for s in states] == [5.0] * n_threads
    assert all(float(results[i]) == 5.0 for i in range(n_threads))


@pytest.mark.parametrize("kind", ["jit", "vmap2"])
def test_threads_with_their_own_wrappers_share_one_model(kind):
    """A shared ParamState read by 8 threads, each tracing its own wrapper with a thread switch in the body."""
    w = sm.ParamState(jnp.arange(3.0), name="w")
    n_threads = 8
    barrier = threading.Barrier(n_threads)
    errors, outs = [], []

    def body(x):
        barrier.wait(10)  # every thread is inside its trace (holding w's tracer in its frame) at once
        return (w.value * x).sum()

    def work():
        try:
            wrapper = sm.transform.jit(body) if kind == "jit" else sm.transform.vmap2(body, in_axes=0)
            x = jnp.ones(3) if kind == "jit" else jnp.ones((2, 3))
            outs.append(np.asarray(wrapper(x)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(np.allclose(o, 3.0) for o in outs) and len(outs) == n_threads
    assert isinstance(w.value, jax.Array) and not isinstance(w.value, jax.core.Tracer)


def test_threads_writing_one_state_last_write_back_wins():
    counter = sm.State(jnp.zeros(()), name="counter")

    @sm.transform.jit
    def bump(x):
        counter.value = counter.value + x
        return counter.value

    bump(jnp.ones(()))
    barrier = threading.Barrier(4)

    def work():
        barrier.wait()
        for _ in range(50):
            bump(jnp.ones(()))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each call reads, computes and writes back atomically per state; concurrent calls may overwrite each other's
    # increments (last write-back wins), but the value is always one of the written ones and never a tracer.
    assert 50.0 <= float(counter.value) <= 201.0


def test_dispatcher_with_a_hand_made_program():
    s = sm.State(jnp.zeros(2), name="s")
    built = []

    def resolve(sig, fresh):
        def run(leaves, values):
            return [values[0] + leaves[0]], leaves[0] * 2

        built.append(fresh)
        return Program([s], [0], run, jax.jit(run)), [s]

    d = Dispatcher(resolve, ArgSpec("demo"), fast=True)
    out = d((jnp.ones(2),), {})
    out = d((jnp.ones(2),), {})
    np.testing.assert_array_equal(out, [2.0, 2.0])
    np.testing.assert_array_equal(s.value, [2.0, 2.0])
    # The first call resolved twice (learning its states, then with them known); the second hit JAX's cache.
    assert built == [False, False] and d.calls == 2
    with sm.StateTrace():
        d((jnp.ones(2),), {})  # inside a trace: the traced path
    assert built == [False, False, False]


def test_debug_infs_raise_a_floating_point_error_naming_the_function():
    s = sm.ShortTermState(jnp.ones(2), name="s")

    def reciprocal(x):
        s.value = s.value + 1.0
        return 1.0 / x

    f = sm.transform.jit(sm.transform.vmap2(reciprocal))
    with jax.debug_infs(True), pytest.raises(FloatingPointError, match=r"\(inf\) encountered in jit\(.*reciprocal\)"):
        f(jnp.array([0.0, 1.0]))
    np.testing.assert_array_equal(s.value, jnp.ones(2))


def test_user_keywords_named_like_the_fast_paths_parameters():
    s = sm.State(jnp.zeros(3), name="s")

    @sm.transform.jit
    def f(x, values=1.0, args=0.0, kwargs=0.0, flat=0.0):
        s.value = s.value + x * values + args + kwargs + flat
        return s.value

    for _ in range(2):  # the first call traces, the second takes the compiled fast path
        s.value = jnp.zeros(3)
        np.testing.assert_array_equal(f(jnp.ones(3), values=2.0, args=1.0, kwargs=1.0, flat=1.0), np.full(3, 5.0))
    g = sm.transform.vmap2(lambda x, values: x * values)
    for _ in range(3):
        np.testing.assert_array_equal(g(jnp.ones(3), values=jnp.arange(3.0)), np.arange(3.0))


def test_a_user_keyword_named_self_reaches_the_function():
    s = sm.State(jnp.zeros(3), name="s")

    def f(x, self=0.0):
        s.value = s.value + x + self
        return s.value

    np.testing.assert_array_equal(sm.transform.vmap2(lambda x, self: x + self)(jnp.ones(3), self=jnp.ones(3)), 2.0)
    assert float(sm.transform.grad(lambda x, self: jnp.sum(x * self))(jnp.ones(3), self=2.0)[0]) == 2.0
    np.testing.assert_array_equal(sm.transform.remat(f)(jnp.ones(3), self=1.0), 2.0)
    np.testing.assert_array_equal(sm.transform.jit(f)(jnp.ones(3), self=1.0), 4.0)


def test_a_stale_known_list_is_never_traced_with_another_lists_positions():
    a, b = sm.State(jnp.zeros(()), name="a"), sm.State(jnp.ones(()), name="b")

    @sm.transform.jit
    def f(x):
        a.value = a.value + x.sum()
        if x.ndim == 2:  # another signature touches one more state
            b.value = b.value + 1.0
        return a.value

    f(jnp.ones(2))
    f(jnp.ones(2))
    old = f._dispatcher._known
    assert len(old.refs) == 1
    f(jnp.ones((2, 2)))  # grows the list: a new list, a new jax.jit
    new = f._dispatcher._known
    assert len(new.refs) == 2 and new.token is not old.token
    with pytest.raises(NewStates):  # a call that read the old list and traces a new signature reads again
        old.jitted(a.value, jnp.ones(3))
    np.testing.assert_array_equal(f(jnp.ones(3)), 2.0 + 2.0 + 4.0 + 3.0)
    assert float(b.value) == 2.0


@pytest.mark.parametrize("outer", ["jit", "grad", "vmap"])
@pytest.mark.parametrize("kind", ["jit", "vmap2", "jit two states", "jit pytree state"])
def test_a_plain_jax_transform_around_a_warm_stateful_call_leaves_no_tracer(outer, kind):
    s = sm.State(jnp.zeros(3), name="s")
    t = sm.State({"a": jnp.zeros(3)}, name="t")

    def body(x):
        if "pytree" in kind:
            t.value = {"a": t.value["a"] + x}
        else:
            s.value = s.value + x
            if "two" in kind:
                t.value = {"a": t.value["a"] + 1.0}
        return jnp.sum(x * 2.0)

    if kind == "vmap2":
        f = sm.transform.vmap2(body, in_axes=None, axis_size=2)
    else:
        f = sm.transform.jit(body)
    f(jnp.ones(3))
    f(jnp.ones(3))  # warm: the fast path
    before = (np.asarray(s.value), np.asarray(t.value["a"]))
    wrap = {"jit": jax.jit, "grad": jax.grad, "vmap": lambda g: jax.vmap(g)}[outer]
    xs = jnp.ones((2, 3)) if outer == "vmap" else jnp.ones(3)
    with pytest.raises(sm.TraceContextError, match=r"state '[st]'.*JAX tracer(?s:.*)statemap.transform.jit"):
        wrap(lambda x: f(x))(xs)
    np.testing.assert_array_equal(s.value, before[0])
    np.testing.assert_array_equal(t.value["a"], before[1])
