"""Case 7: peak host memory (max RSS) of a workload, statemap against pure JAX, each in a fresh subprocess.

``python -m bench.memory WORKLOAD IMPL SIZES_JSON CALLS`` builds one workload (``lif`` or ``ensemble``) with
one implementation (``statemap``, ``pure``, or ``brainstate`` in the peer venv), runs it `CALLS` times and
prints one JSON line with the peak resident memory in KiB after the imports and at the end.

The peak is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``. On Linux the kernel carries the high-water mark of
the memory image that `execve` replaces into the new program's ``ru_maxrss``. A worker spawned directly from
the benchmark process would therefore start at the parent's RSS. So `measure` starts the worker from a small
``/bin/sh``, which forks it. The worker also reports ``VmHWM`` from ``/proc/self/status`` (the high-water mark
of its own memory image) and uses it as the peak when it is available.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["measure"]

ROOT = Path(__file__).resolve().parent.parent


def _maxrss_kib() -> int:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib // 1024 if sys.platform == "darwin" else kib  # macOS reports bytes


def _vmhwm_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_kib() -> int:
    hwm = _vmhwm_kib()
    return hwm if hwm is not None else _maxrss_kib()


def measure(
    workload: str,
    impl: str,
    sizes: dict[str, Any],
    calls: int,
    timeout: float = 600,
    python: str | None = None,
) -> dict[str, Any]:
    """Run the worker in a fresh interpreter (`python`, default this one) and return its JSON report."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    cmd = [python or sys.executable, "-m", "bench.memory", workload, impl, json.dumps(sizes), str(calls)]
    if os.path.exists("/bin/sh"):  # fork from a small shell: see the module docstring; `exit` stops sh exec'ing
        cmd = ["/bin/sh", "-c", '"$0" "$@"; exit $?', *cmd]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker {workload}/{impl} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _main(argv: list[str]) -> None:
    workload, impl, sizes_json, calls = argv
    import importlib

    import jax

    from . import workloads as W

    lib = importlib.import_module(impl) if impl != "pure" else None
    after_import = _peak_kib()
    sizes = json.loads(sizes_json)
    if workload == "lif":
        z = W.LifSizes(**sizes)
        model: Any = W.PureLif(z) if lib is None else W.StatemapLif(z, lib=lib)
    elif workload == "ensemble":
        ez = W.EnsembleSizes(**sizes)
        model = W.PureEnsemble(ez) if lib is None else W.StatemapEnsemble(ez, lib=lib)
    else:
        raise SystemExit(f"unknown workload {workload!r}")
    for _ in range(int(calls)):
        jax.block_until_ready(model())
    print(
        json.dumps(
            {
                "workload": workload,
                "impl": impl,
                "after_import_kib": after_import,
                "peak_kib": _peak_kib(),
                "ru_maxrss_kib": _maxrss_kib(),
                "vmhwm_kib": _vmhwm_kib(),
            }
        )
    )


if __name__ == "__main__":
    _main(sys.argv[1:])
