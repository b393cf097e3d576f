"""Tests of statemap.transform.scan / for_loop / while_loop: parity with jax.lax, states, RNG, errors."""

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
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)


def assert_clean(*states):
    for s in (*states, sm.random.DEFAULT):
        assert not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(s.value))


def key_data(k):
    return np.asarray(jax.random.key_data(k))


# -- scan parity -------------------------------------------------------------------------------------------
def make_scan_case():
    acc = sm.State(jnp.zeros(3), name="acc")  # read and written: carried
    w = sm.State(jnp.arange(3.0), name="w")  # only read: loop invariant
    last = sm.State(jnp.zeros(()), name="last")  # written before read: carried too

    def f(carry, x):
        acc.value = acc.value + x["a"] * w.value
        last.value = x["b"]
        return {"n": carry["n"] + 1, "s": carry["s"] * 0.5 + acc.value.sum()}, acc.value * last.value

    def pure(carry, x):
        (c, acc_v, last_v), w_v = carry, w0
        acc_v = acc_v + x["a"] * w_v
        last_v = x["b"]
        new = {"n": c["n"] + 1, "s": c["s"] * 0.5 + acc_v.sum()}
        return (new, acc_v, last_v), acc_v * last_v

    w0 = w.value
    init = {"n": jnp.array(0), "s": jnp.array(1.0)}
    xs = {"a": jnp.arange(12.0).reshape(4, 3), "b": jnp.arange(4.0) + 1}
    return (acc, w, last), f, pure, init, xs


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("unroll", [1, 2])
def test_scan_matches_lax_scan(reverse, unroll):
    (acc, w, last), f, pure, init, xs = make_scan_case()
    (c_ref, acc_ref, last_ref), ys_ref = jax.lax.scan(
        pure, (init, acc.value, last.value), xs, reverse=reverse, unroll=unroll
    )
    carry, ys = T.scan(f, init, xs, reverse=reverse, unroll=unroll)
    assert_tree_close((carry, ys), (c_ref, ys_ref))
    assert_tree_close((acc.value, last.value, w.value), (acc_ref, last_ref, jnp.arange(3.0)))


def test_jit_of_scan_matches_lax_scan():
    (acc, w, last), f, pure, init, xs = make_scan_case()
    ref = jax.jit(lambda c, xs: jax.lax.scan(pure, c, xs))((init, acc.value, last.value), xs)
    out = T.jit(lambda c, xs: T.scan(f, c, xs))(init, xs)
    assert_tree_close(out, (ref[0][0], ref[1]))
    assert_tree_close((acc.value, last.value), (ref[0][1], ref[0][2]))
    out2 = T.jit(lambda c, xs: T.scan(f, c, xs))(init, xs)  # states carried on from the first call
    ref2 = jax.lax.scan(pure, (init, ref[0][1], ref[0][2]), xs)
    assert_tree_close(out2, (ref2[0][0], ref2[1]))
    assert_tree_close(acc.value, ref2[0][1])


def test_read_only_states_are_invariants_and_written_states_are_carried():
    (acc, w, last), f, _, init, xs = make_scan_case()
    jaxpr, _ = T.make_jaxpr(lambda c, xs: T.scan(f, c, xs))(init, xs)
    (eqn,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert eqn.params["num_consts"] == 1  # w
    assert eqn.params["num_carry"] == 2 + 2  # carry n, s; states acc, last


def test_scan_inside_scan_matches_lax():
    total = sm.State(jnp.zeros(()), name="total")
    scale = sm.State(jnp.array(2.0), name="scale")

    def inner(c, x):
        total.value = total.value + x * scale.value
        return c + x, total.value

    def outer(c, row):
        c2, ys = T.scan(inner, c, row)
        return c2 * 0.5, ys.sum()

    def pure_inner(c, x):
        (c, t) = c
        t = t + x * 2.0
        return (c + x, t), t

    def pure_outer(c, row):
        (c, t) = c
        (c2, t), ys = jax.lax.scan(pure_inner, (c, t), row)
        return (c2 * 0.5, t), ys.sum()

    xs = jnp.arange(12.0).reshape(3, 4)
    (c_ref, t_ref), ys_ref = jax.lax.scan(pure_outer, (jnp.array(0.0), jnp.array(0.0)), xs)
    c, ys = T.jit(lambda xs: T.scan(outer, jnp.array(0.0), xs))(xs)
    assert_tree_close((c, ys, total.value), (c_ref, ys_ref, t_ref))


def test_cond_inside_scan_matches_lax():
    pos = sm.State(jnp.array(0), name="pos")
    neg = sm.State(jnp.array(0.0), name="neg")

    def up(x):
        pos.value = pos.value + 1
        return x

    def down(x):
        neg.value = neg.value + x
        return -x

    def body(c, x):
        y = T.cond(x > 0, up, down, x)
        return c + y, y

    def pure_body(c, x):
        c, p, n = c
        y, p, n = jax.lax.cond(x > 0, lambda: (x, p + 1, n), lambda: (-x, p, n + x))
        return (c + y, p, n), y

    xs = jnp.array([1.0, -2.0, 3.0, -4.0, 5.0])
    (c_ref, p_ref, n_ref), ys_ref = jax.lax.scan(pure_body, (jnp.array(0.0), 0, jnp.array(0.0)), xs)
    c, ys = T.jit(lambda xs: T.scan(body, jnp.array(0.0), xs))(xs)
    assert_tree_close((c, ys, pos.value, neg.value), (c_ref, ys_ref, p_ref, n_ref))


def test_jit_around_everything():
    h = sm.State(jnp.zeros(2), name="h")
    steps = sm.State(jnp.array(0), name="steps")

    def body(c, x):
        h.value = T.cond(x.sum() > 2, lambda: h.value + x, lambda: h.value - x)
        return c, None

    @T.jit
    def run(xs):
        _, _ = T.scan(body, None, xs)

        def wbody(v):
            steps.value = steps.value + 1
            return v * 2.0

        return T.while_loop(lambda v: v.sum() < 100.0, wbody, h.value + 1.0)

    xs = jnp.arange(8.0).reshape(4, 2)
    ref_h = jnp.zeros(2)
    for x in xs:
        ref_h = ref_h + x if x.sum() > 2 else ref_h - x
    v = ref_h + 1.0
    n = 0
    while v.sum() < 100.0:
        v, n = v * 2.0, n + 1
    out = run(xs)
    assert_tree_close((out, h.value, steps.value), (v, ref_h, n))


# -- for_loop ----------------------------------------------------------------------------------------------
def test_for_loop_matches_loop_oracle_and_scan():
    acc = sm.State(jnp.zeros(2), name="acc")

    def f(x, w):
        acc.value = acc.value + w * x
        return acc.value.sum(), x * 2

    xs, ws = jnp.arange(8.0).reshape(4, 2), jnp.arange(4.0)
    ys = T.for_loop(f, xs, ws)
    acc_after = acc.value
    acc.value = jnp.zeros(2)
    oracle = [f(xs[i], ws[i]) for i in range(4)]
    assert_tree_close(ys, jax.tree.map(lambda *a: jnp.stack(a), *oracle))
    assert_tree_close(acc_after, acc.value)


def test_for_loop_reverse_and_length():
    seen = sm.State(jnp.zeros(()), name="seen")

    def f(x):
        seen.value = seen.value * 10 + x
        return seen.value

    ys = T.for_loop(f, jnp.arange(1.0, 4.0), reverse=True)
    assert_tree_close(ys, jnp.array([321.0, 32.0, 3.0]))
    assert T.for_loop(lambda: 1.0, length=3).shape == (3,)


@pytest.mark.parametrize("loop", ["for_loop", "checkpointed_scan"])
def test_loop_options_are_keywords_and_an_unknown_one_raises_as_python_does(loop):
    import inspect

    assert inspect.signature(getattr(T, loop)).parameters["options"].kind is inspect.Parameter.VAR_KEYWORD
    args = (lambda x: x,) if loop == "for_loop" else (lambda c, x: (c, x), 0.0)
    with pytest.raises(TypeError, match=rf"^{loop}\(\) got an unexpected keyword argument 'revers'$"):
        getattr(T, loop)(*args, jnp.arange(3.0), revers=True)
    out = getattr(T, loop)(*args, jnp.arange(3.0), reverse=True, unroll=2, progress_bar=False, pbar=None)
    assert_tree_close(out if loop == "for_loop" else out[1], jnp.arange(3.0))


# -- while_loop --------------------------------------------------------------------------------------------
def test_while_loop_matches_lax_while_loop():
    count = sm.State(jnp.array(0), name="count")
    limit = sm.State(jnp.array(5), name="limit")  # read by cond_fun only
    step = sm.State(jnp.array(1.5), name="step")  # read by body only

    def cond_fun(v):
        return count.value < limit.value

    def body_fun(v):
        count.value = count.value + 1
        return {"x": v["x"] + step.value, "y": v["y"] * 2}

    init = {"x": jnp.array(0.0), "y": jnp.array(1)}
    ref = jax.lax.while_loop(
        lambda c: c[0] < 5, lambda c: (c[0] + 1, {"x": c[1]["x"] + 1.5, "y": c[1]["y"] * 2}), (0, init)
    )
    out = T.jit(lambda v: T.while_loop(cond_fun, body_fun, v))(init)
    assert_tree_close((out, count.value), (ref[1], ref[0]))
    assert limit.value == 5


def test_while_loop_cond_reading_a_carried_state():
    total = sm.State(jnp.array(0.0), name="total")

    def body(i):
        total.value = total.value + i
        return i + 1

    out = T.while_loop(lambda i: total.value < 10.0, body, 0)
    assert int(out) == 5 and float(total.value) == 10.0


# -- trace counts ------------------------------------------------------------------------------------------
def test_scan_body_traced_once_per_signature():
    calls = []
    s = sm.State(jnp.zeros(()), name="s")

    def f(c, x):
        calls.append(1)
        s.value = s.value + x.sum()
        return c, x

    T.scan(f, jnp.array(0.0), jnp.arange(3.0))
    T.scan(f, jnp.array(0.0), jnp.arange(3.0) + 1)
    T.jit(lambda xs: T.scan(f, jnp.array(0.0), xs))(jnp.arange(3.0))
    assert len(calls) == 1
    T.scan(f, jnp.array(0.0), jnp.arange(4.0))  # same slice signature: still cached
    assert len(calls) == 1
    T.scan(f, jnp.array(0.0), jnp.ones((3, 2)))  # new slice shape: a new signature
    assert len(calls) == 2


def test_while_and_for_loop_trace_counts():
    calls = {"cond": 0, "body": 0, "for": 0}

    def cond_fun(v):
        calls["cond"] += 1
        return v < 10

    def body_fun(v):
        calls["body"] += 1
        return v + 1

    def f(x):
        calls["for"] += 1
        return x * 2

    for _ in range(2):
        T.while_loop(cond_fun, body_fun, jnp.array(0))
        T.for_loop(f, jnp.arange(3))
    assert calls == {"cond": 1, "body": 1, "for": 1}


def test_weak_carry_is_promoted_like_lax():
    def f(c, x):
        return c + x, c

    ref = jax.lax.scan(f, 0, jnp.arange(3.0))
    out = T.scan(f, 0, jnp.arange(3.0))
    assert_tree_close(out, ref)
    assert out[0].dtype == ref[0].dtype == jnp.float32


# -- random numbers ----------------------------------------------------------------------------------------
def test_rng_in_scan_draws_new_numbers_and_matches_key_threading():
    rng = sm.random.RandomState(3)
    key0 = rng.value

    def f(c, x):
        return c, jax.random.normal(rng.split_key(), (2,)) + x

    def pure(k, x):
        k, sub = jax.random.split(k)
        return k, jax.random.normal(sub, (2,)) + x

    k_ref, ys_ref = jax.lax.scan(pure, key0, jnp.zeros(4))
    _, ys = T.scan(f, None, jnp.zeros(4))
    assert_tree_close(ys, ys_ref)
    np.testing.assert_array_equal(key_data(rng.value), key_data(k_ref))
    assert len({tuple(np.asarray(y)) for y in ys}) == 4
    rng.seed(3)
    _, ys2 = T.jit(lambda: T.scan(f, None, jnp.zeros(4)))()
    assert_tree_close(ys2, ys)


def test_default_rng_in_for_loop():
    sm.random.seed(7)
    key0 = sm.random.DEFAULT.value
    ys = T.for_loop(lambda x: jax.random.uniform(sm.random.split_key(), ()) + x, jnp.zeros(5))
    k, ref = key0, []
    for _ in range(5):
        k, sub = jax.random.split(k)
        ref.append(jax.random.uniform(sub, ()))
    assert_tree_close(ys, jnp.stack(ref))
    np.testing.assert_array_equal(key_data(sm.random.DEFAULT.value), key_data(k))
    assert_clean()


# -- errors and restore ------------------------------------------------------------------------------------
def test_xs_of_different_lengths_names_the_leaf():
    s = sm.State(jnp.zeros(()), name="s")

    def f(c, x):
        s.value = s.value + 1
        return c, x

    with pytest.raises(ControlFlowError, match=r"xs\['b'\] has leading axis size 2, but xs\['a'\] sets 3"):
        T.scan(f, 0, {"a": jnp.zeros(3), "b": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"xs\[1\] has leading axis size 3, but length=4 sets 4"):
        T.scan(f, 0, [jnp.zeros(4), jnp.zeros(3)], length=5 - 1)
    with pytest.raises(ControlFlowError, match=r"xs\['a'\] is a scalar"):
        T.scan(f, 0, {"a": 1.0})
    with pytest.raises(sm.ArgumentError, match="length is not a non-negative int"):
        T.scan(f, 0, None, length=-1)
    with pytest.raises(ControlFlowError, match="cannot tell the number of iterations"):
        T.for_loop(lambda: 0.0)
    assert float(s.value) == 0.0


@given(
    sizes=st.lists(st.integers(0, 3), min_size=1, max_size=3),
    length=st.one_of(st.none(), st.integers(0, 3)),
)
def test_hypothesis_xs_lengths(sizes, length):
    s = sm.State(jnp.zeros(()), name="s")
    xs = {f"k{i}": jnp.ones((n, 2)) * i for i, n in enumerate(sizes)}

    def f(c, x):
        s.value = s.value + 1.0
        return c + sum(v.sum() for v in x.values()), None

    expected_n = sizes[0] if length is None else length
    if all(n == expected_n for n in sizes):
        carry, _ = T.scan(f, jnp.array(0.0), xs, length=length)
        ref, _ = jax.lax.scan(lambda c, x: (c + sum(v.sum() for v in x.values()), None), 0.0, xs, length=length)
        assert_tree_close(carry, ref)
        assert float(s.value) == expected_n
    else:
        with pytest.raises(ControlFlowError) as info:
            T.scan(f, jnp.array(0.0), xs, length=length)
        bad = [f"xs['k{i}']" for i, n in enumerate(sizes) if n != expected_n]
        assert any(name in str(info.value) for name in bad)
        assert float(s.value) == 0.0
    assert_clean(s)


def test_state_changing_shape_in_the_body_is_named():
    buf = sm.State(jnp.zeros(2), name="buf")

    def f(c, x):
        buf.value = jnp.concatenate([buf.value, x[None]])
        return c, None

    with pytest.raises(
        ControlFlowError, match=r"(?s)state 'buf'.*changes type.*expected: f32\[2\].*found:    f32\[3\]"
    ):
        T.scan(f, None, jnp.arange(3.0))
    counter = sm.State(jnp.array(0, jnp.int32), name="counter")
    with pytest.raises(ControlFlowError, match=r"(?s)state 'counter'.*expected: i32\[\].*found:    f32\[\]"):
        T.while_loop(lambda v: v < 3, lambda v: _set(counter, counter.value.astype(jnp.float32) + 0.5, v + 1), 0)
    assert buf.value.shape == (2,) and counter.value.dtype == jnp.int32
    assert_clean(buf, counter)


def _set(state, value, out):
    state.value = value
    return out


def test_carry_errors():
    with pytest.raises(ControlFlowError, match=r"(?s)the carry init\['a'\] changes type.*f32\[2\].*f32\[3\]"):
        T.scan(lambda c, x: ({"a": jnp.ones(3)}, x), {"a": jnp.ones(2)}, jnp.zeros(2))
    with pytest.raises(ControlFlowError, match="another pytree structure than init"):
        T.scan(lambda c, x: ((c, c), x), jnp.ones(2), jnp.zeros(2))
    with pytest.raises(ControlFlowError, match=r"must return a pair \(carry, y\)"):
        T.scan(lambda c, x: c, jnp.ones(2), jnp.zeros(2))
    with pytest.raises(ControlFlowError, match="cond_fun must return a boolean scalar"):
        T.while_loop(lambda v: v, lambda v: v + 1, jnp.array(0.0))
    with pytest.raises(ControlFlowError, match=r"the carry init_val\[1\] changes type"):
        T.while_loop(lambda v: v[0] < 1, lambda v: (v[0] + 1, v[1].astype(jnp.int32)), (0, jnp.ones(2)))
    with pytest.raises(sm.ArgumentError, match="f is not callable"):
        T.scan(3, 0, jnp.zeros(2))


def test_cond_fun_writing_a_state_is_refused():
    rng = sm.random.RandomState(0)
    key = key_data(rng.value)

    def cond_fun(v):
        return jax.random.uniform(rng.split_key()) < 0.5

    with pytest.raises(ControlFlowError, match=r"(?s)cond_fun writes state <unnamed> \(RandomState.*body_fun"):
        T.while_loop(cond_fun, lambda v: v + 1, 0)
    np.testing.assert_array_equal(key_data(rng.value), key)
    assert_clean(rng)


def test_state_as_input_is_refused():
    s = sm.State(jnp.zeros(3), name="s")
    with pytest.raises(sm.StateArgumentError, match=r"scan: argument xs\['w'\] is state 's'"):
        T.scan(lambda c, x: (c, x), 0, {"w": s})
    with pytest.raises(sm.StateArgumentError, match=r"while_loop: argument init_val\[0\] is state 's'"):
        T.while_loop(lambda v: False, lambda v: v, [s])


def test_exception_in_body_restores_every_state():
    a = sm.State(jnp.ones(2), name="a")
    rng = sm.random.RandomState(1)
    key = key_data(rng.value)
    default_key = key_data(sm.random.DEFAULT.value)

    def f(c, x):
        a.value = a.value * 2
        jax.random.normal(rng.split_key())
        sm.random.split_key()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        T.scan(f, 0, jnp.zeros(3))
    with pytest.raises(RuntimeError, match="boom"):
        T.jit(lambda: T.while_loop(lambda v: v < 3, lambda v: f(v, None), 0))()
    assert_tree_close(a.value, jnp.ones(2))
    np.testing.assert_array_equal(key_data(rng.value), key)
    np.testing.assert_array_equal(key_data(sm.random.DEFAULT.value), default_key)
    assert_clean(a, rng)


def test_plain_jax_jit_around_a_writing_scan_leaks_no_tracer():
    s = sm.State(jnp.zeros(()), name="s")

    def f(c, x):
        s.value = s.value + x
        return c, None

    with pytest.raises(sm.TraceContextError, match="state 's'"):
        jax.jit(lambda xs: T.scan(f, None, xs))(jnp.ones(3))
    assert float(s.value) == 0.0
    assert_clean(s)


# -- composition with grad ---------------------------------------------------------------------------------
def test_jit_grad_scan_matches_pure_grad():
    w = sm.ParamState(jnp.array([0.5, -1.0]), name="w")
    seen = sm.State(jnp.array(0), name="seen")

    def loss(xs):
        def body(h, x):
            seen.value = seen.value + 1
            h = jnp.tanh(h * w.value + x)
            return h, (h**2).sum()

        _, ys = T.scan(body, jnp.zeros(2), xs)
        return ys.sum()

    def pure_loss(w_v, xs):
        def body(h, x):
            h = jnp.tanh(h * w_v + x)
            return h, (h**2).sum()

        return jax.lax.scan(body, jnp.zeros(2), xs)[1].sum()

    xs = jnp.linspace(-1, 1, 8).reshape(4, 2)
    g = T.jit(T.grad(loss, grad_states=w))(xs)
    assert_tree_close(g, jax.grad(pure_loss)(w.value, xs))
    assert int(seen.value) == 4
    assert_clean(w, seen)


# -- warm eager calls and mapping --------------------------------------------------------------------------
def test_warm_eager_loops_reuse_one_executable():
    from statemap.transform import _loops

    s = sm.State(jnp.zeros(()), name="s")

    def f(c, x):
        s.value = s.value + x
        return c + 1, x * 2

    def body(v):
        s.value = s.value - 1.0
        return v + 1

    def cond_fun(v):
        return v < 3

    T.scan(f, 0, jnp.arange(5.0))
    T.while_loop(cond_fun, body, 0)
    sizes = (_loops._scan_jitted._cache_size(), _loops._while_jitted._cache_size())
    for _ in range(3):
        T.scan(f, 0, jnp.arange(5.0) + 1)
        T.while_loop(cond_fun, body, 1)
    assert (_loops._scan_jitted._cache_size(), _loops._while_jitted._cache_size()) == sizes
    assert float(s.value) == 10.0 + 3 * 15.0 - 3.0 - 3 * 2.0


def test_scan_and_cond_inside_vmap2():
    w = sm.State(jnp.zeros(3), name="w")

    def step(x):
        def body(c, xi):
            w.value = T.cond(xi > 0, lambda: w.value + xi, lambda: w.value)
            return c + xi, None

        c, _ = T.scan(body, 0.0, jnp.stack([x, -x, x]))
        return c

    out = T.vmap2(step, state_in_axes={0: w}, state_out_axes={0: w})(jnp.array([-1.0, 0.0, 2.0]))
    assert_tree_close(out, jnp.array([-1.0, 0.0, 2.0]))
    assert_tree_close(w.value, jnp.array([1.0, 0.0, 4.0]))
    assert_clean(w)


def test_exception_in_a_nested_branch_restores_every_state():
    a = sm.State(jnp.zeros(2), name="a")
    b = sm.State(jnp.ones(()), name="b")

    def bad(x):
        b.value = b.value + 1
        sm.random.split_key()
        raise ZeroDivisionError("inner")

    def body(c, x):
        a.value = a.value + x
        return T.cond(x.sum() > 0, bad, lambda x: x.sum(), x), None

    default_key = key_data(sm.random.DEFAULT.value)
    with pytest.raises(ZeroDivisionError, match="inner"):
        T.jit(lambda xs: T.scan(body, 0.0, xs))(jnp.ones((3, 2)))
    assert_tree_close((a.value, b.value), (jnp.zeros(2), jnp.ones(())))
    np.testing.assert_array_equal(key_data(sm.random.DEFAULT.value), default_key)
    assert_clean(a, b)


def test_loop_caches_do_not_keep_a_fresh_function_s_states_alive():
    import gc
    import weakref

    refs = []
    for _ in range(3):
        s = sm.State(jnp.zeros(1000), name="big")

        def body(x, s=s):
            s.value = s.value + x
            return x

        T.for_loop(body, jnp.ones(2))
        T.while_loop(lambda v: v < 2, lambda v, s=s: _set(s, s.value + 1.0, v + 1), 0)
        refs.append(weakref.ref(s))
        del s, body
    gc.collect()
    assert all(r() is None for r in refs), "a loop's compiled-plan cache keeps the states of dead functions alive"


# -- checkpointed_scan --------------------------------------------------------------------------------------
def test_checkpointed_scan_matches_lax_scan_and_its_grad():
    (acc, w, last), f, pure, init, xs = make_scan_case()
    carry, ys = T.checkpointed_scan(f, init, xs)
    (ref_c, ref_acc, ref_last), ref_ys = jax.lax.scan(pure, (init, jnp.zeros(3), jnp.zeros(())), xs)
    assert_tree_close((carry, ys, acc.value, last.value), (ref_c, ref_ys, ref_acc, ref_last))

    p = sm.ParamState(jnp.array(0.7), name="p")

    def loss(xs):
        body = lambda h, x: (jnp.tanh(p.value * h + x), h**2)  # noqa: E731
        h, ys = T.checkpointed_scan(body, 0.1, xs, policy=jax.checkpoint_policies.nothing_saveable)
        return h + ys.sum()

    def pure_loss(p_, xs):
        h, ys = jax.lax.scan(jax.checkpoint(lambda h, x: (jnp.tanh(p_ * h + x), h**2)), 0.1, xs)
        return h + ys.sum()

    xs = jnp.linspace(-1.0, 1.0, 6)
    assert_tree_close(T.grad(loss, grad_states=p)(xs), jax.grad(pure_loss)(0.7, xs))
    jaxpr = str(jax.make_jaxpr(T.grad(loss, grad_states=p))(xs))
    assert "checkpoint" in jaxpr or "remat" in jaxpr


def test_checkpointed_scan_reverse_and_exception_keeps_states():
    s = sm.State(jnp.zeros(()), name="s")

    def f(c, x):
        s.value = s.value * 2 + x
        return c + x, s.value

    carry, ys = T.checkpointed_scan(f, 0.0, jnp.arange(4.0), reverse=True)
    ref = jax.lax.scan(
        lambda cs, x: ((cs[0] + x, cs[1] * 2 + x), cs[1] * 2 + x), (0.0, 0.0), jnp.arange(4.0), reverse=True
    )
    assert_tree_close((carry, s.value, ys), (ref[0][0], ref[0][1], ref[1]))

    def bad(c, x):
        s.value = s.value + 1
        raise RuntimeError("boom")

    before = s.value
    with pytest.raises(RuntimeError, match="boom"):
        T.checkpointed_scan(bad, 0.0, jnp.arange(4.0))
    assert float(s.value) == float(before)
    assert_clean(s)


# -- bounded_while_loop ------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_steps, base", [(100, 16), (5, 2), (17, 4), (3, 16), (0, 16)])
def test_bounded_while_loop_matches_while_loop_and_the_bound(max_steps, base):
    n = sm.State(jnp.array(0), name="n")
    total = sm.State(jnp.zeros(()), name="total")

    def body(v):
        n.value = n.value + 1
        total.value = total.value + v
        return v * 1.5

    def cond_fun(v):
        return v < 20.0 + total.value * 0.0

    out = T.bounded_while_loop(cond_fun, body, 1.0, max_steps=max_steps, base=base)

    # oracle: jax.lax.while_loop with the step count in the carry
    def pure_cond(c):
        v, k, _, _ = c
        return (v < 20.0) & (k < max_steps)

    def pure_body(c):
        v, k, nn, tt = c
        return v * 1.5, k + 1, nn + 1, tt + v

    ref_v, _, ref_n, ref_t = jax.lax.while_loop(pure_cond, pure_body, (1.0, 0, 0, 0.0))
    assert_tree_close((out, n.value, total.value), (ref_v, ref_n, ref_t))
    assert int(n.value) == min(max_steps, 8)  # 1.5**8 > 20
    assert_clean(n, total)


def test_bounded_while_loop_grad_matches_an_unrolled_pure_loop():
    w = sm.ParamState(jnp.array(1.3), name="w")
    seen = sm.State(jnp.array(0), name="seen")

    def loss(x):
        def body(v):
            seen.value = seen.value + 1
            return jnp.sin(v) + w.value * v

        return T.bounded_while_loop(lambda v: v < 5.0, body, x, max_steps=40, base=3)

    def pure(w_, x):
        v = x
        for _ in range(40):
            if not v < 5.0:
                break
            v = jnp.sin(v) + w_ * v
        return v

    g = T.jit(T.grad(loss, grad_states=w, argnums=0))(0.5)
    assert_tree_close(g, jax.grad(pure, argnums=(0, 1))(1.3, 0.5))
    steps = int(seen.value)
    assert steps > 1
    T.jit(T.grad(loss, grad_states=w))(0.5)
    assert int(seen.value) == 2 * steps


def test_bounded_while_loop_errors_and_exception_keeps_states():
    n = sm.State(jnp.array(0), name="n")
    with pytest.raises(sm.ArgumentError, match="max_steps is not an int >= 0"):
        T.bounded_while_loop(lambda v: v < 3, lambda v: v + 1, 0, max_steps=-1)
    with pytest.raises(sm.ArgumentError, match="base is not an int >= 2"):
        T.bounded_while_loop(lambda v: v < 3, lambda v: v + 1, 0, max_steps=4, base=1)

    def writing_cond(v):
        n.value = n.value + 1
        return v < 3

    with pytest.raises(ControlFlowError, match="cond_fun writes state 'n'"):
        T.bounded_while_loop(writing_cond, lambda v: v + 1, 0, max_steps=4)

    def bad(v):
        n.value = n.value + 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        T.bounded_while_loop(lambda v: v < 3, bad, 0, max_steps=4)
    assert int(n.value) == 0
    assert_clean(n)


def test_warm_bounded_while_loop_reuses_one_executable():
    from statemap.transform import _loops

    def body(v):
        return v + 1

    def cond_fun(v):
        return v < 3

    T.bounded_while_loop(cond_fun, body, 0, max_steps=10)
    size = _loops._bounded_jitted._cache_size()
    for i in range(3):
        assert int(T.bounded_while_loop(cond_fun, body, i, max_steps=10)) == max(3, i)
    assert _loops._bounded_jitted._cache_size() == size


# -- jax.disable_jit ------------------------------------------------------------------------------------------
def test_scan_and_for_loop_run_eagerly_under_disable_jit_like_lax_scan():
    (acc, w, last), f, pure, init, xs = make_scan_case()
    seen = []

    def eager_f(carry, x):
        seen.append(type(x["a"]))
        if float(x["b"]) > 2:  # Python control flow on a concrete value: only possible eagerly
            last.value = last.value * 0.0
        return f(carry, x)

    with jax.disable_jit():
        carry, ys = T.scan(eager_f, init, xs, reverse=True)
        ref = jax.lax.scan(pure, (init, jnp.zeros(3), jnp.zeros(())), xs, reverse=True)
    assert len(seen) == 4 and not any(issubclass(t, jax.core.Tracer) for t in seen)
    (ref_c, ref_acc, ref_last), ref_ys = ref
    assert_tree_close((carry, ys, acc.value, last.value), (ref_c, ref_ys, ref_acc, ref_last))

    total = sm.State(jnp.zeros(()), name="total")

    def g(x, k):
        total.value = total.value + x * k
        return total.value

    with jax.disable_jit():
        out = T.for_loop(g, jnp.arange(3.0), jnp.array([1.0, 2.0, 3.0]))
    assert_tree_close((out, total.value), (jnp.array([0.0, 2.0, 8.0]), jnp.array(8.0)))
    assert_clean(acc, w, last, total)


def test_while_loops_run_eagerly_under_disable_jit_like_lax_while_loop():
    n = sm.State(jnp.array(0), name="n")
    calls = []

    def body(v):
        calls.append(v)
        n.value = n.value + 1
        return v * 2

    with jax.disable_jit():
        out = T.while_loop(lambda v: v < 10, body, 1)
        ref = jax.lax.while_loop(lambda v: v < 10, lambda v: v * 2, 1)
        bounded = T.bounded_while_loop(lambda v: v < 10, body, 1, max_steps=2)
    assert repr(out) == repr(ref) and int(bounded) == 4
    assert int(n.value) == 6 and len(calls) == 6
    assert not any(isinstance(c, jax.core.Tracer) for c in calls)


def test_disable_jit_loops_keep_every_state_after_an_exception():
    s = sm.State(jnp.zeros(()), name="s")

    def f(c, x):
        s.value = s.value + 1
        if float(x) == 2.0:
            raise RuntimeError("boom")
        return c, None

    with jax.disable_jit(), pytest.raises(RuntimeError, match="boom"):
        T.scan(f, None, jnp.arange(4.0))
    with jax.disable_jit(), pytest.raises(RuntimeError, match="boom"):
        T.while_loop(lambda v: v < 5.0, lambda v: f(None, v) and v + 1, 0.0)
    assert float(s.value) == 0.0
    assert_clean(s)


def test_disable_jit_inside_vmap2_falls_back_to_the_traced_loop():
    n = sm.State(jnp.zeros(3), name="n")

    def f(x):
        return T.while_loop(lambda v: v < x, lambda v: v + 1.0, 0.0)

    with jax.disable_jit():
        out = T.vmap2(f)(jnp.array([1.0, 2.5, 4.0]))
    assert_tree_close(out, jnp.array([1.0, 3.0, 4.0]))
    assert_clean(n)
