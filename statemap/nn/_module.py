"""`Module`: a plain base class whose attributes hold states and sub-modules, each with a path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from .._errors import TraceContextError, tree_aval
from .._state import ParamState, State, new_generation, peek, set_path
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


def _children(obj: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    """Yield (path, node) for the States and Modules held by `obj` directly (through lists, tuples, dicts)."""
    if isinstance(obj, (State, Module)):
        yield path, obj
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _children(value, path + (i,))
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _children(value, path + (key,))


def _state_line(state: State) -> str:
    try:
        aval = tree_aval(peek(state))
    except TraceContextError:
        aval = "<dead>"
    return f"{type(state).__name__} {aval}"


def _size(state: State) -> int:
    try:
        return sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(peek(state)))
    except TraceContextError:  # a dead state (created in a finished trace) has no value to count
        return 0


def _counts(module: Module) -> str:
    """``# N params, M other``: array elements in the module's `ParamState`s and in its other states, each once."""
    params = other = 0
    for _, node in _walk(module, (), set()):
        if isinstance(node, ParamState):
            params += _size(node)
        elif isinstance(node, State):
            other += _size(node)
    return f"  # {params:,} params, {other:,} other"


def _header(module: Module) -> str:
    return f"{type(module).__name__}({_counts(module)}"


def _repr_lines(module: Module, indent: str, seen: set[int]) -> list[str]:
    """The lines of `repr(module)` after its first: one per state, a block per sub-module (each shown once)."""
    seen.add(id(module))
    lines = []
    for name, value in vars(module).items():
        for path, node in _children(value, (name,)):
            key = ".".join(str(p) for p in path)
            if isinstance(node, State):
                lines.append(f"{indent}  {key}: {_state_line(node)}")
            elif id(node) in seen:
                lines.append(f"{indent}  {key}: {type(node).__name__}(...)  # shown above")
            else:
                inner = _repr_lines(node, indent + "  ", seen)
                if inner:
                    lines += [f"{indent}  {key}: {_header(node)}", *inner, f"{indent}  )"]
                else:
                    lines.append(f"{indent}  {key}: {type(node).__name__}()")
    return lines


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

    def __repr__(self) -> str:
        """The class and its states (path, type, dtype and shape), sub-modules indented.

        Each module's first line counts the array elements it holds (a shared state or sub-module once):
        ``params`` in its `ParamState`s, ``other`` in every other state.

        Examples:
          >>> class Cell(sm.nn.Module):
          ...     def __init__(self):
          ...         self.v = sm.HiddenState(jnp.zeros(4))
          >>> class Net(sm.nn.Module):
          ...     def __init__(self):
          ...         self.cells = {"exc": Cell(), "inh": Cell()}
          ...         self.w = sm.ParamState(jnp.ones((4, 4)))
          >>> Net()
          Net(  # 16 params, 8 other
            cells.exc: Cell(  # 0 params, 4 other
              v: HiddenState f32[4]
            )
            cells.inh: Cell(  # 0 params, 4 other
              v: HiddenState f32[4]
            )
            w: ParamState f32[4,4]
          )
        """
        lines = _repr_lines(self, "", set())
        if not lines:
            return f"{type(self).__name__}()"
        return "\n".join([_header(self), *lines, ")"])

    def state_dict(self, *filters: Any) -> dict[str, Any]:
        """Dotted path → value of the states matching any of `filters` (all when none given).

        The pytree view of a module (a `Module` itself is not a pytree: see `statemap.checkpoint`). Keys are
        paths joined by dots, ``'layers.0.weight'``; values are the states' current values.

        Examples:
          >>> class M(sm.nn.Module):
          ...     def __init__(self):
          ...         self.layers = [sm.ParamState(jnp.ones(2)), sm.ParamState(jnp.ones(3))]
          >>> {k: v.shape for k, v in M().state_dict().items()}
          {'layers.0': (2,), 'layers.1': (3,)}
        """
        from ..checkpoint import state_dict

        return state_dict(self, *filters)

    def load_state_dict(self, values: Any, strict: bool = True) -> None:
        """Write `values` (from `state_dict`) into this module's states, in place, after checking every entry.

        Args:
          values: Dotted path → value.
          strict: Require exactly one entry per state; with False, unmatched states and entries are skipped.
        Raises:
          CheckpointError: a missing or unexpected key (with `strict`), or an entry whose pytree structure,
            shape or dtype differs from its state's; nothing is written then.

        Examples:
          >>> class M(sm.nn.Module):
          ...     def __init__(self):
          ...         self.w = sm.ParamState(jnp.zeros(2))
          >>> m = M()
          >>> m.load_state_dict({"w": jnp.ones(2)}); m.w.value
          Array([1., 1.], dtype=float32)
          >>> m.load_state_dict({"v": jnp.ones(2)})
          Traceback (most recent call last):
          ...
          statemap._errors.CheckpointError: load_state_dict: the keys do not match the states: missing entries ...
        """
        from ..checkpoint import load_state_dict

        load_state_dict(self, values, strict=strict)

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
