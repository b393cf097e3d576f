"""`StatefulFunction`: turn a function that closes over states into a pure function of (state values, args).

One abstract trace per signature (`jax.make_jaxpr`) runs the user's Python body once. While it runs, each state
becomes a jaxpr input at its first touch (`_compat.new_trace_input`, through the trace frame's hook), so the trace
finds which states the function reads and writes without a second pass. The result, a `Traced` entry, is cached
by the call signature (`CallSignature.key`); transforms evaluate its jaxpr (never the Python body) on later calls.

Caveats:
  - A state whose shape changes between calls makes the entry stale; lookups check `Traced.is_stale` (the
    dispatcher's compiled paths check it when JAX retraces) and retrace.
  - An entry holds its states weakly: a dead state makes it stale instead of keeping a dead model alive.
  - States created during the trace that still hold tracers afterwards are marked dead: reading them raises
    `TraceContextError` instead of leaking a tracer.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
from jax.extend import core as jex_core

from .. import _compat
from .._errors import (
    StateArgumentError,
    StatemapError,
    describe_state,
    message,
    short_aval,
    tree_aval,
    without_jax_note,
)
from .._state import (
    State,
    generation,
    mark_dead,
    non_array_leaf,
    non_array_message,
    peek,
    read_values,
    write_back,
)
from .._trace import StateTrace, catch_new_states
from ._arguments import ArgSpec, CallSignature, shape_struct, value_signature

__all__ = ["StatefulFunction", "make_jaxpr", "Traced", "trace_stateful"]


class Traced:
    """One traced signature of a stateful function: its jaxpr, states and roles.

    Attributes:
      jaxpr: ClosedJaxpr with inputs (argument leaves..., state leaves...) and outputs
        (result leaves..., leaves of the states in `out_states`...).
      states: States touched, in first-touch order (held weakly; see `alive`).
      written / read: Per state, whether it was written / read before being written.
      out_states: Indices (into `states`) whose new values are outputs.
      state_treedefs / state_nleaves: Per state, the pytree structure and number of leaves of its value.
      state_sigs: Per state, the `value_signature` it was traced with.
      cacheable: False when the jaxpr closes over tracers of an enclosing trace.
      generation: The generation of states (`statemap._state.generation`) the trace saw; a cache checks it
        before reusing the entry (`StatefulFunction.lookup`).
      token: An object that identifies this entry in the keys of compiled loops: a key holding the entry itself
        would keep its jaxpr's constants alive in JAX's cache.
    """

    __slots__ = (
        "jaxpr",
        "_refs",
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
        "generation",
        "token",
        "__weakref__",
    )

    def __init__(self, jaxpr: Any, frame: StateTrace, picked: list[int], out_treedef: Any, n_out: int) -> None:
        self.jaxpr = jaxpr
        self._refs = tuple(weakref.ref(s) for s in frame.states)
        self.written = tuple(frame.written)
        self.read = tuple(frame.read)
        self.out_states = tuple(picked)
        self.state_treedefs: tuple[Any, ...] = ()
        self.state_nleaves: tuple[int, ...] = ()
        self.state_sigs: tuple[Any, ...] = ()
        self.out_treedef = out_treedef
        self.n_out = n_out
        self.fn = jex_core.jaxpr_as_fun(jaxpr)
        self.cacheable = not any(_compat.is_tracer(c) for c in jaxpr.consts)
        self.generation = generation()
        self.token = object()  # stands for this entry in the keys of compiled loops (holds nothing alive)

    @property
    def states(self) -> tuple[State, ...]:
        out = tuple(r() for r in self._refs)
        if any(s is None for s in out):
            raise ReferenceError("a state of this traced function no longer exists; trace it again")
        return out  # type: ignore[return-value]

    def alive(self) -> bool:
        """True while every state of the entry exists."""
        return all(r() is not None for r in self._refs)

    def same_states(self, other: Traced) -> bool:
        """True when `other` touches the same State objects, in the same order and roles (its code still fits)."""
        return (
            len(self._refs) == len(other._refs)
            and all(a() is b() is not None for a, b in zip(self._refs, other._refs, strict=True))
            and (self.written, self.read, self.out_states) == (other.written, other.read, other.out_states)
        )

    def is_stale(self) -> bool:
        """True when a state died or no longer has the shape/dtype it was traced with."""
        try:
            return tuple(value_signature(peek(s)) for s in self.states) != self.state_sigs
        except Exception:
            return True

    def call_flat(self, arg_leaves: Sequence[Any], state_values: Sequence[Any]) -> tuple[list[Any], Any]:
        """Evaluate the jaxpr: state values (pytrees, order of `states`) → (new values of out_states, result)."""
        flat_states = [leaf for v in state_values for leaf in jax.tree_util.tree_leaves(v)]
        outs = self.fn(*arg_leaves, *flat_states)
        return self.unflatten_outputs(outs)

    def unflatten_outputs(self, outs: Sequence[Any]) -> tuple[list[Any], Any]:
        """Flat jaxpr outputs → (new values of out_states, result)."""
        result = jax.tree_util.tree_unflatten(self.out_treedef, list(outs[: self.n_out]))
        new_values = []
        pos = self.n_out
        for i in self.out_states:
            n = self.state_nleaves[i]
            new_values.append(jax.tree_util.tree_unflatten(self.state_treedefs[i], list(outs[pos : pos + n])))
            pos += n
        return new_values, result


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


def _sig_str(sig: tuple[Any, ...]) -> str:
    """``f32[2]`` (one leaf) or ``{f32[2], i32[]}``: a state's `value_signature` as messages show types."""
    parts = [short_aval(shape_struct(shape, dtype)) for shape, dtype, _ in sig]
    return parts[0] if len(parts) == 1 else "{" + ", ".join(parts) + "}"


def default_state_aval(state: State, leaf: Any) -> Any:
    return jax.typeof(leaf)


def trace_stateful(
    fun: Callable[..., Any],
    sig: CallSignature,
    *,
    axis_env: Sequence[tuple[Hashable, int]] | None = None,
    return_only_write: bool = True,
    name: str = "StatefulFunction",
    state_aval: Callable[[State, Any], Any] = default_state_aval,
    abstract_leaves: Sequence[Any] | None = None,
    state_view: Callable[[State, Any], Any] | None = None,
) -> Traced:
    """Trace `fun` once for the call `sig`; see `Traced`. `abstract_leaves`, if given, replaces the dynamic leaves.

    `state_view`, if given, turns a state's fresh inputs into the value the function sees (a mapping's random
    states take a pair of keys and show one, `_mapping_plan.trace_lane`).

    The trace frame's hook turns each state's value into fresh jaxpr inputs (typed by `state_aval`) at its
    first touch; the frame, not the State, holds them, so other threads never see these tracers.
    """
    done: dict[str, Any] = {}

    def traced(*flat: Any) -> list[Any]:
        call_args, call_kwargs = sig.rebuild(flat)
        trace = _compat.current_trace()

        def hook(state: State, value: Any) -> Any:
            bad = non_array_leaf(value)
            if bad is not None:
                raise StateArgumentError(non_array_message(state, bad, name, f"holds a non-array value read by {name}"))
            done.setdefault("originals", {})[id(state)] = value
            leaves, tree = jax.tree_util.tree_flatten(value)
            inputs = [_compat.new_trace_input(trace, state_aval(state, x)) for x in leaves]
            view = jax.tree_util.tree_unflatten(tree, inputs)
            if state_view is None:
                return view
            with _compat.use_trace(trace):  # the first touch may happen inside an inner transform's trace
                return state_view(state, view)

        with catch_new_states() as caught, StateTrace(hook, name) as frame:
            try:
                out = fun(*call_args, **call_kwargs)
                _check_no_state(out, name, "the function returned")
            finally:
                mark_dead(caught.states, name)
        out_leaves, out_tree = jax.tree_util.tree_flatten(out)
        picked = [i for i, w in enumerate(frame.written) if w or not return_only_write]
        done.update(frame=frame, picked=picked, out_tree=out_tree, n_out=len(out_leaves))
        return out_leaves + [x for i in picked for x in jax.tree_util.tree_leaves(frame.values[i])]

    leaves = list(sig.leaves if abstract_leaves is None else abstract_leaves)
    seen = generation()  # before tracing: a re-binding by another thread meanwhile makes the entry checked again
    try:
        closed = jax.make_jaxpr(traced, axis_env=axis_env)(*leaves)
    except StatemapError as e:
        raise without_jax_note(e) from None
    except Exception as e:
        fname = getattr(fun, "__qualname__", None) or repr(fun)
        e.add_note(f"(raised while {name} traced {fname})")
        raise
    entry = _entry(closed, done, name)
    entry.generation = seen
    return entry


def _entry(closed: Any, done: dict[str, Any], name: str) -> Traced:
    frame: StateTrace = done["frame"]
    entry = Traced(closed, frame, done["picked"], done["out_tree"], done["n_out"])
    originals = [done.get("originals", {})[id(s)] for s in frame.states]
    treedefs: tuple[Any, ...] = tuple(jax.tree_util.tree_structure(v) for v in originals)
    for i in entry.out_states:
        if jax.tree_util.tree_structure(frame.values[i]) != treedefs[i]:  # pragma: no cover - setter checks first
            raise StatemapError(f"{name}: {describe_state(frame.states[i])} changed pytree structure")
    entry.state_treedefs = treedefs
    entry.state_nleaves = tuple(t.num_leaves for t in treedefs)
    entry.state_sigs = tuple(value_signature(v) for v in originals)
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

    Examples:
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
        fun: Callable[..., Any],
        static_argnums: int | Sequence[int] = (),
        static_argnames: str | Sequence[str] = (),
        axis_env: Sequence[tuple[Hashable, int]] | None = None,
        return_only_write: bool = True,
        name: str | None = None,
    ) -> None:
        if not callable(fun):
            raise TypeError(f"StatefulFunction expects a callable, got {type(fun).__name__}")
        self.fun = fun
        self.name = name or "StatefulFunction"
        self.spec = ArgSpec.create(fun, self.name, static_argnums, static_argnames)
        self.axis_env = axis_env
        self.return_only_write = bool(return_only_write)
        self._cache: dict[Hashable, Traced] = {}

    @property
    def static_argnums(self) -> tuple[int, ...]:
        return self.spec.static_argnums

    @property
    def static_argnames(self) -> tuple[str, ...]:
        return self.spec.static_argnames

    # -- signature and cache -------------------------------------------------------------------------------
    def signature(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallSignature:
        """The call signature (split, flattened arguments and cache key) of a call."""
        return CallSignature.of(self.spec, args, kwargs)

    def lookup(self, sig: CallSignature, fresh: bool = False) -> Traced:
        """The traced entry for `sig`, tracing once if it is missing or stale (or `fresh` is set).

        An entry from an older generation of states (states were created or re-bound since) is traced again;
        the old entry is kept, so compiled code built on it stays valid, when it still touches the same states.
        """
        old = None if fresh else self._cache.get(sig.key)
        if old is not None and old.generation == generation() and not old.is_stale():
            return old
        entry = trace_stateful(
            self.fun, sig, axis_env=self.axis_env, return_only_write=self.return_only_write, name=self.name
        )
        if old is not None and old.same_states(entry) and not old.is_stale():
            old.generation = entry.generation
            return old
        if entry.cacheable:
            self._cache[sig.key] = entry
        return entry

    def trace(self, *args: Any, **kwargs: Any) -> Traced:
        """Return the traced entry for this call's signature (tracing once if needed)."""
        return self.lookup(self.signature(args, kwargs))

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
        shapes = [shape_struct(a.shape, a.dtype) for a in e.jaxpr.out_avals[: e.n_out]]
        return jax.tree_util.tree_unflatten(e.out_treedef, shapes)

    # -- evaluation -----------------------------------------------------------------------------------------
    def jaxpr_call(self, state_vals: Sequence[Any], *args: Any, **kwargs: Any) -> tuple[list[Any], Any]:
        """Pure call: values of `get_states(...)` in order → (new values of the output states, result).

        Raises:
          ValueError: `state_vals` does not have one value per state of `get_states(...)`, or a value has
            another pytree structure, shape or dtype than its state.
        """
        sig = self.signature(args, kwargs)
        entry = self.lookup(sig)
        if len(state_vals) != len(entry.written):
            raise ValueError(
                message(
                    self.name,
                    "jaxpr_call got the wrong number of state values",
                    f"{len(entry.written)} values, one per state of get_states(...) in that order",
                    f"{len(state_vals)} values",
                    "pass [s.value for s in sf.get_states(*args)]",
                )
            )
        for i, (state, v) in enumerate(zip(entry.states, state_vals, strict=True)):
            found = jax.tree_util.tree_structure(v), [a[:2] for a in value_signature(v)]
            if found != (entry.state_treedefs[i], [a[:2] for a in entry.state_sigs[i]]):
                raise ValueError(
                    message(
                        self.name,
                        f"jaxpr_call got state_vals[{i}] of another type than {describe_state(state)}",
                        f"{_sig_str(entry.state_sigs[i])}, the type the function was traced with",
                        tree_aval(v),
                        "pass one value per state, in the order of get_states(...), with the state's type",
                    )
                )
        return entry.call_flat(sig.leaves, state_vals)

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        sig = self.signature(args, kwargs)
        entry = self.lookup(sig)
        states = entry.states
        new_values, out = entry.call_flat(sig.leaves, read_values(states))
        write_back(states, dict(zip(entry.out_states, new_values, strict=True)))
        return out


def make_jaxpr(
    fun: Callable[..., Any],
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    axis_env: Sequence[tuple[Hashable, int]] | None = None,
    return_shape: bool = False,
    return_only_write: bool = False,
) -> Callable[..., tuple[Any, ...]]:
    """Like `jax.make_jaxpr`, for a function that closes over states.

    Returns a function that, called like `fun`, gives ``(closed_jaxpr, states)`` (and the output shapes when
    `return_shape`). The jaxpr's inputs are the argument leaves then the states' leaves; its outputs are the
    result leaves then the states' new leaves (all touched states unless `return_only_write`).

    Examples:
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
    def wrapper(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        entry = sf.trace(*args, **kwargs)
        if return_shape:
            return entry.jaxpr, entry.states, sf.get_out_shapes(*args, **kwargs)
        return entry.jaxpr, entry.states

    return wrapper
