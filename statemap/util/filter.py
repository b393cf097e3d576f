"""Filters: predicates ``(path, x) -> bool`` that select states by type, tag, path or identity.

Transforms call them with the state's module path (see `statemap.nn.Module`), so `PathContains` works
everywhere, including inside mapping transforms.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Hashable
from typing import Any as _AnyT
from typing import cast

__all__ = [
    "Filter",
    "Predicate",
    "OfType",
    "WithTag",
    "PathContains",
    "Any",
    "All",
    "Not",
    "Everything",
    "Nothing",
    "to_predicate",
]

# A state's path: attribute names, sequence indices and dict keys from the outermost module (or JAX key
# path entries, whose ``key``/``name``/``idx`` `PathContains` also compares).
Path = tuple[Hashable, ...]
Predicate = Callable[[Path, _AnyT], bool]
Filter = _AnyT  # a type, a tag str, a bool, Ellipsis, None, a callable predicate, or a list/tuple of filters


class _Pred:
    """Base of statemap's filter predicates: hashable, comparable and with a readable repr."""

    __slots__ = ()

    def _key(self) -> tuple[Hashable, ...]:
        """The parameters that identify this predicate (its equality, hash and repr)."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(k) for k in self._key())})"


class OfType(_Pred):
    """Matches instances of a type.

    Examples:
      >>> from statemap.util.filter import OfType
      >>> OfType(sm.ParamState)((), sm.ParamState(1.0))
      True
      >>> OfType(sm.ParamState)((), sm.ShortTermState(1.0))
      False
    """

    __slots__ = ("type",)

    def __init__(self, type: type) -> None:  # noqa: A002 - mirrors brainstate's signature
        if not isinstance(type, builtins.type):
            raise TypeError(f"OfType expects a type, got {builtins.type(type).__name__}: {type!r}")
        self.type = type

    def __call__(self, path: Path, x: _AnyT) -> bool:
        return isinstance(x, self.type)

    def _key(self) -> tuple[Hashable, ...]:
        return (self.type,)

    def __repr__(self) -> str:
        return f"OfType({self.type.__name__})"


class WithTag(_Pred):
    """Matches objects whose ``tag`` is, or contains, the given string.

    Examples:
      >>> from statemap.util.filter import WithTag
      >>> WithTag("fast")((), sm.State(1.0, tag={"fast", "x"}))
      True
    """

    __slots__ = ("tag",)

    def __init__(self, tag: str) -> None:
        if not isinstance(tag, str):
            raise TypeError(f"WithTag expects a str tag, got {type(tag).__name__}: {tag!r}")
        self.tag = tag

    def __call__(self, path: Path, x: _AnyT) -> bool:
        tags = getattr(x, "tag", None)
        if isinstance(tags, str):
            return tags == self.tag
        if isinstance(tags, (set, frozenset, list, tuple)):
            return self.tag in tags
        return False

    def _key(self) -> tuple[Hashable, ...]:
        return (self.tag,)


class PathContains(_Pred):
    """Matches when the path contains `key` (as an element, or as a path entry's ``key``/``name``/``idx``).

    Examples:
      >>> from statemap.util.filter import PathContains
      >>> PathContains("weight")(("layers", 0, "weight"), None)
      True
    """

    __slots__ = ("key",)

    def __init__(self, key: Hashable) -> None:
        self.key = key

    def __call__(self, path: Path, x: _AnyT) -> bool:
        for p in path:
            if p == self.key:
                return True
            for attr in ("key", "name", "idx"):
                if getattr(p, attr, _MISSING) == self.key:
                    return True
        return False

    def _key(self) -> tuple[Hashable, ...]:
        return (self.key,)


_MISSING = object()


class _Combination(_Pred):
    """Base of `Any` and `All`: the predicates of the given filters; `All` needs every one to match."""

    __slots__ = ("predicates",)
    _every = False

    def __init__(self, *filters: Filter) -> None:
        self.predicates = tuple(to_predicate(f) for f in filters)

    def _key(self) -> tuple[Hashable, ...]:
        return self.predicates

    def __call__(self, path: Path, x: _AnyT) -> bool:
        combine = builtins.all if self._every else builtins.any
        return combine(p(path, x) for p in self.predicates)


class Any(_Combination):
    """Matches when any of the filters matches (`Any()` matches nothing).

    Examples:
      >>> from statemap.util.filter import Any, to_predicate
      >>> Any(sm.ParamState, "fast")((), sm.State(0.0, tag="fast"))
      True

      A list or tuple of filters means the same thing:

      >>> to_predicate([sm.ParamState, "fast"]) == Any(sm.ParamState, "fast")
      True
    """

    __slots__ = ()


class All(_Combination):
    """Matches when all of the filters match (`All()` matches everything).

    Examples:
      The trainable parameters, say, are the `ParamState`s not tagged ``"frozen"``:

      >>> from statemap.util.filter import All, Not
      >>> trainable = All(sm.ParamState, Not("frozen"))
      >>> trainable((), sm.ParamState(0.0)), trainable((), sm.ParamState(0.0, tag="frozen"))
      (True, False)
    """

    __slots__ = ()
    _every = True


class Not(_Pred):
    """Matches when the filter does not.

    Examples:
      >>> from statemap.util.filter import Not
      >>> Not(sm.ParamState)((), sm.ShortTermState(0.0))
      True
    """

    __slots__ = ("predicate",)

    def __init__(self, filter: Filter) -> None:  # noqa: A002
        self.predicate = to_predicate(filter)

    def __call__(self, path: Path, x: _AnyT) -> bool:
        return not self.predicate(path, x)

    def _key(self) -> tuple[Hashable, ...]:
        return (self.predicate,)


class Everything(All):
    """Matches everything (`All` of no filters).

    Examples:
      >>> from statemap.util.filter import Everything
      >>> Everything()((), 1), Everything()
      (True, Everything())
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()


class Nothing(Any):
    """Matches nothing (`Any` of no filters).

    Examples:
      >>> from statemap.util.filter import Nothing
      >>> Nothing()((), 1), Nothing() == Nothing()
      (False, True)
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()


def to_predicate(filter: Filter) -> Predicate:  # noqa: A002
    """Convert a filter to a predicate.

    str → `WithTag`, type → `OfType`, True or ``...`` → `Everything`, False or None → `Nothing`, list/tuple →
    `Any` of the items, a callable stays as it is. Anything else raises `TypeError`.

    Examples:
      >>> from statemap.util.filter import to_predicate
      >>> to_predicate(sm.ParamState), to_predicate("fast"), to_predicate(...), to_predicate(None)
      (OfType(ParamState), WithTag('fast'), Everything(), Nothing())
      >>> to_predicate([sm.ParamState, "fast"])
      Any(OfType(ParamState), WithTag('fast'))
      >>> to_predicate(3)
      Traceback (most recent call last):
      ...
      TypeError: to_predicate: cannot use int 3 as a filter; expected a type, a tag str, ...
    """
    if isinstance(filter, str):
        return WithTag(filter)
    if isinstance(filter, type):
        return OfType(filter)
    if filter is True or filter is Ellipsis:
        return Everything()
    if filter is False or filter is None:
        return Nothing()
    if isinstance(filter, (list, tuple)):
        return Any(*filter)
    if callable(filter):
        # Taken on trust to be a predicate ``(path, x) -> bool``; its signature is not checked.
        return cast(Predicate, filter)
    raise TypeError(
        f"to_predicate: cannot use {type(filter).__name__} {filter!r} as a filter; expected a type, a tag "
        "str, True/False, ..., None, a callable (path, x) -> bool, or a list/tuple of those"
    )
