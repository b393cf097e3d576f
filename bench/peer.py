"""The optional brainstate column (``python -m bench.run --peer``).

Creates ``bench/.peer-venv`` on first use with ``brainstate==0.5.4`` and the same jax/jaxlib versions as this
environment (so the comparison is like for like), then runs `bench/peer_worker.py` there and adds a
``brainstate`` value to each result row. Nothing here is needed by the tests; if the venv cannot be made, the
reason is printed and the table keeps its two columns.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

__all__ = ["PEER_VENV", "ensure_peer_venv", "run_peer"]

HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".peer-venv"
PEER_PACKAGE = "brainstate==0.5.4"


def _python() -> Path:
    return PEER_VENV / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _has_brainstate(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import brainstate; print(brainstate.__version__)"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return probe.returncode == 0 and probe.stdout.strip() == PEER_PACKAGE.split("==")[1]


def ensure_peer_venv(log: Callable[[str], None] = print) -> tuple[Path | None, str | None]:
    """``(python, None)`` for a ready venv, or ``(None, why)`` when it cannot be made."""
    python = _python()
    if _has_brainstate(python):
        return python, None
    log(f"creating {PEER_VENV} with {PEER_PACKAGE} (jax {jax.__version__}) ...")
    steps = [
        [sys.executable, "-m", "venv", str(PEER_VENV)],
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            PEER_PACKAGE,
            f"jax=={jax.__version__}",
            f"jaxlib=={jax.__version__}",
        ],
    ]
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"{' '.join(cmd[:4])} failed: {e}"
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return None, f"{' '.join(cmd[:4])} failed (exit {proc.returncode}): " + " / ".join(tail)
    if not _has_brainstate(python):
        return None, "brainstate installed but does not import in the peer venv"
    return python, None


def run_peer(
    cfg: dict[str, Any], rows: list[dict[str, Any]], smoke: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the peer workloads and add ``row["brainstate"]`` (a number, or ``"error: ..."``) to each row."""
    python, why = ensure_peer_venv(log)
    if python is None:
        log(f"peer column skipped: {why}")
        return {"ok": False, "why": why}
    log(f"running the brainstate peer ({python}) ...")
    try:
        proc = subprocess.run(
            [str(python), str(HERE / "peer_worker.py"), json.dumps(cfg)],
            capture_output=True,
            text=True,
            timeout=3600,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "why": "peer worker timed out"}
    if proc.returncode != 0:
        why = "peer worker failed: " + " / ".join(proc.stderr.strip().splitlines()[-5:])
        log(why)
        return {"ok": False, "why": why}
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    meta = found.pop("_meta", {})
    found.update(_peer_memory(cfg, python, log))
    for r in rows:
        got = found.get(r.get("case"))
        if got is None:
            continue
        r["brainstate"] = got["value"] if "value" in got else f"error: {got['error']}"
        if "points" in got:
            r["brainstate_points"] = got["points"]
    return {
        "ok": True,
        "brainstate": meta.get("brainstate"),
        "jax": meta.get("jax"),
        "seconds": meta.get("seconds"),
        "errors": {k: v["error"] for k, v in found.items() if "error" in v},
    }


def _peer_memory(cfg: dict[str, Any], python: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from .cases import ensemble_sizes, lif_sizes
    from .memory import measure

    out: dict[str, Any] = {}
    jobs = [
        ("7a", "lif", dataclasses.asdict(lif_sizes(cfg))),
        ("7b", "ensemble", dataclasses.asdict(ensemble_sizes(cfg, cfg["mem_ens_members"]))),
    ]
    for case, workload, sizes in jobs:
        try:
            peaks = [
                measure(workload, "brainstate", sizes, cfg["mem_calls"], python=str(python))["peak_kib"]
                for _ in range(cfg["mem_repeats"])
            ]
            out[case] = {"value": statistics.median(peaks) / 1024, "unit": "MiB"}
        except Exception as e:
            out[case] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        log(f"peer [{case}] {out[case].get('value', out[case].get('error'))}")
    return out
