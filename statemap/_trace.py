"""The trace stack: which states a traced function reads and writes.

Each statemap transform pushes a `StateTrace` while it traces the user's function. A `State` reports every
read and write to the traces entered *after* it was created (its level), so a state created inside a
transform is invisible to the transforms around it. The stack is thread-local: concurrent threads tracing
different functions never see each other's records.
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
_SERIALS = itertools.count(1)  # unique id per StateTrace; a state remembers those active at its creation


def trace_level() -> int:
    """The number of statemap traces active in this thread (a new state gets this as its level)."""
    return len(CONTEXT.stack)


class StateTrace:
    """Records, in first-touch order, the states a function touches, which it wrote, and their originals.

    Args:
      hook: Called as ``hook(state)`` at a state's first touch; its result replaces the state's value for the
        rest of the trace (transforms use it to turn state values into trace inputs).
      name: Name of the transform, for error messages.

    Example:
      >>> a, b = sm.State(1.0, name="a"), sm.State(2.0, name="b")
      >>> with sm.StateTrace() as t:
      ...     b.value = a.value + 1
      >>> [s.name for s in t.states], t.written
      (['a', 'b'], [False, True])
      >>> t.restore(); b.value
      2.0
    """

    __slots__ = ("states", "written", "read", "originals", "_index", "hook", "name", "serial")

    def __init__(self, hook: Callable[[State], Any] | None = None, name: str | None = None) -> None:
        self.states: list[State] = []
        self.written: list[bool] = []
        self.read: list[bool] = []
        self.originals: list[Any] = []
        self._index: dict[int, int] = {}
        self.hook = hook
        self.name = name
        self.serial = next(_SERIALS)

    def _add(self, state: State) -> int:
        i = len(self.states)
        self._index[id(state)] = i
        self.states.append(state)
        self.written.append(False)
        self.read.append(False)
        self.originals.append(state._value)
        if self.hook is not None:
            state._value = self.hook(state)
        return i

    def on_read(self, state: State) -> None:
        i = self._index.get(id(state))
        if i is None:
            i = self._add(state)
        if not self.written[i]:
            self.read[i] = True

    def on_write(self, state: State) -> None:
        i = self._index.get(id(state))
        if i is None:
            i = self._add(state)
        self.written[i] = True

    def index(self, state: State) -> int | None:
        """Position of `state` in first-touch order, or None if it was not touched."""
        return self._index.get(id(state))

    def restore(self) -> None:
        """Put every touched state back to the value it had at its first touch."""
        for state, value in zip(self.states, self.originals, strict=True):
            state._value = value

    def __enter__(self) -> StateTrace:
        CONTEXT.stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        stack = CONTEXT.stack
        if not stack or stack[-1] is not self:
            raise MappingRuntimeError(
                "statemap: trace contexts exited out of order; this is a bug in statemap, please report it"
            )
        stack.pop()


class NewStateCatcher:
    """Collects the states created while it is active (see `catch_new_states`)."""

    __slots__ = ("states", "_ids", "tag", "exclude")

    def __init__(self, tag: str | None = None, exclude: Callable[[tuple, Any], bool] | None = None) -> None:
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
        return [s._value for s in self.states]

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

    Example:
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
