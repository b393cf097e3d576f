"""A tqdm progress bar for `scan` / `for_loop`, updated from inside the compiled loop by `jax.debug.callback`.

`ProgressBar` is what users pass (``pbar=ProgressBar(...)``, or ``progress_bar=True``/an int); for one loop of
known length it makes a `_HostBar`. The loop carries an iteration counter; every `freq` iterations (and at the
last one) a callback moves the host bar. The bar is created at the first update and closed at the last, so a
compiled loop that runs again draws a fresh bar. tqdm is imported only when a bar is asked for.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .._errors import ArgumentError, message
from ._arguments import check_optional_str

__all__ = ["ProgressBar", "make_progress_bar"]


def _positive_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and bool(x > 0)


class ProgressBar:
    """A tqdm progress bar for `scan`, `for_loop` and `checkpointed_scan`: pass it as ``pbar=``.

    The bar is drawn on the host while the (compiled) loop runs, through `jax.debug.callback`. At most one of
    `freq` and `count` may be given; with neither, the bar moves every 5% of the iterations. Needs tqdm.

    Args:
      freq: Move the bar every `freq` iterations (and at the last one).
      count: Move the bar about `count` times in all.
      desc: Label shown before the bar (default: the loop's name, e.g. ``'scan'``).
      **kwargs: Forwarded to ``tqdm.tqdm`` (e.g. ``leave=False``, ``ncols=80``, ``position=1``); they must
        be hashable, since equal bars share one compiled loop. ``total`` and ``mininterval`` are set by the loop.

    Raises:
      ArgumentError: `freq` or `count` is not a positive int, both are given, or `desc` is not a str.

    Examples:
      >>> total = sm.State(jnp.zeros(()), name="total")
      >>> def step(c, x):
      ...     total.value = total.value + x
      ...     return c, None
      >>> _ = sm.transform.scan(step, None, jnp.arange(4.0), pbar=sm.transform.ProgressBar(freq=2, desc="sum"))
      >>> total.value
      Array(6., dtype=float32)
      >>> sm.transform.ProgressBar(count=10)
      ProgressBar(count=10)
    """

    def __init__(self, freq: int | None = None, count: int | None = None, desc: str | None = None, **kwargs: Any):
        for what, x in (("freq", freq), ("count", count)):
            if x is not None and not _positive_int(x):
                raise ArgumentError(
                    message(
                        "ProgressBar",
                        f"{what} is not a positive int",
                        "an int >= 1",
                        f"{type(x).__name__} {x!r:.40}",
                        f"pass e.g. {what}=10",
                    )
                )
        if freq is not None and count is not None:
            raise ArgumentError(
                message(
                    "ProgressBar",
                    "both freq and count are given",
                    "at most one of them",
                    f"freq={freq}, count={count}",
                    "pass freq (iterations between updates) or count (number of updates)",
                )
            )
        check_optional_str(desc, "ProgressBar", "desc", "a label for the bar", "'training'")
        for key in ("total", "mininterval"):
            kwargs.pop(key, None)
        self.freq = freq
        self.count = count
        self.desc = desc
        self.kwargs = tuple(sorted(kwargs.items()))
        try:
            hash(self.kwargs)
        except TypeError:
            raise ArgumentError(
                message(
                    "ProgressBar",
                    "a tqdm keyword argument is not hashable",
                    "hashable values (str, int, bool, a file object...)",
                    f"{dict(self.kwargs)!r:.80}",
                    "pass hashable values (a tuple instead of a list)",
                )
            ) from None

    def __repr__(self) -> str:
        given = [f"{k}={v!r}" for k, v in (("freq", self.freq), ("count", self.count), ("desc", self.desc)) if v]
        return f"ProgressBar({', '.join(given + [f'{k}={v!r}' for k, v in self.kwargs])})"

    def _host(self, length: int, who: str) -> _HostBar | None:
        """The bar of one loop of `length` iterations (None for an empty loop)."""
        if length == 0:
            return None
        if self.freq is not None:
            freq = self.freq
        else:
            freq = max(1, length // (self.count or 20))
        return _HostBar(length, int(freq), _import_tqdm(who), self.desc or who, self.kwargs)


class _HostBar:
    """Host side of one loop's bar, and the traced `step` that drives it; hashable (part of the loop's plan)."""

    def __init__(self, length: int, freq: int, tqdm: Any, desc: str, kwargs: tuple[tuple[str, Any], ...]) -> None:
        self.length = length
        self.freq = freq
        self._tqdm = tqdm
        self._desc = desc
        self._kwargs = kwargs
        self._bar: Any = None

    # Equal bars (same length, frequency, label and options) are interchangeable: compiled loops are shared.
    def _key(self) -> tuple[Any, ...]:
        return (self.length, self.freq, self._tqdm, self._desc, self._kwargs)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _HostBar) and self._key() == other._key()

    def update(self, i: Any) -> None:
        """Host: iteration `i` (from 0, in execution order) has run."""
        done = int(np.asarray(i)) + 1
        if self._bar is None or done <= self._bar.n:
            if self._bar is not None:
                self._bar.close()
            # The loop already updates only every `freq` iterations: show each update (no time throttle).
            self._bar = self._tqdm(total=self.length, desc=self._desc, mininterval=0, **dict(self._kwargs))
        self._bar.update(done - self._bar.n)
        if done >= self.length:
            self._bar.close()
            self._bar = None

    def step(self, i: Any) -> None:
        """Traced: report that iteration `i` (counted from 0 in execution order) has run."""
        hit = ((i + 1) % self.freq == 0) | (i + 1 == self.length)
        jax.lax.cond(hit, lambda j: jax.debug.callback(self.update, j), lambda j: None, i)


def _import_tqdm(who: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError as e:
        raise ImportError(
            f"{who}: progress_bar needs the tqdm package, which is not installed; install it with "
            "`pip install tqdm` (it is part of statemap's dev extras), or pass progress_bar=False"
        ) from e
    return tqdm


def _from_progress_bar(spec: Any, who: str) -> ProgressBar | None:
    """The `ProgressBar` asked for by ``progress_bar=spec`` (True: about 100 updates; a positive int: freq)."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return ProgressBar(count=100)
    if _positive_int(spec):
        return ProgressBar(freq=int(spec))
    raise ArgumentError(
        message(
            who,
            "progress_bar is neither a bool nor a positive int",
            "True, False, or a positive int (update the bar every that many iterations)",
            f"{type(spec).__name__} {spec!r:.40}",
            "pass progress_bar=True for about 100 updates, or an int for a fixed update frequency",
        )
    )


def make_progress_bar(spec: Any, length: int, who: str, pbar: Any = None) -> _HostBar | None:
    """The host bar asked for by ``progress_bar=spec`` or ``pbar=`` (a `ProgressBar`, an int freq, or None)."""
    if pbar is not None and spec not in (None, False):
        raise ArgumentError(
            message(
                who,
                "both pbar and progress_bar are given",
                "at most one of them",
                f"pbar={pbar!r:.40}, progress_bar={spec!r:.40}",
                "pass only pbar=ProgressBar(...) (or only progress_bar=)",
            )
        )
    if pbar is None:
        bar = _from_progress_bar(spec, who)
    elif isinstance(pbar, ProgressBar):
        bar = pbar
    elif _positive_int(pbar):
        bar = ProgressBar(freq=int(pbar))
    else:
        raise ArgumentError(
            message(
                who,
                "pbar is neither a ProgressBar nor a positive int",
                "a statemap.transform.ProgressBar, a positive int (update frequency), or None",
                f"{type(pbar).__name__} {pbar!r:.40}",
                "pass pbar=ProgressBar(freq=10) or pbar=10",
            )
        )
    return None if bar is None else bar._host(length, who)
