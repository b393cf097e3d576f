"""Shared engine of the stateful control-flow transforms: `cond`, `switch`, `while_loop`, `scan`, `for_loop`.

Passes, for every transform:
  1. Flatten operands / carry / xs once and check them (no `State` leaves, valid JAX types).
  2. Trace each branch or body once per abstract signature with a `StatefulFunction` cached weakly on the
     user's function (`stateful`), so calling `scan(f, ...)` again with the same `f` does not rerun its body.
  3. Take the union of the states the traced functions touch (`StateUnion`). States written by any branch
     are outputs of every branch; states written by a loop body are carried; the others are only read and
     enter as loop-invariant inputs.
  4. Check the traced types: branch outputs agree, carries and written states keep their type.
  5. Build pure functions that evaluate the traced jaxprs (`FlatTraced`) and hand them to `jax.lax`. State
     values are read with `read_values` and written back with `write_back` (`statemap._state`), so enclosing
     statemap transforms (`jit`, `grad`, mapping) see the reads and writes.

Caveats:
  - Nothing is written back until `jax.lax` returns, so after any error every state keeps its value.
  - Like `jax.lax`'s own trace cache, ours assumes the function's Python control flow depends only on the
    abstract signature of its inputs and on the shapes of the states it touches.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
from jax.extend import core as jex_core

from .. import _compat
from .._errors import ArgumentError, ControlFlowError, describe_state, message, short_aval
from .._state import State
from .._trace import StateTrace
from ._arguments import abstract, leaf_signature
from ._make_jaxpr import StatefulFunction, Traced

__all__ = [
    "FlatTraced",
    "Plan",
    "StateUnion",
    "abstract_leaves",
    "call_plan",
    "check_callable",
    "flatten_checked",
    "run_direct",
    "same_type",
    "stateful",
    "function_cache",
    "WeakCall",
]


# -- the trace cache ----------------------------------------------------------------------------------------
class WeakCall:
    """Calls a function (or bound method) through a weak reference, so the cache does not keep it alive."""

    def __init__(self, fun: Callable[..., Any]) -> None:
        self._ref = weakref.WeakMethod(fun) if inspect.ismethod(fun) else weakref.ref(fun)
        self.__qualname__ = getattr(fun, "__qualname__", None) or repr(fun)

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        fun = self._ref()
        if fun is None:  # pragma: no cover - the cache entry dies with the function
            raise ReferenceError(f"{self.__qualname__} was garbage-collected")
        return fun(*args, **kwargs)


# Keyed weakly on the function, or for a bound method on its instance (then on the underlying function):
# `obj.method` makes a new bound-method object on every access, so it cannot be the key itself.
_CACHE: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def function_cache(fun: Callable[..., Any]) -> tuple[dict[Hashable, Any], Hashable] | None:
    """(a cache dict that lives as long as `fun`, the key prefix for `fun` in it), or None when `fun` cannot be
    weakly referenced. For a bound method the dict lives with its instance and the prefix is the function.

    Examples:
      >>> from statemap.transform._control import function_cache
      >>> def f(x): return x
      >>> cache, prefix = function_cache(f)
      >>> function_cache(f)[0] is cache, prefix
      (True, None)
    """
    owner: Any = fun
    prefix: Hashable = None
    if inspect.ismethod(fun):
        owner, prefix = fun.__self__, fun.__func__
    try:
        per_owner = _CACHE.get(owner)
        if per_owner is None:
            per_owner = _CACHE[owner] = {}
    except TypeError:
        return None
    return per_owner, prefix


def stateful(fun: Callable[..., Any], who: str) -> StatefulFunction:
    """The `StatefulFunction` of `fun` for transform `who`, shared by every call with the same function.

    Keyed weakly on `fun` (like `jax.lax`'s own trace cache) or, for a bound method, on its instance and
    function, so ``scan(model.step, ...)`` does not retrace on each call. Callables that are not hashable
    or weakly referable get a fresh one, so they are traced on each call.
    """
    found = function_cache(fun)
    if found is None:
        return StatefulFunction(fun, name=who)
    per_owner, prefix = found
    sf = per_owner.get((prefix, who))
    if sf is None:
        sf = per_owner[(prefix, who)] = StatefulFunction(WeakCall(fun), name=who)
    return sf


# -- inputs -------------------------------------------------------------------------------------------------
def check_callable(fun: Any, who: str, what: str) -> None:
    if not callable(fun):
        raise ArgumentError(
            message(
                who,
                f"{what} is not callable",
                "a function",
                f"{type(fun).__name__} {fun!r:.60}",
                f"pass a function as {what}",
            )
        )


def flatten_checked(tree: Any, who: str, what: str) -> tuple[list[Any], Any, list[str]]:
    """(leaves, treedef, ``what[path]`` names) of an input pytree; a `State` leaf raises.

    Raises:
      StateArgumentError: a leaf is a `State`. TypeError: a leaf is not a JAX type.
    """
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [f"{what}{jax.tree_util.keystr(p)}" for p, _ in with_path]
    leaves = [x for _, x in with_path]
    for leaf, name in zip(leaves, names, strict=True):
        leaf_signature(leaf, who, name)  # raises for a State or a non-JAX value, naming the leaf
    return leaves, treedef, names


def abstract_leaves(leaves: Sequence[Any]) -> list[jax.ShapeDtypeStruct]:
    """Abstract values of checked leaves (works for concrete arrays, Python scalars and outer tracers)."""
    return [abstract(x) for x in leaves]


def same_type(a: Any, b: Any) -> bool:
    """Same shape and dtype (weak types are ignored, as in `jax.lax`)."""
    return tuple(a.shape) == tuple(b.shape) and a.dtype == b.dtype


def avals_str(avals: Sequence[Any]) -> str:
    if len(avals) == 1:
        return short_aval(avals[0])
    return "{" + ", ".join(short_aval(a) for a in avals) + "}"


def leaf_names(treedef: Any, prefix: str) -> list[str]:
    """``prefix[path]`` for each leaf of `treedef`."""
    dummy = jax.tree_util.tree_unflatten(treedef, [0] * treedef.num_leaves)
    return [f"{prefix}{jax.tree_util.keystr(p)}" for p, _ in jax.tree_util.tree_flatten_with_path(dummy)[0]]


# -- traced functions on flat leaves -------------------------------------------------------------------------
class FlatTraced:
    """A `Traced` entry evaluated on flat leaves.

    Inputs: argument leaves and, per state of ``entry.states``, the list of its leaves. Outputs: result leaves
    and, per written state (``entry.out_states`` order), the list of its new leaves.
    """

    __slots__ = ("entry", "n_args", "state_in_avals", "state_out_avals", "result_avals", "_n_out", "_splits")

    entry: Traced
    n_args: int
    state_in_avals: list[list[Any]]  # per state of entry.states
    state_out_avals: list[list[Any]]  # per written state, in entry.out_states order
    result_avals: list[Any]

    def __init__(self, entry: Traced) -> None:
        self.entry = entry
        in_avals = entry.jaxpr.in_avals
        out_avals = entry.jaxpr.out_avals
        self.n_args = len(in_avals) - sum(entry.state_nleaves)
        pos = self.n_args
        self.state_in_avals = []
        for n in entry.state_nleaves:
            self.state_in_avals.append(list(in_avals[pos : pos + n]))
            pos += n
        self._n_out = entry.n_out
        self.result_avals = list(out_avals[: entry.n_out])
        pos = entry.n_out
        self.state_out_avals = []
        self._splits: list[tuple[int, int]] = []
        for i in entry.out_states:
            n = entry.state_nleaves[i]
            self.state_out_avals.append(list(out_avals[pos : pos + n]))
            self._splits.append((pos, pos + n))
            pos += n

    def __call__(self, arg_leaves: Sequence[Any], state_leaves: Sequence[Sequence[Any]]) -> tuple[list[Any], list[Any]]:
        flat = [x for leaves in state_leaves for x in leaves]
        outs = self.entry.fn(*arg_leaves, *flat)
        return list(outs[: self._n_out]), [list(outs[a:b]) for a, b in self._splits]

    @property
    def consts(self) -> list[Any]:
        """The constants the traced function closes over (passed to `call` as arguments by compiled loops)."""
        return list(self.entry.jaxpr.consts)

    def call(
        self, consts: Sequence[Any], arg_leaves: Sequence[Any], state_leaves: Sequence[Sequence[Any]]
    ) -> tuple[list[Any], list[Any]]:
        """`__call__` with the constants given: a compiled loop takes them as inputs instead of keeping them."""
        flat = [x for leaves in state_leaves for x in leaves]
        closed = jex_core.ClosedJaxpr(self.entry.jaxpr.jaxpr, list(consts))
        outs = jex_core.jaxpr_as_fun(closed)(*arg_leaves, *flat)
        return list(outs[: self._n_out]), [list(outs[a:b]) for a, b in self._splits]


class StateUnion:
    """The union of the states touched by several traced functions, in first-touch order.

    Attributes:
      states: The states. `written`: positions (into `states`) written by any of the functions.
      maps: Per function, the position in `states` of each of its own states.
      in_avals / treedefs: Per state, the abstract values of its leaves and its pytree structure.
    """

    __slots__ = ("_refs", "written", "maps", "in_avals", "treedefs", "writes")

    def __init__(self, flats: Sequence[FlatTraced]) -> None:
        index: dict[int, int] = {}
        states: list[State] = []
        self.in_avals: list[list[Any]] = []
        self.treedefs: list[Any] = []
        self.maps: list[list[int]] = []
        self.writes: list[dict[int, int]] = []  # per function: union position -> its index in out_states
        for ft in flats:
            e = ft.entry
            positions = []
            for i, s in enumerate(e.states):
                p = index.get(id(s))
                if p is None:
                    p = index[id(s)] = len(states)
                    states.append(s)
                    self.in_avals.append(ft.state_in_avals[i])
                    self.treedefs.append(e.state_treedefs[i])
                positions.append(p)
            self.maps.append(positions)
            self.writes.append({positions[i]: k for k, i in enumerate(e.out_states)})
        self.written = sorted({p for w in self.writes for p in w})
        # Held weakly: a union is part of a loop's compiled-plan key, which must not keep states alive
        # (tests/test_loops.py::test_loop_caches_do_not_keep_a_fresh_function_s_states_alive).
        self._refs = tuple(weakref.ref(x) for x in states)

    @property
    def states(self) -> list[State]:
        out = [r() for r in self._refs]
        if any(x is None for x in out):
            raise ReferenceError("a state of these traced functions no longer exists; trace them again")
        return out  # type: ignore[return-value]

    def gather(self, k: int, leaves_by_position: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
        """The state leaves function `k` takes, from leaves given per union position."""
        return [leaves_by_position[p] for p in self.maps[k]]

    def values_to_leaves(self, values: Sequence[Any]) -> list[list[Any]]:
        return [jax.tree_util.tree_leaves(v) for v in values]

    def leaves_to_values(self, positions: Sequence[int], leaves: Sequence[Sequence[Any]]) -> list[Any]:
        unflatten = jax.tree_util.tree_unflatten
        return [unflatten(self.treedefs[p], list(ls)) for p, ls in zip(positions, leaves, strict=True)]


def state_type_error(
    who: str, state: State, problem: str, expected: Sequence[Any], found: Sequence[Any], fix: str
) -> ControlFlowError:
    return ControlFlowError(
        message(who, f"{describe_state(state)} {problem}", avals_str(expected), avals_str(found), fix)
    )


# -- running jax.lax --------------------------------------------------------------------------------------------
class Plan:
    """Hashable description of one `jax.lax` call; equal plans share one compiled executable (`call_plan`).

    Args:
      key: Hashable; the only part of the plan that takes part in equality.
      cacheable: False when the traced functions close over tracers (the plan must not be cached).
      data: What the runner needs; it must be determined by `key`.
    """

    __slots__ = ("key", "cacheable", "data")

    def __init__(self, key: tuple[Any, ...], cacheable: bool, data: Any) -> None:
        self.key = key
        self.cacheable = cacheable
        self.data = data

    def release(self) -> None:
        """Drop `data` once the call is done: JAX's cache may keep this plan (a static argument) for good, and
        `data` holds the traced functions (tests/test_retention.py)."""
        self.data = None

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and self.key == other.key


def call_plan(runner: Callable[..., Any], jitted: Callable[..., Any], plan: Plan, *args: Any) -> Any:
    """`runner(plan, *args)`; with concrete inputs through `jitted` (its `jax.jit`, plan static).

    Called eagerly, `jax.lax` loops would trace and compile a fresh closure on every call; a jitted runner
    keyed on the plan compiles once per plan and input signature, like a warm `jax.lax.scan`. Under a JAX
    trace the runner is inlined, so jaxprs show the loop itself; so it is when a traced function closes over
    tracers (``plan.cacheable`` is False), which must not be kept in a compilation cache.
    """
    try:
        if not plan.cacheable or any(_compat.is_tracer(x) for x in jax.tree_util.tree_leaves(args)):
            return runner(plan, *args)
        return jitted(plan, *args)
    finally:
        plan.release()


# -- running a branch directly -----------------------------------------------------------------------------
def run_direct(fun: Callable[..., Any], args: Sequence[Any], who: str) -> Any:
    """Call `fun(*args)` as is (the branch a concrete predicate picks), writing its state writes back after.

    A hook-less `StateTrace` frame holds the call's writes; they are committed when it returns, so after an
    exception every state keeps its value. Reads and writes still reach enclosing traces.
    """
    with StateTrace(name=who) as frame:
        out = fun(*args)
    frame.commit()
    return out
