"""The static type of a transform taken bare, ``grad(f, ...)``, or as a decorator with options, ``@grad(...)``.

Such a function returns what it makes (a `GradientTransform`, a `StatefulMapping`) when given the function,
and the decorator making it when not. Written out, that is two `typing.overload` stubs repeating the whole
parameter list, for every transform. Here the parameter list is written once, in the implementation, and
`makes` gives the function the type `Maker`, whose two overloads take the rest of the parameters from it
(`typing.ParamSpec`). At run time `makes` returns the function itself: its signature, docstring and
behaviour are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast, overload

__all__ = ["Maker", "makes"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_R_co = TypeVar("_R_co", covariant=True)


class Maker(Protocol[_P, _R_co]):
    """A transform front-end: called with a function, it returns an `_R_co`; without one, a decorator.

    `_P` is the rest of its parameters (after the function), as the implementation declares them. The
    function can only be passed positionally here (``grad(f)``, not ``grad(fun=f)``).
    """

    @overload
    def __call__(self, fun: Callable[..., Any], /, *args: _P.args, **kwargs: _P.kwargs) -> _R_co: ...

    @overload
    def __call__(
        self, fun: None = None, /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Callable[[Callable[..., Any]], _R_co]: ...


def makes(
    result: type[_R],
) -> Callable[[Callable[Concatenate[Callable[..., Any] | None, _P], Any]], Maker[_P, _R]]:
    """Type a front-end whose first parameter is the function (or None) as a `Maker` of `result`.

    Args:
      result: What the front-end returns when it is given the function.

    Returns:
      A decorator returning the front-end itself, typed as a `Maker`.

    Examples:
      >>> from statemap.transform._decorator import makes
      >>> @makes(tuple)
      ... def pair(fun=None, second=0):
      ...     make = lambda f: (f, second)
      ...     return make if fun is None else make(fun)
      >>> pair(abs, 1), pair(second=2)(abs)
      ((<built-in function abs>, 1), (<built-in function abs>, 2))
    """

    def typed(front_end: Callable[Concatenate[Callable[..., Any] | None, _P], Any]) -> Maker[_P, _R]:
        return cast(Maker[_P, _R], front_end)

    return typed
