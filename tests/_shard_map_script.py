"""Run by tests/test_shard_map_inside.py in its own process, with 8 simulated CPU devices.

statemap transforms used inside `jax.shard_map` with the default ``check_vma=True``. Prints one line per check:
``CHECK <name> PASS`` or ``CHECK <name> FAIL <reason>``; everything runs under ``main()``.
"""

import os
import sys


def main() -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _device_checks import report, start_jax

    start_jax(8)
    import warnings

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    import statemap as sm

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

    @check
    def jit_state_shardings_on_a_2d_mesh():
        from jax.sharding import NamedSharding

        mesh2 = Mesh(np.array(jax.devices()).reshape(4, 2), ("x", "y"))
        tiles, by_row = NamedSharding(mesh2, P("x", "y")), NamedSharding(mesh2, P("x"))
        w = sm.ParamState(jnp.arange(64.0).reshape(16, 4) / 10, name="w")  # written: tiled over both axes
        r = sm.ShortTermState(jnp.ones((16, 4)), name="r")  # read only: placed after the call
        h = sm.ShortTermState(jnp.zeros(4), name="h")  # not selected
        f = sm.transform.jit(
            lambda v: _jit_step(w, r, h, v), state_shardings={tiles: sm.ParamState, by_row: r}
        )  # fmt: skip
        pure = jax.jit(lambda w, r, h, v: _jit_pure(w, r, h, v))
        ws, hs = w.value, h.value
        for i in range(2):
            v = jnp.full((16, 4), 0.5 + i)
            out = f(v)
            ws, hs, want = pure(ws, r.value, hs, v)
            np.testing.assert_allclose(out, want, rtol=1e-6)
            np.testing.assert_allclose(w.value, ws, rtol=1e-6)
            np.testing.assert_allclose(h.value, hs, rtol=1e-6)
        assert w.value.sharding.spec == P("x", "y") and r.value.sharding.spec == P("x"), (w.value.sharding,)
        assert {s.data.shape for s in w.value.addressable_shards} == {(4, 2)}
        odd = sm.ParamState(jnp.zeros((6, 4)), name="odd")
        try:
            sm.transform.jit(lambda: odd.value.sum(), state_shardings={tiles: odd})()
        except sm.BatchAxisError as e:
            assert "'odd'" in str(e) and "dimension 0 (size 6) does not divide by 4" in str(e), e
        else:
            raise AssertionError("a state that does not divide must raise")

    def _jit_step(w, r, h, v):
        w.value = jnp.tanh(w.value + v * r.value)
        h.value = h.value + w.value.sum(axis=0)
        return (w.value * 2).sum(axis=1)

    def _jit_pure(w, r, h, v):
        w = jnp.tanh(w + v * r)
        return w, h + w.sum(axis=0), (w * 2).sum(axis=1)

    @check
    def vmap2_map_and_for_loop_inside_stateful_shard_map():
        h = sm.ShortTermState(jnp.ones((16, 2)), name="h")  # split by rows: 2 rows per shard, one per lane
        w = sm.ParamState(jnp.array([1.0, -2.0]), name="w")  # replicated, read in every lane
        acc = sm.ShortTermState(jnp.zeros((16, 2)), name="acc")  # split, carried by a for_loop over the rows

        def lane(v):
            h.value = h.value * 0.5 + v * w.value + jax.lax.psum(v, "d")
            return jnp.tanh(h.value)

        def map_lane(v):
            h.value = h.value - 0.1 * v
            return v * w.value + h.value

        def body(block):
            y = sm.transform.vmap2(lane, state_in_axes={0: h}, state_out_axes={0: h})(block)
            z = sm.transform.map(map_lane, block, state_in_axes={0: h}, state_out_axes={0: h})

            def accumulate(i):
                acc.value = acc.value.at[i].add(y[i] + z[i])

            sm.transform.for_loop(accumulate, jnp.arange(block.shape[0]))
            return y + z

        spec = {P("d"): [h, acc]}
        f = sm.transform.shard_map(body, mesh, P("d"), P("d"), state_in_specs=spec)

        def pure_body(hb, wv, ab, block):
            def lane_(hr, v):
                hr = hr * 0.5 + v * wv + jax.lax.psum(v, "d")
                return hr, jnp.tanh(hr)

            hb, y = jax.vmap(lane_)(hb, block)
            hb = hb - 0.1 * block
            z = jax.vmap(lambda v, hr: v * wv + hr)(block, hb)
            return y + z, hb, ab + y + z

        ref = jax.shard_map(
            pure_body, mesh=mesh, in_specs=(P("d"), P(), P("d"), P("d")), out_specs=(P("d"), P("d"), P("d"))
        )
        hs, accs = h.value, acc.value
        for _ in range(2):
            out = f(x)
            want, hs, accs = ref(hs, w.value, accs, x)
            np.testing.assert_allclose(out, want, rtol=1e-5)
            np.testing.assert_allclose(h.value, hs, rtol=1e-5)
            np.testing.assert_allclose(acc.value, accs, rtol=1e-5)
        assert sm.transform.jit(f)(x).shape == x.shape  # under jit too

    @check
    def shard_map_policy_auto_on_a_2d_mesh():
        mesh2 = Mesh(np.array(jax.devices()).reshape(4, 2), ("x", "y"))
        s = sm.ShortTermState(jnp.zeros(2), name="per_shard")

        def g(block):
            s.value = s.value + block.sum(axis=0)
            return block

        f = sm.transform.shard_map(g, mesh2, P(("x", "y")), P(("x", "y")), unexpected_out_state_mapping="auto")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            f(x)
        assert len(caught) == 1 and "'per_shard'" in str(caught[0].message), caught
        want = jnp.stack([blk.sum(axis=0) for blk in jnp.split(x, 8)])  # one row per shard, in mesh order
        np.testing.assert_allclose(s.value, want, rtol=1e-6)
        f(x)
        np.testing.assert_allclose(s.value, 2 * want, rtol=1e-6)
        row = f.explain(x).rows[0]
        assert (row["in_axis"], row["how"]) == ("rows P(('x', 'y'),)", "policy:auto"), row

    return report(checks)


if __name__ == "__main__":
    sys.exit(main())
