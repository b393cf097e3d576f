"""`state_reduce`: a shared state written per lane becomes the reduction over lanes of its per-lane new values.

A running mean in a BatchNorm-like layer, a spike counter, a global step: states that every lane updates but
that hold one value. The reduction runs inside the lane as a collective over the mapping's own axis
(`jax.lax.pmean`, `psum`, `pmax`, `pmin`, `all_gather`), so nested maps reduce over their own axis only and, over
devices (`pmap`), it is a collective rather than a gather to the host. The reduced value is the same in every
lane, so it is written back unbatched.

Reductions: ``'mean'``, ``'sum'``, ``'max'``, ``'min'``, ``'first'``, ``'last'``, ``'add'`` (``old + Σ(newᵢ −
old)``: with lanes that each add to a counter, the total of a sequential loop), or a callable
``(stacked_new_values, old_value) -> value`` where the stack has the lanes on axis 0.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp

from .._errors import message
from .._state import State
from ..util.filter import Predicate
from ._mapping_axes import first_match, is_unmatched, selector_table

__all__ = [
    "REDUCTIONS",
    "Reduction",
    "normalize_state_reduce",
    "match_reduction",
    "lane_reduce",
    "reduce_stacked",
    "label",
]

REDUCTIONS = ("mean", "sum", "max", "min", "first", "last", "add")

Reduction = str | Callable[[Any, Any], Any]

_COLLECTIVES: dict[str, Callable[..., Any]] = {
    "mean": jax.lax.pmean,
    "sum": jax.lax.psum,
    "max": jax.lax.pmax,
    "min": jax.lax.pmin,
}


def normalize_state_reduce(spec: Any, who: str) -> tuple[tuple[Reduction, Predicate], ...]:
    """``{reduction: selector}`` → ``((reduction, predicate), ...)``; an unknown reduction raises, naming it.

    Examples:
      >>> from statemap.transform._reductions import normalize_state_reduce
      >>> normalize_state_reduce({"mean": sm.ShortTermState}, "vmap2")
      (('mean', OfType(ShortTermState)),)
    """
    table = selector_table(
        spec, who, "state_reduce", "reduction", lambda r: callable(r) or isinstance(r, str), "{'mean': state}"
    )
    for reduction, _ in table:
        if not callable(reduction) and reduction not in REDUCTIONS:
            raise ValueError(
                message(
                    who,
                    f"state_reduce names the unknown reduction {reduction!r}",
                    f"one of {', '.join(repr(r) for r in REDUCTIONS)}, or a callable (stacked_new, old) -> value",
                    repr(reduction),
                    "use e.g. state_reduce={'mean': s}, or pass a function",
                )
            )
    return table


def match_reduction(reductions: tuple[tuple[Reduction, Predicate], ...], state: State) -> Reduction | None:
    """The reduction of the first entry whose selector matches `state`, or None."""
    found = first_match(reductions, state)
    return None if is_unmatched(found) else found


def label(reduction: Reduction) -> str:
    """How `explain` shows a reduction: ``'reduce:mean'``, ``'reduce:my_fn'``."""
    name = reduction if isinstance(reduction, str) else getattr(reduction, "__name__", type(reduction).__name__)
    return f"reduce:{name}"


def lane_reduce(reduction: Reduction, new: Any, old: Any, axis_name: Hashable) -> Any:
    """Inside one lane: the reduction over the axis `axis_name` of every lane's `new` (a pytree like `old`)."""
    if isinstance(reduction, str) and reduction in _COLLECTIVES:
        return _COLLECTIVES[reduction](new, axis_name)
    if reduction == "add":
        return jax.tree_util.tree_map(lambda n, o: o + _COLLECTIVES["sum"](n - o, axis_name), new, old)
    return reduce_stacked(reduction, jax.tree_util.tree_map(lambda n: jax.lax.all_gather(n, axis_name), new), old)


_STACKED: dict[str, Callable[[Any], Any]] = {
    "mean": lambda s: jnp.mean(s, axis=0),
    "sum": lambda s: jnp.sum(s, axis=0),
    "max": lambda s: jnp.max(s, axis=0),
    "min": lambda s: jnp.min(s, axis=0),
    "first": lambda s: s[0],
    "last": lambda s: s[-1],
}


def reduce_stacked(reduction: Reduction, stacked: Any, old: Any) -> Any:
    """The reduction of per-lane values stacked on axis 0 (a pytree like `old`), e.g. after `map`'s chunks."""
    if isinstance(reduction, str) and reduction in _STACKED:
        return jax.tree_util.tree_map(_STACKED[reduction], stacked)
    if reduction == "add":
        return jax.tree_util.tree_map(lambda s, o: o + jnp.sum(s - jnp.expand_dims(o, 0), axis=0), stacked, old)
    assert callable(reduction)
    return jax.tree_util.tree_map(jnp.asarray, reduction(stacked, old))
