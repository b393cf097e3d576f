"""`Module`: a plain base class whose attributes hold states and sub-modules, each with a path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._state import State, new_generation, set_path
from ..util.filter import Everything, Path, to_predicate

__all__ = ["Module"]


def _walk(obj: Any, path: Path, seen: set[int]) -> Iterator[tuple[Path, Any]]:
    """Yield (path, node) for every State and Module reachable from `obj`, pre-order, each once."""
    if isinstance(obj, State):
        if id(obj) not in seen:
            seen.add(id(obj))
            yield path, obj
    elif isinstance(obj, Module):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        yield path, obj
        for name, value in vars(obj).items():
            yield from _walk(value, path + (name,), seen)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _walk(value, path + (i,), seen)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _walk(value, path + (key,), seen)


class Module:
    """Base class for objects holding `State`s and sub-modules (also inside lists, tuples and dicts).

    Every state owned by a module knows its path from the outermost module it was assigned into, e.g.
    ``('layers', 0, 'weight')``; filters such as `PathContains` see that path inside every transform.

    Examples:
      >>> class Linear(sm.nn.Module):
      ...     def __init__(self, n):
      ...         self.weight = sm.ParamState(jnp.ones((n, n)))
      ...         self.bias = sm.ParamState(jnp.zeros(n))
      >>> class MLP(sm.nn.Module):
      ...     def __init__(self):
      ...         self.layers = [Linear(2), Linear(2)]
      ...         self.count = sm.ShortTermState(jnp.array(0))
      >>> mlp = MLP()
      >>> list(mlp.states(sm.util.filter.PathContains("weight")))
      [('layers', 0, 'weight'), ('layers', 1, 'weight')]
      >>> mlp.layers[1].bias.path
      ('layers', 1, 'bias')
    """

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        bound = False
        for path, node in _walk(value, (name,), set()):
            if isinstance(node, State):
                set_path(node, path)
                bound = True
        if bound:  # e.g. `init_state()`: cached traces must find the new states (statemap._state.generation)
            new_generation()

    def nodes(self) -> dict[Path, Any]:
        """Ordered mapping path → State or Module of everything reachable from this module (itself at ``()``).

        Examples:
          >>> class M(sm.nn.Module):
          ...     def __init__(self):
          ...         self.h = sm.ShortTermState(0.0)
          >>> list(M().nodes())
          [(), ('h',)]
        """
        return dict(_walk(self, (), set()))

    def states(self, *filters: Any) -> dict[Path, State]:
        """Ordered mapping path → State of the states matching any of `filters` (all states when none given).

        Calling it also refreshes every state's `path` relative to this module.

        Examples:
          >>> class M(sm.nn.Module):
          ...     def __init__(self):
          ...         self.w = sm.ParamState(1.0)
          ...         self.h = sm.ShortTermState(0.0)
          >>> M().states(sm.ParamState)
          {('w',): ParamState(path='w', value=float)}
        """
        pred = to_predicate(list(filters)) if filters else Everything()
        out: dict[Path, State] = {}
        for path, node in _walk(self, (), set()):
            if isinstance(node, State):
                set_path(node, path)
                if pred(path, node):
                    out[path] = node
        return out

    def modules(self) -> dict[Path, Module]:
        """Ordered mapping path → Module of this module and its sub-modules."""
        return {p: n for p, n in _walk(self, (), set()) if isinstance(n, Module)}

    def init_state(self, **kwargs: Any) -> None:
        """Create this module's own states (override it; the default creates none)."""

    def init_all_states(self, **kwargs: Any) -> Module:
        """Call `init_state(**kwargs)` on this module and every sub-module (pre-order), then refresh paths.

        Examples:
          >>> class Cell(sm.nn.Module):
          ...     def init_state(self, batch=1):
          ...         self.h = sm.HiddenState(jnp.zeros((batch, 2)))
          >>> c = Cell().init_all_states(batch=3)
          >>> c.h.value.shape, c.h.path
          ((3, 2), ('h',))
        """
        for module in list(self.modules().values()):
            module.init_state(**kwargs)
        self.states()
        return self
