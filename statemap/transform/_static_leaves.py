"""Arguments mapped with ``None`` that are not arrays reach the mapped function unchanged, as with `jax.vmap`.

A string, a callable, a Python scalar or any other non-array leaf whose axis is None is static: it is taken out
of the call before dispatch (a `_Hole` marks its place), and the call runs on a *child* mapping of the same
config whose function puts the leaf back. Children are cached per static key: each leaf's type and value when
it is hashable, else its identity (the child keeps the object alive, so the identity cannot be reused). A new
value is a new child, so it is traced and compiled once, like a new static argument of `jax.jit`.

Arrays mapped with None stay dynamic (a new value does not retrace), and so do mapped leaves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from typing import Any

import jax
import numpy as np

from ._mapping_axes import arg_leaf_axes
from ._mapping_config import MappingConfig

__all__ = ["StaticLeaves", "split_static_leaves", "may_hold_static_leaves"]

_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)


@jax.tree_util.register_static
class _Hole:
    """Where a static leaf was taken out of the arguments (a pytree node without leaves)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Hole)

    def __hash__(self) -> int:
        return hash(_Hole)


def _is_hole(x: Any) -> bool:
    return isinstance(x, _Hole)


def may_hold_static_leaves(config: MappingConfig, args: tuple[Any, ...]) -> bool:
    """Cheap test (every call): could a positional argument hold a non-array leaf mapped with None?"""
    if isinstance(config.in_axes, int):
        return False
    return not all(isinstance(a, _ARRAY_TYPES) for a in args)


def _key(value: Any) -> Hashable:
    """Equal keys only for values a function cannot tell apart: ``0.0`` and ``-0.0`` (and NaNs) differ."""
    if isinstance(value, (float, complex)):
        return (type(value), repr(value))
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return (type(value), value)


@dataclasses.dataclass(frozen=True)
class StaticLeaves:
    """The static leaves of one call: where they sit and their values.

    Attributes:
      static_pos: Positions of the static positional arguments (``static_argnums``), left as they are.
      treedef: Structure of the dynamic positional arguments.
      values: ``{leaf index: value}`` of the static leaves, in flattening order of the dynamic arguments.
    """

    static_pos: tuple[int, ...]
    treedef: Any
    values: dict[int, Any]

    @property
    def key(self) -> Hashable:
        return (self.static_pos, self.treedef, tuple((i, _key(v)) for i, v in self.values.items()))

    def holed(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """`args` with every static leaf replaced by a `_Hole`."""
        dyn = [a for i, a in enumerate(args) if i not in self.static_pos]
        leaves = jax.tree_util.tree_leaves(dyn)
        filled = [_Hole() if i in self.values else x for i, x in enumerate(leaves)]
        return self._merge(args, jax.tree_util.tree_unflatten(self.treedef, filled))

    def restore(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """The inverse of `holed` (inside the child's function: mapped leaves are a lane's tracers)."""
        dyn = [a for i, a in enumerate(args) if i not in self.static_pos]
        leaves = jax.tree_util.tree_leaves(dyn, is_leaf=_is_hole)
        filled = [self.values[i] if i in self.values else x for i, x in enumerate(leaves)]
        return self._merge(args, jax.tree_util.tree_unflatten(self.treedef, filled))

    def _merge(self, args: tuple[Any, ...], dyn: list[Any]) -> tuple[Any, ...]:
        it = iter(dyn)
        return tuple(a if i in self.static_pos else next(it) for i, a in enumerate(args))

    def bind(self, fun: Callable[..., Any]) -> Callable[..., Any]:
        """`fun` taking the holed arguments."""

        def with_static_leaves(*args: Any, **kwargs: Any) -> Any:
            return fun(*self.restore(args), **kwargs)

        return with_static_leaves


def split_static_leaves(config: MappingConfig, args: tuple[Any, ...], kwargs: dict[str, Any]) -> StaticLeaves | None:
    """The static leaves of a call (non-array leaves whose axis is None), or None when there are none."""
    static_pos, _ = config.args.split(len(args), kwargs)
    dyn = tuple(a for i, a in enumerate(args) if i not in static_pos)
    in_axes = config.in_axes
    if isinstance(in_axes, (tuple, list)) and len(in_axes) == len(args) and static_pos:
        in_axes = tuple(a for i, a in enumerate(in_axes) if i not in static_pos)
    axes = arg_leaf_axes(in_axes, dyn, {}, config.name)
    leaves, treedef = jax.tree_util.tree_flatten(list(dyn))
    values = {
        i: x
        for i, (x, ax) in enumerate(zip(leaves, axes, strict=True))
        if ax is None and not isinstance(x, _ARRAY_TYPES)
    }
    return StaticLeaves(static_pos, treedef, values) if values else None
