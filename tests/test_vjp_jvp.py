"""Tests of statemap.transform.vjp and jvp: parity with jax.vjp / jax.jvp on the pure function, states, errors."""

import jax
import jax.numpy as jnp
import pytest
from _mapping_util import assert_tree_close as _assert_tree_close

import statemap as sm
from statemap.transform import jvp, vjp

W0 = jnp.array([[1.0, -2.0], [0.5, 3.0]])
B0 = jnp.array([0.1, -0.3])
X = jnp.array([0.7, -1.2])
Y = jnp.array([2.0, 0.5])


def assert_tree_close(a, b):
    _assert_tree_close(a, b, rtol=1e-5, atol=1e-6)


def no_tracers(*states):
    return not any(isinstance(leaf, jax.core.Tracer) for s in states for leaf in jax.tree_util.tree_leaves(s._value))


def make_model():
    w = sm.ParamState(W0, name="w")
    b = sm.ParamState(B0, name="b")
    n = sm.ShortTermState(jnp.array(0), name="n")

    def f(x, y):
        n.value = n.value + 1
        return {"h": jnp.tanh(w.value @ x + b.value) * y, "s": jnp.sum(x * y)}

    return w, b, n, f


def pure(w, b, x, y):
    return {"h": jnp.tanh(w @ x + b) * y, "s": jnp.sum(x * y)}


CT = {"h": jnp.array([1.0, -0.5]), "s": jnp.array(2.0)}


# -- vjp ---------------------------------------------------------------------------------------------------
def test_vjp_over_every_primal_matches_jax_vjp():
    w, b, n, f = make_model()
    out, vjp_fn = vjp(f, X, Y)
    ref_out, ref_vjp = jax.vjp(lambda x, y: pure(W0, B0, x, y), X, Y)
    assert_tree_close(out, ref_out)
    cts = vjp_fn(CT)
    assert isinstance(cts, tuple) and len(cts) == 2
    assert_tree_close(cts, ref_vjp(CT))
    assert int(n.value) == 1  # written once, by the forward call
    vjp_fn(CT)
    assert int(n.value) == 1  # the pullback is pure
    assert no_tracers(w, b, n)


@pytest.mark.parametrize("argnums", [0, 1, (1,), (1, 0), ()])
def test_vjp_with_grad_states_and_argnums(argnums):
    w, b, n, f = make_model()
    out, vjp_fn = vjp(f, X, Y, grad_states={"w": w, "b": b}, argnums=argnums)
    ref_out, ref_vjp = jax.vjp(pure, W0, B0, X, Y)
    assert_tree_close(out, ref_out)
    dw, db, dx, dy = ref_vjp(CT)
    by_pos = (dx, dy)
    got = vjp_fn(CT)
    states_ref = {"w": dw, "b": db}
    if argnums == ():
        assert_tree_close(got, states_ref)
    elif isinstance(argnums, int):
        assert_tree_close(got, (states_ref, by_pos[argnums]))
    else:
        assert_tree_close(got, (states_ref, tuple(by_pos[i] for i in argnums)))
    assert int(n.value) == 1


def test_vjp_states_only_without_primals():
    w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")
    out, vjp_fn = vjp(lambda: w.value**2, grad_states=[w])
    ref_out, ref_vjp = jax.vjp(lambda v: v**2, w.value)
    assert_tree_close(out, ref_out)
    assert_tree_close(vjp_fn(jnp.ones(2)), [ref_vjp(jnp.ones(2))[0]])


def test_vjp_no_primals_no_states_matches_jax():
    out, vjp_fn = vjp(lambda: jnp.ones(2))
    ref_out, ref_vjp = jax.vjp(lambda: jnp.ones(2))
    assert_tree_close(out, ref_out)
    assert vjp_fn(jnp.ones(2)) == ref_vjp(jnp.ones(2)) == ()


def test_vjp_has_aux_and_module_grad_states():
    class Lin(sm.nn.Module):
        def __init__(self):
            self.w = sm.ParamState(W0)
            self.b = sm.ParamState(B0)

    m = Lin()

    def f(x):
        y = m.w.value @ x + m.b.value
        return y, {"norm": jnp.sum(y**2)}

    out, vjp_fn, aux = vjp(f, X, grad_states=m, has_aux=True)
    ref_out, ref_vjp, ref_aux = jax.vjp(
        lambda w, b, x: (w @ x + b, {"norm": jnp.sum((w @ x + b) ** 2)}), W0, B0, X, has_aux=True
    )
    assert_tree_close((out, aux), (ref_out, ref_aux))
    state_cts, (dx,) = vjp_fn(jnp.array([1.0, 2.0]))
    dw, db, rdx = ref_vjp(jnp.array([1.0, 2.0]))
    assert set(state_cts) == {("w",), ("b",)}
    assert_tree_close((state_cts[("w",)], state_cts[("b",)], dx), (dw, db, rdx))


def test_vjp_inside_jit_matches_pure_and_writes_once():
    w, b, n, f = make_model()

    @sm.transform.jit
    def run(x, y):
        out, vjp_fn = vjp(f, x, y, grad_states=w, argnums=0)
        return out, vjp_fn(CT)

    out, (dw, dx) = run(X, Y)
    ref_out, ref_vjp = jax.vjp(lambda w_, x: pure(w_, B0, x, Y), W0, X)
    assert_tree_close((out, dw, dx), (ref_out, *ref_vjp(CT)))
    run(X, Y)
    assert int(n.value) == 2
    assert no_tracers(w, b, n)


def test_vjp_exception_keeps_every_state():
    w, b, n, _ = make_model()

    def f(x):
        n.value = n.value + 1
        w.value = w.value * 2
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        vjp(f, X, grad_states=w)
    assert int(n.value) == 0
    assert_tree_close(w.value, W0)
    assert no_tracers(w, n)


def test_vjp_errors():
    w, b, n, f = make_model()
    with pytest.raises(sm.StateArgumentError, match="argument args\\[0\\] is state 'w'"):
        vjp(f, w, Y)
    with pytest.raises(sm.ArgumentError, match="argnums entry 3 is out of range"):
        vjp(f, X, Y, argnums=3)
    with pytest.raises(TypeError, match="grad_states is not a State"):
        vjp(f, X, Y, grad_states=W0)
    assert int(n.value) == 0


# -- jvp ---------------------------------------------------------------------------------------------------
def test_jvp_matches_jax_jvp():
    w, b, n, f = make_model()
    tx, ty = jnp.array([1.0, 0.0]), jnp.array([0.5, -1.0])
    out, t_out = jvp(f, (X, Y), (tx, ty))
    ref = jax.jvp(lambda x, y: pure(W0, B0, x, y), (X, Y), (tx, ty))
    assert_tree_close((out, t_out), ref)
    assert int(n.value) == 1
    assert no_tracers(w, b, n)


@pytest.mark.parametrize("structure", ["single", "list", "dict"])
def test_jvp_with_state_tangents(structure):
    w, b, n, f = make_model()
    tw, tb = jnp.ones_like(W0), jnp.array([1.0, -1.0])
    tx, ty = jnp.zeros(2), jnp.array([0.5, 0.5])
    if structure == "single":
        grad_states, state_tangents, ref_t = w, tw, (tw, jnp.zeros(2))
    elif structure == "list":
        grad_states, state_tangents, ref_t = [w, b], [tw, tb], (tw, tb)
    else:
        grad_states, state_tangents, ref_t = {"b": b, "w": w}, {"w": tw, "b": tb}, (tw, tb)
    out, t_out = jvp(f, [X, Y], [tx, ty], grad_states=grad_states, state_tangents=state_tangents)
    ref = jax.jvp(pure, (W0, B0, X, Y), (*ref_t, tx, ty))
    assert_tree_close((out, t_out), ref)
    assert int(n.value) == 1


def test_jvp_has_aux_inside_jit():
    w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")
    n = sm.State(jnp.array(0), name="n")

    def f(x):
        n.value = n.value + 1
        return jnp.sum(w.value * x**2), x.mean()

    run = sm.transform.jit(lambda x, t: jvp(f, (x,), (t,), grad_states=w, state_tangents=jnp.ones(2), has_aux=True))
    out, t_out, aux = run(X, jnp.ones(2))
    ref = jax.jvp(lambda w_, x: (jnp.sum(w_ * x**2), x.mean()), (w.value, X), (jnp.ones(2), jnp.ones(2)), has_aux=True)
    assert_tree_close((out, t_out, aux), ref)
    assert int(n.value) == 1


def test_jvp_exception_keeps_every_state():
    n = sm.State(jnp.array(0), name="n")

    def f(x):
        n.value = n.value + 1
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        jvp(f, (X,), (X,))
    assert int(n.value) == 0 and no_tracers(n)


def test_jvp_errors():
    w, b, n, f = make_model()
    with pytest.raises(sm.ArgumentError, match="primals is not a tuple or list"):
        jvp(f, X, (X,))
    with pytest.raises(sm.ArgumentError, match="tangents is not a tuple or list"):
        jvp(f, (X, Y), X)
    with pytest.raises(sm.ArgumentError, match="grad_states is given without state_tangents"):
        jvp(f, (X, Y), (X, Y), grad_states=w)
    with pytest.raises(sm.ArgumentError, match="state_tangents is given without grad_states"):
        jvp(f, (X, Y), (X, Y), state_tangents=W0)
    with pytest.raises(
        sm.ArgumentError, match=r"(?s)state_tangents\[1\] does not have the structure.*list or tuple of 2"
    ):
        jvp(f, (X, Y), (X, Y), grad_states=[w, [b, w]], state_tangents=[W0, B0])
    with pytest.raises(sm.ArgumentError, match="a dict with the keys"):
        jvp(f, (X, Y), (X, Y), grad_states={"w": w}, state_tangents={"v": W0})
    assert int(n.value) == 0
