"""Tests for statemap/transform/_vmap.py: `vmap2`, `pmap2` and the declaration-based legacy `vmap`.

pmap2 runs here on the 2 CPU devices conftest.py configures; tests/test_pmap_devices.py runs it on 8.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _mapping_util import assert_clean, assert_tree_close, snapshot
from hypothesis import given
from hypothesis import strategies as st

import statemap as sm

vmap2 = sm.transform.vmap2
pmap2 = sm.transform.pmap2


# -- parity sweep with jax.vmap, stateless functions ---------------------------------------------------------


def _f_two(a, b):
    return {"s": a * b, "t": a.sum() + b.sum()}


def _f_tree(d, z):
    return d["a"] * z + d["b"], [d["a"].sum(), z]


def _f_one(a):
    return a * 2.0, a.sum()


_X23 = jnp.arange(6.0).reshape(2, 3)
_X32 = jnp.arange(6.0).reshape(3, 2) - 1
_TREE = {"a": jnp.arange(6.0).reshape(3, 2), "b": jnp.array([0.5, 1.5])}

_PARITY = {
    "int 0": (_f_two, (_X23, _X23 + 1), 0, 0),
    "int 1": (_f_two, (_X23, _X23 * 2), 1, 0),
    "negative": (_f_two, (_X23, _X23), -1, -1),
    "tuple": (_f_two, (_X23, _X32), (1, 0), 0),
    "tuple with None": (_f_two, (_X23, jnp.array([1.0, 2.0, 3.0])), (0, None), 0),
    "list": (_f_two, (_X23, _X32), [1, 0], 0),
    "out tuple": (_f_one, (_X32,), 0, (1, 0)),
    "out dict prefix": (_f_two, (_X23, _X23), 0, {"s": 1, "t": 0}),
    "out negative": (_f_one, (_X32,), 1, (-1, 0)),
    "dict prefix": (_f_tree, (_TREE, jnp.ones((2, 3))), ({"a": 0, "b": None}, 1), 0),
    "dict prefix, out list": (_f_tree, (_TREE, jnp.ones((2, 3))), ({"a": 0, "b": None}, 1), (1, [0, -1])),
    "whole tree on 0": (lambda d: d["a"] * d["b"], ({"a": jnp.ones((3, 2)), "b": jnp.ones((3, 2))},), 0, 0),
}


@pytest.mark.parametrize("case", list(_PARITY))
def test_parity_with_jax_vmap(case):
    fn, args, in_axes, out_axes = _PARITY[case]
    want = jax.vmap(fn, in_axes=in_axes, out_axes=out_axes)(*args)
    assert_tree_close(vmap2(fn, in_axes=in_axes, out_axes=out_axes)(*args), want)
    assert_tree_close(vmap2(fn, in_axes=in_axes, out_axes=out_axes)(*args), want)  # a fresh wrapper
    f = vmap2(fn, in_axes=in_axes, out_axes=out_axes)
    f(*args)
    assert_tree_close(f(*args), want)  # warm path


def test_out_axes_none_for_unbatched_outputs():
    def fn(a, c):
        return a * c, c + 1.0, jax.lax.psum(a, "i")

    args = (jnp.arange(3.0), jnp.array(2.0))
    want = jax.vmap(fn, in_axes=(0, None), out_axes=(0, None, None), axis_name="i")(*args)
    got = vmap2(fn, in_axes=(0, None), out_axes=(0, None, None), axis_name="i")(*args)
    assert_tree_close(got, want)
    assert got[1].shape == () and got[2].shape == ()


def test_kwargs_are_mapped_on_axis_0():
    def fn(a, *, k, j=None):
        return a * k + (0.0 if j is None else j["v"])

    kw = {"k": jnp.arange(3.0), "j": {"v": jnp.ones(3)}}
    want = jax.vmap(fn, in_axes=None)(2.0, **kw)
    assert_tree_close(vmap2(fn, in_axes=None)(2.0, **kw), want)
    k = jnp.arange(3.0)
    assert_tree_close(vmap2(fn, in_axes=(None,))(2.0, k=k), jax.vmap(fn, in_axes=(None,))(2.0, k=k))


def test_collectives():
    def fn(a):
        return (
            jax.lax.psum(a, "i"),
            jax.lax.pmean(a, "i"),
            jax.lax.axis_index("i"),
            jax.lax.pmax(a, "i"),
            jax.lax.all_gather(a, "i"),
        )

    x = jnp.arange(8.0).reshape(4, 2)
    assert_tree_close(vmap2(fn, axis_name="i")(x), jax.vmap(fn, axis_name="i")(x))


def test_nested_vmap2_parity():
    def inner(a, b):
        return a * b + jax.lax.psum(b, "i") + jax.lax.axis_index("o").astype(b.dtype)

    a, b = jnp.arange(3.0), jnp.arange(4.0)
    f = vmap2(vmap2(inner, in_axes=(None, 0), axis_name="i"), in_axes=(0, None), axis_name="o")
    want = jax.vmap(jax.vmap(inner, in_axes=(None, 0), axis_name="i"), in_axes=(0, None), axis_name="o")(a, b)
    assert_tree_close(f(a, b), want)
    g = vmap2(vmap2(lambda m: m.sum(), in_axes=1), in_axes=0)  # a matrix of (row, column) lanes
    x = jnp.arange(24.0).reshape(2, 3, 4)
    assert_tree_close(g(x), jax.vmap(jax.vmap(lambda m: m.sum(), in_axes=1), in_axes=0)(x))


def test_axis_size_with_no_mapped_inputs():
    assert_tree_close(
        vmap2(lambda: jnp.arange(2.0), in_axes=(), axis_size=3)(),
        jax.vmap(lambda: jnp.arange(2.0), in_axes=(), axis_size=3)(),
    )
    assert_tree_close(
        vmap2(lambda c: c * 2, in_axes=None, axis_size=4)(jnp.ones(2)),
        jax.vmap(lambda c: c * 2, in_axes=None, axis_size=4)(jnp.ones(2)),
    )
    assert_tree_close(vmap2(lambda: jax.lax.axis_index("i"), in_axes=(), axis_size=3, axis_name="i")(), jnp.arange(3))


def test_python_scalar_unmapped_args_and_numpy_inputs():
    fn = lambda a, c, n: a * c + n  # noqa: E731
    args = (np.arange(3, dtype=np.float32), 2.0, 1)
    assert_tree_close(vmap2(fn, in_axes=(0, None, None))(*args), jax.vmap(fn, in_axes=(0, None, None))(*args))


def test_returns_none_and_empty_containers():
    assert vmap2(lambda x: None)(jnp.ones(3)) is None
    out = vmap2(lambda x: (x, {}, []))(jnp.ones(3))
    assert out[1] == {} and out[2] == []


@given(
    lane_rank=st.integers(0, 2),
    in_axis=st.integers(-3, 3),
    out_axis=st.one_of(st.none(), st.integers(-3, 3)),
)
def test_property_stateless_axes(lane_rank, in_axis, out_axis):
    shape = (3,) + (2,) * lane_rank
    x = jnp.arange(float(np.prod(shape))).reshape(shape)
    fn = lambda a: a * 2  # noqa: E731
    try:
        want = jax.vmap(fn, in_axes=in_axis, out_axes=out_axis)(x)
    except Exception:
        want = None
    try:
        got = vmap2(fn, in_axes=in_axis, out_axes=out_axis)(x)
    except sm.StatemapError as e:
        assert want is None, f"statemap refused what jax.vmap accepts: {e}"
        assert "argument 0" in str(e) or "output" in str(e), str(e)
        return
    assert want is not None
    assert_tree_close(got, want)


def test_out_axes_out_of_range_is_a_batch_axis_error_naming_the_output():
    s = sm.State(jnp.zeros(3), name="s")

    def fn(x):
        s.value = s.value + x
        return x * 2

    snap = snapshot([s])
    with pytest.raises(sm.BatchAxisError, match=r"vmap2: output .*out_axes(?s:.*)fix:"):
        vmap2(fn, out_axes=3, state_in_axes={0: [s]}, state_out_axes={0: [s]})(jnp.ones(3))
    assert_clean([s], snap)


# -- stateful: loop oracle -----------------------------------------------------------------------------------


def test_stateful_loop_oracle():
    h = sm.HiddenState(jnp.arange(8.0).reshape(4, 2) / 8, name="h")
    w = sm.ParamState(jnp.array([[1.0, -1.0], [0.5, 2.0]]), name="w")

    def step(x):
        h.value = jnp.tanh(h.value @ w.value + x)
        return (h.value**2).sum()

    xs = jnp.arange(8.0).reshape(4, 2) / 3
    h0 = h.value
    out = vmap2(step, state_in_axes={0: sm.HiddenState}, state_out_axes={0: sm.HiddenState})(xs)

    def lane(i):
        hi = jnp.tanh(h0[i] @ w.value + xs[i])
        return (hi**2).sum(), hi

    lanes = [lane(i) for i in range(4)]
    assert_tree_close(out, jnp.stack([o for o, _ in lanes]), rtol=1e-5)
    assert_tree_close(h.value, jnp.stack([hi for _, hi in lanes]), rtol=1e-5)


def test_decorator_forms_and_options():
    s = sm.State(jnp.zeros(3), name="s")

    @vmap2(state_in_axes={0: [s]}, state_out_axes={0: [s]}, axis_name="i")
    def step(x):
        s.value = s.value + x - jax.lax.pmean(x, "i")
        return s.value

    assert isinstance(step, sm.transform.StatefulMapping)
    assert step.name == "vmap2" and step.axis_name == "i" and step.mapping_fn is jax.vmap
    np.testing.assert_allclose(step(jnp.arange(3.0)), [-1.0, 0.0, 1.0])
    spmd = vmap2(lambda x: x * 2, spmd_axis_name="d")
    assert isinstance(spmd.mapping_fn, functools.partial) and spmd.mapping_fn.keywords == {"spmd_axis_name": "d"}
    np.testing.assert_array_equal(spmd(jnp.ones(2)), [2.0, 2.0])


@pytest.mark.parametrize("front_end", [vmap2, sm.transform.vmap, sm.transform.vmap_new_states])
def test_jax_vmap_options_are_keywords_and_an_unknown_one_raises_as_python_does(front_end):
    import inspect

    params = inspect.signature(front_end).parameters
    assert params["options"].kind is inspect.Parameter.VAR_KEYWORD
    name = front_end.__name__
    with pytest.raises(TypeError, match=rf"^{name}\(\) got an unexpected keyword argument 'in_axis'$"):
        front_end(lambda x: x, in_axis=1)
    with pytest.raises(TypeError, match=rf"^{name}\(\) got an unexpected keyword argument 'in_axis'$"):
        front_end(in_axis=1)  # refused when the decorator is made, before any function is given
    mapped = front_end(lambda x: x * 2.0, in_axes=1, out_axes=0, axis_name="i", axis_size=3)
    assert_tree_close(mapped(jnp.ones((2, 3))), jnp.full((3, 2), 2.0))


# -- pmap2 on the local devices ------------------------------------------------------------------------------


def _ndev():
    n = jax.local_device_count()
    if n < 2:
        pytest.skip("needs 2 CPU devices (conftest sets XLA_FLAGS before importing jax)")
    return n


def test_pmap2_parity_and_states_per_device():
    n = _ndev()
    total = sm.State(jnp.arange(float(n)), name="total")
    scale = sm.ParamState(jnp.array(2.0), name="scale")
    calls = []

    def step(x):
        calls.append(1)
        total.value = total.value + jax.lax.psum(x, "d") * scale.value
        return total.value * x, jax.lax.axis_index("d")

    f = pmap2(step, axis_name="d", state_in_axes={0: [total]}, state_out_axes={0: [total]})
    pure = jax.pmap(
        lambda t, x: (
            (t + jax.lax.psum(x, "d") * 2.0) * x,
            jax.lax.axis_index("d"),
            t + jax.lax.psum(x, "d") * 2.0,
        ),
        axis_name="d",
    )
    ts = total.value
    for k in range(3):
        xs = jnp.arange(float(n)) + k
        out = f(xs)
        a, b, ts = pure(ts, xs)
        assert_tree_close(out, (a, b))
        assert_tree_close(total.value, ts)
    assert len(calls) == 1
    assert f.name == "pmap2" and f.mapping_fn is jax.pmap


def test_pmap2_static_broadcasted_argnums_and_donate_argnums():
    n = _ndev()
    calls = []

    def fn(k, x, y):
        calls.append(k)
        return x * k + y

    f = pmap2(fn, static_broadcasted_argnums=0, donate_argnums=2)
    x = jnp.arange(float(n))
    assert_tree_close(f(3, x, jnp.ones(n)), x * 3 + 1)
    assert_tree_close(f(3, x, jnp.ones(n)), x * 3 + 1)
    assert_tree_close(f(5, x, jnp.ones(n)), x * 5 + 1)
    assert calls == [3, 5]


def test_pmap2_static_and_donated_conflict_is_an_error():
    n = _ndev()
    f = pmap2(lambda k, x: x * k, static_broadcasted_argnums=0, donate_argnums=0)
    with pytest.raises(ValueError, match=r"pmap2: argument 0 is both static and donated"):
        f(2, jnp.ones(n))


def test_pmap2_decorator_and_errors_say_pmap2():
    n = _ndev()
    c = sm.State(jnp.zeros(()), name="c")

    @pmap2(axis_name="d")
    def step(x):
        c.value = c.value + x
        return x

    snap = snapshot([c])
    with pytest.raises(sm.BatchAxisError, match=r"^pmap2: state 'c'") as info:
        step(jnp.ones(n))
    assert "vmap2" not in str(info.value) and "vmap:" not in str(info.value)
    assert_clean([c], snap)


def test_pmap2_more_lanes_than_devices_fails_cleanly():
    n = _ndev()
    s = sm.State(jnp.zeros(n + 1), name="s")

    def step(x):
        s.value = s.value + x
        return x

    snap = snapshot([s])
    with pytest.raises(ValueError):
        pmap2(step, state_in_axes={0: [s]}, state_out_axes={0: [s]})(jnp.ones(n + 1))
    assert_clean([s], snap)


def test_pmap2_random_differs_per_device():
    n = _ndev()
    out = pmap2(lambda x: x + sm.random.normal(size=()))(jnp.zeros(n))
    assert len(set(np.asarray(out).tolist())) == n


# -- legacy vmap ---------------------------------------------------------------------------------------------


def test_legacy_in_states_by_instance():
    h = sm.ShortTermState(jnp.zeros(3), name="h")

    def step(x):
        h.value = h.value + x
        return h.value * 2

    for spec in ({0: {"h": h}}, {0: [h]}, h, [h], {"h": h}):
        h.value = jnp.zeros(3)
        out = sm.transform.vmap(step, in_states=spec)(jnp.arange(3.0))
        np.testing.assert_array_equal(out, [0.0, 2.0, 4.0])
        np.testing.assert_array_equal(h.value, [0.0, 1.0, 2.0])


def test_legacy_axis_is_honoured():
    h = sm.ShortTermState(jnp.zeros((2, 3)), name="h")

    def step(x):
        h.value = h.value + x
        return h.value.sum()

    f = sm.transform.vmap(step, in_states={1: [h]})
    out = f(jnp.arange(3.0))
    pure = jax.vmap(lambda hv, x: ((hv + x).sum(), hv + x), in_axes=(1, 0), out_axes=(0, 1))
    want, h1 = pure(jnp.zeros((2, 3)), jnp.arange(3.0))
    assert_tree_close(out, want)
    assert_tree_close(h.value, h1)
    assert f.name == "vmap"


def test_legacy_out_states_scatter_a_written_state():
    h = sm.ShortTermState(jnp.zeros(3), name="h")
    y = sm.State(jnp.zeros(()), name="y")

    def step(x):
        h.value = h.value + x
        y.value = x * 10
        return x

    sm.transform.vmap(step, in_states={0: [h]}, out_states={1: {"y": y}})(jnp.ones((3, 2)))
    assert_tree_close(y.value, jnp.full((2, 3), 10.0))


def test_legacy_without_declarations_maps_stateless_functions():
    # No in_states/out_states at all: the common case of the legacy API.
    f = sm.transform.vmap(lambda x: x * 2)
    np.testing.assert_array_equal(f(jnp.arange(3.0)), [0.0, 2.0, 4.0])
    y = sm.State(jnp.zeros(()), name="y")

    def step(x):
        y.value = x * 10
        return x

    sm.transform.vmap(step, out_states=y)(jnp.arange(3.0))
    np.testing.assert_array_equal(y.value, [0.0, 10.0, 20.0])


def test_legacy_conflicting_axes():
    h = sm.ShortTermState(jnp.zeros((2, 3)), name="h")
    with pytest.raises(
        sm.BatchAxisError,
        match=r"vmap: state 'h' is declared on axis 1 in in_states and on axis 0 in out_states(?s:.*)fix:",
    ):
        sm.transform.vmap(lambda x: x, in_states={1: [h]}, out_states={0: [h]})


def test_legacy_undeclared_per_lane_write_mentions_out_states():
    h = sm.ShortTermState(jnp.zeros(3), name="h")
    g = sm.State(jnp.zeros(()), name="g")

    def step(x):
        h.value = h.value + x
        g.value = g.value + x
        return x

    snap = snapshot([h, g])
    with pytest.raises(
        sm.BatchAxisError,
        match=r"vmap: state 'g' .*but out_states does not select it(?s:.*)"
        r"fix: .*in_states=\{0: \[s\]\}.*out_states",
    ):
        sm.transform.vmap(step, in_states={0: [h]})(jnp.ones(3))
    assert_clean([h, g], snap)


def test_legacy_declarations_must_be_states():
    with pytest.raises(TypeError, match=r"vmap: in_states must declare State objects(?s:.*)found: +ndarray"):
        sm.transform.vmap(lambda x: x, in_states={0: [np.zeros(3)]})
    with pytest.raises(TypeError, match=r"vmap: out_states must declare State objects"):
        sm.transform.vmap(lambda x: x, out_states=[1.0])


def test_legacy_decorator_form():
    h = sm.ShortTermState(jnp.zeros(2), name="h")

    @sm.transform.vmap(in_states=h, axis_name="i")
    def step(x):
        h.value = h.value + jax.lax.psum(x, "i")
        return x

    step(jnp.array([1.0, 2.0]))
    np.testing.assert_array_equal(h.value, [3.0, 3.0])
