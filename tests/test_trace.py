"""Tests for statemap/_trace.py: StateTrace, the thread-local trace stack and catch_new_states."""

import threading

import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm
from statemap import _trace
from statemap.util.filter import OfType, WithTag


def test_first_touch_order_and_roles():
    a, b, c = sm.State(1.0, name="a"), sm.State(2.0, name="b"), sm.State(3.0, name="c")
    with sm.StateTrace() as t:
        c.value = 0.0  # written before any read: not a read
        _ = b.value
        a.value = a.value + c.value
        _ = c.value
    assert [s.name for s in t.states] == ["c", "b", "a"]
    assert t.written == [True, False, True]
    assert t.read == [False, True, True]
    assert t.values == [0.0, 2.0, 1.0]  # the frame's view at the end
    assert t.index(a) == 2 and t.index(sm.State(0.0)) is None


def test_writes_stay_in_the_frame_until_committed():
    a, b = sm.State(1.0), sm.State(2.0)
    with sm.StateTrace() as t:
        a.value = 10.0
        a.value = 20.0
        b.value = b.value + 1
        assert (a.value, b.value) == (20.0, 3.0)  # the frame sees its own writes
    assert (a.value, b.value) == (1.0, 2.0)  # the states themselves never changed
    t.commit()
    assert (a.value, b.value) == (20.0, 3.0)


def test_other_threads_never_see_a_frame_s_values():
    s = sm.State(1.0, name="s")
    inside, release, seen = threading.Event(), threading.Event(), []

    def reader():
        inside.wait()
        seen.append(s.value)
        release.set()

    thread = threading.Thread(target=reader)
    thread.start()
    with sm.StateTrace(lambda state, v: v * 100):
        s.value = s.value + 1
        inside.set()
        release.wait(10)
    thread.join()
    assert seen == [1.0] and s.value == 1.0


def test_hook_replaces_the_value_at_first_touch():
    s = sm.State(jnp.ones(2), name="s")
    seen = []

    def hook(state, value):
        seen.append(state)
        return value * 0 + 5

    with sm.StateTrace(hook, name="demo") as t:
        np.testing.assert_array_equal(s.value, 5 * np.ones(2))
        np.testing.assert_array_equal(s.value, 5 * np.ones(2))
    assert seen == [s] and t.name == "demo"
    np.testing.assert_array_equal(s.value, np.ones(2))


def test_nested_traces_each_record():
    a, b = sm.State(1.0, name="a"), sm.State(2.0, name="b")
    with sm.StateTrace() as outer:
        a.value = a.value + 1
        with sm.StateTrace() as inner:
            _ = b.value
        assert _trace.trace_level() == 1
    assert outer.states == [a, b]
    assert inner.states == [b]
    assert outer.written == [True, False]


def test_trace_level():
    assert _trace.trace_level() == 0
    with sm.StateTrace(), sm.StateTrace():
        assert _trace.trace_level() == 2
    assert _trace.trace_level() == 0


def test_exit_out_of_order_is_a_mapping_runtime_error():
    t1, t2 = sm.StateTrace(), sm.StateTrace()
    t1.__enter__()
    t2.__enter__()
    try:
        with pytest.raises(sm.MappingRuntimeError, match="out of order"):
            t1.__exit__(None, None, None)
    finally:
        t2.__exit__(None, None, None)
        t1.__exit__(None, None, None)
    assert _trace.trace_level() == 0


def test_stack_is_popped_when_the_body_raises():
    with pytest.raises(ZeroDivisionError):
        with sm.StateTrace():
            1 / 0  # noqa: B018
    assert _trace.trace_level() == 0


# New-state catchers (catch_new_states).


def test_catch_new_states_collects_in_creation_order():
    before = sm.State(0.0)
    with sm.catch_new_states() as caught:
        a = sm.State(1.0, name="a")
        b = sm.ParamState(2.0, name="b")
        _ = before.value
    assert caught.get_states() == [a, b]
    assert caught.get_state_values() == [1.0, 2.0]
    assert a in caught and before not in caught
    assert len(caught) == 2
    assert before.tag is None


def test_catch_new_states_nested_and_tag():
    with sm.catch_new_states("outer") as outer:
        a = sm.State(1.0)
        with sm.catch_new_states("inner") as inner:
            b = sm.State(2.0)
    assert outer.states == [a, b] and inner.states == [b]
    assert a.tag == {"outer"} and b.tag == {"outer", "inner"}


@pytest.mark.parametrize("exclude", [sm.ParamState, OfType(sm.ParamState), "skip", WithTag("skip")])
def test_catch_new_states_exclude_filter(exclude):
    with sm.catch_new_states(state_to_exclude=exclude) as caught:
        kept = sm.ShortTermState(0.0)
        sm.ParamState(0.0, tag="skip")
    assert caught.states == [kept]


def test_catch_new_states_removed_on_error():
    with pytest.raises(RuntimeError):
        with sm.catch_new_states() as caught:
            raise RuntimeError("boom")
    sm.State(0.0)
    assert len(caught) == 0
    assert _trace.CONTEXT.catchers == []


# Threads.


def test_trace_stack_is_thread_local():
    # Thread B reads its own state while thread A is inside a trace: A's trace must not see it.
    a_state, b_state = sm.State(1.0, name="a"), sm.State(2.0, name="b")
    entered, b_done = threading.Event(), threading.Event()
    records = {}
    errors = []

    def thread_a():
        try:
            with sm.StateTrace() as t:
                entered.set()
                assert b_done.wait(10)
                a_state.value = a_state.value + 1
            records["a"] = t.states
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def thread_b():
        try:
            assert entered.wait(10)
            assert _trace.trace_level() == 0
            with sm.StateTrace() as t:
                b_state.value = b_state.value + 1
            records["b"] = t.states
        except BaseException as e:  # pragma: no cover
            errors.append(e)
        finally:
            b_done.set()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(20)
    assert not errors, errors
    assert records == {"a": [a_state], "b": [b_state]}


def test_catchers_are_thread_local():
    with sm.catch_new_states() as caught:
        th = threading.Thread(target=lambda: sm.State(0.0))
        th.start()
        th.join(10)
    assert len(caught) == 0


def test_concurrent_jit_in_two_threads():
    # Two threads, each jitting fresh functions (so each call traces) over their own states, many times.
    n_iter = 15
    barrier = threading.Barrier(2)
    errors = []
    results = {}

    def worker(tag):
        try:
            own = [sm.State(jnp.zeros(()), name=f"{tag}{i}") for i in range(3)]
            barrier.wait(10)
            for it in range(n_iter):

                def body(x, it=it):
                    for s in own:
                        s.value = s.value + x
                    return sum(s.value for s in own) + it

                f = sm.transform.jit(body)
                f(jnp.ones(()))
                states = f.stateful.get_states(jnp.ones(()))
                assert states == tuple(own), (tag, [s.name for s in states])
                sf = sm.transform.StatefulFunction(body)
                assert sf.get_write_states(jnp.ones(())) == tuple(own)
            results[tag] = [float(s.value) for s in own]
        except BaseException as e:
            errors.append((tag, e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in "ab"]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    assert results == {"a": [n_iter] * 3, "b": [n_iter] * 3}


def test_active_counts_the_traces_of_every_thread():
    assert _trace.ACTIVE[0] == 0
    seen = []

    @sm.transform.jit
    def f(x):
        seen.append(_trace.ACTIVE[0])
        return x + 1

    f(jnp.ones(2))
    with pytest.raises(ZeroDivisionError):  # a trace that raises is counted out too
        sm.transform.jit(lambda x: 1 / 0)(jnp.ones(2))
    assert seen and min(seen) >= 1 and _trace.ACTIVE[0] == 0
