"""Run a worker script as the processes of one `jax.distributed` job on loopback (for the multi-process tests).

Each worker gets ``<port> <process id> <process count> *extra`` on its command line, runs in its own process
group (killed as a whole on timeout, so a hung collective cannot hang the suite) and prints one line
``RESULT <json>``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(worker: Path, nproc: int, *extra: str, timeout_s: float = 120) -> list[dict[str, Any]]:
    """The ``RESULT`` of each of `nproc` processes running `worker` (process 0 first)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(port), str(pid), str(nproc), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=_ROOT,
            start_new_session=True,  # its own process group: killed as a whole on timeout
        )
        for pid in range(nproc)
    ]
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout_s)
            assert p.returncode == 0, stderr[-3000:]
            line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
            results.append(json.loads(line[len("RESULT ") :]))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()  # reap it and close its pipes
    return results
