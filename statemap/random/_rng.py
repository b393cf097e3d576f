"""`RandomState`: a `State` holding a typed JAX PRNG key; the global `DEFAULT` generator and its samplers.

Drawing advances the key by writing the state, so transforms thread it like any other state: inside `scan`
each iteration draws new numbers, and the mapping transforms split it per lane.
"""

from __future__ import annotations

import operator
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import message, short_aval
from .._state import State
from ._samplers import MAX_DIM, SamplerMethods, _check_key

__all__ = [
    "RandomState",
    "DEFAULT",
    "seed",
    "seed_context",
    "split_key",
    "split_keys",
    "get_key",
    "set_key",
    "get_key_data",
    "restore_key",
    "clone_rng",
    "default_rng",
    "rand",
    "randn",
    "randint",
    "random",
    "uniform",
    "normal",
    "truncated_normal",
    "bernoulli",
    "choice",
    "permutation",
    "shuffle",
    "exponential",
    "gamma",
    "beta",
    "poisson",
    "categorical",
    "multivariate_normal",
    "chisquare",
    "power",
    "standard_t",
    "triangular",
    "rand_like",
    "randn_like",
    "randint_like",
]


def _to_key(seed_or_key: Any, who: str = "RandomState") -> Any:
    """A typed key from an int seed, an integer scalar array, a typed key, or raw ``uint32[..., 2]`` data."""
    if seed_or_key is None:
        seed_or_key = int.from_bytes(os.urandom(4), "little")
    if isinstance(seed_or_key, (int, np.integer)) and not isinstance(seed_or_key, (bool, np.bool_)):
        return jax.random.key(int(seed_or_key) % (2**32))
    if isinstance(seed_or_key, RandomState):
        return seed_or_key.value
    dtype = getattr(seed_or_key, "dtype", None)
    shape = getattr(seed_or_key, "shape", None)
    if dtype is not None and shape is not None:
        if jnp.issubdtype(dtype, jax.dtypes.prng_key):
            return _single_key(who, seed_or_key, tuple(shape), "")
        if np.dtype(dtype) == np.uint32 and tuple(shape)[-1:] == (2,):
            return jax.random.wrap_key_data(_single_key(who, seed_or_key, tuple(shape)[:-1], " data"))
        if tuple(shape) == () and jnp.issubdtype(dtype, np.integer):
            return jax.random.key(seed_or_key)  # also works on a traced seed
    found = type(seed_or_key).__name__
    if dtype is not None and shape is not None:
        found += f" of dtype {dtype} and shape {tuple(shape)}"
    raise TypeError(
        message(
            who,
            "seed_or_key is neither a seed nor a PRNG key",
            "an int seed, an integer scalar array, a typed key (jax.random.key) or raw uint32[2] key data",
            f"{found} {seed_or_key!r:.60}",
            "pass an int such as 0, or a key from jax.random.key",
        )
    )


def _single_key(who: str, key: Any, batch: tuple[int, ...], what: str) -> Any:
    """`key` unchanged if it is one key (`batch`, its shape without the key data axis, is empty)."""
    if batch == ():
        return key
    raise ValueError(
        message(
            who,
            f"seed_or_key is an array of {int(np.prod(batch))} keys, not one key",
            "a single key: a typed key of shape () or raw key data of shape (2,)",
            f"key{what} with batch shape {batch} ({short_aval(key)})",
            "pick one key (e.g. keys[0]); to give each lane of a mapping its own key, seed one generator and "
            "let vmap2 split it",
        )
    )


# -- lane keys: a mapping's lanes draw with keys split off outside the lane ----------------------------------
_LANES = threading.local()


def _lane_registry() -> dict[int, tuple[Any, Any]]:
    registry: dict[int, tuple[Any, Any]] | None = getattr(_LANES, "keys", None)
    if registry is None:
        registry = _LANES.keys = {}
    return registry


def _take_lane_key(value: Any) -> Any:
    """The draw key registered for the lane key object `value` (once), or None."""
    registry = _lane_registry()
    if not registry:
        return None
    entry = registry.get(id(value))
    if entry is None or entry[0] is not value:
        return None
    del registry[id(value)]
    return entry[1]


@contextmanager
def lane_keys() -> Iterator[Callable[[Any, Any], None]]:
    """Register lane keys while a mapping traces or runs one lane: ``register(carry, draw)``.

    A mapping splits a generator's key ``K`` into ``split(K, 2B + 1)``: the generator keeps key 0, and lane ``i``
    sees key ``B + 1 + i`` as the generator's value (its *carry*) and draws its first numbers with key ``1 + i``
    directly, as hand-written ``jax.vmap(sampler)(jax.random.split(K, B))`` code does: no split inside the lane
    unless it draws twice. Registrations are per thread and end with the context.
    """
    registry = _lane_registry()
    added: list[int] = []

    def register(carry: Any, draw: Any) -> None:
        registry[id(carry)] = (carry, draw)
        added.append(id(carry))

    try:
        yield register
    finally:
        for k in added:
            registry.pop(k, None)


def _key_count(n: Any) -> int:
    """`n`, the number of keys asked of `split_key`, checked: an int in ``[1, MAX_DIM - 1]``."""
    try:
        if isinstance(n, (bool, np.bool_)):
            raise TypeError
        num = operator.index(n)
    except TypeError:
        raise TypeError(
            message(
                "split_key",
                "n is not an int",
                "None (one key) or a concrete int >= 1",
                f"{type(n).__name__} {n!r:.60}",
                "pass the number of keys as a Python int",
            )
        ) from None
    if num < 1:
        raise ValueError(
            message("split_key", "n is less than 1", "None (one key) or an int >= 1", f"n={num}", "pass n > 0")
        )
    if num >= MAX_DIM:
        raise ValueError(
            message(
                "split_key",
                "n is too large for an array dimension",
                f"an int below {MAX_DIM} (2**63 - 1)",
                f"n={num}",
                "pass a smaller number of keys",
            )
        )
    return num


class RandomState(State[jax.Array], SamplerMethods):
    """A random number generator state: holds a typed JAX key and advances it on every draw.

    Args:
      seed_or_key: An int seed, a typed key (`jax.random.key`), raw ``uint32[2]`` key data, or None for a
        random seed.

    Examples:
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

    def _sample(self, who: str, key: Any, draw: Callable[..., Any], *args: Any) -> Any:
        """Run ``draw(key, *args)``: with `key` None, a key split off this generator (restored on failure)."""
        if key is not None:
            return draw(_check_key(who, key), *args)
        before = self.value  # through the getter: inside a trace this is the traced key
        try:
            return draw(self.split_key(), *args)
        except BaseException:
            self.restore_value(before)
            raise

    def split_key(self, n: int | None = None) -> Any:
        """Advance this generator and return one fresh key (``n=None``) or ``n`` keys of shape ``(n,)``.

        Inside one lane of a mapping, the first single key is the lane's own draw key, handed out without
        another split (see `lane_keys`); every later key is split off as usual.

        Raises:
          TypeError / ValueError: `n` is not an int in ``[1, 2**63 - 2]``; the key is left unchanged.

        Examples:
          >>> rng = sm.random.RandomState(1)
          >>> rng.split_key().shape, rng.split_key(3).shape
          ((), (3,))
        """
        if n is None:
            value = self.value
            draw = _take_lane_key(value)
            if draw is not None:
                return draw
            new, out = jax.random.split(value)
            self.value = new
            return out
        num = _key_count(n)
        keys = jax.random.split(self.value, num + 1)
        self.value = keys[0]
        return keys[1:]

    def seed(self, seed_or_key: Any = None) -> None:
        """Reset the key from a seed or key (a random seed when None).

        Raises:
          TypeError: `seed_or_key` is not a seed or key; the key is left unchanged.
          ValueError: `seed_or_key` is an array of several keys (a batch shape); the key is left unchanged.

        Examples:
          >>> rng = sm.random.RandomState(0); a = rng.rand(2)
          >>> rng.seed(0); bool((rng.rand(2) == a).all())
          True
        """
        self.value = _to_key(seed_or_key, "seed")

    def set_key(self, key: Any) -> None:
        """Set the key (a typed key or raw ``uint32[2]`` data).

        Examples:
          >>> rng = sm.random.RandomState(0); rng.set_key(jax.random.key(1))
          >>> bool((rng.rand(2) == sm.random.RandomState(1).rand(2)).all())
          True
        """
        self.value = _to_key(key, "set_key")

    def backup_key(self) -> None:
        """Save the current key (one slot); `restore_key` puts it back.

        Examples:
          >>> rng = sm.random.RandomState(0); rng.backup_key(); _ = rng.split_key(); rng.restore_key()
        """
        if self._backup is not None:
            raise ValueError("backup_key: a key is already backed up; call restore_key() first")
        self._backup = self._value

    def restore_key(self, key: Any = None) -> None:
        """Put the key back: to the key saved by `backup_key` (no argument), or to `key`.

        Args:
          key: None to restore the backed-up key (and empty the backup slot); otherwise a key to set, as
            accepted by `set_key`: an int seed, a typed key or raw ``uint32[2]`` key data (from `get_key_data`).
            The backup slot is left alone.
        Raises:
          ValueError: no key is given and none was backed up.
          TypeError: `key` is not a seed or key; the key is left unchanged.

        Examples:
          >>> rng = sm.random.RandomState(0); rng.backup_key(); a = rng.rand(2); rng.restore_key()
          >>> bool((rng.rand(2) == a).all())
          True
          >>> data = sm.random.get_key_data(rng); b = rng.rand(2); rng.restore_key(data)
          >>> bool((rng.rand(2) == b).all())
          True
        """
        if key is not None:
            self.value = _to_key(key, "restore_key")
            return
        if self._backup is None:
            raise ValueError("restore_key: no key was backed up; call backup_key() first, or pass a key")
        self.restore_value(self._backup)
        self._backup = None

    def clone(self) -> RandomState:
        """A new independent generator seeded from a key split off this one.

        Examples:
          >>> sm.random.RandomState(0).clone()
          RandomState(value=key[])
        """
        return type(self)(self.split_key())


DEFAULT = RandomState(None, name="random.DEFAULT")  # a random seed

# The module-level samplers are DEFAULT's bound methods, as in `numpy.random` (whose `normal` is its global
# generator's method): each sampler has one signature and one docstring. DEFAULT is never rebound (seeding
# writes its key), so they always draw from the current global generator.
rand = DEFAULT.rand
randn = DEFAULT.randn
randint = DEFAULT.randint
random = DEFAULT.random
uniform = DEFAULT.uniform
normal = DEFAULT.normal
truncated_normal = DEFAULT.truncated_normal
bernoulli = DEFAULT.bernoulli
choice = DEFAULT.choice
permutation = DEFAULT.permutation
shuffle = DEFAULT.shuffle
exponential = DEFAULT.exponential
gamma = DEFAULT.gamma
beta = DEFAULT.beta
poisson = DEFAULT.poisson
categorical = DEFAULT.categorical
multivariate_normal = DEFAULT.multivariate_normal
chisquare = DEFAULT.chisquare
power = DEFAULT.power
standard_t = DEFAULT.standard_t
triangular = DEFAULT.triangular
rand_like = DEFAULT.rand_like
randn_like = DEFAULT.randn_like
randint_like = DEFAULT.randint_like
restore_key = DEFAULT.restore_key


def seed(seed_or_key: Any = None) -> None:
    """Seed `DEFAULT` (and NumPy's global generator when an int is given).

    Examples:
      >>> sm.random.seed(42); a = sm.random.rand(2)
      >>> sm.random.seed(42); bool((sm.random.rand(2) == a).all())
      True
    """
    DEFAULT.seed(seed_or_key)  # first: a bad seed raises before anything changes
    if isinstance(seed_or_key, (int, np.integer)) and not isinstance(seed_or_key, (bool, np.bool_)):
        np.random.seed(int(seed_or_key) % (2**32))


@contextmanager
def seed_context(seed_or_key: Any = None) -> Iterator[None]:
    """Seed `DEFAULT` (and NumPy's global generator, for an int) inside a block, restoring both afterwards.

    Args:
      seed_or_key: As for `seed`.
    Raises:
      TypeError: `seed_or_key` is not a seed or key (nothing is changed).

    Examples:
      >>> key = sm.random.get_key()
      >>> with sm.random.seed_context(1):
      ...     a = sm.random.rand(2)
      >>> with sm.random.seed_context(1):
      ...     b = sm.random.rand(2)
      >>> bool((a == b).all()), sm.random.get_key() is key
      (True, True)
    """
    old_key = DEFAULT.value
    old_np = np.random.get_state()
    seed(seed_or_key)
    try:
        yield
    finally:
        DEFAULT.value = old_key
        np.random.set_state(old_np)


def split_key(n: int | None = None) -> Any:
    """Advance `DEFAULT` and return one fresh key, or ``n`` keys.

    Examples:
      >>> sm.random.split_key(2).shape
      (2,)
    """
    return DEFAULT.split_key(n)


def split_keys(n: int) -> Any:
    """Advance `DEFAULT` and return ``n`` keys (same as ``split_key(n)``).

    Examples:
      >>> sm.random.split_keys(3).shape
      (3,)
    """
    return DEFAULT.split_key(n)


def get_key() -> Any:
    """The current key of `DEFAULT` (without advancing it).

    Examples:
      >>> key = sm.random.get_key(); _ = sm.random.rand(); sm.random.get_key() is key
      False
    """
    return DEFAULT.value


def set_key(key: Any) -> None:
    """Set the key of `DEFAULT` (a typed key or raw ``uint32[2]`` data).

    Examples:
      >>> sm.random.set_key(jax.random.key(3))
      >>> bool((sm.random.rand(2) == sm.random.RandomState(3).rand(2)).all())
      True
    """
    DEFAULT.set_key(key)


def _generator(who: str, rng: Any) -> RandomState:
    if rng is None:
        return DEFAULT
    if isinstance(rng, RandomState):
        return rng
    raise TypeError(
        message(
            who,
            "rng is not a generator",
            "a RandomState, or None for random.DEFAULT",
            f"{type(rng).__name__} {rng!r:.60}",
            "pass a RandomState such as sm.random.RandomState(0), or nothing",
        )
    )


def get_key_data(rng: RandomState | None = None) -> Any:
    """The raw ``uint32[2]`` data of the key of `rng` (`DEFAULT` when None), without advancing it.

    The data can be stored (it is a plain integer array) and given back to `restore_key`, `set_key` or
    `RandomState` to continue the same stream of numbers.

    Raises:
      TypeError: `rng` is not a `RandomState`.

    Examples:
      >>> rng = sm.random.RandomState(0)
      >>> data = sm.random.get_key_data(rng)
      >>> data.dtype, data.shape
      (dtype('uint32'), (2,))
      >>> bool((sm.random.RandomState(data).rand(2) == rng.rand(2)).all())
      True
    """
    return jax.random.key_data(_generator("get_key_data", rng).value)


def clone_rng(seed_or_key: Any = None, clone: bool = True) -> RandomState:
    """A generator for a component that draws its own numbers (as brainstate's ``clone_rng``).

    Args:
      seed_or_key: None for `DEFAULT`, a `RandomState`, or a seed or key (an int seed, a typed key, raw
        ``uint32[2]`` key data) for a new generator with that key.
      clone: With a generator (None or a `RandomState`): True returns ``generator.clone()``, a new independent
        generator whose key is split off the generator's (which advances it, so the two never draw the same
        numbers); False returns the generator itself. Ignored for a seed or key.
    Returns:
      A `RandomState`. To copy a generator's key exactly (the same stream of numbers), use
      ``RandomState(get_key_data(rng))``.
    Raises:
      TypeError: `seed_or_key` is not a seed, key or generator.

    Examples:
      >>> a = sm.random.clone_rng(); a is sm.random.DEFAULT
      False
      >>> sm.random.clone_rng(clone=False) is sm.random.DEFAULT
      True
      >>> bool((sm.random.clone_rng(3).rand(2) == sm.random.RandomState(3).rand(2)).all())
      True
    """
    if seed_or_key is None or isinstance(seed_or_key, RandomState):
        rng = _generator("clone_rng", seed_or_key)
        return rng.clone() if clone else rng
    return RandomState(_to_key(seed_or_key, "clone_rng"))


def default_rng(seed_or_key: Any = None) -> RandomState:
    """A new `RandomState` (like `numpy.random.default_rng`).

    Examples:
      >>> sm.random.default_rng(0).randint(0, 10, size=3).shape
      (3,)
    """
    return RandomState(seed_or_key)
