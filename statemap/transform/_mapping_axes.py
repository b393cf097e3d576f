"""Axis specifications for the mapping transforms: normalising `state_in_axes`/`state_out_axes` and `in_axes`.

A state axis spec is ``{axis: selector}`` (or a bare selector, meaning axis 0). A selector is anything
`to_predicate` accepts, a `State`, or an iterable of States (matched by identity). Axis `None` means explicitly
broadcast. The first entry (in dict order) whose selector matches a state decides its axis.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import jax
import numpy as np

from .. import _compat
from .._errors import BatchAxisError, message, short_aval
from .._state import State
from ..util.filter import Path, Predicate, to_predicate

__all__ = ["StateIs", "normalize_state_axes", "match_axis", "first_match", "arg_leaf_axes", "POLICIES"]

POLICIES = ("raise", "warn", "ignore", "auto")
_UNMATCHED = object()


class StateIs:
    """Identity predicate: matches exactly the given states.

    Examples:
      >>> from statemap.transform._mapping_axes import StateIs
      >>> a, b = sm.State(0.0, name="a"), sm.State(0.0, name="b")
      >>> StateIs(a)((), a), StateIs(a)((), b)
      (True, False)
    """

    __slots__ = ("ids", "names")

    def __init__(self, *states: State) -> None:
        self.ids = frozenset(id(s) for s in states)
        self.names = tuple(s._label() for s in states)

    def __call__(self, path: Path, x: Any) -> bool:
        return id(x) in self.ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StateIs) and other.ids == self.ids

    def __hash__(self) -> int:
        return hash(self.ids)

    def __repr__(self) -> str:
        return f"StateIs({', '.join(self.names)})"


def coerce_selector(selector: Any) -> Predicate:
    """A State or an iterable of States → identity predicate; anything else → `to_predicate`."""
    if isinstance(selector, State):
        return StateIs(selector)
    if isinstance(selector, (list, tuple, set, frozenset)) and selector:
        items = list(selector)
        if all(isinstance(s, State) for s in items):
            return StateIs(*items)
        if any(isinstance(s, State) for s in items):
            return to_predicate([coerce_selector(s) if isinstance(s, State) else s for s in items])
    if isinstance(selector, dict) and selector and all(isinstance(s, State) for s in selector.values()):
        return StateIs(*selector.values())
    return to_predicate(selector)


def selector_table(
    spec: Any, who: str, what: str, key_kind: str, is_key: Callable[[Any], bool], example: str
) -> tuple[tuple[Any, Predicate], ...]:
    """``{key: selector}`` (an option such as ``state_reduce``) → ``((key, predicate), ...)``; None → ``()``.

    The one reading of the ``{key: selector}`` options that are not axes (``state_reduce``, ``state_shardings``,
    ``state_in_specs``/``state_out_specs``): `is_key` accepts a key; errors name `who`, the option `what` and
    show `example`.

    Examples:
      >>> from statemap.transform._mapping_axes import selector_table
      >>> is_name = lambda key: isinstance(key, str)
      >>> selector_table({"mean": sm.ShortTermState}, "vmap2", "state_reduce", "reduction", is_name, "{'mean': s}")
      (('mean', OfType(ShortTermState)),)
      >>> selector_table([1], "jit", "state_shardings", "sharding", callable, "{rows: w}")
      Traceback (most recent call last):
      ...
      TypeError: jit: state_shardings is not a {sharding: selector} dict ...
    """
    if spec is None:
        return ()
    if not isinstance(spec, dict):
        raise TypeError(
            message(
                who,
                f"{what} is not a {{{key_kind}: selector}} dict",
                f"{what}={{{key_kind}: selector}}, e.g. {what}={example}",
                f"{type(spec).__name__} {spec!r:.60}",
                f"wrap it in a dict: {what}={example}",
            )
        )
    for key in spec:
        if not is_key(key):
            raise TypeError(
                message(
                    who,
                    f"{what} has the key {key!r:.60}, which is not a {key_kind}",
                    f"{what}={{{key_kind}: selector}}, e.g. {what}={example}",
                    f"key of type {type(key).__name__}",
                    f"write each key as a {key_kind}, e.g. {what}={example}",
                )
            )
    return tuple((key, _selector(selector, who, what)) for key, selector in spec.items())


def normalize_state_axes(spec: Any, who: str, what: str) -> dict[Hashable, Predicate]:
    """``None`` → ``{}``; dict → ``{axis: predicate}``; a bare selector → ``{0: predicate}``.

    Examples:
      >>> from statemap.transform._mapping_axes import normalize_state_axes
      >>> normalize_state_axes({0: sm.ParamState, None: "frozen"}, "vmap2", "state_in_axes")
      {0: OfType(ParamState), None: WithTag('frozen')}
      >>> normalize_state_axes(sm.ShortTermState, "vmap2", "state_in_axes")
      {0: OfType(ShortTermState)}
    """
    if spec is None:
        return {}
    if isinstance(spec, dict):
        _check_axis_keys(spec, who, what)
    axis_keys = (
        all(k is None or (isinstance(k, int) and not isinstance(k, bool)) for k in spec)
        if isinstance(spec, dict)
        else False
    )
    # A dict is ``{axis: selector}`` unless it is a ``{name: State}`` collection (non-axis keys, State values).
    if isinstance(spec, dict) and (axis_keys or not all(isinstance(v, State) for v in spec.values())):
        out: dict[Hashable, Predicate] = {}
        for axis, selector in spec.items():
            if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
                raise TypeError(
                    message(
                        who,
                        f"{what} has the key {axis!r}, which is not an axis",
                        f"{what}={{axis: selector}} with int or None axes (or a bare selector for axis 0)",
                        f"key of type {type(axis).__name__}",
                        f"write {what}={{0: selector}}; a filter used as a dict key is not supported",
                    )
                )
            out[axis] = _selector(selector, who, what)
        return out
    return {0: _selector(spec, who, what)}


def _selector(selector: Any, who: str, what: str) -> Predicate:
    """`coerce_selector`, with an error that names the option the selector came from."""
    try:
        return coerce_selector(selector)
    except (TypeError, ValueError) as e:
        raise TypeError(
            message(
                who,
                f"{what} has a selector that is not a filter",
                "a State, states, a State type, a tag string, ..., a filter or a predicate (path, state) -> bool",
                f"{type(selector).__name__} {selector!r:.60}",
                "select the states with e.g. a State type (sm.ShortTermState) or a list of states ([s1, s2])",
            )
        ) from e


def _check_axis_keys(spec: dict[Any, Any], who: str, what: str) -> None:
    """A float or bool key is a mistyped axis, never a name (``{1.0: h}`` must not silently mean axis 0)."""
    for key in spec:
        if isinstance(key, (bool, float, np.bool_, np.floating)):
            raise TypeError(
                message(
                    who,
                    f"{what} has the key {key!r}, which is not an axis",
                    f"{what}={{axis: selector}} with int or None axes",
                    f"a key of type {type(key).__name__}",
                    f"write the axis as an int, e.g. {what}={{0: ...}}",
                )
            )


def first_match(entries: Iterable[tuple[Any, Predicate]], state: State) -> Any:
    """The key of the first ``(key, predicate)`` entry whose predicate matches `state` (called with its module
    path), or _UNMATCHED: the one selector lookup of state axes, specs and reductions."""
    path = state.path
    for key, pred in entries:
        if pred(path, state):
            return key
    return _UNMATCHED


def match_axis(axes: dict[Hashable, Predicate], state: State) -> Any:
    """The axis of the first entry whose predicate matches `state`, or _UNMATCHED (None is an axis)."""
    return first_match(axes.items(), state)


def is_unmatched(x: Any) -> bool:
    return x is _UNMATCHED


def describe_arg(path: Any) -> str:
    s = jax.tree_util.keystr(path)
    return f"args{s}" if s else "args"


def prefix_leaf_axes(prefix: Any, tree: Any) -> list[Any]:
    """Per-leaf axes of `tree` from an axis pytree `prefix` (None and ints are leaves of the prefix).

    Raises ValueError when `prefix` is not a prefix of `tree`.
    """
    flat: list[Any] = []

    def fill(ax: Any, sub: Any) -> None:
        flat.extend([ax] * len(jax.tree_util.tree_leaves(sub)))

    jax.tree_util.tree_map(fill, prefix, tree, is_leaf=lambda x: x is None)
    return flat


def arg_leaf_axes(in_axes: Any, dyn_args: tuple[Any, ...], dyn_kwargs: dict[str, Any], who: str) -> list[int | None]:
    """Per-leaf mapped axis of ``(dyn_args, dyn_kwargs)`` (kwargs are mapped on axis 0, as in `jax.vmap`).

    Raises a `BatchAxisError` naming the argument when `in_axes` is not a prefix of the arguments.
    """
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)
    if isinstance(in_axes, tuple) and len(in_axes) != len(dyn_args):
        raise BatchAxisError(
            message(
                who,
                f"in_axes has {len(in_axes)} entries but the call has {len(dyn_args)} mapped positional argument(s)",
                "one in_axes entry per positional argument (static arguments excluded)",
                f"in_axes={in_axes!r}",
                "give one entry per argument, or a single int to map every argument on that axis",
            )
        )
    per_arg = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(dyn_args)
    axes: list[int | None] = []
    for i, (ax, arg) in enumerate(zip(per_arg, dyn_args, strict=True)):
        n = len(jax.tree_util.tree_leaves(arg))
        if ax is None or isinstance(ax, int):
            axes.extend([ax] * n)
            continue
        try:
            sub = prefix_leaf_axes(ax, arg)
        except Exception:
            raise BatchAxisError(
                message(
                    who,
                    f"in_axes entry for argument {i} is not a pytree prefix of the argument",
                    "an int, None, or a pytree prefix of the argument with int/None leaves",
                    f"in_axes[{i}]={ax!r} for an argument of structure {jax.tree_util.tree_structure(arg)}",
                    "match the argument's structure (e.g. a dict with the same keys)",
                )
            ) from None
        if len(sub) != n:  # pragma: no cover - defensive
            raise BatchAxisError(f"{who}: in_axes entry for argument {i} does not match the argument's leaves")
        axes.extend(sub)
    axes.extend([0] * len(jax.tree_util.tree_leaves(dyn_kwargs)))
    return axes


def check_in_axes_type(in_axes: Any, who: str, what: str = "in_axes") -> None:
    """`TypeError` for an `in_axes` (or `out_axes`) that is not an int, None, or a (pytree of) int/None."""
    bad = [
        x
        for x in jax.tree_util.tree_leaves(in_axes, is_leaf=lambda x: x is None)
        if x is not None and (isinstance(x, bool) or not isinstance(x, int))
    ]
    if bad or isinstance(in_axes, (str, float)):
        of = "arguments" if what == "in_axes" else "result"
        raise TypeError(
            message(
                who,
                f"{what} has an unsupported entry",
                f"an int, None, or a tuple/list/dict (pytree prefix of the {of}) of ints and None",
                f"{what}={in_axes!r}",
                f"use e.g. {what}=0, {what}=(0, None) or {what}=({{'x': 0, 'y': None}},)",
            )
        )


def leaf_size(x: Any, axis: int, who: str, where: str) -> int:
    """Size of `x` along `axis`, with a `BatchAxisError` naming `where` when it has no such axis."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise BatchAxisError(
            message(
                who,
                f"{where} is mapped on axis {axis} but is not an array",
                "an array with a mapped axis",
                f"{type(x).__name__} {x!r:.40}",
                "pass an array, or map it with in_axes None",
            )
        )
    nd = len(shape)
    if not -nd <= axis < nd:
        raise BatchAxisError(
            message(
                who,
                f"{where} is mapped on axis {axis} but has only {nd} dimension(s)",
                f"an array with at least {axis + 1 if axis >= 0 else -axis} dimension(s)",
                f"{short_aval(x)}",
                "fix the axis, or give the value a leading batch dimension",
            )
        )
    return int(shape[axis])


def drop_axis(x: Any, axis: int) -> jax.ShapeDtypeStruct:
    """Abstract value of one lane of `x` mapped on `axis`."""
    shape = tuple(x.shape)
    axis = axis % len(shape)
    return _compat.struct_like(jax.typeof(x), shape[:axis] + shape[axis + 1 :])
