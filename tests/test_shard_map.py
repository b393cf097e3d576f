"""Tests for statemap/transform/_shard_map.py: a stateful `jax.shard_map`, against the pure `jax.shard_map`.

conftest.py gives this process 2 CPU devices; the mesh uses all of them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import statemap as sm

MESH = Mesh(np.array(jax.devices()), ("d",))
N = len(jax.devices())
X = jnp.arange(float(4 * N * 3)).reshape(4 * N, 3) / 10


def _model():
    rows = sm.ShortTermState(jnp.ones((4 * N, 3)), name="rows")  # split by rows
    total = sm.ShortTermState(jnp.zeros(3), name="total")  # replicated, written with a reduced value

    def step(x):
        rows.value = rows.value * 0.5 + x
        total.value = total.value + jax.lax.psum(x.sum(axis=0), "d")
        return jnp.tanh(rows.value) * 2

    return rows, total, step


def test_parity_with_pure_shard_map():
    rows, total, step = _model()
    f = sm.transform.shard_map(step, MESH, P("d"), P("d"), state_in_specs={P("d"): rows})

    def pure(r, t, x):
        r = r * 0.5 + x
        return jnp.tanh(r) * 2, r, t + jax.lax.psum(x.sum(axis=0), "d")

    ref = jax.shard_map(pure, mesh=MESH, in_specs=(P("d"), P(), P("d")), out_specs=(P("d"), P("d"), P()))
    r, t = jnp.ones((4 * N, 3)), jnp.zeros(3)
    for _ in range(2):
        out = f(X)
        want, r, t = ref(r, t, X)
        np.testing.assert_allclose(out, want, rtol=1e-6)
        np.testing.assert_allclose(rows.value, r, rtol=1e-6)
        np.testing.assert_allclose(total.value, t, rtol=1e-6)


def test_random_streams_differ_per_shard_and_follow_the_seed():
    rng = sm.random.RandomState(0)
    f = sm.transform.shard_map(lambda x: x + rng.normal(size=x.shape), MESH, P("d"), P("d"))
    rng.seed(3)
    a = f(jnp.zeros((N, 2)))
    rng.seed(3)
    b = f(jnp.zeros((N, 2)))
    np.testing.assert_array_equal(a, b)
    assert len({tuple(np.asarray(row).tolist()) for row in a}) == N  # every shard its own numbers
    c = f(jnp.zeros((N, 2)))
    assert not np.array_equal(a, c)  # the key advanced once per call


def test_undeclared_per_shard_write_is_an_error_and_changes_nothing():
    s = sm.ShortTermState(jnp.zeros(3), name="per_shard")

    def g(x):
        s.value = s.value + x.sum(axis=0)
        return x

    with pytest.raises(sm.BatchAxisError, match="'per_shard'.*differs per shard"):
        sm.transform.shard_map(g, MESH, P("d"), P("d"))(X)
    np.testing.assert_array_equal(s.value, jnp.zeros(3))
    f = sm.transform.shard_map(g, MESH, P("d"), P("d"), state_out_specs={P("d"): s})
    f(X)  # declared: each shard's value comes back as its block
    assert s.value.shape == (3 * N,)


def test_a_state_that_does_not_divide_is_named():
    odd = sm.ShortTermState(jnp.zeros((2 * N + 1, 3)), name="odd")
    f = sm.transform.shard_map(lambda x: x + odd.value.sum(), MESH, P("d"), P("d"), state_in_specs={P("d"): odd})
    with pytest.raises(sm.BatchAxisError, match=r"'odd'.*does not divide along dimension 0"):
        f(X)


def test_under_jit_and_after_an_exception():
    rows, total, step = _model()
    f = sm.transform.shard_map(step, MESH, P("d"), P("d"), state_in_specs={P("d"): rows})
    sm.transform.jit(f)(X)
    np.testing.assert_allclose(rows.value, 0.5 + X, rtol=1e-6)
    before = np.asarray(rows.value)

    def failing(x):
        rows.value = rows.value + x
        raise RuntimeError("shard body failed")

    with pytest.raises(RuntimeError, match="shard body failed"):
        sm.transform.shard_map(failing, MESH, P("d"), P("d"), state_in_specs={P("d"): rows})(X)
    np.testing.assert_array_equal(rows.value, before)


def test_bad_state_specs_are_rejected():
    with pytest.raises(TypeError, match="state_in_specs"):
        sm.transform.shard_map(lambda x: x, MESH, P("d"), P("d"), state_in_specs={0: sm.ShortTermState})


@pytest.mark.parametrize("reduction", ["mean", "sum", "max", "add"])
def test_state_reduce_over_shards_matches_a_plain_loop(reduction):
    s = sm.ShortTermState(jnp.array([1.0, -1.0, 0.5]), name="s")
    old = s.value

    def g(x):
        s.value = s.value + x.sum(axis=0)
        return x

    sm.transform.shard_map(g, MESH, P("d"), P("d"), state_reduce={reduction: s})(X)
    new = jnp.stack([old + blk.sum(axis=0) for blk in jnp.split(X, N)])
    want = {"mean": new.mean(0), "sum": new.sum(0), "max": new.max(0), "add": old + (new - old[None]).sum(0)}
    np.testing.assert_allclose(s.value, want[reduction], rtol=1e-6)


def test_explain_shows_each_state():
    rows, total, step = _model()
    rng = sm.random.RandomState(0)
    f = sm.transform.shard_map(
        lambda x: step(x) + rng.normal(size=x.shape), MESH, P("d"), P("d"), state_in_specs={P("d"): rows}
    )
    by_name = {r["state"]: r for r in f.explain(X).rows}
    assert (by_name["'rows'"]["in_axis"], by_name["'rows'"]["out_axis"]) == ("P('d',)", "P('d',)")
    assert (by_name["'total'"]["in_axis"], by_name["'total'"]["how"]) == ("broadcast", "replicated")
    assert any(r["in_axis"] == "split-rng" for r in by_name.values())
    np.testing.assert_array_equal(rows.value, jnp.ones((4 * N, 3)))  # explain runs nothing


# unexpected_out_state_mapping: an undeclared per-shard write comes back with one row per shard (as vmap2
# scatters an undeclared per-lane write on a new axis 0), or raises (the default, above).


def _per_shard_sums(old):
    return jnp.stack([old + blk.sum(axis=0) for blk in jnp.split(X, N)])  # the loop oracle: one row per shard


def test_policy_warn_brings_rows_back_with_one_warning_naming_the_state():
    s = sm.ShortTermState(jnp.zeros(3), name="per_shard")

    def g(x):
        s.value = x.sum(axis=0)  # written only: the same shape on every call
        return x

    f = sm.transform.shard_map(g, MESH, P("d"), P("d"), unexpected_out_state_mapping="warn")
    with pytest.warns(UserWarning, match=r"'per_shard'.*one row per shard on a new axis 0 of size"):
        f(X)
    np.testing.assert_allclose(s.value, _per_shard_sums(jnp.zeros(3)), rtol=1e-6)
    f(X)  # warned once: pytest turns a second warning into an error
    assert s.value.shape == (N, 3)
    row = f.explain(X).rows[0]
    assert (row["in_axis"], row["out_axis"], row["how"]) == ("broadcast", "rows P('d',)", "policy:warn")


def test_policy_ignore_is_silent_and_matches_pure_shard_map():
    s = sm.ShortTermState(jnp.array([1.0, -1.0, 0.5]), name="s")
    old = s.value

    def g(x):
        s.value = s.value + x.sum(axis=0)
        return x * 2

    out = sm.transform.shard_map(g, MESH, P("d"), P("d"), unexpected_out_state_mapping="ignore")(X)
    ref = jax.shard_map(
        lambda s, x: (x * 2, (s + x.sum(axis=0))[None]), mesh=MESH, in_specs=(P(), P("d")), out_specs=(P("d"), P("d"))
    )
    want_out, want_s = ref(old, X)
    np.testing.assert_allclose(out, want_out, rtol=1e-6)
    np.testing.assert_allclose(s.value, want_s, rtol=1e-6)
    np.testing.assert_allclose(s.value, _per_shard_sums(old), rtol=1e-6)


def test_policy_auto_gives_each_shard_its_row_once_it_has_one():
    s = sm.ShortTermState(jnp.zeros(3), name="acc")

    def g(x):
        s.value = s.value + x.sum(axis=0)
        return x

    f = sm.transform.shard_map(g, MESH, P("d"), P("d"), unexpected_out_state_mapping="auto")
    with pytest.warns(UserWarning, match="'acc'"):
        f(X)  # replicated on input, per shard on output: rows on a new axis
    want = _per_shard_sums(jnp.zeros(3))
    np.testing.assert_allclose(s.value, want, rtol=1e-6)
    row = f.explain(X).rows[0]
    assert (row["in_axis"], row["out_axis"], row["how"]) == ("rows P('d',)", "rows P('d',)", "policy:auto")
    f(X)  # read with one row per shard: each shard sees its row, the shape stays
    ref = jax.shard_map(lambda s, x: s + x.sum(axis=0)[None], mesh=MESH, in_specs=(P("d"), P("d")), out_specs=P("d"))
    np.testing.assert_allclose(s.value, ref(want, X), rtol=1e-6)
    assert s.value.shape == (N, 3)


def test_policies_leave_declared_reduced_and_replicated_writes_alone():
    rows, total, step = _model()
    f = sm.transform.shard_map(
        step, MESH, P("d"), P("d"), state_in_specs={P("d"): rows}, unexpected_out_state_mapping="warn"
    )
    f(X)  # no warning: rows is declared, total is written with a value reduced over the mesh
    assert rows.value.shape == (4 * N, 3) and total.value.shape == (3,)
    s = sm.ShortTermState(jnp.zeros(3), name="s")

    def g(x):
        s.value = s.value + x.sum(axis=0)
        return x

    sm.transform.shard_map(g, MESH, P("d"), P("d"), state_reduce={"sum": s}, unexpected_out_state_mapping="auto")(X)
    np.testing.assert_allclose(s.value, X.sum(axis=0), rtol=1e-6)


def test_bad_policy_is_rejected_and_the_error_offers_the_policies():
    with pytest.raises(ValueError, match=r"shard_map: unexpected_out_state_mapping='bogus' is not a policy"):
        sm.transform.shard_map(lambda x: x, MESH, P("d"), P("d"), unexpected_out_state_mapping="bogus")
    s = sm.ShortTermState(jnp.zeros(3), name="s")

    def g(x):
        s.value = x.sum(axis=0)
        return x

    with pytest.raises(sm.BatchAxisError, match=r"fix:(.|\n)*unexpected_out_state_mapping='warn'/'auto'"):
        sm.transform.shard_map(g, MESH, P("d"), P("d"))(X)


def test_policy_auto_reads_rows_a_state_already_has_in_a_fresh_transform():
    s = sm.ShortTermState(jnp.arange(N * 3.0).reshape(N, 3), name="rows_already")
    old = s.value

    def g(x):
        s.value = s.value * 2 + x.sum()  # works on the full value too: found by the first discovery
        return x

    f = sm.transform.shard_map(g, MESH, P("d"), P("d"), unexpected_out_state_mapping="auto")
    f(X)  # no warning: the shape does not change
    ref = jax.shard_map(lambda s, x: s * 2 + jax.numpy.sum(x), mesh=MESH, in_specs=(P("d"), P("d")), out_specs=P("d"))
    np.testing.assert_allclose(s.value, ref(old, X), rtol=1e-6)
    assert f.explain(X).rows[0]["how"] == "policy:auto"
