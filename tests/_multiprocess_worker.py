"""One process of tests/test_multiprocess.py: ``python _multiprocess_worker.py <port> <process_id> <n_processes>``.

With ``n_processes == 1`` it runs alone on 8 CPU devices (the reference); otherwise it joins a
`jax.distributed` job on 127.0.0.1 with 8 / n_processes CPU devices. Prints ``RESULT <json>`` with the
values each check computed, gathered to full arrays, so the parent can compare the layouts.
"""

import json
import os
import sys


def main() -> int:
    port, pid, nproc = (int(a) for a in sys.argv[1:4])
    local = 8 // nproc
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    if nproc > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import multihost_utils

    import statemap as sm

    def gathered(x):
        return np.asarray(multihost_utils.process_allgather(x, tiled=True)).tolist()

    rows = slice(pid * local, (pid + 1) * local)
    out: dict[str, object] = {"devices": jax.device_count(), "local": jax.local_device_count()}

    # pmap2: collectives, axis_size and axis_index are global; per-device states written back per process.
    h = sm.ShortTermState(jnp.arange(8.0)[rows], name="h")
    sm.random.seed(7)

    def step(x):
        h.value = h.value + jax.lax.psum(x, "d")
        noise = sm.random.normal()
        return jnp.stack([jax.lax.pmean(x, "d"), jax.lax.axis_size("d") * 1.0, jax.lax.axis_index("d") * 1.0, noise])

    f = sm.transform.pmap2(step, axis_name="d", state_in_axes={0: h}, state_out_axes={0: h})
    res = f(jnp.arange(8.0)[rows])
    out["pmap2"] = gathered(res)
    out["pmap2_state"] = gathered(h.value)
    out["key_after"] = np.asarray(jax.random.key_data(sm.random.DEFAULT.value)).tolist()
    res2 = f(jnp.arange(8.0)[rows])  # compiled once per signature: the second call reuses it
    out["pmap2_again"] = gathered(res2)[:3]

    class Cell(sm.nn.Module):
        def init_state(self):
            self.v = sm.HiddenState(sm.random.uniform(size=(2,)))

    cell = Cell()
    sm.random.seed(3)
    sm.transform.pmap2_new_states(cell, axis_size=local)
    out["pmap2_new_states"] = gathered(cell.v.value)
    # jit around pmap2 behaves as jit around jax.pmap (which, across processes, reduces over local devices).
    ours = sm.transform.jit(sm.transform.pmap2(lambda v: jax.lax.psum(v, "d"), axis_name="d"))
    raw = jax.jit(jax.pmap(lambda v: jax.lax.psum(v, "d"), axis_name="d"))
    out["jit_pmap2_local"] = np.asarray(ours(jnp.arange(8.0)[rows])).tolist()
    out["jit_pmap_raw_local"] = np.asarray(raw(jnp.arange(8.0)[rows])).tolist()

    # The stateful shard_map over a global mesh: states and arguments are global arrays.
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()), ("d",))
    row = NamedSharding(mesh, P("d"))
    full = np.arange(16.0, dtype=np.float32).reshape(8, 2)
    glob = jax.make_array_from_process_local_data(row, full[pid * local : (pid + 1) * local])
    cells = sm.ShortTermState(jax.make_array_from_process_local_data(row, np.ones((local, 2), np.float32)))
    count = sm.ShortTermState(jnp.zeros(()), name="count")
    sm.random.seed(11)

    def shard_step(x):
        cells.value = cells.value * 2 + x
        count.value = count.value + 1.0
        return x + sm.random.normal(size=x.shape)

    g = sm.transform.shard_map(shard_step, mesh, P("d"), P("d"), state_in_specs={P("d"): cells},
                               state_reduce={"add": count})  # fmt: skip
    res = g(glob)
    out["shard_map"] = gathered(res)
    out["shard_map_state"] = gathered(cells.value)
    out["shard_map_count"] = float(count.value)
    out.update(_sharded_jit(sm, mesh, row, glob, full, pid, local, gathered))
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def _sharded_jit(sm, mesh, row, glob, full, pid, local, gathered):
    """`jit` with in/out shardings and `state_shardings` on the global mesh: global values and the layout."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    def rows_here(x):  # the global rows this process holds, and whether the state is still split by rows
        spans = sorted({(s.index[0].start or 0, s.index[0].stop or 8) for s in x.addressable_shards})
        return {"spec": str(x.sharding.spec), "spans": spans}

    rep = NamedSharding(mesh, P())
    w = sm.ParamState(jax.make_array_from_process_local_data(row, full[pid * local : (pid + 1) * local] / 10))

    def step(v, scale=1.0):
        w.value = w.value * 0.5 + jnp.sin(v)
        return (w.value * v).sum(axis=1) * scale

    fast = sm.transform.jit(step, in_shardings=(row,), out_shardings=rep)
    traced = sm.transform.jit(step, static_argnums=1, in_shardings=(row,), out_shardings=rep)
    res = [gathered(fast(glob)), gathered(traced(glob, 2.0)), gathered(fast(glob))]
    out = {"jit": res, "jit_state": gathered(w.value), "jit_layout": rows_here(w.value)}

    u = sm.ShortTermState(jnp.zeros((8, 2)), name="u")  # the same host value on every process, unsharded
    r = sm.ShortTermState(jnp.ones((8, 2)), name="r")  # read only: placed after the call
    placed = sm.transform.jit(lambda v: _accumulate(u, r, v), state_shardings={row: [u, r]}, out_shardings=rep)
    res = [gathered(placed(glob)), gathered(placed(glob))]
    out.update(placed=res, placed_state=gathered(u.value))
    out.update(placed_layout=rows_here(u.value), placed_read_layout=rows_here(r.value))
    return out


def _accumulate(u, r, v):
    u.value = u.value + v * r.value
    return u.value.sum()


if __name__ == "__main__":
    sys.exit(main())
