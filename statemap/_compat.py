"""The only module that touches JAX internals. Each entry says what it is, why, and which versions it covers.

`tests/test_compat.py` exercises every entry, so a JAX upgrade that changes one fails loudly there, and
another test checks that ``jax._src`` is imported nowhere else in the package.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.extend import core as jex_core
from jax.extend import source_info_util

__all__ = [
    "new_trace_input",
    "current_trace",
    "use_trace",
    "batch_dim_in",
    "is_tracer",
    "struct_like",
    "varies_over_mesh",
    "InternalFloatingPointError",
]


def current_trace() -> Any:
    """The innermost active JAX trace (public: `jax.extend.core.take_current_trace`)."""
    with jex_core.take_current_trace() as trace:
        return trace


def use_trace(trace: Any) -> Any:
    """Context manager: operations run under `trace` (public: `jax.extend.core.set_current_trace`).

    Why: a state's first touch may happen while an inner transform traces (a `grad` inside a mapped lane);
    the values a mapping derives for the state then belong to the mapping's own trace, not the inner one.
    """
    return jex_core.set_current_trace(trace)  # type: ignore[no-untyped-call]


def new_trace_input(trace: Any, aval: Any) -> Any:
    """Add a fresh input variable of type `aval` to a `jax.make_jaxpr` trace that is being built.

    Why: a stateful function discovers the states it reads only while it runs; each state becomes a jaxpr
    input at its first touch, so the user's Python body runs once per signature. JAX has no public API for
    adding an input mid-trace; `DynamicJaxprTrace.new_arg(aval, source_info)` does it (JAX 0.7 - 0.10).
    Fallback: none; a JAX that removes it fails `tests/test_compat.py::test_new_trace_input`.

    A `jax.ShapeDtypeStruct` made by `struct_like` keeps its varying manual axes (a per-lane slice of a state
    split by a stateful `shard_map`): without them the lane's jaxpr would insert casts that fail on the real,
    varying values (`tests/test_compat.py::test_new_trace_input_keeps_varying_axes`).
    """
    if isinstance(aval, jax.ShapeDtypeStruct):
        mat = getattr(aval, "manual_axis_type", None)
        extra: dict[str, Any] = {}
        if mat is not None and not mat.empty:
            extra = {"sharding": aval.sharding, "manual_axis_type": mat}
        aval = jax.core.ShapedArray(aval.shape, aval.dtype, weak_type=aval.weak_type, **extra)
    return trace.new_arg(aval, source_info_util.current())


def batch_dim_in(x: Any, trace: Any) -> int | None:
    """The batch dimension of `x` in the vmap trace `trace`, or None when `x` is not batched by that trace.

    Why: a state written inside a mapped function must be scattered at the axis JAX batched it on, and only
    when *this* vmap (not an enclosing one) batched it. JAX exposes neither publicly; `BatchTracer.batch_dim`
    and `BatchTracer._trace` carry them (JAX 0.4.36 - 0.10). Fallback: none (see test_compat).
    """
    from jax._src.interpreters import batching

    if isinstance(x, batching.BatchTracer) and x._trace is trace:
        bd = x.batch_dim
        return bd if isinstance(bd, int) else None
    return None


def is_tracer(x: Any) -> bool:
    """True for any JAX tracer (public `jax.core.Tracer`)."""
    return isinstance(x, jax.core.Tracer)


def struct_like(aval: Any, shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    """A `jax.ShapeDtypeStruct` of `shape` with `aval`'s dtype, weak type and varying manual axes.

    Why: inside `jax.shard_map` (with ``check_vma=True``) a value's type records the mesh axes it varies over;
    a lane traced from inputs without that record produces a jaxpr that fails to evaluate on the real, varying
    values (``mul requires varying manual axes to match``). The record is `ShapedArray.manual_axis_type`,
    accepted by `ShapeDtypeStruct(manual_axis_type=...)` (JAX 0.10). Fallback: without the attribute (other JAX
    versions) the struct has no such record, as before.
    """
    mat = getattr(aval, "manual_axis_type", None)
    extra: dict[str, Any] = {}
    if mat is not None and not mat.empty:  # the record needs the (abstract) mesh, taken from the aval's sharding
        mesh = aval.sharding.mesh
        spec = jax.sharding.PartitionSpec()  # type: ignore[no-untyped-call]
        extra = {"manual_axis_type": mat, "sharding": jax.sharding.NamedSharding(mesh, spec)}
    return jax.ShapeDtypeStruct(shape, aval.dtype, weak_type=aval.weak_type, **extra)  # type: ignore[no-untyped-call]


def varies_over_mesh(value: Any) -> bool:
    """Whether a leaf of `value` (inside `jax.shard_map` with ``check_vma=True``) differs across mesh shards.

    Why: a state written inside a stateful `shard_map` comes back replicated only when its new value is the
    same on every shard. The type records it in `ShapedArray.manual_axis_type.varying` (JAX 0.10; the same
    field as `struct_like`). Fallback: a JAX without the field reports False (no shard varies).
    """
    for leaf in jax.tree_util.tree_leaves(value):
        mat = getattr(jax.typeof(leaf), "manual_axis_type", None)
        if mat is not None and mat.varying:
            return True
    return False


def _internal_fpe() -> type[Exception]:
    from jax._src import api_util

    found = getattr(api_util, "InternalFloatingPointError", None)
    return found if isinstance(found, type) and issubclass(found, Exception) else _NeverRaised


class _NeverRaised(Exception):
    """Stands in for `InternalFloatingPointError` in a JAX without it (then nothing needs converting)."""


# What JAX raises, under `jax_debug_nans`/`jax_debug_infs`, when a compiled function evaluated inside another
# (statemap's programs run the user's traced jaxpr) produces a NaN/inf: JAX's own API converts it into a
# `FloatingPointError`, but only at its outer `jax.jit` boundary, which statemap's dispatch bypasses. The
# dispatcher converts it (`tests/test_compat.py::test_InternalFloatingPointError`). JAX 0.4 - 0.10.
InternalFloatingPointError: type[Exception] = _internal_fpe()
