"""`eval_shape`: `jax.eval_shape` for a function that reads and writes states.

The function is traced once, abstractly (`StatefulFunction`): nothing is computed, no state changes (its writes
stay in the trace frame, which is dropped), and states created inside are marked dead, as in any trace.
`JittedFunction.eval_shape` reads the same shapes off the trace `jit` caches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from ._arguments import shape_struct
from ._control import check_callable
from ._make_jaxpr import StatefulFunction, Traced

__all__ = ["eval_shape", "out_shapes"]


def out_shapes(entry: Traced) -> Any:
    """The result of a traced signature as a pytree of `jax.ShapeDtypeStruct` (weak types kept, as JAX does)."""
    avals = entry.jaxpr.out_avals[: entry.n_out]
    return jax.tree_util.tree_unflatten(entry.out_treedef, [shape_struct(a.shape, a.dtype, a.weak_type) for a in avals])


def eval_shape(fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The shapes and dtypes of ``fun(*args, **kwargs)``, like `jax.eval_shape`, without running it.

    `fun` may read and write `State`s it closes over; no state changes. Arguments may be arrays, Python
    scalars or `jax.ShapeDtypeStruct`s (or pytrees of them).

    Args:
      fun: The function.
      *args, **kwargs: Its arguments (never states).

    Returns:
      A pytree of `jax.ShapeDtypeStruct` in the structure of `fun`'s result.

    Raises:
      StateArgumentError: an argument is a `State`.

    Examples:
      >>> w = sm.ParamState(jnp.ones((3, 2)), name="w")
      >>> n = sm.State(jnp.array(0), name="n")
      >>> def f(x):
      ...     n.value = n.value + 1
      ...     return {"y": x @ w.value, "n": n.value}
      >>> sm.transform.eval_shape(f, jax.ShapeDtypeStruct((5, 3), jnp.float32))
      {'n': ShapeDtypeStruct(shape=(), dtype=int32, weak_type=True), 'y': ShapeDtypeStruct(shape=(5, 2), dtype=float32)}
      >>> n.value
      Array(0, dtype=int32, weak_type=True)
    """
    check_callable(fun, "eval_shape", "fun")
    return out_shapes(StatefulFunction(fun, name="eval_shape").trace(*args, **kwargs))
