"""A tqdm progress bar for `scan` / `for_loop`, updated from inside the compiled loop by `jax.debug.callback`.

The loop carries an iteration counter; every `freq` iterations (and at the last one) a callback moves the bar
on the host. The bar is created at the first update and closed at the last, so a compiled loop that runs
again draws a fresh bar. tqdm is imported only when a bar is asked for.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .._errors import ArgumentError, message

__all__ = ["ProgressBar", "make_progress_bar"]


class ProgressBar:
    """Host side of the bar, and the traced `step` that drives it.

    Args:
      length: Number of loop iterations.
      freq: Update the bar every `freq` iterations.
      tqdm: The tqdm class.
      desc: Label shown before the bar.
    """

    def __init__(self, length: int, freq: int, tqdm: Any, desc: str) -> None:
        self.length = length
        self.freq = freq
        self._tqdm = tqdm
        self._desc = desc
        self._bar: Any = None

    # Equal bars (same length, frequency and label) are interchangeable: compiled loops are shared by them.
    def _key(self) -> tuple[int, int, Any, str]:
        return (self.length, self.freq, self._tqdm, self._desc)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProgressBar) and self._key() == other._key()

    def _update(self, i: Any) -> None:
        done = int(np.asarray(i)) + 1
        if self._bar is None or done <= self._bar.n:
            if self._bar is not None:
                self._bar.close()
            # The loop already updates only every `freq` iterations: show each update (no time throttle).
            self._bar = self._tqdm(total=self.length, desc=self._desc, mininterval=0)
        self._bar.update(done - self._bar.n)
        if done >= self.length:
            self._bar.close()
            self._bar = None

    def step(self, i: Any) -> None:
        """Traced: report that iteration `i` (counted from 0 in execution order) has run."""
        hit = ((i + 1) % self.freq == 0) | (i + 1 == self.length)
        jax.lax.cond(hit, lambda j: jax.debug.callback(self._update, j), lambda j: None, i)


def make_progress_bar(spec: Any, length: int, who: str) -> ProgressBar | None:
    """The bar asked for by `progress_bar=spec` (True, False/None, or a positive int update frequency)."""
    if spec is None or spec is False:
        return None
    if spec is True:
        freq = max(1, length // 100)
    elif isinstance(spec, (int, np.integer)) and spec > 0:
        freq = int(spec)
    else:
        raise ArgumentError(
            message(
                who,
                "progress_bar is neither a bool nor a positive int",
                "True, False, or a positive int (update the bar every that many iterations)",
                f"{type(spec).__name__} {spec!r:.40}",
                "pass progress_bar=True for about 100 updates, or an int for a fixed update frequency",
            )
        )
    try:
        from tqdm import tqdm
    except ImportError as e:
        raise ImportError(
            f"{who}: progress_bar needs the tqdm package, which is not installed; install it with "
            "`pip install tqdm` (it is part of statemap's dev extras), or pass progress_bar=False"
        ) from e
    if length == 0:
        return None
    return ProgressBar(length, freq, tqdm, who)
