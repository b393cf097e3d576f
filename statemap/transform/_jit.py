"""`jit`: `jax.jit` for functions that read and write states.

Each signature is traced once by `StatefulFunction`; its jaxpr is what runs, never the Python body again.

Eager calls take the *dispatch* path: one `jax.jit` object, built at decoration time, receives the values of
every state the function is known to touch plus the call's arguments, so JAX's C++ dispatch does the signature
check and cache lookup. Its traced body (run by JAX only for a new signature) finds the `Traced` entry and
evaluates it; the new values of all known states come back and are written back. A signature that touches a
state not yet known raises an internal exception at trace time; the state is added and the call retried.

Inside an enclosing statemap transform (or with static/donated arguments) the *traced* path is used: look up
the entry, read the states through `State.value` (recording the reads), call a per-entry runner, write back
through `State.value`. If a state changed shape since the trace, JAX retraces the runner, which notices and
asks for a fresh trace instead of failing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, overload

import jax

from .._errors import MappingRuntimeError, StatemapError, without_jax_note
from .._state import State
from .._trace import CONTEXT
from ._dispatch import DeadState, NewStates, dead
from ._make_jaxpr import (
    StatefulFunction,
    Traced,
    normalize_argnums,
    resolve_argnums,
    signature_key,
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
        self._known: list[State] = []
        self._known_index: dict[int, int] = {}
        simple = not (self.stateful.static_argnums or self.stateful.static_argnames or self.donate_argnums)
        self._dispatcher: Callable | None = jax.jit(self._dispatch, **jit_kwargs) if simple else None
        functools.update_wrapper(self, fun, updated=())

    def _dispatch(self, values: list[Any], args: tuple, kwargs: dict) -> tuple[dict[int, Any], Any]:
        """Body of the dispatch `jax.jit`; runs only when JAX traces a new signature.

        Returns ``{position among the known states: new value}`` for the states this signature writes (dict keys
        are part of the output's structure, so they are static per signature) and the result.
        """
        sf = self.stateful
        key, leaves = sf.split(args, kwargs)
        entry = sf._lookup(key, args, kwargs)
        index = self._known_index
        missing = [s for s in entry.states if id(s) not in index]
        if missing:
            raise NewStates(missing)
        pos = [index[id(s)] for s in entry.states]
        new_values, out = entry.call_flat(leaves, [values[p] for p in pos])
        return {pos[i]: v for i, v in zip(entry.out_states, new_values, strict=True)}, out

    def _add_known(self, states: list[State]) -> None:
        known = self._known + [s for s in states if id(s) not in self._known_index]
        self._known_index = {id(s): i for i, s in enumerate(known)}
        self._known = known

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
        dispatcher = self._dispatcher
        if dispatcher is None or CONTEXT.stack:
            return self._call_traced(args, kwargs)
        known = self._known
        try:
            values = [s._value if s._dead is None else dead(s) for s in known]
            written, out = dispatcher(values, args, kwargs)
        except NewStates as e:
            self._add_known(e.states)
            return self(*args, **kwargs)
        except DeadState:
            return self._call_traced(args, kwargs)
        except StatemapError as e:
            raise without_jax_note(e) from None
        except TypeError:
            self.stateful.split(args, kwargs)  # raises a statemap ArgumentError naming a bad argument
            raise
        for p, v in written.items():
            known[p]._value = v
        return out

    def _call_traced(self, args: tuple, kwargs: dict) -> Any:
        # One signature key, one cache lookup, one compiled call per entry, one write-back.
        sf = self.stateful
        key, leaves = signature_key(args, kwargs, sf.static_argnums, sf.static_argnames, sf.name, sf._param_names)
        entry = sf._cache.get(key)
        if entry is None:
            entry = sf._lookup(key, args, kwargs)
        states = entry.states
        stack = CONTEXT.stack
        if stack:
            values = [s.value for s in states]
        else:
            values = [s._value if s._dead is None else s.value for s in states]
        runner = self._runner(len(args))
        try:
            new_values, out = runner(entry, values, leaves)
        except _StaleTrace:
            sf._cache.pop(key, None)
            entry = sf._lookup(key, args, kwargs)
            states = entry.states
            values = [s.value for s in states]
            try:
                new_values, out = runner(entry, values, leaves)
            except _StaleTrace:
                raise MappingRuntimeError(
                    "jit: a fresh trace does not match the states' current types; this is a bug in statemap, "
                    "please report it with the function's code"
                ) from None
        if stack:
            for i, v in zip(entry.out_states, new_values, strict=True):
                states[i].value = v
        else:
            for i, v in zip(entry.out_states, new_values, strict=True):
                states[i]._value = v
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
        if self._dispatcher is not None:
            self._dispatcher = jax.jit(self._dispatch, **self._jit_kwargs)


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
