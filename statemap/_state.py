"""`State` and its subclasses: mutable boxes around pytrees that statemap transforms thread through JAX.

A function closes over states and reads/writes ``.value``. Reads and writes are reported to every statemap
trace entered after the state was created, which is how transforms discover a function's state.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Self

import jax
import numpy as np

from . import _trace
from ._errors import (
    StateArgumentError,
    StateStructureError,
    TraceContextError,
    describe_state,
    is_library_module,
    message,
)
from ._errors import tree_aval as _tree_aval

if TYPE_CHECKING:  # a default keeps a bare `State` meaning `State[Any]` (PEP 696); Python 3.11's TypeVar has none
    from typing_extensions import TypeVar

    T = TypeVar("T", default=Any)
else:
    from typing import TypeVar

    T = TypeVar("T")

__all__ = [
    "State",
    "ShortTermState",
    "LongTermState",
    "ParamState",
    "HiddenState",
    "BatchState",
    "NonBatchState",
]

_CONTEXT = _trace.CONTEXT
_ACTIVE = _trace.ACTIVE  # statemap traces in all threads (`dispatched_call` reads the thread-local stack only then)

# The generation of the world of states: bumped when a state is created outside any statemap trace, or bound to
# a module attribute (`Module.__setattr__`, e.g. by `init_state()`). Every cache of a traced function stamps
# what it found with the generation it saw and checks it before reuse (one integer comparison); on a mismatch
# it traces again and keeps its compiled code when the function still touches the same states
# (ARCHITECTURE.md, "Cache validity"). A list, so that readers always see the current number.
_GENERATION = [0]


def generation() -> int:
    """The current generation of states (see `_GENERATION`)."""
    return _GENERATION[0]


def new_generation() -> None:
    """Start a new generation: cached traces are checked again before their next use."""
    _GENERATION[0] += 1


def _creation_site() -> tuple[str, int]:
    """(filename, line) of the first frame outside the library: where the user created the state.

    A state the library creates while one of its modules is imported (``random.DEFAULT``) has no user frame:
    the walk would reach importlib's frames, so the site is the library module's own line instead
    (tests/test_state.py::test_creation_site_of_a_state_made_at_import_is_the_library_line).
    """
    frame: Any = sys._getframe(2)
    last_library: Any = None
    while frame is not None and (
        not frame.f_code.co_filename.startswith(("<doctest", "<string>", "<stdin>"))
        and is_library_module(frame.f_globals.get("__name__", ""))
    ):
        if frame.f_globals.get("__name__", "").startswith("statemap."):
            last_library = frame
        frame = frame.f_back
    if frame is not None and last_library is not None and frame.f_globals.get("__name__", "").startswith("importlib"):
        frame = last_library
    if frame is None:
        return ("<unknown>", 0)
    return (frame.f_code.co_filename, frame.f_lineno)


class State(Generic[T]):
    """A mutable box around a pytree of arrays that statemap transforms read and write by tracing.

    Args:
      value: A pytree of arrays (or scalars). Not a `State`.
      name: Optional name used in error messages and reprs.
      **metadata: ``tag=`` (a str or a set of str) for `WithTag` filters; any other keyword becomes an
        attribute.

    `State` is generic in its value type, so annotations can say what a state holds and a type checker
    infers it: ``sm.ParamState(jnp.zeros(3)).value`` is a ``jax.Array``; a bare ``State`` means
    ``State[Any]``.

    Examples:
      >>> w = sm.State(jnp.zeros(3), name="w", tag="param")
      >>> w
      State(name='w', value=f32[3])
      >>> w.value = w.value + 1
      >>> w.value
      Array([1., 1., 1.], dtype=float32)
      >>> w.tag
      {'param'}
      >>> h: sm.State[jax.Array] = sm.HiddenState(jnp.zeros(2))  # annotate the value type
    """

    def __init__(self, value: T, name: str | None = None, **metadata: Any) -> None:
        if isinstance(value, State):
            value = value.value
        tag = metadata.pop("tag", None)
        self._value = self._check_value(value)
        self._name = name
        self._tag: set[str] | None = None
        if tag is not None:
            for t in [tag] if isinstance(tag, str) else tag:
                self.add_tag(t)
        self._place(len(_CONTEXT.stack))
        self._site = _creation_site()
        self._path: tuple[Any, ...] = ()
        self._dead: str | None = None
        for key, val in metadata.items():
            setattr(self, key, val)
        for catcher in _CONTEXT.catchers:
            catcher.add(self)
        if not _CONTEXT.stack:  # a state made inside a trace is local to it unless bound to a module
            new_generation()

    # -- identity -------------------------------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        """The state's name (or None)."""
        return self._name

    @name.setter
    def name(self, name: str | None) -> None:
        self._name = name

    @property
    def tag(self) -> set[str] | None:
        """The set of tags, or None when the state has none."""
        return self._tag

    def add_tag(self, tag: str) -> None:
        """Add one tag (used by `WithTag` filters)."""
        if not isinstance(tag, str):
            raise TypeError(f"State tags must be strings, got {type(tag).__name__}: {tag!r}")
        if self._tag is None:
            self._tag = set()
        self._tag.add(tag)

    @property
    def path(self) -> tuple[Any, ...]:
        """Path of the state inside the `statemap.nn.Module` owning it, e.g. ``('layers', 0, 'weight')``."""
        return self._path

    @property
    def source(self) -> str:
        """``file.py:line`` where the state was created."""
        return f"{os.path.basename(self._site[0])}:{self._site[1]}"

    @property
    def stack_level(self) -> int:
        """Number of enclosing statemap traces this state is invisible to (those active at its creation)."""
        return self._visible_level(_CONTEXT.stack)

    @stack_level.setter
    def stack_level(self, level: int) -> None:
        self._place(max(0, int(level)))

    def _place(self, level: int) -> None:
        # Remember which traces were active at this level (their serials), so that once the trace the state
        # was created in finishes, the state becomes visible to every trace entered since (`_relevel`).
        stack = _CONTEXT.stack
        self._level = level
        if level <= len(stack):
            self._serials: tuple[int, ...] = tuple(t.serial for t in stack[:level])
            self._owner = self._serials[-1] if level else 0
        else:  # a level set by hand above the current stack: keep it as given
            self._serials = ()
            self._owner = -1

    def _relevel(self, stack: list[Any]) -> int:
        """The trace this state was created in has finished: lower its level to the traces still shared.

        Without this, a state created inside one transform (with a concrete value) and used in a later,
        unrelated transform would be invisible to it, and its writes would leak tracers
        (tests/test_state.py::test_state_created_inside_a_finished_transform_is_seen_later).
        """
        if self._owner < 0:
            return self._level
        k = 0
        for trace, serial in zip(stack, self._serials, strict=False):
            if trace.serial != serial:
                break
            k += 1
        self._place(k)
        return k

    def _label(self) -> str:
        if self._name is not None:
            return repr(self._name)
        if self._path:
            return repr(".".join(str(p) for p in self._path))
        return "<unnamed>"

    # -- value ----------------------------------------------------------------------------------------------
    # Whether an assignment outside every transform must keep the structure and leaf shapes (see `value`).
    _fixed_shapes = False

    def _check_value(self, value: Any) -> Any:
        return value

    def _check_same_shapes(self, current: Any, value: Any) -> None:
        """Refuse `value` if its structure or a leaf shape differs from `current` (unless `current` has no leaves)."""
        old_leaves, old_def_ = jax.tree_util.tree_flatten(current)
        old_def: Any = old_def_
        if not old_leaves:
            return
        new_leaves, new_def = jax.tree_util.tree_flatten(value)
        if old_def == new_def and all(np.shape(a) == np.shape(b) for a, b in zip(old_leaves, new_leaves, strict=False)):
            return
        raise StateStructureError(
            message(
                "State.value",
                f"{describe_state(self)} was assigned a value of another "
                f"{'shape' if old_def == new_def else 'pytree structure'} outside any transform",
                f"{_tree_aval(current)} (a parameter keeps its shapes; its dtype may change)",
                _tree_aval(value),
                "assign a value of the same shape, or resize the parameter deliberately with "
                "`state.restore_value(new_value)` (transforms using it then trace again)",
            )
        )

    def _visible_level(self, stack: list[_trace.StateTrace]) -> int:
        """Number of frames at the bottom of this thread's stack that do not see this state."""
        level = self._level
        if level and (len(stack) < level or stack[level - 1].serial != self._owner):
            level = self._relevel(stack)
        return level

    @property
    def value(self) -> T:
        """The current value (this trace's view of it inside a transform). Reading it records a read.

        Assigning records a write. Inside a transform the new value must keep the pytree structure (leaf
        shapes and dtypes may change: the transform traces its outputs). Outside every transform any value is
        accepted, so that eager code can resize a state (``h.value = jnp.zeros((batch, n))`` in a
        ``reset_state``) and cached transforms trace again for the new shapes, with one exception: a
        `ParamState` held by a `statemap.nn.Module` (one with a `path`) keeps its structure and leaf shapes.
        Its shapes are part of the model's architecture (the module's constructor chose them, state dicts and
        checkpoints rely on them), so another shape is nearly always a mistake that would otherwise surface
        later as a JAX shape error inside the model, naming no state. Its dtype may change (a cast to
        ``bfloat16``), and a parameter without array leaves (``None``, not yet initialised) takes any value.
        Resize such a parameter deliberately with `restore_value`. A free-standing `ParamState` (no module)
        is a box the caller manages, and may change shape like any state.

        Raises:
          StateArgumentError: the value is a `State`.
          StateStructureError: a write inside a transform changes the pytree structure, or a write outside
            every transform changes the structure or a leaf shape of a `ParamState` held by a module.
          TraceContextError: a JAX tracer is assigned outside every statemap transform.

        Examples:
          >>> class Linear(sm.nn.Module):
          ...     def __init__(self):
          ...         self.w = sm.ParamState(jnp.zeros((2, 3)))
          >>> lin = Linear()
          >>> lin.w.value = jnp.ones((2, 3), dtype=jnp.bfloat16)  # same shape: fine, the dtype may change
          >>> lin.w.value = jnp.zeros((1, 3))
          Traceback (most recent call last):
          ...
          statemap._errors.StateStructureError: State.value: state 'w' (ParamState, ...) was assigned a value of ...
          >>> lin.w.restore_value(jnp.zeros((1, 3))); lin.w.value.shape  # a deliberate resize
          (1, 3)
          >>> h = sm.HiddenState(jnp.zeros((2, 3)))
          >>> h.value = jnp.zeros((5, 3)); h.value.shape  # other states may change shape outside transforms
          (5, 3)
        """
        if self._dead is not None:
            self._raise_dead()
        stack = _CONTEXT.stack
        level = self._visible_level(stack)
        value: T = self._value
        for trace in stack[level:]:
            value = trace.values[trace.touch(self, value, False)]
        return value

    @value.setter
    def value(self, value: T) -> None:
        if isinstance(value, State):
            raise StateArgumentError(
                message(
                    "State.value",
                    f"{describe_state(self)} was assigned another State",
                    "a pytree of arrays",
                    f"{type(value).__name__} {value._label()}",
                    "assign its value instead: `a.value = b.value`",
                )
            )
        stack = _CONTEXT.stack
        level = self._visible_level(stack)
        if len(stack) > level:
            _check_traceable_write(self, value, stack[level:])
            current = self._value
            for trace in stack[level:]:
                i = trace.touch(self, current, True)
                current = trace.values[i]
            self._check_structure(current, value)
            trace.values[i] = self._check_value(value)
            return
        if level == 0:
            self._check_no_tracer(value)
        value = self._check_value(value)
        if self._fixed_shapes and self._path and self._dead is None:
            self._check_same_shapes(self._value, value)
        self._value = value
        self._dead = None

    def restore_value(self, value: T) -> None:
        """Set the value silently: no read or write is recorded (inside a trace, its view is set).

        Examples:
          >>> s = sm.State(jnp.zeros(2))
          >>> s.restore_value(jnp.ones(2)); s.value
          Array([1., 1.], dtype=float32)
        """
        stack = _CONTEXT.stack
        for trace in reversed(stack[self._visible_level(stack) :]):
            i = trace.index(self)
            if i is not None:
                self._check_structure(trace.values[i], value)
                trace.values[i] = value
                return
        self._check_structure(self._value, value)
        self._value = value
        self._dead = None

    def _check_structure(self, current: Any, value: Any) -> None:
        old: Any = jax.tree_util.tree_structure(current)
        new: Any = jax.tree_util.tree_structure(value)
        if old != new:
            raise StateStructureError(
                message(
                    "State.value",
                    f"{describe_state(self)} was written, inside a transform, with a value of another pytree structure",
                    f"structure {old}",
                    f"structure {new}",
                    "keep the structure fixed inside transforms (write arrays of any shape into the same "
                    "containers), or assign the new structure outside the transform",
                )
            )

    def _check_no_tracer(self, value: Any, who: str = "State.value") -> None:
        for leaf in jax.tree_util.tree_leaves(value):
            if isinstance(leaf, jax.core.Tracer):
                raise TraceContextError(
                    message(
                        who,
                        f"{describe_state(self)} was assigned a JAX tracer outside any statemap transform",
                        "concrete arrays (or a write inside a statemap transform)",
                        f"a tracer {_tree_aval(value)}; this usually means a plain jax.jit/jax.vmap/"
                        "jax.grad traced a function that writes states",
                        "use statemap.transform.jit / grad / scan / vmap2, which thread states through",
                    )
                )

    def _raise_dead(self) -> None:
        raise TraceContextError(
            message(
                "State.value",
                f"{describe_state(self)} was created inside {self._dead} and still holds one of its tracers",
                "a state created inside a transform to be used only inside it",
                "a read after that transform finished",
                "create the state outside the transform (and write it inside), or give it a concrete value "
                "before reading it again",
            )
        )

    # -- conveniences ---------------------------------------------------------------------------------------
    def numel(self) -> int:
        """Total number of array elements in the value.

        Examples:
          >>> sm.State({"a": jnp.zeros((2, 3)), "b": jnp.zeros(4)}).numel()
          10
        """
        return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(self._value)))

    def copy(self) -> Self:
        """A new state of the same type with the same value and metadata (not the same identity).

        Examples:
          >>> a = sm.ParamState(jnp.ones(2), name="a"); b = a.copy()
          >>> b is a, type(b).__name__, b.name
          (False, 'ParamState', 'a')
        """
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._site = _creation_site()
        new._tag = None if self._tag is None else set(self._tag)
        new._place(len(_CONTEXT.stack))
        return new

    def replace(self, value: Any, **metadata: Any) -> State[Any]:
        """A new state of the same type, name, tags and metadata holding `value`; this state is unchanged.

        As `copy` (a new identity: transforms see two states), but created with `value` like ``State(value)``: it
        counts as a new state for `catch_new_states` and for cached traces, and a subclass checks the value
        (`HiddenState` takes arrays only). Use ``state.value = value`` to change the state itself.

        Args:
          value: The new state's value (a `State` gives its value).
          **metadata: Changes to the copied metadata: ``name=``, ``tag=`` (replaces the tags), or any other
            attribute.
        Returns:
          The new state.

        Examples:
          >>> a = sm.ParamState(jnp.zeros(2), name="w", tag="fast")
          >>> b = a.replace(jnp.ones(3))
          >>> b, b.tag, a
          (ParamState(name='w', value=f32[3]), {'fast'}, ParamState(name='w', value=f32[2]))
          >>> a.replace(1.0, name="v").name
          'v'
        """
        if isinstance(value, State):
            value = value.value
        new = self.copy()
        new._value = new._check_value(value)
        new._dead = None
        if "name" in metadata:
            new._name = metadata.pop("name")
        if "tag" in metadata:
            tag = metadata.pop("tag")
            new._tag = None
            if tag is not None:
                for t in [tag] if isinstance(tag, str) else tag:
                    new.add_tag(t)
        for key, val in metadata.items():
            setattr(new, key, val)
        for catcher in _CONTEXT.catchers:
            catcher.add(new)
        if not _CONTEXT.stack:
            new_generation()
        return new

    def copy_from(self, other: State[T]) -> None:
        """Write the value of state `other` into this state (a read of `other`, a write of this state).

        The two values must have the same pytree structure (the same containers and number of leaves); leaf
        shapes and dtypes may differ, as for any write (but see `value` for a `ParamState`). Inside a transform
        this is recorded like ``self.value = other.value``.

        Raises:
          StateArgumentError: `other` is not a `State`.
          StateStructureError: the values' pytree structures differ; this state is unchanged.

        Examples:
          >>> a, b = sm.State(jnp.zeros(2), name="a"), sm.State(jnp.ones(2), name="b")
          >>> a.copy_from(b); a.value
          Array([1., 1.], dtype=float32)
          >>> a.copy_from(sm.State({"x": 1.0}, name="c"))
          Traceback (most recent call last):
          ...
          statemap._errors.StateStructureError: State.copy_from: state 'a' (State, ...) cannot take the value of ...
        """
        if not isinstance(other, State):
            raise StateArgumentError(
                message(
                    "State.copy_from",
                    f"{describe_state(self)} was asked to copy from a {type(other).__name__}, not a State",
                    "a State",
                    f"{type(other).__name__} {other!r:.60}",
                    "pass the state itself, or assign a value with `state.value = value`",
                )
            )
        value = other.value
        old: Any = jax.tree_util.tree_structure(value if self._dead is not None else peek(self))
        new: Any = jax.tree_util.tree_structure(value)
        if old != new:
            raise StateStructureError(
                message(
                    "State.copy_from",
                    f"{describe_state(self)} cannot take the value of {describe_state(other)}: their pytree "
                    "structures differ",
                    f"structure {old} (that of the target state)",
                    f"structure {new} (that of the source state)",
                    "copy between states of the same structure, or assign the value with `state.value = ...`",
                )
            )
        self.value = value

    def __repr__(self) -> str:
        parts = []
        if self._name is not None:
            parts.append(f"name={self._name!r}")
        elif self._path:
            parts.append(f"path={'.'.join(str(p) for p in self._path)!r}")
        parts.append(f"value={_tree_aval(self._value)}")
        return f"{type(self).__name__}({', '.join(parts)})"

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def __iter__(self) -> Any:  # a State is not iterable; prevents silent iteration over the box
        raise TypeError(f"{describe_state(self)} is not iterable; iterate over its .value")


class ShortTermState(State[T]):
    """State for transient values (hidden variables, counters).

    Examples:
      >>> sm.ShortTermState(jnp.zeros(2), name="v")
      ShortTermState(name='v', value=f32[2])
    """


class LongTermState(State[T]):
    """State for persistent values (running statistics, parameters).

    Examples:
      >>> sm.LongTermState(0.0, name="mean").value
      0.0
    """


class ParamState(LongTermState[T]):
    """A trainable parameter. In a module, assigning it another shape outside transforms raises (see `value`).

    Examples:
      >>> isinstance(sm.ParamState(jnp.ones(3)), sm.LongTermState)
      True
    """

    _fixed_shapes = True


class BatchState(LongTermState[T]):
    """Marker for a state whose leading axis is a batch axis.

    Examples:
      >>> sm.BatchState(jnp.zeros((4, 2)), name="x")
      BatchState(name='x', value=f32[4,2])
    """


class NonBatchState(ShortTermState[T]):
    """A state that is replicated (not given an ensemble axis) when created during ensemble creation.

    Examples:
      >>> sm.NonBatchState(jnp.array(0), name="t")
      NonBatchState(name='t', value=i32[])
    """


class HiddenState(ShortTermState[T]):
    """Hidden variable of a dynamical system; its value must be an array (not a general pytree).

    Examples:
      >>> sm.HiddenState(jnp.zeros(4), name="V")
      HiddenState(name='V', value=f32[4])
      >>> sm.HiddenState({"a": 1.0})
      Traceback (most recent call last):
      ...
      TypeError: HiddenState: value must be a JAX or NumPy array, got dict
    """

    def _check_value(self, value: Any) -> Any:
        if not isinstance(value, (np.ndarray, jax.Array, np.generic)):
            raise TypeError(f"HiddenState: value must be a JAX or NumPy array, got {type(value).__name__}")
        return value

    @property
    def varshape(self) -> tuple[int, ...]:
        """Shape of the hidden variable."""
        return tuple(self._value.shape)


# -- values a trace can hold ---------------------------------------------------------------------------------
def non_array_leaf(value: Any) -> tuple[str, Any] | None:
    """(key path, leaf) of the first leaf of `value` that is not a JAX type (an array or a scalar), or None."""
    if all(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(value)):
        return None
    for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
        if isinstance(leaf, jax.Array):
            continue
        try:
            jax.typeof(leaf)
        except TypeError:
            return jax.tree_util.keystr(path), leaf
    return None


def non_array_message(state: State, bad: tuple[str, Any], who: str, problem: str) -> str:
    """The message for a state whose value has the non-JAX leaf `bad` (see `non_array_leaf`)."""
    path, leaf = bad
    where = f" at {path}" if path else ""
    return message(
        who,
        f"{describe_state(state)} {problem}",
        "arrays or pytrees of arrays (JAX or NumPy arrays of numeric dtype, Python scalars)",
        f"a leaf of type {type(leaf).__name__}{where}",
        "give the state an array value (e.g. `jnp.asarray(...)`); keep non-array data (strings, objects) "
        "out of states, e.g. as a plain attribute or a static argument",
    )


def _check_traceable_write(state: State, value: Any, frames: Sequence[_trace.StateTrace]) -> None:
    """Refuse a write of a non-JAX value inside a tracing frame (one with a hook), naming the state.

    Hook-less frames (the Python paths of loops, `map` and concrete `cond`) run eagerly, where any value is
    accepted; their writes reach a tracing frame around them, if any, through this check at commit.
    """
    tracing = [f for f in frames if f.hook is not None]
    if not tracing:
        return
    bad = non_array_leaf(value)
    if bad is not None:
        who = tracing[-1].name or "State.value"
        raise StateArgumentError(non_array_message(state, bad, who, f"was assigned a non-array value inside {who}"))


# -- the value protocol of transforms ---------------------------------------------------------------------------
# Transforms read and write states only through these functions: they are the one place (besides the `value`
# property) that knows where a value lives (a trace frame's view, or the committed value) and how a write-back
# is made atomic for other threads.
_WRITE_LOCK = threading.Lock()
# Write-backs of several states so far, counted twice each (odd while one runs, under `_WRITE_LOCK`): a reader of
# several states that sees it change reads again under the lock, so it never sees half of a write-back.
_WRITES = [0]


def _dead(state: State) -> Any:
    state._raise_dead()


def peek(state: State) -> Any:
    """The value of `state` as this thread sees it now, recording nothing (the innermost view that has it)."""
    stack = _CONTEXT.stack
    for trace in reversed(stack[state._visible_level(stack) :]):
        i = trace.index(state)
        if i is not None:
            return trace.values[i]
    if state._dead is not None:
        state._raise_dead()
    return state._value


def read_values(states: Sequence[State]) -> list[Any]:
    """Current values of `states`, recording the reads in the enclosing traces (if any)."""
    if _CONTEXT.stack:
        return [s.value for s in states]
    seen = _WRITES[0]
    values = [s._value if s._dead is None else _dead(s) for s in states]
    if len(states) > 1 and (seen & 1 or _WRITES[0] != seen):  # a write-back ran meanwhile: read it whole
        with _WRITE_LOCK:
            values = [s._value if s._dead is None else _dead(s) for s in states]
    return values


MISSING = object()  # `caller`: a state could not be read; nothing was called
# The type of a concrete `jax.Array`. A new value of another type (a pytree, a tracer of a plain JAX transform
# around the call) is committed through `write_back`'s tracer check instead of the one-assignment fast commit.
_CONCRETE = type(jax.numpy.zeros(()))


Call = Callable[..., Any]  # ``call(args, fn=...)``, made by `caller`


def caller(refs: Sequence[Any], default: Callable[..., Sequence[Any]], who: str) -> Call:
    """``call(args, fn=default)``: ``fn(*values, *args)`` over these weakly referenced states, committing its
    new values.

    A dispatcher's fast path in one call, made once per known list: its retry loop uses it, and so does
    `dispatched_call` for lists of other than one state (it inlines that case). `fn` returns
    ``(result, *new)``, one entry per state (None where it writes nothing); ``call`` returns ``result``.
    Outside every trace only: a new value holding a tracer of a plain JAX transform around the call raises,
    naming the state (`who` is the transform). It returns `MISSING` without calling `fn` when a state died
    or holds a dead tracer; an exception of `fn` propagates with nothing written.
    """

    def call(args: tuple[Any, ...], fn: Callable[..., Sequence[Any]] = default) -> Any:
        try:
            states, values = _read_refs(refs)
        except (AttributeError, TraceContextError):
            return MISSING
        out = fn(*values, *args)
        new = {i: v for i, v in enumerate(out[1:]) if v is not None}
        if not new:
            return out[0]
        if all(type(v) is _CONCRETE for v in new.values()):
            _commit(states, new)
        else:
            write_back(states, new, who)  # refuses a tracer, naming the state, before anything is written
        return out[0]

    return call


def dispatched_call(self: Any, /, *args: Any, **kwargs: Any) -> Any:
    """``__call__`` of `statemap.transform._dispatch.Dispatched`: a transform's warm eager call, in one frame.

    It is the dispatcher's fast path (see that class), and it lives here because it reads and commits state
    values itself, which only this module does. ``self._dispatcher`` provides ``ready`` (the known list while
    the fast path is on: ``generation``, ``jitted``, ``single`` — the weak reference when the list holds one
    state — and ``call``, the `caller` closure for other lists), ``calls`` (a counter), ``after(error, args,
    kwargs)`` (finish a call whose try raised) and, called with ``(args, kwargs)``, the general path.
    """
    d = self._dispatcher
    known = d.ready
    if known is None or kwargs or known.generation != _GENERATION[0] or (_ACTIVE[0] and _CONTEXT.stack):
        return d(args, kwargs)
    ref = known.single
    if ref is None:  # none or several states: the list's `caller` closure
        try:
            out = known.call(args)
        except Exception as e:
            return d.after(e, args, kwargs)
        if out is MISSING:  # a known state died or holds a dead tracer: the dispatcher sorts it out
            return d(args, kwargs)
        d.calls += 1
        return out
    s = ref()
    if s is None or s._dead is not None:
        return d(args, kwargs)
    try:
        out = known.jitted(s._value, *args)
    except Exception as e:
        return d.after(e, args, kwargs)
    v = out[1]
    if type(v) is _CONCRETE:  # one state: a single assignment is already atomic for other threads
        s._value = v
        s._dead = None
    elif v is not None:
        write_back([s], {0: v}, d.name)  # refuses a tracer (a plain jax.jit around the call), naming the state
    d.calls += 1
    return out[0]


def _read_refs(refs: Sequence[Any]) -> tuple[list[State], list[Any]]:
    """(states, committed values) of weakly referenced states, outside every trace (a dispatcher's fast path).

    Raises:
      AttributeError: a state died (its reference returns None). TraceContextError: a state holds a dead tracer.
    """
    seen = _WRITES[0]
    states = [r() for r in refs]
    values = [s._value if s._dead is None else _dead(s) for s in states]
    if seen & 1 or _WRITES[0] != seen:  # a write-back ran meanwhile: read it whole (see `_WRITES`)
        with _WRITE_LOCK:
            values = [s._value if s._dead is None else _dead(s) for s in states]
    return states, values


def _commit(states: Sequence[State], updates: dict[int, Any]) -> None:
    """`write_back` outside every trace, for values that hold no tracer (a dispatcher's fast path)."""
    if len(updates) == 1:  # one state: a single assignment is already atomic for other threads
        for i, v in updates.items():
            s = states[i]
            s._value = v
            s._dead = None
        return
    with _WRITE_LOCK:
        _WRITES[0] += 1
        try:
            for i, v in updates.items():
                s = states[i]
                s._value = v
                s._dead = None
        finally:
            _WRITES[0] += 1


def write_back(states: Sequence[State], updates: dict[int, Any], who: str | None = None) -> None:
    """Write ``updates[i]`` into ``states[i]`` for every key ``i``: the one write-back of every transform.

    Inside a trace the writes are recorded in the enclosing frames (their views change). Outside, they are
    committed together under a lock, so a thread never sees half of another thread's write-back (when two
    threads write the same state, the last write-back wins). With `who`, a value holding a JAX tracer is
    refused outside any trace, before anything is written (a plain `jax.jit` around a stateful call).
    """
    if _CONTEXT.stack:
        for i, v in updates.items():
            states[i].value = v
        return
    if who is not None:
        for i, v in updates.items():
            states[i]._check_no_tracer(v, who)
    _commit(states, updates)


def set_path(state: State, path: tuple[Any, ...]) -> None:
    """Record where `state` lives in its module tree (`Module` calls this; filters read `state.path`)."""
    state._path = path


def mark_dead(states: Sequence[State], who: str) -> None:
    """Mark states created inside a finished trace of `who` that still hold its tracers (reads then raise)."""
    for s in states:
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(s._value)):
            s._dead = who
