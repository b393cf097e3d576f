"""No transform keeps a dead function's states (or their values) alive.

Each case builds a fresh function over fresh states, calls it through one transform, drops everything and
checks with weak references that the states, their values and the function's constants are collected (memory
flatness without timing or RSS).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import pytest

import statemap as sm

T = sm.transform
N_ROUNDS = 3


def _jit(s: sm.State, r: sm.State, c: Any) -> Any:
    def f(x: Any) -> Any:
        s.value = s.value + x * r.value * c
        return s.value.sum()

    return T.jit(f)(jnp.ones(3))


def _vmap2(s: sm.State, r: sm.State, c: Any) -> Any:
    def f(x: Any) -> Any:
        s.value = s.value + x * r.value * c
        return x * r.value * c

    return T.vmap2(f, in_axes=0, state_in_axes={0: s}, state_out_axes={0: s})(jnp.ones((2, 3)))


def _pmap2(s: sm.State, r: sm.State, c: Any) -> Any:
    def f(x: Any) -> Any:
        return x * r.value * c

    return T.pmap2(f, in_axes=0)(jnp.ones((2, 3)))


def _map(s: sm.State, r: sm.State, c: Any) -> Any:
    def f(x: Any) -> Any:
        return x * r.value * c

    return T.map(f, jnp.ones((2, 3)))


def _for_loop(s: sm.State, r: sm.State, c: Any) -> Any:
    def f(x: Any) -> Any:
        s.value = s.value + x * r.value * c
        return s.value.sum()

    return T.for_loop(f, jnp.ones((2, 3)))


def _while_loop(s: sm.State, r: sm.State, c: Any) -> Any:
    def body(i: Any) -> Any:
        s.value = s.value + r.value * c
        return i + 1

    return T.while_loop(lambda i: i < 3, body, 0)


def _scan(s: sm.State, r: sm.State, c: Any) -> Any:
    def f(c: Any, x: Any) -> Any:
        s.value = s.value + x * r.value * c
        return c + 1, s.value.sum()

    return T.scan(f, 0, jnp.ones((2, 3)))


def _cond(s: sm.State, r: sm.State, c: Any) -> Any:
    def yes(x: Any) -> Any:
        s.value = s.value + x * r.value * c
        return x

    def no(x: Any) -> Any:
        s.value = s.value - x
        return x

    return T.jit(lambda x: T.cond(x.sum() > 0, yes, no, x))(jnp.ones(3))


def _grad(s: sm.State, r: sm.State, c: Any) -> Any:
    def loss(x: Any) -> Any:
        s.value = s.value + x
        return (x * r.value * c).sum()

    return T.grad(loss)(jnp.ones(3))


def _grad_states(s: sm.State, r: sm.State, c: Any) -> Any:
    def loss() -> Any:
        return (s.value * r.value * c).sum()

    return T.grad(loss, grad_states=[r])()


def _switch(s: sm.State, r: sm.State, c: Any) -> Any:
    def add(x: Any) -> Any:
        s.value = s.value + x * r.value * c
        return x

    return T.jit(lambda i, x: T.switch(i, [add, lambda x: x], x))(jnp.asarray(0), jnp.ones(3))


def _bounded_while(s: sm.State, r: sm.State, c: Any) -> Any:
    def body(i: Any) -> Any:
        s.value = s.value + r.value * c
        return i + 1

    return T.grad(lambda x: T.bounded_while_loop(lambda i: i < 3, body, x, max_steps=5) * r.value.sum())(0.0)


class _Cell(sm.nn.Module):
    def __init__(self, s: sm.State, r: sm.State, c: Any) -> None:
        self.s, self.r, self.c = s, r, c

    def step(self, x: Any) -> Any:
        self.s.value = self.s.value + x * self.r.value * self.c
        return self.s.value.sum()


def _method(s: sm.State, r: sm.State, c: Any) -> Any:
    cell = _Cell(s, r, c)
    T.for_loop(cell.step, jnp.ones((2, 3)))
    return T.jit(cell.step)(jnp.ones(3))


def _remat(s: sm.State, r: sm.State, c: Any) -> Any:
    def f(x: Any) -> Any:
        s.value = s.value + x * r.value * c
        return (x * r.value * c).sum()

    return T.grad(T.remat(f))(jnp.ones(3))


CASES: dict[str, Callable[[sm.State, sm.State, Any], Any]] = {
    "jit": _jit,
    "vmap2": _vmap2,
    "pmap2": _pmap2,
    "map": _map,
    "for_loop": _for_loop,
    "while_loop": _while_loop,
    "scan": _scan,
    "cond": _cond,
    "grad": _grad,
    "grad(grad_states)": _grad_states,
    "remat": _remat,
    "switch": _switch,
    "bounded while_loop": _bounded_while,
    "methods (for_loop, jit)": _method,
}


def _create_call_drop(name: str) -> tuple[list[weakref.ref[Any]], list[weakref.ref[Any]]]:
    """Weak references to (the states and their values, the closed-over constants) of rounds since dropped."""
    call = CASES[name]
    states, consts = [], []
    for k in range(N_ROUNDS):
        s = sm.State(jnp.zeros((2, 3)) if name == "vmap2" else jnp.zeros(3), name=f"s{k}")
        r = sm.ParamState(jnp.full(3, 2.0), name=f"r{k}")
        c = jnp.full(3, 0.5 + k)  # a constant the function closes over (a jaxpr constant)
        call(s, r, c)
        states += [weakref.ref(x) for x in (s, r, s.value, r.value)]
        consts.append(weakref.ref(c))
        del s, r, c
    gc.collect()
    return states, consts


@pytest.mark.parametrize("name", list(CASES))
def test_create_call_drop_collects_the_states(name: str) -> None:
    states, _ = _create_call_drop(name)
    alive = [ref() for ref in states if ref() is not None]
    assert alive == [], f"{name} keeps states or their values alive: {alive}"


# The loops' plan (holding the traced entry, whose jaxpr holds the function's constants) is a static argument
# of a module-level `jax.jit` (`_loops._scan_jitted`, `_while_jitted`, `_bounded_jitted`), and pmap2 keeps a
# compiled runner per plan: JAX's caches keep the constants of every dead function until `jax.clear_caches()`.
# Loops and pmap2 pass their jaxpr's constants as arguments (loops also key their compiled runner on a
# token, `Traced.token`), so nothing of a dead function stays in JAX's caches.
_KEEPS_CONSTANTS: dict[str, str] = {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=_KEEPS_CONSTANTS[n]))
        if n in _KEEPS_CONSTANTS
        else n
        for n in CASES
    ],
)
def test_create_call_drop_collects_closed_over_constants(name: str) -> None:
    _, consts = _create_call_drop(name)
    alive = [ref() for ref in consts if ref() is not None]
    assert alive == [], f"{name} keeps a dead function's constants alive: {alive}"


class _Decorated(sm.nn.Module):
    def __init__(self) -> None:
        self.w = sm.ParamState(jnp.ones(3))

    @T.jit
    def jitted(self, x: Any) -> Any:
        return (self.w.value * x).sum()

    @T.grad(argnums=0)
    def gradient(self, x: Any) -> Any:
        return (self.w.value * x).sum()

    @T.vmap2(in_axes=0)
    def mapped(self, x: Any) -> Any:
        return self.w.value * x


@pytest.mark.parametrize("method", ["jitted", "gradient", "mapped"])
def test_a_decorated_method_keeps_no_instance_alive(method: str) -> None:
    refs = []
    for _ in range(3):
        m = _Decorated()
        getattr(m, method)(jnp.ones(3))
        getattr(m, method)(jnp.ones(3))
        refs.append(weakref.ref(m))
        del m
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


@pytest.mark.parametrize("method", ["jitted", "gradient", "mapped"])
def test_clear_cache_of_a_decorated_method_clears_its_instances(method: str) -> None:
    m = _Decorated()
    getattr(m, method)(jnp.ones(3))
    transform = _Decorated.__dict__[method]
    transform.clear_cache()
    bound = getattr(m, method)
    stateful = getattr(bound, "stateful", None) or getattr(bound, "_stateful", None)
    if stateful is not None:
        assert len(stateful._cache) == 0
    else:
        assert bound.cache_info["size"] == 0
