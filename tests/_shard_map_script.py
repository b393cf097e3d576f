"""Run by tests/test_shard_map_inside.py in its own process, with 8 simulated CPU devices.

statemap transforms used inside `jax.shard_map` with the default ``check_vma=True``. Prints one line per check:
``CHECK <name> PASS`` or ``CHECK <name> FAIL <reason>``; everything runs under ``main()``.
"""

import os
import sys


def main() -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _device_checks import report

    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import warnings

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    import statemap as sm

    jax.config.update("jax_numpy_rank_promotion", "raise")
    warnings.simplefilter("error")
    mesh = Mesh(np.array(jax.devices()), ("d",))
    x = jnp.arange(32.0).reshape(16, 2) / 10
    checks = {}

    def check(fn):
        checks[fn.__name__] = fn
        return fn

    def sharded(body):
        return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("d"), out_specs=P("d")))

    @check
    def vmap2_stateless():
        got = sharded(sm.transform.vmap2(lambda v: jnp.sin(v) * 2 + v))(x)
        np.testing.assert_allclose(got, jnp.sin(x) * 2 + x, rtol=1e-6)

    @check
    def vmap2_reading_a_state_and_a_collective():
        w = sm.ParamState(jnp.array([1.0, -2.0]), name="w")
        f = sm.transform.vmap2(lambda v: v * w.value + jax.lax.psum(v, "d"))
        want = jax.shard_map(
            jax.vmap(lambda v: v * jnp.array([1.0, -2.0]) + jax.lax.psum(v, "d")),
            mesh=mesh,
            in_specs=P("d"),
            out_specs=P("d"),
        )(x)
        np.testing.assert_allclose(sharded(f)(x), want, rtol=1e-6)

    @check
    def map_and_loops():
        def body(block):
            ys = sm.transform.map(lambda v: v * 2, block, batch_size=1)
            total = sm.transform.for_loop(lambda v: v.sum(), block)
            carry, _ = sm.transform.scan(lambda c, v: (c + v, c), jnp.zeros_like(block[0]), block)
            return ys + total[:, None] * 0 + carry[None] * 0

        np.testing.assert_allclose(sharded(body)(x), x * 2, rtol=1e-6)

    @check
    def jit_grad_cond_inside():
        w = sm.ParamState(jnp.array(3.0), name="w")

        def body(block):
            g = sm.transform.grad(lambda v: (w.value * v).sum(), grad_states=w)(block)
            y = sm.transform.jit(lambda v: v * w.value)(block)
            z = sm.transform.cond(True, lambda v: v + 1.0, lambda v: v, block)
            return y + z - 1.0 + g * 0

        np.testing.assert_allclose(sharded(body)(x), x * 4, rtol=1e-6)

    @check
    def sharded_jit_keeps_state_sharding():
        from jax.sharding import NamedSharding

        row, rep = NamedSharding(mesh, P("d")), NamedSharding(mesh, P())
        w = sm.ParamState(jax.device_put(jnp.ones((16, 2)), row), name="w")

        def f(v, scale=1.0):
            w.value = w.value + v
            return v * scale

        fast = sm.transform.jit(f, in_shardings=(row,), out_shardings=rep)
        traced = sm.transform.jit(f, static_argnums=1, in_shardings=(row,), out_shardings=rep)
        for call in (lambda: fast(x), lambda: traced(x, 1.0), lambda: fast(x)):
            out = call()
            assert out.sharding.spec == P(), out.sharding
            assert w.value.sharding.spec == P("d"), w.value.sharding
        np.testing.assert_allclose(w.value, 1.0 + 3 * x, rtol=1e-6)

    return report(checks)


if __name__ == "__main__":
    sys.exit(main())
