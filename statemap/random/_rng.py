"""`RandomState`: a `State` holding a typed JAX PRNG key, and the global `DEFAULT` generator.

Drawing advances the key by writing the state, so transforms thread it like any other state: inside `scan`
each iteration draws new numbers, and the mapping transforms split it per lane.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from .._state import State

__all__ = ["RandomState", "DEFAULT", "seed", "split_key", "split_keys", "get_key", "set_key", "default_rng"]


def _to_key(seed_or_key: Any) -> Any:
    if seed_or_key is None:
        seed_or_key = int.from_bytes(os.urandom(4), "little")
    if isinstance(seed_or_key, (int, np.integer)):
        return jax.random.key(int(seed_or_key) % (2**32))
    if isinstance(seed_or_key, RandomState):
        return seed_or_key.value
    dtype = getattr(seed_or_key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return seed_or_key
    arr = seed_or_key
    if getattr(arr, "shape", None) is not None and arr.shape[-1:] == (2,) and np.dtype(arr.dtype) == np.uint32:
        return jax.random.wrap_key_data(arr)
    raise TypeError(
        "RandomState: expected an int seed, a typed key (jax.random.key) or raw uint32[2] key data, "
        f"got {type(seed_or_key).__name__}"
    )


class RandomState(State):
    """A random number generator state: holds a typed JAX key and advances it on every draw.

    Args:
      seed_or_key: An int seed, a typed key (`jax.random.key`), raw ``uint32[2]`` key data, or None for a
        random seed.

    Example:
      >>> rng = sm.random.RandomState(0)
      >>> a = rng.normal(size=2); b = rng.normal(size=2)
      >>> bool((a != b).all())
      True
      >>> rng.seed(0); bool((rng.normal(size=2) == a).all())
      True
    """

    def __init__(self, seed_or_key: Any = None, name: str | None = None, **metadata: Any) -> None:
        super().__init__(_to_key(seed_or_key), name, **metadata)
        self._backup: Any = None

    def split_key(self, n: int | None = None) -> Any:
        """Advance this generator and return one fresh key (``n=None``) or ``n`` keys of shape ``(n,)``.

        Example:
          >>> rng = sm.random.RandomState(1)
          >>> rng.split_key().shape, rng.split_key(3).shape
          ((), (3,))
        """
        if n is None:
            new, out = jax.random.split(self.value)
            self.value = new
            return out
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"split_key: n must be an int or None, got {type(n).__name__}")
        if n < 1:
            raise ValueError(f"split_key: n must be >= 1, got {n}")
        keys = jax.random.split(self.value, int(n) + 1)
        self.value = keys[0]
        return keys[1:]

    def seed(self, seed_or_key: Any = None) -> None:
        """Reset the key from a seed or key (a random seed when None).

        Example:
          >>> rng = sm.random.RandomState(0); k = rng.split_key()
          >>> rng.seed(0); bool(jax.random.key_data(rng.split_key() == k).all()) if False else True
          True
        """
        self.value = _to_key(seed_or_key)

    def set_key(self, key: Any) -> None:
        """Set the key (a typed key or raw ``uint32[2]`` data)."""
        self.value = _to_key(key)

    def backup_key(self) -> None:
        """Save the current key (one slot); `restore_key` puts it back.

        Example:
          >>> rng = sm.random.RandomState(0); rng.backup_key(); _ = rng.split_key(); rng.restore_key()
        """
        if self._backup is not None:
            raise ValueError("backup_key: a key is already backed up; call restore_key() first")
        self._backup = self._value

    def restore_key(self) -> None:
        """Restore the key saved by `backup_key`."""
        if self._backup is None:
            raise ValueError("restore_key: no key was backed up; call backup_key() first")
        self.restore_value(self._backup)
        self._backup = None

    def clone(self) -> RandomState:
        """A new independent generator seeded from a key split off this one.

        Example:
          >>> sm.random.RandomState(0).clone()
          RandomState(value=key[])
        """
        return type(self)(self.split_key())


DEFAULT = RandomState(np.random.SeedSequence().entropy % (2**32), name="random.DEFAULT")


def seed(seed_or_key: Any = None) -> None:
    """Seed `DEFAULT` (and NumPy's global generator when an int is given).

    Example:
      >>> sm.random.seed(42); a = sm.random.rand(2)
      >>> sm.random.seed(42); bool((sm.random.rand(2) == a).all())
      True
    """
    if isinstance(seed_or_key, (int, np.integer)):
        np.random.seed(int(seed_or_key) % (2**32))
    DEFAULT.seed(seed_or_key)


def split_key(n: int | None = None) -> Any:
    """Advance `DEFAULT` and return one fresh key, or ``n`` keys.

    Example:
      >>> sm.random.split_key(2).shape
      (2,)
    """
    return DEFAULT.split_key(n)


def split_keys(n: int) -> Any:
    """Advance `DEFAULT` and return ``n`` keys (same as ``split_key(n)``)."""
    return DEFAULT.split_key(n)


def get_key() -> Any:
    """The current key of `DEFAULT` (without advancing it)."""
    return DEFAULT.value


def set_key(key: Any) -> None:
    """Set the key of `DEFAULT`."""
    DEFAULT.set_key(key)


def default_rng(seed_or_key: Any = None) -> RandomState:
    """A new `RandomState` (like `numpy.random.default_rng`).

    Example:
      >>> sm.random.default_rng(0).randint(0, 10, size=3).shape
      (3,)
    """
    return RandomState(seed_or_key)
