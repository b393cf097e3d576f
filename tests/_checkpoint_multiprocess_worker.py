"""One process of tests/test_checkpoint.py: ``python _checkpoint_multiprocess_worker.py <port> <pid> <n> <folder>``.

With ``n == 2`` it joins a `jax.distributed` job on 127.0.0.1 with 4 CPU devices (8 in all), saves a state
sharded over the 8 devices to ``<folder>/two`` (each process writes its own shards), restores it, overwrites it
and restores again. With ``n == 1`` it runs alone on 8 CPU devices and restores what the two processes wrote.
Prints ``RESULT <json>``.
"""

import json
import os
import sys


def main() -> int:
    port, pid, nproc = (int(a) for a in sys.argv[1:4])
    path = os.path.join(sys.argv[4], "two")
    local = 8 // nproc
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    if nproc > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import statemap as sm

    row = NamedSharding(Mesh(np.array(jax.devices()), ("d",)), P("d"))
    full = np.arange(16.0, dtype=np.float32).reshape(8, 2)

    def global_rows(x):  # this process's rows of a global (8, 2) array
        return jax.make_array_from_process_local_data(row, x[pid * local : (pid + 1) * local])

    def gathered(x):
        return np.asarray(multihost_utils.process_allgather(x, tiled=True)).tolist()

    w = sm.ParamState(global_rows(np.zeros_like(full)), name="w")
    count = sm.ShortTermState(jnp.zeros(()), name="count")
    rng = sm.random.RandomState(0)
    states = {"w": w, "count": count, "rng": rng}
    out: dict[str, object] = {"devices": jax.device_count(), "local": jax.local_device_count()}
    if nproc > 1:
        w.value, count.value = global_rows(full), jnp.asarray(5.0)
        rng.seed(3)
        sm.checkpoint.save(path, states)
        out["writers"] = [d for d in os.listdir(os.path.join(path, "arrays")) if d.startswith("ocdbt.process_")]
        w.value, count.value = global_rows(np.zeros_like(full)), jnp.zeros(())
        rng.seed(0)
        sm.checkpoint.restore(path, states)
        out["count"] = float(count.value)
        out["uniform_equal"] = bool(rng.uniform() == sm.random.RandomState(3).uniform())
        out["restored"] = gathered(w.value)
        w.value = global_rows(full * 2)
        sm.checkpoint.save(path, states, overwrite=True)
        w.value = global_rows(np.zeros_like(full))
        sm.checkpoint.restore(path, states)
        out["overwritten"] = gathered(w.value)
        local_rows = NamedSharding(Mesh(np.array(jax.local_devices()), ("l",)), P("l"))
        split = sm.State(jax.device_put(jnp.arange(4.0), local_rows), name="split")  # rows differ per process
        try:
            sm.checkpoint.save(os.path.join(sys.argv[4], "split"), {"split": split})
        except sm.CheckpointError as e:
            out["split_error"] = str(e)
    else:
        sm.checkpoint.restore(path, states)
        out["restored"] = gathered(w.value)
    out["spec"] = list(w.value.sharding.spec)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
