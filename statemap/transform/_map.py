"""`map`: apply a stateful function to every element of `xs`, sequentially or in vmapped chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .. import _compat
from .._errors import BatchAxisError, ConcreteValueError, message, short_aval
from .._trace import CONTEXT, StateTrace
from ._loops import for_loop
from ._mapping import StatefulMapping
from ._mapping_plan import CONCRETIZATION_ERRORS

__all__ = ["map"]


def _length(xs: tuple[Any, ...], who: str) -> int:
    flat = jax.tree_util.tree_flatten_with_path(xs)[0]
    if not flat:
        raise BatchAxisError(
            message(
                who,
                "xs has no arrays to map over",
                "at least one array",
                "no leaves in xs",
                "pass the arrays to map over, e.g. map(f, jnp.arange(n))",
            )
        )
    sizes = []
    for path, leaf in flat:
        where = f"xs{jax.tree_util.keystr(path)}"
        shape = getattr(leaf, "shape", None)
        if shape is None or len(shape) == 0:
            raise BatchAxisError(
                message(
                    who,
                    f"{where} has no leading axis to map over",
                    "arrays with a leading axis",
                    short_aval(leaf) if shape is not None else type(leaf).__name__,
                    "give it a leading axis, or close over it instead of passing it",
                )
            )
        sizes.append((int(shape[0]), where))
    if len({n for n, _ in sizes}) > 1:
        raise BatchAxisError(
            message(
                who,
                "the leaves of xs have different leading sizes",
                "one leading size",
                "; ".join(f"{w}: {n}" for n, w in sizes[:6]),
                "make the leading axes equal",
            )
        )
    return sizes[0][0]


def map(f: Callable[..., Any], *xs: Any, batch_size: int | None = None) -> Any:  # noqa: A001 - mirrors jax.lax.map
    """Apply `f` to each element of `xs` (slices along axis 0) and stack the results.

    Without `batch_size` the elements are processed one after another (a `scan`), so state writes accumulate:
    a running sum works. With `batch_size`, chunks of that many elements are processed in parallel by `vmap2`
    (lanes of a chunk are independent, so `f` may draw random numbers but must not write other states); the
    chunks run sequentially, and a last partial chunk is handled separately.

    Args:
      f: Function of one element of each of `xs`; may read states, and write them when `batch_size` is None.
      *xs: Pytrees of arrays with the same leading size.
      batch_size: Number of elements processed in parallel, or None for sequential processing.

    Returns:
      The outputs of `f` stacked along axis 0.

    Example:
      The seed's running counter, done right: a sequential map accumulates into a 0-d state.

      >>> counter = sm.ShortTermState(jnp.array(0.0), name="counter")
      >>> def accumulate(x):
      ...     counter.value = counter.value + x
      ...     return counter.value
      >>> sm.transform.map(accumulate, jnp.ones(3))
      Array([1., 2., 3.], dtype=float32)
      >>> counter.value
      Array(3., dtype=float32)
      >>> sm.transform.map(lambda x: x ** 2, jnp.arange(5.0), batch_size=2)
      Array([ 0.,  1.,  4.,  9., 16.], dtype=float32)
    """
    who = "map"
    if not callable(f):
        raise TypeError(f"map: expected a callable, got {type(f).__name__}")
    n = _length(xs, who)
    _check_batch_size(batch_size)
    try:
        return _map_traced(f, xs, n, batch_size)
    except (*CONCRETIZATION_ERRORS, ConcreteValueError):
        # Python control flow on a state's concrete value: outside every trace, run the elements (or chunks)
        # one by one in Python, as the eager loop would; inside a trace the value is abstract anyway.
        if CONTEXT.stack or any(_compat.is_tracer(x) for x in jax.tree_util.tree_leaves(xs)):
            raise
        return _map_python(f, xs, n, batch_size)


def _check_batch_size(batch_size: Any) -> None:
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            message(
                "map",
                "batch_size must be a positive int or None",
                "batch_size >= 1",
                repr(batch_size),
                "pass e.g. batch_size=8, or None for sequential processing",
            )
        )


def _map_traced(f: Callable[..., Any], xs: tuple[Any, ...], n: int, batch_size: int | None) -> Any:
    if batch_size is None:
        return for_loop(f, *xs)
    chunks, rest = divmod(n, batch_size)
    mapped = StatefulMapping(f, in_axes=0, name="map(batch_size)")
    outs = []
    try:
        if chunks:
            head = jax.tree_util.tree_map(
                lambda x: x[: chunks * batch_size].reshape((chunks, batch_size) + x.shape[1:]), xs
            )
            ys = for_loop(mapped, *head)
            outs.append(jax.tree_util.tree_map(lambda y: y.reshape((chunks * batch_size,) + y.shape[2:]), ys))
        if rest:
            tail = jax.tree_util.tree_map(lambda x: x[chunks * batch_size :], xs)
            outs.append(mapped(*tail))
    except BatchAxisError as e:
        e.add_note(
            "map(batch_size=...) runs the elements of a chunk in parallel, so they cannot accumulate into a "
            "state; use batch_size=None for sequential processing"
        )
        raise
    if len(outs) == 1:
        return outs[0]
    return jax.tree_util.tree_map(lambda *ys: jnp.concatenate(ys, axis=0), *outs)


def _map_python(f: Callable[..., Any], xs: tuple[Any, ...], n: int, batch_size: int | None) -> Any:
    """The Python tier of `map`: each element (or chunk, through `vmap2`'s Python tier) in a Python loop.

    The loop runs in one hook-less trace frame whose writes are committed at the end: after an exception every
    state keeps its value.
    """
    step = 1 if batch_size is None else batch_size
    fn = f if batch_size is None else StatefulMapping(f, in_axes=0, name="map(batch_size)")
    outs = []
    with StateTrace(name="map") as frame:
        for start in range(0, n, step):
            if batch_size is None:
                outs.append(fn(*jax.tree_util.tree_map(lambda x, i=start: x[i], xs)))
            else:
                chunk = jax.tree_util.tree_map(lambda x, i=start: x[i : i + step], xs)
                outs.append(fn(*chunk))
    frame.commit()
    if batch_size is None:
        return jax.tree_util.tree_map(lambda *ys: jnp.stack(ys), *outs)
    return jax.tree_util.tree_map(lambda *ys: jnp.concatenate(ys, axis=0), *outs)
