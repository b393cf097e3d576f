"""Decorated methods: a transform used as a method decorator is re-created once per instance.

The instance is bound into the function (``functools.partial(fun, obj)``) instead of being passed as an
argument, since a Module is not a JAX type; each instance gets its own transform (and cache), held weakly.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["bind_method", "bound_transforms", "weak_partial"]


class _WeakBound:
    """``fun(obj, *args)`` holding `obj` weakly, so a per-instance transform never keeps its instance alive."""

    __slots__ = ("fun", "ref", "__name__", "__qualname__", "__weakref__")

    def __init__(self, fun: Callable[..., Any], ref: Any) -> None:
        self.fun = fun
        self.ref = ref
        self.__name__ = getattr(fun, "__name__", "method")
        self.__qualname__ = getattr(fun, "__qualname__", self.__name__)

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        obj = self.ref()
        if obj is None:
            raise ReferenceError("the instance this method transform was bound to no longer exists")
        return self.fun(obj, *args, **kwargs)


def weak_partial(fun: Callable[..., Any], obj: Any) -> Callable[..., Any]:
    """``functools.partial(fun, obj)`` that holds `obj` weakly when it can."""
    try:
        return _WeakBound(fun, weakref.ref(obj))
    except TypeError:
        import functools

        return functools.partial(fun, obj)


def bind_method(transform: Any, obj: Any, make: Callable[[Any], Any]) -> Any:
    """The transform bound to `obj`, created by ``make(obj)`` on first use and cached per instance."""
    cache = transform.__dict__.get("_bound")
    if cache is None:
        cache = transform.__dict__["_bound"] = {"weak": weakref.WeakKeyDictionary(), "by_id": {}}
    try:
        bound = cache["weak"].get(obj)
    except TypeError:  # unhashable instance: key on identity, dropped when the instance dies
        entry = cache["by_id"].get(id(obj))
        if entry is not None and entry[0]() is obj:
            return entry[1]
        bound = make(obj)
        by_id: dict[int, Any] = cache["by_id"]
        key = id(obj)

        def forget(_: Any) -> None:
            by_id.pop(key, None)

        try:
            ref = weakref.ref(obj, forget)
        except TypeError:  # not weak-referenceable either: no caching
            return bound
        cache["by_id"][id(obj)] = (ref, bound)
        return bound
    if bound is None:
        bound = make(obj)
        try:
            cache["weak"][obj] = bound
        except TypeError:
            return bound
    return bound


def bound_transforms(transform: Any) -> list[Any]:
    """The per-instance transforms `bind_method` made for `transform` whose instances are alive."""
    cache = transform.__dict__.get("_bound")
    if cache is None:
        return []
    return list(cache["weak"].values()) + [bound for _, bound in cache["by_id"].values()]
