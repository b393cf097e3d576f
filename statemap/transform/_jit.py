"""`jit`: `jax.jit` for functions that read and write states.

Each signature is traced once by `StatefulFunction`; its jaxpr runs inside one `jax.jit` object built at
decoration time (stable identity, so JAX's C++ dispatch cache hits on warm calls). State values go in as
arguments and written states' new values come out and are written back. If a state changed shape since the
trace, JAX retraces the jitted runner, which notices and asks for a fresh trace instead of failing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, overload

import jax

from .._errors import MappingRuntimeError
from .._trace import CONTEXT
from ._make_jaxpr import (
    StatefulFunction,
    Traced,
    normalize_argnums,
    resolve_argnums,
    value_signature,
)
from ._method import bind_method, shift_argnums, weak_partial

__all__ = ["jit", "JittedFunction"]


class _StaleTrace(Exception):
    """Internal: a state's shape changed since the entry was traced (never reaches users)."""


def _run(entry: Traced, state_vals: list[Any], arg_leaves: list[Any]) -> tuple[list[Any], Any]:
    sigs = tuple(value_signature(v) for v in state_vals)
    if sigs != entry.state_sigs:
        raise _StaleTrace
    return entry.call_flat(arg_leaves, state_vals)


class JittedFunction:
    """The callable returned by `jit`. Call it like the original function.

    Attributes:
      origin_fun: The wrapped function.
      stateful: The `StatefulFunction` holding the traced signatures.

    Example:
      >>> class Counter(sm.nn.Module):
      ...     def __init__(self):
      ...         self.n = sm.ShortTermState(jnp.zeros((), jnp.int32))
      ...     @sm.transform.jit
      ...     def tick(self, k):
      ...         self.n.value = self.n.value + k
      ...         return self.n.value
      >>> a, b = Counter(), Counter()
      >>> a.tick(2), a.tick(3), b.tick(1)
      (Array(2, dtype=int32), Array(5, dtype=int32), Array(1, dtype=int32))
      >>> type(Counter.tick).__name__
      'JittedFunction'
    """

    def __init__(
        self,
        fun: Callable,
        static_argnums: int | Sequence[int] = (),
        static_argnames: str | Sequence[str] = (),
        donate_argnums: int | Sequence[int] = (),
        **jit_kwargs: Any,
    ) -> None:
        self.origin_fun = fun
        self.stateful = StatefulFunction(fun, static_argnums, static_argnames, name="jit")
        self.donate_argnums = normalize_argnums(donate_argnums, "donate_argnums")
        self._jit_kwargs = jit_kwargs
        self._runners: dict[int, Callable] = {}
        functools.update_wrapper(self, fun, updated=())

    def _runner(self, nargs: int) -> Callable:
        runner = self._runners.get(nargs)
        if runner is None:
            if self.donate_argnums:
                donate = resolve_argnums(self.donate_argnums, nargs, "jit", "donate_argnums")
                static = resolve_argnums(self.stateful.static_argnums, nargs, "jit")
                dyn_pos = [i for i in range(nargs) if i not in static]
                # The runner takes the argument leaves as one list; donation is per leaf, so donate the
                # whole list only when every dynamic argument is donated, else fall back to no donation.
                donate_list = bool(dyn_pos) and all(i in donate for i in dyn_pos)
                kwargs = dict(self._jit_kwargs, donate_argnums=(2,) if donate_list else ())
            else:
                kwargs = self._jit_kwargs
            runner = jax.jit(_run, static_argnums=(0,), **kwargs)
            self._runners[nargs] = runner
        return runner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sf = self.stateful
        key, leaves = sf.split(args, kwargs)
        entry = sf._cache.get(key)
        if entry is None:
            entry = sf._lookup(key, args, kwargs)
        states = entry.states
        if CONTEXT.stack:
            values = [s.value for s in states]
        else:
            values = [s._value for s in states]
        try:
            new_values, out = self._runner(len(args))(entry, values, leaves)
        except _StaleTrace:
            sf._cache.pop(key, None)
            entry = sf._lookup(key, args, kwargs)
            states = entry.states
            values = [s.value for s in states] if CONTEXT.stack else [s._value for s in states]
            try:
                new_values, out = self._runner(len(args))(entry, values, leaves)
            except _StaleTrace:
                raise MappingRuntimeError(
                    "jit: a fresh trace does not match the states' current types; this is a bug in statemap, "
                    "please report it with the function's code"
                ) from None
        if CONTEXT.stack:
            for i, v in zip(entry.out_states, new_values, strict=True):
                states[i].value = v
        else:
            for i, v in zip(entry.out_states, new_values, strict=True):
                s = states[i]
                s._value = v
                s._dead = None
        return out

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return bind_method(self, obj, self._bound_to)

    def _bound_to(self, obj: Any) -> JittedFunction:
        """This jit applied to ``functools.partial(fun, obj)``: a decorated method's `self` is not an argument."""
        return JittedFunction(
            weak_partial(self.origin_fun, obj),
            shift_argnums(self.stateful.static_argnums),
            self.stateful.static_argnames,
            shift_argnums(self.donate_argnums),
            **self._jit_kwargs,
        )

    def clear_cache(self) -> None:
        """Forget traced signatures and compiled executables."""
        self.stateful.clear_cache()
        self._runners.clear()


@overload
def jit(
    fun: Callable,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    donate_argnums: int | Sequence[int] = (),
    **jit_kwargs: Any,
) -> JittedFunction: ...


@overload
def jit(
    fun: None = None,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    donate_argnums: int | Sequence[int] = (),
    **jit_kwargs: Any,
) -> Callable[[Callable], JittedFunction]: ...


def jit(
    fun: Callable | None = None,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    donate_argnums: int | Sequence[int] = (),
    **jit_kwargs: Any,
) -> JittedFunction | Callable[[Callable], JittedFunction]:
    """Compile a function that reads and writes states, like `jax.jit`.

    The Python body runs once per abstract signature (argument shapes/dtypes, static values, shapes of the
    states it touches); warm calls run one cached executable. States written inside are written back after the
    call; if the call raises, every state keeps its previous value.

    Args:
      fun: Function to compile; it may read and write `State`s it closes over (don't pass states as arguments).
      static_argnums / static_argnames: As in `jax.jit`.
      donate_argnums: As in `jax.jit` (donation applies when every dynamic argument is donated).
      **jit_kwargs: Forwarded to `jax.jit` (e.g. ``keep_unused``, ``device``).

    Returns:
      A `JittedFunction`; also usable as a decorator with or without arguments, and on methods.

    Example:
      >>> count = sm.ShortTermState(jnp.array(0), name="count")
      >>> @sm.transform.jit
      ... def step(x):
      ...     count.value = count.value + 1
      ...     return x * count.value
      >>> step(jnp.ones(2)), step(jnp.ones(2))
      (Array([1., 1.], dtype=float32), Array([2., 2.], dtype=float32))
      >>> count.value
      Array(2, dtype=int32, weak_type=True)
    """
    if fun is None:
        return functools.partial(
            jit,
            static_argnums=static_argnums,
            static_argnames=static_argnames,
            donate_argnums=donate_argnums,
            **jit_kwargs,
        )
    return JittedFunction(fun, static_argnums, static_argnames, donate_argnums, **jit_kwargs)
