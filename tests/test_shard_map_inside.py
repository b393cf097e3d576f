"""statemap transforms inside `jax.shard_map` (check_vma=True) and sharded `jit`, 8 simulated CPU devices.

Runs tests/_shard_map_script.py (the `_compat.struct_like` entry keeps the shard_map axes a value varies over).

The device count is fixed when JAX starts, so the 8-device run cannot share this process (conftest.py
gives it 2).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).with_name("_shard_map_script.py")
_CHECKS = [
    "vmap2_stateless",
    "vmap2_reading_a_state_and_a_collective",
    "map_and_loops",
    "jit_grad_cond_inside",
    "sharded_jit_keeps_state_sharding",
]


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, str(_SCRIPT)], capture_output=True, text=True, timeout=300, env=env, cwd=root
    )
    results = dict(re.findall(r"^CHECK (\S+) (PASS|FAIL.*)$", proc.stdout, flags=re.M))
    return results, proc


def test_script_ran_every_check(report):
    results, proc = report
    assert sorted(results) == sorted(_CHECKS), (proc.stdout, proc.stderr[-3000:])


@pytest.mark.parametrize("name", _CHECKS)
def test_check(report, name):
    results, proc = report
    assert name in results, (proc.stdout, proc.stderr[-3000:])
    assert results[name] == "PASS", results[name]
