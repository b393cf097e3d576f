"""Cached transforms give the results of the code they replace (issue 9): re-created states under every transform.

The reference is the eager Python code run op by op (or `jax.vmap`/`jax.grad` of the pure equivalent): a
transform object that was called before the model's states were re-created must use the new states.
"""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm
from statemap._state import generation

T = sm.transform


class _Model(sm.nn.Module):
    def __init__(self, n=3):
        self.n = n
        self.w = sm.ParamState(jnp.ones(n))
        self.init_state()

    def init_state(self):
        self.h = sm.ShortTermState(jnp.zeros(self.n))

    def update(self, x):
        self.h.value = self.h.value + self.w.value * x
        return self.h.value.sum()


def _lane(m):
    return T.vmap2(m.update, state_in_axes={0: sm.ShortTermState}, state_out_axes={0: sm.ShortTermState})


# Each runner calls one transform of `m.update` (built once, before the re-creation) on x = ones(3).
_RUNNERS = {
    "jit": lambda m: T.jit(m.update),
    "jit_static": lambda m: (lambda f: lambda x: f(x, 1.0))(T.jit(lambda x, k: m.update(x * k), static_argnums=1)),
    "checkpoint": lambda m: T.checkpoint(m.update),
    "for_loop": lambda m: lambda x: T.for_loop(m.update, x[None])[-1],
    "scan": lambda m: lambda x: T.scan(lambda c, xi: (c, m.update(xi)), 0.0, x[None])[1][-1],
    "while_loop": lambda m: lambda x: T.while_loop(lambda i: i < 1, lambda i: (m.update(x), i + 1)[1], 0),
    "cond": lambda m: lambda x: T.cond(True, m.update, lambda x: 0.0, x),
    "cond_traced": lambda m: T.jit(lambda x: T.cond(x.sum() > 0, m.update, lambda x: 0.0, x)),
    "switch": lambda m: T.jit(lambda x: T.switch(0, [m.update, lambda x: 0.0], x)),
    "grad_return_value": lambda m: lambda x: T.grad(m.update, argnums=0, return_value=True)(x)[1],
    "map": lambda m: lambda x: T.map(lambda xi: m.update(xi * jnp.ones(3)), x).sum(),
    "vmap2": lambda m: (lambda f: lambda x: f(jnp.broadcast_to(x[:, None], (3, 3))).sum())(
        T.vmap2(
            lambda x: m.update(x),
            in_axes=0,
            state_in_axes={0: sm.ShortTermState},
            state_out_axes={0: sm.ShortTermState},
        )  # fmt: skip
    ),
    "pmap2": lambda m: (lambda f: lambda x: f(x[None])[0])(
        T.pmap2(m.update, state_in_axes={0: sm.ShortTermState}, state_out_axes={0: sm.ShortTermState})
    ),
}


@pytest.mark.parametrize("kind", sorted(_RUNNERS))
def test_re_created_states_are_used_after_init_state(kind):
    m = _Model()
    lanes = {"vmap2": 3, "pmap2": 1}.get(kind)  # mapped transforms: a per-lane state
    if lanes:
        m.h.value = jnp.zeros((lanes, 3))
    f = _RUNNERS[kind](m)
    x = jnp.ones(3)
    f(x)
    f(x)
    old = m.h
    m.init_state()
    if lanes:
        m.h.value = jnp.zeros((lanes, 3))
    first_old = np.asarray(old.value)
    f(x)
    # The new state saw exactly one call (from zeros), the old one kept its value.
    if kind == "map":  # three sequential calls over x = ones(3), each adding 1 to every entry
        np.testing.assert_allclose(m.h.value, 3 * jnp.ones(3))
    else:
        np.testing.assert_allclose(m.h.value, jnp.ones_like(m.h.value))
    np.testing.assert_array_equal(old.value, first_old)


def test_a_second_vmap2_new_states_is_used_by_a_mapping_called_before():
    class Cell(sm.nn.Module):
        def __init__(self):
            self.h = sm.HiddenState(jnp.zeros(2))

        def init_state(self):
            self.h = sm.HiddenState(jnp.zeros(2))

        def update(self, x):
            self.h.value = self.h.value + x
            return self.h.value

    cell = Cell()
    step = T.vmap2(cell.update, state_in_axes={0: sm.HiddenState}, state_out_axes={0: sm.HiddenState})
    T.vmap2_new_states(cell, axis_size=4)
    step(jnp.ones((4, 2)))
    step(jnp.ones((4, 2)))
    assert float(cell.h.value.sum()) == 16.0
    T.vmap2_new_states(cell, axis_size=4)  # a new round: fresh per-lane states
    step(jnp.ones((4, 2)))
    np.testing.assert_allclose(cell.h.value, jnp.ones((4, 2)))


def test_states_created_inside_a_finished_map_then_replaced_never_leak_tracers():
    m = _Model(n=1)
    m.h.value = jnp.zeros(())

    def upd(x):
        m.h.value = m.h.value + x
        return m.h.value

    np.testing.assert_allclose(T.for_loop(upd, jnp.ones(3)), [1.0, 2.0, 3.0])

    def fresh(x):
        m.init_state()
        return x * 2

    np.testing.assert_allclose(T.map(fresh, jnp.arange(4.0), batch_size=2), [0.0, 2.0, 4.0, 6.0])
    m.init_state()
    m.h.value = jnp.zeros(())
    np.testing.assert_allclose(T.for_loop(upd, jnp.ones(3)), [1.0, 2.0, 3.0])
    assert float(m.h.value) == 3.0


def test_rebinding_a_global_state_is_seen_by_a_held_jit():
    holder = {"s": sm.ShortTermState(jnp.zeros(()))}

    @T.jit
    def inc():
        holder["s"].value = holder["s"].value + 1
        return holder["s"].value

    inc()
    holder["s"] = sm.ShortTermState(jnp.array(10.0))  # created outside any trace: a new generation
    assert float(inc()) == 11.0


def test_unrelated_new_states_keep_the_compiled_code():
    m = _Model()
    traces = []

    def step(x):
        traces.append(1)
        return m.update(x)

    f = T.jit(step)
    lanes = _Model()
    lanes.h.value = jnp.zeros((3, 3))
    v = _lane(lanes)
    v(jnp.ones((3, 3)))
    f(jnp.ones(3))
    jitted = f._dispatcher._known.jitted
    compiled = jitted._cache_size()
    misses = v.cache_info["misses"]
    before = generation()
    sm.ShortTermState(jnp.zeros(()))  # unrelated: a new generation, the same states for `f` and `v`
    assert generation() > before
    f(jnp.ones(3))
    v(jnp.ones((3, 3)))
    assert len(traces) == 2  # one abstract re-trace to check the states ...
    assert f._dispatcher._known.jitted is jitted  # ... and the compiled code kept
    assert jitted._cache_size() == compiled
    assert v.cache_info["misses"] == misses
    f(jnp.ones(3))
    assert len(traces) == 2  # warm again


def test_states_created_inside_a_trace_do_not_start_a_generation():
    @T.jit
    def f(x):
        tmp = sm.ShortTermState(x)
        tmp.value = tmp.value * 2
        return tmp.value

    f(jnp.ones(2))
    g = generation()
    f(jnp.ones(3))  # a new signature traces (and creates a local state) without a new generation
    assert generation() == g


def test_a_dead_replaced_state_is_dropped_and_the_new_one_used():
    m = _Model()
    f = T.jit(m.update)
    f(jnp.ones(3))
    m.init_state()
    gc.collect()
    assert float(f(jnp.ones(3))) == 3.0
    np.testing.assert_allclose(m.h.value, jnp.ones(3))


@pytest.mark.parametrize("kind", ["jit", "vmap2"])
def test_a_state_rebound_by_another_thread_during_the_first_trace_is_seen_later(kind):
    import threading

    m = sm.nn.Module()
    m.w = sm.State(jnp.array(1.0), name="w1")
    keep = m.w  # the old state stays alive
    traced, rebound = threading.Event(), threading.Event()
    first = [True]

    def f(x):
        v = m.w.value
        if first[0]:
            first[0] = False
            traced.set()
            rebound.wait(5)  # another thread re-binds m.w while this trace runs
        return x + v

    def other():
        traced.wait(5)
        m.w = sm.State(jnp.array(100.0), name="w2")
        rebound.set()

    g = T.jit(f) if kind == "jit" else T.vmap2(f)
    x = jnp.array(1.0) if kind == "jit" else jnp.ones(2)
    t = threading.Thread(target=other)
    t.start()
    g(x)
    t.join()
    for _ in range(2):
        np.testing.assert_allclose(g(x), 101.0 * jnp.ones_like(x))
    assert keep.name == "w1"


@pytest.mark.parametrize("kind", ["jit", "vmap2"])
def test_every_compiled_state_shape_is_checked_after_a_new_generation(kind):
    m = sm.nn.Module()
    m.w = sm.State(jnp.array(1.0), name="w1")
    keep = m.w
    s = sm.State(jnp.zeros(2), name="s")

    def f(x):
        if s.value.shape[0] == 2:  # only this state shape touches m.w
            return x + m.w.value + s.value.sum()
        return x + s.value.sum()

    g = T.jit(f) if kind == "jit" else T.vmap2(f)
    x = jnp.array(1.0) if kind == "jit" else jnp.ones(1)
    g(x), g(x)
    s.value = jnp.zeros(3)
    g(x), g(x)  # the same arguments, another state shape: a second compiled program
    m.w = sm.State(jnp.array(100.0), name="w2")
    g(x)
    s.value = jnp.zeros(2)
    np.testing.assert_allclose(g(x), 101.0 * jnp.ones_like(x))
    assert keep.name == "w1"


def _compile_counter():
    events = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    return events


def test_an_unrelated_new_state_keeps_every_transforms_compiled_code():
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    s = sm.State(jnp.zeros(2), name="s")

    def body(x):
        s.value = s.value + x
        return x * 2

    mesh = Mesh(np.array(jax.devices()), ("d",))
    transforms = {
        "jit": sm.transform.jit(body),
        "vmap2": sm.transform.vmap2(lambda x: body(x), state_in_axes={0: s}, state_out_axes={0: s}),
        "vmap2 in_axes None": sm.transform.vmap2(
            lambda x, c: body(x * c), in_axes=(0, None), state_in_axes={0: s}, state_out_axes={0: s}
        ),
        "shard_map": sm.transform.shard_map(
            body, mesh, P("d"), P("d"), state_in_specs={P("d"): s}, state_out_specs={P("d"): s}
        ),
    }
    x, z = jnp.ones(2), jnp.zeros(1)
    compiles = _compile_counter()
    for name, f in transforms.items():
        call = (lambda f=f: f(x, 2.0)) if "None" in name else (lambda f=f: f(x))
        for _ in range(3):
            call()
        before = len(compiles)
        for _ in range(3):
            sm.State(z)  # a new generation of states, none of them touched by the function
            call()
        assert len(compiles) == before, name


def test_in_shardings_survive_a_recreated_state():
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()), ("d",))
    rows, replicated = NamedSharding(mesh, P("d")), NamedSharding(mesh, P())

    class M(sm.nn.Module):
        def __init__(self):
            self.h = sm.State(jnp.zeros(()))

    m = M()

    def step(x):
        m.h.value = m.h.value + 1.0
        return x * 2.0

    f = sm.transform.jit(step, in_shardings=(rows,))
    x = jax.device_put(jnp.ones((4, 2)), replicated)
    assert f(x).sharding.spec == P("d") and f(x).sharding.spec == P("d")
    m.h = sm.State(jnp.zeros(()))  # re-created (init_state): the function now touches another state
    assert f(x).sharding.spec == P("d") and float(m.h.value) == 1.0
