"""The benchmark suite's smoke mode runs every case and produces finite ratios (no timing assertions)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cases import row
from bench.run import FULL, SMOKE, _parse_set, markdown_table

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ["0", "1", "2", "3a", "3b", "4", "8a", "8b", "8c", "8d", "5", "6", "7a", "7b"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "latest.json").read_text()), out


def test_smoke_every_case_has_a_finite_ratio(smoke: tuple[dict, Path]) -> None:
    result, _ = smoke
    rows = {r["case"]: r for r in result["results"]}
    assert sorted(rows) == sorted(EXPECTED)
    for case in EXPECTED:
        r = rows[case]
        assert "error" not in r, f"case {case}: {r.get('error')}\n{r.get('traceback')}"
        assert "skipped" not in r, f"case {case}: {r['skipped']}"
        assert r["ratio"] is not None and math.isfinite(r["ratio"]) and r["ratio"] > 0, (case, r["ratio"])
        assert math.isfinite(r["statemap"]) and math.isfinite(r["pure"]), case
        assert r["met"] in (True, False)


def test_smoke_parity_and_outputs(smoke: tuple[dict, Path]) -> None:
    result, out = smoke
    rows = {r["case"]: r for r in result["results"]}
    assert rows["5"]["loss_trajectory_match"] is True  # same keys: same per-member losses every step
    assert rows["6"]["trajectory_match"] is True
    assert [p["states"] for p in rows["3a"]["points"]] == SMOKE["state_counts"]
    assert result["mode"] == "smoke"
    for key in ("date", "jax", "cpu_count", "platform"):
        assert result["machine"][key]
    assert (out / "overhead_vs_states.png").stat().st_size > 0
    assert "| 3a |" in (out / "results.md").read_text()


def test_row_target_logic() -> None:
    r = row("x", "t", "m", "µs", 3.0, 2.0, "<=", 1.5)
    assert r["ratio"] == 1.5 and r["met"] is True
    assert row("x", "t", "m", "steps/s", 0.9, 1.0, ">=", 0.98)["met"] is False
    r = row("x", "t", "m", "µs/state", 1.2, 1.0, "<", 1.0, target_of="overhead", overhead=0.2)
    assert r["met"] is True
    assert row("x", "t", "m", "µs", None, 1.0, "<=", 1.5)["met"] is None
    table = markdown_table([r, {"case": "y", "title": "t", "skipped": "why", "ratio": None, "met": None}], False)
    assert "| x |" in table and "skipped:** why" in table


def test_parse_set() -> None:
    cfg = _parse_set(["lif_neurons=10", "state_counts=[1, 2]"], FULL)
    assert cfg["lif_neurons"] == 10 and cfg["state_counts"] == [1, 2]
    assert FULL["lif_neurons"] == 4000
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        _parse_set(["nope=1"], FULL)
