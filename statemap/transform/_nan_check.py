"""NaN checks of ``grad(..., debug_nan=True)`` and ``vector_grad(..., debug_nan=True)``.

After the derivatives are computed and before anything is written back, the differentiated inputs, the value
and the gradients are searched for NaN, in that order; the first of them holding one is named in a `NaNError`.

- Eager call (concrete results): checked at once. On a NaN, the Python body is differentiated again under
  `jax.debug_nans` (`call_python`: JAX turns the check off inside a traced jaxpr's evaluation), which stops at
  the first operation producing one, in the forward or the backward pass; its message joins ours.
- Under a JAX trace (`jit`, a mapping, an outer `grad`): the check is a `jax.debug.callback` that raises on
  the host. JAX reports it as a `JaxRuntimeError` whose message contains ours; no state is written since
  the compiled call fails as a whole.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from .. import _compat
from .._errors import NaNError, message, tree_aval
from .._state import State, mark_dead
from .._trace import StateTrace, catch_new_states

__all__ = ["call_python", "check_nan"]


def _has_nan(tree: Any) -> bool:
    for leaf in jax.tree_util.tree_leaves(tree):
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.inexact) and bool(np.isnan(a).any()):
            return True
    return False


def _where(names: Sequence[str], inputs: Sequence[Any], value: Any, grads: Sequence[Any]) -> tuple[str, Any] | None:
    """(description, tree) of the first of inputs, value, gradients holding a NaN; None when none does."""
    for name, x in zip(names, inputs, strict=True):
        if _has_nan(x):
            return f"the input {name}", x
    if _has_nan(value):
        return "the value of the function", value
    for name, g in zip(names, grads, strict=True):
        if _has_nan(g):
            return f"the gradient with respect to {name}", g
    return None


def call_python(
    fun: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    states: Sequence[State],
    values: Sequence[Any],
    who: str,
) -> Any:
    """Run `fun`'s Python body, each of `states` seeing the matching value of `values`; writes are discarded.

    `jax.debug_nans` is off inside a traced jaxpr's evaluation, so finding the operation producing a NaN means
    running the user's operations again, one by one (their Python side effects run again too).
    """
    by_id = {id(s): v for s, v in zip(states, values, strict=True)}
    with catch_new_states() as caught, StateTrace(lambda s, outer: by_id.get(id(s), outer), who):
        try:
            return fun(*args, **kwargs)
        finally:
            mark_dead(caught.states, who)


def _first_operation(rerun: Callable[[], Any]) -> str:
    """The message `jax.debug_nans` gives for the first operation producing a NaN ('' if none is found)."""
    try:
        # JAX prints a note to stdout when it re-runs a jitted function de-optimised; ours is the message.
        with jax.debug_nans(True), contextlib.redirect_stdout(io.StringIO()):
            jax.block_until_ready(rerun())  # type: ignore[no-untyped-call]
    except FloatingPointError as e:
        return str(e).splitlines()[0]
    return ""


def _error(who: str, where: str, tree: Any, operation: str) -> NaNError:
    found = f"NaN in {where} ({tree_aval(tree)})"
    if operation:
        found += f"; the first operation producing one: {operation}"
    fix = (
        "compute that input without NaN, or mask it before the call"
        if where.startswith("the input")
        else "keep the arguments of log/sqrt/division/arccos... in their domain (e.g. jnp.where on the input, "
        "not on the output, or jnp.clip), or add a small epsilon"
    )
    return NaNError(message(who, f"NaN in {where}", "no NaN in the inputs, the value or the gradients", found, fix))


def check_nan(
    who: str,
    names: Sequence[str],
    diff: tuple[Sequence[Any], Sequence[Any]],
    value: Any,
    derivs: tuple[Sequence[Any], Sequence[Any]],
    rerun: Callable[[], Any],
) -> None:
    """Raise `NaNError` if a NaN is in the inputs `diff`, the `value` or the gradients `derivs`.

    `names` names each differentiated input (grad states, then arguments), in the order of
    ``(*diff[0], *diff[1])``; `derivs` has the structure of `diff`. `rerun` evaluates the call again.
    """
    inputs = [*diff[0], *diff[1]]
    grads = [*derivs[0], *derivs[1]]
    if any(_compat.is_tracer(x) for x in jax.tree_util.tree_leaves((inputs, value, grads))):

        def on_host(inputs: list[Any], value: Any, grads: list[Any]) -> None:
            found = _where(names, inputs, value, grads)
            if found is not None:
                raise _error(who, *found, "")

        jax.debug.callback(on_host, inputs, value, grads)
        return
    found = _where(names, inputs, value, grads)
    if found is not None:
        raise _error(who, *found, _first_operation(rerun)) from None
