"""Trace frames: which states a traced function reads and writes, and the trace's own view of their values.

Each statemap transform pushes a `StateTrace` on its thread's stack while it traces the user's function. A
`State` reports every read and write to the frames entered *after* it was created (its level), so a state
created inside a transform is invisible to the transforms around it.

A frame holds its own view of every state it has seen: at the first touch it takes the value seen just outside
it (the enclosing frame's view, or the state's committed value), passed through its `hook` (transforms turn it
into a trace input). Reads return the innermost frame's view and writes change only that view. The `State`
object itself is never changed by a trace: other threads, and code running after the trace, see the committed
value until a transform writes its results back (`statemap._state.write_back`). The stack is thread-local, so
concurrent threads tracing the same states never see each other's tracers.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ._errors import MappingRuntimeError

if TYPE_CHECKING:
    from ._state import State

__all__ = ["StateTrace", "catch_new_states", "NewStateCatcher", "trace_level"]


class _Context(threading.local):
    def __init__(self) -> None:
        self.stack: list[StateTrace] = []
        self.catchers: list[NewStateCatcher] = []


CONTEXT = _Context()
# Statemap traces active in all threads together: 0 means no thread traces, so a hot path can skip reading the
# thread-local stack. Changed under the lock (a frame counts before it is on its stack and until it is off it).
ACTIVE = [0]
_ACTIVE_LOCK = threading.Lock()
_SERIALS = itertools.count(1)  # unique id per StateTrace; a state remembers those active at its creation


def trace_level() -> int:
    """The number of statemap traces active in this thread (a new state gets this as its level)."""
    return len(CONTEXT.stack)


class StateTrace:
    """A frame recording, in first-touch order, the states a function touches, which it wrote, and their values.

    Args:
      hook: Called as ``hook(state, value)`` at a state's first touch with the value seen outside the frame;
        its result becomes the frame's view of the state (transforms use it to turn values into trace inputs).
      name: Name of the transform, for error messages.

    Writes inside the frame change only its view; `commit` writes the written values to the enclosing view
    (the enclosing frame, or the states themselves), and leaving the frame without committing discards them.

    Examples:
      >>> a, b = sm.State(1.0, name="a"), sm.State(0.0, name="b")
      >>> with sm.StateTrace() as t:
      ...     b.value = a.value + 1
      ...     b.value
      2.0
      >>> [s.name for s in t.states], t.written, b.value
      (['a', 'b'], [False, True], 0.0)
      >>> t.commit(); b.value
      2.0
    """

    __slots__ = ("states", "written", "read", "values", "_index", "hook", "name", "serial")

    def __init__(self, hook: Callable[[State, Any], Any] | None = None, name: str | None = None) -> None:
        self.states: list[State] = []
        self.written: list[bool] = []
        self.read: list[bool] = []
        self.values: list[Any] = []  # this frame's view of each state
        self._index: dict[int, int] = {}
        self.hook = hook
        self.name = name
        self.serial = next(_SERIALS)

    def touch(self, state: State, outer: Any, write: bool) -> int:
        """Record a read or write of `state`, whose value outside this frame is `outer`; its position."""
        i = self._index.get(id(state))
        if i is None:
            value = outer if self.hook is None else self.hook(state, outer)
            i = len(self.states)
            self._index[id(state)] = i
            self.states.append(state)
            self.written.append(False)
            self.read.append(False)
            self.values.append(value)
        if write:
            self.written[i] = True
        elif not self.written[i]:
            self.read[i] = True
        return i

    def index(self, state: State) -> int | None:
        """Position of `state` in first-touch order, or None if it was not touched."""
        return self._index.get(id(state))

    def commit(self) -> None:
        """Write the written states' values of this (exited) frame to the enclosing view."""
        from ._state import write_back

        updates = {i: self.values[i] for i, w in enumerate(self.written) if w}
        write_back(self.states, updates, self.name or "StateTrace")

    def __enter__(self) -> StateTrace:
        with _ACTIVE_LOCK:
            ACTIVE[0] += 1
        CONTEXT.stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        stack = CONTEXT.stack
        if not stack or stack[-1] is not self:
            raise MappingRuntimeError(
                "statemap: trace contexts exited out of order; this is a bug in statemap, please report it"
            )
        stack.pop()
        with _ACTIVE_LOCK:
            ACTIVE[0] -= 1


class NewStateCatcher:
    """Collects the states created while it is active (see `catch_new_states`)."""

    __slots__ = ("states", "_ids", "tag", "exclude")

    def __init__(self, tag: str | None = None, exclude: Callable[[tuple[Any, ...], Any], bool] | None = None) -> None:
        self.states: list[State] = []
        self._ids: set[int] = set()
        self.tag = tag
        self.exclude = exclude

    def add(self, state: State) -> None:
        if id(state) in self._ids:
            return
        if self.exclude is not None and self.exclude(state.path, state):
            return
        self._ids.add(id(state))
        self.states.append(state)
        if self.tag is not None:
            state.add_tag(self.tag)

    def get_states(self) -> list[State]:
        return list(self.states)

    def get_state_values(self) -> list[Any]:
        return [s.value for s in self.states]

    def __contains__(self, state: object) -> bool:
        return id(state) in self._ids

    def __len__(self) -> int:
        return len(self.states)


@contextmanager
def catch_new_states(state_tag: str | None = None, state_to_exclude: Any = None) -> Iterator[NewStateCatcher]:
    """Collect every `State` created inside the block (nested catchers all see it).

    Args:
      state_tag: If given, added as a tag to each caught state.
      state_to_exclude: A filter (anything `to_predicate` accepts); matching states are not caught.

    Examples:
      >>> with sm.catch_new_states("init") as caught:
      ...     s = sm.ShortTermState(jnp.zeros(2), name="h")
      >>> [x.name for x in caught.states], s.tag
      (['h'], {'init'})
    """
    from .util.filter import to_predicate

    exclude = None if state_to_exclude is None else to_predicate(state_to_exclude)
    catcher = NewStateCatcher(state_tag, exclude)
    CONTEXT.catchers.append(catcher)
    try:
        yield catcher
    finally:
        CONTEXT.catchers.remove(catcher)
