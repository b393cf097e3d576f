"""Type-check a snippet that uses statemap with ``mypy --strict`` (for the tests of statemap's static types)."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[1]


def mypy_lines(tmp_path: pathlib.Path, source: str) -> tuple[list[str], int, str]:
    """(the ``note: Revealed type ...`` and ``error: ...`` lines, mypy's exit status, its whole output)."""
    api = pytest.importorskip("mypy.api")
    path = tmp_path / "uses_statemap.py"
    path.write_text(textwrap.dedent(source))
    out, err, status = api.run(["--strict", "--cache-dir", str(_ROOT / ".mypy_cache"), str(path)])
    lines = [line.split(": ", 1)[1] for line in out.splitlines() if ": error: " in line or "Revealed type" in line]
    return lines, status, out + err
