"""Run the benchmark suite: ``python -m bench.run [--smoke] [--peer] [--only CASE,...] [--set KEY=VALUE
...]``.

Full runs write ``bench/results/latest.json``, ``bench/results/overhead_vs_states.png`` and the results table
in ``bench/README.md``. ``--smoke`` uses tiny sizes and repeats (every case in well under a minute) and writes
to a temporary directory (or ``--out``), never to the committed results.
"""

from __future__ import annotations

import argparse
import ast
import gc
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import jax

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
TABLE_START = "<!-- results:start -->"
TABLE_END = "<!-- results:end -->"

FULL: dict[str, Any] = {
    "rounds": 7,  # interleaved rounds per comparison; the median round is reported
    "calls": 2000,  # calls per round for µs-scale cases (an upper bound where calibrated)
    "small_batch": 8,
    "small_width": 4,
    "state_counts": [1, 10, 100, 1000],
    "scaling_round_s": 0.2,  # target seconds per round in case 3 (calls calibrated to it)
    "scaling_min_calls": 50,
    "cold_layers": 16,  # 3 states per layer + a counter = 49 states
    "cold_width": 32,
    "cold_members": 8,
    "cold_samples": 5,
    "small_cold_batch": 8,
    "small_cold_width": 16,
    "small_cold_samples": 9,
    "ens_members": 64,
    "ens_inputs": 32,
    "ens_hidden": 64,
    "ens_batch": 128,
    "ens_check_steps": 20,
    "big_round_s": 0.5,
    "lif_trials": 32,
    "lif_neurons": 4000,
    "lif_steps": 1000,
    "lif_rounds": 5,
    "mem_ens_members": 256,
    "mem_calls": 3,
    "mem_repeats": 3,
}

SMOKE: dict[str, Any] = {
    **FULL,
    "rounds": 3,
    "calls": 20,
    "state_counts": [1, 4, 16],
    "scaling_round_s": 0.002,
    "scaling_min_calls": 5,
    "cold_layers": 2,
    "cold_width": 8,
    "cold_members": 2,
    "cold_samples": 1,
    "small_cold_samples": 1,
    "ens_members": 4,
    "ens_inputs": 4,
    "ens_hidden": 8,
    "ens_batch": 8,
    "ens_check_steps": 3,
    "big_round_s": 0.005,
    "lif_trials": 2,
    "lif_neurons": 16,
    "lif_steps": 10,
    "lif_rounds": 2,
    "mem_ens_members": 8,
    "mem_calls": 1,
    "mem_repeats": 1,
}


def _parse_set(items: list[str], cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(cfg)
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in cfg:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(cfg))}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            raise SystemExit(f"--set {item!r}: {raw!r} is not a Python literal") from None
        cfg[key] = value
    return cfg


def run_cases(cfg: dict[str, Any], only: list[str] | None = None, log: Any = print) -> list[dict[str, Any]]:
    """Run the selected cases; a case that raises gives an ``error`` row instead of stopping the suite."""
    from .cases import CASES

    rows: list[dict[str, Any]] = []
    for name, fn in CASES.items():
        if only and name not in only:
            continue
        # Each case starts from a clean process: no garbage or compiled executables left by earlier cases
        # (after the 1000-state case, the ensemble's two identical programs differed by ~2% without this).
        gc.collect()
        jax.clear_caches()
        t0 = time.perf_counter()
        try:
            out = fn(cfg)
        except Exception as e:  # keep going: one broken case must not hide the others
            out = [
                {
                    "case": name,
                    "title": name,
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(),
                    "ratio": None,
                    "met": None,
                }
            ]
        for r in out:
            r["seconds"] = round(time.perf_counter() - t0, 2)
            log(_line(r))
        rows.extend(out)
    return rows


def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        return f"{x:.3g}" if abs(x) >= 0.01 else f"{x:.2g}"
    return str(x)


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"[{r['case']}] ERROR {r['error']}"
    if "skipped" in r:
        return f"[{r['case']}] skipped: {r['skipped']}"
    t = r["target"]
    of = t["of"] if t["of"] in ("ratio", "statemap") else f"{t['of']}={_fmt(r.get(t['of']))}"
    return (
        f"[{r['case']}] {r['title']}\n      statemap {_fmt(r['statemap'])} {r['unit']}, "
        f"pure {_fmt(r['pure'])} {r['unit']}, ratio {_fmt(r['ratio'])} (target {of} {t['op']} {t['value']}: "
        f"{'met' if r['met'] else 'MISSED'})"
    )


def markdown_table(rows: list[dict[str, Any]], peer: bool) -> str:
    head = ["case", "what", "unit", "statemap", "pure JAX", "statemap / pure", "target", "met"]
    if peer:
        head[5:5] = ["brainstate 0.5.4"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r or "skipped" in r:
            why = r.get("error") or r.get("skipped")
            cells = [r["case"], f"{r['title']} — **{'error' if 'error' in r else 'skipped'}:** {why}"]
            cells += [""] * (len(head) - 2)
        else:
            t = r["target"]
            target = f"{_TARGET_NAMES.get(t['of'], t['of'])} {t['op']} {t['value']}"
            if t["of"] not in ("ratio", "statemap"):
                target += f" (found {_fmt(r.get(t['of']))})"
            cells = [
                r["case"],
                r["title"],
                r["unit"],
                _fmt(r["statemap"]),
                _fmt(r["pure"]),
                _fmt(r["ratio"]) + "×",
                target,
                "yes" if r["met"] else "**no**",
            ]
            if peer:
                p = r.get("brainstate")
                cells[5:5] = [_fmt(p) if isinstance(p, float) else (p or "–")]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


_TARGET_NAMES = {
    "ratio": "ratio",
    "statemap": "statemap",
    "overhead_us_per_state": "overhead slope (µs/state)",
}


def plot_scaling(rows: list[dict[str, Any]], path: Path) -> str | None:
    """Per-call time against number of states, log-log; returns why not, when it cannot plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib unavailable ({e})"
    series = [r for r in rows if r.get("case") in ("3a", "3b") and "points" in r]
    if not series:
        return "no case-3 results"
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    labels = {
        "3a": {"statemap": "statemap: sm.transform.jit(f)", "pure": "pure: jax.jit(f)"},
        "3b": {"statemap": "statemap: eager vmap2(f)", "pure": "pure: jax.jit(jax.vmap(f))"},
    }
    styles = {"statemap": "-o", "pure": "--s"}
    for r in series:
        n = [p["states"] for p in r["points"]]
        for impl, style in styles.items():
            ax.loglog(n, [p[impl] for p in r["points"]], style, label=labels[r["case"]][impl])
        peer = r.get("brainstate_points")
        if peer:
            who = "jit" if r["case"] == "3a" else "vmap2"
            ax.loglog([p["states"] for p in peer], [p["brainstate"] for p in peer], ":^", label=f"brainstate: {who}")
        extra = [p["statemap"] - p["pure"] for p in r["points"]]
        ax2.semilogx(n, extra, "-o", label=labels[r["case"]]["statemap"])
    ax.set_xlabel("number of states read and written")
    ax.set_ylabel("warm call time (µs, median of rounds)")
    ax.set_title("Per-call time vs number of states")
    ax2.axhline(0.0, color="grey", lw=0.8)
    ax2.set_xlabel("number of states read and written")
    ax2.set_ylabel("statemap − pure (µs per call)")
    ax2.set_title("statemap's overhead per call")
    for a in (ax, ax2):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def write_readme_table(table: str, info: dict[str, Any], path: Path = README) -> None:
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{TABLE_START}\n{TABLE_END}\n"
    if TABLE_START not in text or TABLE_END not in text:
        text += f"\n{TABLE_START}\n{TABLE_END}\n"
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    machine = (
        f"_Run {info['date']} · jax {info['jax']} · {info['backend']} · {info['cpu_count']} CPUs · "
        f"{info['platform']} · Python {info['python']}_"
    )
    path.write_text(f"{head}{TABLE_START}\n{machine}\n\n{table}\n{TABLE_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes and repeats; results go to a temp dir")
    p.add_argument("--peer", action="store_true", help="add a brainstate 0.5.4 column (creates bench/.peer-venv)")
    p.add_argument("--only", default="", help="comma-separated case names (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a size or repeat")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: bench/results, or a temp dir with --smoke)",
    )
    args = p.parse_args(argv)

    from ._timing import machine_info
    from .cases import CASES

    cfg = _parse_set(args.set, SMOKE if args.smoke else FULL)
    only = [c for c in args.only.split(",") if c]
    unknown = [c for c in only if c not in CASES]
    if unknown:
        raise SystemExit(f"--only: unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    out = args.out or (Path(tempfile.mkdtemp(prefix="statemap-bench-")) if args.smoke else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    print(
        f"statemap benchmarks ({'smoke' if args.smoke else 'full'}): jax {info['jax']}, "
        f"{info['cpu_count']} CPUs, {info['platform']}; writing to {out}",
        flush=True,
    )
    t0 = time.perf_counter()
    rows = run_cases(cfg, only or None, log=lambda s: print(s, flush=True))
    peer_note = None
    if args.peer:
        from .peer import run_peer

        peer_note = run_peer(cfg, rows, smoke=args.smoke, log=lambda s: print(s, flush=True))
    result = {
        "machine": info,
        "mode": "smoke" if args.smoke else "full",
        "config": cfg,
        "seconds": round(time.perf_counter() - t0, 1),
        "peer": peer_note,
        "results": rows,
    }
    (out / "latest.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    why = plot_scaling(rows, out / "overhead_vs_states.png")
    if why:
        print(f"plot skipped: {why}")
    table = markdown_table(rows, peer=bool(args.peer and peer_note and peer_note.get("ok")))
    if args.smoke or args.out is not None:
        (out / "results.md").write_text(table + "\n")
    else:
        write_readme_table(table, info)
    print(f"\n{table}\n\ndone in {result['seconds']} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
