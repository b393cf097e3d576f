"""Type aliases for code built on statemap: the names libraries written for brainstate import from its ``typing``.

They are plain aliases (no runtime checks), for annotations:

- `ArrayLike`: anything JAX accepts as an array (``jax.typing.ArrayLike``: arrays, NumPy arrays, scalars).
- `DTypeLike`: anything naming a dtype (``jax.typing.DTypeLike``).
- `Shape`: a concrete array shape, a sequence of ints.
- `Size`: a NumPy-style ``size``: an int or a sequence of ints (statemap's samplers also take None).
- `PyTree`: a pytree of arrays (an alias of `typing.Any`: JAX has no precise pytree type).
- `Filter`: what `statemap.util.filter.to_predicate` accepts: a type, a tag str, a bool, Ellipsis, None, a
  predicate ``(path, x) -> bool``, or a list/tuple of filters (an alias of `typing.Any`, as in
  `statemap.util.filter`).
- `SeedOrKey`: an int seed, a typed key (``jax.random.key``) or raw ``uint32[2]`` key data, as
  `statemap.random.RandomState` accepts.

Examples:
  >>> from statemap.typing import ArrayLike, Size
  >>> def zeros(size: Size, fill: ArrayLike = 0.0) -> jax.Array:
  ...     return jnp.full(size, fill)
  >>> zeros((2, 3)).shape
  (2, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import jax
import jax.typing
import numpy as np

from .util.filter import Filter as _Filter

__all__ = ["ArrayLike", "DTypeLike", "Shape", "Size", "PyTree", "Filter", "SeedOrKey"]

ArrayLike: TypeAlias = jax.typing.ArrayLike
DTypeLike: TypeAlias = jax.typing.DTypeLike
Shape: TypeAlias = Sequence[int]
Size: TypeAlias = int | Sequence[int]
PyTree: TypeAlias = Any
Filter: TypeAlias = _Filter
SeedOrKey: TypeAlias = int | np.integer[Any] | jax.Array | np.ndarray[Any, Any]
