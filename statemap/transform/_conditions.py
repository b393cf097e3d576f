"""`cond`, `switch` and `ifelse`: `jax.lax.cond` / `jax.lax.switch` for branches that read and write states.

Every branch is traced once per operand signature; the states written by any branch are outputs of every
branch (a branch that does not write one returns its input value). A concrete predicate or index (a Python
bool or int, or any non-traced array) picks its branch directly, without tracing the others. `ifelse` turns its
list of conditions into the index of the first true one and runs `switch`'s engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .. import _compat
from .._errors import ArgumentError, ControlFlowError, message, short_aval
from .._state import read_values, write_back
from ._arguments import leaf_signature
from ._control import (
    FlatTraced,
    StateUnion,
    abstract_leaves,
    avals_str,
    check_callable,
    flatten_checked,
    leaf_names,
    run_direct,
    same_type,
    state_type_error,
    stateful,
)

__all__ = ["cond", "switch", "ifelse"]


def _scalar_of_kind(x: Any, who: str, what: str, kinds: tuple[Any, ...], expected: str, fix: str) -> Any:
    """Check that `x` is a scalar whose dtype is a subtype of one of `kinds`; return its abstract value."""
    if type(x) is int and jnp.integer in kinds:
        # A concrete Python int of any size (``switch(2**40, ...)`` clamps it), never made an int32 array here.
        return jax.typeof(min(max(x, -1), 1))
    leaf_signature(x, who, what)
    aval = jax.typeof(x)
    if aval.shape != ():
        raise ControlFlowError(message(who, f"the {what} is not a scalar", expected, short_aval(aval), fix))
    if not any(jnp.issubdtype(aval.dtype, k) for k in kinds):
        raise ControlFlowError(message(who, f"the {what} has dtype {aval.dtype}", expected, short_aval(aval), fix))
    return aval


def _branch_list(branches: Any, who: str, usage: str) -> tuple[Callable[..., Any], ...]:
    """`branches` as a non-empty tuple of callables."""
    try:
        out = tuple(branches)
    except TypeError:
        raise ArgumentError(
            message(
                who,
                "branches is not a sequence",
                "a list or tuple of functions",
                f"{type(branches).__name__}",
                f"pass the branches as a list, e.g. {usage}",
            )
        ) from None
    if not out:
        raise ControlFlowError(
            message(who, "branches is empty", "at least one branch", "[]", "pass a list of functions")
        )
    for i, fun in enumerate(out):
        check_callable(fun, who, f"branches[{i}]")
    return out


def _check_branches(who: str, flats: Sequence[FlatTraced], names: Sequence[str], union: StateUnion) -> None:
    first = flats[0]
    tree0 = first.entry.out_treedef
    for ft, name in zip(flats[1:], names[1:], strict=True):
        tree = ft.entry.out_treedef
        if tree != tree0:
            raise ControlFlowError(
                message(
                    who,
                    f"{name} returns another pytree structure than {names[0]}",
                    f"the structure {names[0]} returns: {tree0}",
                    f"{tree}",
                    "return the same containers from every branch",
                )
            )
        for leaf, a, b in zip(leaf_names(tree0, "output"), first.result_avals, ft.result_avals, strict=True):
            if not same_type(a, b):
                raise ControlFlowError(
                    message(
                        who,
                        f"{name} returns {leaf} with another type than {names[0]}",
                        f"{short_aval(a)} (as {names[0]} returns it)",
                        f"{short_aval(b)}",
                        "return the same shapes and dtypes from every branch (cast with .astype if needed)",
                    )
                )
    for p in union.written:
        kinds = []
        for k, ft in enumerate(flats):
            j = union.writes[k].get(p)
            kinds.append(union.in_avals[p] if j is None else ft.state_out_avals[j])
        for k in range(1, len(flats)):
            if not all(same_type(a, b) for a, b in zip(kinds[0], kinds[k], strict=True)):
                verb0 = "writes" if p in union.writes[0] else "leaves"
                verb = "writes" if p in union.writes[k] else "leaves"
                raise state_type_error(
                    who,
                    union.states[p],
                    f"gets another type from {names[k]} than from {names[0]}",
                    kinds[0],
                    kinds[k],
                    f"every branch must leave the state with one type: {names[0]} {verb0} "
                    f"{avals_str(kinds[0])}, {names[k]} {verb} {avals_str(kinds[k])}",
                )


def _branch_runner(ft: FlatTraced, k: int, union: StateUnion) -> Callable[..., Any]:
    writes = union.writes[k]
    written = union.written

    def branch(op_leaves: list[Any], state_leaves: list[list[Any]]) -> tuple[list[Any], list[Any]]:
        res, new = ft(op_leaves, union.gather(k, state_leaves))
        outs = [new[writes[p]] if p in writes else state_leaves[p] for p in written]
        return res, outs

    return branch


def _traced_branches(
    who: str,
    funs: Sequence[Callable[..., Any]],
    names: Sequence[str],
    operands: tuple[Any, ...],
    call: Callable[..., Any],
) -> Any:
    op_leaves, op_tree, _ = flatten_checked(operands, who, "operands")
    abstract_ops = jax.tree_util.tree_unflatten(op_tree, abstract_leaves(op_leaves))
    flats = [FlatTraced(stateful(fun, who).trace(*abstract_ops)) for fun in funs]
    union = StateUnion(flats)
    _check_branches(who, flats, names, union)
    runners = [_branch_runner(ft, k, union) for k, ft in enumerate(flats)]
    state_leaves = union.values_to_leaves(read_values(union.states))
    res, new = call(runners, op_leaves, state_leaves)
    new_values = union.leaves_to_values(union.written, new)
    write_back(union.states, dict(zip(union.written, new_values, strict=True)), who)
    return jax.tree_util.tree_unflatten(flats[0].entry.out_treedef, res)


def cond(pred: Any, true_fun: Callable[..., Any], false_fun: Callable[..., Any], *operands: Any) -> Any:
    """Run `true_fun(*operands)` if `pred` else `false_fun(*operands)`, like `jax.lax.cond`, with states.

    Both branches may read and write `State`s they close over. Every state written by either branch is
    written by `cond` (the branch that does not write it keeps its value). A concrete `pred` (a Python bool or
    int, or a non-traced array) runs its branch directly without tracing the other one.

    Args:
      pred: Scalar boolean or integer (nonzero means true).
      true_fun / false_fun: Branches taking `*operands`; both must return the same structure and types.
      *operands: Arguments of the branches (arrays or pytrees of arrays, never states).

    Returns:
      The output of the chosen branch.

    Raises:
      ControlFlowError: `pred` is not a boolean/integer scalar, or the branches return (or leave a state with)
        different structures or types.
      StateArgumentError: an operand is a `State`.

    Examples:
      >>> count = sm.State(jnp.array(0), name="count")
      >>> def add(x):
      ...     count.value = count.value + 1
      ...     return x + 1.0
      >>> f = sm.transform.jit(lambda x: sm.transform.cond(x > 0, add, lambda x: x - 1.0, x))
      >>> float(f(2.0)), float(f(-2.0)), int(count.value)
      (3.0, -3.0, 1)
    """
    who = "cond"
    check_callable(true_fun, who, "true_fun")
    check_callable(false_fun, who, "false_fun")
    _scalar_of_kind(
        pred,
        who,
        "predicate",
        (jnp.bool_, jnp.integer),
        "a scalar boolean (or integer, nonzero meaning true)",
        "reduce it to a scalar (e.g. jnp.any(pred)), or use jnp.where for an elementwise choice",
    )
    if not _compat.is_tracer(pred):
        flatten_checked(operands, who, "operands")
        return run_direct(true_fun if bool(pred) else false_fun, operands, who)

    def call(runners: list[Callable[..., Any]], ops: list[Any], states: list[Any]) -> Any:
        return jax.lax.cond(pred, runners[0], runners[1], ops, states)

    return _traced_branches(who, (true_fun, false_fun), ("true_fun", "false_fun"), operands, call)


def switch(index: Any, branches: Sequence[Callable[..., Any]], *operands: Any) -> Any:
    """Run `branches[index](*operands)`, like `jax.lax.switch`, with branches that read and write states.

    `index` is clamped to ``[0, len(branches) - 1]``. Every state written by any branch is written by `switch`
    (a branch that does not write it keeps its value). A concrete `index` (a Python int or a non-traced array)
    runs its branch directly without tracing the others.

    Args:
      index: Scalar integer.
      branches: Sequence of functions taking `*operands`; all must return the same structure and types.
      *operands: Arguments of the branches (arrays or pytrees of arrays, never states).

    Returns:
      The output of the chosen branch.

    Raises:
      ControlFlowError: `index` is not an integer scalar, `branches` is empty, or the branches return (or
        leave a state with) different structures or types.

    Examples:
      >>> total = sm.State(jnp.zeros(()), name="total")
      >>> def add(x):
      ...     total.value = total.value + x
      ...     return x
      >>> def neg(x):
      ...     return -x
      >>> f = sm.transform.jit(lambda i, x: sm.transform.switch(i, [add, neg, add], x))
      >>> float(f(0, 2.0)), float(f(1, 2.0)), float(f(7, 5.0)), float(total.value)
      (2.0, -2.0, 5.0, 7.0)
    """
    who = "switch"
    branches = _branch_list(branches, who, "switch(i, [f, g], x)")
    _scalar_of_kind(
        index,
        who,
        "index",
        (jnp.integer,),
        "a scalar integer",
        "convert it, e.g. jnp.asarray(i, jnp.int32); for a boolean choice use cond",
    )
    if len(branches) == 1 or not _compat.is_tracer(index):
        flatten_checked(operands, who, "operands")
        i = min(max(int(index), 0), len(branches) - 1) if len(branches) > 1 else 0
        return run_direct(branches[i], operands, who)

    def call(runners: list[Callable[..., Any]], ops: list[Any], states: list[Any]) -> Any:
        return jax.lax.switch(index, runners, ops, states)

    names = [f"branches[{i}]" for i in range(len(branches))]
    return _traced_branches(who, branches, names, operands, call)


def _condition_list(conditions: Any, n: int, who: str) -> list[Any]:
    """`conditions` (a sequence of scalars, or a 1-D array) as a list of `n` checked boolean/integer scalars."""
    try:
        out = list(conditions)
    except TypeError:
        out = None
    if out is None or len(out) != n:
        found = f"{type(conditions).__name__}" if out is None else f"{len(out)} conditions"
        raise ControlFlowError(
            message(
                who,
                "conditions and branches differ in number",
                f"one condition per branch ({n})",
                found,
                "pass a list of scalar conditions, one per branch; use True as the last one for an 'else'",
            )
        )
    for i, c in enumerate(out):
        _scalar_of_kind(
            c,
            who,
            f"conditions[{i}]",
            (jnp.bool_, jnp.integer),
            "a scalar boolean (or integer, nonzero meaning true)",
            "reduce it to a scalar (e.g. jnp.any(c))",
        )
    return [bool(c) if type(c) is int else c for c in out]  # a Python int of any size means nonzero


def ifelse(conditions: Any, branches: Sequence[Callable[..., Any]], *operands: Any, check_cond: bool = False) -> Any:
    """Run the branch of the first true condition, like an ``if``/``elif`` chain, with states.

    ``ifelse([c0, c1, c2], [f0, f1, f2], x)`` runs ``f0(x)`` if ``c0``, else ``f1(x)`` if ``c1``, else
    ``f2(x)`` if ``c2``; when no condition is true the last branch runs (so ``True`` as the last condition,
    or any other, reads as an ``else``). Traced conditions become the index of the first true one
    (``argmax``) and the branches run through `switch`'s engine: every state written by any branch is
    written, a branch that does not write it keeps its value. Concrete conditions run their branch directly.

    Args:
      conditions: Scalar booleans (or integers, nonzero meaning true), one per branch: a list or tuple, or
        a 1-D array.
      branches: Functions taking `*operands`; all must return the same structure and types.
      *operands: Arguments of the branches (arrays or pytrees of arrays, never states).
      check_cond: If True, check that exactly one condition is true (mutually exclusive conditions), as
        brainstate's default does. Only concrete conditions can be checked; traced ones are not.

    Returns:
      The output of the chosen branch.

    Raises:
      ControlFlowError: conditions and branches differ in number, a condition is not a boolean/integer
        scalar, the branches return (or leave a state with) different structures or types, or with
        `check_cond` concrete conditions are not exactly one true.

    Examples:
      >>> hits = sm.State(jnp.zeros(3, jnp.int32), name="hits")
      >>> def branch(k):
      ...     def f(x):
      ...         hits.value = hits.value.at[k].add(1)
      ...         return x * (k + 1.0)
      ...     return f
      >>> classify = sm.transform.jit(
      ...     lambda x: sm.transform.ifelse([x < 0, x < 10, True], [branch(0), branch(1), branch(2)], x))
      >>> [float(classify(v)) for v in (-1.0, 5.0, 20.0, 30.0)], hits.value
      ([-1.0, 10.0, 60.0, 90.0], Array([1, 1, 2], dtype=int32))
    """
    who = "ifelse"
    branches = _branch_list(branches, who, "ifelse([c0, c1], [f, g], x)")
    conds = _condition_list(conditions, len(branches), who)
    if not any(_compat.is_tracer(c) for c in conds):
        flags = [bool(c) for c in conds]
        if check_cond and sum(flags) != 1:
            raise ControlFlowError(
                message(
                    who,
                    "check_cond=True but the conditions are not mutually exclusive",
                    "exactly one true condition",
                    f"{sum(flags)} true conditions: {flags}",
                    "make the conditions exclusive, or pass check_cond=False to run the first true one",
                )
            )
        flatten_checked(operands, who, "operands")
        return run_direct(branches[flags.index(True) if any(flags) else len(flags) - 1], operands, who)
    stacked = jnp.stack([jnp.asarray(c).astype(jnp.bool_) for c in conds])
    index = jnp.where(jnp.any(stacked), jnp.argmax(stacked), len(conds) - 1).astype(jnp.int32)

    def call(runners: list[Callable[..., Any]], ops: list[Any], states: list[Any]) -> Any:
        return jax.lax.switch(index, runners, ops, states)

    return _traced_branches(who, branches, [f"branches[{i}]" for i in range(len(branches))], operands, call)
