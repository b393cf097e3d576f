"""Stateful automatic differentiation: `grad`, `vector_grad`, `fwd_grad`, `jacrev`, `jacfwd` and `hessian`.

Passes, per call:
  1. Trace (once per signature, cached): `StatefulFunction` runs the user's Python body under
     `jax.make_jaxpr` and finds the states it touches and which of them it writes.
  2. Pure function: ``pure((grad_state_values, diff_args)) -> (value, (value, aux, new_written_values))``
     evaluates the traced jaxpr. The values of the `grad_states` and of the differentiated positional
     arguments come from its input; every other state value and argument is a constant.
  3. JAX transform: `jax.grad` / `jax.vjp` / `jax.jacrev` / `jax.jacfwd` / `jax.hessian` with
     ``has_aux=True`` is applied to `pure`. Written states travel as auxiliary data, so they are written back
     once (their new values) and never differentiated.
  4. Restructure: JAX's derivatives follow ``(grad_state_values, diff_args)``; they are rearranged into the
     structure the user asked for (`grad_states` as given, `argnums` as in JAX).

`vjp` and `jvp` (`_vjp_jvp.py`) reuse passes 1, 2 and 4 (`GradientTransform._prepare`) and apply `jax.vjp` /
`jax.jvp` themselves. With ``debug_nan=True``, `grad` and `vector_grad` check the result for NaN before writing
anything back (`_nan_check.py`).

State values are read with `read_values` and written with `write_back`, so these transforms record their
reads and writes in enclosing statemap traces and compose with `jit`, `scan` and the mapping transforms.

Caveats:
  - `grad_states` are fixed when the transform is created; a `Module` given as `grad_states` is expanded to
    the `ParamState`s it holds at that moment.
  - Only positional arguments can be differentiated; keyword arguments are constants, as in JAX.
"""

from __future__ import annotations

import functools
import inspect
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypedDict, Unpack

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import ArgumentError, MappingRuntimeError, describe_state, message, tree_aval
from .._state import ParamState, State, read_values, write_back
from ..nn._module import Module
from ._arguments import resolve_argnums
from ._decorator import Maker, makes
from ._make_jaxpr import StatefulFunction, Traced
from ._method import bind_method, bound_transforms, weak_partial
from ._nan_check import call_python, check_nan

__all__ = ["GradientTransform", "grad", "vector_grad", "fwd_grad", "jacrev", "jacfwd", "hessian"]

# A `grad_states` spec mirrors the structure the user gave, with each State replaced by its index into the
# list of distinct grad states (containers are dict/list/tuple, so an int is always a slot).
_Spec = Any


def _parse_grad_states(grad_states: Any, who: str) -> tuple[list[State], _Spec]:
    """Distinct states (first-seen order) and the spec used to rebuild derivatives in the user's structure."""
    states: list[State] = []
    index: dict[int, int] = {}

    def visit(x: Any, where: str) -> _Spec:
        if isinstance(x, State):
            k = index.get(id(x))
            if k is None:
                k = index[id(x)] = len(states)
                states.append(x)
            return k
        if isinstance(x, Module):
            return visit(x.states(ParamState), where)
        if isinstance(x, dict):
            return {key: visit(v, f"{where}[{key!r}]") for key, v in x.items()}
        if isinstance(x, list):
            return [visit(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, tuple):
            items = [visit(v, f"{where}[{i}]") for i, v in enumerate(x)]
            return type(x)(*items) if hasattr(x, "_fields") else tuple(items)
        found = tree_aval(x) if hasattr(x, "shape") else f"{type(x).__name__} {x!r:.60}"
        raise TypeError(
            message(
                who,
                f"grad_states{where} is not a State",
                "a State, a list/tuple/dict of States (e.g. `module.states(ParamState)`), or a Module",
                found,
                "pass the State itself (not its .value), or select states with `module.states(filter)`",
            )
        )

    return states, visit(grad_states, "")


def _rebuild(spec: _Spec, values: Sequence[Any]) -> Any:
    if isinstance(spec, int):
        return values[spec]
    if isinstance(spec, dict):
        return {key: _rebuild(v, values) for key, v in spec.items()}
    if isinstance(spec, list):
        return [_rebuild(v, values) for v in spec]
    items = [_rebuild(v, values) for v in spec]
    return type(spec)(*items) if hasattr(spec, "_fields") else tuple(items)


def _slot_values(spec: _Spec, tree: Any, n: int, who: str, what: str) -> list[Any]:
    """The inverse of `_rebuild`: `tree`, given in the structure of `grad_states`, as one value per distinct state.

    Raises:
      ArgumentError: `tree` does not have the containers (dict keys, list/tuple lengths) of `grad_states`.
    """
    out: list[Any] = [None] * n
    seen = [False] * n

    def mismatch(where: str, expected: str, found: Any) -> ArgumentError:
        return ArgumentError(
            message(
                who,
                f"{what}{where} does not have the structure of grad_states{where}",
                expected,
                f"{type(found).__name__} {tree_aval(found) if hasattr(found, 'shape') else repr(found)[:60]}",
                f"give {what} the containers of grad_states, with one value per State",
            )
        )

    def visit(s: _Spec, t: Any, where: str) -> None:
        if isinstance(s, int):
            if not seen[s]:
                out[s], seen[s] = t, True
            return
        if isinstance(s, dict):
            if not isinstance(t, dict) or set(t) != set(s):
                raise mismatch(where, f"a dict with the keys {sorted(map(repr, s))}", t)
            for key, sub in s.items():
                visit(sub, t[key], f"{where}[{key!r}]")
            return
        if not isinstance(t, (list, tuple)) or len(t) != len(s):
            raise mismatch(where, f"a list or tuple of {len(s)} values", t)
        for i, (sub, x) in enumerate(zip(s, t, strict=True)):
            visit(sub, x, f"{where}[{i}]")

    visit(spec, tree, "")
    return out


def _check_differentiable(states: Sequence[State], values: Sequence[Any], who: str) -> None:
    """Name the state when JAX would refuse an integer/bool/key grad state (JAX's message names no state)."""
    for s, v in zip(states, values, strict=True):
        for leaf in jax.tree_util.tree_leaves(v):
            dtype = getattr(leaf, "dtype", None)
            if dtype is None:
                dtype = jnp.result_type(leaf)
            if not jnp.issubdtype(dtype, np.inexact):
                raise TypeError(
                    message(
                        who,
                        f"{describe_state(s)} in grad_states holds a non-float value, which has no gradient",
                        "float or complex values in every grad state",
                        tree_aval(v),
                        "remove it from grad_states, or pass allow_int=True to get float0 (zero) gradients",
                    )
                )


# -- the JAX transforms applied to the pure function; each returns (derivatives, aux) -----------------------
# A pure function maps ``(grad_state_values, diff_args)`` to ``(value, (value, aux, new_written_values))``.
_Pure = Callable[[Any], tuple[Any, Any]]
_Apply = Callable[[_Pure, Any, dict[str, Any]], tuple[Any, Any]]


def _with_aux(transform: Callable[..., Callable[..., Any]]) -> _Apply:
    """Apply a JAX transform taking ``has_aux`` (`jax.grad`, `jax.jacrev`, ...) to the pure function."""

    def apply(pure: _Pure, diff: Any, opts: dict[str, Any]) -> tuple[Any, Any]:
        derivs, aux = transform(pure, has_aux=True, **opts)(diff)
        return derivs, aux

    return apply


def _vector_grad(pure: _Pure, diff: Any, opts: dict[str, Any]) -> tuple[Any, Any]:
    """The gradient of the sum of the outputs: `jax.vjp` with an all-ones cotangent (`opts` is empty)."""
    value, vjp_fn, aux = jax.vjp(pure, diff, has_aux=True)
    (g,) = vjp_fn(jax.tree_util.tree_map(jnp.ones_like, value))
    return g, aux


def _fwd_grad(pure: _Pure, diff: Any, opts: dict[str, Any]) -> tuple[Any, Any]:
    """The gradient of a scalar function by forward mode: `jax.jacfwd`, whose Jacobian of a scalar has the
    structure and shapes of the inputs (one `jax.jvp` per input element, batched by `jax.vmap`)."""

    def scalar(d: Any) -> tuple[Any, Any]:
        value, aux = pure(d)
        leaves = jax.tree_util.tree_leaves(value)
        if len(leaves) != 1 or jnp.shape(leaves[0]) != ():
            raise TypeError(
                message(
                    "fwd_grad",
                    "the function does not return a scalar",
                    "a scalar output (fwd_grad is the gradient of a scalar function)",
                    tree_aval(value),
                    "reduce the output (e.g. jnp.sum), or use jacfwd for the Jacobian of a vector output",
                )
            )
        return value, aux

    derivs, aux = jax.jacfwd(scalar, has_aux=True, **opts)(diff)
    return derivs, aux


def _product_only(pure: _Pure, diff: Any, opts: dict[str, Any]) -> tuple[Any, Any]:  # pragma: no cover - guard
    raise MappingRuntimeError("GradientTransform: vjp/jvp apply JAX themselves; this is a bug in statemap")


# kind -> (JAX transform, derivatives carry a leading level per output leaf, levels of the input structure)
_KINDS: dict[str, tuple[_Apply, bool, int]] = {
    "grad": (_with_aux(jax.grad), False, 1),
    "vector_grad": (_vector_grad, False, 1),
    "fwd_grad": (_fwd_grad, False, 1),
    "jacrev": (_with_aux(jax.jacrev), True, 1),
    "jacfwd": (_with_aux(jax.jacfwd), True, 1),
    "hessian": (_with_aux(jax.hessian), True, 2),
    # vjp and jvp use a GradientTransform for its trace and pure function only (`_prepare`): they apply
    # jax.vjp / jax.jvp themselves and return a function or tangents, not derivatives to restructure.
    "vjp": (_product_only, False, 1),
    "jvp": (_product_only, False, 1),
}
# Kinds refusing an integer grad state by default (vector_grad, vjp and jvp pass JAX's float0 through).
_REFUSE_INT = ("grad", "fwd_grad", "jacrev", "jacfwd", "hessian")

_Argnums = int | Sequence[int] | None
_P = ParamSpec("_P")


def _check_callable(fun: Any, kind: str) -> None:
    if not callable(fun):
        raise TypeError(
            message(
                kind,
                "the function to differentiate is not callable",
                "a function (or use it as a decorator)",
                f"{type(fun).__name__} {fun!r:.60}",
                f"pass a function: {kind}(f, ...) or @{kind}(...)",
            )
        )


def _argnums_error(kind: str, argnums: Any) -> TypeError:
    return TypeError(
        message(
            kind,
            "argnums is not an int or a sequence of ints",
            "an int, or a tuple of ints, naming positional arguments",
            f"argnums={argnums!r}",
            "pass e.g. argnums=0 or argnums=(0, 1)",
        )
    )


def _normalize_argnums(argnums: _Argnums, kind: str) -> tuple[int, ...] | None:
    """`argnums` as a tuple of ints (None stays None); a bool or a non-int entry is refused."""
    if argnums is None:
        return None
    if isinstance(argnums, int):
        if isinstance(argnums, bool):
            raise _argnums_error(kind, argnums)
        return (argnums,)
    if isinstance(argnums, (str, bytes)):  # iterable, but never a sequence of argument numbers
        raise _argnums_error(kind, argnums)
    try:
        positions = tuple(argnums)
    except TypeError:
        raise _argnums_error(kind, argnums) from None
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in positions):
        raise _argnums_error(kind, argnums)
    return positions


def _split_aux(out: Any, has_aux: bool, kind: str) -> tuple[Any, Any]:
    """``(value, aux)`` from what the function returned (aux is None without `has_aux`)."""
    if not has_aux:
        return out, None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(
            message(
                kind,
                "has_aux=True but the function did not return a pair",
                "a pair (output, aux)",
                f"{type(out).__name__} {tree_aval(out)}",
                "return `(output, aux)`, or set has_aux=False",
            )
        )
    value, aux = out
    return value, aux


class GradientTransform:
    """The callable returned by `grad`, `vector_grad`, `jacrev`, `jacfwd` and `hessian`.

    Call it like the original function. The Python body runs once per abstract signature (argument
    shapes/dtypes and shapes of the states it touches); later calls evaluate the cached trace.

    Attributes:
      origin_fun: The wrapped function.
      stateful: The `StatefulFunction` holding the traced signatures.
      grad_states: The distinct states differentiated, in the order first given.

    Examples:
      >>> w = sm.ParamState(jnp.array(3.0), name="w")
      >>> g = sm.transform.grad(lambda x: w.value * x, grad_states=w)
      >>> type(g).__name__, g.grad_states
      ('GradientTransform', (ParamState(name='w', value=f32[]),))
      >>> g(2.0)
      Array(2., dtype=float32, weak_type=True)
    """

    def __init__(
        self,
        fun: Callable[..., Any],
        kind: str,
        grad_states: Any = None,
        argnums: _Argnums = None,
        has_aux: bool | None = None,
        return_value: bool = False,
        debug_nan: bool = False,
        **options: Any,
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"GradientTransform: unknown kind {kind!r}; expected one of {sorted(_KINDS)}")
        _check_callable(fun, kind)
        self._fun = fun
        self._kind = kind
        self._apply, self._per_output, self._levels = _KINDS[kind]
        self._stateful = StatefulFunction(fun, name=kind)
        # The arguments, to make the twin serving a decorated method (`__get__`).
        self._settings = dict(grad_states=grad_states, argnums=argnums, has_aux=has_aux, return_value=return_value)
        self._settings.update(debug_nan=debug_nan, **options)
        self._states: list[State] = []
        self._spec: _Spec = None
        if grad_states is not None:
            self._states, self._spec = _parse_grad_states(grad_states, kind)
        if argnums is None and grad_states is None:
            argnums = 0
        self._single_arg = isinstance(argnums, int)
        self._argnums = _normalize_argnums(argnums, kind)
        self._has_aux = bool(has_aux)
        self._return_value = bool(return_value)
        self._options = options
        self._debug_nan = bool(debug_nan)
        self._check_ints = kind in _REFUSE_INT and not options.get("allow_int", False)
        self._arg_plans: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        # Per traced entry: for each state it touches, its index among the grad states (None if not one).
        self._slots: weakref.WeakKeyDictionary[Traced, list[int | None]] = weakref.WeakKeyDictionary()
        # updated=(): copying the wrapped callable's __dict__ would import another transform's internals.
        functools.update_wrapper(self, fun, updated=())

    # Properties, not instance attributes: a wrapper that copies our __dict__ must not pick them up.
    @property
    def origin_fun(self) -> Callable[..., Any]:
        """The wrapped function."""
        return self._fun

    @property
    def stateful(self) -> StatefulFunction:
        """The `StatefulFunction` holding the traced signatures."""
        return self._stateful

    @property
    def grad_states(self) -> tuple[State, ...]:
        """The distinct states differentiated, in the order first given."""
        return tuple(self._states)

    # -- helpers --------------------------------------------------------------------------------------------
    def _arg_plan(self, nargs: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(sorted distinct positions to differentiate, index into them for each argnums entry)."""
        plan = self._arg_plans.get(nargs)
        if plan is None:
            if self._argnums is None:
                plan = ((), ())
            else:
                resolve_argnums(self._argnums, nargs, self._kind, "argnums")  # range check and its message
                user = [i + nargs if i < 0 else i for i in self._argnums]
                positions = tuple(sorted(set(user)))
                plan = (positions, tuple(positions.index(i) for i in user))
            self._arg_plans[nargs] = plan
        return plan

    def _assemble(self, d: Any, pick: tuple[int, ...]) -> Any:
        """Derivatives shaped like ``(grad_state_values, diff_args)`` → the structure the user asked for."""
        state_d, arg_d = d
        if self._argnums is None:
            return _rebuild(self._spec, state_d)
        args_out = arg_d[pick[0]] if self._single_arg else tuple(arg_d[j] for j in pick)
        if self._spec is None:
            return args_out
        return _rebuild(self._spec, state_d), args_out

    def _restructure(self, derivs: Any, diff_tree: Any, value: Any, pick: tuple[int, ...]) -> Any:
        def level(x: Any, depth: int) -> Any:
            if depth > 1:
                x = diff_tree.unflatten([level(sub, depth - 1) for sub in diff_tree.flatten_up_to(x)])
            return self._assemble(x, pick)

        if not self._per_output:
            return level(derivs, self._levels)
        out_tree: Any = jax.tree_util.tree_structure(value)
        return out_tree.unflatten([level(sub, self._levels) for sub in out_tree.flatten_up_to(derivs)])

    def _pure(
        self,
        entry: Traced,
        slots: list[int | None],
        others: list[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        positions: tuple[int, ...],
        python: bool = False,
    ) -> _Pure:
        """The pure function of a call; with `python`, it runs the Python body again instead of the traced
        jaxpr (op by op, so `jax.debug_nans` sees every operation) and returns no new state values."""
        has_aux = self._has_aux
        kind = self._kind
        fun = self._fun

        def pure(diff: Any) -> tuple[Any, Any]:
            grad_vals, diff_args = diff
            call_args = list(args)
            for p, v in zip(positions, diff_args, strict=True):
                call_args[p] = v
            it = iter(others)
            values = [next(it) if k is None else grad_vals[k] for k in slots]
            new_values: list[Any] = []
            if python:
                out = call_python(fun, call_args, kwargs, entry.states, values, kind)
            else:
                arg_leaves = jax.tree_util.tree_leaves((call_args, kwargs))
                new_values, out = entry.call_flat(arg_leaves, values)
            value, aux = _split_aux(out, has_aux, kind)
            return value, (value, aux, new_values)

        return pure

    # -- call -----------------------------------------------------------------------------------------------
    def _prepare(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], python: bool = False
    ) -> tuple[_Pure, Any, Traced, tuple[int, ...]]:
        """Passes 1-2 of a call: (pure function, its input ``(grad_state_values, diff_args)``, the traced
        entry, the index into the differentiated arguments of each argnums entry). Reads states; writes none.
        With `python`, the pure function runs the Python body (see `_pure`)."""
        sf = self._stateful
        sig = sf.signature(args, kwargs)
        positions, pick = self._arg_plan(len(args))
        entry = sf.lookup(sig)
        slots = self._slots.get(entry)
        if slots is None:
            grad_index = {id(s): k for k, s in enumerate(self._states)}
            slots = self._slots[entry] = [grad_index.get(id(s)) for s in entry.states]
        others = read_values([s for s, k in zip(entry.states, slots, strict=True) if k is None])
        grad_vals = read_values(self._states)
        if self._check_ints:
            _check_differentiable(self._states, grad_vals, self._kind)
        diff = (grad_vals, tuple(args[p] for p in positions))
        return self._pure(entry, slots, others, args, kwargs, positions, python), diff, entry, pick

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        pure, diff, entry, pick = self._prepare(args, kwargs)
        derivs, (value, aux, new_values) = self._apply(pure, diff, self._options)
        if self._debug_nan:
            names = [describe_state(s) for s in self._states]
            names += [f"argument args[{p}]" for p in self._arg_plan(len(args))[0]]

            def rerun() -> Any:
                return self._apply(self._prepare(args, kwargs, python=True)[0], diff, self._options)

            check_nan(self._kind, names, diff, value, derivs, rerun)
        write_back(entry.states, dict(zip(entry.out_states, new_values, strict=True)))
        derivs = self._restructure(derivs, jax.tree_util.tree_structure(diff), value, pick)
        out: tuple[Any, ...] = (derivs,)
        if self._return_value:
            out += (value,)
        if self._has_aux:
            out += (aux,)
        return out if len(out) > 1 else derivs

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        # As a method: a transform per instance (cached, holding the instance weakly) of the method with the
        # instance bound, like `grad(obj.method)`: argnums counts the arguments after `self`.
        if obj is None:
            return self
        return bind_method(self, obj, self._for_instance)

    def _for_instance(self, obj: Any) -> GradientTransform:
        bound = GradientTransform(weak_partial(self._fun, obj), self._kind, **self._settings)
        bound._states, bound._spec = self._states, self._spec  # a Module stays expanded as at creation
        return bound

    def clear_cache(self) -> None:
        """Forget every traced signature (including those of the instances of a decorated method)."""
        self._stateful.clear_cache()
        for bound in bound_transforms(self):
            bound.clear_cache()


# -- public functions --------------------------------------------------------------------------------------
# The six functions differ only in which options they take and in the order they take them positionally
# (brainstate's, so `grad(f, states)` keeps working). Each option is declared once, in the TypedDicts below;
# each function's order is data (`_POSITIONAL`), its runtime signature built from it (`_signature`).
_Fun = Callable[..., Any]
_Decorator = Callable[[_Fun], GradientTransform]
_Made = GradientTransform | _Decorator


class _Options(TypedDict, total=False):
    """The options every function of the grad family takes (documented in `grad`)."""

    grad_states: Any
    argnums: _Argnums
    has_aux: bool | None
    return_value: bool


class _VectorGradOptions(_Options, total=False):
    debug_nan: bool


class _JacfwdOptions(_Options, total=False):
    holomorphic: bool


class _JacrevOptions(_JacfwdOptions, total=False):
    allow_int: bool


class _GradOptions(_JacrevOptions, _VectorGradOptions, total=False):
    """All the options: `grad` takes every one."""


_DEFAULTS: dict[str, Any] = {
    "grad_states": None,
    "argnums": None,
    "has_aux": None,
    "return_value": False,
    "holomorphic": False,
    "allow_int": False,
    "debug_nan": False,
}

# Function (and `GradientTransform` kind) -> its options, in the positional order after `fun`.
_POSITIONAL: dict[str, tuple[str, ...]] = {
    "grad": ("grad_states", "argnums", "holomorphic", "allow_int", "has_aux", "return_value", "debug_nan"),
    "vector_grad": ("grad_states", "argnums", "return_value", "has_aux", "debug_nan"),
    "fwd_grad": ("grad_states", "argnums", "return_value", "has_aux", "holomorphic"),
    "jacrev": ("grad_states", "argnums", "has_aux", "return_value", "holomorphic", "allow_int"),
    "jacfwd": ("grad_states", "argnums", "has_aux", "return_value", "holomorphic"),
    "hessian": ("grad_states", "argnums", "return_value", "holomorphic", "has_aux"),
}


def _signature(kind: str) -> inspect.Signature:
    """The signature of the function `kind`: ``(fun=None, <its options, positional or keyword>)``."""
    hints = typing.get_type_hints(_GradOptions)
    every = inspect.Parameter.POSITIONAL_OR_KEYWORD
    fun = inspect.Parameter("fun", every, default=None, annotation=_Fun | None)
    options = [inspect.Parameter(n, every, default=_DEFAULTS[n], annotation=hints[n]) for n in _POSITIONAL[kind]]
    return inspect.Signature([fun, *options], return_annotation=_Made)


_SIGNATURES = {kind: _signature(kind) for kind in _POSITIONAL}


def _family(front_end: Callable[Concatenate[_Fun | None, _P], Any]) -> Maker[_P, GradientTransform]:
    """Give a function of the family the signature of its kind (its name), typed as a `Maker`."""
    front_end.__signature__ = _SIGNATURES[front_end.__name__]  # type: ignore[attr-defined]
    return makes(GradientTransform)(front_end)


def _call_error(kind: str, reason: str, given: int) -> TypeError:
    """What Python says of a plain function called so, from `inspect.Signature.bind`'s reason."""
    if reason == "too many positional arguments":
        most = len(_SIGNATURES[kind].parameters)
        reason = f"takes from 0 to {most} positional arguments but {given} were given"
    elif reason.startswith("multiple values"):
        reason = "got " + reason
    return TypeError(f"{kind}() {reason}")


def _front_end(kind: str, fun: _Fun | None, args: tuple[Any, ...], options: Mapping[str, object]) -> _Made:
    """The body of each function: bind its arguments as its signature says; the `GradientTransform` of
    `fun`, or with `fun` None the decorator making it (``@grad(...)``)."""
    try:
        bound = _SIGNATURES[kind].bind(fun, *args, **options)
    except TypeError as e:
        raise _call_error(kind, str(e), 1 + len(args)) from None
    bound.apply_defaults()
    settings = dict(bound.arguments)
    del settings["fun"]

    def make(f: _Fun) -> GradientTransform:
        return GradientTransform(f, kind, **settings)

    return make if fun is None else make(fun)


@_family
def grad(
    fun: Callable[..., Any] | None = None, *args: Any, **options: Unpack[_GradOptions]
) -> GradientTransform | _Decorator:
    """Gradient of a scalar function with respect to states and/or positional arguments, like `jax.grad`.

    States the function writes (counters, running statistics, RNG keys) are not differentiated: each call
    writes their new values back once. The Python body runs once per abstract signature; if it raises, every
    state keeps its previous value.

    Args:
      fun: Function returning a scalar (or ``(scalar, aux)`` with `has_aux`). It may read and write `State`s
        it closes over; don't pass states as arguments.
      *args: The options, positionally, in this order (brainstate's): `grad_states`, `argnums`, `holomorphic`,
        `allow_int`, `has_aux`, `return_value`, `debug_nan`.
      grad_states: States to differentiate: a `State`, a list/tuple/dict of States (for example
        ``module.states(ParamState)``, a dict path → State), or a `statemap.nn.Module`, meaning all the
        `ParamState`s it holds (a dict path → State). The gradients come back in the same structure. A state
        the function never reads gets a zero gradient.
      argnums: Positional argument(s) to differentiate, as in `jax.grad`. Defaults to 0 when `grad_states`
        is None, else to no argument.
      holomorphic: As in `jax.grad`.
      allow_int: As in `jax.grad`; integer states or arguments get float0 gradients.
      has_aux: If True, `fun` returns ``(value, aux)`` and `aux` is returned too.
      return_value: If True, the value of `fun` is returned too.
      debug_nan: If True, each call checks the differentiated inputs, the value and the gradients for NaN
        and raises `NaNError` (a `FloatingPointError`) naming the first of them holding one and, for an
        eager call, the first operation that produced it (found by evaluating the call again under
        `jax.debug_nans`). Under `jit` or another JAX trace the check runs on the host through
        `jax.debug.callback`: JAX reports the error as a `JaxRuntimeError` whose message contains ours.
        Nothing is written back when it raises.

    Returns:
      A `GradientTransform`, called like `fun`. It returns the gradients: those of `grad_states` only,
      those of `argnums` only (a single gradient for an int, a tuple for a sequence), or
      ``(state_grads, arg_grads)`` when both are given. With `return_value` and/or `has_aux` it returns
      ``(grads, value)``, ``(grads, aux)`` or ``(grads, value, aux)``: grads first, then the value, then aux.
      Used as a decorator with arguments when `fun` is None. On a method, the instance is bound first, as
      in ``grad(obj.method)``: `argnums` counts the arguments after ``self``.

    Raises:
      TypeError: `grad_states` holds something that is not a State, or (without `allow_int`) a grad state
        holds an integer value.
      StateArgumentError: a State is passed as an argument.
      NaNError: with `debug_nan`, a NaN in the inputs, the value or the gradients.

    Examples:
      >>> w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")
      >>> n = sm.ShortTermState(jnp.array(0), name="n")
      >>> @sm.transform.grad(grad_states=w, return_value=True)
      ... def loss(x):
      ...     n.value = n.value + 1
      ...     return jnp.sum(w.value * x) ** 2
      >>> loss(jnp.array([1.0, 1.0]))
      (Array([6., 6.], dtype=float32), Array(9., dtype=float32))
      >>> n.value
      Array(1, dtype=int32, weak_type=True)

      With both states and arguments, state gradients come first:

      >>> gw, gx = sm.transform.grad(lambda x: jnp.sum(w.value * x), grad_states=w, argnums=0)(jnp.ones(2))
      >>> gw, gx
      (Array([1., 1.], dtype=float32), Array([1., 2.], dtype=float32))

      With `debug_nan`, a NaN gradient raises before any state is written:

      >>> sm.transform.grad(lambda x: jnp.sum(jnp.sqrt(x)), debug_nan=True)(jnp.array([-1.0, 4.0]))
      Traceback (most recent call last):
      ...
      statemap._errors.NaNError: grad: NaN in the value of the function
      ...
    """
    return _front_end("grad", fun, args, options)


@_family
def vector_grad(
    fun: Callable[..., Any] | None = None, *args: Any, **options: Unpack[_VectorGradOptions]
) -> GradientTransform | _Decorator:
    """Gradient of a vector (or pytree) output, pulled back with an all-ones cotangent.

    Equivalent to the gradient of the sum of the outputs: ``vjp(fun)(ones_like(out))``. Useful for
    element-wise functions, where it gives the element-wise derivative. States and results are handled as
    in `grad`.

    Args:
      fun: Function returning an array or pytree of arrays (or ``(output, aux)`` with `has_aux`).
      *args: The options, positionally, in this order: `grad_states`, `argnums`, `return_value`, `has_aux`,
        `debug_nan`.
      grad_states / argnums / return_value / has_aux / debug_nan: As in `grad`.

    Returns:
      A `GradientTransform` returning the gradients (then the value, then aux), as `grad` does.

    Examples:
      >>> x = sm.State(jnp.array([0.0, 1.0, 2.0]), name="x")
      >>> sm.transform.vector_grad(lambda: x.value ** 2, grad_states=x)()
      Array([0., 2., 4.], dtype=float32)
    """
    return _front_end("vector_grad", fun, args, options)


@_family
def fwd_grad(
    fun: Callable[..., Any] | None = None, *args: Any, **options: Unpack[_JacfwdOptions]
) -> GradientTransform | _Decorator:
    """Gradient of a scalar function computed by forward mode, with respect to states and/or arguments.

    Same result and structure as `grad`, computed with `jax.jacfwd` (one `jax.jvp` per input element, along
    each vector of the standard basis, batched with `jax.vmap`) instead of reverse mode: no residuals are
    stored, which suits functions with few inputs or ones reverse mode cannot differentiate (a
    `jax.lax.while_loop`). It is the exact gradient, not a random-tangent estimate. States are handled as
    in `grad`.

    Args:
      fun: Function returning a scalar (or ``(scalar, aux)`` with `has_aux`).
      *args: The options, positionally, in this order: `grad_states`, `argnums`, `return_value`, `has_aux`,
        `holomorphic`.
      grad_states / argnums / return_value / has_aux: As in `grad`.
      holomorphic: As in `jax.jacfwd`.

    Returns:
      A `GradientTransform` returning the gradients (then the value, then aux), as `grad` does.

    Raises:
      TypeError: `fun` does not return a scalar, or a grad state holds an integer value.

    Examples:
      >>> w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")
      >>> f = lambda x: jnp.sum(w.value ** 2 * x)
      >>> sm.transform.fwd_grad(f, grad_states=w)(3.0)
      Array([ 6., 12.], dtype=float32)
      >>> sm.transform.fwd_grad(lambda: sm.transform.while_loop(lambda v: v < 10.0, lambda v: v * w.value[1],
      ...                                                      w.value[0]), grad_states=w)()
      Array([16.,  32.], dtype=float32)
    """
    return _front_end("fwd_grad", fun, args, options)


@_family
def jacrev(
    fun: Callable[..., Any] | None = None, *args: Any, **options: Unpack[_JacrevOptions]
) -> GradientTransform | _Decorator:
    """Jacobian by reverse mode, like `jax.jacrev`, with respect to states and/or positional arguments.

    For each output leaf, the Jacobian has the structure described in `grad` (state Jacobians, argument
    Jacobians, or both), each leaf of shape ``output.shape + input.shape``. States are handled as in `grad`.

    Args:
      fun: Function returning an array or pytree of arrays (or ``(output, aux)`` with `has_aux`).
      *args: The options, positionally, in this order: `grad_states`, `argnums`, `has_aux`, `return_value`,
        `holomorphic`, `allow_int`.
      grad_states / argnums / has_aux / return_value: As in `grad`.
      holomorphic / allow_int: As in `jax.jacrev`.

    Returns:
      A `GradientTransform` returning the Jacobians (then the value, then aux).

    Examples:
      >>> w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")
      >>> sm.transform.jacrev(lambda x: w.value * x, grad_states=w)(jnp.array([3.0, 4.0]))
      Array([[3., 0.],
             [0., 4.]], dtype=float32)
    """
    return _front_end("jacrev", fun, args, options)


@_family
def jacfwd(
    fun: Callable[..., Any] | None = None, *args: Any, **options: Unpack[_JacfwdOptions]
) -> GradientTransform | _Decorator:
    """Jacobian by forward mode, like `jax.jacfwd`, with respect to states and/or positional arguments.

    Same results and structure as `jacrev`; cheaper when there are fewer inputs than outputs.

    Args:
      fun: Function returning an array or pytree of arrays (or ``(output, aux)`` with `has_aux`).
      *args: The options, positionally, in this order: `grad_states`, `argnums`, `has_aux`, `return_value`,
        `holomorphic`.
      grad_states / argnums / has_aux / return_value: As in `grad`; `holomorphic` as in `jax.jacfwd`.

    Returns:
      A `GradientTransform` returning the Jacobians (then the value, then aux).

    Examples:
      >>> w = sm.ParamState(jnp.array(2.0), name="w")
      >>> jw, jx = sm.transform.jacfwd(lambda x: w.value * x, grad_states=w, argnums=0)(jnp.array([1.0, 3.0]))
      >>> jw, jx
      (Array([1., 3.], dtype=float32), Array([[2., 0.],
             [0., 2.]], dtype=float32))
    """
    return _front_end("jacfwd", fun, args, options)


@_family
def hessian(
    fun: Callable[..., Any] | None = None, *args: Any, **options: Unpack[_JacfwdOptions]
) -> GradientTransform | _Decorator:
    """Hessian of a scalar function, like `jax.hessian`, with respect to states and/or positional arguments.

    The result is nested twice: for each input (as structured in `grad`), the second derivatives with respect
    to each input in the same structure. With both `grad_states` and `argnums` the top level is
    ``(state_part, arg_part)`` and each leaf of it holds another ``(state_part, arg_part)``.

    Args:
      fun: Function returning a scalar (or ``(scalar, aux)`` with `has_aux`).
      *args: The options, positionally, in this order: `grad_states`, `argnums`, `return_value`, `holomorphic`,
        `has_aux`.
      grad_states / argnums / return_value / has_aux: As in `grad`; `holomorphic` as in `jax.hessian`.

    Returns:
      A `GradientTransform` returning the Hessian (then the value, then aux).

    Examples:
      >>> w = sm.ParamState(jnp.array([1.0, 2.0]), name="w")
      >>> sm.transform.hessian(lambda: jnp.sum(w.value ** 3), grad_states=w)()
      Array([[ 6.,  0.],
             [ 0., 12.]], dtype=float32)
    """
    return _front_end("hessian", fun, args, options)
