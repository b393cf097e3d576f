"""Tests of statemap.transform.cond / switch: parity with jax.lax, state unions, concrete predicates, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import statemap as sm
from statemap._errors import ControlFlowError

T = sm.transform


def assert_tree_close(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)


def assert_clean(*states):
    for s in (*states, sm.random.DEFAULT):
        assert not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(s.value))


def make_branches():
    a = sm.State(jnp.arange(3.0), name="a")  # written by true_fun only
    b = sm.State(jnp.array(1.0), name="b")  # written by false_fun only
    c = sm.State(jnp.full(3, 2.0), name="c")  # only read

    def true_fun(x):
        a.value = a.value + x * c.value
        return {"out": (x * 2).sum()}

    def false_fun(x):
        b.value = b.value * 3
        return {"out": x.sum() - b.value}

    def pure_true(a, b, c, x):
        return {"out": (x * 2).sum()}, a + x * c, b

    def pure_false(a, b, c, x):
        return {"out": x.sum() - b * 3}, a, b * 3

    return (a, b, c), true_fun, false_fun, pure_true, pure_false


@pytest.mark.parametrize("pred", [True, False])
def test_cond_matches_lax_cond_with_union_of_written_states(pred):
    (a, b, c), t, f, pt, pf = make_branches()
    x = jnp.array([1.0, 2.0, 3.0])
    out_ref, a_ref, b_ref = jax.lax.cond(pred, pt, pf, a.value, b.value, c.value, x)
    out = T.jit(lambda p, x: T.cond(p, t, f, x))(jnp.array(pred), x)
    assert_tree_close((out, a.value, b.value, c.value), (out_ref, a_ref, b_ref, jnp.full(3, 2.0)))
    assert_clean(a, b, c)


def test_every_branch_outputs_the_union_of_written_states():
    (a, b, c), t, f, _, _ = make_branches()
    jaxpr, states = T.make_jaxpr(lambda p, x: T.cond(p, t, f, x))(jnp.array(True), jnp.ones(3))
    (eqn,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "cond"]
    for branch in eqn.params["branches"]:
        assert len(branch.jaxpr.outvars) == 1 + 2  # result, a, b
    assert set(states) == {a, b, c}


def test_cond_with_integer_predicate_and_under_vmap():
    scale = sm.State(jnp.array(3.0), name="scale")

    def t(x):
        return x * scale.value

    def f(x):
        return -x

    ys = jax.vmap(lambda p, x: T.cond(p, t, f, x))(jnp.array([0, 2, -1]), jnp.array([1.0, 2.0, 3.0]))
    assert_tree_close(ys, jnp.array([-1.0, 6.0, 9.0]))
    assert_clean(scale)


def test_concrete_predicate_takes_the_branch_without_tracing_the_other():
    calls = []
    s = sm.State(jnp.zeros(()), name="s")

    def t(x):
        calls.append("t")
        s.value = s.value + x
        return x

    def f(x):
        calls.append("f")
        raise AssertionError("must not run")

    assert float(T.cond(True, t, f, 2.0)) == 2.0
    assert float(T.cond(1, t, f, 2.0)) == 2.0
    assert float(T.cond(np.bool_(True), t, f, 2.0)) == 2.0
    assert float(T.switch(0, [t, f], 1.0)) == 1.0
    assert calls == ["t"] * 4 and float(s.value) == 7.0


def test_cond_branches_traced_once_per_signature():
    calls = {"t": 0, "f": 0}
    s = sm.State(jnp.zeros(()), name="s")

    def t(x):
        calls["t"] += 1
        s.value = s.value + x.sum()
        return x

    def f(x):
        calls["f"] += 1
        return -x

    for p in (True, False, True):
        T.jit(lambda p, x: T.cond(p, t, f, x))(jnp.array(p), jnp.ones(2))  # a new jit each time
    assert calls == {"t": 1, "f": 1}
    T.jit(lambda p, x: T.cond(p, t, f, x))(jnp.array(True), jnp.ones(3))
    assert calls == {"t": 2, "f": 2}


@pytest.mark.parametrize("index", [-3, 0, 1, 2, 7])
def test_switch_matches_lax_switch(index):
    n = sm.State(jnp.array(0), name="n")
    v = sm.State(jnp.zeros(2), name="v")

    def b0(x):
        n.value = n.value + 1
        return x

    def b1(x):
        v.value = v.value + x
        return x * 2

    def b2(x):
        n.value = n.value - 1
        v.value = v.value * 0 + 5
        return x + v.value

    pure = [
        lambda n, v, x: (x, n + 1, v),
        lambda n, v, x: (x * 2, n, v + x),
        lambda n, v, x: (x + 5, n - 1, v * 0 + 5),
    ]
    x = jnp.array([1.0, 2.0])
    ref = jax.lax.switch(index, pure, n.value, v.value, x)
    out = T.jit(lambda i, x: T.switch(i, [b0, b1, b2], x))(jnp.array(index), x)
    assert_tree_close((out, n.value, v.value), ref)
    n.value, v.value = jnp.array(0), jnp.zeros(2)
    out = T.switch(index, [b0, b1, b2], x)  # concrete index: clamped, run directly
    assert_tree_close((out, n.value, v.value), ref)


# -- errors and restore ------------------------------------------------------------------------------------
def test_bad_predicates():
    with pytest.raises(ControlFlowError, match=r"(?s)cond: the predicate is not a scalar.*found:    bool\[2\]"):
        T.cond(jnp.array([True, False]), lambda: 1.0, lambda: 0.0)
    with pytest.raises(ControlFlowError, match=r"(?s)the predicate has dtype float32.*boolean"):
        T.jit(lambda p: T.cond(p, lambda: 1.0, lambda: 0.0))(jnp.array(1.0))
    with pytest.raises(TypeError, match=r"switch: the index has dtype bool"):
        T.switch(True, [lambda: 1.0, lambda: 0.0])
    with pytest.raises(ControlFlowError, match="branches is empty"):
        T.switch(0, [])
    with pytest.raises(sm.ArgumentError, match="false_fun is not callable"):
        T.cond(True, lambda: 1.0, 0.0)


def test_mismatched_branch_outputs_name_the_branch():
    p = jnp.array(True)
    with pytest.raises(ControlFlowError, match="false_fun returns another pytree structure than true_fun"):
        T.jit(lambda p: T.cond(p, lambda: (1.0, 2.0), lambda: 1.0))(p)
    with pytest.raises(ControlFlowError, match=r"(?s)branches\[2\] returns output\[1\] with another type.*f32\[3\]"):
        T.jit(lambda i: T.switch(i, [lambda: (1.0, jnp.ones(2))] * 2 + [lambda: (1.0, jnp.ones(3))]))(p.astype(int))


def test_state_written_with_different_types_names_the_state_and_branches():
    s = sm.State(jnp.zeros(2), name="s")
    other = sm.State(jnp.ones(2), name="other")

    def t():
        other.value = other.value * 2
        s.value = jnp.zeros(3)

    def f():
        other.value = other.value * 3

    with pytest.raises(
        ControlFlowError, match=r"(?s)state 's'.*false_fun.*true_fun writes f32\[3\], false_fun leaves f32\[2\]"
    ):
        T.jit(lambda p: T.cond(p, t, f))(jnp.array(True))
    assert_tree_close((s.value, other.value), (jnp.zeros(2), jnp.ones(2)))
    assert_clean(s, other)


def test_state_operand_is_refused():
    s = sm.State(jnp.zeros(2), name="s")
    with pytest.raises(sm.StateArgumentError, match=r"cond: argument operands\[1\]\['w'\] is state 's'"):
        T.cond(jnp.array(True), lambda x, y: x, lambda x, y: x, 1.0, {"w": s})
    with pytest.raises(sm.StateArgumentError, match=r"switch: argument operands\[0\] is state 's'"):
        T.switch(0, [lambda x: x], s)


@pytest.mark.parametrize("traced", [True, False])
def test_exception_in_a_branch_restores_every_state(traced):
    a = sm.State(jnp.ones(2), name="a")
    rng = sm.random.RandomState(2)
    key = np.asarray(jax.random.key_data(rng.value))
    default_key = np.asarray(jax.random.key_data(sm.random.DEFAULT.value))

    def t(x):
        a.value = a.value + x
        rng.split_key()
        sm.random.split_key()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        if traced:
            T.jit(lambda p, x: T.cond(p, lambda x: x, t, x))(jnp.array(False), jnp.ones(2))
        else:
            T.cond(False, lambda x: x, t, jnp.ones(2))
    assert_tree_close(a.value, jnp.ones(2))
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(rng.value)), key)
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(sm.random.DEFAULT.value)), default_key)
    assert_clean(a, rng)


def test_concrete_branch_under_plain_jax_jit_leaks_no_tracer():
    s = sm.State(jnp.zeros(()), name="s")

    def t(x):
        s.value = x
        return x

    with pytest.raises(sm.TraceContextError, match="state 's'"):
        jax.jit(lambda x: T.cond(True, t, t, x))(1.0)
    assert float(s.value) == 0.0
    assert_clean(s)


@given(
    shape=st.lists(st.integers(0, 2), max_size=2),
    dtype=st.sampled_from(["bool", "int32", "float32", "uint8"]),
)
def test_hypothesis_predicates(shape, dtype):
    """Bad predicates give ControlFlowError naming the predicate; good ones match jax.lax.cond."""
    s = sm.State(jnp.zeros(()), name="s")

    def t(x):
        s.value = s.value + 1
        return x + 1

    pred = jnp.zeros(shape, dtype)
    good = shape == [] and dtype != "float32"
    f = T.jit(lambda p, x: T.cond(p, t, lambda x: x - 1, x))
    if good:
        assert_tree_close(f(pred, 1.0), jax.lax.cond(pred, lambda x: x + 1, lambda x: x - 1, 1.0))
    else:
        with pytest.raises(ControlFlowError, match="the predicate"):
            f(pred, 1.0)
    assert float(s.value) == 0.0
    assert_clean(s)


# -- ifelse ------------------------------------------------------------------------------------------------
def make_ifelse_case():
    hits = sm.State(jnp.zeros(3), name="hits")
    scale = sm.State(jnp.array(2.0), name="scale")  # only read

    def branch(k):
        def f(x):
            hits.value = hits.value.at[k].add(x)
            return x * scale.value + k

        return f

    def pure(k, hits_v, x):
        return x * 2.0 + k, hits_v.at[k].add(x)

    return hits, [branch(k) for k in range(3)], pure


def first_true(flags):
    return next((i for i, f in enumerate(flags) if f), len(flags) - 1)


@pytest.mark.parametrize(
    "flags", [(True, True, False), (False, True, True), (False, False, True), (False, False, False)]
)
@pytest.mark.parametrize("traced", [False, True])
def test_ifelse_runs_the_first_true_branch_like_lax_switch(flags, traced):
    hits, branches, pure = make_ifelse_case()

    def run(conds, x):
        return T.ifelse(list(conds), branches, x)

    x = jnp.array(1.5)
    out = T.jit(run)(jnp.array(flags), x) if traced else run(flags, x)
    index = first_true(flags)
    ref_out, ref_hits = jax.lax.switch(index, [lambda x, k=k: pure(k, jnp.zeros(3), x) for k in range(3)], x)
    assert_tree_close((out, hits.value), (ref_out, ref_hits))
    assert_clean(hits)


def test_ifelse_with_an_array_of_conditions_under_vmap2_and_grad():
    w = sm.ParamState(jnp.array(3.0), name="w")

    def f(x):
        return T.ifelse(
            jnp.stack([x < 0, x < 1, x >= 1]),
            [lambda: -w.value * x, lambda: w.value * x**2, lambda: w.value],
        )

    xs = jnp.array([-1.0, 0.5, 4.0])
    assert_tree_close(T.vmap2(f)(xs), jnp.array([3.0, 0.75, 3.0]))
    g = T.grad(lambda x: f(x), grad_states=w, argnums=0)(0.5)
    ref = jax.grad(lambda w_, x: jax.lax.switch(1, [lambda: -w_ * x, lambda: w_ * x**2, lambda: w_]), argnums=(0, 1))(
        3.0, 0.5
    )
    assert_tree_close(g, ref)


def test_ifelse_check_cond_and_errors():
    hits, branches, _ = make_ifelse_case()
    with pytest.raises(ControlFlowError, match=r"(?s)not mutually exclusive.*2 true conditions"):
        T.ifelse([True, True, False], branches, 1.0, check_cond=True)
    assert float(T.ifelse([False, True, False], branches, 1.0, check_cond=True)) == 3.0
    with pytest.raises(
        ControlFlowError, match=r"(?s)conditions and branches differ in number.*one condition per branch \(3\)"
    ):
        T.ifelse([True, False], branches, 1.0)
    with pytest.raises(ControlFlowError, match=r"the conditions\[1\] is not a scalar"):
        T.ifelse([True, jnp.ones(2) > 0, False], branches, 1.0)
    with pytest.raises(ControlFlowError, match="branches is empty"):
        T.ifelse([], [], 1.0)
    with pytest.raises(sm.ArgumentError, match=r"branches\[1\] is not callable"):
        T.ifelse([True, False], [branches[0], 3], 1.0)
    with pytest.raises(ControlFlowError, match=r"branches\[1\] returns output with another type than branches\[0\]"):
        T.jit(lambda c: T.ifelse([c, True], [lambda: 1.0, lambda: jnp.ones(2)]))(True)
    assert_tree_close(hits.value, jnp.array([0.0, 1.0, 0.0]))


@pytest.mark.parametrize("traced", [False, True])
def test_ifelse_exception_in_a_branch_keeps_every_state(traced):
    hits, branches, _ = make_ifelse_case()

    def bad(x):
        hits.value = hits.value + 100.0
        raise RuntimeError("boom")

    def run(c0, x):
        return T.ifelse([c0, True], [branches[0], bad], x)

    with pytest.raises(RuntimeError, match="boom"):
        T.jit(run)(jnp.array(True), 1.0) if traced else run(False, 1.0)
    assert_tree_close(hits.value, jnp.zeros(3))
    assert_clean(hits)
