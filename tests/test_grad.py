"""Tests for statemap.transform grad, vector_grad, jacrev, jacfwd and hessian.

Every result is compared with the JAX transform applied to a hand-written pure function taking the state
values explicitly; final state values are compared with what the pure function returns as new state.
"""

from collections import namedtuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import statemap as sm
from statemap.transform import grad, hessian, jacfwd, jacrev, vector_grad

T = sm.transform


def assert_tree_close(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb, (ta, tb)
    for x, y in zip(la, lb, strict=True):
        assert jnp.shape(x) == jnp.shape(y)
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def no_tracers(*states):
    return not any(isinstance(leaf, jax.core.Tracer) for s in states for leaf in jax.tree_util.tree_leaves(s._value))


W0 = jnp.array([[1.0, -2.0], [0.5, 3.0]])
B0 = jnp.array([0.1, -0.3])
X = jnp.array([0.7, -1.2])


def make_model():
    w = sm.ParamState(W0, name="w")
    b = sm.ParamState(B0, name="b")
    n = sm.ShortTermState(jnp.array(0), name="n")
    return w, b, n


def pure_loss(w, b, n, x):
    """Reference: (loss, new n)."""
    y = jnp.tanh(w @ x + b)
    return jnp.sum(y**2) + 0.1 * jnp.sum(w**2), n + 1


def stateful_loss(w, b, n, calls=None):
    def loss(x):
        if calls is not None:
            calls.append(1)
        n.value = n.value + 1
        # Explicit cast: a float16 `x` (a new signature) must not meet float32 weights under strict promotion.
        x = jnp.asarray(x, w.value.dtype)
        y = jnp.tanh(w.value @ x + b.value)
        return jnp.sum(y**2) + 0.1 * jnp.sum(w.value**2)

    return loss


# -- grad: structures ------------------------------------------------------------------------------------
def test_grad_single_state():
    w, b, n = make_model()
    g = grad(stateful_loss(w, b, n), grad_states=w)(X)
    ref = jax.grad(lambda w_: pure_loss(w_, B0, 0, X)[0])(W0)
    assert_tree_close(g, ref)
    assert int(n.value) == 1
    assert_tree_close((w.value, b.value), (W0, B0))


@pytest.mark.parametrize("container", [list, tuple])
def test_grad_sequence_of_states(container):
    w, b, n = make_model()
    g = grad(stateful_loss(w, b, n), grad_states=container([w, b]))(X)
    ref = jax.grad(lambda wb: pure_loss(wb[0], wb[1], 0, X)[0])(container([W0, B0]))
    assert type(g) is container
    assert_tree_close(g, ref)


def test_grad_dict_and_namedtuple_keep_structure():
    w, b, n = make_model()
    g = grad(stateful_loss(w, b, n), grad_states={"b": b, "w": w})(X)
    assert list(g) == ["b", "w"]
    ref = jax.grad(lambda p: pure_loss(p["w"], p["b"], 0, X)[0])({"w": W0, "b": B0})
    assert_tree_close(g, {"b": ref["b"], "w": ref["w"]})
    Pair = namedtuple("Pair", ["w", "b"])
    g2 = grad(stateful_loss(w, b, n), grad_states=Pair(w, b))(X)
    assert isinstance(g2, Pair)
    assert_tree_close(g2.w, ref["w"])


def test_grad_module_means_param_states():
    class Linear(sm.nn.Module):
        def __init__(self):
            self.w = sm.ParamState(W0)
            self.b = sm.ParamState(B0)
            self.n = sm.ShortTermState(jnp.array(0))

    m = Linear()
    loss = stateful_loss(m.w, m.b, m.n)
    g = grad(loss, grad_states=m)(X)
    assert list(g) == [("w",), ("b",)]
    ref = jax.grad(lambda w_, b_: pure_loss(w_, b_, 0, X)[0], argnums=(0, 1))(W0, B0)
    assert_tree_close((g[("w",)], g[("b",)]), ref)
    g2 = grad(loss, grad_states=m.states(sm.util.filter.PathContains("b")))(X)
    assert list(g2) == [("b",)]
    assert_tree_close(g2[("b",)], ref[1])
    assert int(m.n.value) == 2


def test_grad_nested_and_duplicate_states():
    w, b, n = make_model()
    g = grad(stateful_loss(w, b, n), grad_states={"a": [w, b], "again": w})(X)
    ref = jax.grad(lambda w_: pure_loss(w_, B0, 0, X)[0])(W0)
    assert_tree_close(g["a"][0], ref)
    assert_tree_close(g["again"], ref)


def test_grad_pytree_valued_state():
    p = sm.ParamState({"a": jnp.array(2.0), "b": jnp.ones(3)}, name="p")
    g = grad(lambda x: p.value["a"] * jnp.sum(p.value["b"] * x), grad_states=p)(jnp.arange(3.0))
    p0 = {"a": jnp.array(2.0), "b": jnp.ones(3)}
    ref = jax.grad(lambda v: v["a"] * jnp.sum(v["b"] * jnp.arange(3.0)))(p0)
    assert_tree_close(g, ref)


def test_unread_grad_state_gets_zero_gradient():
    w, b, n = make_model()
    unused = sm.ParamState(jnp.ones((3,)), name="unused")
    written_only = sm.ParamState(jnp.ones(2), name="written_only")

    def loss(x):
        written_only.value = x * 2
        return jnp.sum(w.value @ x)

    gw, gu, gwo = grad(loss, grad_states=(w, unused, written_only))(X)
    assert_tree_close(gu, jnp.zeros(3))
    assert_tree_close(gwo, jnp.zeros(2))
    assert_tree_close(gw, jax.grad(lambda w_: jnp.sum(w_ @ X))(W0))
    assert_tree_close(written_only.value, X * 2)


# -- grad: argnums, return_value, has_aux ----------------------------------------------------------------
def f2(x, y, z):
    return jnp.sum(jnp.sin(x) * y) + z**2


ARGS = (jnp.array([0.5, 1.5]), jnp.array([2.0, -1.0]), jnp.array(3.0))


@pytest.mark.parametrize("argnums", [None, 0, 1, -1, (0, 2), (2, 0), (1,)])
def test_grad_argnums_matches_jax(argnums):
    ours = grad(f2) if argnums is None else grad(f2, argnums=argnums)
    ref = jax.grad(f2) if argnums is None else jax.grad(f2, argnums=argnums)
    assert_tree_close(ours(*ARGS), ref(*ARGS))


def test_grad_states_and_argnums():
    w, b, n = make_model()
    gs, gx = grad(stateful_loss(w, b, n), grad_states=[w, b], argnums=0)(X)
    rw, rb, rx = jax.grad(lambda w_, b_, x: pure_loss(w_, b_, 0, x)[0], argnums=(0, 1, 2))(W0, B0, X)
    assert_tree_close(gs, [rw, rb])
    assert_tree_close(gx, rx)
    gs, gxs = grad(stateful_loss(w, b, n), grad_states=w, argnums=(0,))(X)
    assert isinstance(gxs, tuple) and len(gxs) == 1
    assert_tree_close((gs, gxs[0]), (rw, rx))


def test_keyword_arguments_are_constants():
    g = grad(lambda x, *, scale: scale * jnp.sum(x**2))(jnp.ones(2), scale=3.0)
    assert_tree_close(g, 6.0 * jnp.ones(2))


@pytest.mark.parametrize("return_value", [False, True])
@pytest.mark.parametrize("has_aux", [False, True])
def test_grad_output_ordering(return_value, has_aux):
    w, b, n = make_model()

    def loss(x):
        n.value = n.value + 1
        value = jnp.sum((w.value @ x) ** 2)
        return (value, {"x2": x * 2}) if has_aux else value

    out = grad(loss, grad_states=w, return_value=return_value, has_aux=has_aux)(X)
    ref_g = jax.grad(lambda w_: jnp.sum((w_ @ X) ** 2))(W0)
    ref_v = jnp.sum((W0 @ X) ** 2)
    expected = (ref_g,) + ((ref_v,) if return_value else ()) + (({"x2": X * 2},) if has_aux else ())
    if len(expected) == 1:
        assert_tree_close(out, ref_g)
    else:
        assert isinstance(out, tuple)
        assert_tree_close(out, expected)
    assert int(n.value) == 1


def test_has_aux_requires_pair():
    s = sm.State(jnp.ones(2), name="s")
    with pytest.raises(TypeError, match=r"grad: has_aux=True but the function did not return a pair"):
        grad(lambda: jnp.sum(s.value), grad_states=s, has_aux=True)()
    assert no_tracers(s)


def test_grad_allow_int():
    k = sm.State(jnp.array(3), name="k")
    w = sm.ParamState(jnp.array(2.0), name="w")

    def f():
        return w.value * k.value

    with pytest.raises(TypeError, match=r"grad: state 'k' \(State, created at test_grad.py:\d+\).*non-float"):
        grad(f, grad_states=[w, k])()
    gw, gk = grad(f, grad_states=[w, k], allow_int=True)()
    ref = jax.grad(lambda w_, k_: w_ * k_, argnums=(0, 1), allow_int=True)(jnp.array(2.0), jnp.array(3))
    assert_tree_close(gw, ref[0])
    assert gk.dtype == ref[1].dtype == jax.dtypes.float0


def test_holomorphic_matches_jax():
    z = sm.State(jnp.array(1.0 + 2.0j), name="z")
    g = grad(lambda: z.value**2, grad_states=z, holomorphic=True)()
    assert_tree_close(g, jax.grad(lambda v: v**2, holomorphic=True)(jnp.array(1.0 + 2.0j)))


# -- written states --------------------------------------------------------------------------------------
def test_written_states_written_back_once_and_not_differentiated():
    mean = sm.LongTermState(jnp.zeros(2), name="mean")
    w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")

    def loss(x):
        y = w.value * x
        mean.value = 0.9 * mean.value + 0.1 * y  # depends on w, but is not part of the loss
        return jnp.sum(y**2)

    def pure(w_, mean_, x):
        y = w_ * x
        return jnp.sum(y**2), 0.9 * mean_ + 0.1 * y

    x = jnp.array([3.0, -1.0])
    g = grad(loss, grad_states=w)(x)
    assert_tree_close(g, jax.grad(lambda w_: pure(w_, jnp.zeros(2), x)[0])(w.value))
    assert_tree_close(mean.value, pure(w.value, jnp.zeros(2), x)[1])


def test_random_key_advances_once():
    w = sm.ParamState(jnp.ones(3), name="w")

    def loss():
        noise = jax.random.normal(sm.random.split_key(), (3,))
        return jnp.sum(w.value * noise)

    sm.random.seed(7)
    key0 = sm.random.get_key()
    g = grad(loss, grad_states=w)()
    new_key, sub = jax.random.split(key0)
    assert_tree_close(g, jax.random.normal(sub, (3,)))
    assert jnp.array_equal(jax.random.key_data(sm.random.get_key()), jax.random.key_data(new_key))
    assert no_tracers(sm.random.DEFAULT)


# -- trace counts ----------------------------------------------------------------------------------------
def test_body_runs_once_per_signature():
    w, b, n = make_model()
    calls = []
    g = grad(stateful_loss(w, b, n, calls), grad_states=w)
    for _ in range(3):
        g(X)
    assert len(calls) == 1
    assert int(n.value) == 3
    g(jnp.ones((2,), jnp.float32) * 2)  # same signature
    assert len(calls) == 1
    g(jnp.ones((2,), jnp.float16))  # new signature
    assert len(calls) == 2


def test_state_shape_change_retraces():
    s = sm.ParamState(jnp.ones(2), name="s")
    calls = []

    def f():
        calls.append(1)
        return jnp.sum(s.value**2)

    g = grad(f, grad_states=s)
    assert_tree_close(g(), 2 * jnp.ones(2))
    s.value = jnp.ones(3)
    assert_tree_close(g(), 2 * jnp.ones(3))
    assert len(calls) == 2


def test_decorator_forms_and_method():
    w = sm.ParamState(jnp.array(2.0), name="w")

    @grad
    def f(x):
        return w.value * x**2

    assert_tree_close(f(3.0), jax.grad(lambda x: 2.0 * x**2)(3.0))

    class Model:
        def __init__(self):
            self.w = sm.ParamState(jnp.array(4.0))

        @grad(argnums=0)  # counts the arguments after self
        def dloss(self, x):
            return self.w.value * x**2

        @grad(grad_states={}, argnums=(0, 1), return_value=True)
        def both(self, x, y):
            return self.w.value * x * y

    m1, m2 = Model(), Model()
    m2.w.value = jnp.array(1.0)
    assert_tree_close(m1.dloss(1.5), jnp.array(12.0))
    assert_tree_close(m2.dloss(1.5), jnp.array(3.0))
    assert_tree_close(m1.both(2.0, 3.0), (({}, (jnp.array(12.0), jnp.array(8.0))), jnp.array(24.0)))
    assert Model.dloss is Model.__dict__["dloss"]


# -- jit composition -------------------------------------------------------------------------------------
def test_sgd_training_loop_under_jit_matches_pure_jax():
    xs = jnp.array([[1.0, 2.0], [0.5, -1.0], [-1.5, 0.3], [2.0, 0.1]])
    ys = jnp.array([1.0, 0.0, -1.0, 2.0])
    w = sm.ParamState(jnp.zeros((2,)), name="w")
    b = sm.ParamState(jnp.zeros(()), name="b")
    step_count = sm.ShortTermState(jnp.array(0), name="step")
    calls = []

    def loss_fn(x, y):
        calls.append(1)
        return jnp.mean((x @ w.value + b.value - y) ** 2)

    loss_grad = grad(loss_fn, grad_states={"w": w, "b": b}, return_value=True)

    @sm.transform.jit
    def train_step(x, y):
        grads, loss = loss_grad(x, y)
        w.value = w.value - 0.1 * grads["w"]
        b.value = b.value - 0.1 * grads["b"]
        step_count.value = step_count.value + 1
        return loss

    def pure_loss_fn(params, x, y):
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    @jax.jit
    def pure_step(params, count, x, y):
        loss, grads = jax.value_and_grad(pure_loss_fn)(params, x, y)
        params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
        return params, count + 1, loss

    params, count = {"w": jnp.zeros((2,)), "b": jnp.zeros(())}, jnp.array(0)
    for _ in range(5):
        loss = train_step(xs, ys)
        params, count, ref_loss = pure_step(params, count, xs, ys)
        assert_tree_close(loss, ref_loss)
    assert_tree_close({"w": w.value, "b": b.value}, params)
    assert int(step_count.value) == int(count) == 5
    assert len(calls) == 1


def test_grad_inside_jit_twice_traces_body_once():
    w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")
    n = sm.ShortTermState(jnp.array(0), name="n")
    calls = []

    @grad(grad_states=w)
    def g(x):
        calls.append(1)
        n.value = n.value + 1
        return jnp.sum(w.value * x.astype(w.value.dtype))  # x may be float16: cast explicitly

    @sm.transform.jit
    def step(x):
        return g(x) + g(2 * x)  # two calls inside one trace

    out = step(jnp.ones(2))
    step(jnp.ones(2))
    assert_tree_close(out, 3 * jnp.ones(2))
    assert len(calls) == 1
    assert int(n.value) == 4
    step(jnp.ones(2, jnp.float16))  # new jit signature, and a new signature for g
    assert len(calls) == 2


def test_jit_of_grad():
    w, b, n = make_model()
    calls = []
    g = sm.transform.jit(grad(stateful_loss(w, b, n, calls), grad_states=[w, b], argnums=0))
    for _ in range(2):
        (gw, gb), gx = g(X)
    ref = jax.grad(lambda w_, b_, x: pure_loss(w_, b_, 0, x)[0], argnums=(0, 1, 2))(W0, B0, X)
    assert_tree_close((gw, gb, gx), ref)
    assert int(n.value) == 2
    assert len(calls) == 1


def test_grad_of_jit_and_nested_grad():
    w = sm.ParamState(jnp.array(1.5), name="w")
    inner = sm.transform.jit(lambda x: jnp.sin(w.value * x))
    assert_tree_close(grad(inner, grad_states=w)(2.0), jax.grad(lambda w_: jnp.sin(w_ * 2.0))(1.5))
    # d/dw of (d/dx sin(w x)) = cos(w x) - w x sin(w x)
    dx = grad(lambda x: jnp.sin(w.value * x))
    ddw = grad(lambda x: dx(x), grad_states=w)(2.0)
    ref = jax.grad(lambda w_: jax.grad(lambda x: jnp.sin(w_ * x))(2.0))(1.5)
    assert_tree_close(ddw, ref)
    assert no_tracers(w)


def test_grad_inside_jit_failure_keeps_prior_values():
    w = sm.ParamState(jnp.ones(2), name="w")
    n = sm.ShortTermState(jnp.array(0), name="n")
    g = grad(lambda: w.value * 2, grad_states=w)  # non-scalar output

    @sm.transform.jit
    def step():
        n.value = n.value + 1
        w.value = w.value + g()

    key0 = jax.random.key_data(sm.random.get_key())
    with pytest.raises(TypeError, match="Gradient only defined for scalar-output functions"):
        step()
    assert_tree_close((w.value, n.value), (jnp.ones(2), jnp.array(0)))
    assert jnp.array_equal(jax.random.key_data(sm.random.get_key()), key0)
    assert no_tracers(w, n, sm.random.DEFAULT)


def test_make_jaxpr_sees_grad_states_and_writes():
    w = sm.ParamState(jnp.ones(2), name="w")
    unused = sm.ParamState(jnp.ones(3), name="unused")
    n = sm.ShortTermState(jnp.array(0), name="n")

    def loss(x):
        n.value = n.value + 1
        return jnp.sum(w.value * x)

    jaxpr, states = sm.transform.make_jaxpr(grad(loss, grad_states=[w, unused]))(jnp.ones(2))
    assert set(map(id, states)) == {id(w), id(unused), id(n)}
    st = sm.transform.StatefulFunction(grad(loss, grad_states=w))
    assert [s.name for s in st.get_write_states(jnp.ones(2))] == ["n"]


def test_jax_vmap_of_read_only_grad_gives_per_example_gradients():
    w = sm.ParamState(jnp.array([1.0, -1.0]), name="w")
    xs = jnp.array([[1.0, 2.0], [3.0, 4.0], [0.5, 0.0]])
    per_example = jax.vmap(grad(lambda x: jnp.sum(jnp.sin(w.value * x)), grad_states=w))(xs)
    ref = jax.vmap(jax.grad(lambda w_, x: jnp.sum(jnp.sin(w_ * x))), in_axes=(None, 0))(w.value, xs)
    assert_tree_close(per_example, ref)


# -- vector_grad, jacrev, jacfwd, hessian ----------------------------------------------------------------
def vec_fun(w, x):
    return jnp.tanh(w @ x) * x


def test_vector_grad_matches_vjp_with_ones():
    w = sm.ParamState(W0, name="w")
    n = sm.ShortTermState(jnp.array(0), name="n")

    def f(x):
        n.value = n.value + 1
        return vec_fun(w.value, x)

    gw, gx = vector_grad(f, grad_states=w, argnums=0)(X)
    y, vjp = jax.vjp(vec_fun, W0, X)
    assert_tree_close((gw, gx), vjp(jnp.ones_like(y)))
    out = vector_grad(f, grad_states=w, return_value=True)(X)
    assert_tree_close(out, (vjp(jnp.ones_like(y))[0], y))
    assert int(n.value) == 2


def test_vector_grad_has_aux_and_value():
    w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")
    f = vector_grad(lambda: (w.value**3, w.value + 1), grad_states=w, has_aux=True, return_value=True)
    g, value, aux = f()
    assert_tree_close((g, value, aux), (3 * w.value**2, w.value**3, w.value + 1))


@pytest.mark.parametrize("kind", ["jacrev", "jacfwd"])
def test_jacobians_match_jax(kind):
    ours_t = {"jacrev": jacrev, "jacfwd": jacfwd}[kind]
    ref_t = {"jacrev": jax.jacrev, "jacfwd": jax.jacfwd}[kind]
    w = sm.ParamState(W0, name="w")
    n = sm.ShortTermState(jnp.array(0), name="n")

    def f(x):
        n.value = n.value + 1
        return vec_fun(w.value, x)

    jw, jx = ours_t(f, grad_states=w, argnums=0)(X)
    assert_tree_close((jw, jx), ref_t(vec_fun, argnums=(0, 1))(W0, X))
    assert_tree_close(ours_t(f, grad_states={"w": w})(X), {"w": ref_t(vec_fun)(W0, X)})
    assert_tree_close(ours_t(f)(X), ref_t(vec_fun, argnums=1)(W0, X))
    assert int(n.value) == 3


@pytest.mark.parametrize("kind", ["jacrev", "jacfwd"])
def test_jacobian_pytree_output_with_aux_and_value(kind):
    ours_t = {"jacrev": jacrev, "jacfwd": jacfwd}[kind]
    ref_t = {"jacrev": jax.jacrev, "jacfwd": jax.jacfwd}[kind]
    w = sm.ParamState(W0, name="w")

    def pure(w_, x):
        return {"a": w_ @ x, "b": jnp.sum(w_)}, x * 3

    f = ours_t(lambda x: pure(w.value, x), grad_states=[w], argnums=(0,), has_aux=True, return_value=True)
    jac, value, aux = f(X)
    ref_jac, ref_aux = ref_t(pure, argnums=(0, 1), has_aux=True)(W0, X)
    assert_tree_close(jac["a"], ([ref_jac["a"][0]], (ref_jac["a"][1],)))
    assert_tree_close(jac["b"], ([ref_jac["b"][0]], (ref_jac["b"][1],)))
    assert_tree_close(value, pure(W0, X)[0])
    assert_tree_close(aux, ref_aux)


def test_hessian_matches_jax():
    w = sm.ParamState(jnp.array([1.0, -0.5]), name="w")
    n = sm.ShortTermState(jnp.array(0), name="n")

    def pure(w_, x):
        return jnp.sum(jnp.sin(w_ * x) * w_) + jnp.sum(x**3)

    def f(x):
        n.value = n.value + 1
        return pure(w.value, x)

    x = jnp.array([0.3, 2.0])
    ref = jax.hessian(pure, argnums=(0, 1))(w.value, x)
    assert_tree_close(hessian(f, grad_states=w)(x), ref[0][0])
    assert_tree_close(hessian(f)(x), ref[1][1])
    (hss, hsa), (has, haa) = hessian(f, grad_states=w, argnums=0)(x)
    assert_tree_close((hss, hsa, has, haa), (ref[0][0], ref[0][1], ref[1][0], ref[1][1]))
    h, value = hessian(f, grad_states={"w": w}, return_value=True)(x)
    assert_tree_close(h, {"w": {"w": ref[0][0]}})
    assert_tree_close(value, pure(w.value, x))
    assert int(n.value) == 4


def test_hessian_with_aux_under_jit():
    w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")
    h = sm.transform.jit(hessian(lambda: (jnp.sum(w.value**3), w.value * 2), grad_states=w, has_aux=True))
    hs, aux = h()
    assert_tree_close(hs, jnp.diag(6 * w.value))
    assert_tree_close(aux, w.value * 2)


# -- errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, found",
    [
        (jnp.ones(3), r"f32\[3\]"),
        ("w", r"str 'w'"),
        ([None], r"NoneType"),
        ({"ok": None, "bad": 3}, r"NoneType"),
    ],
)
def test_bad_grad_states(bad, found):
    with pytest.raises(TypeError, match=r"grad: grad_states.* is not a State(.|\n)*found:    " + found):
        grad(lambda: 0.0, grad_states=bad)


def test_bad_grad_states_names_the_position():
    w = sm.ParamState(jnp.ones(2), name="w")
    with pytest.raises(TypeError, match=r"jacrev: grad_states\[1\] is not a State(.|\n)*f32\[2\]"):
        jacrev(lambda: w.value, grad_states=[w, w.value])
    with pytest.raises(TypeError, match=r"hessian: grad_states\['b'\] is not a State"):
        hessian(lambda: 0.0, grad_states={"a": w, "b": 1.0})


def test_bad_argnums_and_fun():
    with pytest.raises(TypeError, match=r"grad: argnums is not an int or a sequence of ints"):
        grad(lambda x: x, argnums="0")
    with pytest.raises(TypeError, match=r"grad: argnums is not an int or a sequence of ints"):
        grad(lambda x: x, argnums="")  # an empty string is not "no arguments"
    with pytest.raises(TypeError, match=r"grad: the function to differentiate is not callable"):
        grad(3)
    with pytest.raises(ValueError, match=r"grad: argnums entry 2 is out of range"):
        grad(lambda x, y: x * y, argnums=2)(1.0, 2.0)


def test_state_passed_as_argument():
    s = sm.ParamState(jnp.ones(2), name="s")
    with pytest.raises(sm.StateArgumentError, match=r"grad: argument .* is state 's' \(ParamState"):
        grad(lambda x: jnp.sum(x))(s)


def test_user_error_keeps_prior_values():
    w = sm.ParamState(jnp.ones(2), name="w")
    n = sm.ShortTermState(jnp.array(5), name="n")
    key0 = jax.random.key_data(sm.random.get_key())

    def f(x):
        n.value = n.value + 1
        w.value = w.value * 3
        sm.random.split_key()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        grad(f, grad_states=w)(jnp.ones(2))
    assert_tree_close((w.value, n.value), (jnp.ones(2), jnp.array(5)))
    assert jnp.array_equal(jax.random.key_data(sm.random.get_key()), key0)
    assert no_tracers(w, n, sm.random.DEFAULT)


def test_non_scalar_output_keeps_prior_values():
    w = sm.ParamState(jnp.ones(2), name="w")
    n = sm.ShortTermState(jnp.array(0), name="n")

    def f():
        n.value = n.value + 1
        return w.value * 2

    with pytest.raises(TypeError, match="Gradient only defined for scalar-output functions"):
        grad(f, grad_states=w)()
    assert int(n.value) == 0
    assert no_tracers(w, n)


# -- hypothesis: argnums and grad_states -----------------------------------------------------------------
@given(
    nargs=st.integers(1, 3),
    argnums=st.one_of(st.integers(-4, 4), st.lists(st.integers(-4, 4), min_size=1, max_size=3).map(tuple)),
)
def test_argnums_property(nargs, argnums):
    args = tuple(jnp.arange(1.0, 3.0) * (i + 1) for i in range(nargs))

    def f(*a):
        return sum(jnp.sum(jnp.sin(x) * (i + 1)) for i, x in enumerate(a))

    idx = (argnums,) if isinstance(argnums, int) else argnums
    if all(-nargs <= i < nargs for i in idx):
        ours = grad(f, argnums=argnums)(*args)
        if len({i % nargs for i in idx}) == len(idx):
            assert_tree_close(ours, jax.grad(f, argnums=argnums)(*args))
        else:  # jax.grad breaks on repeated argnums; here each entry gets its argument's gradient
            assert_tree_close(ours, tuple(jax.grad(f, argnums=i)(*args) for i in idx))
    else:
        with pytest.raises(ValueError, match=r"grad: argnums entry -?\d+ is out of range"):
            grad(f, argnums=argnums)(*args)


@given(picks=st.lists(st.sampled_from(["w", "b", "n", "arr", "float", "none"]), min_size=1, max_size=4))
def test_grad_states_property(picks):
    w, b, n = make_model()
    pool = {"w": w, "b": b, "n": n, "arr": jnp.ones(2), "float": 1.5, "none": None}
    chosen = [pool[p] for p in picks]
    loss = stateful_loss(w, b, n)
    bad = [i for i, p in enumerate(picks) if p in ("arr", "float", "none")]
    if bad:
        with pytest.raises(TypeError, match=rf"grad: grad_states\[{bad[0]}\] is not a State"):
            grad(loss, grad_states=chosen)
        return
    if "n" in picks:
        with pytest.raises(TypeError, match=r"grad: state 'n' \(ShortTermState.*non-float"):
            grad(loss, grad_states=chosen)(X)
        assert int(n.value) == 0
        return
    g = grad(loss, grad_states=chosen)(X)
    ref = jax.grad(lambda w_, b_: pure_loss(w_, b_, 0, X)[0], argnums=(0, 1))(W0, B0)
    assert_tree_close(g, [ref[0] if p == "w" else ref[1] for p in picks])
    assert int(n.value) == 1
    assert no_tracers(w, b, n)


# -- fwd_grad ----------------------------------------------------------------------------------------------
def test_fwd_grad_matches_jax_grad_and_jacfwd():
    w, b, n = make_model()
    g, value = T.fwd_grad(stateful_loss(w, b, n), grad_states=[w, b], argnums=0, return_value=True)(X)
    ref_value, ref = jax.value_and_grad(lambda wb, x: pure_loss(wb[0], wb[1], 0, x)[0], argnums=(0, 1))([W0, B0], X)
    assert_tree_close(g, ref)
    assert_tree_close(g, jax.jacfwd(lambda wb, x: pure_loss(wb[0], wb[1], 0, x)[0], argnums=(0, 1))([W0, B0], X))
    assert_tree_close(value, ref_value)
    assert int(n.value) == 1


def test_fwd_grad_differentiates_a_while_loop_which_reverse_mode_cannot():
    w = sm.ParamState(jnp.array(1.5), name="w")

    def f(x):
        return T.while_loop(lambda v: v < 10.0, lambda v: v * w.value, x)

    def pure(w_, x):
        return jax.lax.while_loop(lambda v: v < 10.0, lambda v: v * w_, x)

    assert_tree_close(T.fwd_grad(f, grad_states=w, argnums=0)(2.0), jax.jacfwd(pure, argnums=(0, 1))(w.value, 2.0))
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work"):
        grad(f, grad_states=w)(2.0)


def test_fwd_grad_has_aux_decorator_and_errors():
    w, b, n = make_model()

    @T.fwd_grad(grad_states=w, has_aux=True)
    def loss(x):
        y = w.value @ x
        return jnp.sum(y**2), y

    g, aux = loss(X)
    assert_tree_close((g, aux), (jax.grad(lambda w_: jnp.sum((w_ @ X) ** 2))(W0), W0 @ X))
    with pytest.raises(TypeError, match=r"(?s)fwd_grad: the function does not return a scalar.*found:    f32\[2\]"):
        T.fwd_grad(lambda x: w.value @ x)(X)
    with pytest.raises(TypeError, match="state 'n' .* holds a non-float value"):
        T.fwd_grad(lambda: n.value * 1.0, grad_states=n)()


def test_fwd_grad_exception_keeps_every_state():
    w, b, n = make_model()

    def f(x):
        n.value = n.value + 1
        w.value = w.value + 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        T.fwd_grad(f, grad_states=w)(X)
    assert int(n.value) == 0
    assert_tree_close(w.value, W0)
    assert no_tracers(w, n)


# -- the signatures of the family --------------------------------------------------------------------------
BRAINSTATE_ORDER = {
    "grad": ("grad_states", "argnums", "holomorphic", "allow_int", "has_aux", "return_value", "debug_nan"),
    "vector_grad": ("grad_states", "argnums", "return_value", "has_aux", "debug_nan"),
    "fwd_grad": ("grad_states", "argnums", "return_value", "has_aux", "holomorphic"),
    "jacrev": ("grad_states", "argnums", "has_aux", "return_value", "holomorphic", "allow_int"),
    "jacfwd": ("grad_states", "argnums", "has_aux", "return_value", "holomorphic"),
    "hessian": ("grad_states", "argnums", "return_value", "holomorphic", "has_aux"),
}
DEFAULTS = {"grad_states": None, "argnums": None, "has_aux": None}


@pytest.mark.parametrize("name", sorted(BRAINSTATE_ORDER))
def test_signature_keeps_the_positional_order_and_the_docstring_states_it(name):
    import inspect
    import re

    f = getattr(T, name)
    params = list(inspect.signature(f).parameters.values())
    assert [p.name for p in params] == ["fun", *BRAINSTATE_ORDER[name]]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
    assert [p.default for p in params] == [None] + [DEFAULTS.get(n, False) for n in BRAINSTATE_ORDER[name]]
    listed = re.search(r"\*args: The options, positionally, in this order[^:]*:(.*?)\.\n", f.__doc__, re.S)
    assert tuple(re.findall(r"`(\w+)`", listed.group(1))) == BRAINSTATE_ORDER[name]


def test_options_given_positionally_in_each_order():
    w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")

    def f(x):
        return jnp.sum(w.value * x) ** 2, x

    x = jnp.array([1.0, 1.0])
    expected = jax.grad(lambda w_: jnp.sum(w_ * x) ** 2)(w.value)
    out = grad(f, w, None, False, False, True, True)(x)  # has_aux, return_value
    assert_tree_close(out, (expected, jnp.float32(9.0), x))
    assert_tree_close(jacrev(f, w, None, True, True)(x), (expected, jnp.float32(9.0), x))
    assert_tree_close(hessian(lambda x: f(x)[0], w, None, True)(x)[1], jnp.float32(9.0))  # return_value


def test_bad_options_raise_as_for_a_python_function():
    f = lambda x: x  # noqa: E731
    with pytest.raises(TypeError, match=r"^vector_grad\(\) got an unexpected keyword argument 'holomorphic'$"):
        vector_grad(f, holomorphic=True)
    with pytest.raises(TypeError, match=r"^grad\(\) got multiple values for argument 'argnums'$"):
        grad(f, None, 0, argnums=0)
    with pytest.raises(TypeError, match=r"^jacfwd\(\) takes from 0 to 6 positional arguments but 7 were given$"):
        jacfwd(f, None, 0, False, False, False, False)
    with pytest.raises(TypeError, match=r"^grad\(\) takes from 0 to 8 positional arguments but 9 were given$"):
        grad(f, None, None, False, False, None, False, False, 1)
