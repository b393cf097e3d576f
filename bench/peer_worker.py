"""The optional peer column: the same workloads on brainstate, run by the interpreter of ``bench/.peer-venv``.

Run by `bench.peer` as ``PYTHON bench/peer_worker.py CONFIG_JSON``; prints one JSON object ``{case: {"value":
...} or {"error": ...}}`` on its last line. It imports brainstate and the shared workload code only (never
statemap). Its timings come from another process, so they are not interleaved with the statemap/pure columns.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import brainstate as bs  # noqa: E402
import jax  # noqa: E402

from bench import workloads as W  # noqa: E402
from bench._timing import calls_for, cold_samples, fit_line, interleaved  # noqa: E402
from bench.cases import ensemble_sizes, lif_sizes  # noqa: E402  (imports no statemap)


def _per_call_s(fn: Callable[[], Any], cfg: dict[str, Any]) -> float:
    jax.block_until_ready(fn())
    calls = calls_for(fn, cfg["big_round_s"], 1, cfg["calls"])
    return interleaved({"peer": fn}, cfg["rounds"], calls, warmup=1)["peer"]["median_s"]


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    b, n = cfg["small_batch"], cfg["small_width"]

    def attempt(case: str, unit: str, fn: Callable[[], float]) -> None:
        try:
            out[case] = {"value": fn(), "unit": unit}
        except Exception as e:
            out[case] = {
                "error": f"{type(e).__name__}: {str(e)[:300]}",
                "traceback": traceback.format_exc()[-1500:],
            }
        print(f"peer [{case}] {out[case].get('value', out[case].get('error'))}", file=sys.stderr, flush=True)

    attempt("0", "µs", lambda: _per_call_s(W.many_states(1, "jit", b, n, lib=bs)["lib"], cfg) * 1e6)
    attempt("1", "µs", lambda: _per_call_s(W.small_pair(b, n, False, lib=bs)["lib"], cfg) * 1e6)
    attempt("2", "µs", lambda: _per_call_s(W.small_pair(b, n, True, lib=bs)["lib"], cfg) * 1e6)
    for mode, case in (("jit", "3a"), ("vmap2", "3b")):
        points: list[dict[str, float]] = []

        def slope(mode: str = mode, points: list[dict[str, float]] = points) -> float:
            counts = list(cfg["state_counts"])
            times = [_per_call_s(W.many_states(c, mode, b, n, lib=bs)["lib"], cfg) * 1e6 for c in counts]
            points.extend({"states": c, "brainstate": t} for c, t in zip(counts, times, strict=True))
            return fit_line(counts, times)[0]

        attempt(case, "µs/state", slope)
        if points:
            out[case]["points"] = points

    def cold() -> float:
        layers, width, members = cfg["cold_layers"], cfg["cold_width"], cfg["cold_members"]
        t = cold_samples({"peer": lambda: W.cold_mlp_statemap(layers, width, members, lib=bs)}, cfg["cold_samples"])
        return t["peer"]["median_s"] * 1e3

    attempt("4", "ms", cold)
    ez = ensemble_sizes(cfg)
    attempt("5", "steps/s", lambda: 1.0 / _per_call_s(W.StatemapEnsemble(ez, lib=bs), cfg))
    lz = lif_sizes(cfg)

    def lif() -> float:
        model = W.StatemapLif(lz, lib=bs)
        jax.block_until_ready(model())
        t = interleaved({"peer": model}, cfg["lif_rounds"], 1, warmup=0)
        return lz.steps / t["peer"]["median_s"]

    attempt("6", "steps/s", lif)
    return out


def main() -> None:
    cfg = json.loads(sys.argv[1])
    t0 = time.perf_counter()
    out = run(cfg)
    out["_meta"] = {"brainstate": bs.__version__, "jax": jax.__version__, "seconds": time.perf_counter() - t0}
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
