"""Settings of a simulation: `set` them globally, override them in a `context` (one thread), `get` them.

Every key is declared: `precision` and `dt` are built in, and libraries declare theirs with `register`. An unknown
key raises a `SettingError` listing the known ones, so a typo never silently creates a new setting.

- ``precision``: 64, 32, 16 or ``'bf16'``, the float width to compute in. It is only recorded: `dftype` and
  `ditype` return the matching dtypes for code that creates arrays. statemap never flips JAX's process-wide
  ``jax_enable_x64`` flag (that would change the arrays of every thread), so ``precision=64`` is refused while
  x64 is disabled, with the fix. When unset: 64 if x64 is enabled, else 32.
- ``dt``: the time step of a simulation, a positive finite number, stored as a Python float. It has no default:
  `get` raises until it is set.

`get` looks a key up in the innermost `context` of this thread that sets it, then in the values of `set`, then in
the key's default, and last returns its `default` argument. Contexts are per thread: another thread sees the
values of `set` (and its own contexts), never this thread's contexts. `set` and `context` check every value
before they change anything.

Examples:
  >>> with sm.environ.context(dt=0.1, precision=16):
  ...     with sm.environ.context(dt=0.2):
  ...         inner = sm.environ.get("dt"), sm.environ.dftype()
  ...     outer = sm.environ.get("dt")
  >>> inner, outer
  ((0.2, dtype('float16')), 0.1)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._compat import is_tracer
from ._errors import SettingError, message

__all__ = ["set", "get", "context", "all", "register", "get_dt", "get_precision", "dftype", "ditype"]

_MISSING: Any = object()


class _Key(NamedTuple):
    check: Callable[[Any], Any]  # the value to store, or raises SettingError
    default: Callable[[], Any] | None  # the value when unset, or None: no default


_KEYS: dict[str, _Key] = {}  # copied on write: readers never lock
_GLOBAL: dict[str, Any] = {}  # the values of `set`, copied on write
_LOCK = threading.Lock()


class _Contexts(threading.local):
    def __init__(self) -> None:
        self.stack: list[dict[str, Any]] = []


_CONTEXTS = _Contexts()


def _x64() -> bool:
    """Whether JAX makes 64-bit floats now (the x64 flag, including a thread's ``jax.enable_x64`` block)."""
    return bool(jax.dtypes.canonicalize_dtype(np.float64) == np.dtype(np.float64))


def _check_precision(value: Any) -> Any:
    if isinstance(value, str) and value == "bf16":
        return value
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value in (16, 32, 64)
    if not ok:
        raise SettingError(
            message(
                "environ",
                f"precision={value!r:.40} is not a known precision",
                "one of 64, 32, 16 or 'bf16'",
                f"{type(value).__name__} {value!r:.40}",
                "pass precision=32 (JAX's default float32), 64, 16 or 'bf16'",
            )
        )
    if value == 64 and not _x64():
        raise SettingError(
            message(
                "environ",
                "precision=64 needs 64-bit floats, which JAX has disabled",
                "jax_enable_x64 on (statemap does not turn it on: it is a process-wide JAX flag)",
                "jax_enable_x64=False",
                'call jax.config.update("jax_enable_x64", True) first (at start-up), or use precision=32',
            )
        )
    return int(value)


def _check_dt(value: Any) -> float:
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not real and not is_tracer(value) and np.ndim(value) == 0 and hasattr(value, "dtype"):
        real = jnp.issubdtype(value.dtype, np.integer) or jnp.issubdtype(value.dtype, np.floating)
    dt = float(value) if real else math.nan
    if not (math.isfinite(dt) and dt > 0):
        raise SettingError(
            message(
                "environ",
                f"dt={value!r:.40} is not a positive time step",
                "a concrete positive finite number (a Python or NumPy scalar, or a 0-d array)",
                f"{type(value).__name__} {value!r:.40}",
                "pass dt as a positive number, e.g. environ.set(dt=0.1)",
            )
        )
    return dt


def _default_precision() -> int:
    return 64 if _x64() else 32


def _key(who: str, key: str) -> _Key:
    entry = _KEYS.get(key)
    if entry is None:
        known = ", ".join(repr(k) for k in sorted(_KEYS))
        raise SettingError(
            message(
                who,
                f"unknown setting {key!r}",
                f"one of the known settings: {known}",
                repr(key),
                "check the spelling, or declare the setting first with statemap.environ.register",
            )
        )
    return entry


def _checked(who: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The values of `kwargs` as stored, all checked before anything changes."""
    return {key: _key(who, key).check(value) for key, value in kwargs.items()}


def register(key: str, *, default: Any = _MISSING, check: Callable[[Any], Any] | None = None) -> None:
    """Declare a new setting (for libraries built on statemap).

    Args:
      key: The name of the setting, a Python identifier not yet registered.
      default: The value `get` returns while the setting is unset; none by default (then `get` raises).
      check: Called with every value given to `set` or `context`; it returns the value to store, or raises.
        None stores values as given.
    Raises:
      SettingError: `key` is not an identifier, or is already registered.

    Examples:
      >>> sm.environ.register("example_mode", default="train")
      >>> sm.environ.get("example_mode")
      'train'
      >>> with sm.environ.context(example_mode="eval"):
      ...     sm.environ.get("example_mode")
      'eval'
    """
    global _KEYS
    if not isinstance(key, str) or not key.isidentifier() or key in _KEYS:
        problem = "is already registered" if key in _KEYS else "is not a valid name"
        raise SettingError(
            message(
                "environ.register",
                f"setting {key!r} {problem}",
                "a Python identifier that is not a known setting",
                repr(key),
                "pick another name (prefix it with your library's name)",
            )
        )
    entry = _Key(check or (lambda v: v), None if default is _MISSING else (lambda: default))
    with _LOCK:
        _KEYS = {**_KEYS, key: entry}


def set(**kwargs: Any) -> None:  # noqa: A001 - brainstate's name
    """Set settings globally: for every thread, until set again.

    A `context` that sets the same key still wins inside its block.

    Raises:
      SettingError: an unknown key or a refused value (nothing is changed).

    Examples:
      >>> sm.environ.set(dt=0.05)
      >>> sm.environ.get("dt")
      0.05
    """
    global _GLOBAL
    values = _checked("environ.set", kwargs)
    with _LOCK:
        _GLOBAL = {**_GLOBAL, **values}


def _lookup(key: str, entry: _Key) -> Any:
    """The value of `key` in this thread: innermost context, global value, default; else `_MISSING`."""
    for layer in reversed(_CONTEXTS.stack):
        if key in layer:
            return layer[key]
    values = _GLOBAL
    if key in values:
        return values[key]
    return _MISSING if entry.default is None else entry.default()


def get(key: str, default: Any = _MISSING) -> Any:
    """The value of setting `key` in this thread (see the module docstring for the lookup order).

    Args:
      key: A known setting.
      default: Returned when the setting has no value and no default of its own.
    Raises:
      SettingError: `key` is unknown, or has no value and no default.

    Examples:
      >>> with sm.environ.context(dt=0.5):
      ...     sm.environ.get("dt")
      0.5
    """
    value = _lookup(key, _key("environ.get", key))
    if value is not _MISSING:
        return value
    if default is not _MISSING:
        return default
    raise SettingError(
        message(
            "environ.get",
            f"setting {key!r} is not set",
            "a value from environ.set or environ.context (or a default argument)",
            f"no value for {key!r} in this thread",
            f"call statemap.environ.set({key}=...) globally, or use statemap.environ.context({key}=...) locally",
        )
    )


@contextmanager
def context(**kwargs: Any) -> Iterator[dict[str, Any]]:
    """Override settings in this thread inside a ``with`` block; the previous values return when it ends.

    The block yields the settings in effect (as `all`). Other threads do not see these values; the previous ones
    come back also when the block raises.

    Raises:
      SettingError: an unknown key or a refused value (nothing is changed).

    Examples:
      >>> with sm.environ.context(precision=16) as env:
      ...     env["precision"], sm.environ.ditype()
      (16, dtype('int16'))
      >>> sm.environ.get("precision")
      32
    """
    layer = _checked("environ.context", kwargs)
    stack = _CONTEXTS.stack
    stack.append(layer)
    try:
        yield all()
    finally:
        # Remove this block's own layer (by identity), even if blocks were exited out of order.
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is layer:
                del stack[i]
                break


def all() -> dict[str, Any]:  # noqa: A001 - brainstate's name
    """Every setting that has a value in this thread, as a new dict.

    Examples:
      >>> with sm.environ.context(dt=0.25):
      ...     sm.environ.all()["dt"]
      0.25
    """
    out: dict[str, Any] = {}
    for key, entry in _KEYS.items():
        value = _lookup(key, entry)
        if value is not _MISSING:
            out[key] = value
    return out


def get_dt() -> float:
    """The time step ``dt`` (raises `SettingError` while it is unset).

    Examples:
      >>> with sm.environ.context(dt=0.1):
      ...     sm.environ.get_dt()
      0.1
    """
    return float(get("dt"))


def get_precision() -> int | str:
    """The precision: 64, 32, 16 or ``'bf16'``.

    Examples:
      >>> sm.environ.get_precision() in (32, 64)
      True
    """
    precision: int | str = get("precision")
    return precision


_FLOATS = {64: np.dtype(np.float64), 32: np.dtype(np.float32), 16: np.dtype(np.float16), "bf16": jnp.bfloat16}
_INTS = {64: np.dtype(np.int64), 32: np.dtype(np.int32), 16: np.dtype(np.int16), "bf16": np.dtype(np.int16)}


def dftype() -> Any:
    """The float dtype of the precision: float64, float32, float16 or bfloat16.

    Examples:
      >>> with sm.environ.context(precision="bf16"):
      ...     jnp.zeros(2, sm.environ.dftype()).dtype
      dtype(bfloat16)
    """
    return np.dtype(_FLOATS[get_precision()])


def ditype() -> Any:
    """The integer dtype of the precision: int64, int32 or int16 (also for ``'bf16'``).

    Examples:
      >>> sm.environ.ditype() in (jnp.int32, jnp.int64)
      True
    """
    return _INTS[get_precision()]


_KEYS.update(
    precision=_Key(_check_precision, _default_precision),
    dt=_Key(_check_dt, None),
)
