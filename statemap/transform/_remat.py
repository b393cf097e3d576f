"""`checkpoint` (alias `remat`): `jax.checkpoint` for functions that read and write states.

The function is traced once per signature by `StatefulFunction`; the pure function evaluating its jaxpr
(argument leaves and state values in, result and written states out) is wrapped in `jax.checkpoint` once per
traced signature, so its stable identity lets JAX reuse the rematerialised trace.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from typing import Any, overload

import jax

from .._state import read_values, write_back
from ._arguments import parse_argnums, shift_argnums
from ._make_jaxpr import StatefulFunction, Traced
from ._method import bind_method

__all__ = ["checkpoint", "remat"]


# `call_flat` of a traced signature: (argument leaves, state values) -> (new written values, result).
_CallFlat = Callable[[list[Any], list[Any]], tuple[list[Any], Any]]
_Policy = Callable[..., bool]


def _checkpointed(entry: Traced, prevent_cse: bool, policy: _Policy | None) -> _CallFlat:
    return jax.checkpoint(entry.call_flat, prevent_cse=prevent_cse, policy=policy)


class _Checkpointed:
    """The callable `checkpoint` returns; on a method, bound per instance like `jit`."""

    def __init__(
        self, fun: Callable[..., Any], prevent_cse: bool, policy: _Policy | None, static_argnums: tuple[int, ...]
    ) -> None:
        self.origin_fun = fun
        self.stateful = StatefulFunction(fun, static_argnums=static_argnums, name="checkpoint")
        self._prevent_cse = prevent_cse
        self._policy = policy
        # One checkpointed function per traced signature: its stable identity lets JAX reuse its trace.
        self._runners: weakref.WeakKeyDictionary[Traced, _CallFlat] = weakref.WeakKeyDictionary()
        functools.update_wrapper(self, fun)

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        sf = self.stateful
        sig = sf.signature(args, kwargs)
        entry = sf.lookup(sig)
        arg_leaves = sig.leaves
        run = self._runners.get(entry)
        if run is None:
            run = self._runners[entry] = _checkpointed(entry, self._prevent_cse, self._policy)
        new_values, result = run(arg_leaves, read_values(entry.states))
        write_back(entry.states, dict(zip(entry.out_states, new_values, strict=True)), "checkpoint")
        return result

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return bind_method(self, obj, self._bound_to)

    def _bound_to(self, obj: Any) -> _Checkpointed:
        """This checkpoint applied to ``functools.partial(fun, obj)``: a method's `self` is not an argument."""
        static = shift_argnums(self.stateful.static_argnums)
        return _Checkpointed(functools.partial(self.origin_fun, obj), self._prevent_cse, self._policy, static)


@overload
def checkpoint(
    fun: Callable[..., Any],
    *,
    prevent_cse: bool = True,
    policy: _Policy | None = None,
    static_argnums: int | Sequence[int] = (),
) -> Callable[..., Any]: ...


@overload
def checkpoint(
    fun: None = None,
    *,
    prevent_cse: bool = True,
    policy: _Policy | None = None,
    static_argnums: int | Sequence[int] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


def checkpoint(
    fun: Callable[..., Any] | None = None,
    *,
    prevent_cse: bool = True,
    policy: _Policy | None = None,
    static_argnums: int | Sequence[int] = (),
) -> Callable[..., Any]:
    """Recompute `fun`'s intermediates in the backward pass instead of storing them, like `jax.checkpoint`.

    `fun` may read and write `State`s it closes over; written states are written back after the call. Under
    `grad`, the forward values inside `fun` are recomputed during differentiation (saving memory). `remat` is
    the same function.

    Args:
      fun: Function to checkpoint (also usable as a decorator, with or without arguments).
      prevent_cse: As in `jax.checkpoint`.
      policy: A `jax.checkpoint_policies` policy choosing which intermediates may be saved.
      static_argnums: Arguments treated as compile-time constants (hashable).

    Returns:
      A function with the signature of `fun` (on a method, bound per instance like `jit`).

    Examples:
      >>> calls = sm.State(jnp.array(0), name="calls")
      >>> @sm.transform.checkpoint
      ... def layer(x):
      ...     calls.value = calls.value + 1
      ...     return jnp.sin(x) * 2.0
      >>> layer(jnp.zeros(2)), calls.value
      (Array([0., 0.], dtype=float32), Array(1, dtype=int32, weak_type=True))
      >>> sm.transform.grad(lambda x: layer(x).sum())(jnp.zeros(2)), calls.value
      (Array([2., 2.], dtype=float32), Array(2, dtype=int32, weak_type=True))
    """
    if fun is None:
        return functools.partial(checkpoint, prevent_cse=prevent_cse, policy=policy, static_argnums=static_argnums)
    return _Checkpointed(fun, prevent_cse, policy, parse_argnums(static_argnums))


remat = checkpoint
