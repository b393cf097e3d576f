"""Run by tests/test_pmap_devices.py in its own process, with 8 simulated CPU devices.

Prints one line per check: ``CHECK <name> PASS`` or ``CHECK <name> FAIL <reason>``. Everything runs under
``main()`` so that pytest's doctest collection can import this file without side effects.
"""

import os
import sys


def main() -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _device_checks import report, start_jax

    start_jax(8)

    import jax
    import jax.numpy as jnp
    import numpy as np

    import statemap as sm

    sm.random.seed(0)

    def close(a, b):
        la, ta = jax.tree_util.tree_flatten(a)
        lb, tb = jax.tree_util.tree_flatten(b)
        assert ta == tb, (ta, tb)
        for x, y in zip(la, lb, strict=True):
            assert np.shape(x) == np.shape(y), (np.shape(x), np.shape(y))
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)

    checks = {}

    def check(fn):
        checks[fn.__name__] = fn
        return fn

    @check
    def device_count():
        assert jax.local_device_count() == 8, jax.local_device_count()

    @check
    def parity_with_jax_pmap():
        h = sm.ShortTermState(jnp.arange(24.0).reshape(8, 3) / 10, name="h")  # one row per device
        w = sm.ParamState(jnp.array([1.0, -1.0, 0.5]), name="w")  # broadcast
        n = sm.State(jnp.array(0, jnp.int32), name="n")  # written with a device-independent value

        def step(x):
            h.value = jnp.tanh(h.value * w.value + jax.lax.psum(x, "d"))
            n.value = n.value + 1
            return h.value.sum(), jax.lax.axis_index("d")

        def pure(hv, wv, nv, x):
            hv = jnp.tanh(hv * wv + jax.lax.psum(x, "d"))
            return (hv.sum(), jax.lax.axis_index("d")), hv, nv + 1

        f = sm.transform.pmap2(step, axis_name="d", state_in_axes={0: [h]}, state_out_axes={0: [h]})
        ref = jax.pmap(pure, axis_name="d", in_axes=(0, None, None, 0), out_axes=(0, 0, None))
        hs, ns = h.value, n.value
        for k in range(3):
            xs = jnp.arange(8.0) * (k + 1) / 8
            out = f(xs)
            want, hs, ns = ref(hs, w.value, ns, xs)
            close(out, want)
            close(h.value, hs)
            assert int(n.value) == int(ns) == k + 1
        np.testing.assert_array_equal(w.value, [1.0, -1.0, 0.5])

    @check
    def states_sliced_per_device():
        s = sm.State(jnp.arange(16.0).reshape(8, 2), name="s")

        def step(x):
            me = jax.lax.axis_index("d")
            out = (s.value[0], me)
            s.value = s.value + me * 100
            return out

        first, idx = sm.transform.pmap2(
            step, axis_name="d", in_axes=None, axis_size=8, state_in_axes={0: [s]}, state_out_axes={0: [s]}
        )(jnp.ones(()))
        np.testing.assert_array_equal(first, np.arange(0.0, 16.0, 2))
        np.testing.assert_array_equal(idx, np.arange(8))
        np.testing.assert_array_equal(s.value, np.arange(16.0).reshape(8, 2) + 100 * np.arange(8)[:, None])

    @check
    def state_on_axis_1():
        s = sm.State(jnp.zeros((2, 8)), name="s")

        def step(x):
            s.value = s.value + x
            return x

        sm.transform.pmap2(step, state_in_axes={1: [s]}, state_out_axes={1: [s]})(jnp.arange(8.0))
        np.testing.assert_array_equal(s.value, np.tile(np.arange(8.0), (2, 1)))

    @check
    def static_broadcasted_argnums_user_numbering():
        calls = []

        def fn(x, k, y):
            calls.append(k)
            return x * k + y

        f = sm.transform.pmap2(fn, static_broadcasted_argnums=1)
        x, y = jnp.arange(8.0), jnp.ones(8)
        close(f(x, 3, y), jax.pmap(lambda x, k, y: x * k + y, static_broadcasted_argnums=1)(x, 3, y))
        close(f(x, 3, y), x * 3 + 1)
        close(f(x, 4, y), x * 4 + 1)
        assert calls == [3, 4], calls

    @check
    def donate_argnums_user_numbering():
        def fn(k, x, y):
            return x * k + y

        f = sm.transform.pmap2(fn, static_broadcasted_argnums=0, donate_argnums=2)
        x = jax.pmap(lambda v: v)(jnp.arange(8.0))
        y = jax.pmap(lambda v: v)(jnp.ones(8))
        out = f(2, x, y)
        close(out, jnp.arange(8.0) * 2 + 1)
        assert y.is_deleted(), "argument 2 was not donated"
        assert not x.is_deleted(), "argument 1 was donated"

    @check
    def compile_once_per_signature():
        calls = []
        t = sm.State(jnp.zeros(8), name="t")

        def step(x):
            calls.append(1)
            t.value = t.value + jax.lax.pmean(x, "d")
            return t.value

        f = sm.transform.pmap2(step, axis_name="d", state_in_axes={0: [t]}, state_out_axes={0: [t]})
        for _ in range(4):
            f(jnp.ones(8))
        assert len(calls) == 1, calls
        f(jnp.ones(8, jnp.int32))  # another signature
        assert len(calls) == 2, calls
        np.testing.assert_array_equal(t.value, 5 * np.ones(8))
        assert f.cache_info["hits"] == 3, f.cache_info

    @check
    def random_per_device():
        out = sm.transform.pmap2(lambda x: x + sm.random.normal(size=()))(jnp.zeros(8))
        assert len(set(np.asarray(out).tolist())) == 8

    @check
    def pmap2_new_states():
        class Neuron(sm.nn.Module):
            def __init__(self):
                self.calls = 0

            def init_state(self):
                self.calls += 1
                self.V = sm.HiddenState(sm.random.normal(size=3))
                self.t = sm.NonBatchState(jnp.array(0.0))

        neuron = Neuron()
        groups = sm.transform.pmap2_new_states(neuron, {})
        assert neuron.V.value.shape == (8, 3), neuron.V.value.shape
        assert neuron.t.value.shape == ()
        assert len({float(v) for v in neuron.V.value[:, 0]}) == 8
        assert groups == {0: [neuron.V], None: [neuron.t]}, groups
        assert neuron.calls == 1 and neuron.V.stack_level == 0

    @check
    def pmap2_of_vmap2():
        s = sm.State(jnp.arange(32.0).reshape(8, 4), name="s")  # device axis, then lane axis

        def lane(x):
            s.value = s.value * 2 + x + jax.lax.psum(x, "lanes")
            return s.value

        inner = sm.transform.vmap2(lane, axis_name="lanes", state_in_axes={0: [s]}, state_out_axes={0: [s]})
        f = sm.transform.pmap2(inner, axis_name="dev", state_in_axes={0: [s]}, state_out_axes={0: [s]})

        def pure_lane(sv, x):
            new = sv * 2 + x + jax.lax.psum(x, "lanes")
            return new, new

        ref = jax.pmap(jax.vmap(pure_lane, axis_name="lanes"), axis_name="dev")
        xs = jnp.arange(32.0).reshape(8, 4) / 7
        s0 = s.value
        out = f(xs)
        want, s1 = ref(s0, xs)
        close(out, want)
        close(s.value, s1)

    @check
    def errors_name_pmap2_and_leave_states_untouched():
        c = sm.State(jnp.zeros(()), name="c")

        def step(x):
            c.value = c.value + x
            return x

        key = np.asarray(jax.random.key_data(sm.random.DEFAULT.value))
        try:
            sm.transform.pmap2(step)(jnp.ones(8))
        except sm.BatchAxisError as e:
            assert str(e).startswith("pmap2: state 'c'"), str(e)
        else:
            raise AssertionError("no error")
        assert float(c.value) == 0.0 and not isinstance(c.value, jax.core.Tracer)
        np.testing.assert_array_equal(jax.random.key_data(sm.random.DEFAULT.value), key)

    return report(checks)


if __name__ == "__main__":
    sys.exit(main())
