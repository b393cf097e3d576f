"""Bad and edge-case inputs across the transforms, generated with hypothesis.

The property, for every case: the call raises a statemap error naming what was wrong (or the user's own
exception, or a documented `TypeError`/`ValueError` that names the option); every state and
`random.DEFAULT`'s key hold their values from before the call and no tracer; and a following good call works.
Under ``HYPOTHESIS_PROFILE=ci`` the module generates well over 1,000 cases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import statemap as sm

T = sm.transform
_SCALE = settings.default.max_examples / 60  # 1.0 under the ci profile


def _examples(n: int) -> Any:
    return settings(max_examples=max(5, int(n * _SCALE)), deadline=None)


class UserError(Exception):
    """The user's own exception, raised inside a transformed function."""


acc = sm.State(jnp.zeros(3), name="acc")
hid = sm.State(jnp.zeros((3, 3)), name="hid")
count = sm.State(jnp.array(0), name="count")
STATES = (acc, hid, count)


def _snapshot() -> list[tuple[Any, list[np.ndarray]]]:
    out = []
    for s in STATES:
        leaves, treedef = jax.tree_util.tree_flatten(s.value)
        out.append((treedef, [np.asarray(x) for x in leaves]))
    out.append((None, [np.asarray(sm.random.get_key_data())]))
    return out


def _assert_unchanged(before: list[tuple[Any, list[np.ndarray]]]) -> None:
    for s in STATES:
        assert not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(s.value)), s
    assert not isinstance(sm.random.DEFAULT.value, jax.core.Tracer)
    after = _snapshot()
    for (d0, l0), (d1, l1) in zip(before, after, strict=True):
        assert d0 == d1
        for a, b in zip(l0, l1, strict=True):
            np.testing.assert_array_equal(a, b)


def check(
    call: Callable[[], Any],
    errors: type[BaseException] | tuple[type[BaseException], ...],
    names: tuple[str, ...],
    good: Callable[[], Any],
) -> None:
    """The property: `call` raises one of `errors` mentioning every name; nothing changed; `good` works."""
    before = _snapshot()
    with pytest.raises(errors) as info:
        call()
    text = str(info.value)
    for name in names:
        assert name in text, (name, text)
    _assert_unchanged(before)
    good()


# -- strategies ---------------------------------------------------------------------------------------------
shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)
huge_ints = st.one_of(st.integers(2**64, 2**80), st.integers(-(2**80), -(2**64)))
bad_leaves = st.one_of(
    st.text(max_size=5),
    st.builds(object),
    shapes.map(lambda s: np.zeros(s, "datetime64[D]")),
    shapes.map(lambda s: np.zeros(s, "timedelta64[s]")),
    shapes.map(lambda s: np.ones(s, np.longdouble)),
    shapes.map(lambda s: np.full(s, object())),
    st.just(np.datetime64("2020-01-01")),
    st.just(np.longdouble(1.0)),
    huge_ints,
)
wrappers = st.sampled_from(["leaf", "tuple", "dict", "list"])
bad_axes = st.one_of(
    st.floats(allow_nan=False, width=32),
    st.booleans(),
    st.text(min_size=1, max_size=3),
    st.builds(object),
)


def _wrap(kind: str, x: Any) -> tuple[Any, str]:
    """`x` placed inside a pytree argument, and the key path statemap should name."""
    if kind == "tuple":
        return (1.0, x), "[1]"
    if kind == "dict":
        return {"a": 1.0, "b": x}, "['b']"
    if kind == "list":
        return [x], "[0]"
    return x, ""


def _add(x: Any) -> Any:
    acc.value = acc.value + jnp.sum(jnp.asarray(jax.tree_util.tree_leaves(x)[-1], jnp.float32))
    count.value = count.value + 1
    return acc.value


_jit_add = T.jit(_add)
_jit_add_static = T.jit(lambda x, k: _add(x), static_argnames="k")


def _good_jit() -> None:
    _jit_add(jnp.ones(3))


def _restore() -> None:
    acc.value, hid.value, count.value = jnp.zeros(3), jnp.zeros((3, 3)), jnp.array(0)


# -- jit ----------------------------------------------------------------------------------------------------
@_examples(150)
@given(bad=bad_leaves, kind=wrappers, static=st.booleans())
def test_jit_rejects_bad_argument(bad: Any, kind: str, static: bool) -> None:
    if isinstance(bad, int) and not static:
        return  # the fast path lets JAX's OverflowError through: test_jit_huge_int_fast_path
    arg, path = _wrap(kind, bad)
    call = (lambda: _jit_add_static(arg, k=0)) if static else (lambda: _jit_add(arg))
    where = ("args[0]" + path) if not static or kind == "leaf" else "args[0]"
    check(call, sm.ArgumentError, ("jit", where), _good_jit)


@_examples(30)
@given(kind=wrappers, which=st.sampled_from(STATES))
def test_jit_rejects_state_argument(kind: str, which: sm.State) -> None:
    arg, _ = _wrap(kind, which)
    check(lambda: _jit_add(arg), sm.StateArgumentError, ("jit", which.name), _good_jit)


@_examples(50)
@given(shape=shapes.filter(lambda s: s not in ((), (1,), (3,))))
def test_jit_wrong_shape_raises_users_error(shape: tuple[int, ...]) -> None:
    f = T.jit(lambda x: _set_acc(acc.value + x))
    check(lambda: f(jnp.ones(shape)), (TypeError, ValueError), (), _good_jit)


def _set_acc(v: Any) -> Any:
    acc.value = v
    return v


def test_jit_huge_int_fast_path() -> None:
    check(lambda: _jit_add(2**70), sm.ArgumentError, ("jit", "args[0]"), _good_jit)


def test_jit_non_array_write_names_state() -> None:
    def f(x: Any) -> Any:
        acc.value = "oops"
        return x

    check(lambda: T.jit(f)(1.0), sm.StatemapError, ("acc",), _good_jit)


def test_jit_object_state_read_names_state() -> None:
    obj = sm.State(object(), name="obj")
    check(lambda: T.jit(lambda x: obj.value)(1.0), sm.StatemapError, ("obj",), _good_jit)


# -- user exceptions in every transform ---------------------------------------------------------------------
def _body(v: Any) -> Any:
    acc.value = acc.value + v
    hid.value = hid.value + 1.0
    count.value = count.value + 1
    _ = sm.random.normal(size=2)
    raise UserError(f"user failure {v}")


_RAISERS: dict[str, Callable[[float], Any]] = {
    "jit": lambda v: T.jit(_body)(v),
    "grad": lambda v: T.grad(lambda x: _body(x))(v),
    "for_loop": lambda v: T.for_loop(_body, jnp.full(3, v)),
    "scan": lambda v: T.scan(lambda c, x: (c, _body(x)), 0.0, jnp.full(2, v)),
    "while_loop": lambda v: T.while_loop(lambda c: c < 3.0, _body, v),
    "cond": lambda v: T.cond(jnp.asarray(v) > 0, _body, _body, v),
    "switch": lambda v: T.switch(jnp.asarray(1), [_body, _body], v),
    "vmap2": lambda v: T.vmap2(_body)(jnp.full(3, v)),
    "map": lambda v: T.map(_body, jnp.full(3, v)),
    "jit(vmap2)": lambda v: T.jit(T.vmap2(_body))(jnp.full(3, v)),
    "jit(for_loop)": lambda v: T.jit(lambda: T.for_loop(_body, jnp.full(2, v)))(),
    "grad(jit)": lambda v: T.grad(T.jit(_body))(v),
    "vmap2(cond)": lambda v: T.vmap2(lambda x: T.cond(x > 0, _body, _body, x))(jnp.full(3, v)),
}


@_examples(180)
@given(where=st.sampled_from(sorted(_RAISERS)), v=st.floats(-4, 4, width=32))
def test_user_exception_restores_states(where: str, v: float) -> None:
    check(lambda: _RAISERS[where](v), UserError, ("user failure",), _good_jit)


# -- grad ---------------------------------------------------------------------------------------------------
def _loss(x: Any) -> Any:
    return jnp.sum(acc.value * x)


@_examples(60)
@given(argnums=st.one_of(st.floats(width=32), st.builds(object), huge_ints, st.integers(1, 9), st.integers(-9, -2)))
def test_grad_bad_argnums(argnums: Any) -> None:
    check(lambda: T.grad(_loss, argnums=argnums)(jnp.ones(3)), (sm.ArgumentError, TypeError), ("argnums",), _good_jit)


@_examples(60)
@given(bad=bad_leaves)
def test_grad_bad_argument(bad: Any) -> None:
    check(lambda: T.grad(_loss)(bad), sm.ArgumentError, ("grad", "args[0]"), _good_jit)


# -- loops --------------------------------------------------------------------------------------------------
def _step(x: Any) -> Any:
    acc.value = acc.value + x
    return x


bad_lengths = st.one_of(st.floats(width=32), st.booleans(), st.text(max_size=2), huge_ints, st.integers(-99, -1))


@_examples(60)
@given(length=bad_lengths, which=st.sampled_from(["for_loop", "scan"]))
def test_loop_bad_length(length: Any, which: str) -> None:
    call = {
        "for_loop": lambda: T.for_loop(lambda: _step(1.0), length=length),
        "scan": lambda: T.scan(lambda c, x: (c + _step(1.0), x), 0.0, None, length=length),
    }[which]
    check(call, sm.ArgumentError, (which, "length"), _good_jit)


@_examples(60)
@given(a=st.integers(1, 5), b=st.integers(1, 5), which=st.sampled_from(["for_loop", "scan", "map"]))
def test_loop_mismatched_leading_sizes(a: int, b: int, which: str) -> None:
    if a == b:
        b = a + 1
    xs = (jnp.ones(a), jnp.ones(b))
    call = {
        "for_loop": lambda: T.for_loop(lambda x, y: _step(x + y), *xs),
        "scan": lambda: T.scan(lambda c, xy: (c, _step(xy[0] + xy[1])), 0.0, xs),
        "map": lambda: T.map(lambda x, y: _step(x + y), *xs),
    }[which]
    check(call, sm.StatemapError, (which, f"{a}", f"{b}"), _good_jit)


@_examples(80)
@given(bad=bad_leaves, which=st.sampled_from(["for_loop", "scan", "while_loop", "map"]))
def test_loop_bad_inputs(bad: Any, which: str) -> None:
    call, name = {
        "for_loop": (lambda: T.for_loop(_step, bad), "xs"),
        "scan": (lambda: T.scan(lambda c, x: (c, _step(x)), 0.0, bad), "xs"),
        "while_loop": (lambda: T.while_loop(lambda c: c < 3, lambda c: c + _step(1.0)[0], bad), "init_val"),
        "map": (lambda: T.map(_step, bad), "[0]"),
    }[which]
    check(call, sm.StatemapError, (which, name), _good_jit)


@_examples(40)
@given(steps=st.one_of(bad_lengths, st.integers(2**31, 2**40)))
def test_bounded_while_bad_max_steps(steps: Any) -> None:
    call = lambda: T.bounded_while_loop(lambda c: c < 3.0, lambda c: c + 1.0, 0.0, max_steps=steps)
    check(call, sm.ArgumentError, ("bounded_while_loop", "max_steps"), _good_jit)


# -- cond / switch ------------------------------------------------------------------------------------------
@_examples(80)
@given(
    bad=st.one_of(bad_leaves.filter(lambda x: not isinstance(x, int)), shapes.filter(bool).map(jnp.ones), st.none()),
    which=st.sampled_from(["cond", "switch"]),
)
def test_cond_switch_bad_selector(bad: Any, which: str) -> None:
    if which == "cond":
        call, name = (lambda: T.cond(bad, _step, _step, 1.0)), "predicate"
    else:
        call, name = (lambda: T.switch(bad, [_step, _step], 1.0)), "index"
    check(call, sm.StatemapError, (which, name), _good_jit)


@_examples(40)
@given(i=huge_ints)
def test_switch_huge_index_clamps(i: int) -> None:
    assert float(T.switch(i, [lambda x: x, lambda x: -x], 1.0)) == (1.0 if i < 0 else -1.0)
    assert float(T.jit(lambda: T.switch(i, [lambda x: x, lambda x: -x], 1.0))()) == (1.0 if i < 0 else -1.0)


@_examples(30)
@given(n=st.integers(1, 4))
def test_branches_disagree(n: int) -> None:
    call = lambda: T.jit(lambda p: T.cond(p, lambda: jnp.ones(n), lambda: jnp.ones(n + 1)))(True)
    check(call, sm.ControlFlowError, ("cond",), _good_jit)


# -- vmap2 / StatefulMapping --------------------------------------------------------------------------------
@_examples(80)
@given(ax=st.one_of(bad_axes, st.integers(2, 9), st.integers(-9, -3), huge_ints), option=st.sampled_from(["in", "out"]))
def test_vmap2_bad_axes(ax: Any, option: str) -> None:
    name = f"{option}_axes"
    call = lambda: T.vmap2(lambda x: _step(x[0]) * 2.0, **{name: ax})(jnp.ones((3, 2)))
    names = ("vmap2", name) if not isinstance(ax, int) or isinstance(ax, bool) else ("vmap2", "axis", f"{ax}")
    check(call, (sm.StatemapError, TypeError, ValueError), names, _good_jit)


@_examples(40)
@given(ax=st.one_of(bad_axes, huge_ints), option=st.sampled_from(["in", "out"]))
def test_stateful_mapping_bad_axes(ax: Any, option: str) -> None:
    name = f"{option}_axes"
    call = lambda: T.StatefulMapping(lambda x: x * 2.0, **{name: ax})(jnp.ones(3))
    names = ("StatefulMapping", name) if not isinstance(ax, int) or isinstance(ax, bool) else ("axis", f"{ax}")
    check(call, (sm.StatemapError, TypeError, ValueError), names, _good_jit)


@_examples(60)
@given(key=st.one_of(st.floats(-1e6, 1e6, width=32), st.booleans()), sel=st.sampled_from(["in"]))
def test_vmap2_bad_state_axis_keys(key: Any, sel: str) -> None:
    def f(x: Any) -> Any:
        hid.value = hid.value + x
        return x

    call = lambda: T.vmap2(f, state_in_axes={key: hid}, state_out_axes={0: hid})(jnp.ones(3))
    check(call, (sm.StatemapError, TypeError, ValueError), ("vmap2", "state_in_axes"), _good_jit)


@pytest.mark.parametrize("key", [float("nan"), float("inf")])
def test_vmap2_nan_state_axis_key(key: float) -> None:
    call = lambda: T.vmap2(_step, state_in_axes={key: hid})(jnp.ones(3))
    check(call, (sm.StatemapError, TypeError), ("state_in_axes",), _good_jit)


@_examples(60)
@given(a=st.integers(1, 5), b=st.integers(1, 5))
def test_vmap2_mismatched_sizes(a: int, b: int) -> None:
    if a == b:
        b = a + 1
    call = lambda: T.vmap2(lambda x, y: _step(x[0] + y[0]))(jnp.ones((a, 3)), jnp.ones((b, 3)))
    check(call, sm.BatchAxisError, ("vmap2", f"{a}", f"{b}"), _good_jit)


@_examples(40)
@given(bad=bad_leaves.filter(lambda x: not isinstance(x, int)))
def test_vmap2_bad_argument(bad: Any) -> None:
    check(lambda: T.vmap2(_step)(bad), sm.ArgumentError, ("vmap2", "args[0]"), _good_jit)


@_examples(30)
@given(size=st.one_of(huge_ints.filter(lambda n: n > 0), st.integers(-5, 0), st.floats(width=32)))
def test_new_states_bad_axis_size(size: Any) -> None:
    class Neuron(sm.nn.Module):
        def init_state(self) -> None:
            self.v = sm.HiddenState(jnp.zeros(2))

    call = lambda: T.vmap2_new_states(Neuron(), axis_size=size)
    check(call, ValueError, ("vmap2_new_states", "axis_size"), _good_jit)


def test_vmap2_huge_axis_size() -> None:
    call = lambda: T.vmap2(lambda x: x, in_axes=None, axis_size=2**70)(jnp.ones(3))
    check(call, sm.StatemapError, ("axis_size",), _good_jit)


def test_vmap2_state_out_axis_out_of_range() -> None:
    def f(x: Any) -> Any:
        hid.value = hid.value + x
        return x

    call = lambda: T.vmap2(f, state_in_axes={0: hid}, state_out_axes={5: hid})(jnp.ones(3))
    check(call, sm.StatemapError, ("hid", "state_out_axes"), _good_jit)


def test_vmap2_bad_selector_names_option() -> None:
    call = lambda: T.vmap2(_step, state_in_axes={0: 3})(jnp.ones(3))
    check(call, (sm.StatemapError, TypeError), ("state_in_axes",), _good_jit)


@_examples(40)
@given(bs=st.one_of(st.integers(-5, 0), st.floats(width=32), st.text(max_size=2)))
def test_map_bad_batch_size(bs: Any) -> None:
    check(lambda: T.map(_step, jnp.ones(3), batch_size=bs), (sm.StatemapError, ValueError), ("batch_size",), _good_jit)


# -- random -------------------------------------------------------------------------------------------------
@_examples(60)
@given(batch=st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple), raw=st.booleans(), who=st.integers(0, 3))
def test_random_rejects_key_batches(batch: tuple[int, ...], raw: bool, who: int) -> None:
    keys = jax.random.split(jax.random.key(0), int(np.prod(batch))).reshape(batch)
    arg = jax.random.key_data(keys) if raw else keys
    call, name = [
        (lambda: sm.random.seed(arg), "seed"),
        (lambda: sm.random.set_key(arg), "set_key"),
        (lambda: sm.random.RandomState(0).restore_key(arg), "restore_key"),
        (lambda: sm.random.normal(size=2, key=arg), "normal"),
    ][who]
    check(call, ValueError, (name, "keys"), lambda: sm.random.normal(size=2))


@_examples(60)
@given(size=st.one_of(huge_ints.filter(lambda n: n > 0), st.integers(-9, -1)), who=st.integers(0, 5))
def test_random_bad_sizes(size: int, who: int) -> None:
    call, name = [
        (lambda: sm.random.normal(size=size), "size"),
        (lambda: sm.random.uniform(size=(2, size)), "size[1]"),
        (lambda: sm.random.rand(size), "dimension 0"),
        (lambda: sm.random.split_key(size), "n"),
        (lambda: sm.random.permutation(size), "x"),
        (lambda: sm.random.choice(size, size=2), "a"),
    ][who]
    if size < 0 and who >= 3:
        return  # negative n / x / a are other errors, tested in test_random.py
    check(call, ValueError, (name,), lambda: sm.random.normal(size=2))


@_examples(40)
@given(bad=st.one_of(st.text(max_size=3), st.floats(width=32), st.builds(object), shapes.map(lambda s: np.ones(s))))
def test_random_bad_seed(bad: Any) -> None:
    check(lambda: sm.random.seed(bad), TypeError, ("seed",), lambda: sm.random.normal(size=2))


@_examples(40)
@given(batch=st.integers(2, 4), inside=st.sampled_from(["jit", "vmap2", "for_loop"]))
def test_random_key_batch_inside_transforms(batch: int, inside: str) -> None:
    keys = jax.random.split(jax.random.key(1), batch)

    def f(x: Any) -> Any:
        sm.random.set_key(keys)
        return x

    call = {
        "jit": lambda: T.jit(f)(1.0),
        "vmap2": lambda: T.vmap2(f)(jnp.ones(2)),
        "for_loop": lambda: T.for_loop(f, jnp.ones(2)),
    }[inside]
    check(call, ValueError, ("set_key", "keys"), lambda: sm.random.normal(size=2))


# -- nested transforms --------------------------------------------------------------------------------------
_NESTED: dict[str, Callable[[Any], Any]] = {
    "jit(vmap2)": lambda x: T.jit(T.vmap2(_step))(x),
    "grad(jit)": lambda x: T.grad(T.jit(lambda y: jnp.sum(_step(y))))(x),
    "jit(for_loop)": lambda x: T.jit(lambda y: T.for_loop(_step, y))(x),
    "vmap2(jit)": lambda x: T.vmap2(T.jit(_step))(x),
}


@_examples(80)
@given(bad=bad_leaves.filter(lambda x: not isinstance(x, int)), where=st.sampled_from(sorted(_NESTED)))
def test_nested_bad_argument(bad: Any, where: str) -> None:
    check(lambda: _NESTED[where](bad), sm.StatemapError, ("argument",), _good_jit)


@pytest.fixture(autouse=True)
def _fresh_states() -> Any:
    _restore()
    yield
    _restore()
