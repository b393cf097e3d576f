"""Tests for statemap/transform/_mapping_plan.py: the plan passes as plain functions of (function, config, call)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm
from statemap.transform._arguments import CallSignature
from statemap.transform._mapping_config import MappingConfig
from statemap.transform._mapping_plan import BROADCAST, RNG, build, classify, trace_lane


def _setup(**kw):
    h = sm.ShortTermState(jnp.zeros((4, 2)), name="h")
    w = sm.ParamState(jnp.ones(2), name="w")
    rng = sm.random.RandomState(0, name="rng")

    def f(x):
        h.value = h.value + w.value * x + rng.normal(size=())
        return h.value.sum()

    config = MappingConfig.create(f, name="vmap2", state_in_axes={0: h}, state_out_axes={0: h}, **kw)
    sig = CallSignature.of(config.args, (jnp.ones(4),), {})
    return f, config, sig, (h, w, rng)


def test_trace_lane_gives_roles_size_and_batch_dims():
    f, config, sig, (h, w, rng) = _setup()
    lt = trace_lane(f, config, sig, {})
    assert lt.states == [h, w, rng]
    assert lt.roles == [0, BROADCAST, RNG]
    assert lt.size == 4 and lt.axes == [0]
    entry = lt.entry
    assert entry.written == (True, False, False)  # a lane's first draw uses its own key: rng is not written
    assert lt.dims[: entry.n_out] == [0]  # the result varies per lane


def test_classify_decides_output_axes_and_rows():
    f, config, sig, (h, w, rng) = _setup()
    plan = classify(config, trace_lane(f, config, sig, {}), {})
    assert plan.out_list == [0] and plan.out_axes == [0] and plan.rng == [2]
    assert [r["how"] for r in plan.rows] == ["declared", "read-only", "rng"]
    assert plan.result_axes == [0]


def test_build_runs_like_the_loop_oracle():
    f, config, sig, (h, w, rng) = _setup()
    built = build(f, config, sig)
    states = built.program.states()
    values = [s.value for s in states]
    new_values, out = built.program.exe(sig.leaves, values)
    assert built.size == 4 and out.shape == (4,)
    assert new_values[0].shape == (4, 2) and new_values[1].shape == ()  # h, then the advanced key
    assert float(h.value.sum()) == 0.0  # building and running a program writes nothing back


def test_auto_policy_promotes_a_read_then_written_state():
    c = sm.State(jnp.zeros(3), name="c")

    def f(x):
        c.value = c.value + x
        return x

    config = MappingConfig.create(f, name="vmap2", unexpected_out_state_mapping="auto")
    sig = CallSignature.of(config.args, (jnp.ones(3),), {})
    first = classify(config, trace_lane(f, config, sig, {}), {})
    assert first.promote == {id(c): 0}
    built = build(f, config, sig)
    assert [r["how"] for r in built.rows] == ["policy:auto"]


def test_batch_size_errors_name_the_state():
    s = sm.State(jnp.zeros(5), name="odd")
    config = MappingConfig.create(lambda x: s.value, name="vmap2", state_in_axes={0: s})
    sig = CallSignature.of(config.args, (jnp.ones(3),), {})
    with pytest.raises(sm.BatchAxisError, match=r"(?s)disagree.*argument 0: 3.*'odd'.*: 5"):
        build(lambda x: s.value + x, config, sig)


def test_pmap_program_takes_a_dummy_input_when_nothing_is_mapped():
    n = jax.local_device_count()
    config = MappingConfig.create(lambda: jnp.zeros(()), name="pmap2", in_axes=(), axis_size=n, mapping_fn=jax.pmap)
    sig = CallSignature.of(config.args, (), {})
    built = build(lambda: jnp.zeros(()), config, sig)
    _, out = built.program.exe([], [])
    np.testing.assert_array_equal(out, np.zeros(n))


def _hlo_instructions(lowered):
    return sum(1 for line in lowered.compile().as_text().splitlines() if re.match(r"^\s*(ROOT )?[%\w.\-]+ = ", line))


def test_a_per_lane_draw_compiles_no_bigger_than_hand_written_split_and_vmap():
    """The lane draws with its own key from one outer split (no second split inside the lane)."""
    batch, width = 8, 16
    x = jnp.ones((batch, width))
    h = sm.ShortTermState(jnp.zeros((batch, width)), name="h")
    rng = sm.random.RandomState(0)

    def step(x):
        h.value = h.value + rng.normal(size=x.shape) + x
        return h.value

    mapped = sm.transform.vmap2(step, state_in_axes={0: h}, state_out_axes={0: h})

    def pure(h, key, x):
        keys = jax.random.split(key, batch + 1)
        return jax.vmap(lambda h, k, x: h + jax.random.normal(k, x.shape) + x)(h, keys[1:], x), keys[0]

    ours = _hlo_instructions(mapped.lower(x))
    reference = _hlo_instructions(jax.jit(pure).lower(h.value, rng.value, x))
    assert ours <= 1.1 * reference, (ours, reference)


def test_state_out_axes_out_of_range_names_the_state():
    g = sm.ShortTermState(jnp.zeros(()), name="g")

    def k(x):
        g.value = g.value + x
        return x

    with pytest.raises(sm.BatchAxisError, match=r"state 'g' .* axis 5, which is out of range"):
        sm.transform.vmap2(k, state_out_axes={5: g})(jnp.ones(3))
    assert float(g.value) == 0.0


def test_a_0d_leaf_inside_a_pytree_state_is_named():
    opt = sm.ShortTermState({"count": jnp.zeros((), jnp.int32), "mu": jnp.zeros((16, 3))}, name="opt")

    def f(x):
        opt.value = {"count": opt.value["count"] + 1, "mu": opt.value["mu"] + x}
        return x

    with pytest.raises(
        sm.BatchAxisError, match=r"'opt'.*its leaf \['count'\] i32\[\] has no axis 0(?s:.*)broadcast_to"
    ):
        sm.transform.vmap2(f, state_in_axes={0: opt}, state_out_axes={0: opt})(jnp.ones((16, 3)))
