"""Timing helpers: interleaved warm-call medians, cold-call samples, line fits and machine facts.

Every comparison runs its contenders in the same process and alternates them per round (A B, then B A, ...),
so a slow phase of a shared machine hits both. A warm call is timed with `time.perf_counter` around a loop of
calls, each blocked with `jax.block_until_ready` on its output; a round's mean per call is one sample and the
result is the median of the rounds.
"""

from __future__ import annotations

import datetime
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

__all__ = ["calls_for", "cold_samples", "fit_line", "interleaved", "machine_info"]


def _round(fn: Callable[[], Any], calls: int) -> float:
    block = jax.block_until_ready
    t0 = time.perf_counter()
    for _ in range(calls):
        block(fn())
    return (time.perf_counter() - t0) / calls


def calls_for(fn: Callable[[], Any], round_s: float, lo: int, hi: int) -> int:
    """Calls of `fn` that fill about `round_s` seconds (clamped to ``[lo, hi]``), after two warm-up calls."""
    _round(fn, 2)
    t = _round(fn, 3)
    return int(min(hi, max(lo, round_s / max(t, 1e-9))))


def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, calls: int, warmup: int = 3
) -> dict[str, dict[str, Any]]:
    """Median seconds per call of each function, measured in alternating rounds.

    Args:
      fns: ``{label: zero-argument callable}``; each call's output is blocked on.
      rounds: Number of rounds; each round times `calls` calls of every function.
      calls: Calls per round.
      warmup: Untimed calls of each function first (compilation, caches).

    Returns:
      ``{label: {"median_s": ..., "rounds_s": [...], "calls": calls}}``.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            jax.block_until_ready(fns[name]())
    samples: dict[str, list[float]] = {n: [] for n in names}
    gc_was = gc.isenabled()
    gc.collect()
    gc.disable()  # a collection landing in one contender's round is noise, not overhead
    try:
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                samples[name].append(_round(fns[name], calls))
    finally:
        if gc_was:
            gc.enable()
    return {n: {"median_s": statistics.median(s), "rounds_s": s, "calls": calls} for n, s in samples.items()}


def cold_samples(builders: dict[str, Callable[[], Callable[[], Any]]], samples: int) -> dict[str, dict[str, Any]]:
    """Median seconds of a first call (trace + compile + run), alternating contenders per sample.

    Args:
      builders: ``{label: build}``; ``build()`` makes fresh states, data and function objects (untimed) and
        returns the zero-argument first call to time.
      samples: Timed samples per contender, after one untimed warm-up sample each.
    """
    names = list(builders)
    for name in names:  # first-ever compile of each primitive's helpers is not what we measure
        jax.block_until_ready(builders[name]()())
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(samples):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            call = builders[name]()
            gc.collect()
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            out[name].append(time.perf_counter() - t0)
            del call
    return {n: {"median_s": statistics.median(s), "samples_s": s} for n, s in out.items()}


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = slope * x + intercept``; returns ``(slope, intercept)``."""
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(slope), float(intercept)


def machine_info() -> dict[str, Any]:
    """Date, versions, CPU count and platform of this run."""
    import statemap

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
        "statemap": statemap.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "load_average_at_start": load,
    }


def _jaxlib_version() -> str | None:
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # pragma: no cover - informational only
        return None
