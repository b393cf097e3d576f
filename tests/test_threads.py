"""Thread safety: a model shared by many threads, wrappers shared or per thread, with first-call races forced.

Each thread traces while the others trace the same states (a `threading.Barrier` lines them up before their
first calls, and a thread switch inside the body, at trace time and at run time, interleaves them). The
contract (ARCHITECTURE.md, "State values and trace frames"): no exception, every result equal to the pure
reference, and no state left holding a tracer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm

T = sm.transform
N_THREADS = 8
N_CALLS = 6


class _Model(sm.nn.Module):
    def __init__(self) -> None:
        self.w = sm.ParamState(jnp.arange(12.0).reshape(4, 3) / 10)
        self.b = sm.ParamState(jnp.array([0.5, -1.0, 2.0]))


def _switch(*_: Any) -> None:
    time.sleep(0)  # give the other threads a chance to run here


def _predict(model: _Model, x: Any) -> Any:
    _switch()  # at trace time: another thread traces the same states now
    xw = x @ model.w.value
    y = jnp.tanh(xw + jnp.broadcast_to(model.b.value, xw.shape))
    jax.debug.callback(_switch, y)  # at run time
    return y


def _reference(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.tanh(x @ w + b)


def _no_tracer(*states: sm.State) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for s in states for leaf in jax.tree_util.tree_leaves(s.value))


def _run_threads(work: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as e:  # reported by the caller's assertion
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_shared_model_served_by_eight_threads() -> None:
    """Own jit wrappers, one shared jit wrapper and one shared vmap2 wrapper, all racing on first calls."""
    model = _Model()
    w, b = np.asarray(model.w.value), np.asarray(model.b.value)
    counters = [sm.ShortTermState(jnp.array(0), name=f"calls{i}") for i in range(N_THREADS)]
    shared_jit = T.jit(lambda x: _predict(model, x))
    shared_vmap = T.vmap2(lambda x: _predict(model, x), in_axes=0)
    barrier = threading.Barrier(N_THREADS)
    wrong: list[tuple[str, int]] = []

    def work(i: int) -> None:
        counter = counters[i]

        def own(x: Any) -> Any:
            counter.value = counter.value + 1  # a per-thread state written next to the shared ones read
            return _predict(model, x)

        own_jit = T.jit(own)
        rng = np.random.default_rng(i)
        barrier.wait(30)  # every thread makes its first calls of the shared wrappers at once
        for k in range(N_CALLS):
            x = rng.normal(size=(5, 4)).astype(np.float32)
            for label, fn in (("own jit", own_jit), ("shared jit", shared_jit), ("shared vmap2", shared_vmap)):
                if not np.allclose(np.asarray(fn(x)), _reference(w, b, x), atol=1e-5):
                    wrong.append((label, k))
            fresh = T.jit(lambda x: _predict(model, x))  # a new wrapper: traces again, racing the others
            if not np.allclose(np.asarray(fresh(x[0])), _reference(w, b, x[0]), atol=1e-5):
                wrong.append(("fresh jit", k))

    errors = _run_threads(work)
    assert errors == []
    assert wrong == []
    assert [int(c.value) for c in counters] == [N_CALLS] * N_THREADS
    assert _no_tracer(model.w, model.b, *counters)
    np.testing.assert_array_equal(model.w.value, w)  # only read: unchanged
    np.testing.assert_array_equal(model.b.value, b)


@pytest.mark.parametrize("kind", ["jit", "vmap2"])
def test_threads_sharing_one_wrapper_and_model_first_call_race(kind: str) -> None:
    """All threads' very first call is of one shared, never-called wrapper (the known-state list race)."""
    model = _Model()
    w, b = np.asarray(model.w.value), np.asarray(model.b.value)
    if kind == "jit":
        fn = T.jit(lambda x: _predict(model, x))
    else:
        fn = T.vmap2(lambda x: _predict(model, x), in_axes=0)
    barrier = threading.Barrier(N_THREADS)
    outs: dict[int, np.ndarray] = {}
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)

    def work(i: int) -> None:
        barrier.wait(30)
        outs[i] = np.asarray(fn(x))

    errors = _run_threads(work)
    assert errors == []
    assert len(outs) == N_THREADS
    for out in outs.values():
        np.testing.assert_allclose(out, _reference(w, b, x), atol=1e-5)
    assert _no_tracer(model.w, model.b)


def test_threads_tracing_inside_a_shared_loop_body() -> None:
    """for_loop/scan/cond bodies reading a shared model while other threads trace them (barrier in the body)."""
    model = _Model()
    w, b = np.asarray(model.w.value), np.asarray(model.b.value)
    barrier = threading.Barrier(N_THREADS)
    outs: dict[int, list[np.ndarray]] = {}
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)

    def work(i: int) -> None:
        total = sm.State(jnp.zeros(3), name=f"total{i}")

        def body(row: Any) -> Any:
            y = _predict(model, row)
            total.value = total.value + y
            return y

        barrier.wait(30)
        ys = T.for_loop(body, x)
        _, zs = T.scan(lambda c, row: (c, body(row)), 0.0, x)
        c = T.cond(jnp.asarray(i % 2 == 0), body, lambda row: _predict(model, row), x[0])
        outs[i] = [np.asarray(ys), np.asarray(zs), np.asarray(c), np.asarray(total.value)]

    errors = _run_threads(work)
    assert errors == []
    ref = _reference(w, b, x)
    for i, (ys, zs, c, total) in outs.items():
        np.testing.assert_allclose(ys, ref, atol=1e-5)
        np.testing.assert_allclose(zs, ref, atol=1e-5)
        np.testing.assert_allclose(c, ref[0], atol=1e-5)
        expected = 2 * ref.sum(0) + (ref[0] if i % 2 == 0 else 0)
        np.testing.assert_allclose(total, expected, atol=1e-4)
    assert len(outs) == N_THREADS
    assert _no_tracer(model.w, model.b)


def test_a_reader_never_sees_half_of_another_threads_write_back():
    import time

    class Yielding(sm.State):  # widens the window between two stores of one write-back
        def __setattr__(self, name, value):
            object.__setattr__(self, name, value)
            if name == "_value":
                time.sleep(0)

    states = [Yielding(jnp.zeros(()), name=f"s{i}") for i in range(6)]

    @sm.transform.jit
    def writer():
        for s in states:
            s.value = s.value + 1.0

    @sm.transform.jit
    def spread():
        v = jnp.stack([s.value for s in states])
        return v.max() - v.min()

    writer(), spread()
    writer(), spread()  # both warm: the fast path
    torn = []

    def write():
        for _ in range(400):
            writer()

    def read():
        for _ in range(400):
            if float(spread()) != 0.0:
                torn.append(1)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not torn
