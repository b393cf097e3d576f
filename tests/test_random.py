"""Tests of `statemap.random`: RandomState, DEFAULT, seeding and the numpy-style samplers."""

import inspect

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import statemap as sm


def key_bits(key):
    return np.asarray(jr.key_data(key))


def assert_same_key(a, b):
    np.testing.assert_array_equal(key_bits(a), key_bits(b))


def assert_no_tracer(*states):
    for s in states:
        for leaf in jax.tree_util.tree_leaves(s._value):
            assert not isinstance(leaf, jax.core.Tracer), s


def split_ref(seed):
    """Pure-JAX reference of one draw from a fresh generator: (key after the draw, key used by the draw)."""
    new, used = jr.split(jr.key(seed))
    return new, used


X2 = jnp.arange(6.0).reshape(2, 3)
LOGITS = jnp.log(jnp.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [1.0, 1.0, 1.0], [0.1, 0.1, 0.8]]))
COV = jnp.array([[2.0, 0.5], [0.5, 1.0]])

# name, args, kwargs, pure-JAX reference of the draw given the key
CASES = [
    ("rand", (2, 3), {}, lambda k: jr.uniform(k, (2, 3))),
    ("rand", (), {}, lambda k: jr.uniform(k, ())),
    ("randn", (4,), {}, lambda k: jr.normal(k, (4,))),
    ("randint", (3, 7), {"size": (4,)}, lambda k: jr.randint(k, (4,), 3, 7)),
    ("randint", (5,), {"size": 3}, lambda k: jr.randint(k, (3,), 0, 5)),
    ("randint", (jnp.array([0, 10]), 20), {}, lambda k: jr.randint(k, (2,), jnp.array([0, 10]), 20)),
    ("random", ((2, 2),), {}, lambda k: jr.uniform(k, (2, 2))),
    ("uniform", (-1.0, 2.0), {"size": 3}, lambda k: jr.uniform(k, (3,), minval=-1.0, maxval=2.0)),
    ("normal", (), {"size": (2, 3)}, lambda k: jr.normal(k, (2, 3))),
    ("normal", (jnp.arange(3.0), 2.0), {}, lambda k: jr.normal(k, (3,)) * 2.0 + jnp.arange(3.0)),
    ("normal", (1.0,), {"size": 2, "dtype": jnp.float16}, lambda k: jr.normal(k, (2,), jnp.float16) + 1),
    ("truncated_normal", (-1.0, 2.0), {"size": (4,)}, lambda k: jr.truncated_normal(k, -1.0, 2.0, (4,))),
    (
        "truncated_normal",
        (0.0, 3.0),
        {"size": 4, "loc": 1.0, "scale": 2.0},
        lambda k: jr.truncated_normal(k, -0.5, 1.0, (4,)) * 2.0 + 1.0,
    ),
    ("bernoulli", (0.3,), {"size": (5,)}, lambda k: jr.bernoulli(k, 0.3, (5,))),
    ("bernoulli", (jnp.array([0.1, 0.9]),), {}, lambda k: jr.bernoulli(k, jnp.array([0.1, 0.9]))),
    ("choice", (5,), {"size": 3, "replace": False}, lambda k: jr.choice(k, 5, (3,), False)),
    (
        "choice",
        (jnp.array([1, 2, 3]),),
        {"size": 4, "p": jnp.array([0.5, 0.25, 0.25])},
        lambda k: jr.choice(k, jnp.array([1, 2, 3]), (4,), True, jnp.array([0.5, 0.25, 0.25])),
    ),
    ("permutation", (6,), {}, lambda k: jr.permutation(k, 6)),
    ("permutation", (X2,), {"axis": 1, "independent": True}, lambda k: jr.permutation(k, X2, 1, True)),
    ("shuffle", (X2,), {}, lambda k: jr.permutation(k, X2, 0)),
    ("exponential", (2.0,), {"size": 3}, lambda k: jr.exponential(k, (3,)) * 2.0),
    ("exponential", (), {}, lambda k: jr.exponential(k, ())),
    ("gamma", (jnp.array([1.0, 2.0, 3.0]), 2.0), {}, lambda k: jr.gamma(k, jnp.array([1.0, 2.0, 3.0])) * 2.0),
    ("beta", (2.0, 3.0), {"size": (3,)}, lambda k: jr.beta(k, 2.0, 3.0, (3,))),
    ("poisson", (3.0,), {"size": 4}, lambda k: jr.poisson(k, 3.0, (4,))),
    ("categorical", (LOGITS,), {}, lambda k: jr.categorical(k, LOGITS)),
    ("categorical", (LOGITS,), {"size": (2, 4)}, lambda k: jr.categorical(k, LOGITS, shape=(2, 4))),
    (
        "multivariate_normal",
        (jnp.zeros(2), COV),
        {"size": (3,)},
        lambda k: jr.multivariate_normal(k, jnp.zeros(2), COV, (3,)),
    ),
    (
        "multivariate_normal",
        (jnp.ones(2), COV),
        {"method": "eigh"},
        lambda k: jr.multivariate_normal(k, jnp.ones(2), COV, method="eigh"),
    ),
    ("chisquare", (3.0,), {"size": 4}, lambda k: jr.chisquare(k, 3.0, (4,))),
    ("chisquare", ([1.0, 5.0],), {}, lambda k: jr.chisquare(k, jnp.array([1.0, 5.0]), (2,))),
    ("chisquare", (2,), {"size": 2, "dtype": jnp.float16}, lambda k: jr.chisquare(k, 2.0, (2,), jnp.float16)),
    ("power", (2.0,), {"size": 3}, lambda k: jr.uniform(k, (3,)) ** (1 / jnp.full(3, 2.0))),
    ("power", ((0.5, 3),), {}, lambda k: jr.uniform(k, (2,)) ** (1 / jnp.array([0.5, 3.0]))),
    ("standard_t", (4.0,), {"size": (2, 3)}, lambda k: jr.t(k, 4.0, (2, 3))),
    ("standard_t", ([1, 10],), {}, lambda k: jr.t(k, jnp.array([1.0, 10.0]), (2,))),
    ("triangular", (0.0, 0.3, 1.0), {"size": 5}, lambda k: jr.triangular(k, 0.0, 0.3, 1.0, (5,))),
    ("triangular", ([0.0, 1.0], 1.5, 2), {}, lambda k: jr.triangular(k, jnp.array([0.0, 1.0]), 1.5, 2.0, (2,))),
    ("rand_like", (X2,), {}, lambda k: jr.uniform(k, (2, 3))),
    ("rand_like", ([1, 2],), {"dtype": jnp.float16}, lambda k: jr.uniform(k, (2,), jnp.float16)),
    ("randn_like", (jnp.zeros(3, jnp.float16),), {}, lambda k: jr.normal(k, (3,), jnp.float16)),
    ("randn_like", (jnp.arange(4),), {}, lambda k: jr.normal(k, (4,))),
    ("randint_like", (jnp.zeros(4, jnp.int8), 2, 9), {}, lambda k: jr.randint(k, (4,), 2, 9, jnp.int8)),
    ("randint_like", (X2, 5), {}, lambda k: jr.randint(k, (2, 3), 0, 5)),
    ("randint_like", ([1, 2],), {"high": [3, 4]}, lambda k: jr.randint(k, (2,), 0, jnp.array([3, 4]))),
    # Python lists and tuples where NumPy accepts array-likes
    ("choice", ([1, 2, 3],), {}, lambda k: jr.choice(k, jnp.array([1, 2, 3]))),
    (
        "choice",
        ((1.0, 2.0, 3.0),),
        {"size": 4, "p": [0.5, 0.25, 0.25]},
        lambda k: jr.choice(k, jnp.array([1.0, 2.0, 3.0]), (4,), True, jnp.array([0.5, 0.25, 0.25])),
    ),
    (
        "multivariate_normal",
        ([0.0, 1.0], [[2.0, 0.5], [0.5, 1.0]]),
        {"size": (3,)},
        lambda k: jr.multivariate_normal(k, jnp.array([0.0, 1.0]), COV, (3,)),
    ),
    (
        "multivariate_normal",
        ([0, 0], [[1, 0], [0, 1]]),
        {},
        lambda k: jr.multivariate_normal(k, jnp.zeros(2), jnp.eye(2)),
    ),
    ("permutation", ([4, 5, 6],), {}, lambda k: jr.permutation(k, jnp.array([4, 5, 6]))),
    ("shuffle", ([[1, 2], [3, 4]],), {}, lambda k: jr.permutation(k, jnp.array([[1, 2], [3, 4]]), 0)),
    ("categorical", ([0.0, 1.0, 2.0],), {}, lambda k: jr.categorical(k, jnp.array([0.0, 1.0, 2.0]))),
    ("normal", ([0.0, 1.0], (1, 2)), {}, lambda k: jr.normal(k, (2,)) * jnp.array([1.0, 2.0]) + jnp.array([0, 1.0])),
    ("gamma", ([1, 2],), {}, lambda k: jr.gamma(k, jnp.array([1.0, 2.0]))),
    ("bernoulli", ([0, 1],), {}, lambda k: jr.bernoulli(k, jnp.array([0.0, 1.0]))),
    ("poisson", ([1.0, 4.0],), {}, lambda k: jr.poisson(k, jnp.array([1.0, 4.0]))),
    ("randint", ([0, 5], (3, 9)), {}, lambda k: jr.randint(k, (2,), jnp.array([0, 5]), jnp.array([3, 9]))),
]
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


def assert_same(out, ref):
    assert out.shape == ref.shape and out.dtype == ref.dtype
    np.testing.assert_allclose(np.asarray(out, np.float64), np.asarray(ref, np.float64), rtol=1e-6, atol=1e-6)


# -- parity with jax.random ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "args", "kwargs", "ref"), CASES, ids=IDS)
def test_method_matches_jax_and_advances_key(name, args, kwargs, ref):
    rng = sm.random.RandomState(7)
    out = getattr(rng, name)(*args, **kwargs)
    new, used = split_ref(7)
    assert_same(out, ref(used))
    assert_same_key(rng.value, new)


@pytest.mark.parametrize(("name", "args", "kwargs", "ref"), CASES, ids=IDS)
def test_module_function_draws_from_default(name, args, kwargs, ref):
    sm.random.seed(3)
    out = getattr(sm.random, name)(*args, **kwargs)
    new, used = split_ref(3)
    assert_same(out, ref(used))
    assert_same_key(sm.random.DEFAULT.value, new)


@pytest.mark.parametrize(("name", "args", "kwargs", "ref"), CASES, ids=IDS)
def test_key_argument_bypasses_the_state(name, args, kwargs, ref):
    rng = sm.random.RandomState(0)
    before, default_before = rng.value, sm.random.DEFAULT.value
    k = jr.key(42)
    assert_same(getattr(rng, name)(*args, key=k, **kwargs), ref(k))
    assert_same(getattr(sm.random, name)(*args, key=k, **kwargs), ref(k))
    assert rng.value is before
    assert sm.random.DEFAULT.value is default_before


def test_raw_key_data_is_accepted_as_key():
    raw = jr.key_data(jr.key(5))
    assert_same(sm.random.RandomState(0).normal(size=2, key=raw), jr.normal(jr.key(5), (2,)))
    assert_same_key(sm.random.RandomState(raw).value, jr.key(5))


# -- determinism ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "args", "kwargs", "ref"), CASES, ids=IDS)
def test_same_seed_same_draws(name, args, kwargs, ref):
    a, b = sm.random.RandomState(11), sm.random.RandomState(11)
    draw = lambda r: getattr(r, name)(*args, **kwargs)
    first = draw(a)
    np.testing.assert_array_equal(first, draw(b))
    np.testing.assert_array_equal(draw(a), draw(b))
    a.seed(11)
    np.testing.assert_array_equal(draw(a), first)


def test_consecutive_draws_differ_and_module_seed_reproduces():
    sm.random.seed(1)
    a, b = sm.random.rand(8), sm.random.rand(8)
    assert not np.array_equal(a, b)
    sm.random.seed(1)
    np.testing.assert_array_equal(sm.random.rand(8), a)


def test_int_seed_also_seeds_numpy_and_key_seed_does_not():
    sm.random.seed(5)
    x = np.random.rand()
    np.random.seed(5)
    assert np.random.rand() == x
    state = np.random.get_state()
    sm.random.seed(jr.key(1))
    assert np.array_equal(np.random.get_state()[1], state[1])


def test_seed_accepts_numpy_and_array_ints():
    ref = sm.random.RandomState(4).rand(3)
    np.testing.assert_array_equal(sm.random.RandomState(np.int64(4)).rand(3), ref)
    np.testing.assert_array_equal(sm.random.RandomState(jnp.array(4)).rand(3), ref)


# -- shapes and dtypes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "shape", "dtype"),
    [
        (lambda r: r.rand(), (), jnp.float32),
        (lambda r: r.randn(2, 0), (2, 0), jnp.float32),
        (lambda r: r.randint(4), (), jnp.int32),
        (lambda r: r.randint(0, 4, size=3, dtype=jnp.int8), (3,), jnp.int8),
        (lambda r: r.randint(jnp.zeros((2, 1), int), jnp.full(3, 5)), (2, 3), jnp.int32),
        (lambda r: r.random(), (), jnp.float32),
        (lambda r: r.uniform(size=np.array([2, 3])), (2, 3), jnp.float32),
        (lambda r: r.uniform(jnp.zeros(3), size=(2, 3), dtype=jnp.float16), (2, 3), jnp.float16),
        (lambda r: r.normal(), (), jnp.float32),
        (lambda r: r.normal(jnp.zeros((2, 1)), jnp.ones(3)), (2, 3), jnp.float32),
        (lambda r: r.normal(jnp.zeros(3), size=[4, 3]), (4, 3), jnp.float32),
        (lambda r: r.truncated_normal(jnp.zeros(3), 1.0, size=(2, 3)), (2, 3), jnp.float32),
        (lambda r: r.bernoulli(), (), jnp.bool_),
        (lambda r: r.bernoulli(jnp.full(3, 0.5), size=(2, 3)), (2, 3), jnp.bool_),
        (lambda r: r.choice(3), (), jnp.int32),
        (lambda r: r.choice(X2, size=(2, 2)), (2, 2, 3), jnp.float32),
        (lambda r: r.permutation(X2, axis=1), (2, 3), jnp.float32),
        (lambda r: r.shuffle(jnp.arange(4)), (4,), jnp.int32),
        (lambda r: r.exponential(jnp.ones(2), size=(3, 2)), (3, 2), jnp.float32),
        (lambda r: r.gamma(jnp.ones(3), jnp.ones((2, 1))), (2, 3), jnp.float32),
        (lambda r: r.beta(jnp.ones(3), 2.0), (3,), jnp.float32),
        (lambda r: r.poisson(), (), jnp.int32),
        (lambda r: r.poisson(jnp.ones((2, 2))), (2, 2), jnp.int32),
        (lambda r: r.categorical(jnp.zeros(3)), (), jnp.int32),
        (lambda r: r.categorical(jnp.zeros((4, 3)), axis=0), (3,), jnp.int32),
        (lambda r: r.multivariate_normal(jnp.zeros((4, 2)), COV), (4, 2), jnp.float32),
        (lambda r: r.chisquare(2.0), (), jnp.float32),
        (lambda r: r.chisquare(jnp.ones((2, 1)), size=(3, 2, 4)), (3, 2, 4), jnp.float32),
        (lambda r: r.power([1.0, 2.0], size=(3, 2), dtype=jnp.float16), (3, 2), jnp.float16),
        (lambda r: r.standard_t(jnp.ones(3)), (3,), jnp.float32),
        (lambda r: r.triangular(0, jnp.full((2, 1), 0.5), jnp.ones(3)), (2, 3), jnp.float32),
        (lambda r: r.rand_like(3.0), (), jnp.float32),
        (lambda r: r.rand_like(jnp.zeros((2, 0)), dtype=jnp.float16), (2, 0), jnp.float16),
        (lambda r: r.randn_like(jnp.zeros((2, 2), bool)), (2, 2), jnp.float32),
        (lambda r: r.randint_like(jnp.zeros(3), 4), (3,), jnp.int32),
        (lambda r: r.randint_like(jnp.zeros(3, jnp.int16), 4, dtype=jnp.int8), (3,), jnp.int8),
        (lambda r: r.choice([[1, 2], [3, 4], [5, 6]], size=2), (2, 2), jnp.int32),
    ],
)
def test_shapes_and_dtypes(call, shape, dtype):
    out = call(sm.random.RandomState(0))
    assert out.shape == shape
    assert out.dtype == dtype


def test_samples_are_in_range():
    rng = sm.random.RandomState(0)
    x = rng.uniform(2.0, 3.0, size=1000)
    assert ((x >= 2) & (x < 3)).all()
    t = rng.truncated_normal(1.0, 1.5, size=1000, loc=2.0, scale=3.0)
    assert ((t >= 1.0) & (t <= 1.5)).all()
    assert abs(float(rng.normal(5.0, 0.1, size=2000).mean()) - 5.0) < 0.05
    assert rng.bernoulli(0.0, size=10).sum() == 0 and rng.bernoulli(1.0, size=10).all()


# -- inside transforms ---------------------------------------------------------------------------------------
def test_jit_advances_the_state_and_matches_pure_jax():
    rng = sm.random.RandomState(0)
    calls = []

    @sm.transform.jit
    def draw(x):
        calls.append(1)
        return x + rng.normal(size=3)

    @jax.jit
    def pure(key, x):
        new, used = jr.split(key)
        return new, x + jr.normal(used, (3,))

    x = jnp.ones(3)
    a, b = draw(x), draw(x)
    assert not np.array_equal(a, b)
    key = jr.key(0)
    key, ra = pure(key, x)
    key, rb = pure(key, x)
    np.testing.assert_array_equal(a, ra)
    np.testing.assert_array_equal(b, rb)
    assert_same_key(rng.value, key)
    rng.seed(0)
    np.testing.assert_array_equal(draw(x), a)
    assert len(calls) == 1
    assert_no_tracer(rng)


def test_jit_threads_default_through_module_functions():
    calls = []

    @sm.transform.jit
    def draw():
        calls.append(1)
        return sm.random.rand(2), sm.random.randint(0, 100, size=2)

    sm.random.seed(9)
    first = draw()
    second = draw()
    assert not np.array_equal(first[0], second[0])
    sm.random.seed(9)
    np.testing.assert_array_equal(draw()[0], first[0])
    assert len(calls) == 1
    assert_no_tracer(sm.random.DEFAULT)


def test_jit_with_traced_parameters_and_traced_seed():
    rng = sm.random.RandomState(0)
    out = sm.transform.jit(lambda p, lo: (rng.bernoulli(p), rng.uniform(lo, lo + 1.0)))(
        jnp.array([0.0, 1.0]), jnp.zeros(2)
    )
    np.testing.assert_array_equal(out[0], [False, True])
    reseed = sm.transform.jit(lambda s: (rng.seed(s), rng.rand(2))[1])
    np.testing.assert_array_equal(reseed(jnp.array(3)), sm.random.RandomState(3).rand(2))
    assert_no_tracer(rng)


def test_draw_is_recorded_as_a_write():
    rng = sm.random.RandomState(0)
    with sm.StateTrace() as t:
        rng.randn(2)
    assert t.states == [rng] and t.written == [True]


def test_failure_inside_jit_leaves_the_key_unchanged():
    rng = sm.random.RandomState(0)
    before, default_before = rng.value, sm.random.DEFAULT.value

    @sm.transform.jit
    def bad():
        sm.random.rand(2)
        rng.normal(size=2)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        bad()
    assert rng.value is before and sm.random.DEFAULT.value is default_before
    assert_no_tracer(rng, sm.random.DEFAULT)


# -- bad inputs ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "err", "match"),
    [
        (0, ValueError, r"split_key: n is less than 1[\s\S]*found:    n=0"),
        (-2, ValueError, "split_key: n is less than 1"),
        (2.5, TypeError, r"split_key: n is not an int[\s\S]*float 2.5"),
        ("3", TypeError, "split_key: n is not an int"),
        (True, TypeError, "split_key: n is not an int"),
    ],
)
def test_split_key_bad_n(n, err, match):
    rng = sm.random.RandomState(0)
    before = rng.value
    with pytest.raises(err, match=match):
        rng.split_key(n)
    assert rng.value is before


def test_split_key_with_a_traced_n_says_so():
    rng = sm.random.RandomState(0)
    before = rng.value
    with pytest.raises(TypeError, match=r"split_key: n is not an int[\s\S]*concrete int"):
        sm.transform.jit(lambda n: rng.split_key(n))(3)
    assert rng.value is before
    assert_no_tracer(rng)


def test_split_key_shapes_and_values():
    rng = sm.random.RandomState(0)
    keys = rng.split_key(np.int32(3))
    ref = jr.split(jr.key(0), 4)
    assert keys.shape == (3,)
    np.testing.assert_array_equal(key_bits(keys), key_bits(ref[1:]))
    assert_same_key(rng.value, ref[0])
    assert sm.random.split_key().shape == () and sm.random.split_keys(2).shape == (2,)


BAD_SEEDS = [1.5, "0", [1, 2], True, jnp.zeros(3), np.zeros(2, np.int32), object()]


@pytest.mark.parametrize("bad", BAD_SEEDS, ids=lambda b: type(b).__name__)
def test_bad_seed_raises_and_leaves_everything_unchanged(bad):
    with pytest.raises(TypeError, match=r"RandomState: seed_or_key is neither a seed nor a PRNG key"):
        sm.random.RandomState(bad)
    rng = sm.random.RandomState(0)
    before, default_before = rng.value, sm.random.DEFAULT.value
    np_before = np.random.get_state()[1].copy()
    with pytest.raises(TypeError, match=r"seed: seed_or_key is neither[\s\S]*fix:      pass an int"):
        rng.seed(bad)
    with pytest.raises(TypeError, match="seed: seed_or_key is neither"):
        sm.random.seed(bad)
    with pytest.raises(TypeError, match="set_key: seed_or_key is neither"):
        sm.random.set_key(bad)
    with pytest.raises(TypeError, match="seed: seed_or_key is neither"):
        with sm.random.seed_context(bad):
            pass  # pragma: no cover
    assert rng.value is before and sm.random.DEFAULT.value is default_before
    assert np.array_equal(np.random.get_state()[1], np_before)


@pytest.mark.parametrize(
    ("call", "err", "match"),
    [
        (lambda r: r.normal(size=-1), ValueError, r"normal: size is negative"),
        (lambda r: r.normal(size=(2, 1.5)), TypeError, r"normal: size\[1\] is not an integer"),
        (lambda r: r.rand(2, -3), ValueError, r"rand: dimension 1 is negative"),
        (lambda r: r.rand((2, 3)), TypeError, r"rand: dimension 0 is not an integer"),
        (lambda r: r.normal(jnp.zeros(3), size=2), ValueError, r"normal: loc of shape \(3,\) does not"),
        (
            lambda r: r.gamma(jnp.ones(2), jnp.ones(3)),
            ValueError,
            r"gamma: the distribution parameters do not[\s\S]*shape of shape \(2,\), scale of shape",
        ),
        (lambda r: r.bernoulli(1.5), ValueError, r"bernoulli: p is not a probability"),
        (lambda r: r.shuffle(3), TypeError, r"shuffle: x has no axis to shuffle"),
        (lambda r: r.multivariate_normal(jnp.zeros(2), COV, method="qr"), ValueError, "unknown method 'qr'"),
        (lambda r: r.normal(key=1.5), TypeError, r"normal: key is not a PRNG key[\s\S]*an int seed"),
        (lambda r: r.normal(key=True), TypeError, r"normal: key is not a PRNG key"),
        (lambda r: r.choice(["a", "b"]), TypeError, r"choice: a is not a number or an array of numbers"),
        (lambda r: r.multivariate_normal([0.0, 1.0], [[1.0], [0.0, 1.0]]), TypeError, r"multivariate_normal: cov"),
        (lambda r: r.normal(loc="x"), TypeError, r"normal: loc is not a number[\s\S]*found:    str 'x'"),
        (
            lambda r: r.chisquare(-1.0),
            ValueError,
            r"chisquare: df is out of range[\s\S]*expected: df > 0 \(in float32\)",
        ),
        (lambda r: r.standard_t([1.0, 0.0]), ValueError, r"standard_t: df is out of range[\s\S]*\[0.0, 1.0\]"),
        (lambda r: r.power(0), ValueError, r"power: a is out of range"),
        (lambda r: r.chisquare(2.0, dtype=jnp.int32), ValueError, r"chisquare: dtype is not a float dtype"),
        (lambda r: r.chisquare(jnp.ones(3), size=2), ValueError, r"chisquare: df of shape \(3,\) does not"),
        (lambda r: r.triangular(1.0, 0.0, 2.0), ValueError, r"triangular: the parameters are not ordered"),
        (lambda r: r.triangular(0.0, [0.5, 3.0], 2.0), ValueError, r"left=0.0, mode=3.0, right=2.0 \(1 of 2"),
        (lambda r: r.triangular(1.0, 1.0, 1.0), ValueError, r"left <= mode <= right and left < right"),
        (lambda r: r.triangular(None, 0.0, 1.0), TypeError, r"triangular: left is not a number"),
        (lambda r: r.rand_like(jnp.ones(2), dtype=jnp.int32), ValueError, r"rand_like: dtype is not a float"),
        (lambda r: r.randn_like("abc"), TypeError, r"randn_like: input is not a number"),
        (lambda r: r.randint_like(jnp.ones(2)), ValueError, r"randint_like: the range \[low, high\) is empty"),
        (lambda r: r.randint_like(jnp.ones(2), 3, [1, 5]), ValueError, r"the range \[low, high\) is empty"),
        (lambda r: r.randint_like(jnp.ones(2), jnp.zeros(3, int), 5), ValueError, r"randint_like: low of shape"),
        (lambda r: r.randint(5, 5), ValueError, r"randint: the range \[low, high\) is empty"),
        (lambda r: r.normal(key=jnp.zeros(2)), TypeError, r"normal: key is not a PRNG key"),
        # errors raised by JAX itself also leave the key unchanged
        (lambda r: r.uniform(size=2, dtype=jnp.int32), ValueError, "must be a float dtype"),
        (lambda r: r.choice(3, size=5, replace=False), ValueError, "larger sample"),
    ],
)
def test_bad_sampler_arguments_leave_the_key_unchanged(call, err, match):
    rng = sm.random.RandomState(0)
    before = rng.value
    with pytest.raises(err, match=match):
        call(rng)
    assert rng.value is before


def size_oracle(size):
    """The shape NumPy would use for `size`, or None when it is invalid."""
    items = [size] if not isinstance(size, tuple) else list(size)
    if size is None:
        return ()
    if all(type(d) is int and d >= 0 for d in items):
        return tuple(items)
    return None


SIZES = st.one_of(
    st.none(),
    st.integers(-3, 4),
    st.floats(-2, 4),
    st.booleans(),
    st.text(max_size=2),
    st.tuples(st.one_of(st.integers(-2, 3), st.floats(0, 3), st.none()), st.integers(-1, 3)),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
)


@given(size=SIZES)
def test_size_property(size):
    rng = sm.random.RandomState(0)
    before = rng.value
    shape = size_oracle(size)
    if shape is not None:
        out = rng.normal(size=size)
        new, used = split_ref(0)
        np.testing.assert_array_equal(out, jr.normal(used, shape))
        assert_same_key(rng.value, new)
    else:
        match = r"^normal: size(\[\d\])? is (not an integer|negative)"
        with pytest.raises((TypeError, ValueError), match=match):
            rng.normal(size=size)
        assert rng.value is before


@given(n=st.one_of(st.none(), st.integers(-3, 5), st.floats(-1, 3), st.booleans(), st.text(max_size=1)))
def test_split_key_property(n):
    rng = sm.random.RandomState(0)
    before = rng.value
    if n is None or (type(n) is int and n >= 1):
        keys = rng.split_key(n)
        ref = jr.split(jr.key(0), 2 if n is None else n + 1)
        np.testing.assert_array_equal(key_bits(keys), key_bits(ref[1] if n is None else ref[1:]))
        assert_same_key(rng.value, ref[0])
    else:
        with pytest.raises((TypeError, ValueError), match=r"^split_key: n is (not an int|less than 1)"):
            rng.split_key(n)
        assert rng.value is before


# -- seed_context, backup, clone -----------------------------------------------------------------------------
def test_seed_context_restores_default_and_numpy():
    sm.random.seed(0)
    key = sm.random.get_key()
    np_state = np.random.get_state()[1].copy()
    with sm.random.seed_context(123):
        a = sm.random.rand(3)
        n = np.random.rand()
    assert sm.random.get_key() is key
    assert np.array_equal(np.random.get_state()[1], np_state)
    with sm.random.seed_context(123):
        np.testing.assert_array_equal(sm.random.rand(3), a)
        assert np.random.rand() == n
    np.testing.assert_array_equal(sm.random.rand(3), sm.random.RandomState(0).rand(3))


def test_seed_context_restores_after_an_exception():
    key = sm.random.get_key()
    np_state = np.random.get_state()[1].copy()
    with pytest.raises(KeyError):
        with sm.random.seed_context(1):
            sm.random.rand(2)
            np.random.rand()
            raise KeyError("x")
    assert sm.random.get_key() is key
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_seed_context_with_a_key_keeps_numpy():
    np_state = np.random.get_state()[1].copy()
    with sm.random.seed_context(jr.key(2)):
        np.testing.assert_array_equal(sm.random.rand(2), sm.random.RandomState(2).rand(2))
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_backup_and_restore_key():
    rng = sm.random.RandomState(0)
    before = rng.value
    rng.backup_key()
    with pytest.raises(ValueError, match="already backed up"):
        rng.backup_key()
    rng.rand(2)
    rng.restore_key()
    assert rng.value is before
    with pytest.raises(ValueError, match="no key was backed up"):
        rng.restore_key()


def test_clone_is_independent_and_deterministic():
    a = sm.random.RandomState(0)
    c = a.clone()
    assert isinstance(c, sm.random.RandomState) and c is not a
    new, used = split_ref(0)
    assert_same_key(c.value, used)
    assert_same_key(a.value, new)
    x = c.rand(2)
    assert_same_key(a.value, new)
    np.testing.assert_array_equal(sm.random.RandomState(0).clone().rand(2), x)


def test_default_rng_and_set_key():
    np.testing.assert_array_equal(sm.random.default_rng(4).rand(2), sm.random.RandomState(4).rand(2))
    sm.random.set_key(jr.key(8))
    assert_same_key(sm.random.get_key(), jr.key(8))


def test_public_names():
    names = (
        "rand randn randint random uniform normal truncated_normal bernoulli choice permutation shuffle "
        "exponential gamma beta poisson categorical multivariate_normal chisquare power standard_t triangular "
        "rand_like randn_like randint_like"
    ).split()
    for name in names + ["seed_context"]:
        assert name in sm.random.__all__ and callable(getattr(sm.random, name))
    for name in names:
        assert callable(getattr(sm.random.RandomState, name))


def test_module_samplers_are_default_methods_with_examples():
    # As in numpy.random: one signature and docstring per sampler, shared by the method and the module function.
    for name in sm.random.__all__:
        method = getattr(sm.random.RandomState, name, None)
        if method is None or name in ("seed", "split_key", "set_key"):
            continue
        f = getattr(sm.random, name)
        assert f.__self__ is sm.random.DEFAULT and f.__func__ is method, name
        assert ">>>" in (inspect.getdoc(f) or ""), name


def test_plain_jax_jit_draw_raises_and_leaves_default_unchanged():
    before = sm.random.DEFAULT.value
    with pytest.raises(sm.TraceContextError, match=r"random.DEFAULT[\s\S]*use statemap.transform.jit"):
        jax.jit(lambda: sm.random.rand(2))()
    assert sm.random.DEFAULT.value is before
    assert_no_tracer(sm.random.DEFAULT)
    k = jr.key(1)
    np.testing.assert_array_equal(jax.jit(lambda k: sm.random.rand(2, key=k))(k), jr.uniform(k, (2,)))


# -- int seeds as keys, key data, restore_key, clone_rng -----------------------------------------------------
@pytest.mark.parametrize("seed", [5, np.int64(5), jnp.array(5), -3])
def test_int_seed_is_accepted_as_key(seed):
    ref = jr.key(int(seed) % 2**32)
    rng = sm.random.RandomState(0)
    before = rng.value
    assert_same(rng.normal(size=3, key=seed), jr.normal(ref, (3,)))
    assert_same(sm.random.choice(4, size=2, key=seed), jr.choice(ref, 4, (2,)))
    assert rng.value is before
    assert_same_key(sm.random.RandomState(seed).value, ref)


def test_traced_int_seed_as_key():
    f = sm.transform.jit(lambda s: sm.random.rand(2, key=s))
    np.testing.assert_array_equal(f(jnp.array(7)), jr.uniform(jr.key(7), (2,)))


def test_get_key_data_reads_without_advancing():
    rng = sm.random.RandomState(3)
    data = sm.random.get_key_data(rng)
    assert data.dtype == jnp.uint32 and data.shape == (2,)
    np.testing.assert_array_equal(data, key_bits(jr.key(3)))
    assert_same_key(rng.value, jr.key(3))
    sm.random.seed(4)
    np.testing.assert_array_equal(sm.random.get_key_data(), key_bits(jr.key(4)))
    with pytest.raises(TypeError, match=r"get_key_data: rng is not a generator[\s\S]*found:    int 3"):
        sm.random.get_key_data(3)


@pytest.mark.parametrize("key", [lambda: jr.key(9), lambda: jr.key_data(jr.key(9)), lambda: 9, lambda: np.int32(9)])
def test_restore_key_sets_a_given_key(key):
    rng = sm.random.RandomState(0)
    rng.restore_key(key())
    assert_same_key(rng.value, jr.key(9))
    sm.random.restore_key(key())
    assert_same_key(sm.random.DEFAULT.value, jr.key(9))


def test_restore_key_round_trip_through_key_data():
    rng = sm.random.RandomState(0)
    rng.rand(3)
    data = sm.random.get_key_data(rng)
    a = rng.normal(size=4)
    rng.restore_key(data)
    np.testing.assert_array_equal(rng.normal(size=4), a)


def test_restore_key_without_a_key_uses_the_backup():
    sm.random.DEFAULT.backup_key()
    before = sm.random.get_key()
    sm.random.rand(2)
    sm.random.restore_key()
    assert sm.random.get_key() is before
    with pytest.raises(ValueError, match="no key was backed up"):
        sm.random.restore_key()


def test_restore_key_bad_key_leaves_the_key():
    rng = sm.random.RandomState(0)
    before = rng.value
    with pytest.raises(TypeError, match="restore_key: seed_or_key is neither a seed nor a PRNG key"):
        rng.restore_key(1.5)
    assert rng.value is before


def test_restore_key_inside_jit_is_written_back():
    rng = sm.random.RandomState(0)
    sm.transform.jit(lambda k: rng.restore_key(k))(jr.key(2))
    assert_same_key(rng.value, jr.key(2))
    assert_no_tracer(rng)


def test_clone_rng_of_default_is_independent():
    sm.random.seed(1)
    c = sm.random.clone_rng()
    new, used = split_ref(1)
    assert isinstance(c, sm.random.RandomState) and c is not sm.random.DEFAULT
    assert_same_key(c.value, used)
    assert_same_key(sm.random.DEFAULT.value, new)  # the clone's key was split off: the streams differ
    assert sm.random.clone_rng(clone=False) is sm.random.DEFAULT


def test_clone_rng_of_a_generator_and_of_a_seed():
    rng = sm.random.RandomState(2)
    c = sm.random.clone_rng(rng)
    new, used = split_ref(2)
    assert_same_key(c.value, used) and assert_same_key(rng.value, new)
    assert sm.random.clone_rng(rng, clone=False) is rng
    assert_same_key(sm.random.clone_rng(5).value, jr.key(5))
    assert_same_key(sm.random.clone_rng(jr.key_data(jr.key(6))).value, jr.key(6))
    with pytest.raises(TypeError, match="clone_rng: seed_or_key is neither"):
        sm.random.clone_rng("x")


def test_copy_of_a_key_repeats_the_stream():
    rng = sm.random.RandomState(0)
    twin = sm.random.RandomState(sm.random.get_key_data(rng))
    np.testing.assert_array_equal(twin.rand(3), rng.rand(3))


# -- hypothesis: parameters of the new samplers --------------------------------------------------------------
PARAMS = st.one_of(
    st.floats(-2, 5),
    st.just(float("nan")),
    st.integers(-2, 5),
    st.booleans(),
    st.none(),
    st.text(max_size=2),
    st.lists(st.floats(-1, 5), min_size=1, max_size=3),
    st.lists(st.lists(st.integers(0, 3), max_size=2), min_size=2, max_size=2),  # maybe ragged
    st.lists(st.one_of(st.integers(1, 3), st.text(max_size=1)), min_size=1, max_size=2),
)


def flat(x):
    return [v for item in x for v in flat(item)] if isinstance(x, list) else [x]


def param_oracle(x):
    """A parameter as the sampler uses it: a float32 array, or None when it is not numeric (or ragged)."""
    if any(isinstance(v, str) or v is None for v in flat(x)):
        return None
    try:
        return np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        return None


POSITIVE = {
    "chisquare": lambda k, d: jr.chisquare(k, jnp.asarray(d, jnp.float32), np.shape(d)),
    "standard_t": lambda k, d: jr.t(k, jnp.asarray(d, jnp.float32), np.shape(d)),
    "power": lambda k, d: jr.uniform(k, np.shape(d)) ** (1 / jnp.asarray(d, jnp.float32)),
}


@pytest.mark.parametrize("name", sorted(POSITIVE))
@given(param=PARAMS)
def test_positive_parameter_property(name, param):
    rng = sm.random.RandomState(0)
    before = rng.value
    arr = param_oracle(param)
    if arr is not None and np.all(arr > 0):
        out = getattr(rng, name)(param)
        new, used = split_ref(0)
        assert_same(out, POSITIVE[name](used, arr))
        assert_same_key(rng.value, new)
    else:
        with pytest.raises((TypeError, ValueError), match=rf"^{name}: [a-z]+ is (not a number|out of range)"):
            getattr(rng, name)(param)
        assert rng.value is before


@given(left=PARAMS, mode=PARAMS, right=PARAMS)
def test_triangular_property(left, mode, right):
    rng = sm.random.RandomState(0)
    before = rng.value
    arrs = [param_oracle(x) for x in (left, mode, right)]
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrs)) if all(a is not None for a in arrs) else None
    except ValueError:
        shape = None
    ordered = shape is not None and bool(np.all((arrs[0] <= arrs[1]) & (arrs[1] <= arrs[2]) & (arrs[0] < arrs[2])))
    if ordered:
        out = rng.triangular(left, mode, right)
        _, used = split_ref(0)
        ref = jr.triangular(used, *(jnp.asarray(a, jnp.float32) for a in arrs), shape)
        assert_same(out, ref)
    else:
        with pytest.raises(
            (TypeError, ValueError), match=r"^triangular: (\w+ is not a number|the (distribution )?param)"
        ):
            rng.triangular(left, mode, right)
        assert rng.value is before


@given(
    low=st.one_of(st.integers(-3, 5), st.none(), st.text(max_size=1)),
    high=st.one_of(st.integers(-3, 6), st.none()),
)
def test_randint_like_property(low, high):
    rng = sm.random.RandomState(0)
    before = rng.value
    x = jnp.zeros((2, 3), jnp.int16)
    if isinstance(low, int) and (high is None and low > 0 or high is not None and high > low):
        lo, hi = (0, low) if high is None else (low, high)
        out = rng.randint_like(x, low, high)
        _, used = split_ref(0)
        assert_same(out, jr.randint(used, (2, 3), lo, hi, jnp.int16))
    else:
        with pytest.raises((TypeError, ValueError), match=r"^randint_like: (low is not a number|the range)"):
            rng.randint_like(x, low, high)
        assert rng.value is before
