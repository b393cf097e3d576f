"""Which outputs of a lane's jaxpr vary per lane, read off the jaxpr without tracing it under `jax.vmap`.

Pass 3 of a mapping plan (`_mapping_plan.discover`) needs, for every output of the lane's jaxpr, whether it is
batched when the given inputs are. Tracing the jaxpr under `jax.vmap` answers exactly but costs as much as a
first call of a small mapping; for most jaxprs a walk over the equations gives the same answer: an equation's
outputs are batched exactly when one of its inputs is. That rule is what `jax.vmap`'s batching rules do for
every primitive without a sub-jaxpr and without a named axis that has a single input or a single output;
`optimization_barrier`/`device_put` pass each input to its own output; `jit` and `custom_jvp` calls are walked
into. Anything else (control flow, collectives, axis names, effects, unknown sub-jaxprs) returns None and the
caller traces under `jax.vmap`. tests/test_dependence.py checks the walk against the traced answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jax.extend import core as jex_core

__all__ = ["batched_outputs"]

# Primitives whose single sub-jaxpr takes the equation's inputs one to one and gives its outputs one to one.
_CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
}
_NAMED = ("axis_name", "axes", "axis_index_groups")
# Primitives whose output i is input i (batched exactly when that input is).
_PASS_THROUGH = ("optimization_barrier", "device_put")


def batched_outputs(jaxpr: Any, batched: Sequence[bool]) -> list[bool] | None:
    """Per output of `jaxpr` (a Jaxpr or ClosedJaxpr), whether it is batched; None when the walk cannot tell.

    Args:
      jaxpr: The lane's jaxpr.
      batched: Per input, whether it is batched.
    """
    inner = getattr(jaxpr, "jaxpr", jaxpr)
    if len(inner.invars) != len(batched):
        return None
    env: dict[Any, bool] = dict(zip(inner.invars, batched, strict=True))
    for eqn in inner.eqns:
        if eqn.effects:
            return None
        ins = [_is_batched(env, v) for v in eqn.invars]
        outs = _equation(eqn, ins)
        if outs is None:
            return None
        env.update(zip(eqn.outvars, outs, strict=True))
    return [_is_batched(env, v) for v in inner.outvars]


def _is_batched(env: dict[Any, bool], v: Any) -> bool:
    return False if isinstance(v, jex_core.Literal) else env.get(v, False)


def _equation(eqn: Any, ins: list[bool]) -> list[bool] | None:
    name = eqn.primitive.name
    sub = _CALLS.get(name)
    if sub is not None:
        return batched_outputs(eqn.params[sub], ins)
    if name in _PASS_THROUGH and len(ins) == len(eqn.outvars):
        return list(ins)  # output i is input i
    if len(eqn.invars) > 1 and len(eqn.outvars) > 1:
        return None  # several inputs and outputs: which output depends on which input is the primitive's business
    for key, value in eqn.params.items():
        if key in _NAMED and _names_an_axis(value):
            return None
        if _holds_jaxpr(value):
            return None
    return [any(ins)] * len(eqn.outvars)


def _names_an_axis(value: Any) -> bool:
    """True when a parameter names a mapped axis (a collective), not positional axes (ints, as in reductions)."""
    if value is None:
        return False
    values = value if isinstance(value, (tuple, list, frozenset, set)) else (value,)
    return any(not isinstance(v, int) for v in values)


def _holds_jaxpr(value: Any) -> bool:
    values = value if isinstance(value, (tuple, list)) else (value,)
    return any(isinstance(v, (jex_core.Jaxpr, jex_core.ClosedJaxpr)) for v in values)
