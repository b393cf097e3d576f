"""Run by tests/test_checkpoint.py in its own process, with 8 simulated CPU devices.

Checkpoints of states sharded over the 8 devices: each comes back with the sharding of the value it replaces.
Also checks, before anything imports orbax, that ``import statemap`` does not. Prints one line per check:
``CHECK <name> PASS`` or ``CHECK <name> FAIL <reason>``. JAX is imported only once ``main()`` has set the
device count, so the checks import it inside.
"""

import os
import sys


def _states(value_of):
    """The same states every check uses, their values built by ``value_of(array, sharding)``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import statemap as sm

    mesh = Mesh(np.array(jax.devices()), ("d",))
    grid = Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b"))
    return {
        "rows": sm.ParamState(value_of(jnp.arange(32.0).reshape(16, 2), NamedSharding(mesh, P("d")))),
        "grid": sm.ParamState(value_of(jnp.arange(64.0).reshape(8, 8), NamedSharding(grid, P("a", "b")))),
        "cols": sm.State(value_of(jnp.ones((3, 8), jnp.bfloat16), NamedSharding(grid, P(None, "b")))),
        "rep": sm.State(value_of(jnp.arange(4, dtype=jnp.int32), NamedSharding(mesh, P()))),
        "keys": sm.State(value_of(jax.random.split(jax.random.key(5), 8), NamedSharding(mesh, P("d")))),
        "nested": sm.State({"mu": value_of(jnp.full(8, 2.0), NamedSharding(mesh, P("d")))}),
    }


def _zeros(x, sharding):
    """A value like `x` (zeros, or other keys) placed with `sharding`."""
    import jax
    import jax.numpy as jnp

    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.device_put(jax.random.split(jax.random.key(0), x.shape[0]), sharding)
    return jax.device_put(jnp.zeros_like(x), sharding)


def _assert_same_values(a, b):
    import jax
    import jax.numpy as jnp
    import numpy as np

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


def _round_trip_keeps_every_sharding(path):
    import jax

    import statemap as sm

    src = _states(jax.device_put)
    sm.checkpoint.save(path, src)
    dst = _states(_zeros)
    sm.checkpoint.restore(path, dst)
    for k in src:
        _assert_same_values(src[k].value, dst[k].value)
        for a, b in zip(jax.tree.leaves(src[k].value), jax.tree.leaves(dst[k].value), strict=True):
            assert b.sharding == a.sharding, (k, a.sharding, b.sharding)
            assert len(b.addressable_shards) == 8


def sharded_round_trip_keeps_every_sharding(folder):
    _round_trip_keeps_every_sharding(os.path.join(folder, "round"))


def npz_restore_keeps_the_sharding(folder):
    _round_trip_keeps_every_sharding(os.path.join(folder, "round.npz"))


def restore_reshards_into_the_current_sharding(folder):
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import statemap as sm

    path = os.path.join(folder, "reshard")
    sm.checkpoint.save(path, _states(jax.device_put))
    mesh = Mesh(np.array(jax.devices()), ("d",))
    grid = Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b"))
    other = {"rows": NamedSharding(grid, P(("a", "b"))), "grid": NamedSharding(mesh, P(None, "d")),
             "cols": NamedSharding(mesh, P()), "rep": NamedSharding(grid, P("b")),
             "keys": NamedSharding(mesh, P()), "nested": NamedSharding(grid, P("b"))}  # fmt: skip
    dst = _states(lambda x, s: x)
    for k, s in dst.items():
        s.value = jax.tree.map(lambda x, k=k: _zeros(x, other[k]), s.value)
    before = {k: [x.sharding for x in jax.tree.leaves(s.value)] for k, s in dst.items()}
    sm.checkpoint.restore(path, dst)
    _assert_same_values([s.value for s in _states(jax.device_put).values()], [s.value for s in dst.values()])
    for k, s in dst.items():
        for leaf, was in zip(jax.tree.leaves(s.value), before[k], strict=True):  # JAX writes P() of keys as P(None)
            assert leaf.sharding == was and leaf.sharding.is_equivalent_to(other[k], leaf.ndim), (k, leaf.sharding)


def main() -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _device_checks import report, start_jax

    start_jax(8)
    import tempfile

    import jax

    import statemap  # noqa: F401

    orbax_imported = "orbax.checkpoint" in sys.modules  # before any check runs
    folder = tempfile.mkdtemp()

    def statemap_imports_without_orbax():
        assert not orbax_imported, "import statemap imported orbax.checkpoint"
        assert jax.device_count() == 8

    checks = {"statemap_imports_without_orbax": statemap_imports_without_orbax}
    for fn in [sharded_round_trip_keeps_every_sharding, restore_reshards_into_the_current_sharding,
               npz_restore_keeps_the_sharding]:  # fmt: skip
        checks[fn.__name__] = lambda fn=fn: fn(folder)
    return report(checks)


if __name__ == "__main__":
    sys.exit(main())
