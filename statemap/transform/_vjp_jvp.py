"""`vjp` and `jvp`: `jax.vjp` / `jax.jvp` for functions that read and write states.

Both reuse `grad`'s passes (`GradientTransform._prepare`): trace the function once, build the pure function
``pure((grad_state_values, diff_args)) -> (value, (value, aux, new_written_values))``, apply the JAX transform
to it, write the written states back once, and give derivatives in the structure the user asked for
(`grad_states` as given, then the arguments).

How states take part:
  - States the function only reads, and the ones not in `grad_states`, are constants (zero tangent, no
    cotangent), as closed-over arrays are for `jax.vjp` / `jax.jvp`.
  - `grad_states` are inputs too: `vjp`'s pullback also returns their cotangents; `jvp` takes their tangents
    (`state_tangents`, in the structure of `grad_states`).
  - Written states are never differentiated: the call writes their new values back once, when `vjp` / `jvp`
    returns (the pullback itself is pure). If the function raises, no state changes.

Each call traces the function again, as `jax.vjp` and `jax.jvp` do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from .._errors import ArgumentError, message
from .._state import write_back
from ._grad import GradientTransform, _Argnums, _normalize_argnums, _slot_values

__all__ = ["vjp", "jvp"]


def _vjp_argnums(argnums: _Argnums, nprimals: int, has_states: bool) -> _Argnums:
    """`argnums` as `GradientTransform` takes it: None (every primal) → all positions; no position with
    `grad_states` → None (state cotangents only)."""
    if argnums is None:
        argnums = tuple(range(nprimals))
    if has_states and not isinstance(argnums, int) and not _normalize_argnums(argnums, "vjp"):
        return None
    return argnums


def vjp(
    fun: Callable[..., Any],
    *primals: Any,
    grad_states: Any = None,
    argnums: _Argnums = None,
    has_aux: bool = False,
) -> tuple[Any, ...]:
    """Evaluate `fun` and its vector-Jacobian product, like `jax.vjp`, for a function that uses states.

    `fun` may read and write `State`s it closes over. Written states get their new values when `vjp` returns;
    they are not differentiated. Read states are constants, except `grad_states`, whose cotangents the
    pullback returns as well.

    Args:
      fun: Function of `primals` returning an array or pytree of arrays (``(output, aux)`` with `has_aux`).
      *primals: Positional arguments of `fun` (arrays or pytrees of arrays, never states).
      grad_states: States to differentiate too: a `State`, a list/tuple/dict of States, or a `Module` (its
        `ParamState`s), as in `grad`.
      argnums: Primals to differentiate: None (default) for all of them, as `jax.vjp`; an int or a sequence
        of ints as in `grad`; ``()`` for none (with `grad_states`).
      has_aux: If True, `fun` returns ``(output, aux)``; `aux` is returned, not differentiated.

    Returns:
      ``(output, vjp_fn)``, or ``(output, vjp_fn, aux)`` with `has_aux`. ``vjp_fn(cotangent)`` takes a
      cotangent shaped like `output` and returns, without `grad_states`, the cotangents of the primals as
      `jax.vjp` does (a tuple with one per primal; with an int `argnums` the single cotangent, with a sequence
      a tuple); with `grad_states`, ``(state_cotangents, primal_cotangents)``, or only the state cotangents
      when no primal is differentiated. State cotangents have the structure of `grad_states`.

    Raises:
      StateArgumentError: a primal is a `State`.
      ArgumentError: an `argnums` entry is out of range.

    Examples:
      >>> w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")
      >>> n = sm.State(jnp.array(0), name="n")
      >>> def f(x):
      ...     n.value = n.value + 1
      ...     return w.value * x
      >>> y, vjp_fn = sm.transform.vjp(f, jnp.array([3.0, 4.0]), grad_states=w)
      >>> y, n.value
      (Array([3., 8.], dtype=float32), Array(1, dtype=int32, weak_type=True))
      >>> dw, (dx,) = vjp_fn(jnp.ones(2))
      >>> dw, dx
      (Array([3., 4.], dtype=float32), Array([1., 2.], dtype=float32))
    """
    argnums = _vjp_argnums(argnums, len(primals), grad_states is not None)
    gt = GradientTransform(fun, "vjp", grad_states, argnums, has_aux)
    pure, diff, entry, pick = gt._prepare(primals, {})
    value, pullback, (_, aux, new_values) = jax.vjp(pure, diff, has_aux=True)
    write_back(entry.states, dict(zip(entry.out_states, new_values, strict=True)))

    def vjp_fn(cotangent: Any) -> Any:
        (d,) = pullback(cotangent)
        return gt._assemble(d, pick)

    return (value, vjp_fn, aux) if has_aux else (value, vjp_fn)


def _as_tuple(x: Any, what: str) -> tuple[Any, ...]:
    if not isinstance(x, (tuple, list)):
        raise ArgumentError(
            message(
                "jvp",
                f"{what} is not a tuple or list",
                "a tuple or list with one entry per positional argument of fun, as for jax.jvp",
                f"{type(x).__name__}",
                "wrap it: jvp(f, (x,), (t,)) for a function of one argument",
            )
        )
    return tuple(x)


def jvp(
    fun: Callable[..., Any],
    primals: Sequence[Any],
    tangents: Sequence[Any],
    *,
    grad_states: Any = None,
    state_tangents: Any = None,
    has_aux: bool = False,
) -> tuple[Any, ...]:
    """Evaluate `fun` and its Jacobian-vector product, like `jax.jvp`, for a function that uses states.

    `fun` may read and write `State`s it closes over. Written states get their new values when `jvp` returns;
    they are not differentiated. Read states are constants (zero tangent), except `grad_states`, which move
    along `state_tangents`.

    Args:
      fun: Function of ``*primals`` returning an array or pytree of arrays (``(output, aux)`` with `has_aux`).
      primals: Tuple or list of the positional arguments of `fun`.
      tangents: Tuple or list of their tangents (same structure, shapes and dtypes), as for `jax.jvp`.
      grad_states: States whose values move along `state_tangents`, as `grad_states` in `grad`.
      state_tangents: Tangents of `grad_states`, in its structure (an array for one `State`, a list for a
        list, a dict path → array for a `Module`). Required with `grad_states`.
      has_aux: If True, `fun` returns ``(output, aux)``; `aux` is returned, not differentiated.

    Returns:
      ``(output, output_tangent)``, or ``(output, output_tangent, aux)`` with `has_aux`.

    Raises:
      ArgumentError: `primals` or `tangents` is not a tuple or list, or `state_tangents` is missing, given
        without `grad_states`, or not in the structure of `grad_states`.

    Examples:
      >>> w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")
      >>> f = lambda x: jnp.sum(w.value * x ** 2)
      >>> sm.transform.jvp(f, (jnp.array([3.0, 4.0]),), (jnp.array([1.0, 0.0]),))
      (Array(41., dtype=float32), Array(6., dtype=float32))
      >>> sm.transform.jvp(f, (jnp.array([3.0, 4.0]),), (jnp.zeros(2),), grad_states=w,
      ...                  state_tangents=jnp.array([0.0, 1.0]))
      (Array(41., dtype=float32), Array(16., dtype=float32))
    """
    primals = _as_tuple(primals, "primals")
    tangents = _as_tuple(tangents, "tangents")
    if (grad_states is None) != (state_tangents is None):
        given, missing = (
            ("grad_states", "state_tangents") if state_tangents is None else ("state_tangents", "grad_states")
        )
        raise ArgumentError(
            message(
                "jvp",
                f"{given} is given without {missing}",
                "both grad_states and state_tangents (a tangent per state), or neither",
                f"{given}=..., {missing}=None",
                f"pass {missing} too, or drop {given}",
            )
        )
    gt = GradientTransform(fun, "jvp", grad_states, tuple(range(len(primals))), has_aux)
    state_t = (
        []
        if grad_states is None
        else _slot_values(gt._spec, state_tangents, len(gt.grad_states), "jvp", "state_tangents")
    )
    pure, diff, entry, _ = gt._prepare(primals, {})
    value, tangent_out, (_, aux, new_values) = jax.jvp(pure, (diff,), ((state_t, tangents),), has_aux=True)
    write_back(entry.states, dict(zip(entry.out_states, new_values, strict=True)))
    return (value, tangent_out, aux) if has_aux else (value, tangent_out)
