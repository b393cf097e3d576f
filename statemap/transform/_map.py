"""`map`: apply a stateful function to every element of `xs`, sequentially or in vmapped chunks."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .. import _compat
from .._errors import BatchAxisError, ConcreteValueError, message, short_aval
from .._trace import CONTEXT, StateTrace
from ._control import WeakCall, function_cache
from ._mapping import StatefulMapping
from ._mapping_config import MappingConfig
from ._mapping_plan import CONCRETIZATION_ERRORS, inconsistent_sizes

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
        raise inconsistent_sizes(who, sizes, "make the leading axes of the leaves of xs equal")
    return sizes[0][0]


def map(  # noqa: A001 - mirrors jax.lax.map
    f: Callable[..., Any],
    *xs: Any,
    batch_size: int | None = None,
    state_in_axes: Any = None,
    state_out_axes: Any = None,
    unexpected_out_state_mapping: str = "raise",
    state_reduce: Any = None,
) -> Any:
    """Apply `f` to each element of `xs` (slices along axis 0) and stack the results.

    Every element is one lane, as in `vmap2` over all of `xs`, and the lanes run one after another
    (``batch_size=None``) or in chunks of `batch_size` lanes run in parallel (`jax.lax.map`). The options mean
    what they mean in `vmap2`; whatever the batch size, each element sees the same values:

    - a state selected by `state_in_axes` (axis of length ``len(xs)``) gives element ``i`` its own row;
    - a random generator gives element ``i`` the same key whatever the batch size (the generator's key is split
      once per call, as in `vmap2` over all elements);
    - a shared state in `state_reduce` gets the reduction over all elements (``'add'`` sums their increments);
    - another shared state written by `f` is carried from one element to the next without a batch size (a
      running sum works); with a batch size the lanes of a chunk cannot accumulate, so such a write is an error
      (or follows `unexpected_out_state_mapping`).

    The whole map is one compiled program: after an exception nothing is written and every state keeps its
    value.

    Args:
      f: Function of one element of each of `xs`; may read and write states.
      *xs: Pytrees of arrays with the same leading size.
      batch_size: Number of elements run in parallel, or None for one at a time.
      state_in_axes / state_out_axes / unexpected_out_state_mapping / state_reduce: As in `vmap2`.

    Returns:
      The outputs of `f` stacked along axis 0.

    Examples:
      The seed's running counter, done right: a sequential map accumulates into a 0-d state.

      >>> counter = sm.ShortTermState(jnp.array(0.0), name="counter")
      >>> def accumulate(x):
      ...     counter.value = counter.value + x
      ...     return counter.value
      >>> sm.transform.map(accumulate, jnp.ones(3))
      Array([1., 2., 3.], dtype=float32)
      >>> counter.value
      Array(3., dtype=float32)

      In chunks of two, the same total with a declared reduction:

      >>> def add(x):
      ...     counter.value = counter.value + x
      ...     return x
      >>> _ = sm.transform.map(add, jnp.ones(5), batch_size=2, state_reduce={"add": counter})
      >>> counter.value
      Array(8., dtype=float32)
    """
    who = "map"
    if not callable(f):
        raise TypeError(f"map: expected a callable, got {type(f).__name__}")
    n = _length(xs, who)
    _check_batch_size(batch_size)
    options = (state_in_axes, state_out_axes, unexpected_out_state_mapping, state_reduce)
    mapped = _mapping(f, batch_size, options)
    try:
        return mapped(*xs)
    except (*CONCRETIZATION_ERRORS, ConcreteValueError):
        # Python control flow on a state's concrete value: outside every trace and without state options, run
        # the elements one by one in Python, as the eager loop would; inside a trace the value is abstract.
        plain = options == (None, None, "raise", None)
        if not plain or CONTEXT.stack or any(_compat.is_tracer(x) for x in jax.tree_util.tree_leaves(xs)):
            raise
        return _map_python(f, xs, n, batch_size)
    except BatchAxisError as e:
        if batch_size is not None:
            e.add_note(
                "map(batch_size=...) runs the elements of a chunk in parallel, so they cannot accumulate into a "
                "state; declare it in state_reduce (e.g. {'add': s}), or use batch_size=None"
            )
        raise


def _mapping(f: Callable[..., Any], batch_size: int | None, options: tuple[Any, ...]) -> StatefulMapping:
    """One mapping per (function, batch size, options), cached as long as the function lives (`function_cache`);
    the config is built (and the options checked) only when the cache has none."""
    found = function_cache(f)
    key = (found[1] if found else None, "map", batch_size, _freeze(options))
    try:
        hash(key)
    except TypeError:  # an unhashable option: no cache
        found = None
    mapping: StatefulMapping | None = None if found is None else found[0].get(key)
    if mapping is not None:
        return mapping
    in_axes, out_axes, policy, reduce = options
    config = MappingConfig.create(
        f,
        name="map" if batch_size is None else "map(batch_size)",
        in_axes=0,
        state_in_axes=in_axes,
        state_out_axes=out_axes,
        unexpected_out_state_mapping=policy,
        state_reduce=reduce,
        mapping_fn=functools.partial(run_lanes, batch_size=batch_size),
        lanes="sequential" if batch_size is None else "chunked",
    )
    if found is None:
        return StatefulMapping.from_config(f, config)
    mapping = found[0][key] = StatefulMapping.from_config(WeakCall(f), config)
    return mapping


def _freeze(obj: Any) -> Any:
    """A hashable stand-in for an option built of dicts, lists and sets (their items in order)."""
    if isinstance(obj, dict):
        return ("dict", tuple((_freeze(k), _freeze(v)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(_freeze(v) for v in obj))
    if isinstance(obj, (set, frozenset)):
        return frozenset(_freeze(v) for v in obj)
    return obj


def run_lanes(
    lane: Callable[..., Any],
    *,
    in_axes: Sequence[int | None],
    out_axes: tuple[Sequence[int | None], Sequence[int | None]],
    axis_name: Any,
    axis_size: int,
    batch_size: int | None,
    carry: Sequence[tuple[list[int], list[int]]] = (),
) -> Callable[..., Any]:
    """`map`'s `mapping_fn`: the lanes one after another (`jax.lax.scan`, carrying `carry`) or in chunks.

    `carry` pairs the lane inputs and state outputs of the shared states a lane's write hands to the next.
    """
    mapped = [(k, a) for k, a in enumerate(in_axes) if a is not None]

    def run(*flat: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        xs = [jnp.moveaxis(flat[k], a, 0) for k, a in mapped]

        def element(carried: list[list[Any]], x: list[Any]) -> tuple[list[list[Any]], Any]:
            args = list(flat)
            for (k, _), v in zip(mapped, x, strict=True):
                args[k] = v
            for (in_pos, _), leaves in zip(carry, carried, strict=True):
                for p, v in zip(in_pos, leaves, strict=True):
                    args[p] = v
            res, states = lane(*args)
            return [[states[q] for q in out_pos] for _, out_pos in carry], (res, states)

        init = [[flat[p] for p in in_pos] for in_pos, _ in carry]
        if carry or batch_size is None:
            final, (res, states) = jax.lax.scan(element, init, xs, length=axis_size)
        else:
            final, (res, states) = init, jax.lax.map(lambda x: element([], x)[1], xs, batch_size=batch_size)
        states = list(states)
        for (_, out_pos), leaves in zip(carry, final, strict=True):
            for q, v in zip(out_pos, leaves, strict=True):
                states[q] = jnp.expand_dims(v, 0)  # placed like any unbatched output below (its last row)
        return _place(res, out_axes[0]), _place(states, out_axes[1])

    return run


def _place(stacked: Sequence[Any], axes: Sequence[int | None]) -> tuple[Any, ...]:
    """Outputs stacked on axis 0 moved to their out axes; an unbatched one (axis None) is its last row."""
    return tuple(s[-1] if ax is None else jnp.moveaxis(s, 0, ax) for s, ax in zip(stacked, axes, strict=True))


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
