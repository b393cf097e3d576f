"""Arguments of a transformed call: argument numbers, static arguments, and the call signature built once.

`ArgSpec` is fixed when a transform is built (which arguments are static, the function's parameter names).
`CallSignature.of` runs once per call: it splits the static arguments off, flattens the dynamic ones once and
forms the hashable cache key (pytree structure, abstract values, static values). Tracing, the mapping engine and
the dispatcher all take that object, so no call flattens its arguments twice.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from .._errors import ArgumentError, StateArgumentError, describe_state, message
from .._state import State

__all__ = [
    "ArgSpec",
    "CallSignature",
    "abstract",
    "leaf_signature",
    "parse_argnums",
    "resolve_argnums",
    "shape_struct",
    "value_signature",
]

_SCALAR_TYPES = (int, float, bool, complex)


def parse_argnums(argnums: int | Sequence[int] | None, what: str = "static_argnums") -> tuple[int, ...]:
    """``int | sequence of ints | None`` → a tuple of ints (a bool is not an argument number)."""
    if argnums is None:
        return ()
    if isinstance(argnums, int) and not isinstance(argnums, bool):
        return (argnums,)
    try:
        out = tuple(argnums)  # type: ignore[arg-type]
    except TypeError:
        out = (None,)  # type: ignore[assignment]
    if isinstance(argnums, bool) or not all(isinstance(i, int) and not isinstance(i, bool) for i in out):
        raise ArgumentError(
            message(
                what,
                f"{what} is not an int or a sequence of ints",
                "argument positions, e.g. 0 or (0, 2)",
                f"{what}={argnums!r:.60}",
                f"pass e.g. {what}=0 or {what}=(0, 1)",
            )
        )
    return out


def parse_argnames(argnames: str | Sequence[str] | None) -> tuple[str, ...]:
    if argnames is None:
        return ()
    if isinstance(argnames, str):
        return (argnames,)
    return tuple(argnames)


def check_optional_str(value: Any, who: str, what: str, purpose: str, example: str) -> None:
    """An `ArgumentError` unless `value` is None or a str (an option such as a name or a label).

    Examples:
      >>> from statemap.transform._arguments import check_optional_str
      >>> check_optional_str(3, "jit", "name", "a name for the compiled program", "'train_step'")
      Traceback (most recent call last):
      ...
      statemap._errors.ArgumentError: jit: name is not a str ...
    """
    if value is not None and not isinstance(value, str):
        raise ArgumentError(
            message(
                who,
                f"{what} is not a str",
                f"{purpose}: a str",
                f"{type(value).__name__} {value!r:.60}",
                f"pass a str, e.g. {what}={example}",
            )
        )


def resolve_argnums(argnums: tuple[int, ...], nargs: int, who: str, what: str = "static_argnums") -> tuple[int, ...]:
    """Sorted distinct non-negative positions of `argnums` for a call with `nargs` positional arguments."""
    out = []
    for i in argnums:
        j = i + nargs if i < 0 else i
        if not 0 <= j < nargs:
            raise ArgumentError(
                message(
                    who,
                    f"{what} entry {i} is out of range for a call with {nargs} positional argument(s)",
                    f"indices in [-{nargs}, {nargs})",
                    f"{what}={argnums}",
                    f"pass the argument positionally or fix {what}",
                )
            )
        out.append(j)
    return tuple(sorted(set(out)))


def shift_argnums(argnums: tuple[int, ...]) -> tuple[int, ...]:
    """Argument numbers after binding the first argument: 0 disappears, positive ones move down by one."""
    return tuple(i - 1 if i > 0 else i for i in argnums if i != 0)


def positional_names(fun: Callable[..., Any]) -> tuple[str, ...]:
    """Names of `fun`'s positional parameters, in order ('' for positional-only; empty without a signature)."""
    try:
        params = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):
        return ()
    out = []
    for p in params:
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            out.append(p.name)
        elif p.kind is not inspect.Parameter.POSITIONAL_ONLY:
            break
        else:
            out.append("")
    return tuple(out)


_JAX_DTYPES: dict[Any, bool] = {}
# NumPy's extended precision (float128/complex256 on most platforms) has no JAX counterpart.
_WIDE_FLOATS = tuple(
    np.dtype(wide) for wide, std in ((np.longdouble, np.float64), (np.clongdouble, np.complex128)) if wide != std
)


def _is_jax_dtype(dtype: Any) -> bool:
    """Whether JAX accepts arrays of `dtype`: numbers, bools, and extended dtypes such as PRNG keys."""
    ok = _JAX_DTYPES.get(dtype)
    if ok is None:
        try:
            ok = jnp.issubdtype(dtype, jax.dtypes.extended) or (
                (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_))
                and np.dtype(dtype).kind not in "mM"  # NumPy counts timedelta64 as an integer type
                and np.dtype(dtype) not in _WIDE_FLOATS
            )
        except TypeError:
            ok = False
        _JAX_DTYPES[dtype] = ok
    return ok


def _int_limit() -> int:
    """A Python int argument becomes a weakly typed int64 array with x64 enabled, int32 otherwise."""
    return 2**63 if jax.config.read("jax_enable_x64") else 2**31  # type: ignore[no-untyped-call]


def _int_overflow(x: int, who: str, where: str) -> ArgumentError:
    n = _int_limit()
    return ArgumentError(
        message(
            who,
            f"argument {where} is a Python int too large for JAX's default integer type",
            f"an int in [{-n}, {n - 1}]",
            f"int {x}",
            "pass a smaller int, a float, or mark the argument static (static_argnums/static_argnames)",
        )
    )


def leaf_signature(x: Any, who: str, where: str) -> Any:
    """Abstract signature of one argument leaf: (shape, dtype, weak_type), or its Python scalar type."""
    try:
        sig = (x.shape, x.dtype, getattr(x, "weak_type", False))
    except AttributeError:
        pass
    else:
        if _is_jax_dtype(x.dtype):
            return sig
    if type(x) in _SCALAR_TYPES:
        if type(x) is int and not -_int_limit() <= x < _int_limit():
            raise _int_overflow(x, who, where)
        return type(x)
    if isinstance(x, State):
        raise StateArgumentError(
            message(
                who,
                f"argument {where} is {describe_state(x)}",
                "arrays or pytrees of arrays as arguments; states are closed over, not passed",
                f"a {type(x).__name__} object",
                "refer to the state inside the function instead of passing it (pass `s.value` if you need "
                "its value as an argument)",
            )
        )
    raise ArgumentError(
        message(
            who,
            f"argument {where} is not a valid JAX type",
            "arrays, NumPy arrays, Python scalars, or pytrees of them",
            f"{type(x).__name__}{'' if getattr(x, 'dtype', None) is None else ' of dtype ' + str(x.dtype)}",
            "mark it static (static_argnums/static_argnames) or convert it to an array",
        )
    )


def shape_struct(shape: Any, dtype: Any, weak_type: bool = False) -> jax.ShapeDtypeStruct:
    """`jax.ShapeDtypeStruct` (typed: JAX's constructor is not annotated)."""
    return jax.ShapeDtypeStruct(shape, dtype, weak_type=weak_type)  # type: ignore[no-untyped-call]


def abstract(x: Any) -> jax.ShapeDtypeStruct:
    """The abstract value of an array, tracer or Python scalar, weak type (and `shard_map` axes) kept."""
    aval = jax.typeof(x)
    return _compat.struct_like(aval, tuple(aval.shape))


def value_signature(value: Any) -> tuple[Any, ...]:
    """Abstract signature of a state's value: the (shape, dtype, weak_type) of its leaves.

    `jax.typeof` gives the same answer for a Python scalar and for the weak-typed tracer that stands for it
    inside a trace, so a state holding ``0`` is not mistaken for a changed state
    (tests/test_jit.py::test_state_holding_python_scalar). The sharding is left out: a pmap output's differs
    from its input's.
    """
    out = []
    for x in jax.tree_util.tree_leaves(value):
        a = jax.typeof(x)
        out.append((a.shape, a.dtype, a.weak_type))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class ArgSpec:
    """How a transform treats its arguments, fixed when it is built.

    Attributes:
      who: Name of the transform, for messages.
      static_argnums / static_argnames: As in `jax.jit` (a static argument may be passed by position or name).
      param_names: The function's positional parameter names (only needed with static arguments).
    """

    who: str
    static_argnums: tuple[int, ...] = ()
    static_argnames: tuple[str, ...] = ()
    param_names: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        fun: Callable[..., Any],
        who: str,
        static_argnums: int | Sequence[int] | None = (),
        static_argnames: str | Sequence[str] | None = (),
    ) -> ArgSpec:
        nums, names = parse_argnums(static_argnums), parse_argnames(static_argnames)
        return cls(who, nums, names, positional_names(fun) if (nums or names) else ())

    @property
    def has_static(self) -> bool:
        return bool(self.static_argnums or self.static_argnames)

    def bound(self) -> ArgSpec:
        """The spec of the same function with its first argument bound (a decorated method's ``self``)."""
        return dataclasses.replace(self, static_argnums=shift_argnums(self.static_argnums), param_names=())

    def split(self, nargs: int, kwargs: dict[str, Any]) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """(static positions, static keyword names) of one call."""
        if not self.has_static:
            return (), ()
        nums, names, params = self.static_argnums, self.static_argnames, self.param_names
        by_kw = [i for i in nums if nargs <= i < len(params) and params[i] in kwargs] if kwargs else []
        pos = resolve_argnums(tuple(i for i in nums if i not in by_kw), nargs, self.who)
        if names and params:
            extra = {i for i, n in enumerate(params[:nargs]) if n and n in names}
            pos = tuple(sorted(set(pos) | extra))
        if nums and kwargs and params:
            named = tuple(params[i] for i in nums if 0 <= i < len(params) and params[i])
            names = tuple(dict.fromkeys(names + named))
        return pos, names


@dataclasses.dataclass(frozen=True, eq=False)
class CallSignature:
    """One call's arguments, split and flattened once.

    Attributes:
      args / kwargs: The call's arguments as given.
      static_pos / static_names: Positions and keyword names of the static arguments.
      dyn_args / dyn_kwargs: The dynamic arguments.
      leaves / treedef: The flattened dynamic arguments.
      key: Hashable cache key: treedef, abstract values of the leaves, and the static values.
    """

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    static_pos: tuple[int, ...]
    static_names: tuple[str, ...]
    dyn_args: tuple[Any, ...]
    dyn_kwargs: dict[str, Any]
    leaves: list[Any]
    treedef: Any
    key: Hashable

    @classmethod
    def of(cls, spec: ArgSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallSignature:
        """Split and flatten a call (one flatten; the common case of JAX arrays takes one pass over avals)."""
        if not spec.has_static:
            leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
            try:
                key: Hashable = (treedef, tuple([x.aval for x in leaves]))
            except AttributeError:
                key = (treedef, _leaf_signatures(leaves, treedef, spec.who))
            return cls(args, kwargs, (), (), args, kwargs, leaves, treedef, key)
        pos, names = spec.split(len(args), kwargs)
        dyn_args = tuple(a for i, a in enumerate(args) if i not in pos)
        dyn_kwargs = {k: v for k, v in kwargs.items() if k not in names}
        statics = (tuple(args[i] for i in pos), tuple(sorted((k, v) for k, v in kwargs.items() if k in names)))
        _check_hashable(statics, spec.who)
        leaves, treedef = jax.tree_util.tree_flatten((dyn_args, dyn_kwargs))
        try:
            sig: tuple[Any, ...] = tuple([x.aval for x in leaves])
        except AttributeError:
            sig = _leaf_signatures(leaves, treedef, spec.who)
        return cls(args, kwargs, pos, names, dyn_args, dyn_kwargs, leaves, treedef, (treedef, sig, statics))

    def abstract(self) -> CallSignature:
        """The same signature with abstract leaves (`jax.ShapeDtypeStruct`s) in place of the arrays: the same
        structure and static arguments, no array kept alive.

        Its key is this signature's key, so a cache can trace it again later (`Dispatcher` revalidation), and a
        transform that reads the dynamic arguments' structure (in_axes, in_shardings) sees it whole.
        """
        leaves: list[Any] = [abstract(x) for x in self.leaves]
        dyn_args, dyn_kwargs = jax.tree_util.tree_unflatten(self.treedef, leaves)
        rest = iter(dyn_args)
        args = tuple(a if i in self.static_pos else next(rest) for i, a in enumerate(self.args))
        kwargs = {k: v if k in self.static_names else dyn_kwargs[k] for k, v in self.kwargs.items()}
        return dataclasses.replace(
            self, args=args, kwargs=kwargs, dyn_args=tuple(dyn_args), dyn_kwargs=dyn_kwargs, leaves=leaves
        )

    def leaf_names(self) -> list[str]:
        """``args[0]['w']``-style names of the dynamic leaves, in flattening order (for messages)."""
        return _leaf_names(self.treedef)

    def rebuild(self, leaves: Sequence[Any]) -> tuple[list[Any], dict[str, Any]]:
        """(args, kwargs) of a call with the dynamic leaves replaced by `leaves` and the statics as given."""
        dyn_args, dyn_kwargs = jax.tree_util.tree_unflatten(self.treedef, list(leaves))
        it = iter(dyn_args)
        call_args = [self.args[i] if i in self.static_pos else next(it) for i in range(len(self.args))]
        call_kwargs = {**dyn_kwargs, **{k: v for k, v in self.kwargs.items() if k in self.static_names}}
        return call_args, call_kwargs


def _leaf_names(treedef: Any) -> list[str]:
    dummy = jax.tree_util.tree_unflatten(treedef, [0] * treedef.num_leaves)
    out = []
    for path, _ in jax.tree_util.tree_flatten_with_path(dummy)[0]:
        head, *rest = path
        out.append(("args" if head.idx == 0 else "kwargs") + jax.tree_util.keystr(tuple(rest)))
    return out


def _leaf_signatures(leaves: list[Any], treedef: Any, who: str) -> tuple[Any, ...]:
    return tuple([leaf_signature(x, who, w) for x, w in zip(leaves, _leaf_names(treedef), strict=True)])


def _check_hashable(statics: tuple[Any, ...], who: str) -> None:
    try:
        hash(statics)
    except TypeError:
        raise ArgumentError(
            message(
                who,
                "a static argument is not hashable",
                "hashable values for static_argnums/static_argnames",
                f"{statics[0] + statics[1]!r:.100}",
                "pass it as a dynamic argument, or make it hashable (a tuple instead of a list)",
            )
        ) from None
