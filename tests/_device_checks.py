"""Shared by the multi-device tests: scripts that run in their own process print one line per check.

A script (run with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``) collects its checks and calls
`report`; the parent test calls `run_script` and asserts on the ``PASS``/``FAIL`` lines. The device count is
fixed when JAX starts, so such a run cannot share the test process (conftest.py gives it 2 devices).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)


def report(checks: dict[str, Callable[[], None]]) -> int:
    """Run every check, print ``CHECK <name> PASS`` or ``CHECK <name> FAIL <reason>``; 1 if any failed."""
    failed = 0
    for name, fn in checks.items():
        try:
            fn()
        except BaseException as e:  # noqa: B036 - every failure is reported to the parent test
            failed += 1
            reason = f"{type(e).__name__}: {e}".replace("\n", " | ")[:600]
            print(f"CHECK {name} FAIL {reason}", flush=True)
            traceback.print_exc(file=sys.stderr)
        else:
            print(f"CHECK {name} PASS", flush=True)
    return 1 if failed else 0


def start_jax(devices: int = 8) -> None:
    """In a device script, before it imports JAX: `devices` CPU devices, strict rank promotion, warnings as errors
    (the settings conftest.py gives the in-process tests)."""
    import warnings

    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_numpy_rank_promotion", "raise")
    warnings.simplefilter("error")


def run_script(script: Path, devices: int = 8) -> tuple[dict[str, str], subprocess.CompletedProcess[str]]:
    """Run `script` in its own process with `devices` CPU devices: ({check: 'PASS' or 'FAIL ...'}, process)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=_ROOT
    )
    return dict(re.findall(r"^CHECK (\S+) (PASS|FAIL.*)$", proc.stdout, flags=re.M)), proc


def device_tests(script: Path, checks: list[str]) -> tuple[Any, Any, Any]:
    """(the module fixture running `script` once, a test that every check ran, a test per check)."""
    import pytest

    @pytest.fixture(scope="module")
    def report() -> tuple[dict[str, str], subprocess.CompletedProcess[str]]:
        return run_script(script)

    def test_script_ran_every_check(report: Any) -> None:
        results, proc = report
        assert sorted(results) == sorted(checks), (proc.stdout, proc.stderr[-3000:])

    @pytest.mark.parametrize("name", checks)
    def test_check(report: Any, name: str) -> None:
        results, proc = report
        assert name in results, (proc.stdout, proc.stderr[-3000:])
        assert results[name] == "PASS", results[name]

    return report, test_script_ran_every_check, test_check
