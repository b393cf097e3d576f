"""pmap2 on 8 simulated CPU devices: runs tests/_pmap_devices_script.py in its own process.

The device count is fixed when JAX starts, so the 8-device run cannot share this process (conftest.py
gives it 2).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).with_name("_pmap_devices_script.py")
_CHECKS = [
    "device_count",
    "parity_with_jax_pmap",
    "states_sliced_per_device",
    "state_on_axis_1",
    "static_broadcasted_argnums_user_numbering",
    "donate_argnums_user_numbering",
    "compile_once_per_signature",
    "random_per_device",
    "pmap2_new_states",
    "pmap2_of_vmap2",
    "errors_name_pmap2_and_leave_states_untouched",
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
