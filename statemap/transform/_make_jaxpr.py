"""`StatefulFunction`: turn a function that closes over states into a pure function of (state values, args).

One abstract trace per signature (`jax.make_jaxpr`) runs the user's Python body once. While it runs, each state
becomes a jaxpr input at its first touch (`_compat.new_trace_input`), so the trace finds which states the function
reads and writes without a second pass. The result, a `Traced` entry, is cached by the abstract signature of the
arguments and the static values; transforms evaluate its jaxpr (never the Python body) on later calls.

Caveats:
  - A state whose shape changes between calls makes the entry stale; consumers check `Traced.state_sigs` (or, for
    `jit`, JAX's own signature check) and retrace.
  - States created during the trace that still hold tracers afterwards are marked dead: reading them raises
    `TraceContextError` instead of leaking a tracer.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
from jax.extend import core as jex_core

from .. import _compat
from .._errors import (
    ArgumentError,
    StateArgumentError,
    StatemapError,
    describe_state,
    message,
    short_aval,
    without_jax_note,
)
from .._state import State
from .._trace import CONTEXT, StateTrace, catch_new_states

__all__ = ["StatefulFunction", "make_jaxpr", "Traced"]

_SCALAR_TYPES = (int, float, bool, complex)
_tree_flatten = jax.tree_util.tree_flatten


def normalize_argnums(argnums: int | Sequence[int] | None, what: str = "static_argnums") -> tuple[int, ...]:
    if argnums is None:
        return ()
    if isinstance(argnums, int):
        return (argnums,)
    try:
        out = tuple(argnums)
    except TypeError:
        raise TypeError(f"{what} must be an int or a sequence of ints, got {argnums!r}") from None
    if not all(isinstance(i, int) for i in out):
        raise TypeError(f"{what} must be an int or a sequence of ints, got {argnums!r}")
    return out


def normalize_argnames(argnames: str | Sequence[str] | None) -> tuple[str, ...]:
    if argnames is None:
        return ()
    if isinstance(argnames, str):
        return (argnames,)
    return tuple(argnames)


def resolve_argnums(argnums: tuple[int, ...], nargs: int, who: str, what: str = "static_argnums") -> tuple[int, ...]:
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


def positional_names(fun: Callable) -> tuple[str, ...]:
    """Names of `fun`'s positional-or-keyword parameters, in order (empty when it has no signature)."""
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


def static_split(
    nargs: int,
    kwargs: dict,
    static_argnums: tuple[int, ...],
    static_argnames: tuple[str, ...],
    param_names: tuple[str, ...],
    who: str,
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(static positions, static keyword names) of one call; like `jax.jit`, a static argument may be passed
    either by position or by name (matched through the function's signature)."""
    if static_argnums and param_names and kwargs:
        # A static argument passed by keyword is not positional in this call.
        by_kw = [i for i in static_argnums if nargs <= i < len(param_names) and param_names[i] in kwargs]
        pos = resolve_argnums(tuple(i for i in static_argnums if i not in by_kw), nargs, who)
    else:
        pos = resolve_argnums(static_argnums, nargs, who) if static_argnums else ()
    names = static_argnames
    if param_names:
        if static_argnames:
            extra = tuple(i for i, n in enumerate(param_names[:nargs]) if n and n in static_argnames)
            if extra:
                pos = tuple(sorted(set(pos) | set(extra)))
        if static_argnums and kwargs:
            by_name = tuple(param_names[i] for i in static_argnums if 0 <= i < len(param_names) and param_names[i])
            if by_name:
                names = tuple(dict.fromkeys(names + by_name))
    return pos, names


def leaf_signature(x: Any, who: str, where: str) -> Any:
    """Abstract signature of one argument leaf: (shape, dtype, weak_type), or its Python scalar type."""
    try:
        sig = (x.shape, x.dtype, getattr(x, "weak_type", False))
    except AttributeError:
        pass
    else:
        if getattr(x.dtype, "kind", None) not in ("O", "S", "U", "V"):
            return sig
    if type(x) in _SCALAR_TYPES:
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


def value_signature(value: Any) -> tuple:
    """Abstract signature of a state's value: the avals of its leaves.

    `jax.typeof` gives the same answer for a Python scalar and for the weak-typed tracer that stands for it
    inside a trace, so a state holding ``0`` is not mistaken for a changed state
    (tests/test_jit.py::test_state_holding_python_scalar).
    """
    out = []
    for x in jax.tree_util.tree_leaves(value):
        a = jax.typeof(x)
        out.append((a.shape, a.dtype, a.weak_type))  # not the sharding: a pmap output's differs from its input's
    return tuple(out)


def state_signature(state: State) -> tuple:
    return value_signature(state._value)


def leaf_names(dyn_args: Sequence[Any], dyn_kwargs: dict) -> list[str]:
    """``args[0]['w']``-style names of the leaves of ``(dyn_args, dyn_kwargs)``, in flattening order."""
    flat = jax.tree_util.tree_flatten_with_path((list(dyn_args), dyn_kwargs))[0]
    out = []
    for path, _ in flat:
        head, *rest = path
        out.append(("args" if head.idx == 0 else "kwargs") + jax.tree_util.keystr(tuple(rest)))
    return out


def signature_key(
    args: tuple,
    kwargs: dict,
    static_argnums: tuple[int, ...],
    static_argnames: tuple[str, ...],
    name: str,
    param_names: tuple[str, ...] = (),
) -> tuple[Hashable, list[Any]]:
    """(cache key, dynamic argument leaves): the key holds static values and the arguments' abstract signature.

    This runs on every warm call of every transform, so the common case (no static arguments, JAX arrays) is
    one flatten and one tuple of avals.
    """
    if not (static_argnums or static_argnames):
        leaves, tree = _tree_flatten((args, kwargs))
        try:
            return (tree, tuple([x.aval for x in leaves])), leaves
        except AttributeError:
            pass
    if static_argnums or static_argnames:
        static_pos, static_names = static_split(len(args), kwargs, static_argnums, static_argnames, param_names, name)
    else:
        static_pos, static_names = (), ()
    if static_pos:
        statics = tuple(args[i] for i in static_pos)
        dyn_args: Sequence[Any] = [a for i, a in enumerate(args) if i not in static_pos]
    else:
        statics = ()
        dyn_args = args
    if static_names and kwargs:
        skw = tuple(sorted((k, v) for k, v in kwargs.items() if k in static_names))
        dkw = {k: v for k, v in kwargs.items() if k not in static_names}
    else:
        skw = ()
        dkw = kwargs
    leaves, tree = jax.tree_util.tree_flatten((dyn_args, dkw))
    try:
        sig = tuple([x.aval for x in leaves])  # jax.Array and tracers: hashable (shape, dtype, weak_type)
    except AttributeError:
        names = leaf_names(dyn_args, dkw)
        sig = tuple([leaf_signature(x, name, w) for x, w in zip(leaves, names, strict=True)])
    key = (tree, sig, statics, skw) if (statics or skw) else (tree, sig)
    if statics or skw:
        try:
            hash((statics, skw))
        except TypeError:
            raise ArgumentError(
                message(
                    name,
                    "a static argument is not hashable",
                    "hashable values for static_argnums/static_argnames",
                    f"{statics + skw!r:.100}",
                    "pass it as a dynamic argument, or make it hashable (a tuple instead of a list)",
                )
            ) from None
    return key, leaves


class Traced:
    """One traced signature of a stateful function: its jaxpr, states and roles.

    Attributes:
      jaxpr: ClosedJaxpr with inputs (argument leaves..., state leaves...) and outputs
        (result leaves..., leaves of the states in `out_states`...).
      states: States touched, in first-touch order.
      written / read: Per state, whether it was written / read before being written.
      out_states: Indices (into `states`) whose new values are outputs.
    """

    __slots__ = (
        "jaxpr",
        "states",
        "written",
        "read",
        "out_states",
        "state_treedefs",
        "state_nleaves",
        "out_treedef",
        "n_out",
        "state_sigs",
        "fn",
        "cacheable",
        "__weakref__",
    )

    def __init__(self, jaxpr, states, written, read, out_states, state_treedefs, out_treedef, n_out, cacheable):
        self.jaxpr = jaxpr
        self.states = tuple(states)
        self.written = tuple(written)
        self.read = tuple(read)
        self.out_states = tuple(out_states)
        self.state_treedefs = tuple(state_treedefs)
        self.state_nleaves = tuple(t.num_leaves for t in state_treedefs)
        self.out_treedef = out_treedef
        self.n_out = n_out
        self.state_sigs: tuple = ()
        self.fn = jex_core.jaxpr_as_fun(jaxpr)
        self.cacheable = cacheable

    def call_flat(self, arg_leaves: Sequence[Any], state_values: Sequence[Any]) -> tuple[list[Any], Any]:
        """Evaluate the jaxpr: state values (pytrees, order of `states`) → (new values of out_states, result)."""
        flat_states = [leaf for v in state_values for leaf in jax.tree_util.tree_leaves(v)]
        outs = self.fn(*arg_leaves, *flat_states)
        result = jax.tree_util.tree_unflatten(self.out_treedef, outs[: self.n_out])
        new_values = []
        pos = self.n_out
        for i in self.out_states:
            n = self.state_nleaves[i]
            new_values.append(jax.tree_util.tree_unflatten(self.state_treedefs[i], outs[pos : pos + n]))
            pos += n
        return new_values, result

    def is_stale(self) -> bool:
        """True when a touched state's value no longer has the shape/dtype it was traced with."""
        try:
            return tuple(state_signature(s) for s in self.states) != self.state_sigs
        except Exception:
            return True


def _check_no_state(tree: Any, who: str, what: str) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, State):
            raise StateArgumentError(
                message(
                    who,
                    " ".join(x for x in (what, jax.tree_util.keystr(path), "is", describe_state(leaf)) if x),
                    "arrays or pytrees of arrays",
                    f"a {type(leaf).__name__} object",
                    "return `s.value` instead of the state itself",
                )
            )


def _poison(states: Sequence[State], who: str) -> None:
    for s in states:
        if any(_compat.is_tracer(x) for x in jax.tree_util.tree_leaves(s._value)):
            s._dead = who


def default_state_aval(state: State, leaf: Any) -> Any:
    return jax.typeof(leaf)


def trace_stateful(
    fun: Callable,
    args: tuple,
    kwargs: dict,
    *,
    static_argnums: tuple[int, ...] = (),
    static_argnames: tuple[str, ...] = (),
    axis_env: Sequence[tuple[Hashable, int]] | None = None,
    return_only_write: bool = True,
    name: str = "StatefulFunction",
    state_aval: Callable[[State, Any], Any] = default_state_aval,
    abstract_args: tuple | None = None,
    param_names: tuple[str, ...] = (),
) -> Traced:
    """Trace `fun(*args, **kwargs)` once; see `Traced`. `abstract_args`, if given, replaces the dynamic leaves."""
    static_pos, static_names = static_split(len(args), kwargs, static_argnums, static_argnames, param_names, name)
    dyn_args = [a for i, a in enumerate(args) if i not in static_pos]
    dyn_kwargs = {k: v for k, v in kwargs.items() if k not in static_names}
    leaves, in_tree = jax.tree_util.tree_flatten((dyn_args, dyn_kwargs))
    for leaf, where in zip(leaves, leaf_names(dyn_args, dyn_kwargs), strict=True):
        leaf_signature(leaf, name, where)
    if abstract_args is not None:
        leaves = list(abstract_args)
    info: dict[str, Any] = {}

    def traced(*flat: Any) -> list[Any]:
        d_args, d_kwargs = jax.tree_util.tree_unflatten(in_tree, flat)
        it = iter(d_args)
        call_args = [args[i] if i in static_pos else next(it) for i in range(len(args))]
        call_kwargs = {**d_kwargs, **{k: v for k, v in kwargs.items() if k in static_names}}
        trace = _compat.current_trace()

        def hook(state: State) -> Any:
            vleaves, vtree = jax.tree_util.tree_flatten(state._value)
            return jax.tree_util.tree_unflatten(
                vtree, [_compat.new_trace_input(trace, state_aval(state, x)) for x in vleaves]
            )

        with catch_new_states() as caught, StateTrace(hook, name) as st:
            try:
                out = fun(*call_args, **call_kwargs)
                _check_no_state(out, name, "the function returned")
                out_leaves, out_tree = jax.tree_util.tree_flatten(out)
                n_states = len(st.states)
                picked = [i for i in range(n_states) if st.written[i] or not return_only_write]
                treedefs = [jax.tree_util.tree_structure(s._value) for s in st.states]
                state_out = [x for i in picked for x in jax.tree_util.tree_leaves(st.states[i]._value)]
                info.update(
                    states=list(st.states),
                    written=list(st.written),
                    read=list(st.read),
                    picked=picked,
                    treedefs=treedefs,
                    out_tree=out_tree,
                    n_out=len(out_leaves),
                    in_treedefs=[jax.tree_util.tree_structure(v) for v in st.originals],
                    originals=list(st.originals),
                )
                return out_leaves + state_out
            finally:
                st.restore()
                _poison(caught.states, name)

    try:
        closed = jax.make_jaxpr(traced, axis_env=axis_env)(*leaves)
    except StatemapError as e:
        raise without_jax_note(e) from None
    except Exception as e:
        fname = getattr(fun, "__qualname__", None) or repr(fun)
        e.add_note(f"(raised while {name} traced {fname})")
        raise
    cacheable = not any(_compat.is_tracer(c) for c in closed.consts)
    entry = Traced(
        closed,
        info["states"],
        info["written"],
        info["read"],
        info["picked"],
        info["in_treedefs"],
        info["out_tree"],
        info["n_out"],
        cacheable,
    )
    for i in entry.out_states:
        if info["treedefs"][i] != info["in_treedefs"][i]:  # pragma: no cover - State.value setter checks first
            raise StatemapError(f"{name}: {describe_state(entry.states[i])} changed pytree structure")
    entry.state_sigs = tuple(value_signature(v) for v in info["originals"])
    return entry


class StatefulFunction:
    """A function that closes over states, seen as a pure function of (state values, arguments).

    The first call of each abstract signature traces the Python body once, finding the states it reads and
    writes; later calls with the same signature reuse the trace. Use it to inspect a function or to build new
    transforms; `jit`, `grad`, `scan`… are built on it.

    Args:
      fun: The function. It may read and write `State`s it closes over.
      static_argnums / static_argnames: Arguments treated as compile-time constants (must be hashable).
      axis_env: ``[(axis_name, size)]`` pairs naming axes that collectives (`jax.lax.psum`…) may use.
      return_only_write: If True (default), only written states' values are outputs; otherwise all touched.
      name: Name used in error messages.

    Example:
      >>> w = sm.ParamState(jnp.ones(2), name="w")
      >>> n = sm.ShortTermState(jnp.array(0), name="n")
      >>> def f(x):
      ...     n.value = n.value + 1
      ...     return w.value @ x
      >>> sf = sm.transform.StatefulFunction(f)
      >>> [s.name for s in sf.get_states(jnp.ones(2))], [s.name for s in sf.get_write_states(jnp.ones(2))]
      (['n', 'w'], ['n'])
      >>> new_values, out = sf.jaxpr_call([n.value, w.value], jnp.ones(2))
      >>> new_values, out
      ([Array(1, dtype=int32, weak_type=True)], Array(2., dtype=float32))
    """

    def __init__(
        self,
        fun: Callable,
        static_argnums: int | Sequence[int] = (),
        static_argnames: str | Sequence[str] = (),
        axis_env: Sequence[tuple[Hashable, int]] | None = None,
        return_only_write: bool = True,
        name: str | None = None,
    ) -> None:
        if not callable(fun):
            raise TypeError(f"StatefulFunction expects a callable, got {type(fun).__name__}")
        self.fun = fun
        self.static_argnums = normalize_argnums(static_argnums)
        self.static_argnames = normalize_argnames(static_argnames)
        self.axis_env = axis_env
        self.return_only_write = bool(return_only_write)
        self.name = name or "StatefulFunction"
        self._param_names = positional_names(fun) if (self.static_argnums or self.static_argnames) else ()
        self._cache: dict[Hashable, Traced] = {}

    # -- signature and cache -------------------------------------------------------------------------------
    def split(self, args: tuple, kwargs: dict) -> tuple[Hashable, list[Any]]:
        """(cache key, dynamic argument leaves) for a call."""
        return signature_key(args, kwargs, self.static_argnums, self.static_argnames, self.name, self._param_names)

    def trace(self, *args: Any, **kwargs: Any) -> Traced:
        """Return the traced entry for this call's signature (tracing once if needed)."""
        key, _ = self.split(args, kwargs)
        return self._lookup(key, args, kwargs)

    def _lookup(self, key: Hashable, args: tuple, kwargs: dict) -> Traced:
        entry = self._cache.get(key)
        if entry is not None and not entry.is_stale():
            return entry
        entry = trace_stateful(
            self.fun,
            args,
            kwargs,
            static_argnums=self.static_argnums,
            static_argnames=self.static_argnames,
            axis_env=self.axis_env,
            return_only_write=self.return_only_write,
            name=self.name,
            param_names=self._param_names,
        )
        if entry.cacheable:
            self._cache[key] = entry
        return entry

    def clear_cache(self) -> None:
        """Forget every traced signature."""
        self._cache.clear()

    # -- inspection -----------------------------------------------------------------------------------------
    def make_jaxpr(self, *args: Any, **kwargs: Any) -> StatefulFunction:
        """Trace this signature now (if not cached) and return self."""
        self.trace(*args, **kwargs)
        return self

    def get_jaxpr(self, *args: Any, **kwargs: Any) -> Any:
        """The ClosedJaxpr: inputs (argument leaves, state leaves), outputs (result leaves, state leaves)."""
        return self.trace(*args, **kwargs).jaxpr

    def get_states(self, *args: Any, **kwargs: Any) -> tuple[State, ...]:
        """States touched by the function, in first-touch order."""
        return self.trace(*args, **kwargs).states

    def get_write_states(self, *args: Any, **kwargs: Any) -> tuple[State, ...]:
        """States the function writes."""
        e = self.trace(*args, **kwargs)
        return tuple(s for s, w in zip(e.states, e.written, strict=True) if w)

    def get_read_states(self, *args: Any, **kwargs: Any) -> tuple[State, ...]:
        """States the function only reads."""
        e = self.trace(*args, **kwargs)
        return tuple(s for s, w in zip(e.states, e.written, strict=True) if not w)

    def get_out_shapes(self, *args: Any, **kwargs: Any) -> Any:
        """Shapes/dtypes of the result, as a pytree of `jax.ShapeDtypeStruct`."""
        e = self.trace(*args, **kwargs)
        avals = e.jaxpr.out_avals[: e.n_out]
        shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]
        return jax.tree_util.tree_unflatten(e.out_treedef, shapes)

    # -- evaluation -----------------------------------------------------------------------------------------
    def jaxpr_call(self, state_vals: Sequence[Any], *args: Any, **kwargs: Any) -> tuple[list[Any], Any]:
        """Pure call: values of `get_states(...)` in order → (new values of the output states, result)."""
        key, leaves = self.split(args, kwargs)
        entry = self._lookup(key, args, kwargs)
        if len(state_vals) != len(entry.states):
            raise ValueError(
                f"{self.name}: jaxpr_call got {len(state_vals)} state values for {len(entry.states)} states"
            )
        return entry.call_flat(leaves, state_vals)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key, leaves = self.split(args, kwargs)
        entry = self._lookup(key, args, kwargs)
        values = read_values(entry.states)
        new_values, out = entry.call_flat(leaves, values)
        write_back(entry.states, entry.out_states, new_values)
        return out


def read_values(states: Sequence[State]) -> list[Any]:
    """Current values of `states`, recording the reads in enclosing traces (if any)."""
    if CONTEXT.stack:
        return [s.value for s in states]
    return [s._value for s in states]


def write_back(states: Sequence[State], indices: Sequence[int], values: Sequence[Any]) -> None:
    """Write `values` into `states[i]` for i in `indices`, recording writes in enclosing traces (if any)."""
    if CONTEXT.stack:
        for i, v in zip(indices, values, strict=True):
            states[i].value = v
    else:
        for i, v in zip(indices, values, strict=True):
            s = states[i]
            s._value = v
            s._dead = None


def make_jaxpr(
    fun: Callable,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    axis_env: Sequence[tuple[Hashable, int]] | None = None,
    return_shape: bool = False,
    return_only_write: bool = False,
) -> Callable[..., tuple]:
    """Like `jax.make_jaxpr`, for a function that closes over states.

    Returns a function that, called like `fun`, gives ``(closed_jaxpr, states)`` (and the output shapes when
    `return_shape`). The jaxpr's inputs are the argument leaves then the states' leaves; its outputs are the
    result leaves then the states' new leaves (all touched states unless `return_only_write`).

    Example:
      >>> s = sm.State(jnp.zeros(2), name="s")
      >>> def f(x):
      ...     s.value = s.value + x
      ...     return x * 2
      >>> jaxpr, states = sm.transform.make_jaxpr(f)(jnp.ones(2))
      >>> print(jaxpr)
      { lambda ; a:f32[2] b:f32[2]. let
          c:f32[2] = add b a
          d:f32[2] = mul a 2.0:f32[]
        in (d, c) }
      >>> states
      (State(name='s', value=f32[2]),)
    """
    sf = StatefulFunction(fun, static_argnums, static_argnames, axis_env, return_only_write, name="make_jaxpr")

    @functools.wraps(fun)
    def wrapper(*args: Any, **kwargs: Any) -> tuple:
        entry = sf.trace(*args, **kwargs)
        if return_shape:
            return entry.jaxpr, entry.states, sf.get_out_shapes(*args, **kwargs)
        return entry.jaxpr, entry.states

    return wrapper


_ = short_aval  # re-exported for sibling modules
