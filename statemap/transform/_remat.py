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

from ._control import write_states
from ._make_jaxpr import StatefulFunction, Traced, normalize_argnums, read_values
from ._method import bind_method, shift_argnums

__all__ = ["checkpoint", "remat"]


def _checkpointed(entry: Traced, prevent_cse: bool, policy: Callable | None) -> Callable:
    fn = entry.fn

    def pure(arg_leaves: list[Any], state_leaves: list[Any]) -> list[Any]:
        return fn(*arg_leaves, *state_leaves)

    return jax.checkpoint(pure, prevent_cse=prevent_cse, policy=policy)


class _Checkpointed:
    """The callable `checkpoint` returns; on a method, bound per instance like `jit`."""

    def __init__(
        self, fun: Callable, prevent_cse: bool, policy: Callable | None, static_argnums: tuple[int, ...]
    ) -> None:
        self.origin_fun = fun
        self.stateful = StatefulFunction(fun, static_argnums=static_argnums, name="checkpoint")
        self._prevent_cse = prevent_cse
        self._policy = policy
        self._runners: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        functools.update_wrapper(self, fun)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sf = self.stateful
        key, arg_leaves = sf.split(args, kwargs)
        entry = sf._lookup(key, args, kwargs)
        run = self._runners.get(entry)
        if run is None:
            run = self._runners[entry] = _checkpointed(entry, self._prevent_cse, self._policy)
        values = read_values(entry.states)
        outs = run(arg_leaves, [x for v in values for x in jax.tree_util.tree_leaves(v)])
        result = jax.tree_util.tree_unflatten(entry.out_treedef, outs[: entry.n_out])
        new_values, pos = [], entry.n_out
        for i in entry.out_states:
            n = entry.state_nleaves[i]
            new_values.append(jax.tree_util.tree_unflatten(entry.state_treedefs[i], outs[pos : pos + n]))
            pos += n
        write_states(entry.states, entry.out_states, new_values, "checkpoint")
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
    fun: Callable,
    *,
    prevent_cse: bool = True,
    policy: Callable | None = None,
    static_argnums: int | Sequence[int] = (),
) -> Callable: ...


@overload
def checkpoint(
    fun: None = None,
    *,
    prevent_cse: bool = True,
    policy: Callable | None = None,
    static_argnums: int | Sequence[int] = (),
) -> Callable[[Callable], Callable]: ...


def checkpoint(
    fun: Callable | None = None,
    *,
    prevent_cse: bool = True,
    policy: Callable | None = None,
    static_argnums: int | Sequence[int] = (),
) -> Callable | Callable[[Callable], Callable]:
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

    Example:
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
    return _Checkpointed(fun, prevent_cse, policy, normalize_argnums(static_argnums))


remat = checkpoint
