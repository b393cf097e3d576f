"""pmap2, shard_map and sharded jit across two real processes on loopback (`jax.distributed`), against one
process with 8 devices.

The launcher (tests/_launch.py) starts each worker (tests/_multiprocess_worker.py) in its own process group and
kills only that group on timeout, so a hung collective cannot hang the suite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _launch import launch

_WORKER = Path(__file__).with_name("_multiprocess_worker.py")
_TIMEOUT_S = 120


def _launch(nproc: int) -> list[dict]:
    return launch(_WORKER, nproc, timeout_s=_TIMEOUT_S)


@pytest.fixture(scope="module")
def runs() -> tuple[list[dict], list[dict]]:
    return _launch(1), _launch(2)


def test_two_processes_see_eight_devices(runs):
    single, double = runs
    assert single[0]["devices"] == 8 and single[0]["local"] == 8
    assert [r["devices"] for r in double] == [8, 8] and [r["local"] for r in double] == [4, 4]


@pytest.mark.parametrize(
    "key",
    ["pmap2", "pmap2_state", "key_after", "pmap2_again", "pmap2_new_states", "shard_map", "shard_map_state",
     "shard_map_count", "jit", "jit_state", "placed", "placed_state"],
)  # fmt: skip
def test_pmap2_across_processes_matches_one_process(runs, key):
    single, double = runs
    for r in double:  # every process computes the same global result
        np.testing.assert_allclose(np.asarray(r[key]), np.asarray(single[0][key]), rtol=1e-6)


def test_random_streams_differ_per_global_device(runs):
    _, double = runs
    noise = np.asarray(double[0]["pmap2"])[:, 3]
    assert len(set(noise.tolist())) == 8


def test_jit_of_pmap2_behaves_as_jit_of_jax_pmap(runs):
    for r in [*runs[0], *runs[1]]:
        np.testing.assert_allclose(r["jit_pmap2_local"], r["jit_pmap_raw_local"])


@pytest.mark.parametrize("key", ["jit_layout", "placed_layout", "placed_read_layout"])
def test_sharded_jit_states_stay_split_by_rows_on_each_process(runs, key):
    """A state written by jit(in/out_shardings) or placed by state_shardings stays split by rows: 8 rows over 1
    process x 8 devices, or 4 rows on each of 2 processes x 4 devices, together every row once."""
    single, double = runs
    assert single[0][key] == {"spec": "P('d',)", "spans": [[i, i + 1] for i in range(8)]}
    assert [r[key]["spec"] for r in double] == ["P('d',)", "P('d',)"]
    assert [r[key]["spans"] for r in double] == [[[i, i + 1] for i in range(4)], [[i, i + 1] for i in range(4, 8)]]
