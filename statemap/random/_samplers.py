"""NumPy-style samplers: the sampling methods of `RandomState`.

Each distribution is implemented once, as a private pure function of an explicit key (``_normal(key, ...)``).
`SamplerMethods` (a base class of `RandomState`) turns it into a method: with ``key=None`` the method draws a
key with ``self.split_key()`` (a state write, so transforms thread the generator), otherwise it uses the given
key and leaves the state alone. The public module functions (`statemap.random.normal`, ...) are these methods
bound to `DEFAULT` (see `_rng`).

Shapes follow NumPy: ``size=None`` gives the broadcast shape of the distribution parameters, and a given
``size`` must be one the parameters broadcast to. Parameters are broadcast explicitly, so the samplers work
under ``jax_numpy_rank_promotion="raise"``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike, DTypeLike

from .._compat import is_tracer
from .._errors import message

__all__ = ["SamplerMethods"]

Size = int | Sequence[int] | None

_MVN_METHODS = ("cholesky", "eigh", "svd")

MAX_DIM = 2**63 - 1  # XLA's array dimensions and element counts are int64


# -- argument helpers ---------------------------------------------------------------------------------------
def _dim(who: str, what: str, d: Any) -> int:
    try:
        if isinstance(d, bool):
            raise TypeError
        n = operator.index(d)
    except TypeError:
        raise TypeError(
            message(
                who,
                f"{what} is not an integer",
                "non-negative ints",
                f"{type(d).__name__} {d!r:.60}",
                f"pass whole numbers, e.g. {who}(size=(2, 3))" if what.startswith("size") else f"{who}(2, 3)",
            )
        ) from None
    if n < 0:
        raise ValueError(message(who, f"{what} is negative", "non-negative ints", f"{n}", "use sizes >= 0"))
    if n > MAX_DIM:
        raise ValueError(
            message(
                who, f"{what} is too large for an array dimension", f"ints <= {MAX_DIM}", f"{n}", "use smaller sizes"
            )
        )
    return n


def _dims(who: str, dn: Sequence[Any]) -> tuple[int, ...]:
    """The dimensions given as ``*dn`` (to `rand` and `randn`), checked."""
    return _checked_shape(who, "the dimensions", tuple(_dim(who, f"dimension {i}", d) for i, d in enumerate(dn)))


def _checked_shape(who: str, what: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """`shape`, if its number of elements fits in an array."""
    if np.prod(shape, dtype=object) > MAX_DIM:
        raise ValueError(
            message(
                who,
                f"{what} give too many elements for one array",
                f"at most {MAX_DIM} elements",
                f"shape {shape}",
                "use smaller sizes",
            )
        )
    return shape


def _size(who: str, size: Size) -> tuple[int, ...] | None:
    """Normalise a NumPy `size` (None, an int, or a sequence of ints) to a shape tuple."""
    if size is None:
        return None
    if isinstance(size, (tuple, list)) or (isinstance(size, (np.ndarray, jax.Array)) and np.ndim(size) == 1):
        return _checked_shape(who, "size", tuple(_dim(who, f"size[{i}]", d) for i, d in enumerate(size)))
    return (_dim(who, "size", size),)


def _shape_of(who: str, size: Size, **params: Any) -> tuple[int, ...]:
    """`size` as a tuple, or the broadcast shape of the (non-None) parameters when `size` is None."""
    shape = _size(who, size)
    shapes = {name: np.shape(p) for name, p in params.items() if p is not None}
    if shape is None:
        try:
            return tuple(np.broadcast_shapes(*shapes.values()))
        except ValueError:
            found = ", ".join(f"{k} of shape {s}" for k, s in shapes.items())
            raise ValueError(
                message(
                    who,
                    "the distribution parameters do not broadcast together",
                    "parameter shapes that broadcast (NumPy rules)",
                    found,
                    "reshape the parameters so they broadcast, or pass size=",
                )
            ) from None
    for name, s in shapes.items():
        ok = len(s) <= len(shape) and all(a in (1, b) for a, b in zip(s[::-1], shape[::-1], strict=False))
        if not ok:
            raise ValueError(
                message(
                    who,
                    f"{name} of shape {s} does not broadcast to size {shape}",
                    f"{name} with a shape that broadcasts to size",
                    f"{name} shape {s}, size {shape}",
                    f"pass a size ending in {s}, or leave size=None to use the shape of the parameters",
                )
            )
    return shape


def _fit(x: ArrayLike, shape: tuple[int, ...], dtype: Any = None) -> Array:
    return jnp.broadcast_to(jnp.asarray(x, dtype), shape)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _not_numeric(who: str, name: str, x: Any) -> TypeError:
    return TypeError(
        message(
            who,
            f"{name} is not a number or an array of numbers",
            "a number, an array, or a (nested, rectangular) list or tuple of numbers, as NumPy accepts",
            f"{type(x).__name__} {x!r:.60}",
            f"pass {name} as a number or an array, e.g. jnp.array([0.5, 1.0])",
        )
    )


def _is_numeric(x: Any) -> bool:
    """A number, or an array (also a tracer) of numbers or bools."""
    if isinstance(x, (bool, int, float, np.number, np.bool_)):
        return True
    dtype = getattr(x, "dtype", None)
    return (
        dtype is not None
        and hasattr(x, "shape")
        and (jnp.issubdtype(dtype, np.number) or jnp.issubdtype(dtype, np.bool_))
    )


def _array(who: str, name: str, x: Any) -> Any:
    """The array-like parameter `x`, checked to be numeric; Python lists and tuples become arrays (as in NumPy)."""
    if isinstance(x, (list, tuple)):
        # Check the leaves first: JAX would parse a string as a dtype name (with a NumPy deprecation warning).
        if not all(_is_numeric(leaf) for leaf in jax.tree_util.tree_leaves(x)):
            raise _not_numeric(who, name, x)
        try:
            return jnp.asarray(x)
        except (TypeError, ValueError):  # ragged, or holding None
            raise _not_numeric(who, name, x) from None
    if not _is_numeric(x):
        raise _not_numeric(who, name, x)
    return x


def _as_float(x: Any) -> Any:
    """An integer or bool array as JAX's default float (float arrays keep their dtype)."""
    return x if jnp.issubdtype(jnp.result_type(x), np.inexact) else jnp.asarray(x, jnp.result_type(float))


def _float_dtype(who: str, dtype: DTypeLike | None) -> Any:
    """`dtype` (JAX's default float when None), which must be a float dtype."""
    if dtype is None:
        return jnp.result_type(float)
    if not jnp.issubdtype(dtype, np.floating):
        raise ValueError(
            message(who, "dtype is not a float dtype", "a float dtype", f"dtype={dtype!r}", "pass dtype=jnp.float32")
        )
    return jax.dtypes.canonicalize_dtype(dtype)


def _check_values(
    who: str, name: str, x: Any, ok: Callable[[Any], Any], expected: str, fix: str, dtype: Any = None
) -> None:
    """Raise a ValueError when the concrete values of `x` (as `dtype`) are not all ``ok`` (tracers pass)."""
    if is_tracer(x):
        return
    arr = np.asarray(x, dtype)
    if arr.size and not np.all(ok(arr)):
        raise ValueError(
            message(who, f"{name} is out of range", expected, f"{name} with values in [{arr.min()}, {arr.max()}]", fix)
        )


def _one_key(who: str, key: Any, batch: tuple[int, ...]) -> Any:
    """`key` if it is a single key (`batch`, its shape without the key data axis, is empty)."""
    if batch == ():
        return key
    raise ValueError(
        message(
            who,
            f"key is an array of {int(np.prod(batch))} keys, not one key",
            "a single key: a typed key of shape () or raw key data of shape (2,)",
            f"keys with batch shape {batch}",
            "pass one key (e.g. keys[0]), or map the sampler with vmap2 to draw once per key",
        )
    )


def _check_key(who: str, key: Any) -> Any:
    """A key for ``key=``: a typed key, raw ``uint32[..., 2]`` data, or an int seed (integer scalar) made a key."""
    if _is_int(key):
        return jax.random.key(int(key) % (2**32))
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return _one_key(who, key, np.shape(key))
    if dtype is not None and np.dtype(dtype) == np.uint32 and np.shape(key)[-1:] == (2,):
        return _one_key(who, key, np.shape(key)[:-1])
    if dtype is not None and np.shape(key) == () and jnp.issubdtype(dtype, np.integer):
        return jax.random.key(key)  # an integer scalar array seed, also traced
    raise TypeError(
        message(
            who,
            "key is not a PRNG key",
            "an int seed, a typed key (jax.random.key) or raw uint32[2] key data",
            f"{type(key).__name__} {key!r:.60}",
            "pass key=jax.random.key(seed) or key=seed, or leave key=None to draw from the generator",
        )
    )


# -- the samplers, as pure functions of a key ---------------------------------------------------------------
def _rand(key: Any, dn: tuple[int, ...]) -> Array:
    return jax.random.uniform(key, dn)


def _randn(key: Any, dn: tuple[int, ...]) -> Array:
    return jax.random.normal(key, dn)


def _int_bounds(who: str, low: ArrayLike, high: ArrayLike | None) -> tuple[Any, Any]:
    """(low, high) of an integer draw from ``[low, high)``, or ``[0, low)`` when `high` is None; checked."""
    low = _array(who, "low", low)
    if high is None:
        low, high = 0, low
    else:
        high = _array(who, "high", high)
    if not (is_tracer(low) or is_tracer(high)) and np.any(np.asarray(high) <= np.asarray(low)):
        raise ValueError(
            message(
                who,
                "the range [low, high) is empty",
                "low < high (or one bound n > 0, for the range [0, n))",
                f"low={np.asarray(low)!r:.60}, high={np.asarray(high)!r:.60}",
                f"pass a larger high, e.g. {who}(..., 0, 10)" if who.endswith("like") else f"{who}(0, 10)",
            )
        )
    return low, high


def _randint(key: Any, low: ArrayLike, high: ArrayLike | None, size: Size, dtype: DTypeLike) -> Array:
    low, high = _int_bounds("randint", low, high)
    shape = _shape_of("randint", size, low=low, high=high)
    return jax.random.randint(key, shape, _fit(low, shape), _fit(high, shape), dtype)


def _random(key: Any, size: Size) -> Array:
    return jax.random.uniform(key, _size("random", size) or ())


def _uniform(key: Any, low: ArrayLike, high: ArrayLike, size: Size, dtype: DTypeLike | None) -> Array:
    low, high = _array("uniform", "low", low), _array("uniform", "high", high)
    shape = _shape_of("uniform", size, low=low, high=high)
    return jax.random.uniform(key, shape, dtype, _fit(low, shape), _fit(high, shape))


def _normal(key: Any, loc: ArrayLike | None, scale: ArrayLike | None, size: Size, dtype: DTypeLike | None) -> Array:
    loc = None if loc is None else _array("normal", "loc", loc)
    scale = None if scale is None else _array("normal", "scale", scale)
    shape = _shape_of("normal", size, loc=loc, scale=scale)
    x = jax.random.normal(key, shape, dtype)
    if scale is not None:
        x = x * _fit(scale, shape, x.dtype)
    if loc is not None:
        x = x + _fit(loc, shape, x.dtype)
    return x


def _truncated_normal(
    key: Any, lower: ArrayLike, upper: ArrayLike, size: Size, loc: ArrayLike, scale: ArrayLike
) -> Array:
    who = "truncated_normal"
    lower, upper = _array(who, "lower", lower), _array(who, "upper", upper)
    loc, scale = _array(who, "loc", loc), _array(who, "scale", scale)
    shape = _shape_of(who, size, lower=lower, upper=upper, loc=loc, scale=scale)
    dtype = jnp.result_type(float)
    loc_, scale_ = _fit(loc, shape, dtype), _fit(scale, shape, dtype)
    lo = (_fit(lower, shape, dtype) - loc_) / scale_
    hi = (_fit(upper, shape, dtype) - loc_) / scale_
    return jax.random.truncated_normal(key, lo, hi, shape) * scale_ + loc_


def _bernoulli(key: Any, p: ArrayLike, size: Size) -> Array:
    p = _array("bernoulli", "p", p)
    if not is_tracer(p):
        arr = np.asarray(p)
        if arr.dtype.kind in "biuf" and np.any((arr < 0) | (arr > 1)):
            raise ValueError(
                message(
                    "bernoulli",
                    "p is not a probability",
                    "0 <= p <= 1",
                    f"p with values in [{arr.min()}, {arr.max()}]",
                    "clip or rescale p into [0, 1]",
                )
            )
    shape = _shape_of("bernoulli", size, p=p)
    return jax.random.bernoulli(key, _fit(_as_float(p), shape), shape)


def _choice(key: Any, a: int | ArrayLike, size: Size, replace: bool, p: ArrayLike | None) -> Array:
    a = _array("choice", "a", _dim("choice", "a", a) if _is_int(a) else a)
    p = None if p is None else _array("choice", "p", p)
    return jax.random.choice(key, a, _size("choice", size) or (), replace, p)


def _permutation(key: Any, x: int | ArrayLike, axis: int, independent: bool) -> Array:
    x = _dim("permutation", "x", x) if _is_int(x) else x
    return jax.random.permutation(key, _array("permutation", "x", x), axis, independent)


def _shuffle(key: Any, x: ArrayLike, axis: int) -> Array:
    x = _array("shuffle", "x", x)
    if np.ndim(x) == 0:
        raise TypeError(
            message(
                "shuffle",
                "x has no axis to shuffle",
                "an array with at least one axis",
                f"{type(x).__name__} {x!r:.60}",
                "pass an array, or use permutation(n) for a permuted range(n)",
            )
        )
    return _permutation(key, x, axis, False)


def _exponential(key: Any, scale: ArrayLike | None, size: Size) -> Array:
    scale = None if scale is None else _array("exponential", "scale", scale)
    shape = _shape_of("exponential", size, scale=scale)
    x = jax.random.exponential(key, shape)
    return x if scale is None else x * _fit(scale, shape, x.dtype)


def _gamma(key: Any, shape_: ArrayLike, scale: ArrayLike | None, size: Size) -> Array:
    shape_ = _array("gamma", "shape", shape_)
    scale = None if scale is None else _array("gamma", "scale", scale)
    shape = _shape_of("gamma", size, shape=shape_, scale=scale)
    x = jax.random.gamma(key, _fit(shape_, shape, jnp.result_type(float)), shape)
    return x if scale is None else x * _fit(scale, shape, x.dtype)


def _beta(key: Any, a: ArrayLike, b: ArrayLike, size: Size) -> Array:
    a, b = _array("beta", "a", a), _array("beta", "b", b)
    shape = _shape_of("beta", size, a=a, b=b)
    dtype = jnp.result_type(float)
    return jax.random.beta(key, _fit(a, shape, dtype), _fit(b, shape, dtype), shape)


def _poisson(key: Any, lam: ArrayLike, size: Size) -> Array:
    lam = _array("poisson", "lam", lam)
    shape = _shape_of("poisson", size, lam=lam)
    return jax.random.poisson(key, _fit(lam, shape, jnp.result_type(float)), shape)


def _categorical(key: Any, logits: ArrayLike, axis: int, size: Size) -> Array:
    logits = _as_float(_array("categorical", "logits", logits))
    return jax.random.categorical(key, logits, axis, _size("categorical", size))


def _multivariate_normal(key: Any, mean: ArrayLike, cov: ArrayLike, size: Size, method: str) -> Array:
    if method not in _MVN_METHODS:
        raise ValueError(
            message(
                "multivariate_normal",
                f"unknown method {method!r}",
                f"one of {_MVN_METHODS}",
                repr(method),
                "use method='cholesky' (fast), 'eigh' or 'svd' (for singular covariances)",
            )
        )
    mean = _as_float(_array("multivariate_normal", "mean", mean))
    cov = _as_float(_array("multivariate_normal", "cov", cov))
    return jax.random.multivariate_normal(key, mean, cov, _size("multivariate_normal", size), method=method)


def _positive(who: str, name: str, x: Any, dtype: Any) -> None:
    """NumPy's check of a parameter that must be positive, on its values as the draw uses them (in `dtype`)."""
    _check_values(
        who, name, x, lambda v: v > 0, f"{name} > 0 (in {np.dtype(dtype).name})", f"pass a positive {name}", dtype
    )


def _chisquare(key: Any, df: ArrayLike, size: Size, dtype: DTypeLike | None) -> Array:
    df, dtype = _array("chisquare", "df", df), _float_dtype("chisquare", dtype)
    shape = _shape_of("chisquare", size, df=df)
    _positive("chisquare", "df", df, dtype)
    return jax.random.chisquare(key, _fit(df, shape, dtype), shape, dtype)


def _standard_t(key: Any, df: ArrayLike, size: Size, dtype: DTypeLike | None) -> Array:
    df, dtype = _array("standard_t", "df", df), _float_dtype("standard_t", dtype)
    shape = _shape_of("standard_t", size, df=df)
    _positive("standard_t", "df", df, dtype)
    return jax.random.t(key, _fit(df, shape, dtype), shape, dtype)


def _power(key: Any, a: ArrayLike, size: Size, dtype: DTypeLike | None) -> Array:
    a, dtype = _array("power", "a", a), _float_dtype("power", dtype)
    shape = _shape_of("power", size, a=a)
    _positive("power", "a", a, dtype)
    # Inverse CDF: P(U ** (1 / a) <= x) = P(U <= x ** a) = x ** a, NumPy's power distribution on [0, 1].
    return jax.random.uniform(key, shape, dtype) ** (1 / _fit(a, shape, dtype))


def _check_triangle(left: Any, mode: Any, right: Any, dtype: Any) -> None:
    if any(is_tracer(x) for x in (left, mode, right)):
        return
    arrays = np.broadcast_arrays(np.asarray(left, dtype), np.asarray(mode, dtype), np.asarray(right, dtype))
    lo, mid, hi = (np.ravel(x) for x in arrays)
    bad = (lo > mid) | (mid > hi) | (lo == hi) | np.isnan(lo) | np.isnan(mid) | np.isnan(hi)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            message(
                "triangular",
                "the parameters are not ordered",
                "left <= mode <= right and left < right",
                f"left={lo[i]}, mode={mid[i]}, right={hi[i]} ({int(bad.sum())} of {bad.size} entries out of order)",
                "pass the bounds in order, e.g. triangular(0.0, 0.5, 1.0)",
            )
        )


def _triangular(key: Any, left: ArrayLike, mode: ArrayLike, right: ArrayLike, size: Size, dtype: Any) -> Array:
    who = "triangular"
    left, mode, right = _array(who, "left", left), _array(who, "mode", mode), _array(who, "right", right)
    dtype = _float_dtype(who, dtype)
    shape = _shape_of(who, size, left=left, mode=mode, right=right)
    _check_triangle(left, mode, right, dtype)
    lo, mid, hi = _fit(left, shape, dtype), _fit(mode, shape, dtype), _fit(right, shape, dtype)
    return jax.random.triangular(key, lo, mid, hi, shape, dtype)


def _like(who: str, x: Any, dtype: DTypeLike | None, kind: Any) -> tuple[tuple[int, ...], Any]:
    """The shape of `x` and the dtype of a draw like it: `dtype`, else that of `x` if of `kind`, else JAX's default."""
    x = _array(who, "input", x)
    if dtype is None:
        own = jnp.result_type(x)
        dtype = own if jnp.issubdtype(own, kind) else jnp.result_type(float if kind is np.floating else int)
    return tuple(np.shape(x)), dtype


def _rand_like(key: Any, x: ArrayLike, dtype: DTypeLike | None) -> Array:
    shape, dtype = _like("rand_like", x, dtype, np.floating)
    return jax.random.uniform(key, shape, _float_dtype("rand_like", dtype))


def _randn_like(key: Any, x: ArrayLike, dtype: DTypeLike | None) -> Array:
    shape, dtype = _like("randn_like", x, dtype, np.floating)
    return jax.random.normal(key, shape, _float_dtype("randn_like", dtype))


def _randint_like(key: Any, x: ArrayLike, low: ArrayLike, high: ArrayLike | None, dtype: DTypeLike | None) -> Array:
    shape, dtype = _like("randint_like", x, dtype, np.integer)
    low, high = _int_bounds("randint_like", low, high)
    _shape_of("randint_like", shape, low=low, high=high)  # the bounds must broadcast to the shape of x
    return jax.random.randint(key, shape, _fit(low, shape), _fit(high, shape), dtype)


# -- methods of RandomState ---------------------------------------------------------------------------------
class SamplerMethods:
    """The sampling methods of `RandomState` (a base class; `RandomState` provides `_sample`).

    With ``key=None`` a method advances the generator (a state write, threaded by transforms); with a key it
    only uses that key. If a draw fails, the generator keeps its key.

    The arguments most samplers share mean the same in each; a method documents them only where it differs:

    - `size`: the output shape, an int or a tuple of ints. None gives the broadcast shape of the distribution
      parameters; a given `size` must be one they broadcast to (NumPy's rule).
    - `key`: a PRNG key to draw with instead of advancing this generator: a typed key (`jax.random.key`), raw
      ``uint32[2]`` key data, or an int seed.
    - `dtype`: a float dtype for the samples (default: JAX's default float).
    - `input`, for the ``*_like`` samplers: an array (or list) whose shape the samples take. With `dtype` None
      they take its dtype too if it is of their kind (float; integer for `randint_like`), else JAX's default.

    Examples:
      >>> rng = sm.random.RandomState(0)
      >>> rng.normal(jnp.zeros(3)).shape, rng.normal(jnp.zeros(3), size=(2, 3)).shape
      ((3,), (2, 3))

      Given a key, a draw depends on that key only, not on the generator:

      >>> x = rng.uniform(size=2, key=1)
      >>> bool((x == sm.random.RandomState(5).uniform(size=2, key=jax.random.key(1))).all())
      True
    """

    __slots__ = ()

    def _sample(self, who: str, key: Any, draw: Callable[..., Array], *args: Any) -> Array:
        raise NotImplementedError

    def rand(self, *dn: int, key: Any = None) -> Array:
        """Uniform samples in ``[0, 1)`` of shape ``dn`` (like `numpy.random.rand`).

        Args:
          *dn: The dimensions of the result (none: a scalar).
          key: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array of shape ``dn`` with values in ``[0, 1)``.
        Examples:
          >>> rng = sm.random.RandomState(0)
          >>> x = rng.rand(2, 3)
          >>> x.shape, x.dtype, bool(((0 <= x) & (x < 1)).all())
          ((2, 3), dtype('float32'), True)
        """
        return self._sample("rand", key, _rand, _dims("rand", dn))

    def randn(self, *dn: int, key: Any = None) -> Array:
        """Standard normal samples of shape ``dn`` (like `numpy.random.randn`).

        Args:
          *dn: The dimensions of the result (none: a scalar).
          key: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array of shape ``dn``.
        Examples:
          >>> sm.random.RandomState(0).randn(4).shape
          (4,)
        """
        return self._sample("randn", key, _randn, _dims("randn", dn))

    def randint(
        self,
        low: ArrayLike,
        high: ArrayLike | None = None,
        size: Size = None,
        dtype: DTypeLike = int,
        key: Any = None,
    ) -> Array:
        """Integers drawn uniformly from ``[low, high)``, or ``[0, low)`` when `high` is None.

        Args:
          low: Lowest value (inclusive), or the exclusive upper bound when `high` is None.
          high: Upper bound (exclusive).
          dtype: An integer dtype (default: JAX's default int).
          size / key: As for every sampler (see `SamplerMethods`).
        Returns:
          An integer array.
        Examples:
          >>> x = sm.random.RandomState(0).randint(3, 7, size=5)
          >>> x.shape, bool(((3 <= x) & (x < 7)).all())
          ((5,), True)
        """
        return self._sample("randint", key, _randint, low, high, size, dtype)

    def random(self, size: Size = None, key: Any = None) -> Array:
        """Uniform samples in ``[0, 1)`` of shape `size` (like `numpy.random.random`).

        Args:
          size: Output shape (None: a scalar).
          key: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array.
        Examples:
          >>> sm.random.RandomState(0).random((2, 2)).shape
          (2, 2)
        """
        return self._sample("random", key, _random, size)

    def uniform(
        self,
        low: ArrayLike = 0.0,
        high: ArrayLike = 1.0,
        size: Size = None,
        key: Any = None,
        dtype: DTypeLike | None = None,
    ) -> Array:
        """Uniform samples in ``[low, high)``.

        Args:
          low: Lower bound (inclusive).
          high: Upper bound (exclusive).
          size / key / dtype: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array.
        Examples:
          >>> x = sm.random.RandomState(0).uniform(jnp.array([0.0, 10.0]), 11.0)
          >>> x.shape, bool(x[1] >= 10)
          ((2,), True)
        """
        return self._sample("uniform", key, _uniform, low, high, size, dtype)

    def normal(
        self,
        loc: ArrayLike | None = None,
        scale: ArrayLike | None = None,
        size: Size = None,
        key: Any = None,
        dtype: DTypeLike | None = None,
    ) -> Array:
        """Normal samples with mean `loc` and standard deviation `scale`.

        Args:
          loc: Mean (None: 0).
          scale: Standard deviation (None: 1).
          size / key / dtype: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array; ``jax.random.normal(key, shape) * scale + loc`` for the key drawn.
        Examples:
          >>> rng = sm.random.RandomState(0)
          >>> rng.normal(size=(2, 3)).shape, rng.normal(jnp.zeros(4), 2.0).shape
          ((2, 3), (4,))
        """
        return self._sample("normal", key, _normal, loc, scale, size, dtype)

    def truncated_normal(
        self,
        lower: ArrayLike,
        upper: ArrayLike,
        size: Size = None,
        loc: ArrayLike = 0.0,
        scale: ArrayLike = 1.0,
        key: Any = None,
    ) -> Array:
        """Normal samples with mean `loc` and standard deviation `scale`, truncated to ``[lower, upper]``.

        Args:
          lower: Lower truncation bound (in the units of the samples, not standardised).
          upper: Upper truncation bound.
          loc: Mean of the untruncated normal.
          scale: Standard deviation of the untruncated normal.
          size / key: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array.
        Examples:
          >>> x = sm.random.RandomState(0).truncated_normal(-1.0, 1.0, size=100, loc=0.5)
          >>> x.shape, bool(((-1 <= x) & (x <= 1)).all())
          ((100,), True)
        """
        return self._sample("truncated_normal", key, _truncated_normal, lower, upper, size, loc, scale)

    def bernoulli(self, p: ArrayLike = 0.5, size: Size = None, key: Any = None) -> Array:
        """Boolean samples that are True with probability `p`.

        Args:
          p: Probability of True, in ``[0, 1]``.
          size / key: As for every sampler (see `SamplerMethods`).
        Returns:
          A bool array.
        Raises:
          ValueError: `p` is concrete and outside ``[0, 1]``.
        Examples:
          >>> sm.random.RandomState(0).bernoulli(jnp.array([0.0, 1.0]))
          Array([False,  True], dtype=bool)
        """
        return self._sample("bernoulli", key, _bernoulli, p, size)

    def choice(
        self,
        a: int | ArrayLike,
        size: Size = None,
        replace: bool = True,
        p: ArrayLike | None = None,
        key: Any = None,
    ) -> Array:
        """Samples from the elements of `a` (or from ``range(a)`` when `a` is an int).

        Args:
          a: An int n (sample from ``range(n)``) or a 1-D array.
          size: Output shape (None: a scalar).
          replace: Whether to sample with replacement.
          p: Probabilities of the elements (None: uniform).
          key: As for every sampler (see `SamplerMethods`).
        Returns:
          An array of shape `size`.
        Examples:
          >>> x = sm.random.RandomState(0).choice(5, size=5, replace=False)
          >>> sorted(x.tolist())
          [0, 1, 2, 3, 4]
        """
        return self._sample("choice", key, _choice, a, size, replace, p)

    def permutation(self, x: int | ArrayLike, axis: int = 0, independent: bool = False, key: Any = None) -> Array:
        """A permutation of ``range(x)`` (int `x`), or of an array along `axis`.

        Args:
          x: An int n or an array.
          axis: The axis to permute.
          independent: Permute each slice along `axis` independently.
          key: As for every sampler (see `SamplerMethods`).
        Returns:
          The permuted array.
        Examples:
          >>> sorted(sm.random.RandomState(0).permutation(4).tolist())
          [0, 1, 2, 3]
        """
        return self._sample("permutation", key, _permutation, x, axis, independent)

    def shuffle(self, x: ArrayLike, axis: int = 0, key: Any = None) -> Array:
        """A shuffled copy of `x` along `axis` (JAX arrays are immutable: nothing is shuffled in place).

        Args:
          x: An array with at least one axis.
          axis: The axis to shuffle.
          key: As for every sampler (see `SamplerMethods`).
        Returns:
          The shuffled copy.
        Examples:
          >>> x = sm.random.RandomState(0).shuffle(jnp.arange(6).reshape(3, 2))
          >>> sorted(x[:, 0].tolist()), bool((x[:, 1] == x[:, 0] + 1).all())
          ([0, 2, 4], True)
        """
        return self._sample("shuffle", key, _shuffle, x, axis)

    def exponential(self, scale: ArrayLike | None = None, size: Size = None, key: Any = None) -> Array:
        """Exponential samples with mean `scale`.

        Args:
          scale: The mean, ``1 / rate`` (None: 1).
          size / key: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array.
        Examples:
          >>> x = sm.random.RandomState(0).exponential(2.0, size=3)
          >>> x.shape, bool((x >= 0).all())
          ((3,), True)
        """
        return self._sample("exponential", key, _exponential, scale, size)

    def gamma(self, shape: ArrayLike, scale: ArrayLike | None = None, size: Size = None, key: Any = None) -> Array:
        """Gamma samples with shape `shape` and scale `scale` (NumPy's parametrisation).

        Args:
          shape: The shape parameter k > 0.
          scale: The scale parameter (None: 1).
          size / key: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array.
        Examples:
          >>> sm.random.RandomState(0).gamma(jnp.array([1.0, 2.0, 3.0]), 2.0).shape
          (3,)
        """
        return self._sample("gamma", key, _gamma, shape, scale, size)

    def beta(self, a: ArrayLike, b: ArrayLike, size: Size = None, key: Any = None) -> Array:
        """Beta samples with parameters `a` and `b`.

        Args:
          a: First shape parameter (> 0).
          b: Second shape parameter (> 0).
          size / key: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array with values in ``[0, 1]``.
        Examples:
          >>> x = sm.random.RandomState(0).beta(2.0, 5.0, size=(2, 2))
          >>> x.shape, bool(((0 <= x) & (x <= 1)).all())
          ((2, 2), True)
        """
        return self._sample("beta", key, _beta, a, b, size)

    def poisson(self, lam: ArrayLike = 1.0, size: Size = None, key: Any = None) -> Array:
        """Poisson samples with rate `lam`.

        Args:
          lam: The rate (>= 0).
          size / key: As for every sampler (see `SamplerMethods`).
        Returns:
          An integer array.
        Examples:
          >>> x = sm.random.RandomState(0).poisson(3.0, size=4)
          >>> x.shape, x.dtype
          ((4,), dtype('int32'))
        """
        return self._sample("poisson", key, _poisson, lam, size)

    def categorical(self, logits: ArrayLike, axis: int = -1, size: Size = None, key: Any = None) -> Array:
        """Category indices drawn with probabilities ``softmax(logits)`` along `axis`.

        Args:
          logits: Unnormalised log-probabilities.
          axis: The category axis of `logits`.
          size: Output shape (as `jax.random.categorical`'s ``shape``: it must broadcast with the shape of
            `logits` without `axis`); None uses that shape.
          key: As for every sampler (see `SamplerMethods`).
        Returns:
          An integer array of indices.
        Examples:
          >>> logits = jnp.log(jnp.array([[1.0, 0.0], [0.0, 1.0]]))
          >>> sm.random.RandomState(0).categorical(logits)
          Array([0, 1], dtype=int32)
        """
        return self._sample("categorical", key, _categorical, logits, axis, size)

    def multivariate_normal(
        self,
        mean: ArrayLike,
        cov: ArrayLike,
        size: Size = None,
        method: str = "cholesky",
        key: Any = None,
    ) -> Array:
        """Multivariate normal samples with mean `mean` (``(..., n)``) and covariance `cov` (``(..., n, n)``).

        Args:
          mean: The mean vector(s).
          cov: The covariance matrix (matrices), symmetric positive (semi-)definite.
          size: Batch shape of the result (it must broadcast with the batch shapes of `mean` and `cov`); None
            uses their broadcast batch shape.
          method: How to factor `cov`: ``'cholesky'``, ``'eigh'`` or ``'svd'``.
          key: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array of shape ``size + (n,)``.
        Examples:
          >>> sm.random.RandomState(0).multivariate_normal(jnp.zeros(2), jnp.eye(2), size=5).shape
          (5, 2)
        """
        return self._sample("multivariate_normal", key, _multivariate_normal, mean, cov, size, method)

    def chisquare(self, df: ArrayLike, size: Size = None, key: Any = None, dtype: DTypeLike | None = None) -> Array:
        """Chi-square samples with `df` degrees of freedom (``jax.random.chisquare``).

        Args:
          df: Degrees of freedom (> 0).
          size / key / dtype: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array of non-negative samples.
        Raises:
          ValueError: `df` is concrete and not positive.
        Examples:
          >>> x = sm.random.RandomState(0).chisquare([1.0, 5.0], size=(3, 2))
          >>> x.shape, bool((x >= 0).all())
          ((3, 2), True)
        """
        return self._sample("chisquare", key, _chisquare, df, size, dtype)

    def power(self, a: ArrayLike, size: Size = None, key: Any = None, dtype: DTypeLike | None = None) -> Array:
        """Samples in ``[0, 1]`` with density ``a * x ** (a - 1)`` (NumPy's power distribution).

        Drawn as ``U ** (1 / a)`` for ``U = jax.random.uniform(key, shape)``.

        Args:
          a: The exponent parameter (> 0).
          size / key / dtype: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array with values in ``[0, 1]``.
        Raises:
          ValueError: `a` is concrete and not positive.
        Examples:
          >>> x = sm.random.RandomState(0).power(3.0, size=4)
          >>> x.shape, bool(((0 <= x) & (x <= 1)).all())
          ((4,), True)
        """
        return self._sample("power", key, _power, a, size, dtype)

    def standard_t(self, df: ArrayLike, size: Size = None, key: Any = None, dtype: DTypeLike | None = None) -> Array:
        """Student's t samples with `df` degrees of freedom (``jax.random.t``).

        Args:
          df: Degrees of freedom (> 0).
          size / key / dtype: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array, heavy-tailed: its variance ``df / (df - 2)`` is finite only for ``df > 2``.
        Raises:
          ValueError: `df` is concrete and not positive.
        Examples:
          >>> sm.random.RandomState(0).standard_t(10, size=(2, 3)).shape
          (2, 3)
        """
        return self._sample("standard_t", key, _standard_t, df, size, dtype)

    def triangular(
        self,
        left: ArrayLike,
        mode: ArrayLike,
        right: ArrayLike,
        size: Size = None,
        key: Any = None,
        dtype: DTypeLike | None = None,
    ) -> Array:
        """Samples of the triangular distribution on ``[left, right]`` with peak at `mode`.

        Args:
          left: Lower limit.
          mode: The peak, ``left <= mode <= right``.
          right: Upper limit, ``right > left``.
          size / key / dtype: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array.
        Raises:
          ValueError: the parameters are concrete and not ordered.
        Examples:
          >>> x = sm.random.RandomState(0).triangular(-1.0, 0.0, [1.0, 2.0])
          >>> x.shape, bool(((-1 <= x) & (x <= 2)).all())
          ((2,), True)
        """
        return self._sample("triangular", key, _triangular, left, mode, right, size, dtype)

    def rand_like(self, input: ArrayLike, *, dtype: DTypeLike | None = None, key: Any = None) -> Array:
        """Uniform samples in ``[0, 1)`` with the shape of `input` (like ``torch.rand_like``).

        Args:
          input / dtype / key: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array of the shape of `input`, with values in ``[0, 1)``.
        Examples:
          >>> x = sm.random.RandomState(0).rand_like(jnp.zeros((2, 3), jnp.float16))
          >>> x.shape, x.dtype
          ((2, 3), dtype('float16'))
        """
        return self._sample("rand_like", key, _rand_like, input, dtype)

    def randn_like(self, input: ArrayLike, *, dtype: DTypeLike | None = None, key: Any = None) -> Array:
        """Standard normal samples with the shape of `input` (like ``torch.randn_like``).

        Args:
          input / dtype / key: As for every sampler (see `SamplerMethods`).
        Returns:
          A float array of the shape of `input`.
        Examples:
          >>> x = sm.random.RandomState(0).randn_like(jnp.arange(4))
          >>> x.shape, x.dtype
          ((4,), dtype('float32'))
        """
        return self._sample("randn_like", key, _randn_like, input, dtype)

    def randint_like(
        self,
        input: ArrayLike,
        low: ArrayLike = 0,
        high: ArrayLike | None = None,
        *,
        dtype: DTypeLike | None = None,
        key: Any = None,
    ) -> Array:
        """Integers drawn uniformly from ``[low, high)`` (``[0, low)`` when `high` is None), shaped like `input`.

        Args:
          input: As for every sampler (see `SamplerMethods`).
          low: Lowest value (inclusive), or the exclusive upper bound when `high` is None.
          high: Upper bound (exclusive).
          dtype: An integer dtype; None uses the dtype of `input` when it is an integer dtype, else JAX's
            default int.
          key: As for every sampler (see `SamplerMethods`).
        Returns:
          An integer array of the shape of `input`.
        Raises:
          ValueError: the bounds are concrete and the range is empty (for example no bound given).
        Examples:
          >>> x = sm.random.RandomState(0).randint_like(jnp.zeros((2, 2), jnp.int8), 5)
          >>> x.shape, x.dtype, bool(((0 <= x) & (x < 5)).all())
          ((2, 2), dtype('int8'), True)
        """
        return self._sample("randint_like", key, _randint_like, input, low, high, dtype)
