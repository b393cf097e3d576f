"""Tests for statemap/_state.py: State and its subclasses."""

import gc
import inspect
import os
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _mypy import mypy_lines

import statemap as sm
from statemap import _state


def _line() -> int:
    """Line number of the caller (to check creation sites)."""
    return inspect.currentframe().f_back.f_lineno


# Construction and metadata.


def test_value_name_and_metadata():
    s = sm.State(jnp.zeros(3), name="w", unit="mV")
    assert s.name == "w"
    assert s.unit == "mV"
    assert s.tag is None
    np.testing.assert_array_equal(s.value, np.zeros(3))
    s.name = "v"
    assert s.name == "v"


def test_pytree_value():
    s = sm.State({"a": jnp.ones(2), "b": (jnp.zeros(()), 3.0)})
    assert s.numel() == 4
    s.value = {"a": jnp.zeros(2), "b": (jnp.ones(()), 1.0)}
    assert s.value["b"][1] == 1.0


@pytest.mark.parametrize("tag, expected", [("fast", {"fast"}), ({"a", "b"}, {"a", "b"}), (["a"], {"a"})])
def test_tag_str_or_set(tag, expected):
    s = sm.State(0.0, tag=tag)
    assert s.tag == expected
    s.add_tag("extra")
    assert s.tag == expected | {"extra"}


def test_tag_must_be_str():
    with pytest.raises(TypeError, match="tags must be strings.*int"):
        sm.State(0.0, tag={1})
    with pytest.raises(TypeError, match="tags must be strings"):
        sm.State(0.0).add_tag(None)


def test_value_from_state_is_copied():
    a = sm.State(jnp.ones(2), name="a")
    b = sm.State(a)
    assert b is not a
    np.testing.assert_array_equal(b.value, a.value)
    b.value = jnp.zeros(2)
    np.testing.assert_array_equal(a.value, np.ones(2))


def test_subclass_hierarchy():
    assert issubclass(sm.ParamState, sm.LongTermState)
    assert issubclass(sm.LongTermState, sm.State)
    assert issubclass(sm.ShortTermState, sm.State)
    assert issubclass(sm.HiddenState, sm.ShortTermState)
    assert issubclass(sm.BatchState, sm.State)
    assert issubclass(sm.NonBatchState, sm.State)
    assert not issubclass(sm.ParamState, sm.ShortTermState)
    assert not issubclass(sm.HiddenState, sm.LongTermState)


@pytest.mark.parametrize(
    "cls",
    [
        sm.State,
        sm.ShortTermState,
        sm.LongTermState,
        sm.ParamState,
        sm.HiddenState,
        sm.BatchState,
        sm.NonBatchState,
    ],
)
def test_every_subclass_holds_an_array(cls):
    s = cls(jnp.arange(3.0), name="x")
    s.value = s.value + 1
    np.testing.assert_array_equal(s.value, np.arange(3.0) + 1)
    assert repr(s) == f"{cls.__name__}(name='x', value=f32[3])"


@pytest.mark.parametrize("bad", [{"a": jnp.zeros(2)}, [jnp.zeros(2)], 1.0, None, "x"])
def test_hidden_state_arrays_only(bad):
    with pytest.raises(TypeError, match="HiddenState: value must be a JAX or NumPy array"):
        sm.HiddenState(bad)
    h = sm.HiddenState(jnp.zeros(2))
    with pytest.raises(TypeError, match="HiddenState"):
        h.value = bad
    np.testing.assert_array_equal(h.value, np.zeros(2))


def test_hidden_state_accepts_numpy_and_varshape():
    h = sm.HiddenState(np.zeros((2, 3), np.float32))
    assert h.varshape == (2, 3)
    assert sm.HiddenState(np.float32(1.0)).varshape == ()


def test_hidden_state_written_inside_jit():
    h = sm.HiddenState(jnp.zeros(2), name="V")

    @sm.transform.jit
    def f(x):
        h.value = h.value + x
        return h.value

    f(jnp.ones(2))
    np.testing.assert_array_equal(h.value, np.ones(2))


# Repr and creation site.


def test_repr_names_class_name_shape_dtype():
    assert repr(sm.ParamState(jnp.zeros((2, 3)), name="w")) == "ParamState(name='w', value=f32[2,3])"
    assert repr(sm.State(jnp.zeros(2, jnp.int32))) == "State(value=i32[2])"
    assert repr(sm.State({"a": jnp.zeros(2), "b": jnp.ones((), jnp.bool_)})) == "State(value={f32[2], bool[]})"
    assert repr(sm.State(1.5)) == "State(value=float)"


def test_repr_never_prints_the_value():
    s = sm.State(jnp.full((3,), 123456.0), name="big")
    assert "123456" not in repr(s)


def test_repr_uses_path_when_unnamed():
    class M(sm.nn.Module):
        def __init__(self):
            self.w = sm.ParamState(jnp.zeros(2))

    assert repr(M().w) == "ParamState(path='w', value=f32[2])"


def test_creation_site_is_user_file_and_line():
    s, line = sm.State(0.0), _line()  # the state and the line number come from one source line
    assert s.source == f"{os.path.basename(__file__)}:{line}"


def test_creation_site_through_subclass_init():
    class MyState(sm.State):
        def __init__(self, v):
            super().__init__(v, name="mine")

    s, line = MyState(1.0), _line()
    # The site is the first frame outside the statemap package: here the subclass __init__ in this file.
    assert s.source.startswith(os.path.basename(__file__) + ":")
    assert int(s.source.split(":")[1]) <= line


def test_creation_site_of_random_state_is_user_code():
    rng, line = sm.random.RandomState(0), _line()
    assert rng.source == f"{os.path.basename(__file__)}:{line}"


# Identity, pytree and misuse.


def test_state_is_not_a_pytree():
    s = sm.State({"a": jnp.zeros(2)})
    assert jax.tree_util.tree_leaves(s) == [s]
    assert jax.tree_util.tree_leaves([s, 1.0]) == [s, 1.0]


def test_identity_hash_and_equality():
    a, b = sm.State(jnp.zeros(2)), sm.State(jnp.zeros(2))
    assert a == a and a != b
    assert len({a, b, a}) == 2


def test_state_is_not_iterable():
    s = sm.State(jnp.zeros(3), name="s")
    with pytest.raises(TypeError, match="state 's'.*not iterable"):
        list(s)


def test_assign_a_state_raises():
    a, b = sm.State(1.0, name="a"), sm.State(2.0, name="b")
    with pytest.raises(sm.StateArgumentError, match="state 'a'.*was assigned another State") as info:
        a.value = b
    assert "fix:" in str(info.value) and "b.value" in str(info.value)
    assert a.value == 1.0


def test_numel_and_copy():
    a = sm.ParamState({"x": jnp.zeros((2, 3)), "y": jnp.zeros(4)}, name="a", tag="p", unit="s")
    assert a.numel() == 10
    b = a.copy()
    assert type(b) is sm.ParamState and b is not a
    assert b.name == "a" and b.tag == {"p"} and b.unit == "s"
    b.value = {"x": jnp.ones((2, 3)), "y": jnp.ones(4)}
    np.testing.assert_array_equal(a.value["x"], np.zeros((2, 3)))


# Reads, writes and the trace stack.


def test_restore_value_is_silent():
    s = sm.State(jnp.zeros(2), name="s")
    with sm.StateTrace() as t:
        s.restore_value(jnp.ones(2))
    assert t.states == []
    np.testing.assert_array_equal(s.value, np.ones(2))


def test_restore_value_checks_structure():
    s = sm.State(jnp.zeros(2), name="s")
    with pytest.raises(sm.StateStructureError, match="state 's'"):
        s.restore_value({"a": jnp.zeros(2)})
    np.testing.assert_array_equal(s.value, np.zeros(2))


def test_reads_and_writes_recorded_in_active_traces():
    s = sm.State(jnp.zeros(2), name="s")
    with sm.StateTrace() as outer, sm.StateTrace() as inner:
        s.value = s.value + 1
    for t in (outer, inner):
        assert t.states == [s]
        assert t.written == [True] and t.read == [True]


def test_state_created_inside_a_trace_is_invisible_to_it():
    with sm.StateTrace() as outer:
        inner_state = sm.State(jnp.zeros(2))
        inner_state.value = inner_state.value + 1
        with sm.StateTrace() as inner:
            inner_state.value = inner_state.value + 1
        assert inner_state.stack_level == 1
    assert outer.states == []
    assert inner.states == [inner_state]
    assert inner_state.stack_level == 0  # its trace finished: later traces see it


def test_state_created_inside_jit_is_invisible_to_the_enclosing_trace():
    outer_state = sm.State(jnp.zeros(()), name="outer")

    @sm.transform.jit
    def f(x):
        local = sm.State(x, name="local")
        local.value = local.value * 2
        outer_state.value = outer_state.value + local.value
        return local.value

    np.testing.assert_array_equal(f(jnp.ones(())), 2.0)
    assert f.stateful.get_states(jnp.ones(())) == (outer_state,)
    assert outer_state.value == 2.0


def test_stack_level_setter_floors_at_zero():
    s = sm.State(0.0)
    s.stack_level = -3
    assert s.stack_level == 0
    s.stack_level = 2
    assert s.stack_level == 2


def test_structure_change_inside_transform_names_the_state():
    s = sm.State(jnp.zeros(2), name="s")

    @sm.transform.jit
    def f(x):
        s.value = {"a": x}
        return x

    with pytest.raises(sm.StateStructureError, match=r"State.value: state 's' \(State, created at test_state.py"):
        f(jnp.ones(2))
    np.testing.assert_array_equal(s.value, np.zeros(2))
    assert isinstance(s.value, jax.Array)


def test_structure_change_outside_transform_is_allowed():
    s = sm.State(jnp.zeros(2))
    s.value = {"a": jnp.zeros(3)}
    assert s.value["a"].shape == (3,)


def test_shape_change_inside_transform_is_allowed():
    s = sm.State(jnp.zeros(2), name="s")

    @sm.transform.jit
    def grow():
        s.value = jnp.concatenate([s.value, s.value])

    grow()
    assert s.value.shape == (4,)
    grow()
    assert s.value.shape == (8,)


def test_tracer_assigned_outside_statemap_raises():
    s = sm.State(jnp.zeros(2), name="leaky")

    def f(x):
        s.value = x
        return x

    with pytest.raises(sm.TraceContextError, match="state 'leaky'.*JAX tracer outside any statemap transform"):
        jax.jit(f)(jnp.ones(2))
    np.testing.assert_array_equal(s.value, np.zeros(2))


def test_dead_state_read_raises_then_recovers():
    holder = []

    @sm.transform.jit
    def f(x):
        local = sm.State(x, name="local")
        holder.append(local)
        return x + 1

    f(jnp.ones(2))
    (local,) = holder
    with pytest.raises(sm.TraceContextError, match="state 'local'.*created inside jit"):
        _ = local.value
    local.value = jnp.zeros(2)
    np.testing.assert_array_equal(local.value, np.zeros(2))


def test_state_created_inside_a_finished_transform_is_seen_later():
    # A state made (with a concrete value) inside one transform and kept: once that transform finished, later
    # transforms must thread it like any other state instead of leaking their tracers into it.
    holder = []

    @sm.transform.jit
    def make(x):
        holder.append(sm.State(np.zeros(2, np.float32), name="kept"))
        return x

    make(jnp.ones(2))
    (kept,) = holder
    assert kept.stack_level == 0

    @sm.transform.jit
    def use(x):
        kept.value = kept.value + x
        return kept.value

    np.testing.assert_array_equal(use(jnp.ones(2)), np.ones(2))
    assert isinstance(kept.value, jax.Array) and not isinstance(kept.value, jax.core.Tracer)
    np.testing.assert_array_equal(use(jnp.ones(2)), 2 * np.ones(2))
    np.testing.assert_array_equal(kept.value, 2 * np.ones(2))


def test_state_created_in_a_finished_inner_trace_is_seen_by_a_sibling():
    with sm.StateTrace() as outer:
        with sm.StateTrace():
            s = sm.State(jnp.zeros(2))
        assert s.stack_level == 1  # still invisible to `outer`, which was active at its creation
        with sm.StateTrace() as sibling:
            s.value = s.value + 1
    assert outer.states == []
    assert sibling.states == [s]


def test_copy_has_its_own_tags_and_level():
    a = sm.State(0.0, tag="x")
    with sm.StateTrace() as t:
        b = a.copy()
        b.add_tag("y")
        b.value = 1.0
    assert a.tag == {"x"} and b.tag == {"x", "y"}
    assert t.states == []


def test_write_back_refuses_tracers_outside_statemap_traces():
    s = sm.State(jnp.zeros(()), name="s")
    t = sm.State(jnp.zeros(()), name="t")

    def f(x):
        _state.write_back([t, s], {0: np.ones(()), 1: x}, "scan")
        return x

    with pytest.raises(sm.TraceContextError, match=r"scan: state 's'.*assigned a JAX tracer"):
        jax.jit(f)(1.0)
    assert float(t.value) == 0.0  # nothing was written: the check runs before any write


def test_write_back_and_read_values_from_many_threads():
    import threading

    states = [sm.State(jnp.zeros(()), name=f"s{i}") for i in range(4)]
    barrier = threading.Barrier(4)

    def writer(k):
        barrier.wait()
        for _ in range(200):
            _state.write_back(states, {i: jnp.full((), float(k)) for i in range(4)})
            values = _state.read_values(states)
            assert all(v.shape == () for v in values)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    final = {float(s.value) for s in states}
    assert len(final) == 1  # each write-back is atomic: the last one wins for every state


# replace, copy_from and the brainstate name of the trace.


def test_replace_makes_a_new_state_with_the_same_metadata():
    a = sm.ParamState(jnp.zeros(2), name="w", tag={"p", "q"}, unit="mV")
    b = a.replace(jnp.ones((3, 2)))
    assert type(b) is sm.ParamState and b is not a
    assert b.name == "w" and b.tag == {"p", "q"} and b.unit == "mV"
    assert b.tag is not a.tag
    np.testing.assert_array_equal(b.value, np.ones((3, 2)))
    np.testing.assert_array_equal(a.value, np.zeros(2))
    assert b.source.startswith("test_state.py:")


def test_replace_overrides_metadata_and_unwraps_a_state():
    a = sm.State(0.0, name="a", tag="x", unit="s")
    b = a.replace(sm.State(2.0), name="b", tag="y", unit="ms")
    assert (b.name, b.tag, b.unit, b.value) == ("b", {"y"}, "ms", 2.0)
    assert a.replace(1.0, tag=None).tag is None
    assert (a.name, a.tag, a.unit) == ("a", {"x"}, "s")


def test_replace_checks_the_value_of_the_subclass():
    h = sm.HiddenState(jnp.zeros(3), name="V")
    assert h.replace(jnp.ones(4)).varshape == (4,)
    with pytest.raises(TypeError, match="HiddenState: value must be a JAX or NumPy array"):
        h.replace({"a": 1.0})


def test_replace_is_a_new_state_for_catchers_and_generation():
    a = sm.State(0.0, name="a")
    before = _state.generation()
    with sm.catch_new_states() as catcher:
        b = a.replace(1.0)
    assert b in catcher and a not in catcher
    assert _state.generation() > before


def test_replace_inside_jit_is_local_to_the_trace():
    a = sm.State(jnp.zeros(2), name="a")

    @sm.transform.jit
    def f(x):
        b = a.replace(x)
        b.value = b.value + 1
        return b.value

    np.testing.assert_array_equal(f(jnp.ones(2)), np.full(2, 2.0))
    np.testing.assert_array_equal(a.value, np.zeros(2))


def test_copy_from_copies_the_value():
    a = sm.State({"w": jnp.zeros(2), "b": 0.0}, name="a")
    b = sm.State({"w": jnp.ones(3), "b": 1.0}, name="b")
    a.copy_from(b)
    np.testing.assert_array_equal(a.value["w"], np.ones(3))
    assert a.value["b"] == 1.0 and a.name == "a"
    b.value = {"w": jnp.zeros(3), "b": 2.0}
    np.testing.assert_array_equal(a.value["w"], np.ones(3))  # a copy of the value, not a link


def test_copy_from_structure_mismatch_names_both_states():
    a = sm.State({"w": jnp.zeros(2)}, name="a")
    c = sm.ParamState((jnp.zeros(2), jnp.zeros(2)), name="c")
    with pytest.raises(sm.StateStructureError) as info:
        a.copy_from(c)
    text = str(info.value)
    assert text.startswith("State.copy_from: state 'a' (State, created at test_state.py:")
    assert "state 'c' (ParamState, created at test_state.py:" in text
    assert "expected: structure PyTreeDef({'w': *})" in text and "fix:" in text
    np.testing.assert_array_equal(a.value["w"], np.zeros(2))


def test_copy_from_needs_a_state():
    a = sm.State(0.0, name="a")
    with pytest.raises(sm.StateArgumentError, match=r"State.copy_from: state 'a'[\s\S]*not a State"):
        a.copy_from(1.0)


def test_copy_from_inside_jit_is_a_read_and_a_write():
    a, b = sm.State(jnp.zeros(2), name="a"), sm.State(jnp.ones(2), name="b")

    @sm.transform.jit
    def f():
        b.value = b.value * 3
        a.copy_from(b)

    f()
    np.testing.assert_array_equal(a.value, np.full(2, 3.0))
    with sm.StateTrace() as t:
        a.copy_from(b)
    assert t.states == [b, a] and t.written == [False, True] and t.read == [True, False]


def test_state_trace_stack_is_the_trace():
    assert sm.StateTraceStack is sm.StateTrace
    s = sm.State(1.0, name="s")
    with sm.StateTraceStack() as t:
        s.value = s.value + 1
    assert t.states == [s] and t.written == [True]


# -- assigning values of another shape (State.value) -------------------------------------------------------------
def test_param_state_refuses_another_shape_outside_transforms_and_names_it():
    class MLP(sm.nn.Module):
        def __init__(self):
            self.w1 = sm.ParamState(jnp.ones((2, 32)))

    m = MLP()
    m.states()
    with pytest.raises(
        sm.StateStructureError, match=r"(?s)state 'w1' \(ParamState.*another shape.*f32\[2,32\].*f32\[1,32\]"
    ):
        m.w1.value = jnp.zeros((1, 32))
    assert m.w1.value.shape == (2, 32)  # unchanged
    with pytest.raises(sm.StateStructureError, match="another pytree structure"):
        m.w1.value = {"a": jnp.zeros((2, 32))}


class _Holder(sm.nn.Module):
    def __init__(self, **states):
        for k, v in states.items():
            setattr(self, k, v)


def test_param_state_may_change_dtype_and_be_resized_deliberately():
    m = _Holder(w=sm.ParamState(jnp.ones((2, 3)), name="w"), lazy=sm.ParamState(None))
    m.w.value = jnp.ones((2, 3), jnp.bfloat16)
    assert m.w.value.dtype == jnp.bfloat16
    m.w.restore_value(jnp.zeros((4, 3)))
    assert m.w.value.shape == (4, 3)
    m.lazy.value = jnp.ones(5)  # no leaves yet: takes any value
    assert m.lazy.value.shape == (5,)


def test_free_standing_param_state_may_change_shape():
    w = sm.ParamState(jnp.ones(2), name="w")  # no module: the caller manages its shape
    w.value = jnp.ones(3)
    assert w.value.shape == (3,)


def test_other_states_may_change_shape_outside_transforms():
    h = sm.HiddenState(jnp.zeros((2, 3)))
    h.value = jnp.zeros((8, 3))  # a reset_state for a new batch size
    s = sm.ShortTermState(0.0)
    s.value = {"a": jnp.ones(2)}
    assert h.value.shape == (8, 3) and s.value["a"].shape == (2,)


def test_param_state_resized_inside_a_transform_is_still_allowed():
    w = _Holder(w=sm.ParamState(jnp.ones(2), name="w")).w

    @sm.transform.jit
    def grow():
        w.value = jnp.concatenate([w.value, w.value])

    grow()
    assert w.value.shape == (4,)


def test_creation_site_of_a_state_made_at_import_is_the_library_line():
    filename, line = sm.random.DEFAULT._site
    assert filename.replace(os.sep, "/").endswith("statemap/random/_rng.py") and line > 0
    assert sm.random.DEFAULT.source.startswith("_rng.py:")
    assert "importlib" not in sm.random.DEFAULT.source
    assert sm.State(0.0).source.startswith("test_state.py:")  # user states still point at the user's line


def test_explain_shows_the_library_line_for_random_default():
    f = sm.transform.vmap2(lambda x: x + sm.random.normal(size=()))
    (row,) = f.explain(jnp.ones(3)).rows
    assert row["state"] == "'random.DEFAULT'" and row["created"].startswith("_rng.py:")


def test_state_is_generic_in_its_value_type():
    assert sm.State[jax.Array] is not sm.State  # subscriptable at run time, for annotations
    w: sm.ParamState[jax.Array] = sm.ParamState(jnp.zeros(2))
    assert isinstance(w, sm.ParamState) and w.value.shape == (2,)


def test_mypy_strict_sees_the_value_type(tmp_path):
    lines, status, output = mypy_lines(
        tmp_path,
        """
        import jax
        import jax.numpy as jnp
        import statemap as sm

        w = sm.ParamState(jnp.zeros(3))
        reveal_type(w.value)
        h: sm.State[jax.Array] = sm.HiddenState(jnp.zeros(2))
        reveal_type(sm.State({"a": 1.0}).value)
        reveal_type(sm.random.RandomState(0).value)
        def untyped(s: sm.State) -> None:  # a bare State is State[Any]
            s.value = "anything"
        bad: sm.State[int] = sm.State("x")
        """,
    )
    assert lines == [
        'note: Revealed type is "jax._src.basearray.Array"',
        'note: Revealed type is "dict[str, float]"',
        'note: Revealed type is "jax._src.basearray.Array"',
        'error: Argument 1 to "State" has incompatible type "str"; expected "int"  [arg-type]',
    ], output
    assert status == 1


def test_caller_reads_calls_and_commits():
    a, b = sm.State(jnp.zeros(2), name="a"), sm.State(jnp.ones(2), name="b")
    refs = [weakref.ref(a), weakref.ref(b)]

    def fn(va, vb, x):
        return va.sum() + x, va + x, None  # writes a, not b

    assert float(_state.caller(refs, fn, "test")((1.0,))) == 1.0
    np.testing.assert_array_equal(a.value, [1.0, 1.0])
    np.testing.assert_array_equal(b.value, [1.0, 1.0])
    assert float(_state.caller(refs[:1], lambda v, x: (x, None), "test")((3.0,))) == 3.0
    assert _state.caller([], lambda x: (x * 2,), "test")((2.0,)) == 4.0
    del b
    gc.collect()
    assert _state.caller(refs, fn, "test")((1.0,)) is _state.MISSING  # a dead state: nothing called
    assert _state.caller([weakref.ref(sm.State(0.0))], fn, "test")((1.0,)) is _state.MISSING
    np.testing.assert_array_equal(a.value, [1.0, 1.0])

    def boom(va, x):
        raise ValueError("user error")

    with pytest.raises(ValueError, match="user error"):
        _state.caller(refs[:1], boom, "test")((1.0,))
    np.testing.assert_array_equal(a.value, [1.0, 1.0])  # nothing written
