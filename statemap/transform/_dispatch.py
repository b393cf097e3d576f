"""Signals of the eager *dispatch* path shared by `jit` and the mapping transforms.

Both pass the values of every state they know a function touches into one `jax.jit` object; these internal
exceptions (raised at JAX trace time or while reading values) tell the caller to widen that set or to take
the traced path. None of them ever reaches users.
"""

from __future__ import annotations

from typing import Any

from .._state import State

__all__ = ["NewStates", "DeadState", "dead"]


class NewStates(Exception):
    """A new signature touches states the dispatch path does not pass yet."""

    def __init__(self, states: list[State]) -> None:
        super().__init__()
        self.states = states


class DeadState(Exception):
    """A known state holds a dead tracer; the traced path reports it properly."""


def dead(state: State) -> Any:
    """Used inside the value-reading comprehension: abandon the dispatch path for a dead state."""
    raise DeadState
