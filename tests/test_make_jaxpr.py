"""Tests for statemap/transform/_make_jaxpr.py: StatefulFunction and make_jaxpr."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm
from statemap.transform import StatefulFunction, make_jaxpr


def _counter():
    """A stateful function with a call counter: (f, calls, w, n)."""
    w = sm.ParamState(jnp.arange(2.0), name="w")
    n = sm.ShortTermState(jnp.zeros((), jnp.int32), name="n")
    calls = []

    def f(x, scale=1.0):
        calls.append(1)
        n.value = n.value + 1
        return (w.value * x.astype(w.value.dtype)).sum() * scale

    return f, calls, w, n


def test_states_roles_and_order():
    f, _, w, n = _counter()
    sf = StatefulFunction(f)
    x = jnp.ones(2)
    assert sf.get_states(x) == (n, w)
    assert sf.get_write_states(x) == (n,)
    assert sf.get_read_states(x) == (w,)
    entry = sf.trace(x)
    assert entry.written == (True, False)
    assert entry.read == (True, True)
    assert entry.out_states == (0,)


def test_read_flag_false_for_write_before_read():
    s = sm.State(jnp.zeros(2), name="s")

    def f(x):
        s.value = x
        return s.value * 2

    entry = StatefulFunction(f).trace(jnp.ones(2))
    assert entry.written == (True,) and entry.read == (False,)


def test_one_trace_per_signature():
    f, calls, _, _ = _counter()
    sf = StatefulFunction(f)
    for _ in range(3):
        sf.get_states(jnp.ones(2))
        sf.get_jaxpr(jnp.ones(2))
    assert len(calls) == 1
    sf.get_states(jnp.ones(2, jnp.int32))  # new dtype
    sf.get_states(jnp.ones(2, jnp.float16))  # another dtype
    sf.get_states(jnp.ones(2), scale=2.0)  # new pytree (kwarg)
    assert len(calls) == 4
    sf.get_states(jnp.ones(2), scale=3.0)  # same abstract signature
    assert len(calls) == 4
    sf.clear_cache()
    sf.get_states(jnp.ones(2))
    assert len(calls) == 5


def test_static_values_key_the_cache():
    f, calls, _, _ = _counter()
    sf = StatefulFunction(f, static_argnames="scale")
    sf.get_states(jnp.ones(2), scale=2.0)
    sf.get_states(jnp.ones(2), scale=2.0)
    assert len(calls) == 1
    sf.get_states(jnp.ones(2), scale=3.0)
    assert len(calls) == 2
    sf2 = StatefulFunction(f, static_argnums=1)
    sf2.get_states(jnp.ones(2), 2.0)
    sf2.get_states(jnp.ones(2), 2.0)
    sf2.get_states(jnp.ones(2), 5.0)
    assert len(calls) == 4


def test_state_shape_change_forces_retrace():
    s = sm.State(jnp.zeros(2), name="s")
    calls = []

    def f(x):
        calls.append(1)
        s.value = s.value + x
        return s.value.sum()

    sf = StatefulFunction(f)
    assert sf(jnp.ones(())) == 2.0
    s.value = jnp.zeros(3)  # same argument signature, new state shape
    assert sf(jnp.ones(())) == 3.0
    assert len(calls) == 2
    np.testing.assert_array_equal(s.value, np.ones(3))
    assert sf.trace(jnp.ones(())).jaxpr.in_avals[1].shape == (3,)
    sf(jnp.ones(()))
    assert len(calls) == 2


def test_call_is_pure_jaxpr_parity():
    f, calls, w, n = _counter()
    sf = StatefulFunction(f)
    x = jnp.array([1.0, 3.0])
    out = sf(x)
    assert out == 3.0 and int(n.value) == 1
    out = sf(x)
    assert int(n.value) == 2 and len(calls) == 1
    # jaxpr_call is pure: explicit state values in, new values out, states untouched.
    new_values, out = sf.jaxpr_call([jnp.array(10, jnp.int32), jnp.ones(2)], x)
    assert int(new_values[0]) == 11 and out == 4.0
    assert int(n.value) == 2
    np.testing.assert_array_equal(w.value, np.arange(2.0))


def test_jaxpr_call_wrong_number_of_states():
    f, _, _, _ = _counter()
    with pytest.raises(ValueError, match=r"(?s)wrong number of state values.*expected: 2 values.*found:    1 values"):
        StatefulFunction(f).jaxpr_call([jnp.zeros(())], jnp.ones(2))


def test_jaxpr_call_value_of_another_type_names_the_state():
    # Regression: a value with the wrong number of leaves used to fail with "foreach() argument 2 is longer
    # than argument 1", and one of the wrong shape deep inside a JAX primitive.
    f, _, w, n = _counter()
    sf = StatefulFunction(f)
    x = jnp.ones(2)
    for bad in ((w.value, w.value), jnp.ones(3), jnp.ones(2, jnp.int32)):
        with pytest.raises(ValueError, match=r"(?s)state_vals\[1\] of another type than state 'w'.*expected: f32\[2\]"):
            sf.jaxpr_call([n.value, bad], x)
    with pytest.raises(ValueError, match=r"(?s)state_vals\[0\] of another type than state 'n'.*found:    f32\[2\]"):
        sf.jaxpr_call([w.value, n.value], x)  # swapped
    new_values, out = sf.jaxpr_call(
        [5, np.arange(2.0, dtype=np.float32)], x
    )  # Python scalars and NumPy arrays are fine
    assert int(new_values[0]) == 6 and float(out) == 1.0


def test_return_only_write_false_outputs_every_state():
    f, _, w, n = _counter()
    sf = StatefulFunction(f, return_only_write=False)
    entry = sf.trace(jnp.ones(2))
    assert entry.out_states == (0, 1)
    new_values, _ = sf.jaxpr_call([n.value, w.value], jnp.ones(2))
    np.testing.assert_array_equal(new_values[1], w.value)


def test_get_out_shapes():
    sf = StatefulFunction(lambda x: {"a": x, "b": (x.sum(), x[:1].astype(jnp.int32))})
    shapes = sf.get_out_shapes(jnp.ones(3))
    assert shapes == {
        "a": jax.ShapeDtypeStruct((3,), jnp.float32),
        "b": (jax.ShapeDtypeStruct((), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.int32)),
    }


def test_make_jaxpr_inputs_and_outputs():
    s = sm.State(jnp.zeros(2), name="s")
    r = sm.State(jnp.ones(2), name="r")

    def f(x):
        s.value = s.value + x * r.value
        return x * 2

    jaxpr, states = make_jaxpr(f)(jnp.ones(2))
    assert states == (s, r)
    assert len(jaxpr.in_avals) == 3  # x, s, r
    assert len(jaxpr.out_avals) == 3  # result, s, r (every touched state by default)
    jaxpr, states, shape = make_jaxpr(f, return_shape=True, return_only_write=True)(jnp.ones(2))
    assert len(jaxpr.out_avals) == 2
    assert shape == jax.ShapeDtypeStruct((2,), jnp.float32)
    # The jaxpr is the pure function: parity with a hand-written reference.
    out = jax.extend.core.jaxpr_as_fun(jaxpr)(jnp.full(2, 3.0), jnp.ones(2), jnp.full(2, 2.0))
    np.testing.assert_array_equal(out[0], np.full(2, 6.0))
    np.testing.assert_array_equal(out[1], np.full(2, 7.0))
    np.testing.assert_array_equal(s.value, np.zeros(2))


def test_make_jaxpr_matches_jax_make_jaxpr_for_stateless():
    def f(x, y):
        return jnp.sin(x) * y

    ours, states = make_jaxpr(f)(jnp.ones(3), 2.0)
    ref = jax.make_jaxpr(f)(jnp.ones(3), 2.0)
    assert states == ()
    assert str(ours) == str(ref)


def test_make_jaxpr_static_argnums():
    def f(x, n):
        return x * n

    jaxpr, _ = make_jaxpr(f, static_argnums=1)(jnp.ones(2), 3)
    assert len(jaxpr.in_avals) == 1


def test_axis_env_allows_collectives():
    s = sm.State(jnp.zeros(()), name="s")

    def f(x):
        s.value = s.value + jax.lax.psum(x, "i")
        return x

    jaxpr, states = make_jaxpr(f, axis_env=[("i", 4)])(jnp.ones(()))
    assert states == (s,)
    assert "psum" in str(jaxpr)


def test_tracing_leaves_no_tracer_and_restores_states():
    f, _, w, n = _counter()
    StatefulFunction(f).get_jaxpr(jnp.ones(2))
    for s in (w, n):
        assert not isinstance(s.value, jax.core.Tracer)
    assert int(n.value) == 0


def test_error_while_tracing_restores_states():
    a = sm.State(jnp.zeros(2), name="a")
    b = sm.State(jnp.ones(2), name="b")

    def f(x):
        a.value = a.value + x
        b.value = b.value * 3
        raise ArithmeticError("in the body")

    with pytest.raises(ArithmeticError, match="in the body"):
        StatefulFunction(f).get_jaxpr(jnp.ones(2))
    for s, ref in ((a, np.zeros(2)), (b, np.ones(2))):
        assert not isinstance(s.value, jax.core.Tracer)
        np.testing.assert_array_equal(s.value, ref)


def test_states_created_inside_are_not_states_of_the_function():
    outer = sm.State(jnp.zeros(()), name="outer")

    def f(x):
        local = sm.State(x, name="local")
        local.value = local.value + 1
        outer.value = local.value
        return local.value

    assert StatefulFunction(f).get_states(jnp.ones(())) == (outer,)


def test_composes_with_an_enclosing_trace():
    f, _, w, n = _counter()
    sf = StatefulFunction(f)
    with sm.StateTrace() as t:
        sf(jnp.ones(2))
    assert t.states == [n, w]
    assert t.written == [True, False]
    assert int(n.value) == 0  # the write is the frame's until committed
    t.commit()
    assert int(n.value) == 1


# Errors.


def test_not_callable():
    with pytest.raises(TypeError, match="expects a callable, got int"):
        StatefulFunction(3)


def test_state_as_argument():
    s = sm.State(jnp.zeros(2), name="s")
    sf = StatefulFunction(lambda x: x, name="demo")
    with pytest.raises(sm.StateArgumentError, match=r"demo: argument .* is state 's' \(State, created at"):
        sf(s)
    with pytest.raises(sm.StateArgumentError, match="close|refer to the state inside the function"):
        sf({"a": [1.0, s]})


def test_returning_a_state():
    s = sm.State(jnp.zeros(2), name="s")
    with pytest.raises(sm.StateArgumentError, match=r"(?s)returned.*state 's'.*return `s.value`"):
        StatefulFunction(lambda: s)()


def test_returned_state_message_has_no_double_space():
    # Regression: the returned-State message must read "the function returned state 's'" (no empty key path
    # leaving a double space). FAILS until _make_jaxpr._check_no_state formats the top-level path; see report.
    s = sm.State(jnp.zeros(2), name="s")
    with pytest.raises(sm.StateArgumentError) as info:
        StatefulFunction(lambda: s)()
    assert "  is state" not in str(info.value)


def test_argument_errors_name_the_argument():
    # Messages must name the argument by position and key path, as JAX does (`args[0]['a'][1]`), not by its
    # flat leaf index.
    s = sm.State(jnp.zeros(2), name="s")
    sf = StatefulFunction(lambda x, y: x, name="demo")
    with pytest.raises(sm.StateArgumentError, match=r"demo: argument args\[1\]\['a'\]\[1\] is state 's'"):
        sf(jnp.ones(2), {"a": [1.0, s]})
    with pytest.raises(TypeError, match=r"demo: argument args\[1\] is not a valid JAX type"):
        sf(jnp.ones(2), "text")


def test_dead_state_created_inside_trace():
    made = []

    def f(x):
        made.append(sm.State(x * 2, name="inner"))
        return x

    StatefulFunction(f, name="probe").get_jaxpr(jnp.ones(2))
    with pytest.raises(sm.TraceContextError, match="state 'inner'.*created inside probe"):
        _ = made[0].value
