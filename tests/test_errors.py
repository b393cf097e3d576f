"""Tests for statemap/_errors.py: the error hierarchy and message builders."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statemap as sm
from statemap import _errors
from statemap._errors import describe_state, message, short_aval, tree_aval


@pytest.mark.parametrize(
    "cls, bases",
    [
        (sm.BatchAxisError, (ValueError,)),
        (sm.TraceContextError, (RuntimeError,)),
        (sm.StateArgumentError, (TypeError, _errors.ArgumentError)),
        (_errors.ArgumentError, (TypeError, ValueError)),
        (sm.StateStructureError, (ValueError,)),
        (sm.MappingRuntimeError, (RuntimeError,)),
    ],
)
def test_hierarchy(cls, bases):
    assert issubclass(cls, sm.StatemapError)
    for base in bases:
        assert issubclass(cls, base)
    with pytest.raises(sm.StatemapError):
        raise cls("x")


def test_every_listed_error_is_a_statemap_error():
    for name in _errors.__all__:
        cls = getattr(_errors, name)
        assert issubclass(cls, sm.StatemapError), name
        assert cls.__doc__ and ">>>" in cls.__doc__, name


def test_batch_axis_error_caught_as_value_error():
    with pytest.raises(ValueError, match="axis"):
        raise sm.BatchAxisError("vmap2: bad axis")


def test_message_layout():
    text = message("vmap2", "state 'w' was written per lane", "a declared axis", "f32[8]", "declare it")
    assert text == (
        "vmap2: state 'w' was written per lane\n  expected: a declared axis\n  found:    f32[8]\n  fix:      declare it"
    )


def test_describe_state_name_path_and_site():
    s = sm.ParamState(jnp.zeros(2), name="w")
    assert describe_state(s) == f"state 'w' (ParamState, created at {s.source})"
    assert s.source.startswith("test_errors.py:")

    class M(sm.nn.Module):
        def __init__(self):
            self.layers = [sm.State(0.0)]

    m = M()
    assert describe_state(m.layers[0]).startswith("state 'layers.0' (State, created at test_errors.py:")
    assert describe_state(sm.State(0.0)).startswith("state <unnamed> (State, created at ")


def test_describe_state_never_prints_the_value():
    s = sm.State(jnp.full(3, 98765.0), name="big")
    assert "98765" not in describe_state(s)


@pytest.mark.parametrize(
    "x, text",
    [
        (jnp.zeros((8, 16)), "f32[8,16]"),
        (jnp.zeros((), jnp.int32), "i32[]"),
        (np.zeros(2, np.uint8), "u8[2]"),
        (jnp.zeros(3, jnp.bfloat16), "bf16[3]"),
        (jnp.zeros(1, jnp.bool_), "bool[1]"),
        (jnp.zeros(2, jnp.complex64), "c64[2]"),
        (jax.random.key(0), "key[]"),
        (jax.random.split(jax.random.key(0), 3), "key[3]"),
        (1.5, "float"),
        ("s", "str"),
        (jax.ShapeDtypeStruct((2,), jnp.float32), "f32[2]"),
    ],
)
def test_short_aval(x, text):
    assert short_aval(x) == text


def test_tree_aval():
    assert tree_aval(jnp.zeros(2)) == "f32[2]"
    assert tree_aval({"a": jnp.zeros(2), "b": (1.0, jnp.zeros((), jnp.int32))}) == "{f32[2], float, i32[]}"
    assert tree_aval(None) == "{}"


def test_errors_carry_fix_lines():
    s = sm.State(jnp.zeros(2), name="s")
    with pytest.raises(sm.StateArgumentError) as info:
        s.value = sm.State(1.0)
    text = str(info.value)
    for part in ("State.value: state 's'", "\n  expected: ", "\n  found:    ", "\n  fix:      "):
        assert part in text


def test_policy_warnings_point_at_the_users_line():
    import inspect
    import warnings

    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    s = sm.ShortTermState(jnp.zeros(()), name="s")

    def f(x):
        s.value = s.value + x.sum()
        return x

    mesh = Mesh(np.array(jax.devices()[:1]), ("d",))
    for make in (
        lambda: sm.transform.vmap2(f, unexpected_out_state_mapping="warn"),
        lambda: sm.transform.shard_map(f, mesh, P("d"), P("d"), unexpected_out_state_mapping="warn"),
    ):
        mapped = make()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            line = inspect.currentframe().f_lineno + 1
            mapped(jnp.ones(3))
        assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)], [str(w.message) for w in caught]
