"""`scan`, `for_loop` and `while_loop`: `jax.lax` loops whose bodies read and write states.

The body is traced once per signature (carry and one slice of `xs`). The states it writes join the carry;
the states it only reads enter as loop-invariant inputs. As in `jax.lax`, a weakly typed carry leaf (a
Python scalar in `init`) is promoted once to the type the body returns for it, which traces the body again.

The `jax.lax` call itself runs in a module-level runner keyed on a hashable `Plan` (traced entry and loop
options): called eagerly it goes through one `jax.jit` of that runner, so warm calls reuse one executable;
under a JAX trace it is inlined.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import ArgumentError, ControlFlowError, describe_state, message, short_aval
from .._state import read_values, write_back
from ._arguments import shape_struct
from ._control import (
    FlatTraced,
    Plan,
    StateUnion,
    abstract_leaves,
    call_plan,
    check_callable,
    flatten_checked,
    same_type,
    state_type_error,
    stateful,
)
from ._make_jaxpr import StatefulFunction
from ._progress_bar import make_progress_bar

__all__ = ["scan", "for_loop", "while_loop"]

_STATE_FIX = (
    "write values of the state's shape and dtype inside the loop (e.g. cast with .astype), or give the "
    "state that shape and dtype before the loop"
)


# -- helpers ------------------------------------------------------------------------------------------------
def _scan_length(avals: Sequence[Any], names: Sequence[str], length: Any, who: str) -> int:
    if length is not None:
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
            raise ArgumentError(
                message(
                    who,
                    "length is not a non-negative int",
                    "a Python int >= 0 (or None to take it from xs)",
                    f"{type(length).__name__} {length!r:.40}",
                    "pass the number of iterations as an int",
                )
            )
        length = int(length)
    source = None if length is None else f"length={length}"
    for aval, name in zip(avals, names, strict=True):
        if len(aval.shape) == 0:
            raise ControlFlowError(
                message(
                    who,
                    f"{name} is a scalar, which has no leading axis to loop over",
                    "arrays whose leading axis is the iteration axis",
                    short_aval(aval),
                    f"stack the values along a new axis 0, or pass {name} through the closure instead",
                )
            )
        if length is None:
            length, source = int(aval.shape[0]), name
        elif aval.shape[0] != length:
            raise ControlFlowError(
                message(
                    who,
                    f"{name} has leading axis size {aval.shape[0]}, but {source} sets {length} iterations",
                    f"every leaf of xs with leading axis size {length}",
                    f"{name}: {short_aval(aval)}",
                    "give every leaf of xs the same leading axis size (and length, if passed, that size)",
                )
            )
    if length is None:
        raise ControlFlowError(
            message(
                who,
                "cannot tell the number of iterations: xs has no arrays and length is None",
                "xs with at least one array, or length=",
                "no leaves in xs",
                "pass length=<number of iterations>",
            )
        )
    return int(length)


def _promote_weak(leaves: list[Any], avals: list[Any], out_avals: Sequence[Any]) -> bool:
    """As `jax.lax`: a weakly typed carry leaf takes the dtype the body returns for it; True if any did."""
    changed = False
    for i, (a, b) in enumerate(zip(avals, out_avals, strict=True)):
        if a.weak_type and tuple(a.shape) == tuple(b.shape) and a.dtype != b.dtype:
            leaves[i] = jax.lax.convert_element_type(leaves[i], jnp.result_type(leaves[i], b.dtype))
            changed = True
    return changed


def _check_carry(
    who: str,
    fun_name: str,
    names: Sequence[str],
    avals: Sequence[Any],
    out_avals: Sequence[Any],
    ft: FlatTraced,
) -> None:
    """The carry and every written state keep their shape and dtype over one iteration."""
    for name, a, b in zip(names, avals, out_avals, strict=True):
        if not same_type(a, b):
            raise ControlFlowError(
                message(
                    who,
                    f"the carry {name} changes type in one iteration",
                    f"{short_aval(a)} (its type on entry)",
                    f"{short_aval(b)} returned by {fun_name}",
                    f"make {fun_name} return the carry with its entry type (cast it with .astype, or give "
                    "the initial value that dtype)",
                )
            )
    e = ft.entry
    for j, i in enumerate(e.out_states):
        a, b = ft.state_in_avals[i], ft.state_out_avals[j]
        if not all(same_type(x, y) for x, y in zip(a, b, strict=True)):
            problem = "changes type in one iteration of the loop"
            raise state_type_error(who, e.states[i], problem, a, b, _STATE_FIX)


def _split_pair(ft: FlatTraced, who: str) -> tuple[list[int], Any, list[int], Any]:
    """(carry leaf positions, carry treedef, y leaf positions, y treedef) of ``f``'s ``(carry, y)``."""
    e = ft.entry
    out = jax.tree_util.tree_unflatten(e.out_treedef, list(range(e.n_out)))
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ControlFlowError(
            message(
                who,
                "f must return a pair (carry, y)",
                "a tuple (new_carry, y)",
                f"{type(out).__name__} with structure {e.out_treedef}",
                "return (carry, y); use y=None when there is nothing to stack",
            )
        )
    c_leaves, c_tree = jax.tree_util.tree_flatten(out[0])
    y_leaves, y_tree = jax.tree_util.tree_flatten(out[1])
    return c_leaves, c_tree, y_leaves, y_tree


def _run_scan(
    who: str,
    sf: StatefulFunction,
    init: Any,
    xs: Any,
    length: Any,
    reverse: bool,
    unroll: int | bool,
    progress_bar: Any,
    star: bool,
) -> Any:
    """Shared by `scan` (``f(carry, x) -> (carry, y)``) and `for_loop` (``f(*x) -> y``, ``star=True``)."""
    init_leaves, init_tree, init_names = flatten_checked(init, who, "init")
    xs_leaves, xs_tree, xs_names = flatten_checked(xs, who, "xs")
    xs_avals = abstract_leaves(xs_leaves)
    n = _scan_length(xs_avals, xs_names, length, who)
    bar = make_progress_bar(progress_bar, n, who)
    x_abstract = jax.tree_util.tree_unflatten(
        xs_tree, [shape_struct(a.shape[1:], a.dtype, a.weak_type) for a in xs_avals]
    )

    def trace(avals: list[Any]) -> tuple[FlatTraced, list[int], list[int], Any]:
        if star:
            ft = FlatTraced(sf.trace(*x_abstract))
            return ft, [], list(range(ft.entry.n_out)), ft.entry.out_treedef
        ft = FlatTraced(sf.trace(jax.tree_util.tree_unflatten(init_tree, avals), x_abstract))
        c_pos, c_tree, y_pos, y_tree = _split_pair(ft, who)
        if c_tree != init_tree:
            raise ControlFlowError(
                message(
                    who,
                    "f returned a carry of another pytree structure than init",
                    f"structure {init_tree}",
                    f"structure {c_tree}",
                    "return the new carry in the same containers as init",
                )
            )
        return ft, c_pos, y_pos, y_tree

    avals = abstract_leaves(init_leaves)
    ft, c_pos, y_pos, y_tree = trace(avals)
    if _promote_weak(init_leaves, avals, [ft.result_avals[p] for p in c_pos]):
        avals = abstract_leaves(init_leaves)
        ft, c_pos, y_pos, y_tree = trace(avals)
    _check_carry(who, "f", init_names, avals, [ft.result_avals[p] for p in c_pos], ft)

    e = ft.entry
    plan = Plan((e, star, n, reverse, unroll, bar), e.cacheable, (ft, c_pos, y_pos))
    carried = list(ft.entry.out_states)
    invariant = [i for i, w in enumerate(ft.entry.written) if not w]
    leaves = [jax.tree_util.tree_leaves(v) for v in read_values(ft.entry.states)]
    c_final, s_final, ys = call_plan(
        _scan_runner,
        _scan_jitted,
        plan,
        init_leaves,
        [leaves[i] for i in carried],
        [leaves[i] for i in invariant],
        xs_leaves,
    )
    treedefs = ft.entry.state_treedefs
    new_values = [jax.tree_util.tree_unflatten(treedefs[i], s_final[j]) for j, i in enumerate(carried)]
    write_back(ft.entry.states, dict(zip(carried, new_values, strict=True)), who)
    ys_tree = jax.tree_util.tree_unflatten(y_tree, ys)
    if star:
        return ys_tree
    return jax.tree_util.tree_unflatten(init_tree, c_final), ys_tree


def _scan_runner(
    plan: Plan, init_leaves: list[Any], carried_leaves: list[Any], inv_leaves: list[Any], xs_leaves: list[Any]
) -> tuple[list[Any], list[Any], list[Any]]:
    ft, c_pos, y_pos = plan.data
    _, star, n, reverse, unroll, bar = plan.key
    carried = ft.entry.out_states
    invariant = [i for i, w in enumerate(ft.entry.written) if not w]
    n_states = len(ft.entry.states)

    def body(carry: tuple[Any, ...], x: list[Any]) -> tuple[tuple[Any, ...], list[Any]]:
        c, s_carried, count = carry
        state_leaves: list[Any] = [None] * n_states
        for j, i in enumerate(carried):
            state_leaves[i] = s_carried[j]
        for j, i in enumerate(invariant):
            state_leaves[i] = inv_leaves[j]  # closed over: a loop-invariant input of jax.lax.scan
        res, new = ft(list(c) + list(x), state_leaves)
        if bar is not None:
            bar.step(count)
            count = count + 1
        return ([res[p] for p in c_pos], new, count), [res[p] for p in y_pos]

    counter = None if bar is None else jnp.zeros((), jnp.int32)
    carry0 = (init_leaves, carried_leaves, counter)
    (c_final, s_final, _), ys = jax.lax.scan(body, carry0, xs_leaves, length=n, reverse=reverse, unroll=unroll)
    return c_final, s_final, ys


_scan_jitted = jax.jit(_scan_runner, static_argnums=(0,))


# -- public -------------------------------------------------------------------------------------------------
def scan(
    f: Callable[..., Any],
    init: Any,
    xs: Any,
    length: int | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
    progress_bar: bool | int = False,
) -> tuple[Any, Any]:
    """Loop `f` over the leading axis of `xs` carrying a value, like `jax.lax.scan`, with states.

    `f(carry, x)` returns ``(new_carry, y)``; `scan` returns the final carry and the `y`s stacked. `f` may
    read and write `State`s it closes over: written states are carried from one iteration to the next (and
    written back at the end), read-only states are loop-invariant inputs. A `RandomState` drawn from inside
    `f` advances every iteration, so each iteration gets new numbers. `f` runs once per signature.

    Args:
      f: ``f(carry, x) -> (carry, y)``.
      init: Initial carry (pytree of arrays, no states).
      xs: Pytree of arrays sliced along axis 0, or None with `length`.
      length: Number of iterations; required when `xs` has no leaves.
      reverse: Loop from the end of `xs` (outputs stay aligned with `xs`).
      unroll: As in `jax.lax.scan`.
      progress_bar: True for a tqdm bar updated about 100 times, or an int to update it every that many
        iterations (needs tqdm).

    Returns:
      ``(final_carry, stacked_ys)``.

    Raises:
      ControlFlowError: leaves of `xs` of different lengths (naming the leaf), a carry or written state
        whose type changes in one iteration, or `f` not returning a pair.
      StateArgumentError: `init` or `xs` contains a `State`.

    Example:
      >>> total = sm.State(jnp.zeros(()), name="total")
      >>> def step(c, x):
      ...     total.value = total.value + x
      ...     return c * 2, total.value
      >>> sm.transform.scan(step, 1, jnp.arange(4.0))
      (Array(16, dtype=int32, weak_type=True), Array([0., 1., 3., 6.], dtype=float32))
      >>> total.value
      Array(6., dtype=float32)
    """
    who = "scan"
    check_callable(f, who, "f")
    carry, ys = _run_scan(who, stateful(f, who), init, xs, length, reverse, unroll, progress_bar, star=False)
    return carry, ys


def for_loop(
    f: Callable[..., Any],
    *xs: Any,
    length: int | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
    progress_bar: bool | int = False,
) -> Any:
    """Call `f(*x_i)` for each slice ``x_i`` of `xs` along axis 0, in order, and stack the outputs.

    A `scan` without a carry: states written by `f` accumulate from one iteration to the next.

    Args:
      f: Function of one slice of each of `xs`.
      *xs: Pytrees of arrays with the same leading axis size.
      length / reverse / unroll / progress_bar: As in `scan`.

    Returns:
      The outputs of `f`, stacked along a new axis 0.

    Example:
      >>> acc = sm.State(jnp.zeros(2), name="acc")
      >>> def step(x, w):
      ...     acc.value = acc.value + w * x
      ...     return acc.value.sum()
      >>> sm.transform.for_loop(step, jnp.ones((3, 2)), jnp.arange(3.0))
      Array([0., 2., 6.], dtype=float32)
    """
    who = "for_loop"
    check_callable(f, who, "f")
    return _run_scan(who, stateful(f, who), None, xs, length, reverse, unroll, progress_bar, star=True)


def _check_cond(cnd: FlatTraced, who: str) -> None:
    """`cond_fun` only reads states and returns a boolean scalar."""
    for i in cnd.entry.out_states:
        raise ControlFlowError(
            message(
                who,
                f"cond_fun writes {describe_state(cnd.entry.states[i])}",
                "a cond_fun that only reads states",
                "a write in cond_fun",
                "move the write (random draws too) into body_fun",
            )
        )
    out = cnd.result_avals
    if len(out) != 1 or out[0].shape != () or out[0].dtype != jnp.bool_:
        raise ControlFlowError(
            message(
                who,
                "cond_fun must return a boolean scalar",
                "bool[]",
                ", ".join(short_aval(a) for a in out) or "no output",
                "return a scalar comparison, e.g. `x < 10` or `jnp.all(...)`",
            )
        )


def while_loop(cond_fun: Callable[..., Any], body_fun: Callable[..., Any], init_val: Any) -> Any:
    """Run ``val = body_fun(val)`` while ``cond_fun(val)``, like `jax.lax.while_loop`, with states.

    `body_fun` may read and write states (written ones are carried); `cond_fun` may read states, including
    those `body_fun` writes, but must not write any.

    Args:
      cond_fun: ``cond_fun(val) -> scalar bool``.
      body_fun: ``body_fun(val) -> val`` (same structure and types).
      init_val: Initial value (pytree of arrays, no states).

    Returns:
      The final value.

    Raises:
      ControlFlowError: `cond_fun` writes a state or does not return a scalar boolean, or the carry or a
        written state changes type in one iteration.

    Example:
      >>> n = sm.State(jnp.array(0), name="n")
      >>> def body(x):
      ...     n.value = n.value + 1
      ...     return x * 2.0
      >>> sm.transform.while_loop(lambda x: x < 100.0, body, 3.0), n.value
      (Array(192., dtype=float32, weak_type=True), Array(6, dtype=int32, weak_type=True))
    """
    who = "while_loop"
    check_callable(cond_fun, who, "cond_fun")
    check_callable(body_fun, who, "body_fun")
    leaves, tree, names = flatten_checked(init_val, who, "init_val")
    body_sf, cond_sf = stateful(body_fun, who), stateful(cond_fun, who)

    def trace_body(avals: list[Any]) -> FlatTraced:
        ft = FlatTraced(body_sf.trace(jax.tree_util.tree_unflatten(tree, avals)))
        if ft.entry.out_treedef != tree:
            raise ControlFlowError(
                message(
                    who,
                    "body_fun returned another pytree structure than init_val",
                    f"structure {tree}",
                    f"structure {ft.entry.out_treedef}",
                    "return the new value in the same containers as init_val",
                )
            )
        return ft

    avals = abstract_leaves(leaves)
    body = trace_body(avals)
    if _promote_weak(leaves, avals, body.result_avals):
        avals = abstract_leaves(leaves)
        body = trace_body(avals)
    _check_carry(who, "body_fun", names, avals, body.result_avals, body)
    cnd = FlatTraced(cond_sf.trace(jax.tree_util.tree_unflatten(tree, avals)))
    _check_cond(cnd, who)

    union = StateUnion([body, cnd])
    carried = union.written
    invariant = [p for p in range(len(union.states)) if p not in set(carried)]
    state_leaves = union.values_to_leaves(read_values(union.states))
    cacheable = body.entry.cacheable and cnd.entry.cacheable
    plan = Plan((body.entry, cnd.entry), cacheable, (body, cnd, union, invariant))
    c_final, s_final = call_plan(
        _while_runner,
        _while_jitted,
        plan,
        leaves,
        [state_leaves[p] for p in carried],
        [state_leaves[p] for p in invariant],
    )
    write_back(union.states, dict(zip(carried, union.leaves_to_values(carried, s_final), strict=True)), who)
    return jax.tree_util.tree_unflatten(tree, c_final)


def _while_runner(plan: Plan, leaves: list[Any], carried_leaves: list[Any], inv_leaves: list[Any]) -> tuple[Any, ...]:
    body, cnd, union, invariant = plan.data
    carried = union.written
    to_carry = [union.writes[0][p] for p in carried]

    def by_position(s_carried: list[Any]) -> list[Any]:
        out: list[Any] = [None] * len(union.states)
        for j, p in enumerate(carried):
            out[p] = s_carried[j]
        for j, p in enumerate(invariant):
            out[p] = inv_leaves[j]  # closed over: a loop-invariant input of jax.lax.while_loop
        return out

    def cond_pure(carry: tuple[Any, ...]) -> Any:
        c, s_carried = carry
        res, _ = cnd(c, union.gather(1, by_position(s_carried)))
        return res[0]

    def body_pure(carry: tuple[Any, ...]) -> tuple[Any, ...]:
        c, s_carried = carry
        res, new = body(c, union.gather(0, by_position(s_carried)))
        return res, [new[j] for j in to_carry]

    return jax.lax.while_loop(cond_pure, body_pure, (leaves, carried_leaves))


_while_jitted = jax.jit(_while_runner, static_argnums=(0,))
